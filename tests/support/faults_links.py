"""Broker and link faults for the fault suite, in the style of `tests.support.faults_process`:
each runner starts a live stack (`tests.support.endurance.live_stack`: the stack as `tapeflow up` runs
it, the producer live against the fake exchange playing a synthetic session), injects its fault, lets
it clear and returns rows ``{fault, duration_s, trades_in, trades_out, duplicates, lost, orders_sent,
orders_expected, recover_s}`` plus a ``detail`` dict for the tests. Every file goes under ``home``.

- `broker_killed`: the embedded Kafka SIGKILLed while trades flow (optionally SIGSTOPped first, so the
  producer's buffer fills with trades the broker never acknowledged). The supervisor restarts it; its
  log is on disk, so topics, offsets and groups are all there again, and the clients reconnect by
  themselves. The row says whether anything was lost or doubled, by comparing the trades table with
  the session the fake exchange played.
- `sink_db_link_faults`: an asyncio TCP proxy (`LinkProxy`) between the sink and PostgreSQL (the sink
  alone gets ``TAPEFLOW_DATABASE_URL`` pointing at the proxy), which delays every chunk by D ms, and
  optionally throttles it to B bytes/s, then clears; and, where iptables is usable (root, the binary,
  the kernel's ``statistic`` match), random packet loss on the proxy's own loopback port only (this
  kernel has no netem), the rules removed in a ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from tests.support.faults_netns import NetnsLink, netns_usable
from tests.support.faults_process import UNTOUCHED, _statuses, row
from tests.support.waiting import poll

#: services of `tapeflow up` left out of these link and broker faults' stacks: UNTOUCHED's, and the executor,
#: which reads signals, not trades (no check here looks at it; it cost ~5 CPU-s per 100 s of a stack)
NOT_IN_THE_TRADES_PATH = (*UNTOUCHED, "executor")


# ================================================================ shared
def _session(duration_s: float, trades_per_s: float, symbol: str):
    from fake_exchange.synthetic import SyntheticSpec
    from tests.support.endurance import expected_trades

    spec = SyntheticSpec(
        seed=23, symbols=(symbol,), duration_s=duration_s, trades_per_s=trades_per_s, start_time=time.time() + 10
    )  # event times; the exchange plays from the subscription
    return spec, expected_trades(spec)[symbol]


def _stored_ids(stack, symbol: str) -> list[int]:
    return [r[0] for r in stack.query("SELECT agg_id FROM trades WHERE symbol = %s", symbol)]


def _max_stored(stack, symbol: str) -> int:
    return stack.trades_stored(symbol)[3] or 0


def _delivered(stack, symbol: str) -> int | None:
    """The last agg id the producer had delivered (acknowledged by the broker), from its checkpoint
    (saved every second, so up to a second behind)."""
    settings = stack.sup.settings
    path = stack.sup.paths.home / "producer" / f"binance-{settings.topic_prefix or 'default'}.json"
    try:
        return json.loads(path.read_text())["last_agg_id"].get(symbol)
    except (OSError, ValueError, KeyError):
        return None


def _log_time(stack, pattern: str, after: float) -> float | None:
    """Monotonic time of the first supervisor log line matching ``pattern`` logged after ``after``."""
    for line in list(stack.log):
        stamp, _, text = line.partition(" ")
        if float(stamp) >= after - 0.1 and re.search(pattern, text):
            return float(stamp)
    return None


#: how long after the session's last trade is stored an earlier one may still land: the sink's two
#: writers commit batches in any order, and one in its retry backoff (up to 10 s) holds an older batch
#: while the other stores newer ones (a CI run counted 1.5 s after the last trade and found 15 missing)
STRAGGLERS_S = 20.0


def _wait_all_stored(stack, symbol: str, count: int, last: int, timeout_s: float) -> None:
    """Until the session's last trade is stored, then until all ``count`` are (a lasting hole costs
    `STRAGGLERS_S`)."""
    poll(lambda: _max_stored(stack, symbol) >= last, timeout_s, 0.5)
    poll(lambda: stack.trades_stored(symbol)[1] >= count, STRAGGLERS_S, 0.5)


def _accounting(stack, symbol: str, count: int, first: int, last: int) -> dict[str, Any]:
    ids = _stored_ids(stack, symbol)
    seen = Counter(ids)
    missing = sorted(set(range(first, last + 1)) - set(seen))
    ranges: list[tuple[int, int]] = []
    for agg in missing:
        if ranges and ranges[-1][1] == agg - 1:
            ranges[-1] = (ranges[-1][0], agg)
        else:
            ranges.append((agg, agg))
    return {
        "rows": len(ids),
        "distinct": len(seen),
        "dupes": sum(n - 1 for n in seen.values()),
        "missing": len(missing),
        "missing_ranges": ranges[:20],
        "expected": (count, first, last),
    }


# ================================================================ 1. the broker SIGKILLed
def broker_killed(
    home: Path,
    *,
    kills: int = 1,
    stall_before_kill_s: float = 0.0,
    duration_s: float = 40.0,
    trades_per_s: float = 40.0,
    stop_timeout_s: float | None = None,
    symbol: str = "BTCUSDT",
) -> list[dict[str, Any]]:
    """The embedded broker SIGKILLed ``kills`` times while trades flow, each
    time once the stack has recovered from the previous one; with ``stall_before_kill_s`` it is first
    SIGSTOPped that long (unresponsive, the producer buffering unacknowledged trades), then killed.

    The supervisor restarts the broker after its backoff (1 s, 2 s, ...) and runs the topics step again;
    the clients keep running and reconnect. Per kill: ``duration_s`` from the kill (or stall) to the broker
    healthy again; ``recover_s`` from then to the first trade stored by the restarted sink. ``lost``:
    session trades missing from the trades table at the end (by agg id; the fake exchange played
    ``trades_in``); ``duplicates``: rows beyond one per agg id. The detail has, per kill, the highest
    agg id stored and the producer's last delivered one at the kill, so a hole can be placed: trades
    the broker acknowledged but the sink had not stored yet. ``stop_timeout_s``: the stack's
    TAPEFLOW_STOP_TIMEOUT_S (default 10 s)."""
    from tests.support.endurance import live_stack

    spec, expected = _session(duration_s, trades_per_s, symbol)
    detail: dict[str, Any] = {"expected": expected}
    env = {"TAPEFLOW_STOP_TIMEOUT_S": str(stop_timeout_s)} if stop_timeout_s else None
    # trades flow from the start on
    with live_stack(home, spec, env=env, dated_at_launch=True, without=NOT_IN_THE_TRADES_PATH) as stack:
        _flowing(stack, symbol)
        _kill_phase(stack, detail, symbol, kills, stall_before_kill_s, trades_per_s)
        _finish(stack, detail, symbol, duration_s)
    return _kill_rows(detail, stall_before_kill_s)


def _state(stack, name: str) -> str | None:
    from tapeflow.stack.supervisor import stack_status

    return next((c.state for c in stack_status(stack.sup.settings, stack.sup.paths, names=(name,))), None)


def _flowing(stack, symbol: str) -> None:
    flowing = poll(lambda: stack.trades_stored(symbol)[0] > 50, 120, 0.25)
    assert flowing, "the pipeline never stored a trade\n" + "\n".join(stack.log)


def _kill_phase(
    stack,
    detail: dict[str, Any],
    symbol: str,
    kills: int,
    stall_before_kill_s: float,
    trades_per_s: float,
    sink_pause_s: float = 0.0,
) -> None:
    """``sink_pause_s``: the sink SIGSTOPped that long before each kill (SIGCONT right after it), so the
    dead broker surely held acknowledged trades the sink had not stored (without it the sink is often
    level with the producer at the kill, and there is nothing to lose)."""
    last = detail["expected"][2]
    detail["kills"] = []
    detail["status_before"] = _statuses(stack, ("broker", "sink", "producer"))
    for n in range(kills):
        k: dict[str, Any] = {}
        detail["kills"].append(k)
        broker_pid = stack.service_pid("broker")
        clients = {name: stack.service_pid(name) for name in ("sink", "producer", "engine")}
        t_fault = time.monotonic()
        if stall_before_kill_s:
            os.kill(broker_pid, signal.SIGSTOP)
            k["status_stalled"] = _statuses(stack, ("broker",))
            time.sleep(stall_before_kill_s)
        sink_pid = stack.service_pid("sink") if sink_pause_s else None
        if sink_pid:
            os.killpg(sink_pid, signal.SIGSTOP)
            time.sleep(sink_pause_s)
        k["stored_max_at_kill"] = _max_stored(stack, symbol)
        k["delivered_at_kill"] = _delivered(stack, symbol)
        t_kill = time.monotonic()
        os.kill(broker_pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker_pid, signal.SIGCONT)
        if sink_pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sink_pid, signal.SIGCONT)
        # `tapeflow status` while the broker is dead (the supervisor restarts it after 1 s or more) or
        # recovering its log: not healthy, and saying which
        k["status_dead"] = _statuses(stack, ("broker",))
        k["state_dead"] = _state(stack, "broker")

        def broker_back():
            pid = stack.service_pid("broker")
            if pid in (None, broker_pid):  # noqa: B023 - called within this iteration
                return None
            st = _statuses(stack, ("broker",))
            return st if st.get("broker", (False,))[0] else None

        k["status_back"] = poll(broker_back, 60, 0.1)
        t_back = time.monotonic()
        k["broker_down_s"] = round(t_back - t_kill, 2)
        k["duration_s"] = round(t_back - t_fault, 2)
        stored_at_back = stack.trades_stored(symbol)[0]
        moved = poll(
            lambda: stack.trades_stored(symbol)[0] > stored_at_back or _max_stored(stack, symbol) >= last,  # noqa: B023 - called within this iteration
            60,
            0.2,
        )
        k["recover_s"] = round(time.monotonic() - t_back, 2) if moved else None
        k["delivered_at_recover"] = _delivered(stack, symbol)
        k["new_pids"] = {name: stack.service_pid(name) for name in ("broker", "sink", "producer", "engine")}
        # Kafka keeps topics, offsets and groups across its restart: the clients reconnect, none restarted
        k["clients_same"] = all(k["new_pids"][n] == clients[n] for n in clients)
        if n < kills - 1:  # the next kill once the sink has caught up with the restarted producer
            poll(lambda: _max_stored(stack, symbol) >= (_delivered(stack, symbol) or 0) - trades_per_s, 30, 0.2)


def _finish(stack, detail: dict[str, Any], symbol: str, duration_s: float) -> None:
    """The end of a run: every trade stored (or the timeout), the status, the whole run's accounting."""
    count, first, last = detail["expected"]
    _wait_all_stored(stack, symbol, count, last, duration_s + 120)
    names = ("broker", "database", "sink", "producer")
    detail["status_after"] = poll(
        lambda: (st := _statuses(stack, names)) and all(ok for ok, _ in st.values()) and st, 30, 0.25
    ) or _statuses(stack, names)
    detail["exchange_after"] = _statuses(stack, ("fake-exchange",)).get("fake-exchange")
    detail.update(_accounting(stack, symbol, count, first, last))
    detail["log"] = list(stack.log)
    logs = stack.sup.paths.home / "logs"
    detail["producer_log_tail"] = (logs / "producer.log").read_text(errors="replace")[-3000:]
    detail["sink_log_db_retries"] = (logs / "sink.log").read_text(errors="replace").count("database unavailable")


