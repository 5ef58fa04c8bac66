"""Backtest speed with the book-based paper broker against the trade-tape one (target: book >= 0.8x tape).

What runs is ``benchmarks.bench_backtest``'s re-run on cached data (the synthetic session, 100 trades/s
over 4 symbols, 10-level books every 2 s, the three shipped strategies, one paper account per
strategy): the session's slices are generated once, then ``BacktestRunner.run`` over them is timed end
to end with ``PaperFills(fills="tape")`` (the baseline: the paper broker before the book model, the
default until book replaced it) and ``PaperFills(fills="book")`` (``execution.paper_broker`` / ``tapeflow_runtime.matching``),
alternating tape/book ``--repeat`` times so both see the same machine load. Printed per model: the
best (least disturbed) and median wall time and the median CPU time; the ratio is taken of the best
wall times (on a shared 2-core machine the median wall time swings by 2x with the neighbours' load) and
of the median CPU times (the work itself). Twice: with the executor's default entry (market orders: the book model walks the
levels) and with ``entry.kind: maker_first`` (post-only limits at the touch: the book model queues
them behind the level and fills them from the trades), where the models' fills differ most.

Also printed per model: signals, closed positions, their net R, fills and the orders with more than
one fill (levels walked, or filled by several trades), so the speed is read next to what the model
changed. Every repeat of a
model must give the same trades (deterministic), else the run stops.

Run: ``.venv/bin/python -m benchmarks.bench_backtest_fills [--hours 30] [--repeat 3] [--quick]``
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

from backtest.model import RunResult
from backtest.runner import BacktestRunner
from backtest.runner import warm_up as warm_up_runner
from benchmarks.bench_backtest import CachedSource, source
from execution.config import EntryPolicy, ExecutorConfig, PaperFills
from stream_apps.core.strategy import default_strategy_dir, load_strategies
from stream_apps.core.warmup import warm_up
from tapeflow_runtime.batch import batch_gc

TARGET_RATIO = 0.8


def run_once(
    cached: CachedSource, strategies, config: ExecutorConfig
) -> tuple[float, float, RunResult, BacktestRunner]:
    runner = BacktestRunner(strategies, config)
    wall, cpu = time.perf_counter(), time.process_time()
    result = runner.run(cached)
    return time.perf_counter() - wall, time.process_time() - cpu, result, runner


def fill_counts(runner: BacktestRunner) -> tuple[int, int]:
    """(fills, orders filled in more than one fill) over every account."""
    per_order: Counter[str] = Counter()
    for book in runner.accounts.books.values():
        for rec in book.sink.fills:
            per_order[rec["client_order_id"]] += 1
    return sum(per_order.values()), sum(1 for n in per_order.values() if n > 1)


def compare(cached: CachedSource, strategies, entry: EntryPolicy, repeat: int, n: int) -> float:
    walls: dict[str, list[float]] = {"tape": [], "book": []}
    cpus: dict[str, list[float]] = {"tape": [], "book": []}
    seen: dict[str, tuple[int, list]] = {}
    for _ in range(repeat):
        for model in ("tape", "book"):
            config = ExecutorConfig(paper=PaperFills(fills=model), entry=entry)
            wall, cpu, result, runner = run_once(cached, strategies, config)
            key = (result.signals, result.trades)
            if seen.setdefault(model, key) != key:
                raise SystemExit(f"{model}: a repeat gave other trades than the first run")
            walls[model].append(wall)
            cpus[model].append(cpu)
            if len(walls[model]) == 1:
                fills, partial = fill_counts(runner)
                print(
                    f"  {model}: {result.signals} signals, {len(result.trades)} closed positions "
                    f"(net {sum(t.pnl_r_net for t in result.trades):+.2f} R), {fills} fills, "
                    f"{partial} orders with more than one fill"
                )
    best = {m: min(v) for m, v in walls.items()}
    med = {m: sorted(v)[len(v) // 2] for m, v in walls.items()}
    med_cpu = {m: sorted(v)[len(v) // 2] for m, v in cpus.items()}
    for model in ("tape", "book"):
        print(
            f"  {model}: best {best[model]:.2f} s wall ({n / best[model]:,.0f} trades/s), median {med[model]:.2f} s "
            f"wall, median {med_cpu[model]:.2f} s CPU ({n / med_cpu[model]:,.0f} trades per CPU s) over {repeat} "
            f"runs (wall: {', '.join(f'{w:.2f}' for w in walls[model])} s)"
        )
    ratio, cpu_ratio = best["tape"] / best["book"], med_cpu["tape"] / med_cpu["book"]
    verdict = "met" if min(ratio, cpu_ratio) >= TARGET_RATIO else "NOT met"
    print(
        f"  book / tape speed: {ratio:.3f} best wall, {cpu_ratio:.3f} median CPU; target >= {TARGET_RATIO}: {verdict}"
    )
    return min(ratio, cpu_ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=30.0, help="session length (100 trades/s over 4 symbols)")
    parser.add_argument("--quick", action="store_true", help="8 hours (warm-up is 24 h: few signals)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per model (median reported)")
    args = parser.parse_args()
    hours = 8.0 if args.quick else args.hours
    strategies = load_strategies(default_strategy_dir())
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    warm_up()
    warm_up_runner()
    with batch_gc():
        began = time.perf_counter()
        cached = CachedSource(source(hours))
        n = sum(p.trade_count for p in cached.pieces)
        print(f"cached data: {n:,} trades over {hours:g} h generated once in {time.perf_counter() - began:.1f} s")
        print("entry: taker (the executor's default; market orders)")
        taker = compare(cached, strategies, EntryPolicy(), max(args.repeat, 1), n)
        print("entry: maker_first (post-only limits at the touch, then the market fallback)")
        maker = compare(cached, strategies, EntryPolicy(kind="maker_first"), max(args.repeat, 1), n)
    print(
        f"book / tape (the lower of best wall and median CPU): {taker:.3f} (taker entries), {maker:.3f} "
        f"(maker_first); target >= {TARGET_RATIO}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
