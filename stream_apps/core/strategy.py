"""Strategy files (YAML or JSON): validated pydantic models and a stable ``config_hash``.

Why: the old system kept strategies as unvalidated JSON, then as DB rows whose column types silently
turned 0.002 into 0, with ``or`` fallbacks hiding it; every trade was supposed to carry
``strategy_version`` and ``config_hash`` but never did. Here a file is validated before the engine
sees it (unknown keys, wrong types and contradictory values are rejected with the field path and the
reason), and ``config_hash`` is the sha256 of the canonical JSON of the *validated* model, so key order,
whitespace, YAML vs JSON, and "30m" vs 1800000 do not change it, while any change of meaning does.

Units: durations are strings like "30m" (or integer milliseconds) and are stored in ms; weights are
the maximum points of a layer (see ``scoring``); thresholds are score points; gate values, premium,
divergence and funding are fractions (0.003 = 0.3 %); exits are in R with 1R = ``sl_atr_mult`` x ATR.
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from tapeflow_runtime.errors import TapeflowError

from .confidence import (
    DEFAULT_MAX_SIZE_MULT,
    SIGN_FEATURE,
    SLOPE_WINDOW_MS,
    STRATEGY_INPUTS,
    ConfidenceModel,
    cvd_feature,
    load_model,
)
from .detectors.params import DETECTOR_FIELDS as MICROSTRUCTURE_FIELDS
from .detectors.params import (
    DIVERGENCE_FIELDS,
    ICEBERG_FIELDS,
    LIQUIDATION_FIELDS,
    OI_FIELDS,
    WALL_FIELDS,
    BookParams,
    DetectorParams,
    FlowParams,
)
from .durations import parse_duration_ms, parse_duration_or_zero_ms
from .routing_table import RoutingTable

Duration = Annotated[int, BeforeValidator(parse_duration_ms)]
OptionalDuration = Annotated[int, BeforeValidator(parse_duration_or_zero_ms)]  # 0: off
SECOND_RING_LIMIT_MS = 3_600_000  # fast CVD windows need slope/acceleration from second buckets
DAY_MS = 86_400_000


class StrategyConfigError(TapeflowError, ValueError):
    """A strategy file that cannot be used; the message names the file, the field and the reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerSymbol(_Model):
    """A value per symbol with an optional default for symbols not listed."""

    default: float | None = Field(
        default=None,
        description="the value of a symbol not listed under symbols; "
        "null: such a symbol has no value (a gate does not apply to it, VPIN is off)",
    )
    symbols: dict[str, float] = Field(
        default_factory=dict, description="value per symbol, e.g. BTCUSDT: 500000; overrides default"
    )

    def value_for(self, symbol: str) -> float | None:
        return self.symbols.get(symbol, self.default)


class Windows(_Model):
    cvd_fast: Duration = Field(description="fast CVD window, e.g. 30m")
    cvd_mid: Duration = Field(description="mid CVD window, e.g. 4h")

    @model_validator(mode="after")
    def _check(self) -> Windows:
        for name, value in (("cvd_fast", self.cvd_fast), ("cvd_mid", self.cvd_mid)):
            if value % 1000:
                raise ValueError(f"{name} must be a whole number of seconds")
        if self.cvd_fast > SECOND_RING_LIMIT_MS:
            raise ValueError("cvd_fast must be at most 1h (its slope and acceleration use second buckets)")
        if self.cvd_mid > DAY_MS:
            raise ValueError("cvd_mid must be at most 24h")
        if self.cvd_fast >= self.cvd_mid:
            raise ValueError("cvd_fast must be shorter than cvd_mid")
        return self


class Weights(_Model):
    """Maximum points of each layer; 0 switches a layer off."""

    direction: float = Field(
        ge=0,
        le=100,
        description="points for CVD direction (raw 55: fast and mid CVD agree 30, "
        "P99 large-trade flow 20/10/0, CVD acceleration 5), scaled weight x raw / 55",
    )
    crowding: float = Field(
        ge=0,
        le=100,
        description="points for crowding (raw 25: contrarian long/short account "
        "ratio 7/10/15, top traders' long share 10/5/0; see rules)",
    )
    environment: float = Field(
        ge=0,
        le=100,
        description="points for the open-interest change (raw 15: at least "
        "rules.oi_strong_change 15, above 0 10, else 5)",
    )
    confirmation: float = Field(
        default=0,
        ge=0,
        le=100,
        description="points when price is on the signal's side of "
        "VWAP 30m and large-trade flow is not against it (raw 15)",
    )
    auxiliary: float = Field(
        ge=0,
        le=100,
        description="points for the Coinbase premium (raw 5: beyond "
        "rules.premium_band in the signal's direction 5, within the band 2, else 0)",
    )
    funding: float = Field(default=0, ge=0, le=100, description="v52: +/- this many points")
    liquidation: float = Field(
        default=0,
        ge=0,
        le=100,
        description="points when the 5-min short/long liquidated USD "
        "ratio favours the signal (rules.liquidation_ratio_long and _short, above "
        "rules.liquidation_min_usd)",
    )

    def max_score(self) -> float:
        return sum(self.model_dump().values())


