"""``SegmentLog``: what a symbol state saw while a segment's inputs were applied at once.

Why: the engine applies a segment's trades in one go and reads all of its evaluation times
afterwards (``SymbolState.snapshot_frame``). Each time must see only what came before it, so the
state records the values it held before the segment and every change during it, with the time
from which each change holds. How long a segment may be is ``segment_limit_ms``: the rings must
still hold what its first time reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .detectors import DetectorLog
from .params import MINUTE_MS, SECOND_MS, StateParams


@dataclass
class SegmentLog:
    """What ``apply_segment`` saw, so the segment's evaluation times can be read afterwards."""

    pre_last_price: float | None
    pre_last_trade_ms: int | None
    pre_atr: float | None
    pre_atr_percentile: float
    pre_atr_bars: int
    pre_threshold_minute: int
    pre_thresholds: tuple[float, float, int]
    wanted: list[int]  # minutes whose P95/P99 the evaluation times need, ascending
    trade_times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    trade_prices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    atr: list[tuple[int, float | None, float, int]] = field(default_factory=list)  # (bar close, value, pct, bars)
    thresholds: dict[int, tuple[float, float, int]] = field(default_factory=dict)  # minute -> (p95, p99, n)
    pre_detectors: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # (vpin, kyle, amihud) before
    detectors: DetectorLog = field(default_factory=DetectorLog)  # their changes during the segment
    pre_divergence: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # flow: divergence before
    divergence: DetectorLog = field(default_factory=DetectorLog)  # its changes during the segment
    pre_walls: tuple[float, ...] = (np.nan,) * 7  # book detectors: nearest walls before
    walls: DetectorLog = field(default_factory=DetectorLog)  # their changes during the segment

    def last_trades_at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Price and time of the newest trade before each of ``times`` (NaN: none yet)."""
        n = len(times)
        last_price = np.full(n, np.nan if self.pre_last_price is None else self.pre_last_price, dtype=np.float64)
        last_trade = np.full(n, np.nan if self.pre_last_trade_ms is None else float(self.pre_last_trade_ms))
        if len(self.trade_times):
            index = np.searchsorted(self.trade_times, times, side="left") - 1
            has = index >= 0
            last_price[has] = self.trade_prices[index[has]]
            last_trade[has] = self.trade_times[index[has]]
        return last_price, last_trade

    def atr_at(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ATR value, percentile and bar count at each of ``times``: the last update whose bar closed
        at or before the time, else the value before the segment."""
        n = len(times)
        value = np.full(n, np.nan if self.pre_atr is None else self.pre_atr, dtype=np.float64)
        percentile = np.full(n, self.pre_atr_percentile, dtype=np.float64)
        bars = np.full(n, float(self.pre_atr_bars))
        if self.atr:
            close_times = np.array([e[0] for e in self.atr], dtype=np.int64)
            index = np.searchsorted(close_times, times, side="right") - 1
            has = index >= 0
            table = np.array([[np.nan if e[1] is None else e[1], e[2], e[3]] for e in self.atr])
            value[has], percentile[has], bars[has] = table[index[has]].T
        return value, percentile, bars


def segment_limit_ms(params: StateParams, cvd_windows_ms: Iterable[int], slope_windows_ms: Iterable[int]) -> int:
    """Longest span (first to last evaluation time) that ``apply_segment`` + ``snapshot_frame`` can
    answer: the rings must still hold the oldest bucket the first time reads after the trades up to
    the last time are in (``StateParams.replay_margin_s`` widens this for replays)."""
    p = params
    second_buckets, minute_buckets, liq_buckets = p.ring_sizes
    windows = set(cvd_windows_ms) | set(slope_windows_ms)
    second_windows = [w for w in windows if w <= p.second_window_limit_ms]
    reach_s = max([*second_windows, p.vwap_window_ms, p.large_window_ms, p.whale_window_ms]) // SECOND_MS
    reach_s += 2 * p.slope_step_ms // SECOND_MS + 2
    minute_windows = [w // MINUTE_MS for w in windows if w > p.second_window_limit_ms]
    limits = [
        (second_buckets - reach_s - 1) * SECOND_MS,
        (liq_buckets - p.liq_window_ms // SECOND_MS - 2) * SECOND_MS,
    ]
    if minute_windows:
        # whole minutes before the current one are read from the minute ring (the current one from
        # seconds), so the last time's minute may be up to ``buckets - window`` minutes ahead
        limits.append((minute_buckets - max(minute_windows)) * MINUTE_MS)
    return max(min(limits), 0)
