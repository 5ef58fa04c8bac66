"""Deterministic synthetic trades for tests, benchmarks and demos (seeded numpy, no I/O).

Why it lives in the package: the benchmark and several test modules need the same reproducible
stream (consecutive agg ids, non-decreasing times, a random-walk price, heavy-tailed sizes, a side
that drifts between buy- and sell-dominated regimes so CVD has a direction), and a replay of it must
give the same numbers everywhere.
"""

from __future__ import annotations

import numpy as np

from .events import TradeBatch


def synthetic_trades(
    symbol: str = "BTCUSDT",
    *,
    exchange: str = "binance",
    start_ms: int = 1_700_000_000_000,
    duration_ms: int = 3_600_000,
    rate_per_s: float = 20.0,
    price0: float = 30_000.0,
    volatility_bps: float = 1.0,
    median_qty: float = 0.05,
    seed: int = 7,
    first_agg_id: int = 1,
) -> TradeBatch:
    rng = np.random.default_rng(seed)
    n = max(int(duration_ms / 1000 * rate_per_s), 1)
    times = start_ms + np.sort(rng.integers(0, duration_ms, n))
    log_returns = rng.normal(0.0, volatility_bps / 10_000, n)
    prices = np.round(price0 * np.exp(np.cumsum(log_returns)), 2)
    qty = np.round(median_qty * rng.lognormal(0.0, 1.2, n), 3)
    qty[qty <= 0] = 0.001
    regime = np.sin(np.arange(n) / max(n / 7.0, 1.0))  # slow swings between buy and sell pressure
    taker_sell = rng.random(n) < 0.5 - 0.15 * regime
    return TradeBatch.from_arrays(
        exchange, symbol, np.arange(first_agg_id, first_agg_id + n), times, prices, qty, taker_sell
    )