class Thresholds(_Model):
    entry: float = Field(gt=0, description="score for a standard signal (1.0R)")
    heavy: float = Field(gt=0, description="score for a heavy signal (1.5R)")
    flip: float = Field(gt=0, description="a reverse signal at or above this closes the open position")

    @model_validator(mode="after")
    def _check(self) -> Thresholds:
        if self.heavy < self.entry:
            raise ValueError(f"heavy ({self.heavy}) must be >= entry ({self.entry})")
        if self.flip < self.entry:
            raise ValueError(f"flip ({self.flip}) must be >= entry ({self.entry}): a flip is also a signal")
        return self


class Rules(_Model):
    """Thresholds inside the layers (the scoring model's values as defaults). Raw points are fixed in ``scoring``."""

    long_short_long_levels: tuple[float, float, float] = Field(
        default=(1.0, 0.7, 0.5),
        description="long/short account ratio levels, decreasing: a LONG scores 7/10/15 "
        "raw crowding points below the first/second/third",
    )
    long_short_short_levels: tuple[float, float, float] = Field(
        default=(1.0, 1.5, 2.0),
        description="long/short account ratio levels, increasing: a SHORT scores 7/10/15 "
        "raw crowding points above the first/second/third",
    )
    top_trader_high: float = Field(
        default=0.55,
        gt=0,
        lt=1,
        description="top traders' long share (fraction) at or "
        "above which a LONG scores 10 raw crowding points and a SHORT 0",
    )
    top_trader_low: float = Field(
        default=0.45,
        gt=0,
        lt=1,
        description="top traders' long share at or below which a "
        "SHORT scores 10 and a LONG 0; between the two levels both score 5",
    )
    oi_strong_change: float = Field(
        default=0.03,
        gt=0,
        description="open-interest change (fraction, 0.03 = 3 %) at "
        "or above which the environment layer scores its full 15 raw points",
    )
    premium_band: float = Field(
        default=0.0005,
        gt=0,
        description="Coinbase premium (fraction): beyond it in the "
        "signal's direction scores 5 raw auxiliary points, within +/- it 2, against 0",
    )
    funding_extreme: float = Field(
        default=0.001,
        gt=0,
        description="|funding rate| (fraction) at or above which the "
        "funding layer scores -5 raw on the paying side (rate x direction > 0), +5 against",
    )
    funding_moderate: float = Field(
        default=0.0003,
        gt=0,
        description="|funding rate| from which up to "
        "funding_extreme a signal on the receiving side scores +5 raw; below it 0",
    )
    liquidation_ratio_long: float = Field(
        default=2.0,
        gt=0,
        description="5-min short/long liquidated USD ratio at "
        "or above which a LONG scores the liquidation layer's 5 raw points",
    )
    liquidation_ratio_short: float = Field(
        default=0.5,
        gt=0,
        description="5-min short/long liquidated USD ratio at "
        "or below which a SHORT scores the liquidation layer's 5 raw points",
    )
    liquidation_min_usd: PerSymbol = Field(
        default=PerSymbol(default=100_000, symbols={"BTCUSDT": 500_000, "ETHUSDT": 200_000}),
        description="per symbol, the 5-min liquidated USD (long + short) below which the liquidation layer scores 0",
    )

    @model_validator(mode="after")
    def _check(self) -> Rules:
        a, b, c = self.long_short_long_levels
        if not a > b > c > 0:
            raise ValueError("long_short_long_levels must be strictly decreasing and positive, e.g. [1.0, 0.7, 0.5]")
        a, b, c = self.long_short_short_levels
        if not 0 < a < b < c:
            raise ValueError("long_short_short_levels must be strictly increasing and positive, e.g. [1.0, 1.5, 2.0]")
        if self.top_trader_low >= self.top_trader_high:
            raise ValueError("top_trader_low must be below top_trader_high")
        if self.funding_moderate >= self.funding_extreme:
            raise ValueError("funding_moderate must be below funding_extreme")
        return self


class Gates(_Model):
    """Vetoes (score 0 with the gate's name). A gate without a value for a symbol does not apply to it."""

    min_atr_price: PerSymbol | None = Field(
        default=None, description="veto when ATR (5-min bars) / price is below this fraction: too quiet to trade"
    )
    obi_against: PerSymbol | None = Field(
        default=None,
        description="veto when the top-10-level order-book imbalance "
        "(-1 to 1) is below -x for a LONG or above +x for a SHORT",
    )
    spot_perp_divergence: PerSymbol | None = Field(
        default=None, description="veto when (perp - spot) / spot is below -x for a LONG or above +x for a SHORT"
    )
    whale_against: PerSymbol | None = Field(
        default=None,
        description="veto when the 15-min whale flow ratio (trades "
        "of 100k USD and more, -1 to 1) is below -x (LONG) or above +x (SHORT)",
    )
    on_missing_input: Literal["veto", "pass"] = Field(
        default="veto", description="a set gate whose input is missing: veto the signal, or pass (skip that gate)"
    )


