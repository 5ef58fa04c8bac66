"""Broker faults on the embedded Apache Kafka, for tests/faults/, tests/tapeflow/stack/ and
`benchmarks/bench_faults.py`. Rows as in `tests.support.faults_process` (``row``), every file under
``home``.

- `broker_restart_after_sigkill`: Kafka alone under the supervisor (as `tapeflow up` runs it), its log
  preloaded with ``preload`` records of md.trades (a day of BTC is ~2 M), then SIGKILLed while an
  idempotent producer (acks=all) writes; the supervisor restarts it, Kafka recovers its unflushed
  segments, and `tapeflow status` is polled all along (``states``: each state seen, with its first
  detail). Every record acknowledged to the producer must be in the topic exactly once.
  ``duration_s``: kill to healthy; ``recover_s``: the restarted process's start to healthy.
- `broker_killed_mid_replay`: the whole stack replaying a synthetic session at max speed
  (`tests.support.endurance.live_stack`), the broker SIGKILLed while the replay runs; every trade of
  the session in md.trades exactly once and in the trades table, the two agreeing.
- `broker_disk_full`: the whole stack live (40 trades/s) with Kafka's log directory on a small tmpfs
  that a filler file fills to its last byte while trades flow: Kafka fails the append, marks its only
  log directory offline and shuts down; the supervisor holds its restart ("log disk full") without
  counting a crash, the producer says "broker unavailable" and keeps its records; the filler goes,
  the broker is restarted, and every trade of the session is in md.trades once and in the table.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.faults_process import UNTOUCHED, _statuses, row, session_played
from tests.support.waiting import poll

TOPIC = "md.trades"


def status_of(sup, name: str):
    from tapeflow.stack.supervisor import stack_status

    for c in stack_status(sup.settings, sup.paths, names=(name,)):
        if c.name == name:
            return c
    return None


class StateLog:
    """`tapeflow status` for some components polled on a thread: each (name, state) seen, the first
    time (seconds after `t0`) and detail, in order."""

    def __init__(self, sup, names: tuple[str, ...], every_s: float = 0.1) -> None:
        self.sup, self.names, self.every_s = sup, names, every_s
        self.seen: list[tuple[float, str, str, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="state-log")
        self.t0 = time.monotonic()

    def __enter__(self) -> StateLog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from tapeflow.stack.supervisor import stack_status

        last: dict[str, str] = {}
        while not self._stop.wait(self.every_s):
            try:
                comps = stack_status(self.sup.settings, self.sup.paths, names=self.names)
            except Exception as exc:  # noqa: BLE001 - a state file rewritten mid-read: ask again
                self.seen.append((round(time.monotonic() - self.t0, 2), "?", "error", False, str(exc)[:200]))
                continue
            for c in comps:
                if c.name in self.names and last.get(c.name) != c.state:
                    last[c.name] = c.state
                    self.seen.append((round(time.monotonic() - self.t0, 2), c.name, c.state, c.healthy, c.detail))

    def states(self, name: str) -> list[str]:
        return [s for _, n, s, _, _ in self.seen if n == name]


@contextlib.contextmanager
def broker_alone(home: Path, extra_properties: dict[str, str] | None = None) -> Iterator[Any]:
    """Kafka under a supervisor (supervising on a thread), the catalogue's topics created."""
    from tapeflow.stack.broker import KafkaBroker
    from tapeflow.stack.steps import TopicsStep
    from tapeflow.stack.supervisor import Supervisor
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings
    from tests.support.endurance import supervised

    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    broker = KafkaBroker(settings, paths)
    broker.extra_properties.update(extra_properties or {})
    log: list[str] = []
    sup = Supervisor(
        settings,
        paths,
        say=lambda m: log.append(f"{time.monotonic():.1f} {m}"),
        services=[broker],
        steps=[TopicsStep(settings, paths)],
    )
    sup.sayings = log
    with supervised(sup, poll_s=0.1):
        yield sup


class SeqProducer:
    """An idempotent producer (the pipeline's `producer_config`: acks=all) writing numbered records
    (8-byte big-endian sequence + ``pad`` bytes) to md.trades on 6 keys, recording which numbers the
    broker acknowledged."""

    def __init__(self, bootstrap: str, pad: int = 80) -> None:
        from confluent_kafka import Producer

        from tapeflow_runtime.kafka_client import producer_config

        self.producer = Producer(producer_config(bootstrap, **{"linger.ms": 5, "logger": _quiet()}))
        self.acked: set[int] = set()
        self.failed = 0
        self.next = 0
        self.pad_n = pad

    def _cb(self, err, msg) -> None:
        if err is None:
            self.acked.add(struct.unpack(">Q", msg.value()[:8])[0])
        else:
            self.failed += 1

    def produce(self, n: int) -> None:
        for _ in range(n):
            seq = self.next
            self.next += 1
            value = struct.pack(">Q", seq) + os.urandom(self.pad_n)
            while True:
                try:
                    self.producer.produce(TOPIC, value=value, key=b"binance:S%d" % (seq % 6), on_delivery=self._cb)
                    break
                except BufferError:
                    self.producer.poll(0.05)
            if seq % 1000 == 0:
                self.producer.poll(0)

    def flush(self, timeout: float) -> int:
        return self.producer.flush(timeout)


