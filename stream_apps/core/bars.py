"""Time bars (1m for ``bars.1m``, 5m for ATR) built incrementally from batches of trades.

Why hand-rolled: a bar here must be updated from a numpy batch in a few vectorised calls, survive a
restart as plain data, and close on event time, which rules out pandas resampling of a growing frame.
Volumes are kept in integer units (see ``units``) so a bar is the same whatever the batching.
A bar is only emitted once it is closed: by a trade of a later interval or by ``close_until``.
Intervals without trades produce no bar (ATR uses the previous close across such holes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .units import NOTIONAL_SCALE, QTY_SCALE


@dataclass(frozen=True, slots=True)
class Bar:
    open_time: int  # inclusive, aligned to the interval
    close_time: int  # exclusive (open_time + interval)
    open: float
    high: float
    low: float
    close: float
    volume_units: int
    buy_units: int
    sell_units: int
    quote_units: int
    trade_count: int
    first_agg_id: int
    last_agg_id: int

    @property
    def volume(self) -> float:
        return self.volume_units / QTY_SCALE

    @property
    def vwap(self) -> float:
        return (self.quote_units / NOTIONAL_SCALE) / self.volume if self.volume_units else self.close

    def merge(self, other: Bar) -> Bar:
        """This bar followed by ``other`` (same interval, later trades)."""
        return Bar(
            self.open_time,
            self.close_time,
            self.open,
            max(self.high, other.high),
            min(self.low, other.low),
            other.close,
            self.volume_units + other.volume_units,
            self.buy_units + other.buy_units,
            self.sell_units + other.sell_units,
            self.quote_units + other.quote_units,
            self.trade_count + other.trade_count,
            self.first_agg_id,
            other.last_agg_id,
        )

    def relabel(self, open_time: int, close_time: int) -> Bar:
        """The same trades as a bar of a coarser interval."""
        return Bar(
            open_time,
            close_time,
            self.open,
            self.high,
            self.low,
            self.close,
            self.volume_units,
            self.buy_units,
            self.sell_units,
            self.quote_units,
            self.trade_count,
            self.first_agg_id,
            self.last_agg_id,
        )

    def to_record(self, exchange: str, symbol: str) -> dict[str, Any]:
        """The ``bars.1m`` Avro record (schemas/avro/bar.avsc)."""
        return {
            "exchange": exchange,
            "symbol": symbol,
            "open_time": self.open_time,
            "close_time": self.close_time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "buy_volume": self.buy_units / QTY_SCALE,
            "sell_volume": self.sell_units / QTY_SCALE,
            "quote_volume": self.quote_units / NOTIONAL_SCALE,
            "vwap": self.vwap,
            "trade_count": self.trade_count,
            "first_agg_id": self.first_agg_id,
            "last_agg_id": self.last_agg_id,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bar:
        return cls(**data)


def bar_segments(
    interval_ms: int,
    times: np.ndarray,
    prices: np.ndarray,
    qty_units: np.ndarray,
    buy_units: np.ndarray,
    quote_units: np.ndarray,
    agg_ids: np.ndarray,
) -> list[Bar]:
    """One partial bar per interval touched by a batch (times non-decreasing per interval)."""
    if len(times) == 0:
        return []
    bar_index = times // interval_ms
    starts = np.concatenate(([0], np.flatnonzero(bar_index[1:] != bar_index[:-1]) + 1))
    sums = np.add.reduceat(np.column_stack((buy_units, qty_units - buy_units, quote_units)), starts, axis=0)
    return segments_from_groups(interval_ms, bar_index[starts], starts, prices, sums, agg_ids)


def segments_from_groups(
    interval_ms: int,
    bar_numbers: np.ndarray,
    starts: np.ndarray,
    prices: np.ndarray,
    sums: np.ndarray,
    agg_ids: np.ndarray,
) -> list[Bar]:
    """Partial bars from trades already grouped by interval: ``starts`` of each group and per-group
    ``sums`` with columns (buy units, sell units, quote units, ...)."""
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = len(prices)
    last = ends - 1
    highs = np.maximum.reduceat(prices, starts).tolist()
    lows = np.minimum.reduceat(prices, starts).tolist()
    firsts, closes = prices[starts].tolist(), prices[last].tolist()
    first_ids, last_ids = agg_ids[starts].tolist(), agg_ids[last].tolist()
    counts = (ends - starts).tolist()
    out = []
    for k, (number, (buys, sells, quote)) in enumerate(zip(bar_numbers.tolist(), sums[:, :3].tolist())):
        open_time = number * interval_ms
        out.append(
            Bar(
                open_time,
                open_time + interval_ms,
                firsts[k],
                highs[k],
                lows[k],
                closes[k],
                buys + sells,
                buys,
                sells,
                quote,
                counts[k],
                first_ids[k],
                last_ids[k],
            )
        )
    return out


class BarBuilder:
    """Holds the open bar of one interval and turns trade batches into closed bars."""

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = int(interval_ms)
        self.open_bar: Bar | None = None

    def update(
        self,
        times: np.ndarray,
        prices: np.ndarray,
        qty_units: np.ndarray,
        buy_mask: np.ndarray,
        quote_units: np.ndarray,
        agg_ids: np.ndarray,
    ) -> list[Bar]:
        """Apply trades whose times are non-decreasing per interval; return the bars they closed."""
        buy_units = np.where(buy_mask, qty_units, 0)
        return self.apply(bar_segments(self.interval_ms, times, prices, qty_units, buy_units, quote_units, agg_ids))

    def apply(self, segments: list[Bar]) -> list[Bar]:
        """Merge partial bars in time order (of this interval or of a finer one that divides it)."""
        closed: list[Bar] = []
        interval = self.interval_ms
        for segment in segments:
            open_time = segment.open_time - segment.open_time % interval
            if self.open_bar is not None and self.open_bar.open_time == open_time:
                self.open_bar = self.open_bar.merge(segment)
            else:
                if self.open_bar is not None:
                    closed.append(self.open_bar)
                if segment.close_time - segment.open_time != interval:
                    segment = segment.relabel(open_time, open_time + interval)
                self.open_bar = segment
        return closed

    def close_until(self, now_ms: int) -> list[Bar]:
        """Close the open bar if its interval ended at or before ``now_ms``."""
        if self.open_bar is not None and self.open_bar.close_time <= now_ms:
            bar, self.open_bar = self.open_bar, None
            return [bar]
        return []

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_ms": self.interval_ms,
            "open_bar": self.open_bar.to_dict() if self.open_bar else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BarBuilder:
        builder = cls(data["interval_ms"])
        builder.open_bar = Bar.from_dict(data["open_bar"]) if data["open_bar"] else None
        return builder
