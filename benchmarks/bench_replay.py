"""Replay throughput: a recording through the producer at `max`, and `tapeflow replay` copying
the result into a namespace.

(a) `tapeflow fake-exchange --speed max` and `tapeflow produce --replay-control-url` as processes (as
`up --source replay:DIR --replay-speed max` runs them) on a generated session: wall time from the
producer's start to its exit (it exits only after reading every frame and flushing), frames in and
records delivered from its summary line, the producer process's CPU seconds.
(b) `tapeflow replay --to-prefix copy --from ... --to ... --speed max` as a process, copying the
engine inputs the producer published into a namespace (event-time merge, unchanged bytes, progress
markers): its own summary line, the command's wall time and CPU seconds.

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
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from benchmarks.embedded_broker import broker
from tapeflow_runtime.kafka_client import ensure_topics

HOT_PATH_BASELINE = 68_507  # bench_producer, msgs/s per core (RESULTS.md)
TARGET = 100_000  # DESIGN §7, producer msgs/s per core
IDLE_S = 3.0  # TopicReplay's default end-of-input wait


def cpu_until_exit(proc: subprocess.Popen) -> float:
    """CPU seconds (user + system) of `proc`, sampled until it exits."""
    handle, cpu = psutil.Process(proc.pid), 0.0
    while proc.poll() is None:
        try:
            times = handle.cpu_times()
            cpu = times.user + times.system
        except psutil.Error:
            pass
        time.sleep(0.2)
    return cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--bootstrap", default=None)
    args = ap.parse_args()
    print(
        "load average (1, 5, 15 min) at the start: "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        + f" on {os.cpu_count()} CPUs (a shared machine)"
    )
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "broker") as bootstrap:
        prefix = f"bench{os.getpid()}."
        ensure_topics(bootstrap, prefix=prefix)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
        env.update(
            {
                "TAPEFLOW_HOME": str(Path(tmp) / "home"),
                "TAPEFLOW_BROKER": bootstrap,
                "TAPEFLOW_TOPIC_PREFIX": prefix,
                "TAPEFLOW_SYMBOLS": args.symbols,
                "PYTHONUNBUFFERED": "1",
            }
        )
        fake = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tapeflow",
                "fake-exchange",
                "--synthetic-seed",
                str(args.seed),
                "--synthetic-symbols",
                args.symbols,
                "--synthetic-duration",
                str(args.hours * 3600),
                "--speed",
                "max",
                "--rest-clock",
                "recording",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            urls = json.loads(next(line for line in fake.stdout if line.startswith('{"ws_url"')))
            rest = urls["rest_url"]
            began, published_from = time.perf_counter(), time.time()
            with open(Path(tmp) / "producer.log", "w") as log:  # a file, not a pipe nobody reads while it runs
                producer = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tapeflow",
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
                        "--metrics-port",
                        "0",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                cpu = cpu_until_exit(producer)
            wall = time.perf_counter() - began
            out = (Path(tmp) / "producer.log").read_text()
        finally:
            fake.terminate()
            fake.wait(30)
        summary = next(line for line in out.splitlines() if line.startswith("replay-finished:"))
        frames = int(re.search(r"(\d+) frames in", summary).group(1))
        records = int(re.search(r"(\d+) records delivered", summary).group(1))
        print(
            f"(a) producer, {args.hours:g} h of {args.symbols} at max: {frames:,} frames in, {records:,} records "
            f"delivered in {wall:.1f} s wall, {cpu:.1f} s CPU"
        )
        print(
            f"    {frames / wall:,.0f} frames/s wall, {frames / cpu:,.0f} frames per CPU second "
            f"({frames / cpu / HOT_PATH_BASELINE:.2f}x the hot-path baseline, {frames / cpu / TARGET:.2f}x the "
            f"100k target); {records / wall:,.0f} records/s wall"
        )
        print(f"    {summary}")

        # (b) the real command, as a user runs it: its one output line is the console example in docs/concepts/replay-and-warm-start.md
        # record timestamps are when the producer published (live: ~ the event time), so the range is the run's
        start = datetime.fromtimestamp(published_from, tz=UTC).replace(second=0, microsecond=0)
        end = datetime.fromtimestamp(time.time(), tz=UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        command = [
            "replay",
            "--to-prefix",
            "rehearsal",
            "--from",
            f"{start:%Y-%m-%dT%H:%M}",
            "--to",
            f"{end:%Y-%m-%dT%H:%M}",
            "--speed",
            "max",
            "--no-progress",
        ]
        wall0 = time.perf_counter()
        with open(Path(tmp) / "replay.out", "w") as stdout, open(Path(tmp) / "replay.err", "w") as stderr:
            copy = subprocess.Popen(
                [sys.executable, "-m", "tapeflow", *command], env=env, stdout=stdout, stderr=stderr, text=True
            )
            cpu = cpu_until_exit(copy)
        wall = time.perf_counter() - wall0
        out = (Path(tmp) / "replay.out").read_text()
        if copy.returncode != 0:
            sys.exit(f"tapeflow replay failed ({copy.returncode}):\n{out}{(Path(tmp) / 'replay.err').read_text()}")
        line = out.strip().splitlines()[-1]
        records = int(re.search(r"replayed (\d+) records", line).group(1))
        print(f"(b) $ tapeflow {' '.join(command)}\n    {line}")
        print(
            f"    {records / wall:,.0f} records/s wall of the whole command ({wall:.1f} s, with start-up and the "
            f"~{IDLE_S:g} s end-of-input wait), {records / cpu:,.0f} records per CPU second of the process"
        )
    print("load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
