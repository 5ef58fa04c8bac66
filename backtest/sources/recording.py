"""``--source recording:DIR``: a Binance USD-M websocket recording (the fake exchange's format), turned
into the records the Binance producer would have published from it.

The frames go through the producer's own pieces, in receive order: ``producers.binance.parse`` for
every stream, ``AggTradeSequencer`` for agg-id order and duplicates, ``OrderBookSync`` with the
depth snapshot the fake exchange would serve at that point (``DepthTimeline``), and
``book_snapshot_record`` for ``md.book``. What the producer decides by wall clock is emulated on the
recording's receive clock: a top-20 book is published every 250 ms when it changed (the producer's
timer), a REST depth snapshot is taken at the first diff (the producer asks for one then), and an
agg-id hole is given up at once (the live producer would ask REST ``aggTrades``, which a recording
does not hold). md.indicators are REST-polled live, so a recording has none: the report says so.

``--from``/``--to`` default to the recording's span.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson

from backtest.inputs import MarketSlice, Record, SourceReport
from backtest.sources import SourceError
from backtest.sources.records import RecordSource
from producers.binance.book_sync import OrderBookSync
from producers.binance.parse import (
    EXCHANGE,
    FrameError,
    parse_agg_trade,
    parse_depth_diff,
    parse_depth_snapshot,
    parse_force_order,
    parse_mark_price,
    stream_kind,
)
from producers.binance.trade_sequencer import AggTradeSequencer
from producers.common import book_snapshot_record
from producers.fake_exchange.depth_book import build_timelines
from producers.fake_exchange.recording import Recording, RecordingError, load_recording

BOOK_INTERVAL_MS = 250  # producers.binance.producer.ProducerConfig.book_interval_ms
BOOK_DEPTH = 20
INDICATOR_NOTE = "REST-polled by the live producer; a websocket recording does not hold it"
INDICATOR_KINDS = ("open_interest_hist", "long_short_account_ratio", "top_trader_position_ratio",
                   "taker_buy_sell_ratio", "coinbase_premium", "spot_perp_divergence")


def recording_span(recording: Recording) -> tuple[int, int]:
    """[first, last + 1 s) of the frames' receive times, in ms."""
    if not recording.frames:
        return 0, 0
    return int(recording.frames[0].receive_time * 1000), int(recording.frames[-1].receive_time * 1000) + 1000


class RecordingSource:
    exchange = EXCHANGE

    def __init__(self, directory: Path, symbols: list[str] | None, from_ms: int | None, to_ms: int | None, *,
                 slice_ms: int = 60_000) -> None:
        try:
            self.recording = load_recording(directory)
        except (RecordingError, OSError) as exc:
            raise SourceError(f"recording {directory}: {exc}") from None
        available = list(self.recording.symbols)
        chosen = symbols or available
        unknown = [s for s in chosen if s not in available]
        if unknown:
            raise SourceError(f"unknown symbol {', '.join(unknown)}: the recording {directory} has "
                              f"{', '.join(available) or 'no symbols'}")
        start, end = recording_span(self.recording)
        self.name = f"recording:{directory}"
        self.symbols = list(chosen)
        self.from_ms = start if from_ms is None else from_ms
        self.to_ms = end if to_ms is None else to_ms
        self.slice_ms = slice_ms
        self.report = SourceReport()
        for kind in INDICATOR_KINDS:
            self.report.notes[kind] = INDICATOR_NOTE
        self.report.notes["oi_change"] = self.report.notes["long_short_ratio"] = \
            self.report.notes["top_trader_long_share"] = INDICATOR_NOTE
        self._records: dict[str, list[Record]] | None = None

    def inputs(self) -> set[str]:
        kinds = {stream_kind(s) for s in self.recording.streams}
        found = {"trades"} if "aggTrade" in kinds else set()
        found |= {"book"} if "depth" in kinds else set()
        found |= {"mark"} if "markPrice" in kinds else set()
        found |= {"liquidations"} if "forceOrder" in kinds else set()
        return found

    def records(self) -> dict[str, list[Record]]:
        if self._records is None:
            self._records = _Producer(self.recording, set(self.symbols), self.report).run()
        return self._records

    def slices(self) -> Iterator[MarketSlice]:
        recs = self.records()
        inner = RecordSource(self.name, EXCHANGE, self.symbols, self.from_ms, self.to_ms, trades=recs["trades"],
                             books=recs["books"], marks=recs["marks"], liquidations=recs["liquidations"],
                             report=self.report, slice_ms=self.slice_ms)
        return inner.slices()


