"""The non-trade inputs of one symbol: latest book, mark and indicator values, and liquidations.

Why separate from the trade state: these records arrive a few times per second at most, keep only
their newest value (by the time of the data point; an older record never overwrites a newer one), and
go stale: a value older than its ``*_max_age_ms`` reads as ``None`` ("not available"), which scoring
turns into a zero score with a reason and gates into a veto. Liquidations are summed per second in a
10-minute ring by the side that was liquidated, so a late record still lands in its own second.

Many evaluation times at once (the engine's columnar path): ``apply_segment`` applies the inputs of
a segment of evaluation times in time order and returns a ``MarketTimeline`` that tells which book,
mark and indicator values each time saw (an input applies to the evaluations after its time), and
``values_many`` reads every time with array operations. ``values_at`` (one time) is ``values_many``
of one row, so both paths compute the same numbers.

Open-interest change is computed between consecutive data points of the same kind (the old engine
compared tick against tick, so a 5-minute value looked unchanged on every tick but one), and only
when the two points are at most ``oi_change_max_span_ms`` apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .events import BookBatch, BookUpdate, IndicatorUpdate, LiquidationEvent, MarkBatch, MarkUpdate
from .frame import exact_ratio
from .params import SECOND_MS, Counters, StateParams
from .ring import BucketRing
from .units import NOTIONAL_SCALE, notional_to_units

OPEN_INTEREST_KINDS = ("open_interest_hist", "open_interest")  # preference order
_LIQ_FIELDS = ("long_usd", "short_usd")


_NO_TIMES = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float64)
_NO_MARKS = np.empty((0, 3), dtype=np.float64)


def _latest(
    times: np.ndarray, update_times: np.ndarray, update_values: np.ndarray, before: Any, fields_of
) -> tuple[np.ndarray, np.ndarray]:
    """Per time: the values and time of the newest update strictly before it, else of ``before``
    (time -inf and NaN values when there is none)."""
    width = update_values.shape[1]
    if before is not None:
        base_values, base_time = np.asarray(fields_of(before), dtype=np.float64), before.time_ms
    else:
        base_values, base_time = np.full(width, np.nan), np.iinfo(np.int64).min // 2
    index = np.searchsorted(update_times, times, side="left") - 1
    values = np.tile(base_values, (len(times), 1))
    when = np.full(len(times), base_time, dtype=np.int64)
    has = index >= 0
    if has.any():
        values[has] = update_values[index[has]]
        when[has] = update_times[index[has]]
    return values, when


def liquidation_columns(events: list[LiquidationEvent]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The valid liquidations of ``events`` (a finite positive USD value, a LONG or SHORT side) as
    columns: second ids, USD in integer units of 1e-6, whether a long was liquidated."""
    n = len(events)
    usd = np.fromiter((e.usd for e in events), dtype=np.float64, count=n)
    long = np.fromiter((e.liquidated_side == "LONG" for e in events), dtype=bool, count=n)
    short = np.fromiter((e.liquidated_side == "SHORT" for e in events), dtype=bool, count=n)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(usd) & (usd > 0) & (long | short)
    ids = np.fromiter((e.time_ms for e in events), dtype=np.int64, count=n)[valid] // SECOND_MS
    return ids, notional_to_units(usd[valid]), long[valid]


@dataclass
class LatestValue:
    """Newest value of one indicator kind, and the data point before it."""

    value: float
    value_time_ms: int
    extra: dict[str, float] = field(default_factory=dict)
    prev_value: float | None = None
    prev_value_time_ms: int | None = None


MARKET_FIELDS = (
    "obi",
    "mark_price",
    "index_price",
    "funding_rate",
    "open_interest",
    "oi_change",
    "long_short_ratio",
    "top_trader_long_share",
    "taker_buy_sell_ratio",
    "coinbase_premium",
    "spot_perp_divergence",
    "liq_long_usd_5m",
    "liq_short_usd_5m",
)


@dataclass
class MarketTimeline:
    """What a segment's evaluations saw: the book, mark and indicators before the segment, the book
    and mark updates it accepted (time-ordered), and the indicators after each indicator update."""

    book_time: np.ndarray  # accepted updates of the segment
    book_obi: np.ndarray
    mark_time: np.ndarray
    mark_values: np.ndarray  # (n, 3): mark, index, funding
    pre_book: BookUpdate | None
    pre_mark: MarkUpdate | None
    indicator_times: list[int] = field(default_factory=list)  # time of each indicator update applied
    indicator_versions: list[dict[str, LatestValue]] = field(default_factory=list)  # before, then after each
    flow: Any = None  # the flow detectors' OI log of the segment (``detectors.flow.OiLog``), when on


def _book_dict(book: BookUpdate) -> dict[str, Any]:
    """The latest book without its levels (only the book detectors read them, from their own state)."""
    return {"exchange": book.exchange, "symbol": book.symbol, "time_ms": book.time_ms, "obi": book.obi}


