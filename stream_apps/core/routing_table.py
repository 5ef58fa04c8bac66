"""The order routing table: how an entry is worked by its notional (maker wait, TWAP slices, jitter,
the maker -> taker threshold and the liquidity probe).

Why here, below the executor: the table is part of a strategy file (its ``routing:`` section, so it is
versioned with the strategy revision and part of its ``config_hash``) and the executor's config holds
the default table for strategies without one; the strategy model (``stream_apps``) may not import the
executor (``execution``), so the model lives in the lower layer and both import it. The router that
reads it is ``execution.routing``.

Defaults are the plan's S4 router (DESIGN §9): 0-200 USDT a 1.5 s maker wait and one slice; 200-500
2 s, 2 slices 600 ms apart; 500-1000 2.5 s, 3 slices 800 ms apart; 1000+ 3 s, 4 slices 1 s apart.
Notional is quantity x signal price in the quote currency (USDT for USD-M symbols); every time is ms.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tapeflow_runtime.config_model import StrictModel, strictly_increasing


class RouteBucket(StrictModel):
    """How an entry of a notional up to ``up_to`` (from the previous bucket's bound) is worked."""

    up_to: float | None = Field(
        gt=0,
        description="upper bound of the bucket's notional in quote currency (USDT), exclusive; "
        "null for the last bucket (no upper bound); the lower bound is the previous bucket's",
    )
    maker_wait_ms: int = Field(
        ge=0,
        le=600_000,
        description="how long the post-only limit at the touch rests before the fill ratio is judged "
        "(ms); 0: no maker phase, straight to the taker slices",
    )
    slices: int = Field(
        default=1, ge=1, le=50, description="TWAP slices the taker part is sent in (market orders, equal quantities)"
    )
    slice_interval_ms: int = Field(
        default=0, ge=0, le=600_000, description="time between two taker slices (ms), before jitter"
    )


def default_buckets() -> list[RouteBucket]:
    return [
        RouteBucket(up_to=200, maker_wait_ms=1500, slices=1, slice_interval_ms=0),
        RouteBucket(up_to=500, maker_wait_ms=2000, slices=2, slice_interval_ms=600),
        RouteBucket(up_to=1000, maker_wait_ms=2500, slices=3, slice_interval_ms=800),
        RouteBucket(up_to=None, maker_wait_ms=3000, slices=4, slice_interval_ms=1000),
    ]


class LiquidityProbe(StrictModel):
    """Checks the book before an entry is sent: the spread against its own recent mean, and the depth
    the taker slices would take."""

    spread_ratio: float = Field(
        default=2.0,
        gt=1,
        description="the spread is wide when spread_bps exceeds this multiple of its mean over mean_window_ms",
    )
    mean_window_ms: int = Field(
        default=3_600_000, gt=0, le=86_400_000, description="window of the spread's mean (ms), 1 h by default"
    )
    min_books: int = Field(
        default=30,
        ge=1,
        description="book snapshots the mean needs before a spread is judged wide (fewer: no spread check)",
    )
    on_wide: Literal["wait", "split"] = Field(
        default="wait",
        description="a wide spread: wait (hold the entry wait_ms and probe again) or split (more slices at once)",
    )
    wait_ms: int = Field(default=5000, gt=0, le=600_000, description="wait: how long the entry is held (ms)")
    max_waits: int = Field(
        default=1,
        ge=0,
        le=20,
        description="wait: how many times an entry is held; still wide after them: it is sent split",
    )
    split_factor: int = Field(
        default=2, ge=1, le=10, description="split: the bucket's slices multiplied by this on a wide spread"
    )
    depth_levels: int = Field(
        default=5, ge=1, le=100, description="book levels on the side the taker slices take that count as depth"
    )
    depth_share: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="a taker slice takes at most this share of that depth (notional); "
        "more slices when the bucket's would take more",
    )
    max_slices: int = Field(default=8, ge=1, le=50, description="the probe never splits an entry into more slices")


class RoutingTable(StrictModel):
    """Notional buckets, slice jitter, the maker -> taker threshold and the liquidity probe."""

    buckets: list[RouteBucket] = Field(
        default_factory=default_buckets,
        description="ascending by up_to, the last one with up_to null; "
        "an entry is worked as the first bucket whose up_to exceeds its notional",
    )
    slice_jitter: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="each slice interval is moved by up to +/- this fraction of itself, "
        "deterministically from jitter_seed, the signal's market, evaluation time and direction and the slice "
        "number (not its id, so a renamed revision entering the same market at the same moment gets the same schedule)",
    )
    jitter_seed: int = Field(
        default=0,
        ge=0,
        description="seed of the slice jitter (same seed, market, evaluation time and direction: same schedule, "
        "backtest and live)",
    )
    taker_below_fill_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="theta: after the maker wait, a filled share below this sends the rest to the taker "
        "slices; at or above it the entry keeps what filled and cancels the rest",
    )
    probe: LiquidityProbe = Field(default=LiquidityProbe(), description="the liquidity probe before sending")

    @model_validator(mode="after")
    def _check(self) -> RoutingTable:
        if not self.buckets:
            raise ValueError("buckets: at least one bucket")
        bounds = [b.up_to for b in self.buckets]
        if bounds[-1] is not None:
            raise ValueError("buckets: the last bucket's up_to must be null (no upper bound)")
        inner = [b for b in bounds[:-1] if b is not None]
        if len(inner) != len(bounds) - 1:
            raise ValueError("buckets: only the last bucket may have up_to null")
        if not strictly_increasing(inner):
            raise ValueError("buckets: up_to must increase from one bucket to the next")
        return self

    def label(self, index: int) -> str:
        """``0-200``, ``200-500``, ..., ``1000+``: the bucket as reports name it."""
        low = 0.0 if index == 0 else self.buckets[index - 1].up_to
        high = self.buckets[index].up_to
        return f"{low:g}+" if high is None else f"{low:g}-{high:g}"
