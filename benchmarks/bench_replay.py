"""Replay throughput (issue 13): a recording through the producer at `max`, and `tapeflow replay` copying
the result into a namespace.

(a) `tapeflow fake-exchange --speed max` and `tapeflow produce --replay-control-url` as processes (as
`up --source replay:DIR --replay-speed max` runs them) on a generated session: wall time from the
producer's start to its exit (it exits only after reading every frame and flushing), frames in and
records delivered from its summary line, the producer process's CPU seconds.
(b) `producers.topic_replay.TopicReplay` in this process copying the engine inputs the producer
published into a namespace at `max` (event-time merge, unchanged bytes, progress markers).

Baselines and target: the producer hot path (`bench_producer`: raw aggTrade frame → Avro → produce,
68,507 msgs/s per core, RESULTS.md) and DESIGN §7's 100,000 msgs/s per core for the producer. A replay
adds what the hot path leaves out: every stream (depth diffs verified into books, marks, liquidations),
lockstep REST polls and book snapshots on the recording's clock, progress markers, end-of-replay
accounting.

Run: .venv/bin/python -m benchmarks.bench_replay [--hours 2] [--symbols BTCUSDT,ETHUSDT] [--bootstrap HOST:PORT]
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

import psutil

from benchmarks.embedded_broker import broker
from producers.topic_replay import TopicReplay
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics

HOT_PATH_BASELINE = 68_507  # bench_producer, msgs/s per core (RESULTS.md)
TARGET = 100_000  # DESIGN §7, producer msgs/s per core


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "broker") as bootstrap:
        prefix = f"bench{os.getpid()}."
        ensure_topics(bootstrap, prefix=prefix)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        env.update({"TAPEFLOW_HOME": str(Path(tmp) / "home"), "TAPEFLOW_BROKER": bootstrap,
                    "TAPEFLOW_TOPIC_PREFIX": prefix, "TAPEFLOW_SYMBOLS": args.symbols, "PYTHONUNBUFFERED": "1"})
        fake = subprocess.Popen([sys.executable, "-m", "tapeflow", "fake-exchange", "--synthetic-seed", str(args.seed),
                                 "--synthetic-symbols", args.symbols, "--synthetic-duration", str(args.hours * 3600),
                                 "--speed", "max", "--rest-clock", "recording"], env=env, stdout=subprocess.PIPE,
                                text=True)
        try:
            urls = json.loads(next(line for line in fake.stdout if line.startswith('{"ws_url"')))
            rest = urls["rest_url"]
            began = time.perf_counter()
            producer = subprocess.Popen(
                [sys.executable, "-m", "tapeflow", "produce", "--ws-url", urls["ws_url"], "--rest-url", rest,
                 "--spot-url", rest, "--coinbase-url", rest, "--replay-control-url", rest, "--metrics-port", "0"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            handle = psutil.Process(producer.pid)
            cpu = 0.0
            while producer.poll() is None:
                try:
                    times = handle.cpu_times()
                    cpu = times.user + times.system
                except psutil.Error:
                    pass
                time.sleep(0.2)
            wall = time.perf_counter() - began
            out = producer.stdout.read()
        finally:
            fake.terminate()
            fake.wait(30)
        summary = next(line for line in out.splitlines() if line.startswith("replay-finished:"))
        frames = int(re.search(r"(\d+) frames in", summary).group(1))
        records = int(re.search(r"(\d+) records delivered", summary).group(1))
        print(f"(a) producer, {args.hours:g} h of {args.symbols} at max: {frames:,} frames in, {records:,} records "
              f"delivered in {wall:.1f} s wall, {cpu:.1f} s CPU")
        print(f"    {frames / wall:,.0f} frames/s wall, {frames / cpu:,.0f} frames per CPU second "
              f"({frames / cpu / HOT_PATH_BASELINE:.2f}x the hot-path baseline, {frames / cpu / TARGET:.2f}x the "
              f"100k target); {records / wall:,.0f} records/s wall")
        print(f"    {summary}")

        serde = AvroSerde(FileSchemaRegistry())
        job = TopicReplay(bootstrap, serde, source_prefix=prefix, target_prefix=prefix + "copy.",
                          topics=["md.trades", "md.book", "md.mark", "md.liquidations", "md.indicators"],
                          from_ms=0, to_ms=2**62)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        copied = job.run()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        print(f"(b) tapeflow replay of those md.* at max: {copied.line()}")
        print(f"    {copied.records / wall:,.0f} records/s wall ({wall:.1f} s, of which ~{job.idle_s:g} s is the "
              f"end-of-input wait), {copied.records / cpu:,.0f} records per CPU second of this process")


if __name__ == "__main__":
    main()
