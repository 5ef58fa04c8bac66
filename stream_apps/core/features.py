"""``Features``: an immutable snapshot of one symbol's indicators at one evaluation time.

Why immutable: the old engine built one mutable snapshot per tick and shared it across strategies,
and building it had side effects (CVD slope memory, ATR history), so a second caller saw zeroed
slope/acceleration. Here a snapshot is a frozen value computed by a pure read of the state; every
strategy reads the same value and none can change what another sees. ``None`` means "not available"
(no data yet, or the source is stale); scoring turns that into a zero score with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache

from .durations import format_duration_ms

# after a start from minute bars (``approx_until_ms``), how much of trades an evaluation needs before it is
# valid: the longest window read from second buckets (the 1-hour CVD) and its slope's two 15-s steps
DETAIL_NEEDED_MS = 3_600_000 + 2 * 15_000


@dataclass(frozen=True, slots=True)
class Features:
    """Indicator values of one symbol at ``time_ms`` (computed from data before ``time_ms``)."""

    exchange: str
    symbol: str
    time_ms: int
    last_price: float | None
    last_trade_ms: int | None
    coverage_start_ms: int | None
    cvd: tuple[tuple[int, float], ...]  # (window_ms, taker buy - taker sell qty)
    cvd_slope: tuple[tuple[int, float], ...]  # (window_ms, CVD(t) - CVD(t - step))
    cvd_accel: tuple[tuple[int, float], ...]  # (window_ms, slope(t) - slope(t - step))
    vwap_30m: float | None
    volume_30m: float
    atr: float | None
    atr_percentile: float
    atr_bars: int
    p95_qty: float
    p99_qty: float
    qty_samples: int
    large_buy_qty_15m: float
    large_sell_qty_15m: float
    whale_buy_usd_15m: float
    whale_sell_usd_15m: float
    whale_ratio_15m: float
    obi: float | None = None
    mark_price: float | None = None
    index_price: float | None = None
    funding_rate: float | None = None
    open_interest: float | None = None
    oi_change: float | None = None
    long_short_ratio: float | None = None
    top_trader_long_share: float | None = None
    taker_buy_sell_ratio: float | None = None
    coinbase_premium: float | None = None
    spot_perp_divergence: float | None = None
    liq_long_usd_5m: float = 0.0
    liq_short_usd_5m: float = 0.0
    vpin: float | None = None  # the detectors (``core.detectors``): None when off or not yet available
    kyle_lambda: float | None = None
    amihud: float | None = None
    # the flow detectors (``core.detectors.flow``): None when off or not yet available
    cvd_divergence: float | None = None  # -1 bearish, +1 bullish, 0 none
    cvd_divergence_price: float | None = None
    cvd_divergence_cvd: float | None = None
    oi_change_5m: float | None = None
    oi_spike_z: float | None = None
    liq_long_count: float | None = None
    liq_short_count: float | None = None
    liq_long_usd: float | None = None
    liq_short_usd: float | None = None
    liq_cascade_long: float | None = None
    liq_cascade_short: float | None = None
    # the book detectors (``core.detectors.book``): None when off, missing or no wall on the side
    wall_bid_distance_bps: float | None = None
    wall_bid_usd: float | None = None
    wall_bid_age_s: float | None = None
    wall_ask_distance_bps: float | None = None
    wall_ask_usd: float | None = None
    wall_ask_age_s: float | None = None
    wall_pulled_bid: float | None = None
    wall_pulled_ask: float | None = None
    wall_filled_bid: float | None = None
    wall_filled_ask: float | None = None
    iceberg_refills_bid: float | None = None
    iceberg_refills_ask: float | None = None
    iceberg_usd_bid: float | None = None
    iceberg_usd_ask: float | None = None
    # the warm start's approximation: before this time minute bars (1m klines with the taker-buy
    # volume) stood in for trades, so what needs each trade (size quantiles, large and whale flows, second
    # buckets) starts here; CVD and volume of the minute windows, bars and ATR are exact to the minute.
    # None: every minute the state holds came from trades
    approx_until_ms: int | None = None

    # -- accessors ----------------------------------------------------------------------------
    def cvd_at(self, window_ms: int) -> float:
        return _lookup(self.cvd, window_ms, "cvd")

    def slope_at(self, window_ms: int) -> float:
        return _lookup(self.cvd_slope, window_ms, "cvd_slope")

    def accel_at(self, window_ms: int) -> float:
        return _lookup(self.cvd_accel, window_ms, "cvd_accel")

    @property
    def atr_price_ratio(self) -> float | None:
        if self.atr is None or not self.last_price:
            return None
        return self.atr / self.last_price

    @property
    def large_net_qty_15m(self) -> float:
        return self.large_buy_qty_15m - self.large_sell_qty_15m

    def covers(self, window_ms: int) -> bool:
        """True when uninterrupted trade data covers ``[time_ms - window_ms, time_ms)``; after a start from
        minute bars also the trades themselves cover what the second buckets read (``DETAIL_NEEDED_MS``)."""
        return (
            self.coverage_start_ms is not None
            and self.coverage_start_ms <= self.time_ms - window_ms
            and (self.approx_until_ms is None or self.approx_until_ms <= self.time_ms - DETAIL_NEEDED_MS)
        )

    def inputs(self) -> dict[str, float]:
        """Every available number by name (the ``inputs`` map of a feature record)."""
        ratio = self.atr_price_ratio
        scalars = {name: [math.nan if (v := getattr(self, name)) is None else float(v)] for name in SCALAR_FIELDS}
        return input_rows(
            scalars,
            {w: [v] for w, v in self.cvd},
            {w: [v] for w, v in self.cvd_slope},
            {w: [v] for w, v in self.cvd_accel},
            [math.nan if ratio is None else ratio],
            1,
        )[0]


_NAMED = ("exchange", "symbol", "time_ms", "cvd", "cvd_slope", "cvd_accel")
SCALAR_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Features) if f.name not in _NAMED)
_ALWAYS = frozenset(
    {
        "volume_30m",
        "atr_percentile",
        "atr_bars",
        "p95_qty",
        "p99_qty",
        "qty_samples",
        "large_buy_qty_15m",
        "large_sell_qty_15m",
        "whale_buy_usd_15m",
        "whale_sell_usd_15m",
        "whale_ratio_15m",
        "liq_long_usd_5m",
        "liq_short_usd_5m",
    }
)  # never None


@lru_cache(maxsize=256)
def duration_name(window_ms: int) -> str:
    return format_duration_ms(window_ms)


def input_rows(
    scalars: Mapping[str, Sequence[float]],
    cvd: Mapping[int, Sequence[float]],
    slope: Mapping[int, Sequence[float]],
    accel: Mapping[int, Sequence[float]],
    atr_price_ratio: Sequence[float],
    n: int,
) -> list[dict[str, float]]:
    """The ``inputs`` map of ``n`` snapshots given as columns (NaN = not available): the scalar
    fields in declaration order, then ``cvd_<w>``, ``cvd_slope_<w>``, ``cvd_accel_<w>`` per window,
    then ``atr_price_ratio``. ``Features.inputs`` and ``FeatureFrame.input_rows`` both use it."""
    columns: list[tuple[str, Sequence[float], bool]] = [
        (name, scalars[name], name not in _ALWAYS) for name in SCALAR_FIELDS
    ]
    for prefix, pairs in (("cvd", cvd), ("cvd_slope", slope), ("cvd_accel", accel)):
        for window_ms, column in pairs.items():
            columns.append((f"{prefix}_{duration_name(window_ms)}", column, False))
    columns.append(("atr_price_ratio", atr_price_ratio, True))
    # an optional column with no value at all (detectors off, an indicator the venue lacks) adds no key
    # to any row: drop it once here instead of testing it row by row (so features that are off cost
    # one scan per column, not one test per row)
    columns = [c for c in columns if not c[2] or any(v == v for v in c[1])]
    out: list[dict[str, float]] = []
    for i in range(n):
        row: dict[str, float] = {}
        for name, column, optional in columns:
            value = column[i]
            if not optional or value == value:  # NaN: not available
                row[name] = value
        out.append(row)
    return out


def _lookup(pairs: tuple[tuple[int, float], ...], window_ms: int, name: str) -> float:
    for key, value in pairs:
        if key == window_ms:
            return value
    raise KeyError(f"{name} for window {window_ms} ms was not computed in this snapshot")
