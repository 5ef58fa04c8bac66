"""``SizeThresholds``: a symbol's trade-size distribution and the P95/P99 frozen per minute.

Why frozen per minute: large trades (qty above P99) are classified with the P95/P99 frozen at the
first trade of each minute, from all trades before that minute, so the classification depends only
on the data, not on batching. The distribution is an hourly log-linear histogram over the last
``qty_window_hours`` (see ``quantiles``), floored by the symbol's ``p95_floor``/``p99_floor`` until
``min_quantile_samples`` sizes are in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import apply_minutes, thresholds_at
from .params import MINUTE_MS, StateParams
from .quantiles import HOUR_MS, MIN_EXPONENT, SUB_BUCKETS, HourlyQuantileWindow, bin_index
from .segment_log import SegmentLog


class SizeThresholds:
    """The hourly size histogram and the P95/P99 (and sample count) frozen at ``threshold_minute``."""

    def __init__(self, params: StateParams) -> None:
        self.params = params
        self.qty_hist = HourlyQuantileWindow(params.qty_window_hours)
        self.threshold_minute = -1
        self.p95 = params.p95_floor
        self.p99 = params.p99_floor
        self.qty_samples = 0

    @property
    def current(self) -> tuple[float, float, int]:
        """(P95, P99, samples) frozen at ``threshold_minute``."""
        return self.p95, self.p99, self.qty_samples

    def large_trades(
        self, qtys: np.ndarray, starts: np.ndarray, minute_numbers: np.ndarray, log: SegmentLog | None
    ) -> np.ndarray:
        """Per minute group (``starts``, ``minute_numbers``): freeze P95/P99 at the minute's first
        trade (from the trades before it), flag the trades above P99 as large, count the sizes into
        the hourly histogram; with a segment log, also the thresholds of the wanted minutes and of
        every minute frozen (compiled loop)."""
        p, hist = self.params, self.qty_hist
        wanted = np.asarray(log.wanted if log is not None else [], dtype=np.int64)
        wanted_out = np.full((len(wanted), 3), np.nan)
        minute_out = np.full((len(starts), 3), np.nan)
        state = np.array([self.threshold_minute, self.p95, self.p99, self.qty_samples], dtype=np.float64)
        large = np.empty(len(qtys), dtype=bool)
        hist.head = int(
            apply_minutes(
                qtys,
                bin_index(qtys),
                starts,
                minute_numbers,
                hist._rows,
                hist._total,
                hist._ids,
                hist.head,
                hist.window_hours,
                np.array([p.p95_floor, p.p99_floor]),
                p.min_quantile_samples,
                SUB_BUCKETS,
                MIN_EXPONENT,
                state,
                wanted,
                wanted_out,
                minute_out,
                large,
            )
        )
        self.threshold_minute, self.p95, self.p99, self.qty_samples = (
            int(state[0]),
            float(state[1]),
            float(state[2]),
            int(state[3]),
        )
        if log is not None:
            done = ~np.isnan(wanted_out[:, 0])
            for minute, (p95, p99, n) in zip(wanted[done].tolist(), wanted_out[done].tolist()):
                log.thresholds.setdefault(minute, (p95, p99, int(n)))
            del log.wanted[: int(done.sum())]
            computed = ~np.isnan(minute_out[:, 0])
            for minute, (p95, p99, n) in zip(minute_numbers[computed].tolist(), minute_out[computed].tolist()):
                log.thresholds[minute] = (p95, p99, int(n))
        return large

    def at(self, time_ms: int) -> tuple[float, float, int]:
        """(P95, P99, samples) from the histogram as it is, for a minute starting at ``time_ms``."""
        p, hist = self.params, self.qty_hist
        p95, p99, n = thresholds_at(
            hist._rows,
            hist._total,
            hist._ids,
            time_ms // HOUR_MS,
            hist.window_hours,
            np.array([p.p95_floor, p.p99_floor]),
            p.min_quantile_samples,
            SUB_BUCKETS,
            MIN_EXPONENT,
        ).tolist()
        return p95, p99, int(n)

    def log_wanted(self, log: SegmentLog) -> None:
        """P95/P99 of the log's remaining requested minutes from the histogram as it is now: it holds
        every trade before them (a minute's own thresholds are frozen at its first trade, from the
        trades before it; a minute already frozen keeps its frozen values)."""
        while log.wanted:
            wanted = log.wanted.pop(0)
            if wanted == self.threshold_minute:
                log.thresholds[wanted] = self.current
            elif wanted not in log.thresholds:
                log.thresholds[wanted] = self.at(wanted * MINUTE_MS)

    def columns(self, times: np.ndarray, log: SegmentLog | None) -> np.ndarray:
        """(P95, P99, samples) of the minute of each of ``times`` as an (n, 3) array: from the
        segment's log, else from the state as it is."""
        minutes = (times // MINUTE_MS).tolist()
        if log is not None:
            return np.array([log.thresholds[m] for m in minutes], dtype=np.float64).reshape(len(times), 3)
        minute_values = {
            m: self.current if m == self.threshold_minute else self.at(m * MINUTE_MS) for m in set(minutes)
        }
        return np.array([minute_values[m] for m in minutes], dtype=np.float64).reshape(len(times), 3)

    @property
    def capacity_cells(self) -> int:
        return self.qty_hist.capacity_cells

    def to_dict(self) -> dict[str, Any]:
        """The frozen values (the histogram is ``qty_hist.to_dict``: the state keeps its own key order)."""
        return {
            "threshold_minute": self.threshold_minute,
            "p95": self.p95,
            "p99": self.p99,
            "qty_samples": self.qty_samples,
        }

    @classmethod
    def from_dict(cls, params: StateParams, frozen: dict[str, Any], qty_hist: dict[str, Any]) -> SizeThresholds:
        sizes = cls(params)
        sizes.threshold_minute = frozen["threshold_minute"]
        sizes.p95, sizes.p99, sizes.qty_samples = frozen["p95"], frozen["p99"], frozen["qty_samples"]
        sizes.qty_hist = HourlyQuantileWindow.from_dict(qty_hist)
        return sizes
