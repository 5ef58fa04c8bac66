"""Backtest runner throughput and peak memory on >= 10 million synthetic trades (issue 12; the speed
target, >= 3,000,000 trades/s end to end on cached data, belongs to the next issue: measured here).

What runs is what ``tapeflow backtest --source synthetic`` runs: the synthetic source generates every
input (trades, book, mark/funding, liquidations, 5-minute indicators) hour by hour, the runner feeds
one engine per symbol with the three shipped strategies and the paper executor. Three timings:

1. generation alone (the source's blocks, nothing consumes them);
2. the engine alone over the same slices (``Engine.process`` per symbol, no executor, no coverage):
   the baseline, since the runner cannot be faster than the engine it drives;
3. the full run (``BacktestRunner.run``), from which generation is subtracted for the runner's own rate.

Peak RSS is the process's (``ru_maxrss``); the source keeps one hour in memory, so it does not grow
with the range. Run: ``.venv/bin/python -m benchmarks.bench_backtest [--hours 19.5] [--quick]``.
"""

from __future__ import annotations

import argparse
import resource
import time

from backtest.runner import BacktestRunner
from backtest.sources.synthetic import SyntheticSource
from stream_apps.core.engine import Engine
from stream_apps.core.events import book_from_record, indicator_from_record, liquidation_from_record, mark_from_record
from stream_apps.core.strategy import default_strategy_dir, load_strategies

START = 1_704_067_200_000  # 2024-01-01 00:00 UTC
H = 3_600_000
RATES = {"BTCUSDT": 60.0, "ETHUSDT": 40.0, "SOLUSDT": 25.0, "XRPUSDT": 20.0}  # 145 trades/s: 10.4M in 20 h
TARGET = 3_000_000


def source(hours: float) -> SyntheticSource:
    return SyntheticSource(list(RATES), START, START + int(hours * H), seed=1, trades_per_s=RATES)


def generation(hours: float) -> tuple[int, float]:
    began = time.perf_counter()
    trades = sum(piece.trade_count for piece in source(hours).slices())
    return trades, time.perf_counter() - began


def engine_only(hours: float, strategies) -> tuple[int, int, float]:
    engines: dict[str, Engine] = {}
    trades = features = 0
    began = time.perf_counter()
    adapters = (("books", book_from_record), ("marks", mark_from_record), ("liquidations", liquidation_from_record),
                ("indicators", indicator_from_record))
    for piece in source(hours).slices():
        events: dict[str, list] = {}
        for kind, adapt in adapters:
            for r in getattr(piece, kind):
                events.setdefault(f"{r['exchange']}:{r['symbol']}", []).append(adapt(r))
        for key in sorted(set(piece.trades) | set(events)):
            engine = engines.setdefault(key, Engine(strategies))
            batch = piece.trades.get(key)
            out = engine.process([batch] if batch is not None else (), events.get(key, ()))
            features += len(out.features)
        trades += piece.trade_count
    return trades, features, time.perf_counter() - began


def full_run(hours: float, strategies):
    began = time.perf_counter()
    result = BacktestRunner(strategies).run(source(hours))
    return result, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=19.5, help="session length (145 trades/s over 4 symbols)")
    parser.add_argument("--quick", action="store_true", help="2 hours instead (a smoke run, ~1M trades)")
    args = parser.parse_args()
    hours = 2.0 if args.quick else args.hours
    strategies = load_strategies(default_strategy_dir())

    gen_trades, gen_s = generation(hours)
    print(f"generation: {gen_trades:,} trades in {gen_s:.1f} s ({gen_trades / gen_s:,.0f} trades/s)")
    eng_trades, eng_features, eng_s = engine_only(hours, strategies)
    eng_runner_s = max(eng_s - gen_s, 1e-9)
    print(f"engine only (baseline): {eng_s:.1f} s with generation, {eng_trades / eng_runner_s:,.0f} trades/s and "
          f"{eng_features / eng_runner_s:,.0f} strategy evaluations/s without")
    result, run_s = full_run(hours, strategies)
    runner_s = max(run_s - gen_s, 1e-9)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    symbol_evals = result.evaluations // len(strategies)
    print(f"full run: {result.trades_processed:,} trades, {result.events_processed - result.trades_processed:,} other "
          f"inputs, {result.evaluations:,} strategy evaluations ({symbol_evals:,} symbol evaluations), "
          f"{result.signals} signals, {len(result.trades)} closed positions")
    print(f"  end to end (with generation): {run_s:.1f} s, {result.trades_processed / run_s:,.0f} trades/s")
    print(f"  runner (generation subtracted): {runner_s:.1f} s, {result.trades_processed / runner_s:,.0f} trades/s, "
          f"{result.evaluations / runner_s:,.0f} strategy evaluations/s, {symbol_evals / runner_s:,.0f} symbol "
          f"evaluations/s")
    print(f"  ratio to the engine-only baseline: {eng_runner_s / runner_s:.2f} (1.0 = no runner overhead)")
    print(f"  ratio to the target ({TARGET:,} trades/s end to end): {result.trades_processed / run_s / TARGET:.4f}")
    print(f"peak RSS: {rss_mib:,.0f} MiB")


if __name__ == "__main__":
    main()
