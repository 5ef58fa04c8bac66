"""Backtest speed with routed entries (``entry.kind: routed``) against market entries (``taker``, the
executor's default; target: routed >= 0.8x taker).

What runs is ``benchmarks.bench_backtest``'s re-run on cached data (the synthetic session, 100 trades/s
over 4 symbols, 10-level books every 2 s, the three shipped strategies, one paper account per
strategy), timed end to end per entry kind, alternating ``--repeat`` times so both see the same machine
load. Routed entries cost the backtest in two places: every book counted by the router's spread mean
(the sparse feed shows it each book it holds: ``backtest.held.HeldRecords.observe_book``), and entries
worked over seconds (maker wait, slices) during which the market is busy, so its trades are fed. Printed
per kind: best and median wall, median CPU, signals and closed positions; the
ratio is of the best wall times and of the median CPU times (the lower is compared to the target).
Every repeat must give the same trades (deterministic), else the run stops.

Run: ``.venv/bin/python -m benchmarks.bench_routing [--hours 30] [--repeat 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Literal

from backtest.runner import BacktestRunner
from backtest.runner import warm_up as warm_up_runner
from benchmarks.bench_backtest import CachedSource, source
from execution.config import EntryPolicy, ExecutorConfig
from stream_apps.core.strategy import default_strategy_dir, load_strategies
from stream_apps.core.warmup import warm_up
from tapeflow_runtime.batch import batch_gc

TARGET_RATIO = 0.8
KINDS: tuple[Literal["taker", "routed"], ...] = ("taker", "routed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=30.0, help="session length (100 trades/s over 4 symbols)")
    parser.add_argument("--quick", action="store_true", help="8 hours (warm-up is 24 h: few signals)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per entry kind")
    args = parser.parse_args()
    hours = 8.0 if args.quick else args.hours
    strategies = load_strategies(default_strategy_dir())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    warm_up()
    warm_up_runner()
    walls: dict[str, list[float]] = {k: [] for k in KINDS}
    cpus: dict[str, list[float]] = {k: [] for k in KINDS}
    seen: dict[str, tuple] = {}
    with batch_gc():
        cached = CachedSource(source(hours))
        n = sum(p.trade_count for p in cached.pieces)
        print(f"cached data: {n:,} trades over {hours:g} h")
        for _ in range(max(args.repeat, 1)):
            for kind in KINDS:
                runner = BacktestRunner(strategies, ExecutorConfig(entry=EntryPolicy(kind=kind)))
                wall, cpu = time.perf_counter(), time.process_time()
                result = runner.run(cached)
                walls[kind].append(time.perf_counter() - wall)
                cpus[kind].append(time.process_time() - cpu)
                key = (result.signals, tuple(result.trades))
                if seen.setdefault(kind, key) != key:
                    raise SystemExit(f"{kind}: a repeat gave other trades than the first run")
                if len(walls[kind]) == 1:
                    print(f"  {kind}: {result.signals} signals, {len(result.trades)} closed positions")
    best = {k: min(v) for k, v in walls.items()}
    med_cpu = {k: sorted(v)[len(v) // 2] for k, v in cpus.items()}
    for kind in KINDS:
        med = sorted(walls[kind])[len(walls[kind]) // 2]
        print(
            f"  {kind}: best {best[kind]:.2f} s wall ({n / best[kind]:,.0f} trades/s), median {med:.2f} s wall, "
            f"median {med_cpu[kind]:.2f} s CPU (wall: {', '.join(f'{w:.2f}' for w in walls[kind])} s)"
        )
    ratio, cpu_ratio = best["taker"] / best["routed"], med_cpu["taker"] / med_cpu["routed"]
    verdict = "met" if min(ratio, cpu_ratio) >= TARGET_RATIO else "NOT met"
    print(
        f"routed / taker speed: {ratio:.3f} best wall, {cpu_ratio:.3f} median CPU; target >= {TARGET_RATIO}: {verdict}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