def _quiet():
    import logging

    quiet = logging.getLogger("tapeflow.tests.quiet-rdkafka")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    return quiet


def read_seqs(bootstrap: str, idle_s: float = 3.0) -> Counter:
    """Every record of md.trades (from the beginning, read committed) counted by its sequence number."""
    from confluent_kafka import Consumer

    from tapeflow_runtime.kafka_client import consumer_config

    c = Consumer(
        {
            **consumer_config(bootstrap, f"faults-read-{os.getpid()}-{time.monotonic_ns()}"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "logger": _quiet(),
        }
    )
    seen: Counter = Counter()
    try:
        c.subscribe([TOPIC])
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for m in c.consume(10_000, 0.5):
                if m.error() is None:
                    seen[struct.unpack(">Q", m.value()[:8])[0]] += 1
                    last = time.monotonic()
    finally:
        c.close()
    return seen


def broker_restart_after_sigkill(
    home: Path,
    *,
    preload: int = 200_000,
    during: int = 50_000,
    pad: int = 80,
    extra_properties: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The row ``broker_sigkill_restart_<preload>``; see the module docstring."""
    from tapeflow.stack.broker import log_size_mb

    detail: dict[str, Any] = {"preload": preload, "extra_properties": extra_properties}
    with broker_alone(home, extra_properties) as sup:
        bootstrap = sup.addresses["broker"]
        prod = SeqProducer(bootstrap, pad)
        t0 = time.monotonic()
        prod.produce(preload)
        assert prod.flush(120) == 0, "preload not acknowledged"
        detail["preload_s"] = round(time.monotonic() - t0, 1)
        detail["log_mb"] = round(log_size_mb(home / "kafka" / "data"), 1)
        old_pid = sup.running["broker"].proc.pid
        writing = threading.Event()

        def write() -> None:  # mid-write: the kill lands while this one produces
            writing.set()
            prod.produce(during)

        writer = threading.Thread(target=write, daemon=True)
        with StateLog(sup, ("broker",)) as states:
            writer.start()
            writing.wait(10)
            poll(lambda: len(prod.acked) > preload + during // 10, 30, 0.01)
            t_kill = time.monotonic()
            detail["acked_at_kill"] = len(prod.acked)
            os.kill(old_pid, signal.SIGKILL)

            def healthy_again():
                run = sup.running.get("broker")
                if run is None or run.proc.pid == old_pid:
                    return None
                c = status_of(sup, "broker")
                return c if c is not None and c.healthy and c.state == "running" else None

            back = poll(healthy_again, 300, 0.05)
            t_back, t_back_wall = time.monotonic(), time.time()
            writer.join(300)
            remaining = prod.flush(300)
        detail["states"] = states.seen
        detail["unflushed_after"] = remaining
        new = sup.running["broker"]
        detail["back"] = back.detail if back else None
        restart_to_healthy = round(t_back_wall - new.record.started_at, 2)
        seen = read_seqs(bootstrap)
        sayings = list(sup.sayings)
    broker_log = (home / "logs" / "broker.log").read_text(errors="replace")
    run = broker_log[broker_log.rfind("\n--- ") :]
    detail["recovery_lines"] = [ln[:200] for ln in run.splitlines() if "ecover" in ln][:8]
    detail["recovered_segments"] = run.count("Recovering unflushed segment")
    detail["sayings"] = sayings
    lost = sorted(prod.acked - set(seen))
    dupes = sum(n - 1 for n in seen.values() if n > 1)
    detail.update(
        {
            "acked": len(prod.acked),
            "in_topic": sum(seen.values()),
            "distinct": len(seen),
            "lost_seqs": lost[:20],
            "failed_deliveries": prod.failed,
        }
    )
    return row(
        f"broker_sigkill_restart_{preload}",
        duration_s=round(t_back - t_kill, 2),
        trades_in=len(prod.acked),
        trades_out=len(seen),
        duplicates=dupes,
        lost=len(lost),
        recover_s=restart_to_healthy,
        detail=detail,
    )


# ================================================================ the whole stack
def _topic_ids(stack, symbol: str) -> Counter:
    from tests.conftest import _read_topic

    # the broker answering first: after a fault the supervisor may still be restarting it (under load
    # its log recovery and the old session's expiry take longer than one metadata wait)
    deadline = time.monotonic() + 180
    while not ((c := status_of(stack.sup, "broker")) is not None and c.healthy):
        if time.monotonic() > deadline:
            tail = stack.sup.paths.home / "logs" / "supervisor.log"
            raise AssertionError(
                f"broker not healthy 180 s after the fault: {c}; supervisor said: {list(stack.log)[-10:]} {tail}"
            )
        time.sleep(0.5)
    return Counter(
        r["value"]["agg_id"]
        for r in _read_topic(stack.bootstrap, "md.trades", idle_s=2.0)
        if r["value"]["symbol"] == symbol
    )


def _agreement(stack, symbol: str, count: int, first: int, last: int) -> dict[str, Any]:
    """md.trades and the trades table against the session: every agg id once in each, the two equal."""
    from tests.support.faults_links import _accounting, _stored_ids

    topic = _topic_ids(stack, symbol)
    table = set(_stored_ids(stack, symbol))
    out = _accounting(stack, symbol, count, first, last)
    expected = set(range(first, last + 1))
    out.update(
        {
            "topic_records": sum(topic.values()),
            "topic_distinct": len(topic),
            "topic_dupes": sum(n - 1 for n in topic.values() if n > 1),
            "topic_missing": len(expected - set(topic)),
            "topic_equals_table": set(topic) == table,
        }
    )
    return out


def broker_killed_mid_replay(
    home: Path, *, duration_s: float = 1800.0, trades_per_s: float = 40.0, kill_at: float = 0.3, symbol: str = "BTCUSDT"
) -> list[dict[str, Any]]:
    """The row ``broker_sigkill_mid_replay``: the stack replaying a synthetic session at max speed, the
    broker SIGKILLed once ``kill_at`` of the session is in the trades table (the replay still running).
    ``duration_s`` of the row: kill to the broker healthy; ``recover_s``: then to the next trade stored.
    The detail: the broker's states in `tapeflow status` meanwhile (`StateLog`), the supervisor's lines,
    the accounting of md.trades and of the table."""
    from tests.support.endurance import live_stack
    from tests.support.faults_links import NOT_IN_THE_TRADES_PATH, _session

    spec, expected = _session(duration_s, trades_per_s, symbol)
    count, first, last = expected
    detail: dict[str, Any] = {"expected": expected}
    with live_stack(home, spec, replay_speed="max", startup_timeout_s=120.0, without=NOT_IN_THE_TRADES_PATH) as stack:
        started = poll(lambda: stack.trades_stored(symbol)[0] >= count * kill_at, 300, 0.05)
        assert started, "the replay stored nothing\n" + "\n".join(stack.log)
        detail["stored_at_kill"] = stack.trades_stored(symbol)[0]
        producer = stack.sup.running.get("producer")
        detail["producer_running_at_kill"] = producer is not None and producer.proc.poll() is None
        broker_pid = stack.service_pid("broker")
        with StateLog(stack.sup, ("broker", "producer", "sink")) as states:
            t_kill = time.monotonic()
            os.kill(broker_pid, signal.SIGKILL)

            def back():
                pid = stack.service_pid("broker")
                c = status_of(stack.sup, "broker") if pid not in (None, broker_pid) else None
                return c if c is not None and c.healthy else None

            healthy = poll(back, 180, 0.1)
            t_back = time.monotonic()
            at_back = stack.trades_stored(symbol)[0]
            moved = poll(lambda: stack.trades_stored(symbol)[0] > at_back or at_back >= count, 120, 0.1)
            recover_s = round(time.monotonic() - t_back, 2) if moved else None
            poll(lambda: stack.trades_stored(symbol)[1] >= count, 300, 0.5)
            time.sleep(1.0)  # a duplicate would come with the last batches
        detail["broker_back"] = healthy.detail if healthy else None
        detail["states"] = states.seen
        detail["broker_states"] = states.states("broker")
        detail.update(_agreement(stack, symbol, count, first, last))
        detail["log"] = list(stack.log)
        detail["pids_after"] = {n: stack.service_pid(n) for n in ("broker", "sink", "engine", "producer")}
    return [
        row(
            "broker_sigkill_mid_replay",
            duration_s=round(t_back - t_kill, 2),
            trades_in=count,
            trades_out=detail["distinct"],
            duplicates=detail["dupes"] + detail["topic_dupes"],
            lost=max(detail["missing"], detail["topic_missing"]),
            recover_s=recover_s,
            detail=detail,
        )
    ]


def broker_disk_full(
    home: Path,
    *,
    size: str = "64m",
    full_s: float = 10.0,
    duration_s: float = 60.0,
    trades_per_s: float = 40.0,
    symbol: str = "BTCUSDT",
) -> list[dict[str, Any]]:
    """The row ``broker_disk_full_<S>s``: Kafka's log directory (``<home>/kafka/data``) on a tmpfs of
    ``size``, filled to its last byte while trades flow; held full until the broker has died of it and
    `tapeflow status` has said so for both the broker and the producer (at least ``full_s``), then the
    filler is deleted. ``duration_s``: how long the disk was full; ``recover_s``: from the space back
    to the broker healthy again. Raises `tests.support.faults_disk.NoMount` where no tmpfs can be mounted."""
    from tests.support.endurance import live_stack
    from tests.support.faults_disk import fill, small_tmpfs
    from tests.support.faults_links import _flowing, _session, _wait_all_stored

    spec, expected = _session(duration_s, trades_per_s, symbol)
    count, first, last = expected
    detail: dict[str, Any] = {"expected": expected}
    with (
        small_tmpfs(home / "kafka" / "data", size=size, mode="0755") as data,
        # trades flow from the stack's start, not before; labels, guardrail and ui are not in their path
        live_stack(home, spec, dated_at_launch=True, without=UNTOUCHED) as stack,
    ):
        _flowing(stack, symbol)
        detail["session_at_fill"] = session_played(stack)
        others = {n: stack.service_pid(n) for n in ("database", "sink", "engine", "executor", "producer")}
        broker_pid = stack.service_pid("broker")
        watched = ("broker", "producer", "sink", "supervisor")
        with StateLog(stack.sup, watched, every_s=0.25) as states:
            t0 = time.monotonic()
            filler = fill(data)
            detail["filler_bytes"] = filler.stat().st_size
            try:

                def said():
                    st = {c: s for _, c, s, _, _ in states.seen}
                    return st.get("broker") == "disk-full" and st.get("producer") == "broker-unavailable"

                poll(lambda: time.monotonic() - t0 >= full_s and said(), max(3 * full_s, 60), 0.25)
                detail["broker_exit"] = stack.sup.running["broker"].proc.poll()
                detail["status_full"] = _statuses(stack, watched)
                detail["held"] = dict(stack.sup.held)
            finally:
                filler.unlink()
            t_free = time.monotonic()

            def back():
                pid = stack.service_pid("broker")
                c = status_of(stack.sup, "broker") if pid not in (None, broker_pid) else None
                return c if c is not None and c.healthy else None

            healthy = poll(back, 180, 0.1)
            recover_s = round(time.monotonic() - t_free, 2) if healthy else None
            # everything healthy again once the broker is: asked now, while the session still plays (at its
            # end the live producer rightly says the exchange went silent, as a CI run's did here)
            detail["status_after"] = poll(
                lambda: (st := _statuses(stack, watched)) and all(ok for ok, _ in st.values()) and st, 60, 0.25
            ) or _statuses(stack, watched)
            detail["session_at_status_after"] = session_played(stack)
            _wait_all_stored(stack, symbol, count, last, duration_s + 60)
        detail["states"] = states.seen
        detail["others_same_pids"] = others == {n: stack.service_pid(n) for n in others}
        detail["others_pids"] = (others, {n: stack.service_pid(n) for n in others})
        detail.update(_agreement(stack, symbol, count, first, last))
        detail["log"] = list(stack.log)
        logs = stack.sup.paths.home / "logs"
        detail["producer_broker_lines"] = [
            ln[:300]
            for ln in (logs / "producer.log").read_text(errors="replace").splitlines()
            if "broker unavailable" in ln or "broker available" in ln
        ][:6]
        detail["broker_full_lines"] = [
            ln[:300]
            for ln in (logs / "broker.log").read_text(errors="replace").splitlines()
            if "No space left" in ln or "all log dirs" in ln
        ][:4]
        # why a service stopped, when one did (the supervisor's log only says that it exited)
        detail["stopped_lines"] = {
            name: [
                ln[:400]
                for ln in (logs / f"{name}.log").read_text(errors="replace").splitlines()
                if "error" in ln.lower() or "stopped" in ln
            ][-12:]
            for name in ("executor", "engine", "sink")
            if (logs / f"{name}.log").exists()
        }
    return [
        row(
            f"broker_disk_full_{full_s:g}s",
            duration_s=round(t_free - t0, 2),
            trades_in=count,
            trades_out=detail["distinct"],
            duplicates=detail["dupes"] + detail["topic_dupes"],
            lost=max(detail["missing"], detail["topic_missing"]),
            recover_s=recover_s,
            detail=detail,
        )
    ]
