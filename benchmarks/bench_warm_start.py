"""Time to the first valid evaluation and signal after a fresh start with 25 h to prime.

A fresh stack as `tapeflow up` starts it, without the database: an engine (a new group, waiting for
progress) and a producer with `--warm-start-hours 25`, against the fake exchange serving a generated
session whose first 25 h are history (Vision archives for the complete UTC days, REST for the rest,
`--history-s`) and whose last minutes stream live at 1x. The window is placed so that 13 h of it are
today's (REST `aggTrades`, 1,000 per request at weight 20: the part Binance rate-limits) and ~12 h are
yesterday's archive.

Printed: wall seconds from the producer's start to (1) the end of the warm start, (2) the engine's first
evaluation after the live start with its 24-hour warm-up complete, (3) the first signal after the live
start (when the market gives one within the live minutes), plus the warm start's own summary. Target
(DESIGN §7): first valid signal ≤ 5 min after a fresh live start. The synthetic session's trade rate
is far below BTCUSDT's (set with --trades-per-s): REST paging scales with trades per day.

`--profile real --utc-hour H`: the fake's real-rate profile instead (`fake_exchange.real_history`:
BTC/ETH/SOL/XRP at 30/20/12/9 trades/s with BTC-like bursts, a depth diff every 10 ms, the four default
symbols), its clock at hour H of a UTC day (so H hours of the 25 are today's, served only by REST, and
Vision has up to yesterday), and its real weight limit (2,400 a minute, 429 then 418 bans as Binance
applies them). Printed per symbol: seconds from the producer's start to the engine's first evaluation
after the live start with its 24-hour warm-up complete; and the 429s, 418s and the busiest minute's
weight the fake counted. `--max-minutes` ends a run that has not got there (null for those symbols).
With `--json` the last line is one object: `{"first_valid_evaluation_s": {SYMBOL: seconds or null},
"http_429": n, "http_418": n, "max_weight_per_minute": w}`.

Run: .venv/bin/python -m benchmarks.bench_warm_start [--trades-per-s 2] [--symbols BTCUSDT,ETHUSDT] [--live-min 5]
     .venv/bin/python -m benchmarks.bench_warm_start --profile real --utc-hour 23 [--max-minutes 30] [--json]
         [--detail-minutes 62]  (0: the warm start pages every trade: Vision for yesterday, REST for today)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import yaml
from confluent_kafka import Consumer, TopicPartition

from benchmarks.embedded_broker import broker
from fake_exchange.cli import REAL_PROFILE_DAY_S
from fake_exchange.replay import history_end
from fake_exchange.synthetic import SyntheticSpec, generate_session
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics

START_S = 1_699_963_800.0  # 2023-11-14 12:10 UTC: "now" after 25 h is 2023-11-15 13:10
HISTORY_S = 25 * 3600
TARGET_S = 300.0
STRATEGY = {  # the shipped weights need crowding inputs; direction alone gives a synthetic market signals
    "name": "bench_24h",
    "version": "1",
    "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
    "warmup": "24h",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "cooldown": "10m",
    "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
}


class Watcher:
    """Follows `features` and `signals` of a prefix from the beginning."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.serde = AvroSerde(FileSchemaRegistry())
        self.consumer = Consumer(consumer_config(bootstrap))
        parts = []
        for name in ("features", "signals"):
            topic = prefix + name
            for p in self.consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                parts.append(TopicPartition(topic, p, -2))
        self.consumer.assign(parts)

    def poll(self) -> list[tuple[str, dict]]:
        out = []
        for m in self.consumer.consume(5_000, 0.2):
            if not m.error():
                out.append((m.topic().rsplit(".", 1)[-1], self.serde.decode(m.value())))
        return out


def fake_status(rest: str) -> dict:
    with urllib.request.urlopen(f"{rest}/_control/status", timeout=10) as resp:
        return json.loads(resp.read())


