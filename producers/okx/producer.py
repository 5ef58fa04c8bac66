"""The OKX USDT-perpetual producer: one public websocket per process, normalised records to the md.* topics.

Same shape, topics, schemas, `Publisher` and `ProducerMetrics` as the Binance and Bybit producers,
keyed `okx:<SYMBOL>` with tapeflow's symbol (`BTCUSDT`, subscribed as `BTC-USDT-SWAP`; `schemas.symbols`).
Wiring only; the decisions live in small pure pieces: `parse` (push → record, contracts → base coin),
`OkxTradeNumbering` (consecutive agg ids; a hole in OKX's trade ids filled from REST `history-trades`
by id while the trades behind it wait, or published on `md.gaps` when REST cannot),
`OkxBookSync` (verified book from snapshot + `prevSeqId`-chained updates, REST snapshot after a break)
and `OkxMarkState` (mark + index + funding → `md.mark`).

Startup: `GET /api/v5/public/instruments?instType=SWAP` gives each swap's contract value (`ctVal`);
without it no size can be converted, so the producer retries it (status `unreachable`) before it
subscribes. Channels per symbol: `trades`, `books`, `mark-price`, `funding-rate` on the swap,
`index-tickers` on its index and `tickers` on the spot pair (both `BTC-USDT`); `md.indicators` gets the
funding rate with its interval and the spot–perp divergence (once a minute).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from producers.base.book import DepthDiff
from producers.base.stream import sleep_or_stop
from producers.base.venue import VenueProducer
from producers.metrics import ProducerMetrics
from producers.okx.book_sync import OkxBookSync
from producers.okx.mark_state import OkxMarkState
from producers.okx.parse import (
    EXCHANGE,
    FrameError,
    Instrument,
    TradePrint,
    okx_depth_record,
    parse_books,
    parse_funding_rate,
    parse_history_trades,
    parse_index_tickers,
    parse_instruments,
    parse_mark_price,
    parse_rest_books,
    parse_spot_tickers,
    parse_trades,
)
from producers.okx.rest import LIVE_REST, OkxRestClient, OkxRestRejected, OkxRestUnavailable
from producers.okx.trade_numbering import OkxTradeNumbering, TradeHole
from producers.okx.ws_stream import OkxStream, OkxStreamConfig
from schemas.errors import SchemaValidationError
from schemas.symbols import coin_multiplier, okx_index_id, okx_swap_inst_id
from tapeflow_runtime.publisher import Publisher

log = structlog.get_logger("producer.okx")

LIVE_WS = "wss://ws.okx.com:8443/ws/v5/public"
BOOK_CHANNEL = "books"  # 400 levels, snapshot then 100-ms increments chained by seqId/prevSeqId
REST_BOOK_DEPTH = 400
MAX_FILL_FILLS = 20_000  # a larger hole (a long outage) is published on md.gaps at once, not paged from REST


@dataclass
class OkxProducerConfig:
    """What one OKX producer process streams and where from (tapeflow symbols, e.g. BTCUSDT)."""

    symbols: list[str]
    ws_url: str = LIVE_WS  # .../ws/v5/public
    rest_url: str = LIVE_REST
    book_depth: int = 20  # levels per side in md.book
    book_interval_ms: int = 250  # 0: publish md.book after every verified update
    replay_control_url: str | None = None  # fake exchange: a replay (ends with the fake's end-of-replay marker)
    rest_give_up_after_s: float = 60.0
    spot_interval_ms: int = 60_000  # spot_perp_divergence at most this often (event time); 0: every spot tick
    stream_config: dict[str, Any] = field(default_factory=dict)  # OkxStreamConfig overrides

    def streams(self) -> list[str]:
        out = []
        for sym in self.symbols:
            inst = okx_swap_inst_id(sym)
            pair = okx_index_id(sym)  # the index and the spot pair share the id: BTC-USDT
            out += [
                f"trades:{inst}",
                f"{BOOK_CHANNEL}:{inst}",
                f"mark-price:{inst}",
                f"funding-rate:{inst}",
                f"index-tickers:{pair}",
                f"tickers:{pair}",
            ]
        return out


class OkxProducer(VenueProducer):
    """One websocket's pushes → md.* records, keyed `okx:<SYMBOL>`; same entry points as the other venues."""

    exchange = EXCHANGE
    dlq_source = "ws:okx:"

    def __init__(self, config: OkxProducerConfig, publisher: Publisher, metrics: ProducerMetrics) -> None:
        super().__init__(publisher, metrics, book_depth=config.book_depth, book_interval_ms=config.book_interval_ms)
        self.config = config
        self.swap_symbols = {okx_swap_inst_id(s): s for s in config.symbols}
        self.index_symbols = {okx_index_id(s): s for s in config.symbols}
        self.instruments: dict[str, Instrument] = {}
        self.books: dict[str, OkxBookSync] = {s: OkxBookSync(s) for s in config.symbols}
        self.numbering = {s: OkxTradeNumbering(s) for s in config.symbols}
        self.marks = {s: OkxMarkState(s) for s in config.symbols}
        self._funding_published: dict[str, tuple] = {}
        self.missing_swaps: list[str] = []  # configured symbols OKX lists no linear swap for (not subscribed)
        self._holes: dict[str, deque[TradeHole]] = {s: deque() for s in config.symbols}  # waiting for a REST fill
        self._held: dict[str, deque[dict]] = {s: deque() for s in config.symbols}  # md.trades records behind them
        self.gaps_filled = 0
        self.gaps_unfilled = 0
        self.rest = OkxRestClient(config.rest_url, metrics, give_up_after_s=config.rest_give_up_after_s)
        self.stream = OkxStream(
            OkxStreamConfig(
                config.ws_url,
                config.streams(),
                replay_end=config.replay_control_url is not None,
                **config.stream_config,
            ),
            self.on_frame,
            self._bad_frame,
            self._on_ws_status,
            self._on_reconnect,
            self._on_replay_end,
        )
        self._book_updates: dict[str, int] = dict.fromkeys(config.symbols, 0)

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> str:
        """Load the instruments, then stream until `stop` (or the end of a replay); returns why it ended."""
        self._stop = stop
        try:
            if await self._load_instruments(stop):
                workers = [
                    asyncio.create_task(self.stream.run(stop), name="ws"),
                    asyncio.create_task(self._book_snapshots(stop), name="book"),
                    asyncio.create_task(self._housekeeping(stop), name="housekeeping"),
                ]
                await stop.wait()
                await asyncio.wait(workers[:1], timeout=5.0)  # the stream closes its connection on `stop`
                for t in workers:
                    t.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
            await self._repairs.cancel_all()
            self._flush_holes()
        finally:
            await self.rest.close()
        self.undelivered = await asyncio.to_thread(self.publisher.flush, 30.0) + len(self.publisher.failed)
        if self.status.state == "replay-finished":
            return "replay-finished"
        self.status.set("stopped")
        return "stopped"

    async def _load_instruments(self, stop: asyncio.Event) -> bool:
        """Contract values of the subscribed swaps; retried until they come or `stop` (False)."""
        delay = 1.0
        while not stop.is_set():
            try:
                body = await self.rest.get("/api/v5/public/instruments", {"instType": "SWAP"})
                known = parse_instruments(body)
                missing = sorted(set(self.swap_symbols) - set(known))
                if len(missing) == len(self.swap_symbols):
                    raise FrameError(f"OKX lists no linear swap {', '.join(missing)}")
                if missing:  # a coin OKX does not list must not keep the others off the air: said, and left out
                    self.missing_swaps = missing
                    log.error("okx lists no linear swap for some symbols: not subscribed", missing=missing)
                    gone = {self.swap_symbols[i] for i in missing}
                    self.stream.config.streams = [
                        s for sym in self.config.symbols if sym not in gone for s in OkxProducerConfig([sym]).streams()
                    ]
                # in the configured symbol's units (1000PEPEUSDT: PEPE-USDT-SWAP with prices × 1000)
                self.instruments = {
                    i: Instrument(i, sym, known[i].ct_val, coin_multiplier(sym)[2])
                    for i, sym in self.swap_symbols.items()
                    if i in known
                }
                log.info("okx instruments loaded", ct_val={i: str(v.ct_val) for i, v in self.instruments.items()})
                return True
            except (OkxRestUnavailable, OkxRestRejected, FrameError) as exc:
                self.status.set("unreachable", f"cannot load OKX instruments from {self.config.rest_url}: {exc}")
                log.error("okx instruments unavailable", error=str(exc))
            if await sleep_or_stop(stop, delay):
                return False
            delay = min(delay * 2, 30.0)
        return False

    # --- messages -------------------------------------------------------------------------------
    def on_frame(self, topic: str, msg: dict, received: int, raw: bytes) -> None:
        channel = topic.split(":", 1)[0]
        try:
            inst_id = topic.split(":", 1)[1]
            symbol = self.swap_symbols.get(inst_id) or self.index_symbols.get(inst_id)
            if symbol is None:
                raise FrameError(f"{topic}: instrument not subscribed")
            self.metrics.saw_event(channel, EXCHANGE, symbol)
            if channel == "trades":
                self._on_trades(parse_trades(msg, self.instruments[inst_id], received))
            elif channel == BOOK_CHANNEL:
                self._on_book(parse_books(msg, self.instruments[inst_id], received))
            elif channel == "mark-price":
                for _, price, ts in parse_mark_price(msg, coin_multiplier(symbol)[2]):
                    self._publish_mark(self.marks[symbol].on_mark(price, ts, received), received)
            elif channel == "index-tickers":
                for _, price, ts in parse_index_tickers(msg, coin_multiplier(symbol)[2]):
                    self._publish_mark(self.marks[symbol].on_index(price, ts, received), received)
            elif channel == "tickers":
                for _, bid, ask, ts in parse_spot_tickers(msg, coin_multiplier(symbol)[2]):
                    record = self.marks[symbol].on_spot(bid, ask, ts, received, self.config.spot_interval_ms)
                    if record is not None:
                        self.publisher.publish("md.indicators", self._key(symbol), record, received)
            elif channel == "funding-rate":
                for point in parse_funding_rate(msg):
                    self._publish_mark(
                        self.marks[symbol].on_funding(point.rate, point.funding_time, point.ts, received), received
                    )
                    key = (point.rate, point.funding_time, point.next_funding_time)
                    if self._funding_published.get(symbol) != key:
                        self._funding_published[symbol] = key
                        self.publisher.publish(
                            "md.indicators", self._key(symbol), point.indicator(symbol, received), received
                        )
            else:
                raise FrameError(f"unexpected channel {channel!r}")
        except (FrameError, SchemaValidationError) as exc:
            self._bad_frame(raw, str(exc), stream=channel)

    def _publish_mark(self, record: dict | None, received: int) -> None:
        if record is not None:
            self.publisher.publish("md.mark", self._key(record["symbol"]), record, received)

    def _on_trades(self, prints: list[TradePrint]) -> None:
        for p in prints:
            sym = p.symbol
            record, hole = self.numbering[sym].number(p)
            if hole is not None:
                self.metrics.gaps_detected.labels(sym).inc()
                if hole.okx_from is not None and hole.okx_to - hole.okx_from + 1 <= MAX_FILL_FILLS:
                    log.info(
                        "okx trade hole: filling from REST", symbol=sym, okx_from=hole.okx_from, okx_to=hole.okx_to
                    )
                    self._holes[sym].append(hole)
                    self._repairs.ensure(f"fill:{sym}", self._fill_holes(sym))
                else:
                    self._give_up(sym, hole, hole.reason())
            if record is None:
                self.metrics.duplicates_dropped.labels(sym).inc()
            elif self._holes[sym]:
                self._held[sym].append(record)  # behind a hole being filled: md.trades stays in agg-id order
            else:
                self.publisher.publish("md.trades", self._key(sym), record, p.receive_time)

    def _give_up(self, symbol: str, hole: TradeHole, reason: str) -> None:
        self.gaps_unfilled += 1
        self.metrics.gaps_unfilled.labels(symbol).inc()
        log.warning("okx trade gap", symbol=symbol, from_id=hole.gap.from_id, to_id=hole.gap.to_id, reason=reason)
        self._publish_gap(symbol, hole.gap.from_id, hole.gap.to_id, reason)

    # --- trade holes: filled from REST by OKX trade id ------------------------------------------------
    async def _fill_holes(self, symbol: str) -> None:
        """Fill the symbol's holes in order from `history-trades`, each fill on the agg ids left for it;
        a hole REST cannot fill is published on md.gaps; the trades held behind a hole follow it."""
        holes = self._holes[symbol]
        instrument = self.instruments[okx_swap_inst_id(symbol)]
        while holes:
            hole = holes[0]
            fills = await self._fetch_fills(instrument, hole)
            if fills is not None:
                for k, fill in enumerate(fills):
                    self.publisher.publish(
                        "md.trades", self._key(symbol), fill.record(hole.gap.from_id + k), fill.receive_time
                    )
                self.gaps_filled += 1
                self.metrics.gaps_filled.labels(symbol).inc()
                log.info("okx trade hole filled from REST", symbol=symbol, fills=len(fills))
            else:
                self._give_up(symbol, hole, hole.reason() + "; REST history-trades could not fill it")
            holes.popleft()
            self._release_held(symbol)

    def _release_held(self, symbol: str) -> None:
        """Publish the held trades that no remaining hole is in front of."""
        holes, held = self._holes[symbol], self._held[symbol]
        limit = holes[0].gap.from_id if holes else None
        while held and (limit is None or held[0]["agg_id"] < limit):
            record = held.popleft()
            self.publisher.publish("md.trades", self._key(symbol), record, record["receive_time"])

    async def _fetch_fills(self, instrument: Instrument, hole: TradeHole) -> list[TradePrint] | None:
        """Every fill of `hole`'s OKX id range, oldest first, or None when REST cannot give them all."""
        assert hole.okx_from is not None and hole.okx_to is not None
        got: dict[int, TradePrint] = {}
        after = hole.okx_to + 1
        try:
            while True:
                body = await self.rest.get(
                    "/api/v5/market/history-trades",
                    {"instId": instrument.inst_id, "type": "1", "after": str(after), "limit": "100"},
                )
                page = parse_history_trades(body, instrument, int(time.time() * 1000))
                got.update((p.trade_id, p) for p in page if hole.okx_from <= p.trade_id <= hole.okx_to)
                if not page or page[0].trade_id <= hole.okx_from or page[0].trade_id >= after:
                    break
                after = page[0].trade_id
        except (OkxRestUnavailable, OkxRestRejected, FrameError) as exc:
            log.warning("okx trade fill failed", symbol=instrument.symbol, error=str(exc))
            return None
        wanted = range(hole.okx_from, hole.okx_to + 1)
        if len(got) != len(wanted):
            log.warning("okx trade fill incomplete", symbol=instrument.symbol, wanted=len(wanted), got=len(got))
            return None
        return [got[i] for i in wanted]

    def _flush_holes(self) -> None:
        """On stop: the holes still waiting are published as gaps and the trades held behind them released."""
        for symbol, holes in self._holes.items():
            while holes:
                self._give_up(symbol, holes.popleft(), "producer stopped before REST history-trades filled it")
            self._release_held(symbol)

    def _on_book(self, diff: DepthDiff) -> None:
        book = self.books[diff.symbol]
        result = book.on_diff(diff)
        self._publish_applied(book, result.applied)
        if result.resync_reason:
            self._count_resync(book.symbol, result.resync_reason)
            self._repairs.ensure(f"snapshot:{book.symbol}", self._rest_snapshot(book))

    def _publish_applied(self, book: OkxBookSync, applied: list[DepthDiff]) -> None:
        for d in applied:
            self.publisher.publish("md.depth", self._key(book.symbol), okx_depth_record(d), d.receive_time)
        self._book_updates[book.symbol] += len(applied)
        if applied and self.config.book_interval_ms == 0 and book.is_live:
            self.publish_book(book)

    # --- book recovery --------------------------------------------------------------------------
    async def _rest_snapshot(self, book: OkxBookSync) -> None:
        """REST snapshots until the book is live again (a websocket snapshot may also come first)."""
        assert self._stop is not None
        instrument = self.instruments[okx_swap_inst_id(book.symbol)]
        delay = 0.2
        tries_after_end = 3  # a replay that has ended waits for a few tries, not for REST forever
        while book.needs_snapshot and not self._stop.is_set():
            if self.replay_end is not None:
                if tries_after_end == 0:
                    log.error("okx book not resynchronised before the end of the replay", symbol=book.symbol)
                    return
                tries_after_end -= 1
            try:
                body = await self.rest.get(
                    "/api/v5/market/books", {"instId": instrument.inst_id, "sz": str(REST_BOOK_DEPTH)}
                )
                snap = parse_rest_books(body, instrument, int(time.time() * 1000))
            except (OkxRestUnavailable, OkxRestRejected, FrameError) as exc:
                log.warning("okx book snapshot failed", symbol=book.symbol, error=str(exc))
            else:
                result = book.on_rest_snapshot(snap)
                self._publish_applied(book, result.applied)
                if result.resync_reason:
                    self._count_resync(book.symbol, result.resync_reason)
                elif book.is_live:
                    log.info("okx book resynchronised from REST", symbol=book.symbol, seq_id=snap.last_update_id)
                    return
            if await sleep_or_stop(self._stop, delay):
                return
            delay = min(delay * 2, 5.0)

    # --- VenueProducer hooks ---------------------------------------------------------------------------
    def _book_version(self, symbol: str) -> int:
        return self._book_updates[symbol]

    def _connected_detail(self) -> str:
        detail = f"connected: {len(self.stream.config.streams)} channels, {len(self.instruments)} symbols"
        return detail + (f" (OKX lists no swap for {', '.join(self.missing_swaps)})" if self.missing_swaps else "")

    def _continuity_counts(self) -> dict[str, int]:
        return {
            "duplicates dropped": sum(n.counters.duplicates for n in self.numbering.values()),
            "gaps filled": self.gaps_filled,
            "gaps unfilled": self.gaps_unfilled,
        }

    def _health_extra(self) -> dict:
        return {
            "trade_gaps_filled": self.gaps_filled,
            "trade_gaps_unfilled": self.gaps_unfilled,
            "instruments_loaded": len(self.instruments),
            "okx_swaps_missing": self.missing_swaps,
        }

    def _on_reconnect(self, reason: str) -> None:
        super()._on_reconnect(reason)
        if reason == "rotation":
            return  # the old connection keeps delivering until the new one does: nothing is lost
        for book in self.books.values():
            book.invalidate()  # the next connection's subscription brings a fresh snapshot
