"""CVD–price divergence, open-interest spikes and liquidation clusters/cascades of one symbol.

What each measures (the tests recompute them by hand on built paths):

- **CVD–price divergence** over ``divergence_bars`` time bars of ``bar_ms`` (the detectors' bar). Per
  bar: its highest and lowest trade price and the highest and lowest cumulative CVD (taker-bought −
  taker-sold base quantity, summed since the detector started) reached after any of its trades. When
  bar ``k`` closes it is compared with the closed bars whose ids are in ``[k − N, k − 1]`` (the
  previous ``N`` bars' time; bars without trades are absent):

  * **bearish** (``cvd_divergence = −1``): the bar's price high is above every reference high while its
    CVD high is not above the highest reference CVD high (price makes a new high, CVD does not);
    ``cvd_divergence_price = high / reference high − 1``, ``cvd_divergence_cvd = reference CVD high −
    bar CVD high`` (base units, ≥ 0: how far CVD stayed below its high);
  * **bullish** (``+1``): the price low is below every reference low while the CVD low is not below
    the lowest reference CVD low; ``price = 1 − low / reference low``, ``cvd = bar CVD low −
    reference CVD low``;
  * otherwise (neither, or both in one wide bar) ``0`` with magnitudes 0; missing (NaN) when no bar of
    the previous ``N`` bars' time has trades. The values hold from the bar's end until the next bar
    with trades closes.

- **Open-interest spikes**: open interest of kind ``oi_kind`` (``open_interest_hist``: Binance's 5-minute
  history, or ``open_interest``: the polled current value) sampled at the *first* data point of each
  ``oi_period_ms`` period of its data time (``value_time_ms // period``); later points of the same
  period and older points are ignored. ``oi_change_5m`` = the relative change between the samples of
  two consecutive periods (a period without a point breaks the chain: no change across it);
  ``oi_spike_z`` = (change − mean) / sample standard deviation (ddof 1) of the previous
  ``oi_window`` changes (the change is not in its own statistics, so one spike stands out; missing
  until ``oi_window`` changes precede it, or when they are all equal; changes before a break still
  count). Both hold from the receive time of the point that made them (evaluations after it) and
  read as missing once that point's data time is more than ``oi_max_age_ms`` before the evaluation.

- **Liquidations** (``md.liquidations``, by the side that was liquidated): counts and USD per side over
  ``[t − liq_window_ms, t)`` (``liq_long_count``, ``liq_short_count``, ``liq_long_usd``,
  ``liq_short_usd``), and a **cascade** flag per side (``liq_cascade_long``, ``liq_cascade_short``:
  1.0 or 0.0) when within ``[t − cascade_window_ms, t)`` that side had at least ``cascade_min_count``
  liquidations or at least ``cascade_min_usd`` USD (either threshold may be absent; at least one is
  set; reaching it counts). **Lower bounds**: Binance's ``forceOrder`` stream sends at most one
  liquidation per symbol per second (the latest), so counts and USD are at most what happened.
  Liquidations land in their own second of a ring (a late one counts where it belongs, as the
  engine's 5-minute sums); a window is whole seconds, the ``w / 1000`` seconds up to the one holding
  ``t − 1 ms`` (exactly ``[t − w, t)`` at the engine's evaluation times, which are whole seconds).
  USD is summed in integer units of 1e-6.

Memory is fixed by the parameters; the state is plain data; the same inputs in the same order give
the same values whatever the batching (the divergence loop is compiled and sequential, CVD is summed
in integer units; OI points are a few per minute and handled one by one; liquidations are integer
sums in a ring).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..events import IndicatorUpdate, LiquidationEvent
from ..market_records import liquidation_columns
from ..params import SECOND_MS
from ..ring import BucketRing
from ..units import NOTIONAL_SCALE, QTY_SCALE
from . import flow_kernels as fk
from .microstructure import DetectorLog
from .params import (  # noqa: F401 (re-exported)
    DIVERGENCE_FIELDS,
    FLOW_FIELDS,
    LIQUIDATION_FIELDS,
    OI_FIELDS,
    OI_KINDS,
    FlowParams,
)

__all__ = [
    "DIVERGENCE_FIELDS",
    "FLOW_FIELDS",
    "LIQUIDATION_FIELDS",
    "OI_FIELDS",
    "FlowDetectors",
    "FlowParams",
    "OiLog",
]

_LIQ_RING_FIELDS = ("long_n", "short_n", "long_usd", "short_usd")


@dataclass
class OiLog:
    """OI changes of a run of updates: ``values[i]`` (change, z, data time of the sample) holds for
    evaluation times ``t > keys[i]`` (the receive time); ``before`` is what held before them."""

    before: tuple[float, float, float]
    keys: list[int] = field(default_factory=list)
    values: list[tuple[float, float, float]] = field(default_factory=list)

    def at(self, times: np.ndarray) -> np.ndarray:
        out = np.empty((len(times), 3), dtype=np.float64)
        out[:] = self.before
        if self.keys:
            index = np.searchsorted(np.asarray(self.keys, dtype=np.int64), times, side="left") - 1
            has = index >= 0
            out[has] = np.asarray(self.values, dtype=np.float64)[index[has]]
        return out


class FlowDetectors:
    """Divergence (trades), OI spikes (indicators) and liquidation windows of one symbol."""

    def __init__(self, params: FlowParams) -> None:
        self.params = params
        p = params
        size = p.divergence_bars or 1
        self._d_ints = np.zeros(fk.N_DIV_INTS, dtype=np.int64)
        self._d_ints[fk.D_BAR] = -1
        self._d_ints[fk.D_KEY] = np.iinfo(np.int64).min
        self._d_floats = np.full(fk.N_DIV_FLOATS, np.nan)
        self._d_ids = np.full(size, -1, dtype=np.int64)
        self._d_prices = np.zeros((size, 2), dtype=np.float64)
        self._d_cvds = np.zeros((size, 2), dtype=np.int64)
        # OI: the last period sampled and its value, the changes ring, the current (change, z, data time)
        self.oi_period = -1
        self.oi_sample = math.nan
        self.oi_changes = np.zeros(p.oi_window or 1, dtype=np.float64)
        self.oi_count = 0
        self.oi_current: tuple[float, float, float] = (math.nan, math.nan, math.nan)
        self.liquidations = BucketRing(SECOND_MS, p.liq_ring_seconds, _LIQ_RING_FIELDS)
        on = p.liq_window_ms is not None
        self._liq_read = np.array(
            [  # ``flow_kernels.flow_values``' liquidation parameters
                on,
                (p.liq_window_ms or 0) // SECOND_MS,
                p.cascade_window_ms // SECOND_MS,
                -1 if p.cascade_min_count is None else p.cascade_min_count,
                -1 if p.cascade_min_usd is None else int(round(p.cascade_min_usd * NOTIONAL_SCALE)),
            ],
            dtype=np.int64,
        )

    # -- divergence (trades) ----------------------------------------------------------------------
    @property
    def divergence_on(self) -> bool:
        return self.params.divergence_bars is not None

    def update(self, times: np.ndarray, prices: np.ndarray, qty_units: np.ndarray, sells: np.ndarray) -> DetectorLog:
        """Apply accepted trades (time order; ``qty_units``: base quantity in 1e-8 units)."""
        n = len(times)
        if n == 0 or not self.divergence_on:
            return DetectorLog()
        keys = np.empty(n, dtype=np.int64)
        values = np.empty((n, 3), dtype=np.float64)
        written = fk.divergence_trades(
            np.ascontiguousarray(times, dtype=np.int64),
            np.ascontiguousarray(prices, dtype=np.float64),
            np.ascontiguousarray(qty_units, dtype=np.int64),
            np.ascontiguousarray(sells, dtype=np.bool_),
            self.params.bar_ms,
            QTY_SCALE,
            self._d_ints,
            self._d_floats,
            self._d_ids,
            self._d_prices,
            self._d_cvds,
            keys,
            values,
        )
        if written == 0:
            return DetectorLog()
        return DetectorLog(keys[:written].copy(), values[:written].copy())

    def advance_to(self, now_ms: int) -> DetectorLog:
        """Close the open divergence bar if it ended by ``now_ms``."""
        bar = self._d_ints[fk.D_BAR]
        if not self.divergence_on or bar < 0 or (bar + 1) * self.params.bar_ms > now_ms:
            return DetectorLog()
        keys = np.empty(1, dtype=np.int64)
        values = np.empty((1, 3), dtype=np.float64)
        written = fk.divergence_advance(
            int(now_ms),
            self.params.bar_ms,
            QTY_SCALE,
            self._d_ints,
            self._d_floats,
            self._d_ids,
            self._d_prices,
            self._d_cvds,
            keys,
            values,
        )
        return DetectorLog(keys[:written], values[:written])

    @property
    def divergence(self) -> tuple[float, float, float]:
        """(sign, price magnitude, CVD magnitude) now; NaN = not available (or off)."""
        f = self._d_floats
        return float(f[fk.DF_SIGN]), float(f[fk.DF_PRICE]), float(f[fk.DF_CVD])

    # -- open interest and liquidations (other inputs) -----------------------------------------------
    def apply_events(self, events: list) -> OiLog:
        """Apply a time-ordered run of liquidations and indicator updates; return the OI log."""
        log = OiLog(self.oi_current)
        liquidations = [e for e in events if isinstance(e, LiquidationEvent)]
        if liquidations and self.params.liq_window_ms is not None:
            self.apply_liquidations(liquidations)
        if self.params.oi_window is not None:
            for event in events:
                if isinstance(event, IndicatorUpdate) and event.kind == self.params.oi_kind:
                    if self.apply_oi(event):
                        if log.keys and log.keys[-1] == event.time_ms:
                            log.values[-1] = self.oi_current
                        else:
                            log.keys.append(event.time_ms)
                            log.values.append(self.oi_current)
        return log

    def apply_oi(self, update: IndicatorUpdate) -> bool:
        """Sample the first point of a new period; True when the current values changed."""
        p = self.params
        period = update.value_time_ms // p.oi_period_ms
        if period <= self.oi_period or not (math.isfinite(update.value) and update.value > 0):
            return False
        previous_period, previous = self.oi_period, self.oi_sample
        self.oi_period, self.oi_sample = period, float(update.value)
        if period != previous_period + 1 or not previous > 0:
            self.oi_current = (math.nan, math.nan, math.nan)  # a missing period breaks the chain
            return True
        change = update.value / previous - 1.0
        size = len(self.oi_changes)
        z = math.nan
        if self.oi_count >= size:
            ring = np.roll(self.oi_changes, -(self.oi_count % size))  # oldest first
            sigma = float(np.std(ring, ddof=1))
            if sigma > 0.0:
                z = (change - float(np.mean(ring))) / sigma
        self.oi_changes[self.oi_count % size] = change
        self.oi_count += 1
        self.oi_current = (change, z, float(update.value_time_ms))
        return True

    def apply_liquidations(self, events: list[LiquidationEvent]) -> None:
        """Count and sum liquidations into their seconds (invalid ones ignored: ``MarketRecords``
        counts them)."""
        ids, units, is_long = liquidation_columns(events)
        if not len(ids):
            return
        rows = np.zeros((len(ids), 4), dtype=np.int64)
        rows[:, 0] = is_long
        rows[:, 1] = ~is_long
        rows[is_long, 2] = units[is_long]
        rows[~is_long, 3] = units[~is_long]
        self.liquidations.add(ids, rows)

    # -- reads ------------------------------------------------------------------------------------
    def values_many(
        self, times: np.ndarray, divergence: np.ndarray | None = None, oi: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Every flow field at ``times`` (NaN where off or missing). ``divergence``/``oi``: what each
        time saw (rows x 3, from the segment's logs); the current values otherwise."""
        n = len(times)
        if divergence is None:
            divergence = np.empty((n, 3))
            divergence[:] = self.divergence
        if oi is None:
            oi = np.empty((n, 3))
            oi[:] = self.oi_current
        out = np.empty((len(FLOW_FIELDS), n))
        fk.flow_values(
            np.ascontiguousarray(times, dtype=np.int64),
            np.ascontiguousarray(divergence, dtype=np.float64),
            np.ascontiguousarray(oi, dtype=np.float64),
            self.params.oi_max_age_ms,
            self.liquidations._values,
            self.liquidations.head,
            self._liq_read,
            out,
        )
        return dict(zip(FLOW_FIELDS, out))

    @property
    def capacity_cells(self) -> int:
        return (
            self._d_ints.size
            + self._d_floats.size
            + self._d_ids.size
            + self._d_prices.size
            + self._d_cvds.size
            + self.oi_changes.size
            + 6
            + self.liquidations.capacity_cells
        )

    # -- plain-data form --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        nan_free = lambda values: [None if v != v else v for v in values]  # noqa: E731
        return {
            "params": asdict(self.params),
            "d_ints": self._d_ints.tolist(),
            "d_floats": nan_free(self._d_floats.tolist()),
            "d_ids": self._d_ids.tolist(),
            "d_prices": self._d_prices.tolist(),
            "d_cvds": self._d_cvds.tolist(),
            "oi_period": self.oi_period,
            "oi_sample": None if self.oi_sample != self.oi_sample else self.oi_sample,
            "oi_changes": self.oi_changes.tolist(),
            "oi_count": self.oi_count,
            "oi_current": nan_free(list(self.oi_current)),
            "liquidations": self.liquidations.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FlowDetectors:
        out = cls(FlowParams(**data["params"]))
        out._d_ints[:] = data["d_ints"]
        out._d_floats[:] = [np.nan if v is None else v for v in data["d_floats"]]
        out._d_ids[:] = data["d_ids"]
        out._d_prices[:] = np.asarray(data["d_prices"], dtype=np.float64).reshape(out._d_prices.shape)
        out._d_cvds[:] = np.asarray(data["d_cvds"], dtype=np.int64).reshape(out._d_cvds.shape)
        out.oi_period = data["oi_period"]
        out.oi_sample = math.nan if data["oi_sample"] is None else data["oi_sample"]
        out.oi_changes[:] = data["oi_changes"]
        out.oi_count = data["oi_count"]
        out.oi_current = tuple(math.nan if v is None else v for v in data["oi_current"])  # type: ignore[assignment]
        out.liquidations = BucketRing.from_dict(data["liquidations"])
        return out