class Exits(_Model):
    sl_atr_mult: float = Field(gt=0, description="1R = sl_atr_mult * ATR (5m)")
    tp1_r: float = Field(
        gt=0,
        description="first take-profit, entry +/- this many R: closes half the position and "
        "moves the stop to break-even",
    )
    tp2_r: float = Field(gt=0, description="second take-profit, entry +/- this many R: closes the rest (above tp1_r)")
    timeout_min: int = Field(
        gt=0,
        description="minutes after which an open position closes at market; also how "
        "recent an opposite signal must be for a new one to be a flip",
    )

    @model_validator(mode="after")
    def _check(self) -> Exits:
        if self.tp2_r <= self.tp1_r:
            raise ValueError(f"tp2_r ({self.tp2_r}) must be greater than tp1_r ({self.tp1_r})")
        return self


class TierMultipliers(_Model):
    standard: float = Field(
        default=1.0,
        gt=0,
        description="risk of a standard-tier signal in multiples of the "
        "executor's 1R; carried on the signal, the executor sizes by it",
    )
    heavy: float = Field(
        default=1.5,
        gt=0,
        description="risk of a heavy-tier signal in multiples of the executor's "
        "1R; carried on the signal, the executor sizes by it",
    )


class Sizing(_Model):
    risk_pct: float = Field(
        default=2.0,
        gt=0,
        le=100,
        description="percent of balance risked per 1R; part of the "
        "config_hash but not read: the executor's risk_pct sizes positions",
    )
    tier_multipliers: TierMultipliers = Field(
        default=TierMultipliers(), description="risk multiplier per signal tier, carried on each signal"
    )


class OutcomeLabels(_Model):
    """How the outcome labels (``review.labels``: what a signal or trade earned by each horizon) judge
    this strategy: ``pos`` at a net ROI of ``+roi_threshold`` or more, ``neg`` at ``-roi_threshold`` or
    less, else ``neutral``. The labels service and ``tapeflow labels backfill|run`` read it from the
    strategy's active revision; their ``--strategy-threshold NAME=PCT`` overrides it."""

    roi_threshold: float = Field(
        default=0.005,
        ge=0,
        lt=1,
        description="net ROI (a fraction of the margin, or of the notional in paper) beyond which a label is "
        "pos (>= +it) or neg (<= -it); 0.005 = +/-0.5 %",
    )


class Vpin(_Model):
    """VPIN's buckets and classification (``core.detectors.microstructure`` has the definitions)."""

    bucket_volume: PerSymbol = Field(
        default=PerSymbol(default=1_000_000),
        description="volume of one VPIN bucket "
        "per symbol, in volume_unit; a symbol without a value has VPIN, Kyle's lambda "
        "and Amihud off; larger buckets update VPIN less often",
    )
    volume_unit: Literal["quote", "base"] = Field(
        default="quote", description="unit of bucket_volume: quote (price x qty, e.g. USDT) or base (qty)"
    )
    buckets: int = Field(default=50, ge=1, le=10_000, description="n: VPIN over the last n buckets")
    classification: Literal["bvc", "aggressor", "tick"] = Field(
        default="bvc",
        description="how volume is split into bought and sold: bvc (bulk-volume classification per "
        "bar), aggressor (the exchange's taker side), tick (tick rule)",
    )
    sigma_bars: int = Field(default=100, ge=2, le=100_000, description="BVC: sigma of the last K bar changes")

    @model_validator(mode="after")
    def _check(self) -> Vpin:
        values = [v for v in (self.bucket_volume.default, *self.bucket_volume.symbols.values()) if v is not None]
        if any(not v > 0 for v in values):
            raise ValueError("bucket_volume must be positive")
        return self


class Divergence(_Model):
    """CVD–price divergence over the last ``window`` (whole bars; ``core.detectors.flow``)."""

    window: Duration = Field(default=1_800_000, description="N minutes: the reference bars before each bar")


class OiSpike(_Model):
    """Z-score of the open-interest change per ``period`` over the previous ``window`` changes."""

    kind: Literal["open_interest_hist", "open_interest"] = Field(
        default="open_interest_hist",
        description="open interest sampled: open_interest_hist (Binance's 5-minute "
        "history) or open_interest (the polled current value)",
    )
    period: Duration = Field(
        default=300_000,
        gt=0,
        description="sampling period: the first point of each period is "
        "its sample; oi_change_5m is the change between consecutive samples",
    )
    window: int = Field(default=288, ge=2, le=100_000, description="changes in the mean and deviation")
    max_age: Duration = Field(default=900_000, gt=0, description="the value is missing once its data is older")


class Cascade(_Model):
    """A side's liquidations within ``window``: at least ``min_count`` of them or ``min_usd`` USD."""

    window: Duration = Field(default=30_000, description="window of the cascade test, whole seconds")
    min_count: int | None = Field(
        default=5,
        ge=1,
        description="liquidations of one side within window that make a "
        "cascade (null: not tested; min_count or min_usd must be set)",
    )
    min_usd: float | None = Field(
        default=1_000_000.0,
        gt=0,
        description="liquidated USD of one side within window "
        "that make a cascade (null: not tested); either threshold reached is enough",
    )