class _Producer:
    """The Binance producer's record-making, replayed on the recording's receive clock."""

    def __init__(self, recording: Recording, symbols: set[str], report: SourceReport) -> None:
        self.recording = recording
        self.symbols = symbols
        self.report = report
        self.timelines = build_timelines(recording)
        self.books = {s: OrderBookSync(s) for s in symbols}
        self.sequencers = {s: AggTradeSequencer(s) for s in symbols}
        self.published_u: dict[str, int] = {}
        self.last_mark: dict[str, int] = {}
        self.liquidations_seen: set[tuple] = set()
        self.out: dict[str, list[Record]] = {"trades": [], "books": [], "marks": [], "liquidations": []}
        self.ignored: set[str] = set()

    def run(self) -> dict[str, list[Record]]:
        next_tick: int | None = None
        for frame in self.recording.frames:
            received = round(frame.receive_time * 1000)
            if next_tick is None:
                next_tick = (received // BOOK_INTERVAL_MS + 1) * BOOK_INTERVAL_MS
            while received >= next_tick:
                self._publish_books(next_tick)
                next_tick += BOOK_INTERVAL_MS
            try:
                self._frame(frame, received)
            except FrameError as exc:
                self.report.add_bad_row(f"ws_frames.txt frame {frame.index} ({frame.stream}): {exc}")
        for sym, seq in sorted(self.sequencers.items()):
            if seq.counters.ids_given_up:
                self.report.missing.append(f"{sym}: {seq.counters.ids_given_up} agg ids missing from the recording "
                                           f"({seq.counters.gaps_given_up} holes)")
        if self.ignored:
            self.report.notes["ignored_streams"] = (f"{', '.join(sorted(self.ignored))}: not streams the producer "
                                                    "subscribes to")
        return self.out

    def _frame(self, frame, received: int) -> None:
        kind = stream_kind(frame.stream)
        data = frame.payload
        if kind == "aggTrade":
            trade = parse_agg_trade(data, received)
            seq = self.sequencers.get(trade["symbol"])
            if seq is None:
                return
            released = seq.offer(trade)
            gap = seq.gap
            if gap is not None:  # no REST history in a recording: give the hole up at once
                released += seq.give_up(gap)[1]
            self.out["trades"] += released
        elif kind == "depth":
            diff = parse_depth_diff(data, received)
            book = self.books.get(diff.symbol)
            if book is None:
                return
            book.on_diff(diff)
            if book.needs_snapshot:
                self._snapshot(book, frame.index + 1, received)
        elif kind == "markPrice":
            rec = parse_mark_price(data, received)
            if rec["symbol"] in self.symbols and rec["event_time"] > self.last_mark.get(rec["symbol"], -1):
                self.last_mark[rec["symbol"]] = rec["event_time"]
                self.out["marks"].append(rec)
        elif kind == "forceOrder":
            rec = parse_force_order(data, received)
            ident = (rec["symbol"], rec["trade_time"], rec["side"], rec["qty"], rec["avg_price"])
            if rec["symbol"] in self.symbols and ident not in self.liquidations_seen:
                self.liquidations_seen.add(ident)
                self.out["liquidations"].append(rec)
        else:
            self.ignored.add(kind)

    def _snapshot(self, book: OrderBookSync, position: int, received: int) -> None:
        timeline = self.timelines.get(book.symbol)
        snap = timeline.snapshot_at(position) if timeline is not None else None
        if snap is None:
            return
        body = orjson.loads(snap.to_body(1000))
        book.on_snapshot(parse_depth_snapshot(body, book.symbol, received))

    def _publish_books(self, now_ms: int) -> None:
        for sym in sorted(self.books):
            book = self.books[sym]
            if not book.is_live or self.published_u.get(sym) == book.last_update_id:
                continue
            self.published_u[sym] = book.last_update_id
            self.out["books"].append(book_snapshot_record(EXCHANGE, book, BOOK_DEPTH, now_ms=now_ms))
