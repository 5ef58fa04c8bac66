"""``PendingInputs``: the engine's buffer of inputs not yet applied, per (exchange, symbol).

Why a buffer: an evaluation at ``t`` must see exactly the inputs before ``t``, whatever the batching,
so the engine holds every input until the evaluation it precedes and then applies it in time order
(trades by time, then agg id; books and marks as columns in time order, equal times in arrival order;
liquidations and indicators as a time-ordered list). The buffer also remembers the newest time among
the inputs taken out of it (``applied_ms``: the periodic cadence keeps running this long after it) and
has a plain-data form for the engine's snapshot.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

import numpy as np

from .events import (
    BookBatch,
    BookLevels,
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    MarkBatch,
    MarketEvent,
    MarkUpdate,
    TradeBatch,
    book_levels,
    concat_columns,
)

Key = tuple[str, str]
EVENT_TYPES = {cls.__name__: cls for cls in (BookUpdate, MarkUpdate, LiquidationEvent, IndicatorUpdate)}


def sorted_trades(batch: TradeBatch) -> TradeBatch:
    """``batch`` ordered by time, then agg id (itself when it already is)."""
    times, ids = batch.time_ms, batch.agg_id
    if len(batch) < 2 or (np.all(times[1:] >= times[:-1]) and np.all((times[1:] > times[:-1]) | (ids[1:] >= ids[:-1]))):
        return batch
    return batch.take(np.lexsort((ids, times)))


def by_time(batch):
    """A column batch in time order (stable: equal times keep arrival order)."""
    times = batch.time_ms
    if len(times) < 2 or np.all(times[1:] >= times[:-1]):
        return batch
    return batch.take(np.argsort(times, kind="stable"))


def _columns(items: list, pending: Any, column_type: type[BookBatch] | type[MarkBatch]) -> Any:
    """``pending`` (or nothing) followed by ``items``, consecutive single updates joined into one
    batch (arrival order kept), as one column batch in time order."""
    parts = [pending] if pending is not None else []
    run: list = []
    for item in items:
        if isinstance(item, column_type):
            if run:
                parts.append(column_type.from_updates(run))
                run = []
            parts.append(item)
        else:
            run.append(item)
    if run:
        parts.append(column_type.from_updates(run))
    return by_time(concat_columns(parts))


def _split_at(pending: dict[Key, Any], key: Key, end: int) -> Any:
    """Take the rows of ``pending[key]`` (a time-ordered column batch) before ``end`` out of it."""
    batch = pending.get(key)
    if batch is None:
        return None
    cut = int(np.searchsorted(batch.time_ms, end, side="left"))
    if cut == len(batch):
        del pending[key]
    elif cut:
        pending[key] = batch.take(slice(cut, None))
    return batch.take(slice(0, cut)) if cut else None


def event_dict(event: MarketEvent, keep_levels: Callable[[str], bool]) -> dict[str, Any]:
    """A pending event as plain data; a book's levels only where ``keep_levels(symbol)`` (where the
    book detectors read them: its md.book record is otherwise 40 levels of dead weight in every snapshot)."""
    if isinstance(event, BookUpdate):
        levels = event.levels
        if levels is not None and keep_levels(event.symbol):
            if isinstance(levels, BookLevels):
                levels = levels.pairs()  # read back as BookLevels by ``event_from_dict``
            else:
                if isinstance(levels, dict):
                    levels = (levels.get("bids") or [], levels.get("asks") or [])
                levels = [[dict(r) if isinstance(r, dict) else list(r) for r in side] for side in levels]
        else:
            levels = None
        return {
            "type": "BookUpdate",
            "exchange": event.exchange,
            "symbol": event.symbol,
            "time_ms": event.time_ms,
            "obi": event.obi,
            "levels": levels,
        }
    return {"type": type(event).__name__, **asdict(event)}


def event_from_dict(data: dict[str, Any]) -> MarketEvent:
    """The event of ``event_dict`` (a book's levels as columns again, equal values)."""
    fields = {k: v for k, v in data.items() if k != "type"}
    if data["type"] == "BookUpdate" and fields.get("levels") is not None:
        fields["levels"] = book_levels(fields["levels"])
    return EVENT_TYPES[data["type"]](**fields)


class PendingInputs:
    """Inputs waiting for the evaluation they precede, per key, each kind in time order."""

    def __init__(self) -> None:
        self.trades: dict[Key, TradeBatch] = {}
        self.books: dict[Key, BookBatch] = {}
        self.marks: dict[Key, MarkBatch] = {}
        self.other: dict[Key, list[LiquidationEvent | IndicatorUpdate]] = {}
        self.applied_ms: int | None = None  # newest event time among inputs already taken out

    def keys(self) -> set[Key]:
        return set(self.trades) | set(self.books) | set(self.marks) | set(self.other)

    # ------------------------------------------------------------------------------------------
    # in
    # ------------------------------------------------------------------------------------------
    def add_trades(self, key: Key, batch: TradeBatch) -> None:
        pending = self.trades.get(key)
        self.trades[key] = sorted_trades(batch if pending is None else TradeBatch.concat([pending, batch]))

    def add_events(
        self,
        events: Iterable[MarketEvent | BookBatch | MarkBatch],
        lowest: int,
        highest: int,
        delay: int,
        reject: Callable[[Key, int], None],
    ) -> int | None:
        """Add events with a time in ``[lowest, highest)`` (the others go to ``reject`` with their
        count); return the newest clock reach (an event's time minus ``delay``)."""
        books: dict[Key, list] = {}
        marks: dict[Key, list] = {}
        others: dict[Key, list] = {}
        newest: int | None = None
        for event in events:
            key = (event.exchange, event.symbol)
            if isinstance(event, BookBatch | MarkBatch):
                ok = (event.time_ms >= lowest) & (event.time_ms < highest)
                if not ok.all():
                    reject(key, int((~ok).sum()))
                    event = event.take(ok)
                if len(event) == 0:
                    continue
                (books if isinstance(event, BookBatch) else marks).setdefault(key, []).append(event)
                reach = int(event.time_ms.max()) - delay
            else:
                if not lowest <= event.time_ms < highest:
                    reject(key, 1)
                    continue
                if isinstance(event, BookUpdate):
                    books.setdefault(key, []).append(event)
                elif isinstance(event, MarkUpdate):
                    marks.setdefault(key, []).append(event)
                else:
                    others.setdefault(key, []).append(event)
                reach = event.time_ms - delay
            newest = reach if newest is None else max(newest, reach)
        for key, items in books.items():
            self.books[key] = _columns(items, self.books.get(key), BookBatch)
        for key, items in marks.items():
            self.marks[key] = _columns(items, self.marks.get(key), MarkBatch)
        for key, items in others.items():
            merged = self.other.get(key, []) + items
            merged.sort(key=lambda e: e.time_ms)  # stable: equal times keep arrival order
            self.other[key] = merged
        return newest

    # ------------------------------------------------------------------------------------------
    # out
    # ------------------------------------------------------------------------------------------
    def take_trades(self, key: Key, end: int) -> TradeBatch | None:
        """The key's pending trades before ``end``, taken out (None: none)."""
        batch = _split_at(self.trades, key, end)
        if batch is not None:
            self._note_applied(int(batch.time_ms[-1]))
        return batch

    def take_events(
        self, key: Key, end: int
    ) -> tuple[BookBatch | None, MarkBatch | None, list[LiquidationEvent | IndicatorUpdate]]:
        """The key's pending books, marks and other records before ``end``, taken out."""
        books, marks = _split_at(self.books, key, end), _split_at(self.marks, key, end)
        for batch in (books, marks):
            if batch is not None:
                self._note_applied(int(batch.time_ms[-1]))
        others: list[LiquidationEvent | IndicatorUpdate] = []
        items = self.other.get(key)
        if items:
            cut = bisect_left([e.time_ms for e in items], end)
            others = items[:cut]
            if cut == len(items):
                del self.other[key]
            else:
                self.other[key] = items[cut:]
            if others:
                self._note_applied(max(e.time_ms for e in others))
        return books, marks, others

    def _note_applied(self, time_ms: int) -> None:
        if self.applied_ms is None or time_ms > self.applied_ms:
            self.applied_ms = time_ms

    # ------------------------------------------------------------------------------------------
    # reading
    # ------------------------------------------------------------------------------------------
    def event_times(self) -> np.ndarray:
        """Times of every pending event other than trades (not sorted)."""
        parts = [b.time_ms for b in self.books.values()] + [m.time_ms for m in self.marks.values()]
        parts += [
            np.fromiter((e.time_ms for e in items), dtype=np.int64, count=len(items)) for items in self.other.values()
        ]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def first_time(self) -> int | None:
        """The earliest pending input's time (None: nothing pending)."""
        starts = [int(b.time_ms[0]) for b in self.trades.values()]
        event_times = self.event_times()
        if len(event_times):
            starts.append(int(event_times.min()))
        return min(starts) if starts else None

    def event_list(self) -> list[MarketEvent]:
        """Every pending event other than trades, one record each, in time order."""
        events: list[MarketEvent] = []
        for batch in list(self.books.values()) + list(self.marks.values()):
            events += batch.updates()
        for items in self.other.values():
            events += items
        events.sort(key=lambda e: e.time_ms)
        return events

    # ------------------------------------------------------------------------------------------
    # plain-data form
    # ------------------------------------------------------------------------------------------
    def trades_to_dict(self) -> list[dict[str, Any]]:
        return [
            {
                "exchange": b.exchange,
                "symbol": b.symbol,
                "agg_id": b.agg_id.tolist(),
                "time_ms": b.time_ms.tolist(),
                "price": b.price.tolist(),
                "qty": b.qty.tolist(),
                "taker_sell": b.taker_sell.tolist(),
            }
            for _, b in sorted(self.trades.items())
        ]

    def events_to_dict(self, keep_levels: Callable[[str], bool]) -> list[dict[str, Any]]:
        """``event_list`` as plain data; books keep their levels where ``keep_levels(symbol)``."""
        return [event_dict(e, keep_levels) for e in self.event_list()]

    def restore_trades(self, data: list[dict[str, Any]]) -> None:
        for b in data:
            self.trades[(b["exchange"], b["symbol"])] = TradeBatch.from_arrays(
                b["exchange"], b["symbol"], b["agg_id"], b["time_ms"], b["price"], b["qty"], b["taker_sell"]
            )
