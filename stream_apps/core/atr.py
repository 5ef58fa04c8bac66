"""Wilder ATR on closed bars, and its percentile among the last N bar values.

DESIGN §4: TR = max(H-L, |H-C_prev|, |L-C_prev|) (the first bar has no previous close, so TR = H-L);
Wilder smoothing ATR = (ATR_prev * (n-1) + TR) / n, seeded with the first TR (``ta`` seeds with the
mean of the first n TRs instead; after the seed both follow the same recursion, so the difference
decays as ((n-1)/n)**k — see tests/stream_apps/core/test_core_bars_atr.py).

ATR percentile = 100 * count(h <= ATR) / len(h) over the ATR values of the last ``history_len`` bars
(288 five-minute bars = 24 h), one value appended per closed bar; 50 while fewer than ``min_history``
bars exist. The old system appended on every *read* (per 15-s tick, so 288 samples covered 72 min
and reading twice changed the answer); here reading is pure.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .bars import Bar


class WilderATR:
    """ATR of closed bars plus the history its percentile ranks against (plain data)."""

    def __init__(self, period: int = 14, history_len: int = 288, min_history: int = 10) -> None:
        self.period = int(period)
        self.history_len = int(history_len)
        self.min_history = int(min_history)
        self.value: float | None = None
        self.prev_close: float | None = None
        self.bars: int = 0
        self.last_close_time: int | None = None
        self.history: deque[float] = deque(maxlen=self.history_len)

    def update(self, bar: Bar) -> float:
        high, low = bar.high, bar.low
        if self.prev_close is None:
            true_range = high - low
        else:
            true_range = max(high - low, abs(high - self.prev_close), abs(low - self.prev_close))
        if self.value is None:
            self.value = true_range
        else:
            self.value = (self.value * (self.period - 1) + true_range) / self.period
        self.prev_close = bar.close
        self.bars += 1
        self.last_close_time = bar.close_time
        self.history.append(self.value)
        return self.value

    def percentile(self) -> float:
        if self.value is None or len(self.history) < self.min_history:
            return 50.0
        current = self.value
        return 100.0 * sum(1 for h in self.history if h <= current) / len(self.history)

    def to_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "history_len": self.history_len,
            "min_history": self.min_history,
            "value": self.value,
            "prev_close": self.prev_close,
            "bars": self.bars,
            "last_close_time": self.last_close_time,
            "history": list(self.history),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WilderATR:
        atr = cls(data["period"], data["history_len"], data["min_history"])
        atr.value = data["value"]
        atr.prev_close = data["prev_close"]
        atr.bars = data["bars"]
        atr.last_close_time = data["last_close_time"]
        atr.history.extend(data["history"])
        return atr
