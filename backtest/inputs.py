"""What a backtest source delivers: market inputs cut into event-time slices, as the producers publish them.

Why one shape for every source (synthetic, recording, Binance Vision, database, topics): the runner
must not know where data came from, and the records must be exactly what the live pipeline's
consumers receive, so the engine and the executor are fed through the same adapters as live
(``stream_apps.core.events.*_from_record`` for the engine, ``Executor.on_*`` for execution). Trades
are columnar (``TradeBatch``, one per ``exchange:symbol``) because they are most of the volume; the
other inputs are the Avro-shaped records of ``md.book``, ``md.mark``, ``md.liquidations`` and
``md.indicators``.

A slice holds every input whose *engine time* lies in ``[start_ms, end_ms)`` (the time the engine
orders it by: trade time, book/mark event time, liquidation trade time, indicator receive time; see
``stream_apps.core.events``), each kind in time order. ``SliceCutter`` turns day- or hour-sized
blocks of time-ordered inputs into such slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stream_apps.core.events import (
    BookBatch,
    MarkBatch,
    TradeBatch,
    indicator_from_record,
    liquidation_from_record,
    record_column,
)

Record = dict[str, Any]
RECORD_KINDS = ("books", "marks", "liquidations", "indicators")
# the field each record kind is ordered by in the engine (stream_apps.core.events.*_from_record)
ENGINE_TIME = {"books": "event_time", "marks": "event_time", "liquidations": "trade_time", "indicators": "receive_time"}
# Slices of an hour: every source holds at least an hour in memory (synthetic and database: an hour,
# Vision: a day, recordings and topics: the whole range), and results do not depend on the slice size
# (``backtest.runner``; tests/backtest/test_backtest_feed.py), while the engine's per-call costs fall
# with fewer, larger batches (benchmarks/RESULTS.md, "Backtest runner throughput"). Smaller slices only
# make progress reports and Ctrl-C finer.
DEFAULT_SLICE_MS = 3_600_000


def market_key(exchange: str, symbol: str) -> str:
    return f"{exchange}:{symbol}"


@dataclass(frozen=True, eq=False)
class RecordColumns:
    """One market's books or marks of a slice as columns (``BookBatch``/``MarkBatch``: the values
    ``book_from_record``/``mark_from_record`` read), with each record's position in the slice's list."""

    key: str
    index: np.ndarray  # int64, ascending
    batch: BookBatch | MarkBatch


@dataclass
class MarketSlice:
    start_ms: int
    end_ms: int
    trades: dict[str, TradeBatch] = field(default_factory=dict)
    books: list[Record] = field(default_factory=list)
    marks: list[Record] = field(default_factory=list)
    liquidations: list[Record] = field(default_factory=list)
    indicators: list[Record] = field(default_factory=list)
    _columns: dict[str, list[RecordColumns]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def engine_events(self) -> dict[str, list]:
        """Per market key, the engine's inputs besides trades (``Engine.process``'s events): books and
        marks as columns, the few liquidations and indicators as one event each."""
        events: dict[str, list] = {}
        for kind in ("books", "marks"):
            for cols in self.columns(kind):
                events.setdefault(cols.key, []).append(cols.batch)
        for kind, adapt in (("liquidations", liquidation_from_record), ("indicators", indicator_from_record)):
            for record in getattr(self, kind):
                events.setdefault(market_key(record["exchange"], record["symbol"]), []).append(adapt(record))
        return events

    def columns(self, kind: str) -> list[RecordColumns]:
        """``books`` or ``marks`` as columns per market, in record order (made once per slice: the
        engine takes them as they are, the runner orders the executor's inputs with them; a record
        becomes an object only where the executor is handed it)."""
        done = self._columns.get(kind)
        if done is None:
            groups: dict[tuple[str, str], list[int]] = {}
            records = getattr(self, kind)
            for i, r in enumerate(records):
                group = groups.get((r["exchange"], r["symbol"]))
                if group is None:
                    group = groups[(r["exchange"], r["symbol"])] = []
                group.append(i)
            done = self._columns[kind] = []
            for (exchange, symbol), index in groups.items():
                rows = [records[i] for i in index]
                if kind == "books":
                    batch: BookBatch | MarkBatch = BookBatch.from_arrays(
                        exchange,
                        symbol,
                        [r["event_time"] for r in rows],
                        [r["obi_10"] for r in rows],
                        record_column(rows),
                    )  # levels for the book detectors: the records themselves, as live
                elif kind == "marks":
                    batch = MarkBatch.from_arrays(
                        exchange,
                        symbol,
                        [r["event_time"] for r in rows],
                        [r["mark_price"] for r in rows],
                        [r["index_price"] for r in rows],
                        [r["funding_rate"] for r in rows],
                        [r["next_funding_time"] for r in rows],
                    )
                else:
                    raise ValueError(f"no columns for {kind!r}")
                done.append(RecordColumns(market_key(exchange, symbol), np.asarray(index, dtype=np.int64), batch))
        return done

    @property
    def trade_count(self) -> int:
        return sum(len(b) for b in self.trades.values())

    @property
    def record_count(self) -> int:
        return len(self.books) + len(self.marks) + len(self.liquidations) + len(self.indicators)

    def keys(self) -> set[str]:
        keys = set(self.trades)
        for kind in RECORD_KINDS:
            keys.update(market_key(r["exchange"], r["symbol"]) for r in getattr(self, kind))
        return keys


@dataclass
class SourceReport:
    """What a source could not deliver: listed in the run result, never fatal."""

    missing: list[str] = field(default_factory=list)  # "BTCUSDT 2024-01-02 aggTrades: no file at <url>"
    bad_rows: list[str] = field(default_factory=list)  # "<file>:<line>: <reason>"
    notes: dict[str, str] = field(default_factory=dict)  # input -> how it is approximated or why it is absent
    bad_row_count: int = 0

    def add_bad_row(self, text: str, limit: int = 1000) -> None:
        self.bad_row_count += 1
        if len(self.bad_rows) < limit:
            self.bad_rows.append(text)


class Source(Protocol):
    """A backtest input source (see ``backtest.sources``)."""

    name: str  # e.g. "synthetic:7", "vision:/data", "db"
    exchange: str
    symbols: list[str]
    from_ms: int
    to_ms: int
    report: SourceReport

    def inputs(self) -> set[str]:
        """The inputs this source can deliver at all: "trades", "book", "mark", "liquidations" and
        indicator kinds (``open_interest_hist``, ``coinbase_premium``...)."""
        ...

    def slices(self) -> Iterator[MarketSlice]:
        """Inputs in ``[from_ms, to_ms)`` as consecutive slices in time order."""
        ...


@dataclass
class Block:
    """A time-ordered block of inputs covering ``[start_ms, end_ms)`` (e.g. one day of one source)."""

    start_ms: int
    end_ms: int
    trades: dict[str, TradeBatch] = field(default_factory=dict)
    records: dict[str, list[Record]] = field(default_factory=dict)  # kind -> records in engine-time order


class SliceCutter:
    """Cuts consecutive ``Block``s into slices of ``slice_ms`` aligned to multiples of it, clipped to
    ``[from_ms, to_ms)``. Blocks must come in time order and not overlap."""

    def __init__(self, from_ms: int, to_ms: int, slice_ms: int = DEFAULT_SLICE_MS) -> None:
        if slice_ms <= 0 or slice_ms % 1000:
            raise ValueError("slice_ms must be a positive whole number of seconds")
        self.from_ms, self.to_ms, self.slice_ms = from_ms, to_ms, slice_ms

    def cut(self, blocks: Iterable[Block]) -> Iterator[MarketSlice]:
        for block in blocks:
            start, end = max(block.start_ms, self.from_ms), min(block.end_ms, self.to_ms)
            if end <= start:
                continue
            trades = {
                k: b.take(slice(*np.searchsorted(b.time_ms, [start, end], side="left")))
                for k, b in block.trades.items()
            }
            times = {
                kind: np.fromiter((r[ENGINE_TIME[kind]] for r in recs), dtype=np.int64, count=len(recs))
                for kind, recs in block.records.items()
            }
            edge = start
            while edge < end:
                stop = min((edge // self.slice_ms + 1) * self.slice_ms, end)
                piece = MarketSlice(edge, stop)
                for key, batch in trades.items():
                    lo, hi = np.searchsorted(batch.time_ms, [edge, stop], side="left")
                    if hi > lo:
                        piece.trades[key] = batch.take(slice(lo, hi))
                for kind, recs in block.records.items():
                    lo, hi = np.searchsorted(times[kind], [edge, stop], side="left")
                    if hi > lo:
                        setattr(piece, kind, recs[lo:hi])
                yield piece
                edge = stop


def sort_records(records: list[Record], kind: str) -> list[Record]:
    """Records of one kind in engine-time order (stable: equal times keep their order)."""
    field_name = ENGINE_TIME[kind]
    return sorted(records, key=lambda r: r[field_name])
