"""Endurance of the embedded default stack: live for as long as you give it, topic epochs rolling over.

The whole stack as `tapeflow up` runs it (``tests.support.endurance.live_stack``: supervisor, Tansu,
PostgreSQL, sink, engine, executor, the producer live against the fake exchange playing a synthetic
session in real time, one record batch per trade or two). Reports, for the run:

* trades the session held vs rows in the database (equal, no duplicates, first/last agg id);
* record batches written to the busiest md.trades partition over all epochs (the target of issue 21
  is 1.7 M, a day of live BTCUSDT) and the rollovers it took;
* features: evaluations stored and the largest hole between two of one strategy, in event time;
* RSS of the broker and of every service, sampled every ``--sample-s``: first vs last fifth of the run
  (bounded means last <= 1.2 x first);
* every rollover step logged by the supervisor, with its duration.

    .venv/bin/python -m benchmarks.bench_endurance --minutes 10 --trades-per-s 300 --max-batches 10000

Baseline: issue 21's measurement on the stack without epochs (the sink stopped after 28,216 of 56,756
trades, ~20,000 batches in a partition).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from fake_exchange.synthetic import SyntheticSpec
from tests.support.endurance import expected_trades, live_stack

SYMBOL = "BTCUSDT"
TARGET_BATCHES = 1_700_000


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        return (proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))) / 2**20
    except psutil.Error:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="session length (real time)")
    ap.add_argument("--trades-per-s", type=float, default=300.0)
    ap.add_argument("--max-batches", type=int, default=10_000, help="rollover threshold (the default's)")
    ap.add_argument("--sample-s", type=float, default=10.0)
    args = ap.parse_args()

    spec = SyntheticSpec(seed=17, symbols=(SYMBOL,), duration_s=args.minutes * 60, trades_per_s=args.trades_per_s,
                         start_time=time.time() + 30)
    count, first, last = expected_trades(spec)[SYMBOL]
    print(f"session: {count} trades of {SYMBOL} over {args.minutes:.0f} min at {args.trades_per_s:.0f}/s; "
          f"rollover at {args.max_batches} batches", flush=True)
    home = Path(tempfile.mkdtemp(prefix="tapeflow-endurance-")) / "home"
    samples: list[tuple[float, dict[str, float]]] = []
    batches = 0
    with live_stack(home, spec, max_batches=args.max_batches) as stack:
        t0 = time.monotonic()
        end = spec.start_time + spec.duration_s
        printed = 0
        while True:
            time.sleep(args.sample_s)
            names = ("broker", "database", "sink", "engine", "executor", "producer")
            samples.append((time.monotonic() - t0, {n: rss_mb(stack.service_pid(n)) for n in names}))
            for line in stack.log[printed:]:
                print(line, flush=True)
            printed = len(stack.log)
            state = stack.epochs()
            rows = stack.trades_stored(SYMBOL)[0]
            print(f"{time.monotonic() - t0:6.0f}s epoch {state.epoch} step {state.step} rows {rows}/{count} "
                  f"rss {samples[-1][1]}", flush=True)
            if time.time() > end + 10 and not state.rolling and rows >= count:
                break
            if time.time() > end + 600:
                print("gave up waiting for the last trades", flush=True)
                break
        rows, distinct, low, high = stack.trades_stored(SYMBOL)
        features = [r[0] for r in stack.query(
            "SELECT eval_time FROM features WHERE symbol = %s AND strategy = (SELECT min(strategy) FROM features) "
            "ORDER BY eval_time", SYMBOL)]
        log = list(stack.log)
        state = stack.epochs()
    for line in log:
        m = re.search(r"(md\.trades\[\d\]) holds (\d+) record batches", line)
        if m:
            batches += int(m.group(2))
    gaps = [(b - a).total_seconds() for a, b in zip(features, features[1:])]
    steps: dict[str, list[float]] = {}
    for line in log:
        m = re.search(r"epochs     (\w+) done \(([\d.]+)s\)", line)
        if m:
            steps.setdefault(m.group(1), []).append(float(m.group(2)))
    pauses = [float(m.group(1)) for line in log if (m := re.search(r"features paused ([\d.]+)s", line))]
    fifth = max(1, len(samples) // 5)
    print("\n== result ==")
    print(f"trades: session {count}, database rows {rows}, distinct {distinct}, agg ids {low}..{high} "
          f"(expected {first}..{last}) -> {'EXACT' if (rows, distinct, low, high) == (count, count, first, last) else 'MISMATCH'}")
    print(f"rollovers: {state.rollovers}; md.trades batches counted at rollover starts: {batches} "
          f"({batches / TARGET_BATCHES:.3f} of the 1.7 M target)")
    print(f"features: {len(features)} evaluations; largest hole {max(gaps, default=0):.0f}s of event time; "
          f"pauses at rollovers: median {statistics.median(pauses) if pauses else 0:.1f}s, max {max(pauses, default=0):.1f}s")
    for step, took in steps.items():
        print(f"step {step:<9} n={len(took)} median {statistics.median(took):.1f}s max {max(took):.1f}s")
    for name in samples[0][1]:
        head = statistics.mean(s[1][name] for s in samples[:fifth])
        tail = statistics.mean(s[1][name] for s in samples[-fifth:])
        print(f"rss {name:<9} first fifth {head:7.1f} MB, last fifth {tail:7.1f} MB, ratio {tail / head if head else 0:.2f}")


if __name__ == "__main__":
    main()
