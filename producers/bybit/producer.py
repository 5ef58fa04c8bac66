"""The Bybit v5 linear producer: one public websocket per process, normalised records to the md.* topics.

Same shape, topics, schemas, `Publisher` and `ProducerMetrics` as the Binance producer, keyed
`bybit:<SYMBOL>`. Wiring only; the decisions live in small pure pieces: `parse` (message → record),
`TradeNumbering` (consecutive agg ids, possible holes after a reconnect published on `md.gaps`),
`BybitBookSync` (verified book from snapshot + `u`-chained deltas) and `TickerState` (merged ticker
deltas → `md.mark` and open interest on `md.indicators` when they change).

Differences from Binance that are Bybit's, not choices: there is no REST gap fill for trades (Bybit's
trade ids are not consecutive, so a hole cannot be asked for by id); a broken book is recovered by
re-subscribing its topic (Bybit answers with a fresh snapshot), not by a REST snapshot; open interest
and funding arrive on the websocket, so no REST poller is needed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from producers.base.book import DepthDiff
from producers.base.sequencer import Gap
from producers.base.stream import sleep_or_stop
from producers.base.venue import VenueProducer
from producers.bybit.book_sync import BybitBookSync
from producers.bybit.parse import (
    EXCHANGE,
    FrameError,
    TradePrint,
    bybit_depth_record,
    parse_all_liquidation,
    parse_orderbook,
    parse_public_trades,
    split_topic,
    ticker_fields,
)
from producers.bybit.ticker_state import TickerState
from producers.bybit.trade_numbering import TradeNumbering
from producers.bybit.ws_stream import BybitStream, BybitStreamConfig
from producers.metrics import ProducerMetrics
from schemas.errors import SchemaValidationError
from tapeflow_runtime.publisher import Publisher

log = structlog.get_logger("producer.bybit")

LIVE_WS = "wss://stream.bybit.com/v5/public/linear"


@dataclass
class BybitProducerConfig:
    """What one Bybit producer process streams and where from (the lead's CLI/settings build it)."""

    symbols: list[str]
    ws_url: str = LIVE_WS  # the category URL: .../v5/public/linear
    orderbook_depth: int = 50  # orderbook.<depth>.<SYMBOL> topic (1, 50, 200, 1000 on linear)
    book_depth: int = 20  # levels per side in md.book
    book_interval_ms: int = 250  # 0: publish md.book after every verified update
    resubscribe_timeout_s: float = 5.0  # re-subscribe again if no snapshot came within this time
    replay_control_url: str | None = None  # fake exchange: a replay (ends with the fake's end-of-replay marker)
    stream_config: dict[str, Any] = field(default_factory=dict)  # BybitStreamConfig overrides

    def orderbook_topic(self, symbol: str) -> str:
        return f"orderbook.{self.orderbook_depth}.{symbol}"

    def topics(self) -> list[str]:
        out = []
        for sym in self.symbols:
            out += [f"publicTrade.{sym}", self.orderbook_topic(sym), f"allLiquidation.{sym}", f"tickers.{sym}"]
        return out


class BybitProducer(VenueProducer):
    """One websocket's messages → md.* records, keyed `bybit:<SYMBOL>`; same entry points as `BinanceProducer`.

    `run(stop)` returns "stopped" or "replay-finished"; `health()` feeds `/health`; `status` is the
    shared `ProducerStatus` (connected / unreachable / replay-finished / stopped).
    """

    exchange = EXCHANGE
    dlq_source = "ws:bybit:"

    def __init__(self, config: BybitProducerConfig, publisher: Publisher, metrics: ProducerMetrics) -> None:
        super().__init__(publisher, metrics, book_depth=config.book_depth, book_interval_ms=config.book_interval_ms)
        self.config = config
        self.books: dict[str, BybitBookSync] = {s: BybitBookSync(s) for s in config.symbols}
        self.numbering = {s: TradeNumbering(s) for s in config.symbols}
        self.tickers = {s: TickerState(s) for s in config.symbols}
        self.stream = BybitStream(
            BybitStreamConfig(
                config.ws_url, config.topics(), replay_end=config.replay_control_url is not None, **config.stream_config
            ),
            self.on_frame,
            self._bad_frame,
            self._on_ws_status,
            self._on_reconnect,
            self._on_replay_end,
        )
        self._book_updates: dict[str, int] = dict.fromkeys(config.symbols, 0)  # verified updates applied

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> str:
        """Run until `stop` (or the end of a replay); returns why it ended."""
        self._stop = stop
        workers = [
            asyncio.create_task(self.stream.run(stop), name="ws"),
            asyncio.create_task(self._book_snapshots(stop), name="book"),
            asyncio.create_task(self._housekeeping(stop), name="housekeeping"),
        ]
        await stop.wait()
        # the stream ends by itself on `stop` (closing its connection); cancelling it from outside
        # would orphan the connection task
        await asyncio.wait(workers[:1], timeout=5.0)
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await self._repairs.cancel_all()
        self.undelivered = await asyncio.to_thread(self.publisher.flush, 30.0) + len(self.publisher.failed)
        if self.status.state == "replay-finished":
            return "replay-finished"
        self.status.set("stopped")
        return "stopped"

    # --- messages -------------------------------------------------------------------------------
    def on_frame(self, topic: str, msg: dict, received: int, raw: bytes) -> None:
        kind = "unknown"
        try:
            kind, symbol = split_topic(topic)
            self.metrics.saw_event(kind, "bybit", symbol)
            if symbol not in self.books:
                raise FrameError(f"{topic}: symbol not subscribed")
            if kind == "publicTrade":
                self._on_trades(parse_public_trades(msg, received))
            elif kind == "orderbook":
                self._on_book(parse_orderbook(msg, received))
            elif kind == "allLiquidation":
                for rec in parse_all_liquidation(msg, received):
                    self.publisher.publish("md.liquidations", self._key(rec["symbol"]), rec, received)
            elif kind == "tickers":
                self._on_ticker(msg, received)
            else:
                raise FrameError(f"unexpected topic {topic!r}")
        except (FrameError, SchemaValidationError) as exc:
            self._bad_frame(raw, str(exc), stream=kind)

    def _numbering(self, symbol: str) -> TradeNumbering:
        numbering = self.numbering.get(symbol)
        if numbering is None:
            raise FrameError(f"trade for unsubscribed symbol {symbol}")
        return numbering

    def _on_trades(self, prints: list[TradePrint]) -> None:
        for p in prints:
            numbering = self._numbering(p.symbol)
            since = numbering.last_trade_time
            record, gap = numbering.number(p)
            if gap is not None:
                self._publish_possible_gap(
                    gap,
                    f"connection lost: Bybit does not replay publicTrade, trades between "
                    f"{since} and {p.trade_time} (ms) may be missing",
                )
            if record is not None:
                self.publisher.publish("md.trades", self._key(p.symbol), record, p.receive_time)

    def _publish_possible_gap(self, gap: Gap, reason: str) -> None:
        self.metrics.gaps_detected.labels(gap.symbol).inc()
        self.metrics.gaps_unfilled.labels(gap.symbol).inc()
        log.warning("possible trade gap", symbol=gap.symbol, from_id=gap.from_id, to_id=gap.to_id, reason=reason)
        self._publish_gap(gap.symbol, gap.from_id, gap.to_id, reason)

    def _on_book(self, diff: DepthDiff) -> None:
        book = self.books.get(diff.symbol)
        if book is None:
            raise FrameError(f"orderbook for unsubscribed symbol {diff.symbol}")
        restarts = book.restarts
        result = book.on_diff(diff)
        for d in result.applied:
            self.publisher.publish("md.depth", self._key(book.symbol), bybit_depth_record(d), d.receive_time)
        self._book_updates[book.symbol] += len(result.applied)
        if result.applied and self.config.book_interval_ms == 0 and book.is_live:
            self.publish_book(book)
        if book.restarts > restarts:
            self.metrics.book_resyncs.labels(book.symbol, "restart").inc()
            log.warning("bybit order book service restarted (u=1): book replaced", symbol=book.symbol)
        if result.resync_reason:
            self._count_resync(book.symbol, result.resync_reason)
            self._repairs.ensure(f"resubscribe:{book.symbol}", self._resubscribe(book))

    def _on_ticker(self, msg: dict, received: int) -> None:
        kind, symbol, ts, fields = ticker_fields(msg)
        state = self.tickers.get(symbol)
        if state is None:
            raise FrameError(f"ticker for unsubscribed symbol {symbol}")
        mark, open_interest = state.on_message(kind, ts, fields, received)
        if mark is not None:
            self.publisher.publish("md.mark", self._key(symbol), mark, received)
        if open_interest is not None:
            self.publisher.publish("md.indicators", self._key(symbol), open_interest, received)

    # --- book recovery --------------------------------------------------------------------------
    async def _resubscribe(self, book: BybitBookSync) -> None:
        """Re-subscribe the book's topic until a snapshot makes it live again."""
        assert self._stop is not None
        topic = self.config.orderbook_topic(book.symbol)
        while book.needs_snapshot and not self._stop.is_set():
            if await self.stream.resubscribe([topic]):
                log.info("re-subscribed for a fresh snapshot", topic=topic)
            deadline = time.monotonic() + self.config.resubscribe_timeout_s
            while book.needs_snapshot and time.monotonic() < deadline:
                if await sleep_or_stop(self._stop, 0.05):
                    return

    # --- VenueProducer hooks ---------------------------------------------------------------------------
    def _book_version(self, symbol: str) -> int:
        return self._book_updates[symbol]

    def _connected_detail(self) -> str:
        return f"connected: {len(self.config.topics())} topics, {len(self.config.symbols)} symbols"

    def _repair_delays_end(self, name: str) -> bool:
        return False  # a resubscription waits for a snapshot that a finished replay never sends

    def _health_extra(self) -> dict:
        return {"possible_trade_gaps": sum(n.counters.gaps for n in self.numbering.values())}

    def _on_reconnect(self, reason: str) -> None:
        super()._on_reconnect(reason)
        if reason == "rotation":
            return  # the old connection keeps delivering until the new one does: nothing is lost
        for numbering in self.numbering.values():
            numbering.connection_lost()
        for book in self.books.values():
            book.invalidate()
