"""The Binance USD-M producer: one combined stream per process, normalised records to the md.* topics.

Wiring only; the decisions live in small pure pieces: `parse` (frame → record), `AggTradeSequencer`
(agg-id continuity), `OrderBookSync` (verified depth, top-N snapshots with OBI), and in
`TradeRepairs` (`trade_repairs`: REST gap fills, the first start's anchor, a restart's catch-up).
Gaps in trades are filled from REST before newer trades are published; a gap that cannot be filled
in time is published on `md.gaps` and counted. The last delivered agg id per symbol is checkpointed
(`checkpoint`) so a restarted producer fills the hole its own downtime left (or reports it when it is
too large).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from producers.base.book import DepthDiff, OrderBookSync
from producers.base.replay import ReplayClock, wait_idle
from producers.base.sequencer import AggTradeSequencer
from producers.base.stream import CombinedStream
from producers.base.venue import VenueProducer, book_snapshot_record
from producers.binance.checkpoint import AggIdCheckpoint
from producers.binance.parse import (
    EXCHANGE,
    FrameError,
    depth_diff_record,
    parse_agg_trade,
    parse_depth_diff,
    parse_depth_snapshot,
    parse_force_order,
    parse_mark_price,
    stream_kind,
)
from producers.binance.pollers import IndicatorPoller
from producers.binance.rest import WARM_START_SHARE, RateLimitGate, RestClient, RestRejected, RestUnavailable
from producers.binance.trade_repairs import TradeRepairs
from producers.binance.warm_start import WarmStart, WarmStartConfig
from producers.binance.ws_stream import BinanceStreamConfig
from producers.metrics import ProducerMetrics
from schemas.catalogue import ENGINE_INPUTS
from schemas.errors import SchemaValidationError
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher

log = structlog.get_logger("producer.binance")

LIVE_WS = "wss://fstream.binance.com"
LIVE_REST = "https://fapi.binance.com"


@dataclass
class ProducerConfig:
    symbols: list[str]
    ws_base_url: str = LIVE_WS
    rest_base_url: str = LIVE_REST
    book_depth: int = 20
    book_interval_ms: int = 250  # 0: publish md.book after every verified update
    gap_fill_timeout_s: float = 60.0
    gap_fill_grace_s: float = 0.5  # live: wait this long for the stream to close a hole before asking REST
    max_resume_gap_ids: int = 500_000
    checkpoint_path: Path | None = None
    spot_base_url: str = "https://api.binance.com"
    coinbase_base_url: str = "https://api.exchange.coinbase.com"
    poll_interval_s: float = 300.0  # md.indicators REST pollers; 0 disables them
    poll_stagger_s: float = 0.2  # spacing between poller requests (REST weight friendliness)
    replay_control_url: str | None = None  # fake exchange: a replay (ends with the fake's end-of-replay marker)
    # with replay_control_url: run on the recording's clock (ReplayClock) so the output is the same at any
    # speed; False keeps the live timers (tests of live behaviour against the fake exchange)
    replay_clock: bool = True
    replay_disorder_ms: int = 2_000  # a replay's progress watermark trails its clock by this (ReplayClock)
    warm_start: WarmStartConfig | None = None  # prime md.* with the last hours before streaming (warm_start)
    # (symbol, since ms) -> md.trades already holds the symbol from then on (a warm start has nothing to do)
    history_in_topics: Callable[[str, int], bool] | None = None
    stream_config: dict[str, Any] = field(default_factory=dict)

    def streams(self) -> list[str]:
        out = []
        for sym in self.symbols:
            s = sym.lower()
            out += [f"{s}@aggTrade", f"{s}@depth@100ms", f"{s}@markPrice@1s"]
        out.append("!forceOrder@arr")
        return out


class BinanceProducer(VenueProducer):
    exchange = EXCHANGE
    dlq_source = "ws:"

    def __init__(self, config: ProducerConfig, publisher: Publisher, metrics: ProducerMetrics) -> None:
        super().__init__(publisher, metrics, book_depth=config.book_depth, book_interval_ms=config.book_interval_ms)
        self.config = config
        self.books: dict[str, OrderBookSync] = {s: OrderBookSync(s) for s in config.symbols}
        self.sequencers = {s: AggTradeSequencer(s) for s in config.symbols}
        self.delivered_agg_id: dict[str, int] = {}
        self._checkpoint = AggIdCheckpoint(config.checkpoint_path)
        self._last_mark_time: dict[str, int] = {}
        self._recent_liquidations: dict[tuple, None] = {}
        self._rest: RestClient | None = None
        self._rate_gate = RateLimitGate()  # Retry-After windows per origin, shared by every REST client
        self.poller: IndicatorPoller | None = None
        self.replay: ReplayClock | None = None
        self.warm_start: WarmStart | None = None
        self._started_ms = 0  # wall clock when `run` began: where a first live start's chain is anchored
        replaying = config.replay_control_url is not None and config.replay_clock
        markers = None
        if replaying or config.warm_start is not None:  # one marker sequence per key, warm start then replay
            markers = ProgressMarkers(
                publisher, "warm-start" if config.warm_start else "producer-replay", ENGINE_INPUTS
            )
        if replaying:
            self.replay = ReplayClock(
                publisher,
                [self._key(s) for s in config.symbols],
                book_interval_ms=config.book_interval_ms,
                poll_interval_ms=round(config.poll_interval_s * 1000),
                disorder_ms=config.replay_disorder_ms,
                markers=markers,
            )
        self._markers = markers
        self.trade_repairs = TradeRepairs(
            config,
            self.sequencers,
            metrics,
            live=self.replay is None,
            publish_trades=self._publish_trades,
            publish_gap=self._publish_gap,
        )
        self._load_checkpoint()

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> str:
        """Run until `stop` (or the end of a replay); returns why it ended."""
        self._stop = stop
        self._started_ms = int(time.time() * 1000)
        replay = self.replay
        headers = replay.headers if replay is not None else None
        gate = self._rate_gate  # one IP: a ban met by any client holds them all back
        async with aiohttp.ClientSession() as session:
            self._rest = self.trade_repairs.rest = RestClient(
                session, self.metrics, give_up_after_s=self.config.gap_fill_timeout_s, headers=headers, gate=gate
            )
            if self.config.warm_start is not None and self._markers is not None:
                await self._warm_start(session, self._markers)
                if stop.is_set():
                    return "stopped"
            workers = self._start_stream(stop)
            if self.config.replay_control_url is None:  # live (a replay's REST serves its whole session)
                self._start_live_repairs()
            if replay is None:  # a replay publishes books on its own clock (ReplayClock)
                workers.append(asyncio.create_task(self._book_snapshots(stop), name="book"))
            ended = "stopped"
            if self.config.poll_interval_s > 0:
                # its own client: a Coinbase 429 must not pause Binance gap fills
                self.poller = self._indicator_poller(
                    RestClient(session, self.metrics, give_up_after_s=30.0, headers=headers, gate=gate)
                )
                if replay is None:  # a replay polls on its own clock, lockstep (ReplayClock)
                    workers.append(asyncio.create_task(self.poller.run(stop), name="pollers"))
            await stop.wait()
            if self.status.state == "replay-finished":
                ended = "replay-finished"
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._repairs.cancel_all()
        await self._flush_and_save()
        if ended != "replay-finished":
            self.status.set("stopped")
        return ended

    def _start_stream(self, stop: asyncio.Event) -> list[asyncio.Task]:
        """The combined stream and the housekeeping, as tasks."""
        self.stream = stream = CombinedStream(
            BinanceStreamConfig(
                self.config.ws_base_url,
                self.config.streams(),
                replay_end=self.config.replay_control_url is not None,
                **self.config.stream_config,
            ),
            self.on_frame,
            self._bad_frame,
            self._on_ws_status,
            self._on_reconnect,
            self._on_replay_end,
            hold=self._hold if self.replay is not None else None,
        )
        return [
            asyncio.create_task(stream.run(stop), name="ws"),
            asyncio.create_task(self._housekeeping(stop), name="housekeeping"),
        ]

    def _start_live_repairs(self) -> None:
        """Each symbol's chain at a live start: resumed from its checkpoint (the downtime filled now), or
        anchored at the first trade since the start, however late the first frame comes."""
        for sym, seq in self.sequencers.items():
            if seq.last_id is not None:  # a checkpoint (or a warm start): fill the downtime now
                self._repairs.ensure(f"fill:{sym}", self.trade_repairs.catch_up(sym))
            else:  # a first start: capture from now, however late the first frame comes (TradeRepairs.anchor)
                seq.anchoring = True

    def _indicator_poller(self, rest: RestClient) -> IndicatorPoller:
        replay = self.replay
        return IndicatorPoller(
            rest,
            symbols=self.config.symbols,
            publish=self.publisher.publish,
            metrics=self.metrics,
            futures_url=self.config.rest_base_url,
            spot_url=self.config.spot_base_url,
            coinbase_url=self.config.coinbase_base_url,
            interval_s=self.config.poll_interval_s,
            stagger_s=self.config.poll_stagger_s,
            as_of=replay.as_of if replay is not None else None,
            exchange_clock=self.config.replay_control_url is not None,
        )

    async def _flush_and_save(self) -> None:
        """After the stop: deliver what is queued, end a replay's markers, save the checkpoint."""
        self.undelivered = await asyncio.to_thread(self.publisher.flush, 30.0) + len(self.publisher.failed)
        if self.replay is not None:  # the engine stops waiting for this replay's markers
            await asyncio.to_thread(self.replay.finish)
        self._save_checkpoint()

    # --- frames -----------------------------------------------------------------------------------
    def on_frame(self, stream: str, data: dict, received: int, raw: bytes) -> None:
        kind = stream_kind(stream)
        self.metrics.saw_event(kind, "binance", stream.partition("@")[0].upper())
        try:
            if kind == "aggTrade":
                self._on_trade(parse_agg_trade(data, received))
            elif kind == "depth":
                self._on_depth(parse_depth_diff(data, received))
            elif kind == "markPrice":
                self._on_mark(parse_mark_price(data, received))
            elif kind == "forceOrder":
                self._on_liquidation(parse_force_order(data, received))
            else:
                raise FrameError(f"unexpected stream {stream!r}")
        except (FrameError, SchemaValidationError) as exc:
            self._bad_frame(raw, str(exc), stream=kind)
        if self.replay is not None:
            self.replay.advance(data.get("E"), self._publish_changed_books, self._poll_now)

    # --- warm start ------------------------------------------------------------------------------------
    async def _warm_start(self, session: aiohttp.ClientSession, markers: ProgressMarkers) -> None:
        """History first (`warm_start`); the live stream then continues each symbol from its last agg id."""
        assert self.config.warm_start is not None
        # a short budget per request: an exchange that does not answer is reported (`unreachable`) within
        # seconds and retried by the warm start itself, with backoff, instead of a 2-minute silence
        rest = RestClient(
            session,
            self.metrics,
            give_up_after_s=self.config.warm_start.request_budget_s,
            gate=self._rate_gate,
            share=WARM_START_SHARE,
        )  # headroom for the live repairs
        self.warm_start = warm = WarmStart(
            self.config.warm_start,
            rest,
            self.config.rest_base_url,
            self.publisher,
            markers,
            self.config.symbols,
            in_topics=self.config.history_in_topics or (lambda symbol, since: False),
        )

        def show() -> None:  # `priming`, or `unreachable`/`restricted` with what to do while it retries
            self.status.set(warm.trouble[0] if warm.trouble is not None else "priming", warm.describe())

        show()
        task = asyncio.create_task(warm.run(final_markers=self.replay is None))
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done and self._stop is not None and self._stop.is_set():
                task.cancel()  # stopped while waiting for an exchange that does not answer
                await asyncio.gather(task, return_exceptions=True)
                return
            show()
        for symbol, agg_id in task.result().items():
            seq = self.sequencers[symbol]
            if seq.last_id is None or agg_id > seq.last_id:
                seq.last_id = agg_id
                self.delivered_agg_id[symbol] = agg_id
        self._save_checkpoint()
        self.status.set("starting", self.warm_start.describe())

    # --- replay: the recording's clock, lockstep repairs ----------------------------------------------
    def _hold(self):
        """Before the next frame of a replay: wait while a repair or poll runs (lockstep)."""
        return wait_idle(self._repairs.tasks) if self._repairs.busy() else None

    def _poll_now(self) -> None:
        if self.poller is not None:
            self._repairs.ensure("poll", self.poller.run_once())

    def _on_trade(self, trade: dict) -> None:
        sym = trade["symbol"]
        seq = self.sequencers.get(sym)
        if seq is None:
            raise FrameError(f"trade for unsubscribed symbol {sym}")
        before, duplicates = seq.counters.gaps_detected, seq.counters.duplicates
        self._publish_trades(sym, seq.offer(trade))
        if seq.counters.gaps_detected > before:
            self.metrics.gaps_detected.labels(sym).inc(seq.counters.gaps_detected - before)
        if seq.counters.duplicates > duplicates:
            self.metrics.duplicates_dropped.labels(sym).inc(seq.counters.duplicates - duplicates)
        if seq.gap is not None:
            self._repairs.ensure(f"fill:{sym}", self.trade_repairs.fill_gap(sym))
        elif seq.anchoring and len(seq.held) == 1:  # the first frame since a first start
            self._repairs.ensure(f"fill:{sym}", self.trade_repairs.anchor(sym, self._started_ms))

    def _publish_trades(self, sym: str, trades: list[dict]) -> None:
        for t in trades:
            agg_id = t["agg_id"]

            def delivered(_agg_id=agg_id, _sym=sym) -> None:
                if _agg_id > self.delivered_agg_id.get(_sym, -1):
                    self.delivered_agg_id[_sym] = _agg_id

            self.publisher.publish("md.trades", self._key(sym), t, t["receive_time"], on_delivered=delivered)

    def _on_depth(self, diff: DepthDiff) -> None:
        book = self.books.get(diff.symbol)
        if book is None:
            raise FrameError(f"depth for unsubscribed symbol {diff.symbol}")
        self._apply_book_result(book, book.on_diff(diff))
        if book.needs_snapshot:
            self._repairs.ensure(f"snapshot:{book.symbol}", self._fetch_snapshot(book))

    def _apply_book_result(self, book: OrderBookSync, result, books_published: bool = False) -> None:
        for d in result.applied:
            self.publisher.publish("md.depth", self._key(book.symbol), depth_diff_record(d), d.receive_time)
        if result.applied and self.config.book_interval_ms == 0 and book.is_live and not books_published:
            self.publish_book(book)  # cadence 0: a top-N snapshot after every verified update
        if result.resync_reason:
            self._count_resync(book.symbol, result.resync_reason)

    def _on_mark(self, rec: dict) -> None:
        sym = rec["symbol"]
        if rec["event_time"] <= self._last_mark_time.get(sym, -1):
            return  # duplicate from a reconnect overlap
        self._last_mark_time[sym] = rec["event_time"]
        self.publisher.publish("md.mark", self._key(sym), rec, rec["receive_time"])

    def _on_liquidation(self, rec: dict) -> None:
        ident = (rec["symbol"], rec["trade_time"], rec["side"], rec["qty"], rec["avg_price"])
        if ident in self._recent_liquidations:
            return
        self._recent_liquidations[ident] = None
        if len(self._recent_liquidations) > 10_000:
            for k in list(self._recent_liquidations)[:5_000]:
                del self._recent_liquidations[k]
        self.publisher.publish("md.liquidations", self._key(rec["symbol"]), rec, rec["receive_time"])

    # --- REST-backed repairs ------------------------------------------------------------------------
    async def _fetch_snapshot(self, book: OrderBookSync) -> None:
        assert self._rest is not None
        url = f"{self.config.rest_base_url}/fapi/v1/depth"
        if self.replay is None:  # (a replay asks for the book as of its clock: nothing to wait for)
            await asyncio.sleep(0.05)  # let a few diffs buffer first, as Binance's procedure expects
        while book.needs_snapshot:
            try:
                body, received = await self._rest.get_json(url, {"symbol": book.symbol, "limit": 1000})
                snap = parse_depth_snapshot(body, book.symbol, received)
            except (RestUnavailable, RestRejected, FrameError) as exc:
                log.warning("depth snapshot failed, retrying", symbol=book.symbol, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            per_update = self.config.book_interval_ms == 0
            states: list[dict] = []  # per-update cadence: every state the snapshot replay goes through
            result = book.on_snapshot(
                snap,
                after_each=(lambda _d: states.append(book_snapshot_record(EXCHANGE, book, self.config.book_depth)))  # noqa: B023 - called within this iteration
                if per_update
                else None,
            )
            if result.resync_reason is None:  # publish only states of a replay that verified
                for record in states:
                    self.publisher.publish("md.book", self._key(book.symbol), record, record["receive_time"])
            self._apply_book_result(book, result, books_published=per_update)
            if book.needs_snapshot:
                await asyncio.sleep(0.25)

    # --- VenueProducer hooks ---------------------------------------------------------------------------
    def _book_version(self, symbol: str) -> int:
        return self.books[symbol].last_update_id

    def _every_second(self) -> None:
        self._save_checkpoint()

    def _connected_detail(self) -> str:
        primed = f"; {self.warm_start.describe()}" if self.warm_start is not None else ""
        return f"connected: {len(self.config.streams())} streams, {len(self.config.symbols)} symbols{primed}"

    def _health_extra(self) -> dict:
        return {"gaps_open": sum(s.gap is not None for s in self.sequencers.values()), "priming": self.priming}

    @property
    def priming(self) -> bool:
        """A warm start is running (whatever the status word: it may be waiting for the exchange)."""
        return self.warm_start is not None and not self.warm_start.done

    def _continuity_counts(self) -> dict[str, int]:
        return {
            "duplicates dropped": sum(s.counters.duplicates for s in self.sequencers.values()),
            "gaps unfilled": sum(s.counters.gaps_given_up for s in self.sequencers.values()),
        }

    # --- checkpoint ----------------------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        for sym, last in self._checkpoint.load().items():
            if sym in self.sequencers:
                self.sequencers[sym].last_id = int(last)
                self.delivered_agg_id[sym] = int(last)

    def _save_checkpoint(self) -> None:
        self._checkpoint.save(self.delivered_agg_id, self.status)