class Liquidations(_Model):
    """Liquidation counts and USD per side over ``window`` and the cascade flags (lower bounds)."""

    window: Duration = Field(
        default=300_000,
        description="window of the per-side liquidation counts and USD "
        "(liq_long_count, liq_short_usd, ...), whole seconds",
    )
    cascade: Cascade = Field(
        default=Cascade(),
        description="when a side's liquidations set its cascade flag (liq_cascade_long / liq_cascade_short)",
    )


class Walls(_Model):
    """Order-book walls (``core.detectors.book``): levels within ``band_bps`` of mid of at least
    ``multiple`` x the median level; pulled/filled counted over ``window``."""

    band_bps: float = Field(
        default=25.0,
        gt=0,
        le=10_000,
        description="levels within this many bp of mid are considered, for the median and as walls",
    )
    multiple: float = Field(
        default=5.0,
        gt=1,
        description="a level is a wall at this many times the median USD "
        "size of the levels in the band or more; raising it finds fewer, bigger walls",
    )
    fill_ratio: float = Field(default=0.5, gt=0, description="traded share of the drop that makes it filled")
    window: Duration = Field(
        default=300_000, description="pulled and filled walls are counted over this window, whole seconds"
    )
    max_age: Duration = Field(default=10_000, gt=0, description="walls are missing once the book is older")


class Icebergs(_Model):
    """Iceberg refills (``core.detectors.book``): ``min_refills`` refills at one price within ``window``."""

    band_bps: float = Field(
        default=25.0, gt=0, le=10_000, description="levels within this many bp of mid are watched for refills"
    )
    min_refills: int = Field(
        default=3, ge=2, le=1_000, description="refills at one price within window that make it an iceberg"
    )
    window: Duration = Field(
        default=300_000,
        description="the refills of an iceberg fall within this; iceberg "
        "refills and USD are counted over it, whole seconds",
    )
    trade_fraction: float = Field(default=0.5, gt=0, description="traded at the price, share of its size")
    refill_fraction: float = Field(default=0.8, gt=0, description="size shown again, share of its size")


