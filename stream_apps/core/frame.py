"""``FeatureFrame``: the indicator values of one symbol at many evaluation times, as columns.

Why columns: an evaluation is a few dozen numbers, and building a Python object (and a dict of its
inputs) for every one of them cost more than the numbers themselves: about 300 µs per evaluation of
three strategies, so a replay was bound by evaluations, not trades. The engine computes a
frame for all the evaluation times of a segment at once (``SymbolState.snapshot_frame``), scores it
per strategy with array operations (``scoring.score_frame``) and keeps feature records as columns
(``records.FeatureTable``) that become dicts only where a consumer wants dicts (the Faust worker's
Avro encoder). ``Features`` (one row) stays the value that tests and the single-snapshot API use; a
frame converts to and from it, and both build the ``inputs`` map with ``features.input_rows``, so
there is one implementation of every number.

Encoding: every scalar field of ``Features`` is a float64 column; ``NaN`` means ``None`` (not
available). Values that are present are finite (inputs are validated when applied), so NaN is free to
mean "missing". Integer fields (times, counts) are exact in float64 (below 2**53).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .features import DETAIL_NEEDED_MS, SCALAR_FIELDS, Features, duration_name, input_rows

__all__ = ["SCALAR_FIELDS", "FeatureFrame", "distinct_sorted", "duration_name", "exact_ratio"]
_INT_FIELDS = frozenset({"last_trade_ms", "coverage_start_ms", "atr_bars", "qty_samples", "approx_until_ms"})


@dataclass(slots=True)
class FeatureFrame:
    """``Features`` of one (exchange, symbol) at ``len(time_ms)`` times (see the module docstring)."""

    exchange: str
    symbol: str
    time_ms: np.ndarray  # int64
    values: dict[str, np.ndarray]  # every name of SCALAR_FIELDS -> float64 (NaN = None)
    cvd: dict[int, np.ndarray]  # window_ms -> CVD
    cvd_slope: dict[int, np.ndarray]
    cvd_accel: dict[int, np.ndarray]

    def __len__(self) -> int:
        return len(self.time_ms)

    # -- derived columns ------------------------------------------------------------------------
    @property
    def atr_price_ratio(self) -> np.ndarray:
        """``Features.atr_price_ratio``: ATR / last price, NaN without ATR or price (or a zero price)."""
        atr, price = self.values["atr"], self.values["last_price"]
        ok = ~np.isnan(atr) & ~np.isnan(price) & (price != 0)
        out = np.full(len(self), np.nan)
        np.divide(atr, price, out=out, where=ok)
        return out

    @property
    def large_net_qty_15m(self) -> np.ndarray:
        return self.values["large_buy_qty_15m"] - self.values["large_sell_qty_15m"]

    def covers(self, window_ms: int) -> np.ndarray:
        """``Features.covers`` per row."""
        start, approx = self.values["coverage_start_ms"], self.values["approx_until_ms"]
        with np.errstate(invalid="ignore"):
            return (
                ~np.isnan(start)
                & (start <= self.time_ms - window_ms)
                & (np.isnan(approx) | (approx <= self.time_ms - DETAIL_NEEDED_MS))
            )

    # -- rows -----------------------------------------------------------------------------------
    def take(self, index: np.ndarray) -> FeatureFrame:
        return FeatureFrame(
            self.exchange,
            self.symbol,
            self.time_ms[index],
            {k: v[index] for k, v in self.values.items()},
            {w: v[index] for w, v in self.cvd.items()},
            {w: v[index] for w, v in self.cvd_slope.items()},
            {w: v[index] for w, v in self.cvd_accel.items()},
        )

    def row(self, i: int) -> Features:
        scalars: dict[str, Any] = {}
        for name in SCALAR_FIELDS:
            value = float(self.values[name][i])
            if value != value:  # NaN
                scalars[name] = None
            else:
                scalars[name] = int(value) if name in _INT_FIELDS else value
        return Features(
            exchange=self.exchange,
            symbol=self.symbol,
            time_ms=int(self.time_ms[i]),
            cvd=tuple((w, float(v[i])) for w, v in self.cvd.items()),
            cvd_slope=tuple((w, float(v[i])) for w, v in self.cvd_slope.items()),
            cvd_accel=tuple((w, float(v[i])) for w, v in self.cvd_accel.items()),
            **scalars,
        )

    @classmethod
    def from_features(cls, rows: list[Features]) -> FeatureFrame:
        first = rows[0]
        values = {}
        for name in SCALAR_FIELDS:
            column = [getattr(r, name) for r in rows]
            values[name] = np.array([np.nan if v is None else v for v in column], dtype=np.float64)

        def pairs(attr: str) -> dict[int, np.ndarray]:
            return {
                w: np.array([dict(getattr(r, attr))[w] for r in rows], dtype=np.float64)
                for w, _ in getattr(first, attr)
            }

        return cls(
            first.exchange,
            first.symbol,
            np.array([r.time_ms for r in rows], dtype=np.int64),
            values,
            pairs("cvd"),
            pairs("cvd_slope"),
            pairs("cvd_accel"),
        )

    def input_rows(self, index: np.ndarray | None = None) -> list[dict[str, float]]:
        """``Features.inputs()`` of the rows ``index`` (all by default): every available number by name."""
        if index is None:
            index = np.arange(len(self))

        def lists(columns: dict) -> dict:
            return {key: column[index].tolist() for key, column in columns.items()}

        return input_rows(
            lists(self.values),
            lists(self.cvd),
            lists(self.cvd_slope),
            lists(self.cvd_accel),
            self.atr_price_ratio[index].tolist(),
            len(index),
        )


def distinct_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values of an already sorted array (``np.unique`` without its sort or hash table:
    numpy 2's hash-based unique took half of a replay's time on ten thousand trade times)."""
    if len(values) < 2:
        return values.copy()
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def exact_ratio(numerator: np.ndarray, denominator: int | np.ndarray) -> np.ndarray:
    """``numerator / denominator`` for int64 arrays, rounded like Python's ``int / int``.

    numpy converts each int64 to float64 before dividing; that is exact (and the quotient correctly
    rounded, as Python's) while both are below 2**53 in magnitude. Larger values are rare (24 h of
    XRP volume in 1e-8 units can pass it) and are divided as Python ints, so no number depends on the
    path that computed it.
    """
    out = numerator / denominator
    if isinstance(denominator, int):
        if len(numerator) and max(int(numerator.max()), -int(numerator.min())) >= _EXACT:
            for i in np.flatnonzero(np.abs(numerator) >= _EXACT).tolist():
                out[i] = int(numerator[i]) / denominator
        return out
    big = (np.abs(numerator) >= _EXACT) | (np.abs(denominator) >= _EXACT)
    for i in np.flatnonzero(big).tolist():
        out[i] = int(numerator[i]) / int(denominator[i])
    return out


_EXACT = 2**53
