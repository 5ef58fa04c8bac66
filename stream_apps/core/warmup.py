"""Compile (or load from numba's on-disk cache) every engine kernel before a service starts consuming.

Why: numba compiles a kernel at its first call; in a fresh checkout (or after ``kernels.py`` changed)
that takes seconds, and inside the Faust worker's event loop it would stall the consumer long enough
for a rebalance. Running one tiny evaluation first makes every later call fast. The decisions'
cooldown kernel runs only for signal candidates (a tiny session has none: the strategies' warm-up
windows), so it is called once directly with the types ``decide_frame`` passes (~0.3 s to compile
after the core's kernels, at the worker's first signal otherwise). The detectors' kernels
(microstructure, flow, book) are only called when a strategy turns them on, so for a caller whose
strategies do, a second engine with every detector on runs a tiny session with each of their
inputs: a compiled kernel compiles every kernel it calls, so each one the engine calls directly is
called once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cooldown import CooldownBook
from .engine import Engine
from .events import BookUpdate, IndicatorUpdate, LiquidationEvent, book_levels
from .kernels import NONE_TIME, cooldown_rows
from .strategy import (
    Detectors,
    Divergence,
    Icebergs,
    Liquidations,
    OiSpike,
    PerSymbol,
    StrategyConfig,
    Vpin,
    Walls,
    default_strategy_dir,
    load_strategies,
)
from .synthetic import synthetic_trades

T0 = 1_700_000_000_000
EVERY_DETECTOR = Detectors(
    vpin=Vpin(bucket_volume=PerSymbol(default=20_000.0)),
    divergence=Divergence(window=120_000),
    oi_spike=OiSpike(window=2),
    liquidations=Liquidations(),
    walls=Walls(),
    icebergs=Icebergs(),
)


def warm_up(strategies: Sequence[StrategyConfig] | None = None) -> None:
    """The shipped strategies on four minutes of synthetic trades in two calls and a call with the
    clock alone (bars closed by it); then, when one of ``strategies`` (the ones the caller will run)
    turns detectors on, the same with every detector on, fed book snapshots, open interest and
    liquidations too (the second call's trades alone: the book detectors' trades-only path). Only
    then: in a fresh checkout the detectors' kernels take ~15 s to compile (the core's ~5 s), which
    a stack without detectors need not wait for."""
    shipped = load_strategies(default_strategy_dir())
    _session(Engine(shipped))
    _warm_decisions()
    if any(cfg.detectors is not None for cfg in strategies or ()):
        _warm_detectors(shipped)


def _session(engine: Engine, symbol: str = "BTCUSDT", events: list | None = None) -> None:
    """Four minutes of trades in two calls (``events`` with the first), then the clock alone."""
    trades = synthetic_trades(symbol, start_ms=T0, duration_ms=240_000, rate_per_s=2.0)
    first, later = trades.take(slice(0, len(trades) // 2)), trades.take(slice(len(trades) // 2, None))
    engine.process([first], events or [], now_ms=T0 + 130_000)
    engine.process([later], now_ms=T0 + 250_000)
    engine.process([], now_ms=T0 + 400_000)  # bars closed by the clock alone


def _warm_decisions() -> None:
    """``cooldown_rows`` on two candidate rows, its arguments of the types ``decide_frame`` passes
    (the test runs a session with signals after the warm-up and finds no new compilation)."""
    state = CooldownBook().symbol_state("binance", "BTCUSDT", NONE_TIME)
    rows = np.flatnonzero(np.ones(2, dtype=np.bool_))
    cooldown_rows(
        np.array([T0, T0 + 60_000], dtype=np.int64),
        np.array([1, -1], dtype=np.int8),
        np.array([80.0, 80.0]),
        rows,
        600_000,
        75.0,
        3_600_000,
        state,
        np.zeros(2, dtype=np.bool_),
        np.zeros(2, dtype=np.bool_),
    )


def _warm_detectors(strategies: Sequence[StrategyConfig]) -> None:
    """A shipped strategy with every detector on, fed a snapshot every 250 ms (a wall among its
    levels), three open-interest points and a liquidation a second besides the trades."""
    detected = Engine([strategies[0].model_copy(update={"detectors": EVERY_DETECTOR})])
    symbol = (strategies[0].symbols or ["BTCUSDT"])[0]  # empty: every symbol
    price = float(synthetic_trades(symbol, start_ms=T0, duration_ms=1_000, rate_per_s=2.0).price[0])
    levels = book_levels(
        ([(price - 0.5 * k, 1.0 + 9 * (k == 3)) for k in range(1, 6)], [(price + 0.5 * k, 1.0) for k in range(1, 6)])
    )
    events = [BookUpdate("binance", symbol, T0 + 250 * k, 0.0, levels) for k in range(1, 400)]
    events += [
        IndicatorUpdate("binance", symbol, T0 + 60_000 * k + 30_000, "open_interest_hist", 1e6 + k, T0 + 60_000 * k)
        for k in range(3)
    ]
    events += [LiquidationEvent("binance", symbol, T0 + 1_000 * k, "LONG", 50_000.0) for k in range(1, 20)]
    events.sort(key=lambda e: e.time_ms)
    _session(detected, symbol, events)
