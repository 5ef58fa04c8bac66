"""``DetectorSet``: a symbol state's optional detectors and what feeds them.

Three independent parts, each None when off (the strategies' ``detectors`` section decides; off
costs nothing and adds no field): ``micro`` (VPIN, Kyle's lambda, Amihud from the accepted trades),
``flow`` (CVD–price divergence from the trades; OI spikes and liquidation windows from the other
inputs) and ``book`` (walls and iceberg refills from the book snapshots' levels and the trades
between them). Their changes go to the segment's log with the times from which they hold, so a
segment's evaluation times read them as the other windows.

The book detectors need snapshots and trades merged in time order: a segment's snapshots are held
until its trades are in, then both are merged; trades with no snapshot waiting are counted at once,
so a caller applies a span's books before its trades, as the engine does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np

from .detectors import BookDetectors, BookParams, DetectorParams, FlowDetectors, FlowParams, MicrostructureDetectors
from .detectors.book import BOOK_FIELDS
from .detectors.flow import FLOW_FIELDS
from .events import BookBatch, BookUpdate, IndicatorUpdate, LiquidationEvent, concat_columns
from .market_records import MarketTimeline
from .params import SECOND_MS, StateParams
from .segment_log import SegmentLog


class DetectorSet:
    """The microstructure, flow and book detectors of one symbol (each None when off)."""

    def __init__(
        self,
        params: StateParams,
        micro: DetectorParams | None = None,
        flow: FlowParams | None = None,
        book: BookParams | None = None,
    ) -> None:
        # the flow's liquidation ring and the book's count ring are as tolerant of late records as
        # the state's own and as long as the engine's segments need (the replay margin counts)
        self.late_s = max(params.ring_sizes[2] - params.liq_window_ms // SECOND_MS, 0)
        self.micro = MicrostructureDetectors(micro) if micro is not None else None
        self.flow = FlowDetectors(replace(flow, late_s=self.late_s)) if flow is not None else None
        self.book = BookDetectors(replace(book, late_s=self.late_s)) if book is not None else None
        self._book_inputs: tuple[list[BookBatch], list[tuple]] = ([], [])  # held for ``book`` until merged

    def use(self, micro: DetectorParams | None, flow: FlowParams | None, book: BookParams | None) -> None:
        """Keep each part whose parameters are these; otherwise start it afresh (its windows fill again
        from the next inputs) or, with None, drop it."""
        if (self.micro.params if self.micro is not None else None) != micro:
            self.micro = MicrostructureDetectors(micro) if micro is not None else None
        flow = replace(flow, late_s=self.late_s) if flow is not None else None
        if (self.flow.params if self.flow is not None else None) != flow:
            self.flow = FlowDetectors(flow) if flow is not None else None
        book = replace(book, late_s=self.late_s) if book is not None else None
        if (self.book.params if self.book is not None else None) != book:
            self.book = BookDetectors(book) if book is not None else None

    # ------------------------------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------------------------------
    def on_trades(
        self,
        times: np.ndarray,
        prices: np.ndarray,
        qtys: np.ndarray,
        qty_units: np.ndarray,
        quote_units: np.ndarray,
        sells: np.ndarray,
        log: SegmentLog | None,
    ) -> None:
        """Accepted trades (time-ordered)."""
        if self.micro is not None:
            units = quote_units if self.micro.params.vpin_volume_unit == "quote" else qty_units
            changes = self.micro.update(times, prices, qtys, sells, units)
            if log is not None:
                log.detectors.extend(changes)
        if self.flow is not None and self.flow.divergence_on:
            changes = self.flow.update(times, prices, qty_units, sells)
            if log is not None:
                log.divergence.extend(changes)
        if self.book is not None:
            self._book_inputs[1].append((times, prices, qty_units, sells))
            if not self._book_inputs[0]:  # no snapshot waits for them: count them now (nothing piles up)
                self.merge_book_inputs(log)

    def on_book(self, update: BookUpdate) -> None:
        if self.book is not None and update.levels is not None:
            self._book_inputs[0].append(BookBatch.from_updates([update]))

    def on_books(self, books: BookBatch | None) -> None:
        """A segment's snapshots: merged with the segment's trades once they are in."""
        if self.book is not None and books is not None and len(books):
            self._book_inputs[0].append(books)

    def on_events(self, events: list[LiquidationEvent | IndicatorUpdate]) -> Any:
        """Liquidations and indicators for the flow detectors; their OI log (None when off)."""
        if self.flow is None:
            return None
        return self.flow.apply_events(events)

    def advance_to(self, now_ms: int, log: SegmentLog | None) -> None:
        if self.micro is not None:
            changes = self.micro.advance_to(now_ms)
            if log is not None:
                log.detectors.extend(changes)
        if self.flow is not None and self.flow.divergence_on:
            changes = self.flow.advance_to(now_ms)
            if log is not None:
                log.divergence.extend(changes)
        self.merge_book_inputs(log)

    def merge_book_inputs(self, log: SegmentLog | None) -> None:
        """Feed the held book snapshots and accepted trades to ``book`` merged in time order (a trade
        at a snapshot's time before it); its log goes to the segment's."""
        books, trades = self._book_inputs
        if self.book is None or (not books and not trades):
            return
        self._book_inputs = ([], [])
        if books:
            batch = cast(BookBatch, concat_columns(books))  # of book snapshots only
            order = np.argsort(batch.time_ms, kind="stable")
            book_times, levels = batch.time_ms[order], batch.levels[order]
        else:
            book_times, levels = np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
        if trades:
            times, prices, units, sells = (np.concatenate(c) for c in zip(*trades))
            if len(times) > 1 and np.any(times[1:] < times[:-1]):
                order = np.argsort(times, kind="stable")
                times, prices, units, sells = times[order], prices[order], units[order], sells[order]
        else:
            times, prices, units, sells = (
                np.empty(0, dtype=np.int64),
                np.empty(0),
                np.empty(0, dtype=np.int64),
                np.empty(0, dtype=bool),
            )
        changes = self.book.update(book_times, levels, times, prices, units, sells)
        if log is not None:
            log.walls.extend(changes)

    # ------------------------------------------------------------------------------------------
    # reading
    # ------------------------------------------------------------------------------------------
    def log_before(self, log: SegmentLog) -> None:
        """The values before a segment, into its log."""
        if self.micro is not None:
            log.pre_detectors = self.micro.values
        if self.flow is not None:
            log.pre_divergence = self.flow.divergence
        if self.book is not None:
            log.pre_walls = self.book.current

    def columns(
        self, times: np.ndarray, log: SegmentLog | None, timeline: MarketTimeline | None
    ) -> dict[str, np.ndarray]:
        """Every detector field at each of ``times`` (NaN for a part that is off): from the segment's
        log and timeline, else from the detectors as they are."""
        n = len(times)
        values: dict[str, np.ndarray] = {}
        if self.micro is None:
            detected = np.full((n, 3), np.nan)
        elif log is not None:
            detected = log.detectors.at(times, log.pre_detectors)
        else:
            detected = np.empty((n, 3))
            detected[:] = self.micro.values
        values["vpin"], values["kyle_lambda"], values["amihud"] = detected.T.copy()
        if self.flow is None:
            for name in FLOW_FIELDS:
                values[name] = np.full(n, np.nan)
        else:
            divergence = log.divergence.at(times, log.pre_divergence) if log is not None else None
            oi = timeline.flow.at(times) if timeline is not None and timeline.flow is not None else None
            values.update(self.flow.values_many(times, divergence, oi))
        if self.book is None:
            for name in BOOK_FIELDS:
                values[name] = np.full(n, np.nan)
        else:
            walls = log.walls.at(times, log.pre_walls) if log is not None else None
            values.update(self.book.values_many(times, walls))
        return values

    # ------------------------------------------------------------------------------------------
    # size and plain-data form
    # ------------------------------------------------------------------------------------------
    @property
    def capacity_cells(self) -> int:
        return (
            (self.micro.capacity_cells if self.micro is not None else 0)
            + (self.flow.capacity_cells if self.flow is not None else 0)
            + (self.book.capacity_cells if self.book is not None else 0)
        )

    def to_dict(self) -> dict[str, Any]:
        """The parts that are on (an absent key: off, so snapshots without detectors stay as they were)."""
        data: dict[str, Any] = {}
        if self.micro is not None:
            data["detectors"] = self.micro.to_dict()
        if self.flow is not None:
            data["flow"] = self.flow.to_dict()
        if self.book is not None:
            self.merge_book_inputs(None)  # nothing held: the engine merges at every segment
            data["orderbook"] = self.book.to_dict()
        return data

    def restore(self, data: dict[str, Any]) -> None:
        """The parts saved by ``to_dict`` (with their saved parameters)."""
        if "detectors" in data:
            self.micro = MicrostructureDetectors.from_dict(data["detectors"])
        if "flow" in data:
            self.flow = FlowDetectors.from_dict(data["flow"])
        if "orderbook" in data:
            self.book = BookDetectors.from_dict(data["orderbook"])
