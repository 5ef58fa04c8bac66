"""``--source topics``: ``md.*`` from the broker, by timestamp range (what a running stack published).

Each partition of md.trades, md.book, md.mark, md.liquidations and md.indicators is read from the
first record stamped at or after ``from_ms - lead_ms`` to its end (``execution.state_reader``: end
of partition on every partition, then idle, because Tansu's high watermark counts batches). Records
are kept when their symbol is asked for and their engine time lies in the range. The records are exactly what the live engine and executor consumed, so this is the source
``--verify-against-topics`` compares against. The range is held in memory: meant for the hours or
days a stack keeps, not for years (use ``vision`` or ``db`` for those).

Record timestamps are receive times, engine times are not (a trade's is its trade time), hence
``lead_ms``: records received up to a minute after their event time are still found.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from backtest.inputs import DEFAULT_SLICE_MS, ENGINE_TIME, MarketSlice, Record, SourceReport
from backtest.sources import SourceError
from backtest.sources.records import RecordSource
from tapeflow_runtime.topic_reader import StateReadError, read_to_end
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde

TOPICS = {"md.trades": "trades", "md.book": "books", "md.mark": "marks", "md.liquidations": "liquidations",
          "md.indicators": "indicators"}
TIME = dict(ENGINE_TIME, trades="trade_time")


class TopicSource:
    exchange = "binance"

    def __init__(self, bootstrap: str, symbols: list[str], from_ms: int, to_ms: int, *, topic_prefix: str = "",
                 registry_url: str | None = None, slice_ms: int = DEFAULT_SLICE_MS, lead_ms: int = 60_000,
                 exchange: str = "binance", idle_s: float = 1.0, timeout_s: float = 600.0) -> None:
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

    def inputs(self) -> set[str]:
        found = {"trades", "book", "mark", "liquidations"}  # the producer always streams these
        for rec in self.records()["indicators"]:
            found.add(rec["kind"])
        return found

    def records(self) -> dict[str, list[Record]]:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> dict[str, list[Record]]:
        out: dict[str, list[Record]] = {kind: [] for kind in TOPICS.values()}
        wanted = set(self.symbols)
        kinds = {self.prefix + topic: kind for topic, kind in TOPICS.items()}

        def keep(topic: str, record: dict[str, Any]) -> None:
            kind = kinds[topic]
            if record.get("exchange") == self.exchange and record.get("symbol") in wanted \
                    and self.from_ms <= record[TIME[kind]] < self.to_ms:
                out[kind].append(record)

        try:
            read_to_end(self.bootstrap, {topic: None for topic in kinds}, self.serde, idle_s=self.idle_s,
                        timeout_s=self.timeout_s, start_ms=self.from_ms - self.lead_ms, on_record=keep)
        except StateReadError as exc:
            raise SourceError(f"topics: {exc}") from None
        seen = {r["symbol"] for r in out["trades"]}
        for symbol in self.symbols:
            if symbol not in seen:
                self.report.missing.append(f"{symbol}: no md.trades records in the range")
        return out

    def slices(self) -> Iterator[MarketSlice]:
        recs = self.records()
        inner = RecordSource(self.name, self.exchange, self.symbols, self.from_ms, self.to_ms, trades=recs["trades"],
                             books=recs["books"], marks=recs["marks"], liquidations=recs["liquidations"],
                             indicators=recs["indicators"], report=self.report, slice_ms=self.slice_ms)
        return inner.slices()
