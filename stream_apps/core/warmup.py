"""Compile (or load from numba's on-disk cache) every engine kernel before a service starts consuming.

Why: numba compiles a kernel at its first call; in a fresh checkout (or after ``kernels.py`` changed)
that takes seconds, and inside the Faust worker's event loop it would stall the consumer long enough
for a rebalance. Running one tiny evaluation first makes every later call fast.
"""

from __future__ import annotations

from .engine import Engine
from .strategy import default_strategy_dir, load_strategies
from .synthetic import synthetic_trades


def warm_up() -> None:
    """One evaluation of the shipped strategies on two minutes of synthetic trades (calls every kernel)."""
    engine = Engine(load_strategies(default_strategy_dir()))
    trades = synthetic_trades("BTCUSDT", start_ms=1_700_000_000_000, duration_ms=120_000, rate_per_s=2.0)
    engine.process([trades], now_ms=1_700_000_130_000)
