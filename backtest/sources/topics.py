"""``--source topics``: ``md.*`` from the broker, by timestamp range (what a running stack published).

Each partition of md.trades, md.book, md.mark, md.liquidations and md.indicators is read from the
first record stamped at or after ``from_ms - lead_ms`` to its end (``tapeflow_runtime.topic_reader``:
the broker's offsets-by-timestamp lookup, then end of partition on every partition). Records
are kept when their symbol is asked for and their engine time lies in the range. The records are exactly what the live engine and executor consumed, so this is the source
``--verify-against-topics`` compares against. The range is held in memory: meant for the hours or
days a stack keeps, not for years (use ``vision`` or ``db`` for those).

Record timestamps are the broker's arrival times (LogAppendTime), engine times are not (a trade's is
its trade time), hence ``lead_ms``: records that arrived up to a minute after their event time are
still found.

md.trades, the bulk, is not decoded record by record: its values are kept as bytes and decoded
``DECODE_CHUNK`` at a time by the sink's columnar decoder (``sinks.columnar``: polars' Avro reader,
every record's size checked against its Kafka value, so a malformed record cannot shift its
neighbours) straight into the engine's trade columns. A chunk the decoder refuses (another schema
id, a malformed record) is decoded record by record, where a record that cannot be decoded is an
error as before. Measured: ``benchmarks/RESULTS.md``. md.book is read by ``stream_apps.book_decode``
(the records, equal to the serde's, with their levels as columns for the book detectors).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl

from backtest.inputs import DEFAULT_SLICE_MS, ENGINE_TIME, MarketSlice, Record, SourceReport
from backtest.sources import SourceError
from backtest.sources.records import RecordSource
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from sinks.columnar import ColumnarCodec, ColumnarError
from sinks.tables import table_for_topic
from stream_apps.book_decode import BookDecoder
from stream_apps.core.events import TradeBatch
from tapeflow_runtime.topic_reader import RawRecord, StateReadError, read_topics

TOPICS = {
    "md.trades": "trades",
    "md.book": "books",
    "md.mark": "marks",
    "md.liquidations": "liquidations",
    "md.indicators": "indicators",
}
TIME = dict(ENGINE_TIME, trades="trade_time")
DECODE_CHUNK = 200_000


class TopicSource:
    exchange = "binance"

    def __init__(
        self,
        bootstrap: str,
        symbols: list[str],
        from_ms: int,
        to_ms: int,
        *,
        topic_prefix: str = "",
        registry_url: str | None = None,
        slice_ms: int = DEFAULT_SLICE_MS,
        lead_ms: int = 60_000,
        exchange: str = "binance",
        idle_s: float = 0.0,
        timeout_s: float = 600.0,
    ) -> None:
        self.bootstrap, self.prefix = bootstrap, topic_prefix
        self.symbols = list(symbols)
        self.from_ms, self.to_ms = from_ms, to_ms
        self.exchange = exchange
        self.name = "topics"
        self.report = SourceReport()
        self.slice_ms, self.lead_ms = slice_ms, lead_ms
        self.idle_s, self.timeout_s = idle_s, timeout_s
        self.serde = AvroSerde(registry_from_url(registry_url))
        self._records: dict[str, list[Record]] | None = None
        self._trade_batches: dict[str, TradeBatch] = {}

    def inputs(self) -> set[str]:
        found = {"trades", "book", "mark", "liquidations"}  # the producer always streams these
        for rec in self.records()["indicators"]:
            found.add(rec["kind"])
        return found

    def records(self) -> dict[str, list[Record]]:
        """The records of every kind but trades (``trade_batches``), read on first use."""
        if self._records is None:
            self._records, self._trade_batches = self._read()
        return self._records

    def trade_batches(self) -> dict[str, TradeBatch]:
        self.records()
        return self._trade_batches

    def _read(self) -> tuple[dict[str, list[Record]], dict[str, TradeBatch]]:
        out: dict[str, list[Record]] = {kind: [] for kind in TOPICS.values() if kind != "trades"}
        wanted = set(self.symbols)
        kinds = dict(TOPICS)
        trades_topic, book_topic = "md.trades", "md.book"
        raw: list[bytes] = []
        read_book = BookDecoder(self.serde, records=True)  # with its levels as columns (``BookRecord``)

        def keep(topic: str, record: dict[str, Any] | RawRecord) -> None:
            if topic == trades_topic:
                raw.append(record.value)
                return
            if topic == book_topic:
                record = read_book(record.value)
            kind = kinds[topic]
            if (
                record.get("exchange") == self.exchange
                and record.get("symbol") in wanted
                and self.from_ms <= record[TIME[kind]] < self.to_ms
            ):
                out[kind].append(record)

        try:
            read_topics(
                self.bootstrap,
                self.prefix,
                {topic: None for topic in kinds},
                self.serde,
                idle_s=self.idle_s,
                timeout_s=self.timeout_s,
                start_ms=self.from_ms - self.lead_ms,
                on_record=keep,
                raw_topics=frozenset({trades_topic, book_topic}),
            )
            batches = self._trades(raw)
        except StateReadError as exc:
            raise SourceError(f"topics: {exc}") from None
        seen = {batch.symbol for batch in batches.values()}
        for symbol in self.symbols:
            if symbol not in seen:
                self.report.missing.append(f"{symbol}: no md.trades records in the range")
        return out, batches

    def _trades(self, values: list[bytes]) -> dict[str, TradeBatch]:
        """md.trades values as one (trade time, agg id)-ordered batch per asked ``exchange:symbol``."""
        codec = ColumnarCodec.for_topic(table_for_topic("md.trades"), self.serde, "md.trades")
        frames = []
        for start in range(0, len(values), DECODE_CHUNK):
            chunk = values[start : start + DECODE_CHUNK]
            try:
                if codec is None:
                    raise ColumnarError("no columnar decoder for md.trades")
                df = codec.decode_frame(chunk).select(
                    "exchange",
                    "symbol",
                    "agg_id",
                    "trade_time",
                    "price",
                    "qty",
                    (pl.col("taker_side").cast(pl.String) == "SELL").alias("sell"),
                )
            except ColumnarError:
                df = self._decode_each(chunk, start)
            frames.append(
                df.filter(
                    (pl.col("exchange") == self.exchange)
                    & pl.col("symbol").is_in(self.symbols)
                    & (pl.col("trade_time") >= self.from_ms)
                    & (pl.col("trade_time") < self.to_ms)
                )
            )
        if not frames:
            return {}
        trades = pl.concat(frames).sort(["symbol", "trade_time", "agg_id"])
        out = {}
        for (symbol,), part in trades.group_by(["symbol"], maintain_order=True):
            out[f"{self.exchange}:{symbol}"] = TradeBatch.from_arrays(
                self.exchange,
                symbol,
                part["agg_id"].to_numpy(),
                part["trade_time"].to_numpy().astype(np.int64),
                part["price"].to_numpy(),
                part["qty"].to_numpy(),
                part["sell"].to_numpy(),
            )
        return out

    def _decode_each(self, values: list[bytes], first: int) -> pl.DataFrame:
        """A chunk record by record (one the columnar decoder refused); an undecodable record is an error."""
        rows = []
        for k, value in enumerate(values):
            try:
                rows.append(self.serde.decode(value))
            except Exception as exc:
                raise StateReadError(
                    f"{self.prefix}md.trades: record {first + k} of the range cannot be decoded: {exc}"
                ) from exc
        return pl.DataFrame(
            {
                "exchange": [r["exchange"] for r in rows],
                "symbol": [r["symbol"] for r in rows],
                "agg_id": [r["agg_id"] for r in rows],
                "trade_time": [r["trade_time"] for r in rows],
                "price": [r["price"] for r in rows],
                "qty": [r["qty"] for r in rows],
                "sell": [r["taker_side"] == "SELL" for r in rows],
            },
            schema={
                "exchange": pl.String,
                "symbol": pl.String,
                "agg_id": pl.Int64,
                "trade_time": pl.Int64,
                "price": pl.Float64,
                "qty": pl.Float64,
                "sell": pl.Boolean,
            },
        )

    def slices(self) -> Iterator[MarketSlice]:
        recs = self.records()
        inner = RecordSource(
            self.name,
            self.exchange,
            self.symbols,
            self.from_ms,
            self.to_ms,
            trade_batches=self.trade_batches(),
            books=recs["books"],
            marks=recs["marks"],
            liquidations=recs["liquidations"],
            indicators=recs["indicators"],
            report=self.report,
            slice_ms=self.slice_ms,
        )
        return inner.slices()
