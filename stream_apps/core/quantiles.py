"""Rolling P95/P99 of trade size from a bounded log-linear histogram.

Why a histogram: the old system sorted 24 h of trades on every 15-s tick (O(n log n), unbounded
memory). Here each trade increments one counter. Buckets are log-linear like HdrHistogram: the bucket
number is the float's biased exponent followed by the top ``SUB_BITS`` bits of its mantissa, read
straight from the IEEE-754 bits with one shift. Each octave is thus split into 2**SUB_BITS equal
slices, a bucket is at most 1/64 of its lower edge wide, and its midpoint is within
``RELATIVE_ERROR`` (1/128, about 0.8 %) of every value in it. Integer bit operations are exact, so
bucketing is identical whatever the batch shape (no logarithm whose vectorised and scalar paths might
round differently).

The 24-hour window is kept as one histogram per hour: the current hour plus the 24 previous whole
hours (the window therefore spans between 24 h and 25 h). Memory: 25 x N_BINS int32 counters. Quantiles are read by a compiled scan (``kernels.window_quantiles``:
one pass over the bins for P95 and P99 together, once per minute of trades).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .kernels import window_quantiles

SUB_BITS = 6
SUB_BUCKETS = 1 << SUB_BITS
RELATIVE_ERROR = 1.0 / (2 * SUB_BUCKETS)
MIN_EXPONENT = -28  # values below 2**-28 (about 3.7e-9) share the first bucket
MAX_EXPONENT = 35  # values from 2**36 (about 6.9e10) share the last bucket
N_BINS = (MAX_EXPONENT - MIN_EXPONENT + 1) * SUB_BUCKETS
_SHIFT = 52 - SUB_BITS
_OFFSET = (1023 + MIN_EXPONENT) << SUB_BITS
HOUR_MS = 3_600_000


def bin_index(values: np.ndarray) -> np.ndarray:
    """Bucket number for each positive value; values outside the range clamp to the end buckets."""
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    index = (bits >> _SHIFT) - _OFFSET
    return np.clip(index, 0, N_BINS - 1, out=index)


def bin_value(index: int) -> float:
    """Midpoint of bucket ``index`` (the estimate reported for every value in it)."""
    exponent, sub = divmod(int(index), SUB_BUCKETS)
    return float(np.ldexp(1.0 + (sub + 0.5) / SUB_BUCKETS, exponent + MIN_EXPONENT))


def quantile_from_counts(counts: np.ndarray, q: float) -> tuple[float | None, int]:
    """Estimate of the ``q`` quantile (numpy ``method="lower"``: rank floor((n-1)q)) and n."""
    counts = np.asarray(counts, dtype=np.int64)
    out = np.zeros(1)
    no_hours = np.full(1, -1, dtype=np.int64)
    n = window_quantiles(
        np.zeros((1, len(counts)), dtype=np.int32),
        counts,
        no_hours,
        0,
        0,
        np.array([q], dtype=np.float64),
        SUB_BUCKETS,
        MIN_EXPONENT,
        out,
    )
    return (float(out[0]) if n else None), int(n)


class HourlyQuantileWindow:
    """Trade-size histogram over the current hour plus the previous ``window_hours`` whole hours."""

    def __init__(self, window_hours: int = 24) -> None:
        self.window_hours = int(window_hours)
        self.n_slots = self.window_hours + 1
        self._ids = np.full(self.n_slots, -1, dtype=np.int64)
        self._rows = np.zeros((self.n_slots, N_BINS), dtype=np.int32)
        self._total = np.zeros(N_BINS, dtype=np.int64)
        self.head = -1

    def add(self, hour: int, bins: np.ndarray) -> None:
        """Count values (already converted with :func:`bin_index`) into ``hour``."""
        if len(bins) == 0:
            return
        if hour <= self.head - self.n_slots:
            return  # older than the window: callers never send such trades (they are late)
        slot = hour % self.n_slots
        if self._ids[slot] != hour:
            self._total -= self._rows[slot]
            self._rows[slot] = 0
            self._ids[slot] = hour
        increment = np.bincount(bins, minlength=N_BINS)
        self._rows[slot] += increment.astype(np.int32)
        self._total += increment
        self.head = max(self.head, hour)

    def counts_at(self, hour: int) -> np.ndarray:
        """Counts for the window ending in ``hour`` (hours ``hour - window_hours .. hour``)."""
        stale = (self._ids >= 0) & (self._ids < hour - self.window_hours)
        if not np.any(stale):
            return self._total
        return self._total - self._rows[stale].sum(axis=0, dtype=np.int64)

    def quantiles_at(self, hour: int, qs: Sequence[float]) -> tuple[list[float | None], int]:
        """The ``qs`` quantiles (ascending) of the window ending in ``hour``, and the sample count."""
        out = np.zeros(len(qs))
        n = window_quantiles(
            self._rows,
            self._total,
            self._ids,
            hour,
            self.window_hours,
            np.asarray(qs, dtype=np.float64),
            SUB_BUCKETS,
            MIN_EXPONENT,
            out,
        )
        return ([float(v) for v in out] if n else [None] * len(qs)), int(n)

    @property
    def capacity_cells(self) -> int:
        return self._rows.size + self._total.size + self._ids.size

    def to_dict(self) -> dict[str, Any]:
        hours = []
        for slot in np.argsort(self._ids, kind="stable"):
            hour = int(self._ids[slot])
            if hour < 0 or hour <= self.head - self.n_slots:
                continue
            nonzero = np.flatnonzero(self._rows[slot])
            if len(nonzero):
                hours.append([hour, [[int(i), int(self._rows[slot, i])] for i in nonzero]])
        return {"window_hours": self.window_hours, "head": int(self.head), "hours": hours}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HourlyQuantileWindow:
        window = cls(data["window_hours"])
        window.head = int(data["head"])
        for hour, bins in data["hours"]:
            slot = int(hour) % window.n_slots
            window._ids[slot] = int(hour)
            for index, count in bins:
                window._rows[slot, int(index)] = int(count)
        window._total = window._rows.sum(axis=0, dtype=np.int64)
        return window
