"""Time to the first valid evaluation and signal after a fresh start with 25 h to prime (issue 13).

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

Run: .venv/bin/python -m benchmarks.bench_warm_start [--trades-per-s 2] [--symbols BTCUSDT,ETHUSDT] [--live-min 5]
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
from pathlib import Path

import yaml
from confluent_kafka import Consumer, TopicPartition

from benchmarks.embedded_broker import broker
from fake_exchange.replay import history_end
from fake_exchange.synthetic import SyntheticSpec, generate_session
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics

START_S = 1_699_963_800.0  # 2023-11-14 12:10 UTC: "now" after 25 h is 2023-11-15 13:10
HISTORY_S = 25 * 3600
TARGET_S = 300.0
STRATEGY = {  # the shipped weights need crowding inputs; direction alone gives a synthetic market signals
    "name": "bench_24h", "version": "1", "windows": {"cvd_fast": "30m", "cvd_mid": "4h"}, "warmup": "24h",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50}, "cooldown": "10m",
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trades-per-s", type=float, default=2.0)
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--live-min", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=51)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    print("load average (1, 5, 15 min) at the start: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
          + f" on {os.cpu_count()} CPUs (a shared machine)")
    symbols = tuple(args.symbols.split(","))
    duration = HISTORY_S + args.live_min * 60
    spec = dict(trades_per_s=args.trades_per_s, depth_interval_ms=5_000, mark_interval_s=5, book_ticker=False,
                binance_stream_names=True, start_time=START_S)
    t0 = time.perf_counter()
    session = generate_session(SyntheticSpec(seed=args.seed, symbols=symbols, duration_s=duration, **spec))
    live = history_end(session.frames, HISTORY_S)
    live_ms = min(f.payload["E"] for f in session.frames[live:live + 50])
    history_trades = sum(1 for f in session.frames[:live] if f.event == "aggTrade")
    del session
    print(f"session: {history_trades:,} trades of history over {len(symbols)} symbols "
          f"(generated in {time.perf_counter() - t0:.0f} s, not timed)")
    fake_args = ["--synthetic-seed", str(args.seed), "--synthetic-symbols", args.symbols, "--synthetic-duration",
                 str(duration), "--synthetic-trades-per-s", str(args.trades_per_s), "--synthetic-depth-interval-ms",
                 "5000", "--synthetic-mark-interval-s", "5", "--synthetic-no-book-ticker", "--synthetic-start",
                 str(START_S), "--history-s", str(HISTORY_S), "--speed", "1", "--rest-clock", "recording",
                 "--aggtrades-visibility", "replayed"]
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "broker") as bootstrap:
        prefix = f"warm{os.getpid()}."
        ensure_topics(bootstrap, prefix=prefix)
        home = Path(tmp)
        (home / "strategy.yaml").write_text(yaml.safe_dump(STRATEGY))
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        env.update({"TAPEFLOW_HOME": str(home / "home"), "TAPEFLOW_BROKER": bootstrap, "TAPEFLOW_TOPIC_PREFIX": prefix,
                    "TAPEFLOW_SYMBOLS": args.symbols, "PYTHONUNBUFFERED": "1"})
        logs = {name: open(home / f"{name}.log", "w") for name in ("engine", "fake", "producer")}
        procs = []

        def start(name: str, *argv: str) -> subprocess.Popen:
            procs.append(subprocess.Popen([sys.executable, "-m", "tapeflow", *argv], env=env, stdout=logs[name],
                                          stderr=subprocess.STDOUT, cwd=home))
            return procs[-1]

        def wait_log(name: str, pattern: str, timeout: float) -> str:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                found = re.search(pattern, (home / f"{name}.log").read_text(errors="replace"))
                if found:
                    return found.group(0)
                time.sleep(0.2)
            raise SystemExit(f"{name}: no {pattern!r} within {timeout} s")

        try:
            start("engine", "engine", "--strategy", str(home / "strategy.yaml"), "--metrics-port", "0",
                  "--prime-hours", "0", "--wait-for-progress", "--signal-max-age-s", "1e9")
            wait_log("engine", r"engine worker ready", 120)
            start("fake", "fake-exchange", *fake_args)
            urls = json.loads(wait_log("fake", r"\{\"ws_url\".*\}", 600))
            rest = urls["rest_url"]
            watcher = Watcher(bootstrap, prefix)
            began = time.perf_counter()
            producer = start("producer", "produce", "--ws-url", urls["ws_url"], "--rest-url", rest, "--spot-url",
                             rest, "--coinbase-url", rest, "--replay-control-url", rest, "--vision-url", rest,
                             "--warm-start-hours", "25", "--metrics-port", "0")
            marks: dict[str, float] = {}
            while producer.poll() is None and len(marks) < 3:
                if "warm start finished" not in marks and "warm start finished" in (home / "producer.log").read_text():
                    marks["warm start finished"] = time.perf_counter() - began
                for topic, record in watcher.poll():
                    if record["eval_time"] < live_ms:
                        continue
                    if topic == "features" and record["block_reason"] != "warmup":
                        marks.setdefault("first warm evaluation after the live start", time.perf_counter() - began)
                    if topic == "signals":
                        marks.setdefault("first signal after the live start", time.perf_counter() - began)
            detail = re.search(r"warm start finished.*", (home / "producer.log").read_text())
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    for name, seconds in marks.items():
        print(f"{name}: {seconds:.1f} s ({seconds / TARGET_S:.2f}x the 5-minute target)")
    if "first signal after the live start" not in marks:
        print(f"no signal in the {args.live_min:g} live minutes")
    print(detail.group(0) if detail else "(no warm start summary)")
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
