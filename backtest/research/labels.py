"""Research labels for every evaluation: ``y_binary_60m`` and forward returns at 5, 15 and 60 minutes.

Definitions (the old system's V5.3 design, ``shared/reference/strategy-docs.md`` §4.7):

- ``y_binary_60m`` = 1 when, within 60 minutes after the evaluation, the price reaches entry +2 x ATR
  in the evaluation's direction before it ever touches entry -1 x ATR against it; 0 when the stop is
  touched first or neither is reached within the hour; the first touch decides. Entry is the
  evaluation's last trade price and ATR the snapshot's ATR at evaluation time (never recomputed).
  Undefined (NaN) without a direction or an ATR, and when the data ends before the hour does and
  neither level was touched. Touch means at or beyond the level.
- ``fwd_return_{5m,15m,60m}`` = price at t + h / entry - 1, the price at a time being the last trade
  before it (raw, not signed by direction); NaN when the data does not reach t + h.

The price path is the trades after the evaluation (a replay always has them; the old system used
the mark price, which a Binance Vision replay only has per minute). Labels look up to an hour into the
future by construction: they are for fitting weights outside the engine, never an engine input, and a
walk-forward purges that hour at every training window's end (``walk_forward``).

Speed: the barrier scan runs in a compiled loop (numba) over per-second highs and lows, and looks at
single trades only in a second where both levels are touched; a month of one symbol (2.6 M
evaluations, 80 M trades) takes seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

HORIZONS_MS = {"5m": 300_000, "15m": 900_000, "60m": 3_600_000}
BARRIER_HORIZON_MS = 3_600_000
TARGET_ATR = 2.0
STOP_ATR = 1.0


@dataclass(frozen=True)
class PricePath:
    """Trades of one symbol in time order, with per-second highs/lows for the barrier scan."""

    times: np.ndarray  # int64 ms
    prices: np.ndarray  # float64
    end_ms: int  # the data covers times before this (exclusive)
    first_second: int
    second_high: np.ndarray
    second_low: np.ndarray
    second_start: np.ndarray  # index of the first trade of each second (len = seconds + 1)

    @classmethod
    def from_trades(cls, times: np.ndarray, prices: np.ndarray, end_ms: int | None = None) -> PricePath:
        times = np.asarray(times, dtype=np.int64)
        prices = np.asarray(prices, dtype=np.float64)
        if len(times) == 0:
            raise ValueError("a price path needs at least one trade")
        if np.any(times[1:] < times[:-1]):
            raise ValueError("trades of a price path must be in time order")
        end = int(times[-1]) + 1 if end_ms is None else int(end_ms)
        first = int(times[0]) // 1000
        seconds = (end - 1) // 1000 - first + 1
        index = times // 1000 - first
        starts = np.searchsorted(index, np.arange(seconds + 1), side="left")
        high = np.full(seconds, -np.inf)
        low = np.full(seconds, np.inf)
        np.maximum.at(high, index, prices)
        np.minimum.at(low, index, prices)
        return cls(times, prices, end, first, high, low, starts)

    def price_before(self, times: np.ndarray) -> np.ndarray:
        """The last trade price before each time (NaN before the first trade)."""
        index = np.searchsorted(self.times, times, side="left") - 1
        out = np.full(len(times), np.nan)
        ok = index >= 0
        out[ok] = self.prices[index[ok]]
        return out


@njit(cache=True)
def _barrier_kernel(
    eval_times,
    entry,
    atr,
    sign,
    times,
    prices,
    first_second,
    high,
    low,
    starts,
    horizon_s,
    target_mult,
    stop_mult,
    end_ms,
    out,
):  # pragma: no cover - compiled
    n_seconds = high.shape[0]
    for k in range(eval_times.shape[0]):
        out[k] = np.nan
        if sign[k] == 0 or not (atr[k] > 0) or math.isnan(entry[k]):
            continue
        up = sign[k] > 0
        target = entry[k] + sign[k] * target_mult * atr[k]
        stop = entry[k] - sign[k] * stop_mult * atr[k]
        s0 = eval_times[k] // 1000 - first_second
        result = -1.0
        for s in range(max(s0, 0), s0 + horizon_s):
            if s >= n_seconds:
                break
            if starts[s] == starts[s + 1]:
                continue  # no trade in this second
            hit_target = high[s] >= target if up else low[s] <= target
            hit_stop = low[s] <= stop if up else high[s] >= stop
            if hit_target and hit_stop:  # both in one second: the trades' order decides
                for i in range(starts[s], starts[s + 1]):
                    if (prices[i] >= target) if up else (prices[i] <= target):
                        result = 1.0
                        break
                    if (prices[i] <= stop) if up else (prices[i] >= stop):
                        result = 0.0
                        break
                break
            if hit_target:
                result = 1.0
                break
            if hit_stop:
                result = 0.0
                break
        if result >= 0:
            out[k] = result
        elif eval_times[k] + horizon_s * 1000 <= end_ms:
            out[k] = 0.0  # the whole hour is known and neither level was touched


def barrier_labels(
    eval_times: np.ndarray,
    entry: np.ndarray,
    atr: np.ndarray,
    sign: np.ndarray,
    path: PricePath,
    horizon_ms: int = BARRIER_HORIZON_MS,
    target_atr: float = TARGET_ATR,
    stop_atr: float = STOP_ATR,
) -> np.ndarray:
    """``y_binary`` per evaluation (1, 0 or NaN; see the module docstring). Evaluation times are
    whole seconds (the engine's) and the horizon whole seconds."""
    eval_times = np.asarray(eval_times, dtype=np.int64)
    if np.any(eval_times % 1000) or horizon_ms % 1000:
        raise ValueError("evaluation times and the horizon must be whole seconds")
    out = np.empty(len(eval_times))
    _barrier_kernel(
        eval_times,
        np.asarray(entry, dtype=np.float64),
        np.asarray(atr, dtype=np.float64),
        np.asarray(sign, dtype=np.int64),
        path.times,
        path.prices,
        path.first_second,
        path.second_high,
        path.second_low,
        path.second_start,
        horizon_ms // 1000,
        float(target_atr),
        float(stop_atr),
        path.end_ms,
        out,
    )
    return out


def forward_returns(
    eval_times: np.ndarray, entry: np.ndarray, path: PricePath, horizons: dict[str, int] = HORIZONS_MS
) -> dict[str, np.ndarray]:
    """``fwd_return_<h>`` = price at t + h / entry - 1, NaN where the data ends before t + h."""
    eval_times = np.asarray(eval_times, dtype=np.int64)
    entry = np.asarray(entry, dtype=np.float64)
    out = {}
    for name, horizon in horizons.items():
        at = eval_times + horizon
        price = path.price_before(at)
        value = price / entry - 1.0
        value[at > path.end_ms] = np.nan
        out[f"fwd_return_{name}"] = value
    return out


def label_columns(
    eval_times: np.ndarray, entry: np.ndarray, atr: np.ndarray, sign: np.ndarray, path: PricePath
) -> dict[str, np.ndarray]:
    """Every label of the evaluations: ``y_binary_60m`` and the forward returns."""
    labels = {"y_binary_60m": barrier_labels(eval_times, entry, atr, sign, path)}
    labels.update(forward_returns(eval_times, entry, path))
    return labels