class Detectors(_Model):
    """Microstructure detectors computed by the engine for the symbols of this strategy (off when the
    section is absent). Every strategy that sets it must set the same: a symbol has one state.
    ``divergence``, ``oi_spike``, ``liquidations``, ``walls`` and ``icebergs`` are off unless present."""

    bar: Duration = Field(default=60_000, description="time bars of BVC, Kyle's lambda, Amihud and divergence")
    vpin: Vpin = Field(default=Vpin(), description="VPIN's bucket size and trade classification")
    kyle_window_bars: int = Field(
        default=30,
        ge=2,
        le=100_000,
        description="bars in Kyle's lambda (OLS slope of "
        "price change on signed volume); missing until that many; more: smoother, slower",
    )
    amihud_window_bars: int = Field(
        default=30,
        ge=1,
        le=100_000,
        description="bars averaged in Amihud illiquidity (|return| per million quote traded); missing until that many",
    )
    divergence: Divergence | None = Field(
        default=None,
        description="CVD-price divergence (cvd_divergence, cvd_divergence_price, cvd_divergence_cvd); off when absent",
    )
    oi_spike: OiSpike | None = Field(
        default=None, description="open-interest change and its z-score (oi_change_5m, oi_spike_z); off when absent"
    )
    liquidations: Liquidations | None = Field(
        default=None,
        description="liquidation counts, USD and cascade flags "
        "per side (liq_long_count, liq_cascade_short, ...); off when absent",
    )
    walls: Walls | None = Field(
        default=None, description="order-book walls (wall_bid_usd, wall_pulled_ask, ...); off when absent"
    )
    icebergs: Icebergs | None = Field(
        default=None, description="iceberg refills (iceberg_refills_bid, iceberg_usd_ask, ...); off when absent"
    )
    book_sample: OptionalDuration = Field(
        default=1_000,
        description="walls and icebergs compare the first md.book "
        "snapshot of each interval this long (0: every snapshot)",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Parts left out are not dumped: a section without them keeps its hash (and research store key)."""
        data = handler(self)
        for name in ("divergence", "oi_spike", "liquidations", "walls", "icebergs"):
            if data.get(name) is None:
                data.pop(name, None)
        if "walls" not in data and "icebergs" not in data:
            data.pop("book_sample", None)  # only the book parts read it
        return data

    @model_validator(mode="after")
    def _check(self) -> Detectors:
        if self.bar <= 0 or self.bar % 1000:
            raise ValueError("bar must be a positive whole number of seconds")
        if self.divergence is not None and (self.divergence.window <= 0 or self.divergence.window % self.bar):
            raise ValueError("divergence.window must be a positive whole number of bars")
        if self.liquidations is not None:
            for name, value in (
                ("liquidations.window", self.liquidations.window),
                ("liquidations.cascade.window", self.liquidations.cascade.window),
            ):
                if value <= 0 or value % 1000:
                    raise ValueError(f"{name} must be a positive whole number of seconds")
            if self.liquidations.cascade.min_count is None and self.liquidations.cascade.min_usd is None:
                raise ValueError("liquidations.cascade needs min_count or min_usd")
        for name, part in (("walls", self.walls), ("icebergs", self.icebergs)):
            if part is not None and (part.window <= 0 or part.window % 1000):
                raise ValueError(f"{name}.window must be a positive whole number of seconds")
        for symbol in ("", *self.vpin.bucket_volume.symbols):
            self.params_for(symbol)  # refused here, not when the engine first meets the symbol
        self.flow_params()
        self.book_params()
        return self

    def book_params(self) -> BookParams | None:
        """``BookParams`` of walls and icebergs (None: both off)."""
        walls, ice = self.walls, self.icebergs
        if walls is None and ice is None:
            return None
        defaults = BookParams(wall_multiple=2.0)
        return BookParams(
            wall_multiple=walls.multiple if walls else None,
            wall_band_bps=walls.band_bps if walls else defaults.wall_band_bps,
            wall_fill_ratio=walls.fill_ratio if walls else defaults.wall_fill_ratio,
            wall_window_ms=walls.window if walls else defaults.wall_window_ms,
            wall_max_age_ms=walls.max_age if walls else defaults.wall_max_age_ms,
            iceberg_min_refills=ice.min_refills if ice else None,
            iceberg_band_bps=ice.band_bps if ice else defaults.iceberg_band_bps,
            iceberg_window_ms=ice.window if ice else defaults.iceberg_window_ms,
            iceberg_trade_fraction=ice.trade_fraction if ice else defaults.iceberg_trade_fraction,
            iceberg_refill_fraction=ice.refill_fraction if ice else defaults.iceberg_refill_fraction,
            sample_ms=self.book_sample,
        )

    def flow_params(self) -> FlowParams | None:
        """``FlowParams`` of divergence, OI spikes and liquidations (None: all three off)."""
        if self.divergence is None and self.oi_spike is None and self.liquidations is None:
            return None
        oi, liq = self.oi_spike, self.liquidations
        return FlowParams(
            bar_ms=self.bar,
            divergence_bars=self.divergence.window // self.bar if self.divergence is not None else None,
            oi_kind=oi.kind if oi else "open_interest_hist",
            oi_period_ms=oi.period if oi else 300_000,
            oi_window=oi.window if oi else None,
            oi_max_age_ms=oi.max_age if oi else 900_000,
            liq_window_ms=liq.window if liq else None,
            cascade_window_ms=liq.cascade.window if liq else 30_000,
            cascade_min_count=liq.cascade.min_count if liq else None,
            cascade_min_usd=liq.cascade.min_usd if liq else None,
        )

    def params_for(self, symbol: str) -> DetectorParams | None:
        """The symbol's ``DetectorParams`` (None: no bucket volume for it, detectors off)."""
        volume = self.vpin.bucket_volume.value_for(symbol)
        if volume is None:
            return None
        return DetectorParams(
            bar_ms=self.bar,
            vpin_bucket_volume=volume,
            vpin_volume_unit=self.vpin.volume_unit,
            vpin_buckets=self.vpin.buckets,
            vpin_classification=self.vpin.classification,
            bvc_sigma_bars=self.vpin.sigma_bars,
            kyle_window_bars=self.kyle_window_bars,
            amihud_window_bars=self.amihud_window_bars,
        )


# features a regime condition may read: every scalar of ``Features`` (``features.SCALAR_FIELDS``) and
# these, derived from the frame by ``core.regime`` (the strategy's own CVD windows, price vs VWAP)
REGIME_DERIVED = (
    "cvd_fast",
    "cvd_mid",
    "cvd_fast_slope",
    "cvd_fast_accel",
    "large_net_qty_15m",
    "atr_price_ratio",
    "price_vwap_dev",
    "liq_net_usd_5m",
    "liq_net_usd",
    "liq_cascade_net",
)
# detector outputs and the part of the ``detectors`` section that computes them ("" = the section
# itself), from the detectors' own field lists; plus the derived liquidation features
REGIME_DETECTOR_PART = {
    **dict.fromkeys(MICROSTRUCTURE_FIELDS, ""),
    **dict.fromkeys(DIVERGENCE_FIELDS, "divergence"),
    **dict.fromkeys(OI_FIELDS, "oi_spike"),
    **dict.fromkeys(LIQUIDATION_FIELDS, "liquidations"),
    **dict.fromkeys(WALL_FIELDS, "walls"),
    **dict.fromkeys(ICEBERG_FIELDS, "icebergs"),
    "liq_net_usd": "liquidations",
    "liq_cascade_net": "liquidations",
}
ComparisonOp = Literal[">", ">=", "<", "<=", "==", "!="]


def regime_features() -> frozenset[str]:
    from .features import SCALAR_FIELDS  # here, not at import: features does not need the schema

    return frozenset(SCALAR_FIELDS) | frozenset(REGIME_DERIVED)


class Condition(_Model):
    """``feature op value``; with ``aligned`` the feature is first multiplied by the direction's sign
    (+1 LONG, -1 SHORT), so one rule reads "in the signal's direction" for either side."""

    feature: str = Field(
        description="the feature compared: a Features field or a derived one (cvd_fast, "
        "price_vwap_dev, ...); a missing value never holds"
    )
    op: ComparisonOp = Field(description="the comparison: >, >=, <, <=, == or !=")
    value: float = Field(description="the number the feature is compared with, in the feature's own unit")
    aligned: bool = Field(
        default=False, description="first multiply the feature by the direction's sign (+1 LONG, -1 SHORT)"
    )

    @field_validator("feature")
    @classmethod
    def _known(cls, name: str) -> str:
        return _known_feature(name)


def _known_feature(name: str) -> str:
    if name not in regime_features():
        raise ValueError(f"unknown feature {name!r} (a Features field or one of {', '.join(REGIME_DERIVED)})")
    return name


class Regime(_Model):
    """A named market regime as rules (``core.regime``): when every condition holds the row gets the
    direction and the score ``thresholds.entry`` (standard tier), or ``thresholds.heavy`` when every
    ``heavy`` condition holds as well; otherwise no signal, with the reason. The layers and gates do
    not score such a strategy."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,47}$",
        description="the regime's name, quoted in the notes of its evaluations (regime:<name>: ...)",
    )
    direction: Literal["LONG", "SHORT"] | None = Field(
        default=None, description="a fixed direction; set this or sign_of, exactly one"
    )
    sign_of: str | None = Field(
        default=None, description="a feature whose sign is the direction: > 0 LONG, < 0 SHORT, 0 or missing none"
    )
    invert: bool = Field(
        default=False, description="with sign_of: take the opposite side (to fade what the feature shows)"
    )
    conditions: list[Condition] = Field(
        min_length=1,
        max_length=32,
        description="1 to 32 conditions that must all hold for a signal (score thresholds.entry, standard tier)",
    )
    heavy: list[Condition] = Field(
        default_factory=list,
        max_length=32,
        description="up to 32 more conditions: when "
        "they hold too the signal is heavy (score thresholds.heavy); empty: never heavy",
    )

    @field_validator("sign_of")
    @classmethod
    def _known(cls, name: str | None) -> str | None:
        return None if name is None else _known_feature(name)

    @model_validator(mode="after")
    def _check(self) -> Regime:
        if (self.direction is None) == (self.sign_of is None):
            raise ValueError("set direction (LONG or SHORT) or sign_of (a feature), exactly one")
        if self.invert and self.sign_of is None:
            raise ValueError("invert needs sign_of")
        return self

    def features(self) -> list[str]:
        names = [c.feature for c in (*self.conditions, *self.heavy)]
        if self.sign_of is not None:
            names.insert(0, self.sign_of)
        return list(dict.fromkeys(names))


class ConfidenceModelRef(_Model):
    """The confidence model that sizes and vetoes the strategy's signals (``core.confidence``): a model
    file of ``tapeflow model train``, pinned by its sha256. The file is read and checked when the strategy
    is loaded: another content is refused, so a changed model is a new sha256, a new config_hash and a
    new revision."""

    file: str = Field(
        min_length=1,
        description="the model file (tapeflow model train's model-<hash>.json): an absolute path, or "
        "relative to the working directory; where to find the model, so not part of the config_hash",
    )
    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the model file (sha256sum FILE); a file with another hash is refused; part "
        "of the config_hash",
    )
    max_size_mult: float = Field(
        default=DEFAULT_MAX_SIZE_MULT,
        gt=0,
        le=10,
        description="the largest size multiplier of a signal: the tier's multiplier x the model's band "
        "(p > 0.85: 1.2, > 0.6: 1.0, > 0.4: 0.5, else no signal: model_skip) is clamped to it",
    )
    _compiled: ConfidenceModel | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _load(self) -> ConfidenceModelRef:
        self._compiled = load_model(self.file, self.sha256)
        return self

    @property
    def compiled(self) -> ConfidenceModel:
        """The loaded model (its arrays)."""
        assert self._compiled is not None
        return self._compiled


class StrategyConfig(_Model):
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,47}$",
        description="the strategy's name (lower case, digits, "
        "_), unique among the strategies loaded; on every evaluation and signal",
    )
    version: str = Field(
        min_length=1,
        max_length=32,
        description="a version label, carried on every evaluation and signal as strategy_version",
    )
    description: str = Field(default="", description="free text for people; part of the config_hash")
    symbols: list[str] = Field(default_factory=list, description="empty = every symbol")
    windows: Windows = Field(description="the fast and mid CVD windows whose agreement gives the direction")
    warmup: Duration = Field(default=DAY_MS, description="data that must cover the past before any signal")
    weights: Weights = Field(description="maximum points of each scoring layer (all 0, or left out, for a regime)")
    thresholds: Thresholds = Field(description="the scores of a standard and a heavy signal and of a flip")
    cooldown: Duration = Field(
        default=600_000,
        description="no signal for a symbol and direction within this long "
        "after the strategy's last one there; the other direction is not held back",
    )
    rules: Rules = Field(default=Rules(), description="the levels inside the scoring layers")
    gates: Gates = Field(default=Gates(), description="vetoes with per-symbol values; none by default")
    exits: Exits = Field(description="stop, take-profits and timeout of a signal's position, in R")
    sizing: Sizing = Field(default=Sizing(), description="the risk multiplier of each signal tier")
    detectors: Detectors | None = Field(
        default=None,
        description="microstructure detectors (VPIN, Kyle's lambda, "
        "Amihud, flow and book) as features; off when absent",
    )
    regime: Regime | None = Field(default=None, description="rules instead of layers (core.regime); off when absent")
    model: ConfidenceModelRef | None = Field(
        default=None,
        description="a confidence model (p_win) that sizes each signal and vetoes the unlikely ones; off when absent",
    )
    routing: RoutingTable | None = Field(
        default=None,
        description="how the executor works this strategy's entries by notional (execution.routing); "
        "absent: the executor config's routing table",
    )
    labels: OutcomeLabels | None = Field(
        default=None,
        description="the outcome labels' pos/neg threshold for this strategy (review.labels); absent: the "
        "labels service's --threshold (0.5 %)",
    )
    # the registered revision (tapeflow strategy revisions) this config was loaded as; 0 for a file not
    # registered. Private: it is where the config came from, not what it is, so neither the file nor
    # config_hash knows it.
    _config_rev: int = PrivateAttr(default=0)

    @property
    def config_rev(self) -> int:
        return self._config_rev

    def at_rev(self, rev: int) -> StrategyConfig:
        """This config as registered revision ``rev`` (stamped as config_rev on its records)."""
        copy = self.model_copy()
        copy._config_rev = rev
        return copy

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Without detectors (or a regime, routing, a model or labels) the dump (and so ``config_hash``) is what it was before
        they existed."""
        data = handler(self)
        for name in ("detectors", "regime", "routing", "model", "labels"):
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _regime_weights(cls, data: Any) -> Any:
        """A regime strategy is scored by its rules: its weights are all 0 (and may be left out)."""
        if isinstance(data, dict) and data.get("regime") is not None and "weights" not in data:
            data = {**data, "weights": {"direction": 0, "crowding": 0, "environment": 0, "auxiliary": 0}}
        return data

    @model_validator(mode="after")
    def _check(self) -> StrategyConfig:
        if self.regime is not None:
            self._check_regime(self.regime)
        elif self.thresholds.entry > self.weights.max_score():
            raise ValueError(
                f"thresholds.entry ({self.thresholds.entry}) can never be reached: the weights add up to "
                f"{self.weights.max_score()}"
            )
        if self.warmup > DAY_MS + 3_600_000:
            raise ValueError("warmup must be at most 25h (the longest window the state keeps)")
        if self.model is not None:
            for name in self.model.compiled.features:
                problem = self._model_feature_problem(name)
                if problem:
                    raise ValueError(f"model: the model's feature {name!r} {problem}")
        return self

    def _model_feature_problem(self, name: str) -> str | None:
        """Why the engine cannot give the model feature ``name`` for this strategy (None: it can). A model
        fitted with a detector and served without it would read NaN where it learnt values: refused."""
        from .features import SCALAR_FIELDS  # here, not at import: features does not need the schema
        from .symbol_state import STANDARD_CVD_WINDOWS_MS

        layer = name.startswith("layer_") and name.removeprefix("layer_") in Weights.model_fields
        if layer or name in ("score", "raw_score", SIGN_FEATURE):
            return None
        field = name.removeprefix("in_")
        scalars = {*SCALAR_FIELDS, *STRATEGY_INPUTS, "atr_price_ratio"}
        cvd = None if field in scalars else cvd_feature(field)
        if not name.startswith("in_") or (field not in scalars and cvd is None):
            return "is not one the engine computes"
        fast = self.windows.cvd_fast
        windows = {"cvd": {*STANDARD_CVD_WINDOWS_MS, fast, self.windows.cvd_mid}}
        windows["cvd_slope"] = windows["cvd_accel"] = {SLOPE_WINDOW_MS, fast}
        if cvd is not None and cvd[1] not in windows[cvd[0]]:
            return "needs a CVD window the engine does not keep for this strategy"
        part = REGIME_DETECTOR_PART.get(field)
        trained = (  # what tapeflow model train turns on (backtest.research.model_data.with_detectors)
            " (tapeflow model train fits with every detector on: detectors: {divergence: {}, oi_spike: {}, "
            "liquidations: {cascade: {}}, walls: {}, icebergs: {}})"
        )
        if part is not None and self.detectors is None:
            return "is a detector output and the strategy has no detectors section" + trained
        if part and self.detectors is not None and getattr(self.detectors, part) is None:
            return f"needs detectors.{part}, which the strategy does not turn on" + trained
        return None

    def _check_regime(self, regime: Regime) -> None:
        if self.weights.max_score() > 0:
            raise ValueError("weights: a regime strategy is scored by its rules, not by layers; leave weights out")
        if self.gates != Gates():
            raise ValueError("gates: a regime strategy has no gates; write the veto as a regime condition")
        reads = [("regime.sign_of", regime.sign_of)] if regime.sign_of is not None else []
        reads += [
            (f"regime.{kind}.{i}.feature", c.feature)
            for kind in ("conditions", "heavy")
            for i, c in enumerate(getattr(regime, kind))
        ]
        for path, name in reads:
            part = REGIME_DETECTOR_PART.get(name)
            if part is None:
                continue
            if self.detectors is None:
                raise ValueError(f"{path}: {name} is a detector output and the strategy has no detectors section")
            if part and getattr(self.detectors, part) is None:
                raise ValueError(f"{path}: {name} needs detectors.{part}, which the strategy does not turn on")

    @cached_property
    def config_hash(self) -> str:
        """sha256 hex of the canonical JSON (sorted keys, no whitespace) of the validated model; a model
        counts by its sha256 (and max_size_mult), not by the path it was read from."""
        data = self.model_dump(mode="json")
        if "model" in data:
            data["model"] = {key: value for key, value in data["model"].items() if key != "file"}
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def applies_to(self, symbol: str) -> bool:
        return not self.symbols or symbol in self.symbols


_FIELD_PATH = re.compile(r"^(weights|gates|regime|model)(\.[A-Za-z0-9_]+)*: ")


def _format_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        # a key is quoted when it would not print as itself (a line break in a key spans lines)
        location = ".".join(str(p) if str(p).isprintable() else repr(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        if location == "(top level)" and _FIELD_PATH.match(message):  # a whole-file check naming its field
            parts.append(message)
            continue
        parts.append(f"{location}: {message}")
    return "; ".join(parts)


def parse_strategy(data: Any, source: str = "<strategy>") -> StrategyConfig:
    """Validate already-parsed data; raise StrategyConfigError naming the field and the reason."""
    if not isinstance(data, dict):
        raise StrategyConfigError(f"{source}: a strategy file must contain a mapping at the top level")
    try:
        return StrategyConfig.model_validate(data)
    except ValidationError as error:
        raise StrategyConfigError(f"{source}: {_format_errors(error)}") from None


def strategy_path(ref: str | Path) -> Path:
    """A strategy as a user names it on the command line or in TAPEFLOW_STRATEGIES: a file, or the name
    of a shipped strategy (``v53``) when no such file exists; a bare name that is neither is an error
    that lists the shipped ones."""
    path = Path(ref)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    shipped = default_strategy_dir() / f"{path.name}.yaml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in default_strategy_dir().glob("*.yaml")))
    raise StrategyConfigError(f"{ref}: neither a strategy file nor a shipped strategy ({names})")


def load_strategy(path: str | Path) -> StrategyConfig:
    """Load one ``.yaml``/``.yml``/``.json`` strategy file, or a shipped strategy by name (``v53``)."""
    path = strategy_path(path)
    return parse_strategy(read_strategy_file(path), str(path))


def read_strategy_file(path: str | Path) -> Any:
    """The parsed content of a ``.yaml``/``.yml``/``.json`` strategy file (directional or watchlist),
    or a one-line ``StrategyConfigError`` naming the file and what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise StrategyConfigError(f"{path}: cannot read: {error}") from None
    except UnicodeDecodeError as error:
        raise StrategyConfigError(f"{path}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            raise StrategyConfigError(f"{path}: unknown strategy file type (use .yaml, .yml or .json)")
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        kind = path.suffix.lstrip(".").upper()
        raise StrategyConfigError(f"{path}: not valid {kind}: {_parse_error(error)}") from None
    except RecursionError:
        raise StrategyConfigError(f"{path}: nested too deeply to be a strategy") from None
    return data


def _parse_error(error: Exception) -> str:
    """A YAML or JSON syntax error on one line: PyYAML's own message quotes the line and a caret below it."""
    problem, mark = getattr(error, "problem", None), getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


def load_strategies(directory: str | Path) -> list[StrategyConfig]:
    """Every strategy file of a directory, sorted by name; names must be unique."""
    configs = [
        load_strategy(path)
        for path in sorted(Path(directory).iterdir())
        if path.suffix.lower() in (".yaml", ".yml", ".json")
    ]
    seen: dict[str, str] = {}
    for config in configs:
        if config.name in seen:
            raise StrategyConfigError(f"{directory}: strategy name {config.name!r} is defined twice")
        seen[config.name] = config.version
    return sorted(configs, key=lambda c: c.name)


def default_strategy_dir() -> Path:
    """``stream_apps/strategies`` (the shipped v51_baseline, v52_8signals and v53)."""
    return Path(__file__).resolve().parent.parent / "strategies"
