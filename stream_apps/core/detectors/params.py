"""The detectors' parameters and the feature names they add, apart from their compiled code.

Why a module of its own: a strategy file names its detectors' parameters and feature names
(``stream_apps.core.strategy``), and every process that reads strategy files (the executor through
its exit model, the web UI, the CLI) imported the detectors with them, and so numba (~0.5 CPU-s a
start). These classes and names need neither numba nor the kernels; ``microstructure``, ``book`` and
``flow`` re-export them, so both paths name the same objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..params import SECOND_MS
from ..units import NOTIONAL_SCALE, QTY_SCALE

__all__ = [
    "AGGRESSOR",
    "BOOK_FIELDS",
    "BVC",
    "DETECTOR_FIELDS",
    "DIVERGENCE_FIELDS",
    "FLOW_FIELDS",
    "ICEBERG_FIELDS",
    "LIQUIDATION_FIELDS",
    "OI_FIELDS",
    "OI_KINDS",
    "TICK",
    "WALL_FIELDS",
    "BookParams",
    "DetectorParams",
    "FlowParams",
]

#: VPIN's trade classification modes, as the compiled kernels (``kernels``) take them
BVC, TICK, AGGRESSOR = 0, 1, 2

DETECTOR_FIELDS = ("vpin", "kyle_lambda", "amihud")
_MODES = {"bvc": BVC, "tick": TICK, "aggressor": AGGRESSOR}
_SCALES = {"quote": NOTIONAL_SCALE, "base": QTY_SCALE}


@dataclass(frozen=True)
class DetectorParams:
    """Parameters of the detectors of one symbol (see the module docstring for each)."""

    bar_ms: int = 60_000
    vpin_bucket_volume: float = 1_000_000.0  # in ``vpin_volume_unit`` (default: 1 M quote currency)
    vpin_volume_unit: str = "quote"  # "quote" (price x qty) or "base" (qty)
    vpin_buckets: int = 50  # n
    vpin_classification: str = "bvc"  # "bvc", "aggressor" or "tick"
    bvc_sigma_bars: int = 100  # K
    kyle_window_bars: int = 30  # N
    amihud_window_bars: int = 30  # M

    def __post_init__(self) -> None:
        if self.bar_ms <= 0 or self.bar_ms % 1000:
            raise ValueError("bar_ms must be a positive whole number of seconds")
        if self.vpin_volume_unit not in _SCALES:
            raise ValueError(f"vpin_volume_unit must be one of {sorted(_SCALES)}, got {self.vpin_volume_unit!r}")
        if self.vpin_classification not in _MODES:
            raise ValueError(f"vpin_classification must be one of {sorted(_MODES)}, got {self.vpin_classification!r}")
        if not 0 < self.vpin_bucket_volume < 1e12 or self.bucket_units < 1:
            raise ValueError("vpin_bucket_volume must be positive (at least one volume unit) and below 1e12")
        for name in ("vpin_buckets", "kyle_window_bars", "amihud_window_bars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.kyle_window_bars < 2:
            raise ValueError("kyle_window_bars must be at least 2 (a slope needs two points)")
        if self.bvc_sigma_bars < 2:
            raise ValueError("bvc_sigma_bars must be at least 2 (a standard deviation needs two changes)")

    @property
    def bucket_units(self) -> int:
        """The bucket size in integer volume units (1e-6 quote or 1e-8 base)."""
        return int(round(self.vpin_bucket_volume * _SCALES[self.vpin_volume_unit]))

    @property
    def mode(self) -> int:
        return _MODES[self.vpin_classification]


WALL_FIELDS = (
    "wall_bid_distance_bps",
    "wall_bid_usd",
    "wall_bid_age_s",
    "wall_ask_distance_bps",
    "wall_ask_usd",
    "wall_ask_age_s",
    "wall_pulled_bid",
    "wall_pulled_ask",
    "wall_filled_bid",
    "wall_filled_ask",
)
ICEBERG_FIELDS = ("iceberg_refills_bid", "iceberg_refills_ask", "iceberg_usd_bid", "iceberg_usd_ask")
BOOK_FIELDS = WALL_FIELDS + ICEBERG_FIELDS


@dataclass(frozen=True)
class BookParams:
    """Parameters of the book detectors; walls are off when ``wall_multiple`` is None, icebergs when
    ``iceberg_min_refills`` is None."""

    wall_multiple: float | None = None  # k
    wall_band_bps: float = 25.0  # x
    wall_fill_ratio: float = 0.5
    wall_window_ms: int = 300_000
    wall_max_age_ms: int = 10_000
    iceberg_min_refills: int | None = None  # N
    iceberg_band_bps: float = 25.0
    iceberg_window_ms: int = 300_000
    iceberg_trade_fraction: float = 0.5
    iceberg_refill_fraction: float = 0.8
    late_s: int = 300  # how far behind its newest second a snapshot's counts may still land
    sample_ms: int = 0  # 0: every snapshot; else the first snapshot with levels of each interval of this length

    def __post_init__(self) -> None:
        if self.wall_multiple is None and self.iceberg_min_refills is None:
            raise ValueError("book detectors need walls (wall_multiple) or icebergs (iceberg_min_refills)")
        if self.wall_multiple is not None and not self.wall_multiple > 1:
            raise ValueError("wall_multiple must be above 1 (a wall is k times the median level)")
        if self.iceberg_min_refills is not None and self.iceberg_min_refills < 2:
            raise ValueError("iceberg_min_refills must be at least 2 (one refill is an ordinary order)")
        for name in (
            "wall_band_bps",
            "iceberg_band_bps",
            "wall_fill_ratio",
            "iceberg_trade_fraction",
            "iceberg_refill_fraction",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        for name in ("wall_window_ms", "iceberg_window_ms"):
            value = getattr(self, name)
            if value <= 0 or value % SECOND_MS:
                raise ValueError(f"{name} must be a positive whole number of seconds")
        if self.wall_max_age_ms <= 0:
            raise ValueError("wall_max_age_ms must be positive")
        if self.late_s < 0:
            raise ValueError("late_s cannot be negative")
        if self.sample_ms < 0:
            raise ValueError("sample_ms cannot be negative")

    @property
    def walls_on(self) -> bool:
        return self.wall_multiple is not None

    @property
    def icebergs_on(self) -> bool:
        return self.iceberg_min_refills is not None

    @property
    def band_bps(self) -> float:
        """The band of the levels kept: the wider of the parts that are on."""
        return max(self.wall_band_bps if self.walls_on else 0.0, self.iceberg_band_bps if self.icebergs_on else 0.0)

    @property
    def ring_seconds(self) -> int:
        return max(self.wall_window_ms, self.iceberg_window_ms) // SECOND_MS + self.late_s + 2


DIVERGENCE_FIELDS = ("cvd_divergence", "cvd_divergence_price", "cvd_divergence_cvd")
OI_FIELDS = ("oi_change_5m", "oi_spike_z")
LIQUIDATION_FIELDS = (
    "liq_long_count",
    "liq_short_count",
    "liq_long_usd",
    "liq_short_usd",
    "liq_cascade_long",
    "liq_cascade_short",
)
FLOW_FIELDS = DIVERGENCE_FIELDS + OI_FIELDS + LIQUIDATION_FIELDS
OI_KINDS = ("open_interest_hist", "open_interest")


@dataclass(frozen=True)
class FlowParams:
    """Parameters of one symbol's flow detectors; a part is off when its window is None."""

    bar_ms: int = 60_000
    divergence_bars: int | None = None  # N
    oi_kind: str = "open_interest_hist"
    oi_period_ms: int = 300_000
    oi_window: int | None = None  # W changes
    oi_max_age_ms: int = 900_000
    liq_window_ms: int | None = None
    cascade_window_ms: int = 30_000
    cascade_min_count: int | None = None
    cascade_min_usd: float | None = None
    late_s: int = 300  # how late (seconds behind the newest) a liquidation may still land in its second

    def __post_init__(self) -> None:
        if self.bar_ms <= 0 or self.bar_ms % SECOND_MS:
            raise ValueError("bar_ms must be a positive whole number of seconds")
        if self.divergence_bars is not None and self.divergence_bars < 1:
            raise ValueError("divergence_bars must be at least 1")
        if self.oi_kind not in OI_KINDS:
            raise ValueError(f"oi_kind must be one of {OI_KINDS}, got {self.oi_kind!r}")
        if self.oi_period_ms <= 0 or self.oi_max_age_ms <= 0:
            raise ValueError("oi_period_ms and oi_max_age_ms must be positive")
        if self.oi_window is not None and self.oi_window < 2:
            raise ValueError("oi_window must be at least 2 (a standard deviation needs two changes)")
        if self.liq_window_ms is not None:
            for name in ("liq_window_ms", "cascade_window_ms"):
                value = getattr(self, name)
                if value <= 0 or value % SECOND_MS:
                    raise ValueError(f"{name} must be a positive whole number of seconds")
            if self.cascade_min_count is None and self.cascade_min_usd is None:
                raise ValueError("a cascade needs cascade_min_count or cascade_min_usd")
            if self.cascade_min_count is not None and self.cascade_min_count < 1:
                raise ValueError("cascade_min_count must be at least 1")
            if self.cascade_min_usd is not None and not self.cascade_min_usd > 0:
                raise ValueError("cascade_min_usd must be positive")
        if self.late_s < 0:
            raise ValueError("late_s cannot be negative")

    @property
    def liq_ring_seconds(self) -> int:
        """Seconds the liquidation ring keeps: the longer window plus how late a record may come."""
        return max(self.liq_window_ms or 0, self.cascade_window_ms) // SECOND_MS + self.late_s + 2
