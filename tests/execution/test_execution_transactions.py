"""The transactional executor: outputs and input offsets commit together, so a paper
executor killed (SIGKILL) mid-stream and restarted, or stopped (SIGSTOP) while a new one takes over,
publishes exactly the orders, fills and positions of a run that was never interrupted.

Real processes (`run_executor` as `tapeflow execute --mode paper` runs it) on the session's Kafka.
One synthetic stream (four symbols, trades every 100 ms of event time, signals of six strategies in
between, SL/TP/timeouts within the stream) is produced in full under two topic prefixes before the
executors start: a reference executor trades one prefix without interruption while the faulted
executors trade the other; both sets of outputs are then read committed from the beginning and
compared record by record per order and position (an order's `event_time` is the executor's wall clock and is
left out). Thresholds are the group's committed md.trades offsets, so every kill lands mid-stream.
"""

from __future__ import annotations

import os
import random
import signal as os_signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas.catalogue import symbol_key
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics, producer_config
from tapeflow_runtime.topic_reader import read_to_end
from tests.support.execution import SERDE, signal_record, trade_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
OUTPUTS = ("orders", "fills", "positions")
NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE)
# the stream's times are hours old by the time it is traded: freshness and age limits out of the way,
# and no guard transition (pause, daily stop) that depends on the wall clock
CONFIG = """risk:
  max_open_positions: 100000
  max_signal_age_s: 100000000
  stale_market_data_s: 100000000
  max_consecutive_losses: 100000
  daily_loss_limit_r: 1000000
"""
RUNNER = """
import asyncio, sys
from pathlib import Path
from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.logs import configure_logging
from tapeflow_runtime.settings import Settings
settings = Settings()
configure_logging(settings.log_level, settings.log_format)
options = ExecuteOptions(config_path=Path(sys.argv[1]), start_from="earliest", restore_idle_s=0.3)
sys.exit(asyncio.run(run_executor(settings, "paper", options)))
"""


def make_stream(steps: int, seed: int = 50) -> list[tuple[str, bytes, dict]]:
    """(topic, key, record) in event-time order; no signal shares its time with a trade."""
    rng = random.Random(seed)
    t0 = int(time.time() * 1000) - 3 * 3_600_000
    price = dict.fromkeys(SYMBOLS, 100.0)
    agg = dict.fromkeys(SYMBOLS, 0)
    out: list[tuple[str, bytes, dict]] = []
    for step in range(steps):
        for j, sym in enumerate(SYMBOLS):
            t = t0 + step * 100 + j
            price[sym] = round(price[sym] * (1 + rng.gauss(0, 0.0015)), 4)
            agg[sym] += 1
            out.append(
                ("md.trades", symbol_key("binance", sym), trade_record(price[sym], t, symbol=sym, agg_id=agg[sym]))
            )
            if rng.random() < 0.012:
                out.append(
                    (
                        "signals",
                        symbol_key("binance", sym),
                        signal_record(
                            direction=rng.choice(("LONG", "SHORT")),
                            price=price[sym],
                            risk=round(price[sym] * 0.004, 4),
                            strategy=f"s{rng.randrange(6)}",
                            eval_time=t + 50,
                            symbol=sym,
                            timeout_ms=rng.choice((1_500, 60_000)),
                        ),
                    )
                )
    return out


def produce(bootstrap: str, prefix: str, stream: list[tuple[str, bytes, dict]]) -> dict[str, int]:
    ensure_topics(bootstrap, prefix=prefix)
    p = Producer(producer_config(bootstrap))
    counts: dict[str, int] = defaultdict(int)
    for topic, key, record in stream:
        while True:
            try:
                p.produce(prefix + topic, key=key, value=SERDE.encode(topic, record))
                break
            except BufferError:
                p.poll(0.05)
        counts[topic] += 1
    assert p.flush(60) == 0
    return dict(counts)


