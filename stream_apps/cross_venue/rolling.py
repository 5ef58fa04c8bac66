"""Rolling statistics of one spread series over an event-time window, updated per sample in O(1).

A window of ``window_ms`` holds the samples with time in ``(now - window_ms, now]``; samples come at
most one per ``sample_ms`` (the caller samples on that grid), so the window never holds more than
``window_ms // sample_ms + 1`` of them: memory is fixed when the window is made. What it answers:

- ``n``, ``mean``, ``std`` (sample standard deviation, ddof = 1), ``min``, ``max``;
- ``slope``: least-squares slope of value against time, per minute;
- ``crossings_per_hour``: how often the series crossed its mean. Each sample is put on a side of the
  window's mean *as it was when the sample arrived* (the mean including that sample; a value equal
  to the mean counts as above), and a crossing is two consecutive samples of the window on different
  sides. That is what a trader watching the series live would have counted, it uses nothing after
  the sample (no look-ahead), and it is incremental; the count is divided by the hours the window's
  samples span (newest minus oldest time);
- ``drift_ratio``: ``|last - first| / sum(|v[i] - v[i-1]|)`` over the window's samples, in [0, 1]:
  1 for a series that only moved one way (trending), near 0 for one that went back and forth
  (mean-reverting); undefined (None) for a series that did not move.

How it stays O(1): running sums (count, sum, sum of squares, and time sums for the slope) are added
to when a sample arrives and subtracted from when it leaves; min and max are monotonic deques; each
sample stores its own crossing flag and absolute change against its predecessor, so the window's
counts are running totals too (minus the oldest sample's, whose predecessor has left). A window that
gained or lost no sample since it was last asked answers from its last result (a 12 h window sampled
every minute changes once a minute, however often it is evaluated). Subtracting
floats accumulates rounding, so values and times are stored relative to a reference taken from the
window, and the sums are recomputed exactly from the stored samples (numpy, O(capacity)) once every
``capacity`` samples: O(1) amortised, and never more than one window of rounding.

Why hand-rolled: pandas' rolling windows keep every row and recompute per query; the streaming
libraries we know of bring their own runtime. The samples live in fixed numpy arrays (a ring).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class WindowStats:
    """The statistics of one window at one time; a None is missing (``reasons`` says why)."""

    n: int
    span_ms: int  # newest minus oldest sample time
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    slope_per_min: float | None
    crossings_per_hour: float | None
    drift_ratio: float | None
    reasons: tuple[tuple[str, str], ...] = ()  # (field, why it is None)


class RollingWindow:
    """The samples of one series within ``window_ms``, at most one per ``sample_ms``."""

    def __init__(self, window_ms: int, sample_ms: int) -> None:
        if window_ms <= 0 or sample_ms <= 0 or window_ms < sample_ms:
            raise ValueError("need 0 < sample_ms <= window_ms")
        self.window_ms = int(window_ms)
        self.sample_ms = int(sample_ms)
        self.capacity = self.window_ms // self.sample_ms + 1
        cap = self.capacity
        self._t = np.zeros(cap, dtype=np.int64)
        self._v = np.zeros(cap, dtype=np.float64)
        self._cross = np.zeros(cap, dtype=np.int8)  # 1 when this sample is on the other side of its predecessor
        self._absdiff = np.zeros(cap, dtype=np.float64)  # |v - predecessor|
        self._start = 0  # slot of the oldest sample
        self.n = 0
        self._last_t: int | None = None
        self._last_v = 0.0
        self._last_side = 0
        # running sums, values relative to _k and times (seconds) relative to _t0
        self._k = 0.0
        self._t0 = 0
        self._s1 = self._s2 = self._st = self._stt = self._stv = 0.0
        self._cross_total = 0
        self._absdiff_total = 0.0
        self._since_rebuild = 0
        self._min: deque[tuple[int, float]] = deque()
        self._max: deque[tuple[int, float]] = deque()
        self._oldest_t = 0  # time of the oldest sample (a Python int: the fast path of expire reads it)
        self._cached: WindowStats | None = None  # the last stats answer, until a sample comes or goes
        self._cached_name = ""

    # -- updates ------------------------------------------------------------------------------
    def expire(self, now_ms: int) -> None:
        """Drop the samples with time <= ``now_ms - window_ms``."""
        cut = now_ms - self.window_ms
        if self.n == 0 or self._oldest_t > cut:  # nothing leaves (min/max deques hold no older sample)
            return
        self._cached = None
        cap = self.capacity
        while self.n and self._t[self._start] <= cut:
            i = self._start
            t = (int(self._t[i]) - self._t0) / 1000.0
            v = float(self._v[i]) - self._k
            self._s1 -= v
            self._s2 -= v * v
            self._st -= t
            self._stt -= t * t
            self._stv -= t * v
            self._cross_total -= int(self._cross[i])
            self._absdiff_total -= float(self._absdiff[i])
            self._start = (i + 1) % cap
            self.n -= 1
        while self._min and self._min[0][0] <= cut:
            self._min.popleft()
        while self._max and self._max[0][0] <= cut:
            self._max.popleft()
        if self.n == 0:
            self._reset_reference()
        else:
            self._oldest_t = int(self._t[self._start])

    def add(self, t_ms: int, value: float) -> None:
        """Add the sample ``(t_ms, value)``; sample times must be at least ``sample_ms`` apart."""
        if not math.isfinite(value):
            raise ValueError(f"sample value must be finite, not {value!r}")
        if self._last_t is not None and t_ms - self._last_t < self.sample_ms:
            raise ValueError(f"samples {self._last_t} then {t_ms}: closer than sample_ms={self.sample_ms}")
        self.expire(t_ms)
        self._cached = None
        if self.n == 0:
            self._k, self._t0 = value, t_ms
            self._oldest_t = t_ms
        i = (self._start + self.n) % self.capacity
        had_predecessor = self.n > 0
        t = (t_ms - self._t0) / 1000.0
        v = value - self._k
        self._s1 += v
        self._s2 += v * v
        self._st += t
        self._stt += t * t
        self._stv += t * v
        self.n += 1
        mean = self._k + self._s1 / self.n
        side = 1 if value >= mean else -1
        cross = 1 if had_predecessor and side != self._last_side else 0
        absdiff = abs(value - self._last_v) if had_predecessor else 0.0
        self._t[i], self._v[i], self._cross[i], self._absdiff[i] = t_ms, value, cross, absdiff
        self._cross_total += cross
        self._absdiff_total += absdiff
        self._last_t, self._last_v, self._last_side = t_ms, value, side
        while self._min and self._min[-1][1] >= value:
            self._min.pop()
        self._min.append((t_ms, value))
        while self._max and self._max[-1][1] <= value:
            self._max.pop()
        self._max.append((t_ms, value))
        self._since_rebuild += 1
        if self._since_rebuild >= self.capacity:
            self._rebuild()

    def _slots(self) -> np.ndarray:
        return (self._start + np.arange(self.n)) % self.capacity

    def _reset_reference(self) -> None:
        self._s1 = self._s2 = self._st = self._stt = self._stv = 0.0
        self._cross_total = 0
        self._absdiff_total = 0.0
        self._since_rebuild = 0

    def _rebuild(self) -> None:
        """Recompute the running sums from the stored samples, relative to the oldest sample."""
        slots = self._slots()
        t_ms, values = self._t[slots], self._v[slots]
        self._k, self._t0 = float(values[0]), int(t_ms[0])
        t = (t_ms - self._t0) / 1000.0
        v = values - self._k
        self._s1, self._s2 = float(v.sum()), float((v * v).sum())
        self._st, self._stt, self._stv = float(t.sum()), float((t * t).sum()), float((t * v).sum())
        self._cross_total = int(self._cross[slots].sum())
        self._absdiff_total = float(self._absdiff[slots].sum())
        self._since_rebuild = 0

    # -- queries --------------------------------------------------------------------------------
    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the window's (times, values), oldest first (for tests and inspection)."""
        slots = self._slots()
        return self._t[slots].copy(), self._v[slots].copy()

    def stats(self, now_ms: int, name: str = "window") -> WindowStats:
        """Statistics of the samples within the window ending at ``now_ms`` (expires older ones)."""
        self.expire(now_ms)
        if self._cached is not None and self._cached_name == name:
            return self._cached
        self._cached = self._stats(name)
        self._cached_name = name
        return self._cached

    def _stats(self, name: str) -> WindowStats:
        n = self.n
        if n == 0:
            why = f"{name} has no sample"
            return WindowStats(
                0,
                0,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                tuple(
                    (f, why)
                    for f in ("mean", "std", "min", "max", "slope_per_min", "crossings_per_hour", "drift_ratio")
                ),
            )
        reasons: list[tuple[str, str]] = []
        oldest = self._start
        newest = (self._start + n - 1) % self.capacity
        span_ms = int(self._t[newest] - self._t[oldest])
        mean = self._k + self._s1 / n
        std = slope = crossings = drift = None
        if n >= 2:
            var = max(self._s2 - self._s1 * self._s1 / n, 0.0) / (n - 1)
            std = math.sqrt(var)
            denom = n * self._stt - self._st * self._st
            if denom > 0:
                slope = (n * self._stv - self._st * self._s1) / denom * 60.0
            crossings = (self._cross_total - int(self._cross[oldest])) / (span_ms / HOUR_MS)
            path = self._absdiff_total - float(self._absdiff[oldest])
            if path > 0:
                drift = min(abs(float(self._v[newest]) - float(self._v[oldest])) / path, 1.0)
            else:
                reasons.append(("drift_ratio", f"{name} did not move"))
        else:
            why = f"{name} has 1 sample"
            reasons += [(f, why) for f in ("std", "slope_per_min", "crossings_per_hour", "drift_ratio")]
        return WindowStats(
            n, span_ms, mean, std, self._min[0][1], self._max[0][1], slope, crossings, drift, tuple(reasons)
        )

    # -- plain data (a Faust table's value; JSON-safe) --------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything, running sums included, so a restored window answers bit for bit the same."""
        slots = self._slots()
        return {
            "window_ms": self.window_ms,
            "sample_ms": self.sample_ms,
            "t": self._t[slots].tolist(),
            "v": self._v[slots].tolist(),
            "cross": self._cross[slots].tolist(),
            "absdiff": self._absdiff[slots].tolist(),
            "last": [self._last_t, self._last_v, self._last_side],
            "ref": [self._k, self._t0],
            "sums": [self._s1, self._s2, self._st, self._stt, self._stv],
            "totals": [self._cross_total, self._absdiff_total, self._since_rebuild],
            "min": [list(x) for x in self._min],
            "max": [list(x) for x in self._max],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollingWindow:
        w = cls(data["window_ms"], data["sample_ms"])
        n = len(data["t"])
        if n > w.capacity:
            raise ValueError(f"{n} samples do not fit a window of capacity {w.capacity}")
        w._t[:n], w._v[:n] = data["t"], data["v"]
        w._cross[:n], w._absdiff[:n] = data["cross"], data["absdiff"]
        w.n = n
        w._oldest_t = int(data["t"][0]) if n else 0
        w._last_t, w._last_v, w._last_side = data["last"]
        w._k, w._t0 = data["ref"]
        w._s1, w._s2, w._st, w._stt, w._stv = data["sums"]
        w._cross_total, w._absdiff_total, w._since_rebuild = data["totals"]
        w._min = deque((int(t), float(v)) for t, v in data["min"])
        w._max = deque((int(t), float(v)) for t, v in data["max"])
        return w