def main() -> None:
    args = _parse_args()
    real = args.profile == "real"
    args.symbols = args.symbols or ("BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT" if real else "BTCUSDT,ETHUSDT")
    print(
        "load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        + f" on {os.cpu_count()} CPUs (a shared machine)"
    )
    symbols = tuple(args.symbols.split(","))
    live_start_ms, fake_args = _real_profile(args) if real else _synthetic_profile(args, symbols)
    first_valid: dict[str, float | None] = {s: None for s in symbols}
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "broker") as bootstrap:
        prefix = f"warm{os.getpid()}."
        ensure_topics(bootstrap, prefix=prefix)
        home = Path(tmp)
        (home / "strategy.yaml").write_text(yaml.safe_dump(STRATEGY))
        procs = _Processes(home, bootstrap, prefix, args.symbols)
        try:
            procs.start("engine", *_engine_argv(home))
            procs.wait_log("engine", r"engine worker ready", 120)
            procs.start("fake", "fake-exchange", *fake_args)
            urls = json.loads(procs.wait_log("fake", r"\{\"ws_url\".*\}", 600))
            rest = urls["rest_url"]
            watcher = Watcher(bootstrap, prefix)
            began = time.perf_counter()
            producer = procs.start("producer", *_producer_argv(urls["ws_url"], rest, args.detail_minutes))
            marks = _watch(
                watcher, producer, home, began, began + args.max_minutes * 60, live_start_ms, first_valid, real
            )
            status = fake_status(rest)
            progress = re.findall(r"warm start finished.*|warm start \(\d+ s\):.*", (home / "producer.log").read_text())
            detail = progress[-1] if progress else None
        finally:
            procs.stop_all()
    _report(args, real, marks, first_valid, status, detail)


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trades-per-s", type=float, default=2.0)
    ap.add_argument("--symbols", default=None, help="default: BTCUSDT,ETHUSDT (synthetic), the four (real)")
    ap.add_argument("--live-min", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=51)
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--profile", choices=["synthetic", "real"], default="synthetic")
    ap.add_argument("--utc-hour", type=float, default=12.0, help="real profile: the hour of the UTC day at start")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="end the run after this long")
    ap.add_argument("--json", action="store_true", help="the last line: the result as one JSON object")
    ap.add_argument(
        "--detail-minutes",
        type=float,
        default=62.0,
        help="the producer's --warm-start-detail-minutes (0: every trade, Vision + REST)",
    )
    return ap.parse_args()


def _real_profile(args: argparse.Namespace) -> tuple[int, list[str]]:
    """The live start (Unix ms) and the fake exchange's arguments of the real-rate profile."""
    live_start_ms = int((REAL_PROFILE_DAY_S + args.utc_hour * 3600) * 1000)
    fake_args = [
        "--synthetic-seed",
        str(args.seed),
        "--synthetic-symbols",
        args.symbols,
        "--profile",
        "real",
        "--utc-hour",
        str(args.utc_hour),
        "--synthetic-duration",
        str(args.live_min * 60),
        "--speed",
        "1",
        "--aggtrades-visibility",
        "replayed",
    ]
    print(
        f"real profile: live start {datetime.fromtimestamp(live_start_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC "
        f"({args.utc_hour:g} of the 25 hours are today's: not in Vision yet), warm start trade by trade "
        f"for the last {args.detail_minutes:g} min (0: all)"
    )
    return live_start_ms, fake_args


def _synthetic_profile(args: argparse.Namespace, symbols: tuple[str, ...]) -> tuple[int, list[str]]:
    """The live start (Unix ms: the first live frames, generated here once, untimed) and the fake
    exchange's arguments of the synthetic session."""
    duration = HISTORY_S + args.live_min * 60
    spec = dict(
        trades_per_s=args.trades_per_s,
        depth_interval_ms=5_000,
        mark_interval_s=5,
        book_ticker=False,
        binance_stream_names=True,
        start_time=START_S,
    )
    t0 = time.perf_counter()
    session = generate_session(SyntheticSpec(seed=args.seed, symbols=symbols, duration_s=duration, **spec))
    live = history_end(session.frames, HISTORY_S)
    live_start_ms = min(f.payload["E"] for f in session.frames[live : live + 50])
    history_trades = sum(1 for f in session.frames[:live] if f.event == "aggTrade")
    del session
    print(
        f"session: {history_trades:,} trades of history over {len(symbols)} symbols "
        f"(generated in {time.perf_counter() - t0:.0f} s, not timed)"
    )
    fake_args = [
        "--synthetic-seed",
        str(args.seed),
        "--synthetic-symbols",
        args.symbols,
        "--synthetic-duration",
        str(duration),
        "--synthetic-trades-per-s",
        str(args.trades_per_s),
        "--synthetic-depth-interval-ms",
        "5000",
        "--synthetic-mark-interval-s",
        "5",
        "--synthetic-no-book-ticker",
        "--synthetic-start",
        str(START_S),
        "--history-s",
        str(HISTORY_S),
        "--speed",
        "1",
        "--rest-clock",
        "recording",
        "--aggtrades-visibility",
        "replayed",
    ]
    return live_start_ms, fake_args


