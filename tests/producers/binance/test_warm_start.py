"""Warm start: a fresh producer primes md.* with the last 25 h (Vision archives, REST aggTrades by fromId,
OI/ratio/funding/mark history) before streaming, so a new engine group evaluates with full 24-hour
windows as soon as the live stream starts, and computes what an engine that saw those 25 h live did.

Offline against the fake exchange: a generated session of 25 h 20 min (two symbols, sparse depth and
marks so it stays small: a book every 7.5 s and a mark every 30 s, each fresh by the engine's limits
of 10 s and 60 s; 66,000 frames, where a book every 5 s and a mark every 5 s made 109,000) whose first 25 h are history (`--history-s`: served only by the Vision archives and REST,
as for a producer starting "now") and whose last 20 minutes stream live (at 40x).
The window [now - 25 h, now) spans the end of one UTC day (archive), one whole day (archive) and ten
minutes of the current day (REST).

Reference: the same session replayed whole through the producer, and the engine core over what it
published (an engine that saw the 25 h as they streamed; the replay parity tests prove the streaming
engine equal to the core on the same inputs). Compared: every feature and signal evaluated from ten minutes after the live start
on. The first minutes differ by construction and are not compared: liquidations have no public
history (5-minute window), and the point indicators (Coinbase premium, spot-perp divergence) are
polled at the live start instead of at the previous 5-minute boundary.

`tapeflow status` is sampled while the producer primes: it shows the producer as `priming` with each
symbol's progress. Measured and printed (not asserted): wall time from the producer's start to the end of the warm
start, to the first evaluation after the live start with the 24-hour warm-up complete, and to the
first signal after the live start.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from fake_exchange.replay import history_end
from fake_exchange.synthetic import SyntheticSpec, generate_session
from stream_apps.core.strategy import parse_strategy
from tapeflow.stack.supervisor import ComponentStatus, _app_status
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.process_records import ProcessRecord
from tests.support.engine_reference import canonical, direct_engine_outputs, session_records
from tests.support.replay_runs import (
    SYMBOLS,
    drain_engine,
    read_outputs,
    replay,
    service_env,
    start_engine,
)
from tests.support.services import Service

pytestmark = pytest.mark.integration

SEED = 41
START_S = 1_700_003_400.0  # 2023-11-14 23:10 UTC: now (after 25 h) is 2023-11-16 00:10
HISTORY_S = 25 * 3600
DURATION_S = HISTORY_S + 20 * 60
SPEC = dict(
    trades_per_s=0.15,
    depth_interval_ms=7_500,
    mark_interval_s=30,
    book_ticker=False,
    binance_stream_names=True,
    start_time=START_S,
)
FAKE_ARGS = (
    "--synthetic-trades-per-s",
    "0.15",
    "--synthetic-depth-interval-ms",
    "7500",
    "--synthetic-mark-interval-s",
    "30",
    "--synthetic-no-book-ticker",
    "--synthetic-start",
    str(START_S),
)
STRATEGY = {
    "name": "warm_24h",
    "version": "1",
    "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
    "warmup": "24h",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "cooldown": "10m",
    "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
}
SETTLE_MS = 10 * 60_000


def watch_status_while_priming(producer: Service, env: dict[str, str]) -> list[ComponentStatus]:
    """The producer's row of `tapeflow status` (`_app_status`, what the command prints for it), sampled
    every 0.25 s until its warm start has finished; the producer registered in the home's run directory
    as `tapeflow up` registers it. (The command itself takes seconds to start; priming here takes ~5 s.)"""
    port = int(producer.wait_for_line(r"producer started.*metrics_port=(\d+)", 120).group(1))
    address = f"127.0.0.1:{port}"
    paths = StackPaths(Path(env["TAPEFLOW_HOME"]))
    paths.ensure()
    record = ProcessRecord(
        "producer",
        producer.proc.pid,
        psutil.Process(producer.proc.pid).create_time(),
        address,
        time.time(),
        str(producer.log_path),
        {"finite": False, "health_url": f"http://{address}/health"},
    )
    record.save(paths.state_file("producer"))
    rows: list[ComponentStatus] = []
    while True:
        finished = "warm start finished" in producer.log()
        rows.append(_app_status(record, time.time(), paths.state_file("producer")))
        if finished or producer.proc.poll() is not None:
            time.sleep(1.0)  # and once it streams live
            return [*rows, _app_status(record, time.time(), paths.state_file("producer"))]
        time.sleep(0.25)


def reference_outputs(kafka_bootstrap: str, read_topic, workdir: Path, prefix: str) -> dict[str, list[dict]]:
    """The whole session streamed through the producer, and the engine core over what it published (what
    the streaming engine computes from it: the replay parity tests; streaming it here too cost ~50 CPU-s
    and a 70 s drain)."""
    _, published, _ = replay(
        kafka_bootstrap,
        prefix,
        read_topic,
        workdir,
        seed=SEED,
        duration_s=DURATION_S,
        speed="max",
        fake_args=FAKE_ARGS,
        engine=False,
    )
    return canonical(direct_engine_outputs(session_records(published), [parse_strategy(STRATEGY)]))


@pytest.mark.timeout(2400)
def test_warm_start_reaches_full_windows_at_once_and_matches_an_engine_that_saw_25_hours(
    kafka_bootstrap, read_topic, tmp_path
):
    session = generate_session(SyntheticSpec(seed=SEED, symbols=SYMBOLS, duration_s=DURATION_S, **SPEC))
    live_index = history_end(session.frames, HISTORY_S)
    live_ms = min(f.payload["E"] for f in session.frames[live_index : live_index + 50])
    history_trades = {(f.payload["s"], f.payload["a"]) for f in session.frames[:live_index] if f.event == "aggTrade"}

    # the reference, computed on a thread of its own while the warm start runs (its own namespace and
    # processes; a third of the test's wall time when it ran first)
    pool = ThreadPoolExecutor(1)
    reference_run = pool.submit(
        reference_outputs, kafka_bootstrap, read_topic, tmp_path / "ref", f"wr{os.getpid()}{tmp_path.name[-6:]}."
    )
    pool.shutdown(wait=False)

    # the warm start: 25 h of history, then the last 20 minutes live
    prefix = f"ws{os.getpid()}{tmp_path.name[-6:]}."
    workdir = tmp_path / "warm"
    workdir.mkdir()
    ensure_topics(kafka_bootstrap, prefix=prefix)
    env = service_env(kafka_bootstrap, prefix, workdir)
    services: list[Service] = []
    timings: dict[str, float] = {}
    try:
        engine = start_engine(env, workdir, strategy=STRATEGY)
        services.append(engine)
        fake = Service(
            "fake-exchange",
            [
                "fake-exchange",
                "--synthetic-seed",
                str(SEED),
                "--synthetic-symbols",
                ",".join(SYMBOLS),
                "--synthetic-duration",
                str(DURATION_S),
                *FAKE_ARGS,
                "--history-s",
                str(HISTORY_S),
                "--speed",
                "40",
                "--rest-clock",
                "recording",
                "--aggtrades-visibility",
                "replayed",
                # each archive answered 1.5 s late (a slow link): the vision
                # phase lasts seconds, so the status sampled below sees it
                # however loaded the machine is
                "--fault",
                "vision_delay_ms=1500",
            ],
            env,
            workdir,
        )
        services.append(fake)
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 300).group(0))
        rest = urls["rest_url"]
        began = time.monotonic()
        # no --vision-url: it follows --rest-url when that is not Binance's (the fake serves the archives)
        producer = Service(
            "producer",
            [
                "produce",
                "--ws-url",
                urls["ws_url"],
                "--rest-url",
                rest,
                "--spot-url",
                rest,
                "--coinbase-url",
                rest,
                "--replay-control-url",
                rest,
                "--warm-start-hours",
                "25",
                "--metrics-port",
                "0",
                # every trade (Vision + REST): the start from minute bars (the
                # default) is test_minute_bars's and test_warm_start_klines's
                "--warm-start-detail-minutes",
                "0",
            ],
            env,
            workdir,
        )
        services.append(producer)
        statuses = watch_status_while_priming(producer, env)
        print("\nstatus while priming: " + " | ".join(dict.fromkeys(c.detail for c in statuses)))
        # `tapeflow status` showed the producer priming, with per-symbol progress through the archive days
        priming = [c for c in statuses if c.state == "priming"]
        assert priming, statuses
        assert all(c.healthy and c.detail.startswith("warm start") for c in priming), priming
        assert any(re.search(r"(BTCUSDT|ETHUSDT) vision [0-2]/2 days, [\d,]+ trades", c.detail) for c in priming), [
            c.detail for c in priming
        ]
        assert statuses[-1].state == "running", statuses[-1]
        producer.wait_for_line(r"warm start finished", 900)
        timings["warm start finished"] = time.monotonic() - began
        # (the time to the first warm evaluation and signal is `benchmarks/bench_warm_start.py`'s: polling
        # the features and signals topics from their start every second cost this test CPU-s it needs not)
        try:
            assert producer.proc.wait(600) == 0, producer.tail()
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the live part did not finish\n{producer.tail()}\n{fake.tail()}") from None
        log = producer.log()
        # the producer has exited: md.trades is final, read once for the drain's ends and the checks below
        md_trades = read_topic(kafka_bootstrap, prefix + "md.trades", settled=True)
        drain_engine(engine, kafka_bootstrap, prefix, read_topic, trades=md_trades)
    finally:
        for s in services:
            s.kill()
    reference = reference_run.result()
    print("\n" + ", ".join(f"{k}: {v:.1f} s" for k, v in timings.items()))
    print(next(line for line in log.splitlines() if "warm start finished" in line))

    # the history was primed from both sources, and every trade of it is on md.trades once
    assert log.count("done (vision+rest (2/2 days)") == 2, log[-3000:]
    trades = [(t["value"]["symbol"], t["value"]["agg_id"]) for t in md_trades]
    assert len(trades) == len(set(trades)) and history_trades <= set(trades)

    warm = read_outputs(kafka_bootstrap, prefix, read_topic)
    for sym in SYMBOLS:  # the first evaluation after the live start: as valid, as timed as the reference's
        first = [
            next(f for f in run["features"] if f["symbol"] == sym and f["eval_time"] >= live_ms)
            for run in (warm, reference)
        ]
        assert first[0]["block_reason"] != "warmup" and first[1]["block_reason"] != "warmup", first
        assert first[0]["eval_time"] == first[1]["eval_time"], first
    cut = live_ms + SETTLE_MS
    for topic, field in (("features", "eval_time"), ("signals", "eval_time"), ("bars.1m", "open_time")):
        got = [r for r in warm[topic] if r[field] >= cut]
        want = [r for r in reference[topic] if r[field] >= cut]
        assert len(got) == len(want), f"{topic}: {len(got)} vs {len(want)}"
        print(f"{topic}: {len(got)} compared")
        assert want or topic == "signals", topic
        for a, b in zip(got, want, strict=True):
            assert a == b, f"{topic} differs:\nwarm start {a}\nreference  {b}"


@pytest.mark.timeout(1200)
def test_warm_start_primes_from_the_database_when_it_holds_the_window(kafka_bootstrap, database, read_topic, tmp_path):
    """The sink already stored the 25 h (a stack whose broker lost its data): the warm start publishes
    them from the database, and asks the exchange only for what came after."""
    import psycopg

    from sinks.migrate import migrate
    from tests.support.services import database_url

    session = generate_session(SyntheticSpec(seed=SEED, symbols=SYMBOLS, duration_s=HISTORY_S + 120, **SPEC))
    live_index = history_end(session.frames, HISTORY_S)
    history = [f.payload for f in session.frames[:live_index] if f.event == "aggTrade"]
    stored = history[:-40]  # the database lags the exchange by a few trades: REST supplies the rest
    migrate(database)
    with psycopg.connect(database) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY trades (exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, event_time, "
            "trade_time, receive_time, taker_side) FROM STDIN"
        ) as copy:
            for t in stored:
                at = datetime.fromtimestamp(t["T"] / 1000, tz=UTC)
                copy.write_row(
                    (
                        "binance",
                        t["s"],
                        t["a"],
                        float(t["p"]),
                        float(t["q"]),
                        t["f"],
                        t["l"],
                        at,
                        at,
                        at,
                        "SELL" if t["m"] else "BUY",
                    )
                )
    prefix = f"wd{os.getpid()}{tmp_path.name[-6:]}."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    env = service_env(kafka_bootstrap, prefix, tmp_path) | {"TAPEFLOW_DATABASE_URL": database_url(database)}
    services: list[Service] = []
    try:
        fake = Service(
            "fake-exchange",
            [
                "fake-exchange",
                "--synthetic-seed",
                str(SEED),
                "--synthetic-symbols",
                ",".join(SYMBOLS),
                "--synthetic-duration",
                str(HISTORY_S + 120),
                *FAKE_ARGS,
                "--history-s",
                str(HISTORY_S),
                "--speed",
                "max",
                "--rest-clock",
                "recording",
                "--aggtrades-visibility",
                "replayed",
            ],
            env,
            tmp_path,
        )
        services.append(fake)
        urls = json.loads(fake.wait_for_line(r"\{\"ws_url\".*\}", 300).group(0))
        rest = urls["rest_url"]
        producer = Service(
            "producer",
            [
                "produce",
                "--ws-url",
                urls["ws_url"],
                "--rest-url",
                rest,
                "--spot-url",
                rest,
                "--coinbase-url",
                rest,
                "--replay-control-url",
                rest,
                "--vision-url",
                rest,
                "--warm-start-hours",
                "25",
                "--metrics-port",
                "0",
            ],
            env,
            tmp_path,
        )
        services.append(producer)
        assert producer.proc.wait(600) == 0, producer.tail()
        log = producer.log()
    finally:
        for s in services:
            s.kill()
    assert log.count("done (database+rest") == 2, log[-3000:]
    trades = [(t["value"]["symbol"], t["value"]["agg_id"]) for t in read_topic(kafka_bootstrap, prefix + "md.trades")]
    assert len(trades) == len(set(trades))
    assert {(t["s"], t["a"]) for t in history} <= set(trades)  # the database's, then REST's from its last id on