class Executors:
    """Executor processes of one topic prefix, and its consumer group's committed offsets."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path) -> None:
        self.bootstrap, self.prefix, self.tmp = bootstrap, prefix, tmp
        self.config = tmp / "executor.yaml"
        self.config.write_text(CONFIG)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        self.env.update(
            {
                "PYTHONPATH": str(REPO),
                "TAPEFLOW_HOME": str(tmp),
                "TAPEFLOW_BROKER": bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": prefix,
            }
        )
        self.group = Consumer(consumer_config(bootstrap, f"{prefix}tapeflow-executor-paper"))
        self.started = 0

    def start(self) -> subprocess.Popen:
        self.started += 1
        log = open(self.tmp / f"executor-{self.started}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, str(self.config)],
            cwd=self.tmp,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        log.close()
        return proc

    def committed(self, topic: str) -> int:
        """Records of `topic` the group has committed as handled (offsets are record counts: the
        inputs are written without transactions)."""
        md = self.group.list_topics(self.prefix + topic, timeout=10).topics[self.prefix + topic]
        parts = [TopicPartition(self.prefix + topic, p) for p in md.partitions]
        for _ in range(20):
            try:
                return sum(max(tp.offset, 0) for tp in self.group.committed(parts, timeout=10))
            except KafkaException as exc:  # NOT_COORDINATOR while the broker sets up its internal topics
                if exc.args[0].code() not in NOT_READY:
                    raise
                time.sleep(0.25)
        raise AssertionError("the group's committed offsets could not be read")

    def wait(self, topic: str, count: int, procs: list[subprocess.Popen], timeout: float = 240.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for proc in procs:
                assert proc.poll() is None, f"executor exited {proc.returncode}: {tail(proc)}"
            done = self.committed(topic)
            if done >= count:
                return done
            time.sleep(0.05)
        raise AssertionError(
            f"{self.prefix}: fewer than {count} {topic} committed within {timeout}s (have {self.committed(topic)})"
        )

    def finish(self, proc: subprocess.Popen, counts: dict[str, int]) -> None:
        """Wait until every input is handled and committed, then stop `proc` cleanly."""
        for topic, n in counts.items():
            self.wait(topic, n, [proc])
        proc.send_signal(os_signal.SIGTERM)
        assert proc.wait(60) == 0, tail(proc)

    def outputs(self) -> dict[str, dict[tuple, list[dict]]]:
        """topic -> entity -> its records in offset order, committed records only. Entities (an order's
        client id, a fill's order, a position) keep their order; how the records of different
        entities of one market interleave is not compared: exits that one trade triggers on several
        positions are sent in set order, which differs from process to process (hash seeds)."""
        snap = read_to_end(self.bootstrap, {self.prefix + t: None for t in OUTPUTS}, SERDE, idle_s=0.5)
        entity = {"orders": "client_order_id", "fills": "client_order_id", "positions": "position_id"}
        out: dict[str, dict[tuple, list[dict]]] = {}
        for topic in OUTPUTS:
            by_entity: dict[tuple, list[dict]] = defaultdict(list)
            for rec in snap[self.prefix + topic].records:
                if topic == "orders":
                    rec = {k: v for k, v in rec.items() if k != "event_time"}  # the executor's wall clock
                by_entity[(rec["exchange"], rec["symbol"], rec[entity[topic]])].append(rec)
            out[topic] = dict(by_entity)
        return out

    def close(self) -> None:
        self.group.close()


def tail(proc: subprocess.Popen, lines: int = 30) -> str:
    return "\n".join(Path(proc.log_path).read_text(errors="replace").splitlines()[-lines:])


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(os_signal.SIGKILL)
        proc.wait(30)


def assert_no_duplicates(outputs: dict[str, dict[str, list[dict]]]) -> None:
    ident = {
        "orders": lambda r: (r["client_order_id"], r["state"]),
        "fills": lambda r: r["trade_id"],
        "positions": lambda r: (r["position_id"], r["event"]),
    }
    for topic, by_market in outputs.items():
        keys = [ident[topic](r) for records in by_market.values() for r in records]
        assert len(keys) == len(set(keys)), f"duplicate {topic}"


def same(a: dict, b: dict) -> bool:
    """Equal, floats to 1e-9 relative: a position restored from its records (after TP1) computes its
    P&L along another path than the one that lived through it (0.4999999999999928 R against 0.5)."""
    return a.keys() == b.keys() and all(
        x == pytest.approx(y, rel=1e-9, abs=1e-12) if isinstance(x, float) and isinstance(y, float) else x == y
        for x, y in ((a[k], b[k]) for k in a)
    )


def assert_same(got: dict[str, dict[str, list[dict]]], want: dict[str, dict[str, list[dict]]]) -> None:
    for topic in OUTPUTS:
        assert set(got[topic]) == set(want[topic]), topic
        for entity, records in want[topic].items():
            mine = got[topic][entity]
            for i, (a, b) in enumerate(zip(mine, records, strict=False)):
                assert same(a, b), f"{topic} {entity} record {i} differs:\n got {a}\nwant {b}"
            assert len(mine) == len(records), f"{topic} {entity}: {len(mine)} records, uninterrupted {len(records)}"


@pytest.fixture
def streams(kafka_bootstrap, tmp_path):
    made: list[Executors] = []
    procs: list[subprocess.Popen] = []

    def make(name: str) -> Executors:
        home = tmp_path / name
        home.mkdir()
        ex = Executors(kafka_bootstrap, f"t{os.urandom(5).hex()}.", home)
        made.append(ex)
        return ex

    yield make, procs
    for proc in procs:
        kill(proc)
    for ex in made:
        ex.close()


def test_sigkilled_executor_publishes_exactly_what_an_uninterrupted_run_does(kafka_bootstrap, streams):
    make, procs = streams
    stream = make_stream(20_000)
    reference, faulted = make("reference"), make("killed")
    counts = produce(kafka_bootstrap, reference.prefix, stream)
    assert produce(kafka_bootstrap, faulted.prefix, stream) == counts
    total = counts["md.trades"]

    ref = reference.start()
    procs.append(ref)
    mid_stream = []
    for share in (0.15, 0.35, 0.55):  # three SIGKILLs, each after the group committed this share of trades
        proc = faulted.start()
        procs.append(proc)
        done = faulted.wait("md.trades", int(share * total), [proc])
        kill(proc)
        mid_stream.append(done < total)
    # a loaded machine can let the executor finish the backlog between two looks at its commits: the
    # first two kills at least must land mid-stream, or the test did not test the kill
    assert mid_stream[:2] == [True, True], f"the stream was handled before the kill: {mid_stream}"
    last = faulted.start()
    procs.append(last)
    faulted.finish(last, counts)
    reference.finish(ref, counts)

    want, got = reference.outputs(), faulted.outputs()
    assert not [r for rs in got["orders"].values() for r in rs if r["reason"] == "executor_restart"]
    assert_no_duplicates(got)
    assert_same(got, want)
    exits = defaultdict(int)
    for rs in want["positions"].values():
        for r in rs:
            exits[r["exit_reason"]] += 1
    assert exits[None] >= 100 and min(exits["sl"], exits["tp"], exits["timeout"]) >= 10, exits  # it trades


def test_a_stopped_executor_is_fenced_by_its_successor_and_publishes_nothing(kafka_bootstrap, streams):
    make, procs = streams
    stream = make_stream(15_000, seed=51)
    reference, faulted = make("reference"), make("zombie")
    counts = produce(kafka_bootstrap, reference.prefix, stream)
    assert produce(kafka_bootstrap, faulted.prefix, stream) == counts
    total = counts["md.trades"]

    ref = reference.start()
    procs.append(ref)
    zombie = faulted.start()
    procs.append(zombie)
    assert faulted.wait("md.trades", int(0.3 * total), [zombie]) < total
    zombie.send_signal(os_signal.SIGSTOP)  # frozen mid-stream, its transaction open
    successor = faulted.start()
    procs.append(successor)
    for topic, n in counts.items():
        faulted.wait(topic, n, [successor])
    zombie.send_signal(os_signal.SIGCONT)  # it wakes up believing it still owns the partitions
    try:
        code = zombie.wait(120)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the stopped executor still runs after SIGCONT: {tail(zombie)}") from None
    assert code == 1, tail(zombie)
    assert "fenced" in Path(zombie.log_path).read_text(errors="replace")
    faulted.finish(successor, counts)
    reference.finish(ref, counts)

    want, got = reference.outputs(), faulted.outputs()
    assert sum(len(r) for r in want["positions"].values()) >= 50
    assert_no_duplicates(got)
    assert_same(got, want)