class _Processes:
    """The `tapeflow` processes of one run (engine, fake exchange, producer), each logging to HOME/NAME.log,
    with the environment of a fresh stack on the given broker and topic prefix."""

    def __init__(self, home: Path, bootstrap: str, prefix: str, symbols: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        self.env.update(
            {
                "TAPEFLOW_HOME": str(home / "home"),
                "TAPEFLOW_BROKER": bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": prefix,
                "TAPEFLOW_SYMBOLS": symbols,
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.logs = {name: open(home / f"{name}.log", "w") for name in ("engine", "fake", "producer")}
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        self.procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tapeflow", *argv],
                env=self.env,
                stdout=self.logs[name],
                stderr=subprocess.STDOUT,
                cwd=self.home,
            )
        )
        return self.procs[-1]

    def wait_log(self, name: str, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, (self.home / f"{name}.log").read_text(errors="replace"))
            if found:
                return found.group(0)
            time.sleep(0.2)
        raise SystemExit(f"{name}: no {pattern!r} within {timeout} s")

    def stop_all(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def _engine_argv(home: Path) -> list[str]:
    """A new engine group on the benchmark's strategy, held until the warm start's progress markers."""
    return [
        "engine",
        "--strategy",
        str(home / "strategy.yaml"),
        "--metrics-port",
        "0",
        "--prime-hours",
        "0",
        "--wait-for-progress",
        "--signal-max-age-s",
        "1e9",
    ]


def _producer_argv(ws_url: str, rest: str, detail_minutes: float) -> list[str]:
    """A producer whose every endpoint is the fake exchange's, with a 25-hour warm start."""
    return [
        "produce",
        "--ws-url",
        ws_url,
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
        "--warm-start-detail-minutes",
        str(detail_minutes),
        "--metrics-port",
        "0",
    ]


def _watch(
    watcher: Watcher,
    producer: subprocess.Popen,
    home: Path,
    began: float,
    deadline: float,
    live_start_ms: int,
    first_valid: dict[str, float | None],
    real: bool,
) -> dict[str, float]:
    """Seconds from `began` to each mark, and into `first_valid` each symbol's first warm evaluation after
    the live start; until every symbol has one (synthetic: and every mark), the producer ends, or `deadline`."""
    marks: dict[str, float] = {}
    while (
        producer.poll() is None
        and time.perf_counter() < deadline
        and (None in first_valid.values() or (not real and len(marks) < 3))
    ):
        if "warm start finished" not in marks and "warm start finished" in (home / "producer.log").read_text():
            marks["warm start finished"] = time.perf_counter() - began
        for topic, record in watcher.poll():
            if record["eval_time"] < live_start_ms:
                continue
            if topic == "features" and record["block_reason"] != "warmup":
                marks.setdefault("first warm evaluation after the live start", time.perf_counter() - began)
                if first_valid.get(record["symbol"], 0) is None:
                    first_valid[record["symbol"]] = round(time.perf_counter() - began, 1)
            if topic == "signals":
                marks.setdefault("first signal after the live start", time.perf_counter() - began)
    return marks


def _report(
    args: argparse.Namespace,
    real: bool,
    marks: dict[str, float],
    first_valid: dict[str, float | None],
    status: dict,
    detail: str | None,
) -> None:
    for name, seconds in marks.items():
        print(f"{name}: {seconds:.1f} s ({seconds / TARGET_S:.2f}x the 5-minute target)")
    for symbol, seconds in first_valid.items():
        shown = (
            f"{seconds:.1f} s ({seconds / TARGET_S:.2f}x the 5-minute target)"
            if seconds is not None
            else f"not within {args.max_minutes:g} min"
        )
        print(f"{symbol}: first valid evaluation after the live start {shown}")
    if not real and "first signal after the live start" not in marks:
        print(f"no signal in the {args.live_min:g} live minutes")
    print(detail or "(no warm start summary)")
    limit = status.get("rest_weight_limit_1m", 0)
    print(
        f"REST: {status.get('rest_requests', 0):,} requests, busiest minute {status.get('rest_max_weight_1m', 0):,} "
        f"weight of the {limit:,} limit ({status.get('rest_max_weight_1m', 0) / max(limit, 1):.2f}x), "
        f"{status.get('rest_http_429', 0)} x 429, {status.get('rest_http_418', 0)} x 418, "
        f"{status.get('rest_requests_in_ban', 0)} requests inside a ban"
    )
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    if args.json:
        print(
            json.dumps(
                {
                    "first_valid_evaluation_s": first_valid,
                    "http_429": status.get("rest_http_429", 0),
                    "http_418": status.get("rest_http_418", 0),
                    "max_weight_per_minute": status.get("rest_max_weight_1m", 0),
                }
            )
        )


if __name__ == "__main__":
    main()
