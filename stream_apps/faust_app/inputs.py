"""Raw ``md.*`` Kafka records of one partition → engine inputs grouped by ``exchange:symbol``.

Why a separate step: the worker receives whole fetches (thousands of records from several
partitions) and the engine wants one columnar ``TradeBatch`` per symbol plus a few market events, so
decoding groups by key once and keeps each record's offset next to it (offsets drive de-duplication
after a restart and the acknowledgements that let Faust commit). Records that cannot be decoded or
normalised are returned as dead letters with their raw bytes and the reason, never dropped silently.

Times: each input carries the event time the engine orders it by (``stream_apps.core.events``):
trade time for trades and liquidations, exchange event time for book and mark, and receive time
(when the value became known) for polled indicators.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import polars as pl

from schemas.avro_columns import AvroColumns, ColumnarError
from schemas.catalogue import market_key
from schemas.serde import AvroSerde
from stream_apps.book_decode import BookDecoder
from stream_apps.core.events import (
    MarketEvent,
    TradeBatch,
    book_from_record,
    indicator_from_record,
    liquidation_from_record,
    mark_from_record,
)

TRADES = "md.trades"
BOOK = "md.book"
EVENT_ADAPTERS = {
    "md.book": book_from_record,
    "md.mark": mark_from_record,
    "md.liquidations": liquidation_from_record,
    "md.indicators": indicator_from_record,
}


class RawRecord(Protocol):
    """What the worker needs of a consumer record (aiokafka's ``ConsumerRecord`` has it)."""

    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class TradeRows:
    """Decoded trades of one key from one partition, in offset order, with their offsets."""

    exchange: str
    symbol: str
    offsets: np.ndarray  # int64
    agg_id: np.ndarray
    time_ms: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    taker_sell: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets)

    def take(self, index: np.ndarray | slice) -> TradeRows:
        return TradeRows(
            self.exchange,
            self.symbol,
            self.offsets[index],
            self.agg_id[index],
            self.time_ms[index],
            self.price[index],
            self.qty[index],
            self.taker_sell[index],
        )

    def batch(self) -> TradeBatch:
        return TradeBatch(self.exchange, self.symbol, self.agg_id, self.time_ms, self.price, self.qty, self.taker_sell)

    @staticmethod
    def concat(parts: Sequence[TradeRows]) -> TradeRows:
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        return TradeRows(
            first.exchange,
            first.symbol,
            *(
                np.concatenate([getattr(p, name) for p in parts])
                for name in ("offsets", "agg_id", "time_ms", "price", "qty", "taker_sell")
            ),
        )


@dataclass(frozen=True, slots=True)
class DeadInput:
    """An input record that could not be used: raw bytes, where it came from, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    error: str


@dataclass
class DecodedPartition:
    """One partition's share of a fetch: trades and events per ``exchange:symbol`` key."""

    trades: dict[str, TradeRows] = field(default_factory=dict)
    events: dict[str, list[tuple[int, MarketEvent]]] = field(default_factory=dict)  # key -> [(offset, event)]
    dead: list[DeadInput] = field(default_factory=list)


def symbol_key(exchange: str, symbol: str) -> str:
    return market_key(exchange, symbol)


def decode_partition(
    serde: AvroSerde,
    catalogue_topic: str,
    topic: str,
    partition: int,
    records: Iterable[RawRecord],
    book: BookDecoder | None = None,
    trades: AvroColumns | None = None,
) -> DecodedPartition:
    """Decode the records of one input partition (``catalogue_topic`` is the unprefixed name). ``book``:
    the caller's md.book decoder (it remembers each schema id's layout), kept as long as ``serde``; a
    new one otherwise. Not a module-level cache keyed by the serde: a decoder holds its serde, so a
    weak-keyed cache would never let a serde go. ``trades``: the caller's columnar reader of md.trades'
    current schema (``AvroColumns.of_topic``); None decodes trades record by record."""
    if catalogue_topic == TRADES:
        if trades is not None:
            batch = records if isinstance(records, list) else list(records)
            if len(batch) >= COLUMNAR_MIN:
                # another schema id, a malformed record: record by record, where dead letters are made
                with contextlib.suppress(ColumnarError):
                    return _decode_trade_columns(trades, batch)
            records = batch
        return _decode_trades(serde, topic, partition, records)
    if catalogue_topic == BOOK:  # the levels straight into columns (``book_decode``)
        read: Callable[[bytes], MarketEvent] = book if book is not None else BookDecoder(serde)
    else:
        adapter, decode = EVENT_ADAPTERS[catalogue_topic], serde.decode
        read = lambda value: adapter(decode(value))  # noqa: E731
    out = DecodedPartition()
    for record in records:
        try:
            event = read(record.value)
        except Exception as exc:  # noqa: BLE001 - anything undecodable becomes a dead letter
            out.dead.append(_dead(topic, partition, record, exc))
            continue
        out.events.setdefault(symbol_key(event.exchange, event.symbol), []).append((record.offset, event))
    return out


