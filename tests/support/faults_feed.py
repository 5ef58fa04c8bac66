"""Exchange-feed faults for the fault suite: the real producer process (`tapeflow produce`,
live mode: no replay control, as against Binance) against the fake exchange process playing a
synthetic session at its own receive times (`--start session_time`, dated from now), into the real
broker, optionally with the real sink (`tapeflow sink`) into the real PostgreSQL.

One run (`feed_faults`) takes several faults in sequence; each waits on conditions, never on a fixed
sleep: inject, see the producer's /metrics or /health show it, let it clear, wait for data to flow
again. Then the producer is stopped (SIGTERM: flush and checkpoint) and the invariants are measured
over the whole run:

- every trade the fake exchange produced (the session's aggTrades from its first agg id up to the last
  one the producer delivered, which must reach the trades the exchange had played when the faults
  were over) is in `md.trades` exactly once, and with the sink in the `trades` table exactly once;
- the depth chain published on `md.depth` only breaks where the producer resynced;
- no REST request reached the exchange inside a 418/429's Retry-After window (the fake counts them:
  `rest_requests_in_ban` of its status);
- per fault, `recover_s`: seconds from the fault clearing to data flowing again (no hole open, every
  book live, new trades delivered).

Rows follow `tests/support/faults_process.py` (``ROW_KEYS`` plus ``detail``): per fault, ``trades_in``
are the session's trades with a trade time in the fault's window (injection to recovery),
``trades_out`` those of them found in the topic, ``duplicates`` extra copies there, ``lost`` the
missing ones; ``orders_*`` do not apply (None). ``duration_s`` is how long the fault lasted.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from fake_exchange.synthetic import SyntheticSpec, generate_session
from tapeflow_runtime.kafka_client import ensure_topics
from tests.support.faults_process import row
from tests.support.services import Service, database_url, record_counts, wait_consumed
from tests.support.waiting import wait_until

SYMBOLS = ("BTCUSDT", "ETHUSDT")
TRADES_PER_S = 10.0  # per symbol
SEED = 23
RECOVER_LIMIT_S = 30.0  # data must flow again within this long after a fault clears
AGG = "btcusdt@aggTrade"
DEPTH = "btcusdt@depth@100ms"


# ------------------------------------------------------------------------------------------- helpers
def _http_json(url: str, body: dict | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class Phase:
    """What one fault did: monotonic times of injection, clearing and recovery, its wall window."""

    fault: str
    injected: float
    wall_from_ms: int
    cleared: float | None = None
    shown: dict[str, Any] = field(default_factory=dict)  # what the producer's status/metrics said meanwhile
    recovered: float | None = None
    wall_to_ms: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class FeedRig:
    """The fake exchange, the producer and (with `database`) the sink as processes, plus their probes."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        *,
        session_s: float,
        database: str | None = None,
        fake_faults: list[str] = (),
    ) -> None:
        self.bootstrap, self.workdir, self.database = bootstrap, workdir, database
        workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"feed{uuid.uuid4().hex[:8]}."
        ensure_topics(bootstrap, prefix=self.prefix)
        home = workdir / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        self.env.update(
            {
                "TAPEFLOW_HOME": str(home),
                "TAPEFLOW_BROKER": bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": self.prefix,
                "TAPEFLOW_SYMBOLS": ",".join(SYMBOLS),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if database is not None:
            self.env["TAPEFLOW_DATABASE_URL"] = database_url(database)
        self.services: list[Service] = []
        # a session dated from now, played at its own receive times: the fake is a live exchange
        start = round(time.time() + 4.0, 3)  # after the fake's start-up, so it plays on time
        self.spec = SyntheticSpec(
            seed=SEED,
            symbols=SYMBOLS,
            duration_s=session_s,
            trades_per_s=TRADES_PER_S,
            start_time=start,
            binance_stream_names=True,
        )
        self.session = generate_session(self.spec)  # the same frames the fake process generates
        self.trades = [f.payload for f in self.session.frames if f.event == "aggTrade"]
        # the producer's checkpoint says it delivered up to just before the session's first trade, so
        # it owes every trade of the session, those played before it connected included (REST fill)
        self.first_id = {s: min(t["a"] for t in self.trades if t["s"] == s) for s in SYMBOLS}
        self.checkpoint = home / "producer" / f"binance-{self.prefix}.json"
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        self.checkpoint.write_text(json.dumps({"last_agg_id": {s: i - 1 for s, i in self.first_id.items()}}))
        args = [
            "fake-exchange",
            "--synthetic-seed",
            str(SEED),
            "--synthetic-symbols",
            ",".join(SYMBOLS),
            "--synthetic-duration",
            str(session_s),
            "--synthetic-trades-per-s",
            str(TRADES_PER_S),
            "--synthetic-start",
            repr(start),
            "--start",
            "session_time",
            "--aggtrades-visibility",
            "replayed",
            "--log-level",
            "WARNING",
        ]
        for fault in fake_faults:
            args += ["--fault", fault]
        self.fake = self._start("fake-exchange", *args)
        urls = json.loads(self.fake.wait_for_line(r"\{\"ws_url\".*\}", 60).group(0))
        self.rest = urls["rest_url"]
        self.ws = urls["ws_url"]
        self.sink: Service | None = None
        if database is not None:
            self.sink = self._start("sink", "sink", "--topics", "md.trades", "--metrics-port", "0")
        self.producer: Service | None = None
        self.port = 0

    def _start(self, name: str, *args: str) -> Service:
        service = Service(name, list(args), self.env, self.workdir)
        self.services.append(service)
        return service

    def start_producer(self) -> None:
        rest = self.rest
        self.producer = self._start(
            "producer",
            "produce",
            "--ws-url",
            self.ws,
            "--rest-url",
            rest,
            "--spot-url",
            rest,
            "--coinbase-url",
            rest,
            "--metrics-port",
            "0",
            "--warm-start-hours",
            "0",
        )
        self.port = int(self.producer.wait_for_line(r"producer started.*metrics_port=(\d+)", 90).group(1))

    def close(self) -> None:
        for service in self.services:
            service.kill()

    # --- probes ----------------------------------------------------------------------------------------
    def alive(self) -> None:
        for service in self.services:
            assert service.proc.poll() is None, f"{service.name} exited\n{service.tail()}"

    def faults(self, **changes: Any) -> dict:
        return _http_json(f"{self.rest}/_control/faults", changes)

    def status(self) -> dict:
        return _http_json(f"{self.rest}/_control/status")

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as error:  # 503 while not connected: the body still says why
            return json.loads(error.read())

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the producer's samples `name` whose labels include `labels` (a `topic` label matches
        by suffix: the topics carry the run's prefix)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name != name:
                    continue
                if all(
                    (sample.labels.get(k, "").endswith(v) if k == "topic" else sample.labels.get(k) == v)
                    for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def delivered_trades(self) -> float:
        return self.metric("tapeflow_producer_messages_out_total", topic="md.trades")

    def flowing(self, since_delivered: float) -> bool:
        """Data flows: no hole open, every book live, trades delivered since `since_delivered`, and the
        websocket itself delivers again (a trade frame of every symbol within ~2 s: the freshness gauge,
        refreshed every second), not only the REST fills."""
        h = self.health()
        return (
            h.get("gaps_open") == 0
            and h.get("books_live") == len(SYMBOLS)
            and self.delivered_trades() > since_delivered
            and all(_trade_age(self, s) < 2.5 for s in SYMBOLS)
        )

    def wait(self, condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        return wait_until(condition, timeout, what, interval=interval, alive=self.alive)

    def recover(self, phase: Phase, timeout: float = RECOVER_LIMIT_S + 15) -> None:
        """Wait for data to flow again after `phase` cleared; record when."""
        assert phase.cleared is not None
        base = self.delivered_trades()
        self.wait(lambda: self.flowing(base), timeout, f"{phase.fault}: data flowing again")
        phase.recovered = time.monotonic()
        phase.wall_to_ms = int(time.time() * 1000)
        phase.detail["rest_requests"] = self.status()["rest_requests"] - phase.detail.get("rest_requests", 0)


# ------------------------------------------------------------------------------------------- the cases
def _start(rig: FeedRig, fault: str) -> Phase:
    phase = Phase(fault, time.monotonic(), int(time.time() * 1000))
    phase.detail["rest_requests"] = rig.status()["rest_requests"]  # made a count at recovery
    return phase


def case_rest_418_at_start(rig: FeedRig, fault_s: float) -> Phase:
    """Armed before the producer starts (`rest_418_count=1` with `Retry-After: fault_s`): its start-up
    burst (checkpoint gap fill, depth snapshots, the first indicator poll) meets an IP ban."""
    phase = _start(rig, "rest_418_ban")
    bans = rig.status()["rest_requests_in_ban"]
    rig.start_producer()
    rig.wait(lambda: rig.status()["faults"]["rest_418_count"] == 0, 60, "the 418 was served")
    remaining = rig.status()["rest_ban_remaining_s"]
    retry = max(1, round(fault_s))
    phase.cleared = time.monotonic() + remaining
    phase.injected = phase.cleared - retry  # when the 418 was answered (the ban's start)
    phase.wall_from_ms = int((time.time() + remaining - retry) * 1000)
    phase.shown["rest_backoffs_418"] = rig.wait(
        lambda: rig.metric("tapeflow_producer_rest_backoffs_total", status="418"), 30, "418 back-off counted"
    )
    phase.shown["books_live_during"] = rig.health().get("books_live")  # no snapshot inside the ban
    wait_until(lambda: time.monotonic() >= phase.cleared, remaining + 1, "ban over", interval=0.05)
    rig.recover(phase)
    phase.detail["requests_in_ban"] = rig.status()["rest_requests_in_ban"] - bans
    phase.detail["retry_after_s"] = retry
    return phase


def case_rest_429(rig: FeedRig, fault_s: float) -> Phase:
    """Two 429s (`Retry-After: fault_s / 2` each) met by the gap fill of 3 aggTrades the stream lost."""
    retry = max(1, round(fault_s / 2))
    phase = _start(rig, "rest_429")
    bans = rig.status()["rest_requests_in_ban"]
    rig.faults(rest_429_count=2, retry_after_s=retry)
    rig.faults(skip_frames=3, skip_stream=AGG)
    phase.shown["gaps_open"] = rig.wait(lambda: rig.health().get("gaps_open"), 30, "the hole shows in /health")
    phase.shown["rest_backoffs_429"] = rig.wait(
        lambda: rig.metric("tapeflow_producer_rest_backoffs_total", status="429"), 30, "429 back-off counted"
    )
    rig.wait(lambda: rig.status()["faults"]["rest_429_count"] == 0, 30, "both 429s served")
    phase.cleared = time.monotonic() + rig.status()["rest_ban_remaining_s"]
    wait_until(lambda: time.monotonic() >= phase.cleared, 2 * retry + 1, "ban over", interval=0.05)
    rig.recover(phase)
    phase.detail["requests_in_ban"] = rig.status()["rest_requests_in_ban"] - bans
    phase.detail["retry_after_s"] = retry
    return phase


def case_depth_gap(rig: FeedRig, fault_s: float) -> Phase:
    """Two BTCUSDT depth diffs never sent: the next diff's `pu` does not match; the book must resync."""
    before = rig.metric("tapeflow_producer_book_resyncs_total", symbol="BTCUSDT")
    phase = _start(rig, "depth_gap")
    rig.faults(skip_frames=2, skip_stream=DEPTH)
    rig.wait(lambda: rig.status()["faults"]["skip_frames"] == 0, 30, "depth frames skipped")
    phase.cleared = time.monotonic()
    phase.shown["book_resyncs"] = rig.wait(
        lambda: rig.metric("tapeflow_producer_book_resyncs_total", symbol="BTCUSDT") - before, 30, "the resync counted"
    )
    rig.recover(phase)
    return phase


def _disorder(rig: FeedRig, fault: str, switch: str, count: int, stream: str | None) -> Phase:
    phase = _start(rig, fault)
    rig.faults(**{switch: count, "disorder_stream": stream})
    rig.wait(lambda: rig.status()["faults"][switch] == 0, 60, f"{switch} used up")
    phase.cleared = time.monotonic()
    rig.faults(disorder_stream=None)
    rig.recover(phase)
    return phase


def case_duplicates(rig: FeedRig, fault_s: float) -> Phase:
    """`fault_s` seconds' worth of frames of every stream sent twice (trades, depth, marks)."""
    before = rig.metric("tapeflow_producer_duplicates_dropped_total")
    phase = _disorder(rig, "duplicate_frames", "duplicate_frames", max(10, int(fault_s * 4.2 * TRADES_PER_S)), None)
    phase.shown["duplicates_dropped"] = rig.metric("tapeflow_producer_duplicates_dropped_total") - before
    return phase


def case_out_of_order(rig: FeedRig, fault_s: float) -> Phase:
    """`fault_s` seconds' worth of BTCUSDT aggTrades delivered with each pair swapped."""
    before = rig.metric("tapeflow_producer_gaps_detected_total", symbol="BTCUSDT")
    count = max(4, int(fault_s * TRADES_PER_S / 2))
    phase = _disorder(rig, "out_of_order_frames", "reorder_frames", count, AGG)
    phase.detail["reordered"] = count
    phase.shown["gaps_detected"] = rig.metric("tapeflow_producer_gaps_detected_total", symbol="BTCUSDT") - before
    return phase


def _drop(rig: FeedRig, fault: str, mode: str) -> Phase:
    before = rig.metric("tapeflow_producer_reconnects_total")
    phase = _start(rig, fault)
    dropped = rig.faults(drop_mode=mode, drop_now=True)["dropped"]
    rig.faults(drop_mode="tcp_close")
    phase.cleared = time.monotonic()  # the exchange takes new connections at once
    phase.shown["reconnects"] = rig.wait(
        lambda: rig.metric("tapeflow_producer_reconnects_total") - before, 60, f"{fault}: reconnect counted"
    )
    phase.detail["dropped"] = dropped
    rig.recover(phase)
    return phase


def case_ws_close_1006(rig: FeedRig, fault_s: float) -> Phase:
    """The exchange closes the TCP connection without a close frame (the client sees 1006)."""
    return _drop(rig, "ws_close_1006", "tcp_close")


def case_tcp_reset(rig: FeedRig, fault_s: float) -> Phase:
    """The exchange resets the TCP connection (frames in flight lost)."""
    return _drop(rig, "tcp_reset", "abort")


def _trade_age(rig: FeedRig, symbol: str = "BTCUSDT") -> float:
    """Seconds since the producer's last aggTrade frame of `symbol` (its freshness gauge)."""
    return rig.metric("tapeflow_producer_last_event_age_seconds", exchange="binance", symbol=symbol, stream="aggTrade")


def case_stall(rig: FeedRig, fault_s: float) -> Phase:
    """No frame leaves the exchange for `fault_s` seconds, then everything held back arrives at once."""
    phase = _start(rig, "feed_stall")
    rig.faults(stall_for_s=fault_s)
    stalled_until = phase.injected + fault_s
    reconnects = rig.metric("tapeflow_producer_reconnects_total")
    oldest = 0.0  # the freshness gauge (refreshed every second) while the feed is stalled
    states: set[str] = set()  # /health's status meanwhile (a stall past the read timeout: reconnects)
    while time.monotonic() < stalled_until:
        oldest = max(oldest, _trade_age(rig))
        states.add(rig.health().get("status", "?"))
        time.sleep(min(0.2, max(0.0, stalled_until - time.monotonic())))
    phase.cleared = time.monotonic()
    phase.shown["trade_age_s"] = round(oldest, 2)
    phase.shown["health_status"] = sorted(states)
    phase.shown["reconnects"] = rig.metric("tapeflow_producer_reconnects_total") - reconnects
    rig.recover(phase)
    return phase


def case_half_open(rig: FeedRig, fault_s: float) -> Phase:
    """The connection goes half-open (no FIN, no RST, nothing sent or read): only the producer's read
    timeout can tell. The exchange serves new connections at once, so the fault 'clears' at injection;
    `recover_s` is the producer's detection time plus its repair."""
    before = rig.metric("tapeflow_producer_reconnects_total", reason="read timeout")
    phase = _start(rig, "ws_half_open")
    rig.faults(drop_mode="stall", drop_now=True)
    rig.faults(drop_mode="tcp_close")
    phase.cleared = time.monotonic()
    oldest = 0.0

    def reconnected() -> float:
        nonlocal oldest
        oldest = max(oldest, _trade_age(rig))
        return rig.metric("tapeflow_producer_reconnects_total", reason="read timeout") - before

    phase.shown["reconnects"] = rig.wait(reconnected, 90, "read-timeout reconnect counted", interval=0.25)
    phase.shown["trade_age_s"] = round(oldest, 2)  # the freshness gauge showed the silence meanwhile
    rig.recover(phase)
    return phase


STARTUP_CASE = case_rest_418_at_start
CASES: dict[str, Callable[[FeedRig, float], Phase]] = {
    "depth_gap": case_depth_gap,
    "duplicate_frames": case_duplicates,
    "out_of_order_frames": case_out_of_order,
    "ws_close_1006": case_ws_close_1006,
    "tcp_reset": case_tcp_reset,
    "rest_429": case_rest_429,
    "feed_stall": case_stall,
    "ws_half_open": case_half_open,
}


# ------------------------------------------------------------------------------------------- the run
def _read_records(bootstrap: str, topic: str) -> list[dict]:
    from tests.conftest import _read_topic

    return _read_topic(bootstrap, topic, idle_s=2.0)


def feed_faults(
    bootstrap: str,
    workdir: Path,
    *,
    fault_s: float = 3.0,
    database: str | None = None,
    cases: tuple[str, ...] = tuple(CASES),
    session_s: float | None = None,
) -> list[dict[str, Any]]:
    """One producer run through the 418 ban at start-up and then `cases` in order, each fault lasting about
    `fault_s`; returns one row per fault plus a ``run`` row-detail with the whole-run invariants.

    With `database` (a migrated database's conninfo) the sink runs too and the `trades` table is checked."""
    if session_s is None:  # room for every case; the run stops as soon as they are done
        session_s = 120.0 + (len(cases) + 1) * (fault_s + 20.0) + (40.0 if "ws_half_open" in cases else 0.0)
    rig = FeedRig(
        bootstrap,
        workdir,
        session_s=session_s,
        database=database,
        fake_faults=["rest_418_count=1", f"retry_after_s={max(1, round(fault_s))}"],
    )
    phases: list[Phase] = []
    try:
        phases.append(STARTUP_CASE(rig, fault_s))
        for name in cases:
            phases.append(CASES[name](rig, fault_s))
        # the faults are over: the producer owes every trade up to the end of the last fault's window (the
        # fake may play a little behind the wall clock: its session started late if its start-up was slow)
        last_ms = max(p.wall_to_ms or p.wall_from_ms for p in phases)
        owed = {s: max(t["a"] for t in rig.trades if t["s"] == s and t["T"] <= last_ms) for s in SYMBOLS}

        def delivered_owed() -> bool:  # the producer's checkpoint (saved every second): delivered ids
            last = json.loads(rig.checkpoint.read_text())["last_agg_id"]
            return all(int(last.get(s, -1)) >= owed[s] for s in SYMBOLS)

        rig.wait(delivered_owed, 60, f"the producer delivered every trade up to {owed}", interval=0.25)
        health = rig.health()
        fake_status = rig.status()
        assert rig.producer is not None
        exit_code = rig.producer.stop(60)
        producer_log = rig.producer.log()
        checkpoint = json.loads(rig.checkpoint.read_text())["last_agg_id"]
        records = _read_records(bootstrap, rig.prefix + "md.trades")
        depth = [r["value"] for r in _read_records(bootstrap, rig.prefix + "md.depth")]
        db_counts: Counter | None = None
        if rig.sink is not None:
            wait_consumed(
                bootstrap,
                rig.prefix + "tapeflow-sink",
                {rig.prefix + "md.trades": record_counts(records)},
                [rig.sink],
                120,
            )
            assert rig.sink.stop(60) == 0, rig.sink.tail()
            import psycopg

            with psycopg.connect(database) as conn:
                db_counts = Counter((s, a) for s, a in conn.execute("SELECT symbol, agg_id FROM trades"))
        rig.fake.stop(30)
    finally:
        rig.close()

    published = Counter((r["value"]["symbol"], r["value"]["agg_id"]) for r in records)
    # the trades owed: the session's, from its first agg id to the last one the producer delivered
    expected = {(t["s"], t["a"]) for t in rig.trades if t["a"] <= int(checkpoint.get(t["s"], -1))}
    time_of = {(t["s"], t["a"]): t["T"] for t in rig.trades}
    resyncs = sum(1 for line in producer_log.splitlines() if "order book resync" in line)
    run = {
        "expected": len(expected),
        "published": sum(published.values()),
        "distinct": len(published),
        "duplicates": sum(n - 1 for n in published.values() if n > 1),
        "missing": sorted(expected - set(published))[:20],
        "missing_count": len(expected - set(published)),
        "unexpected": sorted(set(published) - expected)[:20],
        "owed_reached": {s: int(checkpoint.get(s, -1)) >= owed[s] for s in SYMBOLS},
        "db_rows": None if db_counts is None else sum(db_counts.values()),
        "db_duplicates": None if db_counts is None else sum(n - 1 for n in db_counts.values() if n > 1),
        "db_missing": None if db_counts is None else len(expected - set(db_counts)),
        "depth_breaks": _depth_breaks(depth),
        "resyncs_logged": resyncs,
        "requests_in_ban": fake_status["rest_requests_in_ban"],
        "exit_code": exit_code,
        "health_at_end": health,
        "checkpoint": checkpoint,
        "owed": owed,
        "gaps_line": [ln for ln in producer_log.splitlines() if "not fillable" in ln][:5],
        "summary": producer_log.strip().splitlines()[-1] if producer_log.strip() else "",
    }
    rows = []
    # the whole run first: every trade the exchange produced, in the topic and (with the sink) the table
    rows.append(
        row(
            "feed_run:md.trades",
            duration_s=round(sum(max(0.0, (p.cleared or p.injected) - p.injected) for p in phases), 2),
            trades_in=len(expected),
            trades_out=len(set(published) & expected),
            duplicates=run["duplicates"],
            lost=run["missing_count"],
            detail={"shown": {}, "run": run},
        )
    )
    if db_counts is not None:
        rows.append(
            row(
                "feed_run:trades_table",
                duration_s=rows[0]["duration_s"],
                trades_in=len(expected),
                trades_out=len(set(db_counts) & expected),
                duplicates=run["db_duplicates"],
                lost=run["db_missing"],
                detail={"shown": {}, "run": run},
            )
        )
    for phase in phases:
        window = {k for k, t in time_of.items() if phase.wall_from_ms <= t <= (phase.wall_to_ms or phase.wall_from_ms)}
        found = {k for k in window if k in published}
        cleared = phase.cleared if phase.cleared is not None else phase.injected
        rows.append(
            row(
                phase.fault,
                duration_s=round(max(0.0, cleared - phase.injected), 2),
                trades_in=len(window),
                trades_out=len(found),
                duplicates=sum(published[k] - 1 for k in found),
                lost=len(window - found),
                recover_s=None if phase.recovered is None else round(phase.recovered - cleared, 2),
                detail={
                    "shown": phase.shown,
                    **phase.detail,
                    "lost_ids": sorted(window - found)[:10],
                    "window_ms": (phase.wall_from_ms, phase.wall_to_ms),
                    "run": run,
                },
            )
        )
    return rows


def bench_feed_faults(workdir: Path, short: bool, bootstrap: str) -> list[dict[str, Any]]:
    """`benchmarks/bench_faults.py`'s case: every feed fault with the sink, on an embedded broker and
    PostgreSQL of its own; faults of 30 s (Retry-After 30 s, two 429s of 15 s, a 30 s stall, 30 s worth of
    duplicated or reordered frames), 3 s with `short` (the test's)."""
    from benchmarks.embedded_stack import embedded_stack

    with embedded_stack() as (own_bootstrap, conninfo):
        return feed_faults(own_bootstrap, workdir, fault_s=3.0 if short else 30.0, database=conninfo)


def _depth_breaks(diffs: list[dict]) -> dict[str, int]:
    """Per symbol, how often a published diff does not continue the previous one's chain (`pu` != last `u`)."""
    last: dict[str, int] = {}
    breaks: Counter = Counter()
    for d in diffs:
        sym = d["symbol"]
        if sym in last and d["prev_final_update_id"] != last[sym]:
            breaks[sym] += 1
        last[sym] = d["final_update_id"]
    return dict(breaks)