def _kill_rows(detail: dict[str, Any], stall_before_kill_s: float) -> list[dict[str, Any]]:
    kills = detail["kills"]
    return [
        row(
            "broker_sigkill"
            + (f"_stalled_{stall_before_kill_s:g}s" if stall_before_kill_s else "")
            + (f"#{i + 1}" if len(kills) > 1 else ""),
            duration_s=k["duration_s"],
            trades_in=detail["expected"][0],
            trades_out=detail["distinct"],
            duplicates=detail["dupes"],
            lost=detail["missing"],
            recover_s=k["recover_s"],
            detail=detail,
        )
        for i, k in enumerate(kills)
    ]


# ================================================================ 2. latency, throttling and loss on a link
class LinkProxy:
    """A TCP proxy on its own asyncio loop (a thread): every chunk read from either side is written to the
    other ``delay_s`` later (order kept), at most ``bytes_per_s`` when set. Both settings may change
    while it runs; ``upstream()`` is asked at each new connection (the address may move). With ``netns``
    its thread joins that network namespace first (`tests.support.faults_netns`): it listens, and
    connects upstream, from inside it."""

    def __init__(self, upstream, host: str = "127.0.0.1", netns: str | None = None) -> None:
        self.upstream, self.host, self.netns = upstream, host, netns
        self.delay_s = 0.0
        self.bytes_per_s: float | None = None
        self.port = 0
        self.bytes = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="link-proxy")
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> LinkProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("link proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        if self.netns:
            from tests.support.faults_netns import enter_netns

            enter_netns(self.netns)
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()
        self._server.close()
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.upstream()
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self.connections += 1
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
                self.bytes += len(data)
                if self.bytes_per_s:
                    await asyncio.sleep(len(data) / self.bytes_per_s)
            writer.close()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, b""))
            with contextlib.suppress(Exception):
                await sender


