"""Normalised engine inputs: a columnar trade batch and the small per-symbol market records.

Why columnar trades: the hot path updates state with a few numpy calls per batch instead of touching a
Python object per trade. The other inputs (book, mark, liquidation, indicator) arrive at most a few
times per second per symbol, so they are small frozen dataclasses. ``*_from_record`` adapters read the
Avro records of schemas/avro (trade, book_snapshot, mark_price, liquidation, market_indicator) so
Faust agents and the replay runner feed the engine the same way.

Times: ``time_ms`` is the event time that orders an input and decides which evaluation first sees it.
For REST-polled indicators that is the receive time (when the value became known: the data point's
own ``event_time`` may be minutes older, and using it would let a replay see the value earlier than the
live system did); the data point's time is kept as ``value_time_ms`` for staleness checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np

_PRICE, _QTY, _FIRST, _SECOND = itemgetter("price"), itemgetter("qty"), itemgetter(0), itemgetter(1)


@dataclass(frozen=True, slots=True, eq=False)
class TradeBatch:
    """Trades of one (exchange, symbol), in arrival order, as parallel numpy columns."""

    exchange: str
    symbol: str
    agg_id: np.ndarray  # int64
    time_ms: np.ndarray  # int64, trade (match) time
    price: np.ndarray  # float64
    qty: np.ndarray  # float64, base currency
    taker_sell: np.ndarray  # bool: True when the aggressor sold (Binance m = buyer is maker)

    @classmethod
    def from_arrays(
        cls,
        exchange: str,
        symbol: str,
        agg_id: Iterable[int] | np.ndarray,
        time_ms: Iterable[int] | np.ndarray,
        price: Iterable[float] | np.ndarray,
        qty: Iterable[float] | np.ndarray,
        taker_sell: Iterable[bool] | np.ndarray,
    ) -> TradeBatch:
        columns = (
            np.asarray(agg_id, dtype=np.int64),
            np.asarray(time_ms, dtype=np.int64),
            np.asarray(price, dtype=np.float64),
            np.asarray(qty, dtype=np.float64),
            np.asarray(taker_sell, dtype=bool),
        )
        if len({len(c) for c in columns}) != 1:
            raise ValueError("TradeBatch columns must have the same length")
        return cls(exchange, symbol, *columns)

    @classmethod
    def empty(cls, exchange: str, symbol: str) -> TradeBatch:
        return cls.from_arrays(exchange, symbol, [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.agg_id)

    def take(self, index: np.ndarray | slice) -> TradeBatch:
        return TradeBatch(
            self.exchange,
            self.symbol,
            self.agg_id[index],
            self.time_ms[index],
            self.price[index],
            self.qty[index],
            self.taker_sell[index],
        )

    @staticmethod
    def concat(batches: list[TradeBatch]) -> TradeBatch:
        if not batches:
            raise ValueError("nothing to concatenate")
        first = batches[0]
        if len(batches) == 1:
            return first
        return TradeBatch(
            first.exchange,
            first.symbol,
            np.concatenate([b.agg_id for b in batches]),
            np.concatenate([b.time_ms for b in batches]),
            np.concatenate([b.price for b in batches]),
            np.concatenate([b.qty for b in batches]),
            np.concatenate([b.taker_sell for b in batches]),
        )


def trade_batches_from_records(records: Iterable[Mapping[str, Any]]) -> list[TradeBatch]:
    """Group ``md.trades`` records (schemas/avro/trade.avsc) into one batch per (exchange, symbol)."""
    columns: dict[tuple[str, str], list[list[Any]]] = {}
    for record in records:
        key = (record["exchange"], record["symbol"])
        cols = columns.setdefault(key, [[], [], [], [], []])
        cols[0].append(record["agg_id"])
        cols[1].append(record["trade_time"])
        cols[2].append(record["price"])
        cols[3].append(record["qty"])
        cols[4].append(record["taker_side"] == "SELL")
    return [TradeBatch.from_arrays(ex, sym, *cols) for (ex, sym), cols in columns.items()]


@dataclass(frozen=True, slots=True, eq=False)
class BookLevels:
    """A book snapshot's levels as columns: ``data`` (float64) holds the prices then the quantities
    (as many of each) of the bids then the asks, each side in the order the record lists them (best
    first), ``n_bids`` of them bids.

    Why: the book detectors compare every snapshot level by level in a compiled loop, and reading
    40 ``{"price", "qty"}`` dicts in Python costs several times that loop (7-10 µs a 20-level
    snapshot against 1-2 µs, ``bench_detectors --only book``). Handed ``BookLevels``, the engine
    concatenates one flat array per snapshot, one call for a segment's snapshots. The decoders do
    not read records into them (every record would pay the reading, detectors on or off:
    ``record_column``); sources that hold the levels as arrays attach them (``BookRecord``), and the
    engine restores its pending snapshots in this form (``Engine.from_dict``)."""

    data: np.ndarray
    n_bids: int

    @property
    def prices(self) -> np.ndarray:
        return self.data[: len(self.data) // 2]

    @property
    def qtys(self) -> np.ndarray:
        return self.data[len(self.data) // 2 :]

    def pairs(self) -> list[list[list[float]]]:
        """``[bids, asks]`` of ``[price, qty]`` (plain data; ``book_levels`` reads it back exactly)."""
        rows = self.data.reshape(2, -1).T.tolist()
        return [rows[: self.n_bids], rows[self.n_bids :]]


class BookRecord(dict):
    """An ``md.book`` record (a dict: every consumer reads it as before) that also carries its levels
    as ``BookLevels`` (``columns``), made by a source that holds them as arrays anyway (the database
    source, the generated session, the worker's md.book decoder).

    Why: the book detectors compare levels as arrays, and reading 40 ``{"price", "qty"}`` dicts back
    costs 4-8 µs a snapshot, more than the comparison (``bench_detectors --only book``); a source
    that builds the arrays once (~1-2 µs) spares that, and a run with the detectors off pays only
    that. ``book_from_record`` and ``record_column`` hand the engine ``columns`` when present; the
    values are those ``book_levels`` reads from the record's own levels (tests of each source)."""

    __slots__ = ("columns",)

    def __init__(self, fields: Mapping[str, Any], columns: BookLevels | None) -> None:
        super().__init__(fields)
        self.columns = columns


def attached_levels(item: Any) -> Any:
    """``item``'s ``columns`` when it is a ``BookRecord`` carrying them, else ``item`` itself."""
    return item.columns if type(item) is BookRecord and item.columns is not None else item


def book_record(
    fields: dict[str, Any], bid_prices: list, bid_qtys: list, ask_prices: list, ask_qtys: list
) -> BookRecord:
    """An md.book record from its other ``fields`` and its levels as four lists (best first): the
    ``bids``/``asks`` items and the columns from the same values."""
    has_obi = "obi_10" in fields
    obi = fields.pop("obi_10", None)  # the schema's order: bids and asks before it
    fields["bids"] = [{"price": p, "qty": q} for p, q in zip(bid_prices, bid_qtys)]
    fields["asks"] = [{"price": p, "qty": q} for p, q in zip(ask_prices, ask_qtys)]
    if has_obi:
        fields["obi_10"] = obi
    columns = BookLevels(np.array(bid_prices + ask_prices + bid_qtys + ask_qtys, dtype=np.float64), len(bid_prices))
    return BookRecord(fields, columns)


def _side_values(rows: Any) -> tuple[list, list]:
    if not rows:
        return [], []
    if type(rows[0]) is dict:  # the Avro record's levels
        return list(map(_PRICE, rows)), list(map(_QTY, rows))
    return list(map(_FIRST, rows)), list(map(_SECOND, rows))


def book_levels(levels: Any) -> BookLevels | None:
    """``BookUpdate.levels`` in any of its forms (an ``md.book`` record, a ``(bids, asks)`` pair of
    ``{"price", "qty"}`` items or of ``(price, qty)`` pairs, ``BookLevels``, None) as ``BookLevels``
    (None stays None). The values are those the detectors read from the original: each side's items
    read by key when its first item is a dict, by position otherwise, as float64."""
    if levels is None or type(levels) is BookLevels:
        return levels
    attached = attached_levels(levels)
    if attached is not levels:  # a book record's own columns
        return attached
    if isinstance(levels, dict):  # an md.book record
        bids, asks = levels.get("bids") or (), levels.get("asks") or ()
    else:
        bids, asks = levels[0], levels[1]
    bid_prices, bid_qtys = _side_values(bids)
    ask_prices, ask_qtys = _side_values(asks)
    values = bid_prices + ask_prices + bid_qtys + ask_qtys
    return BookLevels(np.array(values, dtype=np.float64), len(bid_prices))


@dataclass(frozen=True, slots=True)
class BookUpdate:
    """Order-book imbalance of the top 10 levels, from ``md.book``; ``levels``: the snapshot's levels
    for the book detectors (walls, icebergs) only: the ``md.book`` record itself (what
    ``book_from_record`` gives: its ``bids`` and ``asks``, ``{"price", "qty"}`` items best first),
    ``BookLevels``, or a ``(bids, asks)`` pair of such items or of ``(price, qty)`` pairs; None when
    the source gave none. A reference, never copied."""

    exchange: str
    symbol: str
    time_ms: int
    obi: float
    levels: Any = field(default=None, compare=False)  # not in eq/hash: a record is unhashable


@dataclass(frozen=True, slots=True)
class MarkUpdate:
    """Mark price and funding, from ``md.mark``."""

    exchange: str
    symbol: str
    time_ms: int
    mark_price: float
    index_price: float
    funding_rate: float
    next_funding_time_ms: int


@dataclass(frozen=True, slots=True)
class LiquidationEvent:
    """One forced liquidation: which position side was liquidated and its USD value."""

    exchange: str
    symbol: str
    time_ms: int
    liquidated_side: str  # "LONG" or "SHORT"
    usd: float


@dataclass(frozen=True, slots=True)
class IndicatorUpdate:
    """One polled indicator value (open interest, long/short ratios, premium, divergence)."""

    exchange: str
    symbol: str
    time_ms: int  # when the value became known (receive time)
    kind: str
    value: float
    value_time_ms: int  # time the data point refers to
    extra: Mapping[str, float] = field(default_factory=dict)


MarketEvent = BookUpdate | MarkUpdate | LiquidationEvent | IndicatorUpdate


@dataclass(frozen=True, slots=True, eq=False)
class BookBatch:
    """Book updates of one (exchange, symbol) as columns: the frequent input (several per second live,
    one every 2 s in a generated session) arrives in bulk in a replay, where one Python object per
    update would cost more than the trades themselves. The engine keeps pending books in this form."""

    exchange: str
    symbol: str
    time_ms: np.ndarray  # int64
    obi: np.ndarray  # float64
    levels: np.ndarray  # object: each update's ``BookUpdate.levels`` (references, not copies; None: none)

    @classmethod
    def from_arrays(cls, exchange: str, symbol: str, time_ms, obi, levels=None) -> BookBatch:
        times = np.asarray(time_ms, dtype=np.int64)
        if isinstance(levels, np.ndarray):  # already a column (``record_column``)
            return cls(exchange, symbol, times, np.asarray(obi, dtype=np.float64), levels)
        column = np.empty(len(times), dtype=object) if levels is None else object_column(levels)
        return cls(exchange, symbol, times, np.asarray(obi, dtype=np.float64), column)

    @classmethod
    def from_updates(cls, updates: list[BookUpdate]) -> BookBatch:
        first = updates[0]
        return cls.from_arrays(
            first.exchange,
            first.symbol,
            [u.time_ms for u in updates],
            [u.obi for u in updates],
            [u.levels for u in updates],
        )

    def __len__(self) -> int:
        return len(self.time_ms)

    def take(self, index: np.ndarray | slice) -> BookBatch:
        return BookBatch(self.exchange, self.symbol, self.time_ms[index], self.obi[index], self.levels[index])

    def updates(self) -> list[BookUpdate]:
        return [
            BookUpdate(self.exchange, self.symbol, t, o, lv)
            for t, o, lv in zip(self.time_ms.tolist(), self.obi.tolist(), self.levels.tolist())
        ]


@dataclass(frozen=True, slots=True, eq=False)
class MarkBatch:
    """Mark-price updates of one (exchange, symbol) as columns (see ``BookBatch``)."""

    exchange: str
    symbol: str
    time_ms: np.ndarray  # int64
    mark_price: np.ndarray  # float64
    index_price: np.ndarray  # float64
    funding_rate: np.ndarray  # float64
    next_funding_time_ms: np.ndarray  # int64

    @classmethod
    def from_arrays(
        cls, exchange: str, symbol: str, time_ms, mark_price, index_price, funding_rate, next_funding_time_ms
    ) -> MarkBatch:
        f64 = np.float64
        return cls(
            exchange,
            symbol,
            np.asarray(time_ms, dtype=np.int64),
            np.asarray(mark_price, dtype=f64),
            np.asarray(index_price, dtype=f64),
            np.asarray(funding_rate, dtype=f64),
            np.asarray(next_funding_time_ms, dtype=np.int64),
        )

    @classmethod
    def from_updates(cls, updates: list[MarkUpdate]) -> MarkBatch:
        first = updates[0]
        return cls.from_arrays(
            first.exchange,
            first.symbol,
            [u.time_ms for u in updates],
            [u.mark_price for u in updates],
            [u.index_price for u in updates],
            [u.funding_rate for u in updates],
            [u.next_funding_time_ms for u in updates],
        )

    def __len__(self) -> int:
        return len(self.time_ms)

    def take(self, index: np.ndarray | slice) -> MarkBatch:
        return MarkBatch(
            self.exchange,
            self.symbol,
            self.time_ms[index],
            self.mark_price[index],
            self.index_price[index],
            self.funding_rate[index],
            self.next_funding_time_ms[index],
        )

    def updates(self) -> list[MarkUpdate]:
        return [
            MarkUpdate(self.exchange, self.symbol, *row)
            for row in zip(
                self.time_ms.tolist(),
                self.mark_price.tolist(),
                self.index_price.tolist(),
                self.funding_rate.tolist(),
                self.next_funding_time_ms.tolist(),
            )
        ]


ColumnarEvents = BookBatch | MarkBatch


def concat_columns(batches: list) -> BookBatch | MarkBatch:
    """One batch of the same kind and key from several (in order)."""
    first = batches[0]
    if len(batches) == 1:
        return first
    names = [f for f in first.__slots__ if f not in ("exchange", "symbol")]
    return type(first)(first.exchange, first.symbol, *(np.concatenate([getattr(b, n) for b in batches]) for n in names))


def obi_from_levels(
    bids: Iterable[tuple[float, float]], asks: Iterable[tuple[float, float]], depth: int = 10
) -> float | None:
    """(bid_qty - ask_qty) / (bid_qty + ask_qty) over the top ``depth`` levels; None for an empty book."""
    bid_qty = sum(q for _, q in list(bids)[:depth])
    ask_qty = sum(q for _, q in list(asks)[:depth])
    total = bid_qty + ask_qty
    return (bid_qty - ask_qty) / total if total > 0 else None


def object_column(items: Iterable[Any]) -> np.ndarray:
    """A 1-D object array with one cell per item (a book's levels in any accepted form, or None).

    numpy reads a sequence it is handed as rows: a ``(bids, asks)`` pair or a list of levels would
    become a row of cells. Records, ``BookLevels`` and None cannot, so they go in one step; anything
    else is placed one item at a time."""
    items = list(items)
    column = np.empty(len(items), dtype=object)
    if all(type(item) is dict or type(item) is BookLevels or item is None for item in items):
        column[:] = items
    else:
        for i, item in enumerate(items):
            column[i] = item
    return column


def record_column(records: list[Mapping[str, Any]]) -> np.ndarray:
    """An object column of references to ``records`` (``BookBatch.levels`` of md.book records), or to
    their ``columns`` where a source attached them (``BookRecord``).

    References, not ``BookLevels`` read here: reading a 20-level record costs 4-8 µs, which a backtest
    with the book detectors off would pay for nothing (about 3 µs a symbol-second on a 10 µs engine);
    the engine reads the levels where the detectors are on."""
    column = np.empty(len(records), dtype=object)
    column[:] = [attached_levels(r) for r in records]
    return column


def book_from_record(record: Mapping[str, Any]) -> BookUpdate:
    levels = attached_levels(record)
    return BookUpdate(
        record["exchange"], record["symbol"], int(record["event_time"]), float(record["obi_10"]), levels
    )  # a reference (or the columns a source attached): read only where the detectors are on


def mark_from_record(record: Mapping[str, Any]) -> MarkUpdate:
    return MarkUpdate(
        record["exchange"],
        record["symbol"],
        int(record["event_time"]),
        float(record["mark_price"]),
        float(record["index_price"]),
        float(record["funding_rate"]),
        int(record["next_funding_time"]),
    )


def liquidation_from_record(record: Mapping[str, Any]) -> LiquidationEvent:
    side = record.get("liquidated_side") or ("SHORT" if record["side"] == "BUY" else "LONG")
    return LiquidationEvent(
        record["exchange"], record["symbol"], int(record["trade_time"]), side, float(record["usd_value"])
    )


def indicator_from_record(record: Mapping[str, Any]) -> IndicatorUpdate:
    return IndicatorUpdate(
        record["exchange"],
        record["symbol"],
        int(record["receive_time"]),
        record["kind"],
        float(record["value"]),
        int(record["event_time"]),
        dict(record.get("extra") or {}),
    )
