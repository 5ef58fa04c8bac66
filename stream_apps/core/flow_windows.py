"""``FlowWindows``: a symbol's trade flow in fixed-size rings of per-second and per-minute integer sums.

Why rings of sums: the state must stay bounded and plain data whatever the trade rate, and live and
replay must update it identically. Trades add integer units (see ``units``) to their second's and
minute's bucket; CVD, VWAP, large-trade and whale flow over any window are sums of buckets, computed
on read. A window of length ``w`` ending at ``t`` is the ``w / bucket`` buckets up to and including
the one holding ``t - 1 ms``; 5m..1h windows use second buckets, 4h/24h minute buckets (the current
minute from the seconds).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .frame import exact_ratio
from .kernels import ring_window_sums
from .params import MINUTE_MS, SECOND_MS, StateParams
from .ring import BucketRing
from .units import NOTIONAL_SCALE, QTY_SCALE

SECOND_FIELDS = (
    "buy_qty",
    "sell_qty",
    "quote",
    "trades",
    "large_buy_qty",
    "large_sell_qty",
    "whale_buy_quote",
    "whale_sell_quote",
)
MINUTE_FIELDS = ("buy_qty", "sell_qty", "quote", "trades")


@dataclass
class FlowColumns:
    """Window features at n evaluation times (quantities in base units, notionals in USD)."""

    cvd: dict[int, np.ndarray]  # window ms -> CVD
    slopes: dict[int, np.ndarray]  # window ms -> CVD change over one slope step
    accels: dict[int, np.ndarray]  # window ms -> change of that change
    vwap: np.ndarray
    volume: np.ndarray
    large_buy_qty: np.ndarray
    large_sell_qty: np.ndarray
    whale_buy_usd: np.ndarray
    whale_sell_usd: np.ndarray
    whale_ratio: np.ndarray


def checked_windows(
    params: StateParams, cvd_windows_ms: Iterable[int], slope_windows_ms: Iterable[int]
) -> tuple[list[int], list[int]]:
    """All windows and the slope windows, sorted; a window the rings cannot answer raises ValueError."""
    p = params
    windows = sorted(set(cvd_windows_ms) | set(slope_windows_ms))
    for w in windows:
        if w % SECOND_MS or w <= 0 or w > p.minute_window_limit_ms:
            raise ValueError(f"CVD window {w} ms must be whole seconds and at most {p.minute_window_limit_ms} ms")
    slope_windows = sorted(set(slope_windows_ms))
    for w in slope_windows:
        if w > p.second_window_limit_ms:
            raise ValueError(f"slope window {w} ms exceeds the second ring ({p.second_window_limit_ms} ms)")
    return windows, slope_windows


class FlowWindows:
    """The second ring (every flow field) and the minute ring (volume fields, for 4h/24h windows)."""

    def __init__(self, params: StateParams) -> None:
        self.params = params
        second_buckets, minute_buckets, _ = params.ring_sizes
        self.seconds = BucketRing(SECOND_MS, second_buckets, SECOND_FIELDS)
        self.minutes = BucketRing(MINUTE_MS, minute_buckets, MINUTE_FIELDS)

    def add_trades(
        self,
        times: np.ndarray,
        qty_units: np.ndarray,
        quote: np.ndarray,
        quote_units: np.ndarray,
        sells: np.ndarray,
        large: np.ndarray,
        minute_starts: np.ndarray,
        minute_numbers: np.ndarray,
    ) -> np.ndarray:
        """Add accepted trades (time-ordered; ``minute_starts`` their minute groups); return the
        per-minute (buy, sell, quote, trades) sums."""
        rows = np.empty((len(times), 8), dtype=np.int64)
        buy_units = np.multiply(qty_units, ~sells, out=rows[:, 0])
        sell_units = np.subtract(qty_units, buy_units, out=rows[:, 1])
        rows[:, 2] = quote_units
        rows[:, 3] = 1
        np.multiply(buy_units, large, out=rows[:, 4])
        np.multiply(sell_units, large, out=rows[:, 5])
        whale_units = quote_units * (quote >= self.params.whale_usd)
        np.multiply(whale_units, ~sells, out=rows[:, 6])
        np.subtract(whale_units, rows[:, 6], out=rows[:, 7])

        seconds = times // SECOND_MS
        s_starts = np.concatenate(([0], np.flatnonzero(seconds[1:] != seconds[:-1]) + 1))
        self.seconds.add_grouped(seconds[s_starts], np.add.reduceat(rows, s_starts, axis=0))
        per_minute = np.add.reduceat(rows[:, :4], minute_starts, axis=0)
        self.minutes.add_grouped(minute_numbers, per_minute)
        return per_minute

    def add_minutes(self, minute_numbers: np.ndarray, sums: np.ndarray) -> None:
        """Whole minutes' (buy, sell, quote, trades) sums that stand in for their trades."""
        self.minutes.add_grouped(minute_numbers, sums)

    @property
    def capacity_cells(self) -> int:
        return self.seconds.capacity_cells + self.minutes.capacity_cells

    # ------------------------------------------------------------------------------------------
    # reading many evaluation times at once
    # ------------------------------------------------------------------------------------------
    def columns(self, times: np.ndarray, windows: list[int], slope_windows: list[int]) -> FlowColumns:
        """Every window of every one of ``times`` from one prefix sum per ring (compiled); each time
        reads buckets that end before it (``checked_windows`` gives the windows)."""
        n = len(times)
        sums = self._second_sums(times, windows, slope_windows)
        cvd_now = self._cvd_units(times, windows, sums)
        lag_cvd = {(lag, w): sums[(lag, w)][:, 0] - sums[(lag, w)][:, 1] for w in slope_windows for lag in (1, 2)}

        vwap_sums, large_sums, whale_sums = sums["vwap"], sums["large"], sums["whale"]
        volume_units = vwap_sums[:, 0] + vwap_sums[:, 1]
        qty_columns = [*cvd_now.values()]
        for w in slope_windows:
            c0, c1, c2 = cvd_now[w], lag_cvd[(1, w)], lag_cvd[(2, w)]
            qty_columns += [c0 - c1, (c0 - c1) - (c1 - c2)]
        qty_columns += [volume_units, large_sums[:, 4], large_sums[:, 5]]
        qty_values = exact_ratio(np.concatenate(qty_columns), QTY_SCALE).reshape(len(qty_columns), n)
        notional_values = exact_ratio(
            np.concatenate((vwap_sums[:, 2], whale_sums[:, 6], whale_sums[:, 7])), NOTIONAL_SCALE
        ).reshape(3, n)
        volume, large_buy_qty, large_sell_qty = qty_values[-3:]
        traded = volume_units != 0
        vwap = np.full(n, np.nan)
        if traded.any():
            vwap[traded] = notional_values[0][traded] / volume[traded]
        whale_buy, whale_sell = whale_sums[:, 6], whale_sums[:, 7]
        whale_total = whale_buy + whale_sell
        whale_ratio = np.zeros(n)
        flowing = whale_total != 0
        if flowing.any():
            whale_ratio[flowing] = exact_ratio((whale_buy - whale_sell)[flowing], whale_total[flowing])
        return FlowColumns(
            cvd=dict(zip(windows, qty_values[: len(windows)])),
            slopes={w: qty_values[len(windows) + 2 * k] for k, w in enumerate(slope_windows)},
            accels={w: qty_values[len(windows) + 2 * k + 1] for k, w in enumerate(slope_windows)},
            vwap=vwap,
            volume=volume,
            large_buy_qty=large_buy_qty,
            large_sell_qty=large_sell_qty,
            whale_buy_usd=notional_values[1],
            whale_sell_usd=notional_values[2],
            whale_ratio=whale_ratio,
        )

    def _second_sums(self, times: np.ndarray, windows: list[int], slope_windows: list[int]) -> dict:
        """Second-ring sums (n rows of every field) keyed ("cvd", w), (lag, w) for the slope windows
        one and two slope steps back, "vwap", "large", "whale", and "partial" (the seconds of the
        current minute before each time, when a window reads the minute ring)."""
        p = self.params
        n = len(times)
        step = p.slope_step_ms

        def ends(lag: int) -> np.ndarray:
            return (times - lag * step - 1) // SECOND_MS + 1  # first bucket at or after the window's end

        end0 = ends(0)
        specs: list[tuple[np.ndarray, int]] = []  # (end buckets, window buckets), n rows each
        second_windows = [w for w in windows if w <= p.second_window_limit_ms]
        for w in second_windows:
            specs.append((end0, w // SECOND_MS))
        lagged = {lag: ends(lag) for lag in (1, 2)} if slope_windows else {}
        for w in slope_windows:
            specs += [(lagged[1], w // SECOND_MS), (lagged[2], w // SECOND_MS)]
        specs += [
            (end0, p.vwap_window_ms // SECOND_MS),
            (end0, p.large_window_ms // SECOND_MS),
            (end0, p.whale_window_ms // SECOND_MS),
        ]
        partial_start = end0  # unused unless a window reads the minute ring
        if any(w > p.second_window_limit_ms for w in windows):
            hi_minute = (times - 1) // MINUTE_MS  # the minute holding t - 1 ms: in the window up to t
            partial_start = hi_minute * (MINUTE_MS // SECOND_MS)  # its seconds before t: from the second ring
            specs.append((end0, -1))
        starts = np.concatenate([e - w if w >= 0 else partial_start for e, w in specs])
        sums = ring_window_sums(
            self.seconds._values, self.seconds.head, starts, np.concatenate([e for e, _ in specs])
        ).reshape(len(specs), n, -1)
        keys: list = [("cvd", w) for w in second_windows]
        keys += [(lag, w) for w in slope_windows for lag in (1, 2)]
        return dict(zip([*keys, "vwap", "large", "whale", "partial"], sums))

    def _cvd_units(self, times: np.ndarray, windows: list[int], sums: dict) -> dict[int, np.ndarray]:
        """CVD units of every window at each time, in ``windows`` order: second windows from the
        second sums, longer ones from whole minutes of the minute ring plus the current minute's seconds."""
        p = self.params
        second_windows = [w for w in windows if w <= p.second_window_limit_ms]
        cvd_now: dict[int, np.ndarray] = {w: sums[("cvd", w)][:, 0] - sums[("cvd", w)][:, 1] for w in second_windows}
        minute_windows = [w for w in windows if w > p.second_window_limit_ms]
        if minute_windows:
            n = len(times)
            hi_minute = (times - 1) // MINUTE_MS
            m_ends = np.concatenate([hi_minute] * len(minute_windows))
            m_starts = np.concatenate([hi_minute - w // MINUTE_MS + 1 for w in minute_windows])
            full = ring_window_sums(self.minutes._values, self.minutes.head, m_starts, m_ends)
            full = full.reshape(len(minute_windows), n, -1)  # whole minutes before the current one
            part = sums["partial"]
            for k, w in enumerate(minute_windows):
                cvd_now[w] = (full[k, :, 0] + part[:, 0]) - (full[k, :, 1] + part[:, 1])
        return {w: cvd_now[w] for w in windows}
