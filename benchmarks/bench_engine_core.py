"""Throughput of the pure engine core, single process (DESIGN §7 target: >= 1,000,000 trades/s).

Two numbers, because they answer different questions:

1. incremental path: ``SymbolState.apply_trades`` on columnar batches of synthetic, deterministic
   trades for 4 symbols (windows, bars, ATR, size quantiles, whale/large flow all updated) — the cost
   per trade of keeping the state.
2. full engine: ``Engine.process`` with the evaluation cadence (every closed second with trades and
   every 15 s) and the three shipped strategies, producing bar, feature and signal records. Here the
   cost is dominated by evaluations (one per symbol per second with trades), so trades/s depends on
   how many trades fall in one second; it is reported for several rates with evaluations/s.

Run: ``.venv/bin/python -m benchmarks.bench_engine_core [--quick]``. The clock is read only here.
"""

from __future__ import annotations

import argparse
import time

from stream_apps.core.engine import Engine
from stream_apps.core.events import TradeBatch
from stream_apps.core.strategy import default_strategy_dir, load_strategies
from stream_apps.core.symbol_state import SymbolState
from stream_apps.core.synthetic import synthetic_trades

SYMBOLS = (("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0), ("SOLUSDT", 60.0), ("XRPUSDT", 0.6))
START = 1_700_006_400_000


def _streams(duration_ms: int, rate_per_s: float) -> list[TradeBatch]:
    return [
        synthetic_trades(symbol, start_ms=START, duration_ms=duration_ms, rate_per_s=rate_per_s, price0=price, seed=i)
        for i, (symbol, price) in enumerate(SYMBOLS)
    ]


def bench_incremental(duration_ms: int, rate_per_s: float, batch_size: int) -> tuple[int, float]:
    streams = _streams(duration_ms, rate_per_s)
    states = [SymbolState("binance", s.symbol) for s in streams]
    chunks = [
        (state, stream.take(slice(start, start + batch_size)))
        for state, stream in zip(states, streams)
        for start in range(0, len(stream), batch_size)
    ]
    chunks.sort(key=lambda item: int(item[1].time_ms[0]))  # interleave symbols in time order
    began = time.perf_counter()
    for state, chunk in chunks:
        state.apply_trades(chunk)
    elapsed = time.perf_counter() - began
    total = sum(len(s) for s in streams)
    assert sum(state.counters.accepted for state in states) == total
    return total, elapsed


def bench_engine(duration_ms: int, rate_per_s: float, batch_ms: int) -> tuple[int, int, int, float]:
    streams = _streams(duration_ms, rate_per_s)
    engine = Engine(load_strategies(default_strategy_dir()))
    slices = []
    for begin in range(START, START + duration_ms, batch_ms):
        batch = []
        for stream in streams:
            lo = int(stream.time_ms.searchsorted(begin))
            hi = int(stream.time_ms.searchsorted(begin + batch_ms))
            if hi > lo:
                batch.append(stream.take(slice(lo, hi)))
        slices.append((batch, begin + batch_ms))
    features = signals = 0
    began = time.perf_counter()
    for batch, now in slices:
        out = engine.process(batch, now_ms=now)
        features += len(out.features)
        signals += len(out.signals)
    elapsed = time.perf_counter() - began
    evaluations = features // 3
    return sum(len(s) for s in streams), evaluations, signals, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data set")
    args = parser.parse_args()
    scale = 0.25 if args.quick else 1.0

    print("incremental path (SymbolState.apply_trades), 4 symbols, synthetic trades")
    for rate, batch_size in ((500.0, 100_000), (500.0, 10_000), (500.0, 1_000), (500.0, 100)):
        total, elapsed = bench_incremental(int(3_600_000 * scale), rate, batch_size)
        print(f"  batch {batch_size:>7,}: {total:>10,} trades in {elapsed:6.2f} s = {total / elapsed:>12,.0f} trades/s")

    print("full engine (Engine.process, 3 strategies, eval every closed second + every 15 s), 4 symbols")
    for rate in (5.0, 50.0, 500.0):
        duration = int((4 * 3_600_000 if rate <= 5 else 1_800_000) * scale)
        total, evaluations, signals, elapsed = bench_engine(duration, rate, batch_ms=60_000)
        print(
            f"  {rate:>5.0f} trades/s/symbol: {total:>9,} trades, {evaluations:>7,} evaluations in {elapsed:6.2f} s"
            f" = {total / elapsed:>10,.0f} trades/s, {evaluations / elapsed:>7,.0f} evaluations/s"
            f" ({signals} signals)"
        )


if __name__ == "__main__":
    main()