#: fewer trades than this are decoded record by record: a polars read has a fixed cost of tens of µs
COLUMNAR_MIN = 64


def _decode_trade_columns(reader: AvroColumns, records: list[RawRecord]) -> DecodedPartition:
    """All of one fetch's trades in one polars read (``schemas.avro_columns``: ~0.7 µs a trade where
    fastavro took ~5 µs record by record, the worker's largest cost); raises ``ColumnarError`` for
    anything the record path would not read identically, and the caller decodes record by record."""
    df = reader.decode_frame([r.value for r in records])  # type: ignore[misc]
    offsets = np.fromiter((r.offset for r in records), dtype=np.int64, count=len(records))
    out = DecodedPartition()
    keys = df.select("exchange", "symbol")
    if keys.n_unique() == 1:
        groups = {(keys.item(0, 0), keys.item(0, 1)): (df, offsets)}
    else:  # several symbols hash to the partition: each keeps its records' offset order
        indexed = df.with_row_index("__row")
        groups = {}
        for (exchange, symbol), part in indexed.partition_by(
            ["exchange", "symbol"], as_dict=True, maintain_order=True
        ).items():
            groups[(exchange, symbol)] = (part, offsets[part.get_column("__row").to_numpy()])
    for (exchange, symbol), (part, offs) in groups.items():
        sell = (part.get_column("taker_side").cast(pl.String) == "SELL").to_numpy()
        out.trades[symbol_key(exchange, symbol)] = TradeRows(
            exchange,
            symbol,
            offs,
            part.get_column("agg_id").to_numpy().astype(np.int64, copy=False),
            part.get_column("trade_time").to_numpy().astype(np.int64, copy=False),
            part.get_column("price").to_numpy().astype(np.float64, copy=False),
            part.get_column("qty").to_numpy().astype(np.float64, copy=False),
            sell.astype(bool, copy=False),
        )
    return out


def _decode_trades(serde: AvroSerde, topic: str, partition: int, records: Iterable[RawRecord]) -> DecodedPartition:
    out = DecodedPartition()
    columns: dict[tuple[str, str], tuple[list[Any], ...]] = {}
    decode = serde.decode
    for record in records:
        try:
            r = decode(record.value)
            key = (r["exchange"], r["symbol"])
            row = (record.offset, r["agg_id"], r["trade_time"], r["price"], r["qty"], r["taker_side"] == "SELL")
        except Exception as exc:  # noqa: BLE001
            out.dead.append(_dead(topic, partition, record, exc))
            continue
        cols = columns.get(key)
        if cols is None:
            cols = columns[key] = ([], [], [], [], [], [])
        for col, value in zip(cols, row):
            col.append(value)
    for (exchange, symbol), cols in columns.items():
        out.trades[symbol_key(exchange, symbol)] = TradeRows(
            exchange,
            symbol,
            np.asarray(cols[0], dtype=np.int64),
            np.asarray(cols[1], dtype=np.int64),
            np.asarray(cols[2], dtype=np.int64),
            np.asarray(cols[3], dtype=np.float64),
            np.asarray(cols[4], dtype=np.float64),
            np.asarray(cols[5], dtype=bool),
        )
    return out


def _dead(topic: str, partition: int, record: RawRecord, exc: Exception) -> DeadInput:
    value = record.value if isinstance(record.value, bytes) else b""
    return DeadInput(topic, partition, record.offset, record.key, value, f"{type(exc).__name__}: {exc}")