def iptables_usable() -> str | None:
    """Why random packet loss cannot be injected here, or None when it can (root, iptables, statistic)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("iptables") is None:
        return "no iptables binary (Debian package iptables)"
    try:
        matches = Path("/proc/net/ip_tables_matches").read_text().split()
    except OSError:
        matches = []
    if "statistic" not in matches:
        return "the kernel has no xt_statistic match"
    probe = subprocess.run(["iptables", "-w", "5", "-S", "INPUT"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        return f"iptables -S failed: {probe.stderr.strip()[:200]}"
    return None


@contextlib.contextmanager
def packet_loss(port: int, probability: float, host: str = "127.0.0.1") -> Iterator[list[list[str]]]:
    """Drop ``probability`` of the packets to and from ``host:port`` (the test's own proxy: a listener
    the test holds, so no other socket can use it), both directions; each rule carries a unique comment
    and is deleted in a ``finally``. On loopback both directions pass the INPUT chain; for an address of
    a veth (`tests.support.faults_netns`) what arrives at ``port`` passes INPUT and what it sends passes
    OUTPUT."""
    tag = f"tapeflow-test-{uuid.uuid4().hex[:12]}"
    loss = [
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        f"{probability:.4f}",
        "-m",
        "comment",
        "--comment",
        tag,
        "-j",
        "DROP",
    ]
    if host == "127.0.0.1":
        rules = [
            ["INPUT", "-i", "lo", "-p", "tcp", "-d", host, direction, str(port), *loss]
            for direction in ("--dport", "--sport")
        ]
    else:
        rules = [
            ["INPUT", "-p", "tcp", "-d", host, "--dport", str(port), *loss],
            ["OUTPUT", "-p", "tcp", "-s", host, "--sport", str(port), *loss],
        ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-w", "5", "-I", *rule], check=True, capture_output=True, timeout=10)
            added.append(rule)
        yield added
    finally:
        for rule in added:
            subprocess.run(["iptables", "-w", "5", "-D", *rule], capture_output=True, timeout=10)
        left = subprocess.run(["iptables", "-w", "5", "-S"], capture_output=True, text=True, timeout=10)
        assert tag not in left.stdout, f"iptables rules {tag} left behind:\n{left.stdout}"


def _sink_through(proxy: LinkProxy):
    """Patch the sink's launch (the supervisor runs in this process) so its database URL is the proxy."""
    from tapeflow.stack.app_services import SinkService
    from tapeflow_runtime.endpoints import WRITER_ROLE
    from tapeflow_runtime.files import read_or_create_secret

    original = SinkService.prepare

    def prepare(self):
        launch = original(self)
        password = read_or_create_secret(self.paths.secrets_dir / f"postgres-{WRITER_ROLE}")
        url = (
            f"postgresql://{WRITER_ROLE}:{urllib.parse.quote(password, safe='')}@{proxy.host}:{proxy.port}/"
            f"{self.settings.database_name}"
        )
        return dataclasses.replace(launch, env={**(launch.env or {}), "TAPEFLOW_DATABASE_URL": url})

    return mock.patch.object(SinkService, "prepare", prepare)


