"""VPIN, Kyle's lambda and Amihud illiquidity of one symbol, updated trade by trade.

What each measures (definitions the tests recompute independently):

- **VPIN** (volume-synchronised probability of informed trading; Easley, López de Prado, O'Hara
  2012, "Flow toxicity and liquidity in a high-frequency world"): the traded volume is cut into
  buckets of equal volume ``V``; each bucket's volume is split into bought and sold; VPIN =
  Σ|V_buy − V_sell| / (n·V) over the last ``n`` completed buckets (missing until ``n`` exist). A trade
  (or bar) that overflows a bucket is split: the part that fills the bucket closes it, the rest goes
  on into the next bucket(s), with the same buy fraction. ``V`` is in quote volume by default
  (``vpin_volume_unit="quote"``, price × qty, in units of 1e-6) so one bucket size means the same
  across symbols whose prices differ by five orders of magnitude; ``"base"`` (qty, units of 1e-8) is
  the paper's choice (shares). Integer units make "a trade exactly fills a bucket" exact.
  Classification (``vpin_classification``):

  * ``"bvc"`` — bulk-volume classification, the paper's: per time bar of ``bar_ms``, buy fraction =
    Φ(ΔP / σ_ΔP), ΔP = the bar's close − the previous bar's close, σ_ΔP = the sample standard
    deviation (ddof 1) of the ΔP of the previous ``bvc_sigma_bars`` bars (the current bar's ΔP is
    not in its own σ, so the rule is causal; at least 2 are needed: bars before that are warm-up
    and not bucketed; σ = 0 takes Φ's limit: 1, ½ or 0). The bar's whole volume enters the buckets
    when the bar closes.
  * ``"aggressor"`` — the exchange's aggressor side (Binance ``m`` = buyer is maker = a sell): each
    trade wholly bought or sold. Exact on venues that report it.
  * ``"tick"`` — the tick rule: a trade above the previous price is a buy, below a sell, at the same
    price the previous trade's side (the first trades, before any price change, count half and half).

- **Kyle's lambda** (price impact, Kyle 1985): the OLS slope (with intercept) of ΔP on signed
  volume over the last ``kyle_window_bars`` time bars: ΔP = close − previous close (quote
  currency), signed volume = aggressor-bought − aggressor-sold base quantity in the bar. Unit: quote
  currency per base unit; higher = thinner market. Missing until the window is full, or when every
  bar in it has the same signed volume.
- **Amihud illiquidity** (Amihud 2002): the mean over the last ``amihud_window_bars`` bars of
  |close / previous close − 1| / quote volume of the bar, × 1e6 (return per million quote
  currency traded). Missing until the window is full.

Bars: time bars ``[k·bar_ms, (k+1)·bar_ms)`` that contain trades (a minute without trades is no bar:
no price change and no volume to attribute). The first bar only sets the reference close. A bar
closes at the first trade of a later bar or at ``advance_to(t)`` with ``t`` at or after its end; its
values hold from its end on (see ``kernels`` for the log and its keys).

Memory is bounded by the parameters (rings of n, K, N and M entries), the state is plain data
(``to_dict``/``from_dict``) and the same trades in the same order give the same numbers whatever the
batching (the loop is compiled and sequential; ``kernels``'s docstring says why).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..units import notional_to_units, qty_to_units
from . import kernels as k
from .params import _MODES, _SCALES, DETECTOR_FIELDS, DetectorParams  # noqa: F401 (re-exported)

__all__ = ["DETECTOR_FIELDS", "DetectorLog", "DetectorParams", "MicrostructureDetectors"]


@dataclass
class DetectorLog:
    """Values after every change: ``values[i]`` (vpin, kyle_lambda, amihud; NaN = missing) holds for
    evaluation times ``t > keys[i]``. Keys never decrease."""

    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    values: np.ndarray = field(default_factory=lambda: np.empty((0, 3), dtype=np.float64))

    def __len__(self) -> int:
        return len(self.keys)

    def extend(self, other: DetectorLog) -> None:
        if len(other):
            if not len(self):  # an empty log takes the other's width (the book detectors log 7 values)
                self.keys, self.values = other.keys, other.values
                return
            self.keys = np.concatenate((self.keys, other.keys))
            self.values = np.concatenate((self.values, other.values))

    def at(self, times: np.ndarray, before: tuple[float, ...]) -> np.ndarray:
        """The values each of ``times`` sees (rows x len(before)): the last entry with key < t, else
        ``before``."""
        times = np.asarray(times, dtype=np.int64)
        if len(self.keys):
            index = np.searchsorted(self.keys, times, side="left") - 1
            if len(index) and index.min() >= 0 and self.values.shape[1:] == (len(before),):
                return self.values[index].astype(np.float64, copy=False)  # every time after an entry: one take
        out = np.empty((len(times), len(before)), dtype=np.float64)
        out[:] = before
        if len(self.keys):
            has = index >= 0
            out[has] = self.values[index[has]]
        return out


class MicrostructureDetectors:
    """VPIN, Kyle's lambda and Amihud of one symbol: feed trades in time order, read ``values``."""

    def __init__(self, params: DetectorParams | None = None) -> None:
        self.params = params or DetectorParams()
        p = self.params
        self._config = (p.bar_ms, p.bucket_units, p.mode)  # the kernel's scalar arguments, computed once
        self._ints = np.zeros(k.N_INTS, dtype=np.int64)
        self._ints[k.I_BAR] = -1
        self._ints[k.I_KEY] = np.iinfo(np.int64).min
        self._floats = np.zeros(k.N_FLOATS, dtype=np.float64)
        self._floats[[k.F_PREV_CLOSE, k.F_LAST_PRICE, k.F_VPIN, k.F_KYLE, k.F_AMIHUD]] = np.nan
        self._imbalances = np.zeros(p.vpin_buckets, dtype=np.float64)
        self._changes = np.zeros(p.bvc_sigma_bars, dtype=np.float64)
        self._kyle = np.zeros((p.kyle_window_bars, 2), dtype=np.float64)
        self._amihud = np.zeros(p.amihud_window_bars, dtype=np.float64)

    # -- updates ----------------------------------------------------------------------------------
    def volume_units(self, prices: np.ndarray, qtys: np.ndarray) -> np.ndarray:
        """Each trade's VPIN volume in integer units (quote: 1e-6, base: 1e-8)."""
        if self.params.vpin_volume_unit == "base":
            return qty_to_units(qtys)
        return notional_to_units(np.asarray(prices, dtype=np.float64) * np.asarray(qtys, dtype=np.float64))

    def update(
        self,
        time_ms: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        taker_sell: np.ndarray,
        units: np.ndarray | None = None,
    ) -> DetectorLog:
        """Apply trades (time order; valid positive prices and quantities) and return the log of the
        values they changed. ``units``: each trade's VPIN volume in integer units, when the caller
        already has them (the engine does); computed with ``volume_units`` otherwise."""
        times = np.ascontiguousarray(time_ms, dtype=np.int64)
        n = len(times)
        if n == 0:
            return DetectorLog()
        prices = np.ascontiguousarray(price, dtype=np.float64)
        qtys = np.ascontiguousarray(qty, dtype=np.float64)
        sells = np.ascontiguousarray(taker_sell, dtype=np.bool_)
        units = self.volume_units(prices, qtys) if units is None else np.ascontiguousarray(units, dtype=np.int64)
        keys = np.empty(2 * n, dtype=np.int64)
        values = np.empty((2 * n, 3), dtype=np.float64)
        written = k.apply_trades(
            times,
            prices,
            qtys,
            sells,
            units,
            *self._config,
            self._ints,
            self._floats,
            self._imbalances,
            self._changes,
            self._kyle,
            self._amihud,
            keys,
            values,
        )
        if written == 0:
            return DetectorLog()
        return DetectorLog(keys[:written].copy(), values[:written].copy())

    def update_batch(self, batch: Any) -> DetectorLog:
        """``update`` with a ``TradeBatch`` (its trades already accepted: ordered, valid)."""
        return self.update(batch.time_ms, batch.price, batch.qty, batch.taker_sell)

    def advance_to(self, now_ms: int) -> DetectorLog:
        """Close the open bar if it ended by ``now_ms`` (no later trade has to arrive first)."""
        if self._ints[k.I_BAR] < 0 or (self._ints[k.I_BAR] + 1) * self.params.bar_ms > now_ms:
            return DetectorLog()  # no bar to close: spare the compiled call
        keys = np.empty(1, dtype=np.int64)
        values = np.empty((1, 3), dtype=np.float64)
        written = k.advance_to(
            int(now_ms),
            *self._config,
            self._ints,
            self._floats,
            self._imbalances,
            self._changes,
            self._kyle,
            self._amihud,
            keys,
            values,
        )
        return DetectorLog(keys[:written], values[:written])

    # -- reads ------------------------------------------------------------------------------------
    @property
    def values(self) -> tuple[float, float, float]:
        """(vpin, kyle_lambda, amihud) now; NaN = not available yet."""
        f = self._floats
        return float(f[k.F_VPIN]), float(f[k.F_KYLE]), float(f[k.F_AMIHUD])

    @property
    def completed_buckets(self) -> int:
        return int(self._ints[k.I_BUCKETS])

    def bucket_imbalances(self) -> np.ndarray:
        """|V_buy - V_sell| (volume units) of the last min(n, completed) buckets, oldest first."""
        count = self.completed_buckets
        size = len(self._imbalances)
        return np.array([self._imbalances[c % size] for c in range(max(count - size, 0), count)])

    @property
    def bucket_fill(self) -> tuple[int, float, float]:
        """The bucket being filled: (units in it, bought units, sold units)."""
        return int(self._ints[k.I_FILL]), float(self._floats[k.F_BUCKET_BUY]), float(self._floats[k.F_BUCKET_SELL])

    @property
    def capacity_cells(self) -> int:
        """Allocated cells: fixed by the parameters, whatever the number of trades."""
        return (
            self._ints.size
            + self._floats.size
            + self._imbalances.size
            + self._changes.size
            + self._kyle.size
            + self._amihud.size
        )

    # -- plain-data form --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "params": asdict(self.params),
            "ints": self._ints.tolist(),
            "floats": [None if v != v else v for v in self._floats.tolist()],
            "imbalances": self._imbalances.tolist(),
            "changes": self._changes.tolist(),
            "kyle": self._kyle.tolist(),
            "amihud": self._amihud.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MicrostructureDetectors:
        out = cls(DetectorParams(**data["params"]))
        out._ints[:] = data["ints"]
        out._floats[:] = [np.nan if v is None else v for v in data["floats"]]
        out._imbalances[:] = data["imbalances"]
        out._changes[:] = data["changes"]
        out._kyle[:] = np.asarray(data["kyle"], dtype=np.float64).reshape(out._kyle.shape)
        out._amihud[:] = data["amihud"]
        return out
