"""Fixed-point scales for everything the engine sums.

Why integers: a window sum that is updated by adding and removing floats drifts (the old system
planned to "recompute every 10,000 trims" to hide it), and float addition is not associative, so
(a + b) + c may differ from a + (b + c). The second point matters as much as the first: live
processing and replay cut the same trade stream into different batches, and the parity test requires
bit-identical signals. Integer addition is exact and associative, so every bucket and every window sum
is the same whatever the batching, and adding then expiring buckets returns exactly to zero.

Quantities are stored in units of 1e-8 (Binance never quotes a finer quantity step) and notionals in
units of 1e-6 quote currency. int64 then holds 9.2e10 base units per sum (24 h of XRPUSDT is about
1e9) and 9.2e12 quote units (24 h of BTCUSDT is about 2e10 USDT).
"""

from __future__ import annotations

import numpy as np

QTY_SCALE: int = 10**8
NOTIONAL_SCALE: int = 10**6


def qty_to_units(qty: np.ndarray) -> np.ndarray:
    """Base-currency quantities to int64 units of 1e-8 (rounded to nearest)."""
    return np.rint(np.asarray(qty, dtype=np.float64) * QTY_SCALE).astype(np.int64)


def notional_to_units(notional: np.ndarray) -> np.ndarray:
    """Quote-currency amounts to int64 units of 1e-6 (rounded to nearest)."""
    return np.rint(np.asarray(notional, dtype=np.float64) * NOTIONAL_SCALE).astype(np.int64)


def qty_from_units(units: int) -> float:
    return int(units) / QTY_SCALE


def notional_from_units(units: int) -> float:
    return int(units) / NOTIONAL_SCALE
