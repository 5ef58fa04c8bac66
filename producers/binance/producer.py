"""The Binance USD-M producer: one combined stream per process, normalised records to the md.* topics.

Wiring only; the decisions live in small pure pieces: `parse` (frame → record), `AggTradeSequencer`
(agg-id continuity, REST gap fills), `OrderBookSync` (verified depth, top-N snapshots with OBI).
Gaps in trades are filled from REST before newer trades are published; a gap that cannot be filled
in time is published on `md.gaps` and counted. The last delivered agg id per symbol is checkpointed
so a restarted producer fills the hole its own downtime left (or reports it when it is too large).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from producers.base.book import DepthDiff, OrderBookSync
from producers.base.replay import ReplayClock, wait_idle
from producers.base.sequencer import AggTradeSequencer, Gap
from producers.base.stream import CombinedStream
from producers.base.venue import VenueProducer, book_snapshot_record
from producers.binance.parse import (
    EXCHANGE,
    FrameError,
    depth_diff_record,
    parse_agg_trade,
    parse_depth_diff,
    parse_depth_snapshot,
    parse_force_order,
    parse_mark_price,
    parse_rest_agg_trade,
    stream_kind,
)
from producers.binance.pollers import IndicatorPoller
from producers.binance.rest import WARM_START_SHARE, RateLimitGate, RestClient, RestRejected, RestUnavailable
from producers.binance.warm_start import WarmStart, WarmStartConfig
from producers.binance.ws_stream import BinanceStreamConfig
from producers.metrics import ProducerMetrics
from schemas.catalogue import ENGINE_INPUTS
from schemas.errors import SchemaValidationError
from tapeflow_runtime.files import atomic_write_text
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher

log = structlog.get_logger("producer.binance")

LIVE_WS = "wss://fstream.binance.com"
LIVE_REST = "https://fapi.binance.com"
REST_PAGE = 1000  # aggTrades rows per REST request (Binance's maximum)


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
        self._checkpoint_error: str | None = None  # why the last checkpoint save failed (disk full...)
        self._checkpoint_saved: dict[str, int] | None = None  # what the file holds since the last save
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
            self._rest = RestClient(
                session, self.metrics, give_up_after_s=self.config.gap_fill_timeout_s, headers=headers, gate=gate
            )
            if self.config.warm_start is not None and self._markers is not None:
                await self._warm_start(session, self._markers)
                if stop.is_set():
                    return "stopped"
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
                hold=self._hold if replay is not None else None,
            )
            workers = [
                asyncio.create_task(stream.run(stop), name="ws"),
                asyncio.create_task(self._housekeeping(stop), name="housekeeping"),
            ]
            if self.config.replay_control_url is None:  # live (a replay's REST serves its whole session)
                for sym, seq in self.sequencers.items():
                    if seq.last_id is not None:  # a checkpoint (or a warm start): fill the downtime now
                        self._repairs.ensure(f"fill:{sym}", self._catch_up(sym))
                    else:  # a first start: capture from now, however late the first frame comes (_anchor)
                        seq.anchoring = True
            if replay is None:  # a replay publishes books on its own clock (ReplayClock)
                workers.append(asyncio.create_task(self._book_snapshots(stop), name="book"))
            ended = "stopped"
            if self.config.poll_interval_s > 0:
                # its own client: a Coinbase 429 must not pause Binance gap fills
                self.poller = IndicatorPoller(
                    RestClient(session, self.metrics, give_up_after_s=30.0, headers=headers, gate=gate),
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
                if replay is None:  # a replay polls on its own clock, lockstep (ReplayClock)
                    workers.append(asyncio.create_task(self.poller.run(stop), name="pollers"))
            await stop.wait()
            if self.status.state == "replay-finished":
                ended = "replay-finished"
            for t in workers:
                t.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self._repairs.cancel_all()
        self.undelivered = await asyncio.to_thread(self.publisher.flush, 30.0) + len(self.publisher.failed)
        if replay is not None:  # the engine stops waiting for this replay's markers
            await asyncio.to_thread(replay.finish)
        self._save_checkpoint()
        if ended != "replay-finished":
            self.status.set("stopped")
        return ended

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
            self._repairs.ensure(f"fill:{sym}", self._fill_gap(sym))
        elif seq.anchoring and len(seq.held) == 1:  # the first frame since a first start
            self._repairs.ensure(f"fill:{sym}", self._anchor(sym, self._started_ms))

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
    async def _rest_page(self, sym: str, from_id: int) -> list:
        """Up to a REST page (1,000) of `sym`'s aggregate trades from `from_id`, parsed; raises
        ``RestUnavailable``/``RestRejected``/``FrameError`` (the gap fill gives up, the catch-up logs)."""
        assert self._rest is not None
        rows, received = await self._rest.get_json(
            f"{self.config.rest_base_url}/fapi/v1/aggTrades", {"symbol": sym, "fromId": from_id, "limit": REST_PAGE}
        )
        return [parse_rest_agg_trade(r, sym, received) for r in rows]

    async def _fill_gap(self, sym: str) -> None:
        seq = self.sequencers[sym]
        if self.replay is None and self.config.gap_fill_grace_s > 0:
            # a hole the stream closes a moment later (frames out of order, a reconnect's overlap) costs
            # no REST weight: every aggTrades request weighs 20, and half a minute of reordered frames
            # hit the used-weight brake, so the next real hole waited ~30 s for the weight window
            await asyncio.sleep(self.config.gap_fill_grace_s)
        deadline = time.monotonic() + self.config.gap_fill_timeout_s
        while seq.gap is not None:
            gap = seq.gap
            if gap.to_id - gap.from_id + 1 > self.config.max_resume_gap_ids:
                self._give_up(sym, gap, "gap larger than max_resume_gap_ids; use `tapeflow backfill binance-vision`")
                continue
            try:
                trades = await self._rest_page(sym, gap.from_id)
            except (RestUnavailable, RestRejected, FrameError) as exc:
                self._give_up(sym, gap, f"REST fill failed: {exc}")
                continue
            before = seq.counters.gaps_filled
            self._publish_trades(sym, seq.offer_many(trades))
            if seq.counters.gaps_filled > before:
                self.metrics.gaps_filled.labels(sym).inc(seq.counters.gaps_filled - before)
            if seq.gap == gap and not trades:
                if time.monotonic() > deadline:
                    self._give_up(
                        sym,
                        gap,
                        f"REST has no trades from id {gap.from_id} after {self.config.gap_fill_timeout_s:.0f}s",
                    )
                    continue
                await asyncio.sleep(0.5)  # the REST view can lag the stream by a moment

    async def _anchor(self, sym: str, since_ms: int) -> None:
        """A live start without a checkpoint: the symbol's chain starts at the first trade at or after
        ``since_ms`` (REST ``startTime``), so the trades before the stream's first frame are a gap that
        ``_fill_gap`` fills. REST is asked once the first frame is held (so it has a trade since the
        start to show: ``_on_trade`` starts it then), and the chain starts at whichever is earlier. Without
        it, a first connection that found the exchange not sending yet reconnected after its read
        timeout, and the trades sent meanwhile never entered the pipeline, with nothing said. Trades are held
        (``AggTradeSequencer.anchoring``) until REST answers; if it cannot, the chain starts at the
        first frame as before, with a warning."""
        seq = self.sequencers[sym]
        assert self._rest is not None
        first = None
        deadline = time.monotonic() + self.config.gap_fill_timeout_s
        while first is None:
            try:
                rows, received = await self._rest.get_json(
                    f"{self.config.rest_base_url}/fapi/v1/aggTrades", {"symbol": sym, "startTime": since_ms, "limit": 1}
                )
            except (RestUnavailable, RestRejected, FrameError) as exc:
                log.warning(
                    "no first trade since the start from REST; the chain starts at the first frame",
                    symbol=sym,
                    error=str(exc),
                )
                break
            if rows:
                first = parse_rest_agg_trade(rows[0], sym, received)["agg_id"]
            elif time.monotonic() > deadline:
                log.warning("REST shows no trade since the start; the chain starts at the first frame", symbol=sym)
                break
            else:
                await asyncio.sleep(0.5)  # the REST view can lag the stream by a moment
        before = seq.counters.gaps_detected
        self._publish_trades(sym, seq.anchor(first))
        if seq.counters.gaps_detected > before:
            self.metrics.gaps_detected.labels(sym).inc(seq.counters.gaps_detected - before)
        if seq.gap is not None:
            await self._fill_gap(sym)

    async def _catch_up(self, sym: str) -> None:
        """A live restart: the trades since the checkpoint, from REST at once, page by page until a short
        page (REST's present), then whatever hole the stream has opened meanwhile (`_fill_gap`).

        Without it the hole a restart left was only seen at the stream's next trade of the symbol: a quiet
        symbol, or a session that ended while the producer was down (a broker restart after the exchange's
        last trade), kept the hole. At most ``max_resume_gap_ids`` trades this way; a longer downtime is then the gap the stream's
        next trade opens, given up on `md.gaps` as before. A REST failure here only logs: the stream's next
        trade opens the gap and `_fill_gap` retries it."""
        seq = self.sequencers[sym]
        fetched = 0
        while seq.gap is None and seq.last_id is not None and fetched < self.config.max_resume_gap_ids:
            try:
                trades = await self._rest_page(sym, seq.last_id + 1)
            except (RestUnavailable, RestRejected, FrameError) as exc:
                log.warning(
                    "catch-up from the checkpoint failed; the stream's next trade opens the gap",
                    symbol=sym,
                    from_id=seq.last_id + 1,
                    error=str(exc),
                )
                return
            fetched += len(trades)
            self._publish_trades(sym, seq.offer_many(trades))
            if len(trades) < REST_PAGE:
                break
        if fetched:
            log.info("caught up from the checkpoint", symbol=sym, trades=fetched)
        if seq.gap is not None:
            await self._fill_gap(sym)

    def _give_up(self, sym: str, gap: Gap, reason: str) -> None:
        seq = self.sequencers[sym]
        gap, released = seq.give_up(gap)
        self.metrics.gaps_unfilled.labels(sym).inc()
        log.error("aggTrade gap not fillable", symbol=sym, from_id=gap.from_id, to_id=gap.to_id, reason=reason)
        self._publish_gap(sym, gap.from_id, gap.to_id, reason)
        self._publish_trades(sym, released)

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
        path = self.config.checkpoint_path
        if path is None or not path.exists():
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable checkpoint", path=str(path), error=str(exc))
            return
        for sym, last in saved.get("last_agg_id", {}).items():
            if sym in self.sequencers:
                self.sequencers[sym].last_id = int(last)
                self.delivered_agg_id[sym] = int(last)

    def _save_checkpoint(self) -> None:
        path = self.config.checkpoint_path
        if path is None or not self.delivered_agg_id:
            return
        if self._checkpoint_error is None and self._checkpoint_saved == self.delivered_agg_id:
            return  # nothing delivered since: an idle producer wrote the same file every second
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, json.dumps({"last_agg_id": self.delivered_agg_id, "saved_at": time.time()}))
            self._checkpoint_saved = dict(self.delivered_agg_id)
        except OSError as exc:  # a full disk, say: keep producing (the data is in Kafka), say it once
            if self._checkpoint_error is None:
                log.error(
                    "checkpoint not saved: a restart would resume from the last one saved",
                    path=str(path),
                    error=str(exc),
                )
            self._checkpoint_error = f"checkpoint not saved: {exc.strerror or exc}"
            if self._checkpoint_error not in self.status.detail:
                self.status.set(self.status.state, f"{self.status.detail}; {self._checkpoint_error}".lstrip("; "))
            return
        if self._checkpoint_error is not None:
            log.info("checkpoint saved again", path=str(path))
            self.status.set(
                self.status.state,
                self.status.detail.replace(f"; {self._checkpoint_error}", "").replace(self._checkpoint_error, ""),
            )
            self._checkpoint_error = None
