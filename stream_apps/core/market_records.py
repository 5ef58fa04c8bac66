"""The non-trade inputs of one symbol: latest book, mark and indicator values, and liquidations.

Why separate from the trade state: these records arrive a few times per second at most, keep only
their newest value (by the time of the data point; an older record never overwrites a newer one), and
go stale: a value older than its ``*_max_age_ms`` reads as ``None`` ("not available"), which scoring
turns into a zero score with a reason and gates into a veto. Liquidations are summed per second in a
10-minute ring by the side that was liquidated, so a late record still lands in its own second.

Open-interest change is computed between consecutive data points of the same kind (the old engine
compared tick against tick, so a 5-minute value looked unchanged on every tick but one), and only
when the two points are at most ``oi_change_max_span_ms`` apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .events import BookUpdate, IndicatorUpdate, LiquidationEvent, MarkUpdate
from .params import SECOND_MS, Counters, StateParams
from .ring import BucketRing
from .units import NOTIONAL_SCALE, notional_to_units

OPEN_INTEREST_KINDS = ("open_interest_hist", "open_interest")  # preference order
_LIQ_FIELDS = ("long_usd", "short_usd")


@dataclass
class LatestValue:
    """Newest value of one indicator kind, and the data point before it."""

    value: float
    value_time_ms: int
    extra: dict[str, float] = field(default_factory=dict)
    prev_value: float | None = None
    prev_value_time_ms: int | None = None


class MarketRecords:
    """Book, mark, indicator and liquidation inputs of one symbol (counters shared with its state)."""

    def __init__(self, params: StateParams, counters: Counters) -> None:
        self.params = params
        self.counters = counters
        self.book: BookUpdate | None = None
        self.mark: MarkUpdate | None = None
        self.indicators: dict[str, LatestValue] = {}
        self.liquidations = BucketRing(SECOND_MS, params.liq_buckets, _LIQ_FIELDS)

    # -- updates -----------------------------------------------------------------------------
    def apply_book(self, update: BookUpdate) -> None:
        if not np.isfinite(update.obi) or abs(update.obi) > 1.0:
            self.counters.rejected += 1
        elif self.book is None or update.time_ms >= self.book.time_ms:
            self.book = update
        else:
            self.counters.stale_records += 1

    def apply_mark(self, update: MarkUpdate) -> None:
        if not (np.isfinite(update.mark_price) and update.mark_price > 0 and np.isfinite(update.funding_rate)):
            self.counters.rejected += 1
        elif self.mark is None or update.time_ms >= self.mark.time_ms:
            self.mark = update
        else:
            self.counters.stale_records += 1

    def apply_liquidation(self, event: LiquidationEvent) -> None:
        if not (np.isfinite(event.usd) and event.usd > 0 and event.liquidated_side in ("LONG", "SHORT")):
            self.counters.rejected += 1
            return
        units = int(notional_to_units(np.array([event.usd]))[0])
        row = [units, 0] if event.liquidated_side == "LONG" else [0, units]
        dropped = self.liquidations.add(np.array([event.time_ms // SECOND_MS]), np.array([row]))
        self.counters.liquidations_dropped += dropped

    def apply_indicator(self, update: IndicatorUpdate) -> None:
        if not np.isfinite(update.value):
            self.counters.rejected += 1
            return
        current = self.indicators.get(update.kind)
        extra = {k: float(v) for k, v in update.extra.items()}
        if current is None:
            self.indicators[update.kind] = LatestValue(update.value, update.value_time_ms, extra)
        elif update.value_time_ms > current.value_time_ms:
            self.indicators[update.kind] = LatestValue(
                update.value, update.value_time_ms, extra, current.value, current.value_time_ms
            )
        elif update.value_time_ms == current.value_time_ms:  # the same data point polled again
            current.value, current.extra = update.value, extra
        else:
            self.counters.stale_records += 1

    # -- reads -------------------------------------------------------------------------------
    def values_at(self, now_ms: int) -> dict[str, float | None]:
        """Feature values at ``now_ms`` (``None`` where missing or stale)."""
        p = self.params
        book = self.book if self.book and self.book.time_ms >= now_ms - p.book_max_age_ms else None
        mark = self.mark if self.mark and self.mark.time_ms >= now_ms - p.mark_max_age_ms else None
        open_interest, oi_change = self._open_interest(now_ms)
        hi = (now_ms - 1) // SECOND_MS
        liq_long, liq_short = self.liquidations.window_sum(hi - p.liq_window_ms // SECOND_MS + 1, hi).tolist()
        return {
            "obi": book.obi if book else None,
            "mark_price": mark.mark_price if mark else None,
            "index_price": mark.index_price if mark else None,
            "funding_rate": mark.funding_rate if mark else None,
            "open_interest": open_interest,
            "oi_change": oi_change,
            "long_short_ratio": self._value("long_short_account_ratio", now_ms),
            "top_trader_long_share": self._top_trader_long_share(now_ms),
            "taker_buy_sell_ratio": self._value("taker_buy_sell_ratio", now_ms),
            "coinbase_premium": self._value("coinbase_premium", now_ms),
            "spot_perp_divergence": self._value("spot_perp_divergence", now_ms),
            "liq_long_usd_5m": liq_long / NOTIONAL_SCALE,
            "liq_short_usd_5m": liq_short / NOTIONAL_SCALE,
        }

    def _fresh(self, kind: str, now_ms: int) -> LatestValue | None:
        latest = self.indicators.get(kind)
        if latest is None or latest.value_time_ms < now_ms - self.params.indicator_max_age_ms:
            return None
        return latest

    def _value(self, kind: str, now_ms: int) -> float | None:
        latest = self._fresh(kind, now_ms)
        return latest.value if latest else None

    def _top_trader_long_share(self, now_ms: int) -> float | None:
        latest = self._fresh("top_trader_position_ratio", now_ms)
        if latest is None:
            return None
        if "long_account" in latest.extra:
            return latest.extra["long_account"]
        ratio = latest.value  # long/short ratio: long share = r / (1 + r)
        return ratio / (1.0 + ratio) if ratio > 0 else None

    def _open_interest(self, now_ms: int) -> tuple[float | None, float | None]:
        for kind in OPEN_INTEREST_KINDS:
            latest = self._fresh(kind, now_ms)
            if latest is None:
                continue
            change = None
            if (
                latest.prev_value is not None
                and latest.prev_value > 0
                and latest.prev_value_time_ms is not None
                and latest.value_time_ms - latest.prev_value_time_ms <= self.params.oi_change_max_span_ms
            ):
                change = (latest.value - latest.prev_value) / latest.prev_value
            return latest.value, change
        return None, None

    # -- plain-data form ---------------------------------------------------------------------
    @property
    def capacity_cells(self) -> int:
        return self.liquidations.capacity_cells

    def to_dict(self) -> dict[str, Any]:
        return {
            "book": asdict(self.book) if self.book else None,
            "mark": asdict(self.mark) if self.mark else None,
            "indicators": {kind: asdict(latest) for kind, latest in self.indicators.items()},
            "liquidations": self.liquidations.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], params: StateParams, counters: Counters) -> MarketRecords:
        records = cls(params, counters)
        records.book = BookUpdate(**data["book"]) if data["book"] else None
        records.mark = MarkUpdate(**data["mark"]) if data["mark"] else None
        records.indicators = {kind: LatestValue(**latest) for kind, latest in data["indicators"].items()}
        records.liquidations = BucketRing.from_dict(data["liquidations"])
        return records