def _sink_database_state(stack) -> float | None:
    """The sink's ``tapeflow_sink_database_state`` gauge, scraped from its /metrics."""
    from tests.support.faults_process import _health_url

    url = _health_url(stack, "sink").rsplit("/", 1)[0] + "/metrics"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # nosec B310 # the test's own loopback service
            text = resp.read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith("tapeflow_sink_database_state ")]
    return values[0] if values else None


def _db_upstream(home: Path):
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.process_records import ProcessRecord

    paths = StackPaths(home)

    def upstream() -> tuple[str, int]:
        rec = ProcessRecord.load(paths.state_file("database"))
        host, port = rec.address.rsplit(":", 1)
        return host, int(port)

    return upstream


def sink_db_link_faults(
    home: Path,
    *,
    delay_ms: float = 200.0,
    delay_s: float = 6.0,
    bytes_per_s: float | None = 20_000.0,
    throttle_s: float = 5.0,
    loss: float = 0.1,
    loss_s: float = 6.0,
    duration_s: float = 40.0,
    trades_per_s: float = 40.0,
    then_kill_broker: bool = False,
    sink_pause_s: float = 0.0,
    stop_timeout_s: float | None = None,
    partition_s: float = 0.0,
    symbol: str = "BTCUSDT",
) -> list[dict[str, Any]]:
    """The sink's PostgreSQL link through `LinkProxy`, up to four faults in turn, each cleared before the next:

    1. ``link_delay_<D>ms``: every chunk delayed ``delay_ms`` each way for ``delay_s``;
    2. ``link_throttle_<B>Bps`` (``bytes_per_s``): at most that many bytes/s each way for ``throttle_s``;
    3. ``link_loss_<P>pct`` (``loss`` > 0): ``loss`` of the packets on the proxy's port dropped
       (iptables statistic) for ``loss_s``; skipped, with the reason in the detail (``loss_skipped``),
       where iptables is not usable;
    4. ``db_partition_<S>s`` (``partition_s`` > 0): the network between the sink and PostgreSQL cut for
       ``partition_s``: the sink reaches the proxy through a relay in a network namespace
       (`tests.support.faults_netns`), whose veth link is set down (packets dropped, no reset: the sink's
       own sockets see the partition, not a proxy that still acknowledges), then up. Skipped, with the
       reason (``partition_skipped``), where namespaces cannot be made.

    Per fault: ``recover_s`` from the fault cleared to the table caught up with what the producer had
    delivered when it cleared (the consumer keeps up); ``duration_s`` the fault's length. ``lost`` /
    ``duplicates``: the whole run's trades table against the session (exactly once, by agg id).
    ``then_kill_broker``: then, on the same stack, `broker_killed`'s fault once (its row last; the sink
    still goes through the proxy, now clean), the sink paused ``sink_pause_s`` before the kill: what the
    test does, to start one stack, not two."""
    from tests.support.endurance import live_stack

    spec, expected = _session(duration_s, trades_per_s, symbol)
    detail: dict[str, Any] = {"expected": expected, "faults": {}}
    why_no_loss = iptables_usable() if loss else "not asked"
    detail["loss_skipped"] = why_no_loss
    faults: list[tuple[str, float]] = []
    env = {"TAPEFLOW_STOP_TIMEOUT_S": str(stop_timeout_s)} if stop_timeout_s else None
    why_no_partition = netns_usable() if partition_s else "not asked"
    detail["partition_skipped"] = why_no_partition
    with contextlib.ExitStack() as scope:
        link = None
        if why_no_partition is None:  # sink -> relay in the namespace -> veth -> proxy -> PostgreSQL
            link = scope.enter_context(NetnsLink())
            proxy = scope.enter_context(LinkProxy(_db_upstream(home), host=link.host_addr))
            entry = scope.enter_context(
                LinkProxy(lambda: (link.host_addr, proxy.port), host=link.ns_addr, netns=link.name)
            )
        else:
            proxy = entry = scope.enter_context(LinkProxy(_db_upstream(home)))
        scope.enter_context(_sink_through(entry))
        stack = scope.enter_context(
            live_stack(home, spec, env=env, dated_at_launch=True, without=NOT_IN_THE_TRADES_PATH)
        )
        _flowing(stack, symbol)
        assert proxy.connections > 0, "the sink does not go through the proxy"
        sink_pid = stack.service_pid("sink")
        last = expected[2]

        def run_fault(name: str, length_s: float, on, off) -> None:
            """The fault for ``length_s``, the sink's status watched every 0.5 s meanwhile (``status``:
            the first time it was not ok, seconds into the fault, and its detail)."""
            f: dict[str, Any] = {"stored_before": stack.trades_stored(symbol)[0], "status": None}
            t0 = time.monotonic()
            on()
            try:
                while (left := length_s - (time.monotonic() - t0)) > 0:
                    if "stored_mid" not in f and left <= length_s / 2:
                        f["stored_mid"] = stack.trades_stored(symbol)[0] if link is None or link.is_up else None
                        f["bytes_mid"] = proxy.bytes
                    if f["status"] is None and not (st := _statuses(stack, ("sink",)).get("sink", (True, "")))[0]:
                        f["status"] = (round(time.monotonic() - t0, 2), st[1])
                        f["database_state_metric"] = _sink_database_state(stack)
                    time.sleep(min(0.5, max(0.0, length_s - (time.monotonic() - t0))))
                f["lag_at_clear"] = (_delivered(stack, symbol) or 0) - _max_stored(stack, symbol)
            finally:
                off()
            t_clear = time.monotonic()
            target = _delivered(stack, symbol) or 0
            caught_up = poll(lambda: _max_stored(stack, symbol) >= min(target, last), 120, 0.1)
            f["recover_s"] = round(time.monotonic() - t_clear, 2) if caught_up else None
            f["duration_s"] = round(t_clear - t0, 2)
            f["lag_after"] = (_delivered(stack, symbol) or 0) - _max_stored(stack, symbol)
            f["status_after"] = _statuses(stack, ("sink",))
            detail["faults"][name] = f
            faults.append((name, f["duration_s"]))

        def set_delay(value: float) -> None:
            proxy.delay_s = value

        def set_rate(value: float | None) -> None:
            proxy.bytes_per_s = value

        if delay_ms:
            run_fault(f"link_delay_{delay_ms:g}ms", delay_s, lambda: set_delay(delay_ms / 1000), lambda: set_delay(0.0))
        if bytes_per_s:
            run_fault(
                f"link_throttle_{bytes_per_s:g}Bps", throttle_s, lambda: set_rate(bytes_per_s), lambda: set_rate(None)
            )
        if loss and why_no_loss is None:
            rules = contextlib.ExitStack()
            run_fault(
                f"link_loss_{loss * 100:g}pct",
                loss_s,
                lambda: detail.__setitem__(
                    "loss_rules", rules.enter_context(packet_loss(proxy.port, loss, proxy.host))
                ),
                rules.close,
            )
        if link is not None:
            run_fault(f"db_partition_{partition_s:g}s", partition_s, link.down, link.up)
        detail["sink_pid_same"] = sink_pid == stack.service_pid("sink")
        if then_kill_broker:
            _kill_phase(stack, detail, symbol, 1, 0.0, trades_per_s, sink_pause_s)
        _finish(stack, detail, symbol, duration_s)
        detail["proxy"] = {"connections": proxy.connections, "bytes": proxy.bytes}

    rows = [
        row(
            name,
            duration_s=length,
            trades_in=expected[0],
            trades_out=detail["distinct"],
            duplicates=detail["dupes"],
            lost=detail["missing"],
            recover_s=detail["faults"][name]["recover_s"],
            detail=detail,
        )
        for name, length in faults
    ]
    return rows + (_kill_rows(detail, 0.0) if then_kill_broker else [])
