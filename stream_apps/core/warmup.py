"""Compile (or load from numba's on-disk cache) every engine kernel before a service starts consuming.

Why: numba compiles a kernel at its first call; in a fresh checkout (or after ``kernels.py`` changed)
that takes seconds, and inside the Faust worker's event loop it would stall the consumer long enough
for a rebalance. Running one tiny evaluation first makes every later call fast. The detectors'
kernels (microstructure, flow, book) are only called when a strategy turns them on, so a second
engine with every detector on runs a tiny session with each of their inputs: a compiled kernel
compiles every kernel it calls, so each one the engine calls directly is called once.
"""

from __future__ import annotations

from .engine import Engine
from .events import BookUpdate, IndicatorUpdate, LiquidationEvent, book_levels
from .strategy import (
    Detectors,
    Divergence,
    Icebergs,
    Liquidations,
    OiSpike,
    PerSymbol,
    Vpin,
    Walls,
    default_strategy_dir,
    load_strategies,
)
from .synthetic import synthetic_trades

T0 = 1_700_000_000_000
EVERY_DETECTOR = Detectors(vpin=Vpin(bucket_volume=PerSymbol(default=20_000.0)), divergence=Divergence(window=120_000),
                           oi_spike=OiSpike(window=2), liquidations=Liquidations(), walls=Walls(), icebergs=Icebergs())


def warm_up() -> None:
    """One evaluation of the shipped strategies on two minutes of synthetic trades (calls every kernel
    of the core), then the same with every detector on, fed book snapshots, open interest and
    liquidations too, a later call with trades alone (the book detectors' trades-only path) and one
    with none (bars closed by the clock)."""
    strategies = load_strategies(default_strategy_dir())
    engine = Engine(strategies)
    trades = synthetic_trades("BTCUSDT", start_ms=T0, duration_ms=120_000, rate_per_s=2.0)
    engine.process([trades], now_ms=T0 + 130_000)

    detected = Engine([strategies[0].model_copy(update={"detectors": EVERY_DETECTOR})])
    symbol = (strategies[0].symbols or ["BTCUSDT"])[0]  # empty: every symbol
    trades = synthetic_trades(symbol, start_ms=T0, duration_ms=240_000, rate_per_s=2.0)
    price = float(trades.price[0])
    levels = book_levels(([(price - 0.5 * k, 1.0 + 9 * (k == 3)) for k in range(1, 6)],
                          [(price + 0.5 * k, 1.0) for k in range(1, 6)]))
    events = [BookUpdate("binance", symbol, T0 + 250 * k, 0.0, levels) for k in range(1, 400)]
    events += [IndicatorUpdate("binance", symbol, T0 + 60_000 * k + 30_000, "open_interest_hist", 1e6 + k, T0 + 60_000 * k)
               for k in range(3)]
    events += [LiquidationEvent("binance", symbol, T0 + 1_000 * k, "LONG", 50_000.0) for k in range(1, 20)]
    events.sort(key=lambda e: e.time_ms)
    first, later = trades.take(slice(0, len(trades) // 2)), trades.take(slice(len(trades) // 2, None))
    detected.process([first], events, now_ms=T0 + 130_000)
    detected.process([later], now_ms=T0 + 250_000)
    detected.process([], now_ms=T0 + 400_000)  # bars closed by the clock alone