class MarketRecords:
    """Book, mark, indicator and liquidation inputs of one symbol (counters shared with its state)."""

    def __init__(self, params: StateParams, counters: Counters) -> None:
        self.params = params
        self.counters = counters
        self.book: BookUpdate | None = None
        self.mark: MarkUpdate | None = None
        self.indicators: dict[str, LatestValue] = {}
        self.liquidations = BucketRing(SECOND_MS, params.ring_sizes[2], _LIQ_FIELDS)

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

    def _accept_columns(self, times: np.ndarray, valid: np.ndarray, current_time: int | None) -> np.ndarray:
        """Which of time-ordered updates are applied, one after the other, by the newest-wins rule:
        a valid one at or after the current value's time (equal times: the later one wins)."""
        accepted = valid if current_time is None else valid & (times >= current_time)
        self.counters.rejected += int((~valid).sum())
        self.counters.stale_records += int((valid & ~accepted).sum())
        return accepted

    def apply_books(self, batch: BookBatch) -> BookBatch:
        """Apply time-ordered book updates (as ``apply_book`` one by one); return the accepted ones."""
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(batch.obi) & (np.abs(batch.obi) <= 1.0)
        accepted = batch.take(self._accept_columns(batch.time_ms, valid, self.book.time_ms if self.book else None))
        if len(accepted):
            self.book = BookUpdate(batch.exchange, batch.symbol, int(accepted.time_ms[-1]), float(accepted.obi[-1]))
        return accepted

    def apply_marks(self, batch: MarkBatch) -> MarkBatch:
        """Apply time-ordered mark updates (as ``apply_mark`` one by one); return the accepted ones."""
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(batch.mark_price) & (batch.mark_price > 0) & np.isfinite(batch.funding_rate)
        accepted = batch.take(self._accept_columns(batch.time_ms, valid, self.mark.time_ms if self.mark else None))
        if len(accepted):
            self.mark = accepted.take(slice(-1, None)).updates()[0]
        return accepted

    def apply_segment(
        self, books: BookBatch | None, marks: MarkBatch | None, others: list[LiquidationEvent | IndicatorUpdate]
    ) -> MarketTimeline:
        """Apply a segment's inputs (each kind in time order) and say what every time in it saw."""
        pre_book, pre_mark = self.book, self.mark
        accepted_books = self.apply_books(books) if books is not None and len(books) else None
        accepted_marks = self.apply_marks(marks) if marks is not None and len(marks) else None
        timeline = MarketTimeline(
            accepted_books.time_ms if accepted_books is not None else _NO_TIMES,
            accepted_books.obi if accepted_books is not None else _NO_VALUES,
            accepted_marks.time_ms if accepted_marks is not None else _NO_TIMES,
            np.column_stack((accepted_marks.mark_price, accepted_marks.index_price, accepted_marks.funding_rate))
            if accepted_marks is not None
            else _NO_MARKS,
            pre_book,
            pre_mark,
        )
        liquidations = [event for event in others if isinstance(event, LiquidationEvent)]
        if liquidations:  # the ring only sums them; indicators are versioned apart: order between is free
            self.apply_liquidations(liquidations)
        for event in others:
            if isinstance(event, LiquidationEvent):
                continue
            if not timeline.indicator_versions:
                timeline.indicator_versions.append(dict(self.indicators))
            self.apply_indicator(event)  # replaces entries, never changes one: a shallow copy is a version
            if timeline.indicator_times and timeline.indicator_times[-1] == event.time_ms:
                timeline.indicator_versions[-1] = dict(self.indicators)  # same time: one version
            else:
                timeline.indicator_times.append(event.time_ms)
                timeline.indicator_versions.append(dict(self.indicators))
        return timeline

    def apply_liquidation(self, event: LiquidationEvent) -> None:
        self.apply_liquidations([event])

    def apply_liquidations(self, events: list[LiquidationEvent]) -> None:
        """Each event in turn, as array operations (``apply_liquidation`` is this on one event): an
        invalid one is rejected; one whose bucket already left the ring (at or before the newest bucket
        written before it, minus the ring size) is counted as dropped; one kept there but older than
        the ring allows after the later events is overwritten by them, which adding the batch at once
        (the ring then drops it) leaves the same."""
        ids, units, is_long = liquidation_columns(events)
        self.counters.rejected += len(events) - len(ids)
        if not len(ids):
            return
        ring = self.liquidations
        rows = np.zeros((len(ids), 2), dtype=np.int64)
        rows[is_long, 0] = units[is_long]
        rows[~is_long, 1] = units[~is_long]
        head_before = np.maximum.accumulate(np.concatenate(([ring.head], ids[:-1])))
        dropped = ids <= head_before - ring.n_buckets
        self.counters.liquidations_dropped += int(dropped.sum())
        ring.add(ids, rows)

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
            # a new object, never a change in place: a segment's timeline keeps the earlier one
            self.indicators[update.kind] = replace(current, value=update.value, extra=extra)
        else:
            self.counters.stale_records += 1

    # -- reads -------------------------------------------------------------------------------
    def values_at(self, now_ms: int) -> dict[str, float | None]:
        """Feature values at ``now_ms`` (``None`` where missing or stale)."""
        values = self.values_many(np.array([now_ms], dtype=np.int64))
        return {name: (None if (v := float(values[name][0])) != v else v) for name in MARKET_FIELDS}

    def values_many(self, times: np.ndarray, timeline: MarketTimeline | None = None) -> dict[str, np.ndarray]:
        """Feature values at every one of ``times`` (sorted), NaN where missing or stale.

        Without a timeline the current records answer every time; with one (``apply_segment``) each
        time sees the updates before it. Liquidation sums are read from the ring as it is: a
        liquidation at or after a time lies outside that time's window anyway.
        """
        p = self.params
        n = len(times)
        out: dict[str, np.ndarray] = {}
        if timeline is None:
            timeline = MarketTimeline(_NO_TIMES, _NO_VALUES, _NO_TIMES, _NO_MARKS, self.book, self.mark)

        # book and mark: the newest accepted update before each time, else the one before the segment
        obi, book_time = _latest(
            times, timeline.book_time, timeline.book_obi[:, None], timeline.pre_book, lambda b: (b.obi,)
        )
        fresh = book_time >= times - p.book_max_age_ms
        out["obi"] = np.where(fresh, obi[:, 0], np.nan)
        marks, mark_time = _latest(
            times,
            timeline.mark_time,
            timeline.mark_values,
            timeline.pre_mark,
            lambda m: (m.mark_price, m.index_price, m.funding_rate),
        )
        fresh = mark_time >= times - p.mark_max_age_ms
        for k, name in enumerate(("mark_price", "index_price", "funding_rate")):
            out[name] = np.where(fresh, marks[:, k], np.nan)

        # indicators: one version per indicator update of the segment
        for name in (
            "open_interest",
            "oi_change",
            "long_short_ratio",
            "top_trader_long_share",
            "taker_buy_sell_ratio",
            "coinbase_premium",
            "spot_perp_divergence",
        ):
            out[name] = np.full(n, np.nan)
        if timeline.indicator_versions:
            version = np.searchsorted(np.asarray(timeline.indicator_times, dtype=np.int64), times, side="left")
            for v in np.unique(version).tolist():
                rows = np.flatnonzero(version == v)
                self._indicator_values(timeline.indicator_versions[v], times[rows], rows, out)
        else:
            self._indicator_values(self.indicators, times, np.arange(n), out)

        hi = (times - 1) // SECOND_MS
        start = hi - p.liq_window_ms // SECOND_MS + 1
        sums = self.liquidations.window_sums(start, hi + 1)
        out["liq_long_usd_5m"] = exact_ratio(sums[:, 0], NOTIONAL_SCALE)
        out["liq_short_usd_5m"] = exact_ratio(sums[:, 1], NOTIONAL_SCALE)
        return out

    def _indicator_values(
        self, indicators: dict[str, LatestValue], times: np.ndarray, rows: np.ndarray, out: dict[str, np.ndarray]
    ) -> None:
        limit = times - self.params.indicator_max_age_ms

        def fresh(kind: str) -> tuple[LatestValue | None, np.ndarray]:
            latest = indicators.get(kind)
            if latest is None:
                return None, np.zeros(len(times), dtype=bool)
            return latest, latest.value_time_ms >= limit

        chosen = np.zeros(len(times), dtype=bool)
        for kind in OPEN_INTEREST_KINDS:  # the first fresh kind in preference order
            latest, mask = fresh(kind)
            use = mask & ~chosen
            if latest is None or not use.any():
                continue
            out["open_interest"][rows[use]] = latest.value
            if (
                latest.prev_value is not None
                and latest.prev_value > 0
                and latest.prev_value_time_ms is not None
                and latest.value_time_ms - latest.prev_value_time_ms <= self.params.oi_change_max_span_ms
            ):
                out["oi_change"][rows[use]] = (latest.value - latest.prev_value) / latest.prev_value
            chosen |= mask
        for name, kind in (
            ("long_short_ratio", "long_short_account_ratio"),
            ("taker_buy_sell_ratio", "taker_buy_sell_ratio"),
            ("coinbase_premium", "coinbase_premium"),
            ("spot_perp_divergence", "spot_perp_divergence"),
        ):
            latest, mask = fresh(kind)
            if latest is not None:
                out[name][rows[mask]] = latest.value
        latest, mask = fresh("top_trader_position_ratio")
        if latest is not None:
            if "long_account" in latest.extra:
                share: float | None = latest.extra["long_account"]
            else:
                ratio = latest.value  # long/short ratio: long share = r / (1 + r)
                share = ratio / (1.0 + ratio) if ratio > 0 else None
            if share is not None:
                out["top_trader_long_share"][rows[mask]] = share

    # -- plain-data form ---------------------------------------------------------------------
    @property
    def capacity_cells(self) -> int:
        return self.liquidations.capacity_cells

    def to_dict(self) -> dict[str, Any]:
        return {
            "book": _book_dict(self.book) if self.book else None,
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
