"""Aggregate-trade continuity from REST: the holes in a symbol's agg-id chain, filled before newer trades
are published.

Three ways a hole is found, one repair each:
- `fill_gap`: the stream skipped ids (`AggTradeSequencer.gap`); REST pages fill it, or it is given up
  on `md.gaps` (too large, REST failing, REST showing nothing for `gap_fill_timeout_s`).
- `anchor`: a live start without a checkpoint; the chain starts at the first trade since the start.
- `catch_up`: a live restart; the trades since the checkpoint, at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from producers.base.sequencer import AggTradeSequencer, Gap
from producers.binance.parse import FrameError, parse_rest_agg_trade
from producers.binance.rest import RestClient, RestRejected, RestUnavailable
from producers.metrics import ProducerMetrics

log = structlog.get_logger("producer.binance")

REST_PAGE = 1000  # aggTrades rows per REST request (Binance's maximum)


class RepairSettings(Protocol):
    """What the repairs read of the producer's configuration (`ProducerConfig`)."""

    rest_base_url: str
    gap_fill_timeout_s: float
    gap_fill_grace_s: float  # live: wait this long for the stream to close a hole before asking REST
    max_resume_gap_ids: int


class TradeRepairs:
    """The REST-backed repairs of every symbol's chain (`sequencers`); what they recover goes out through
    `publish_trades`, what they give up on through `publish_gap`. `rest` is set once the session is open."""

    def __init__(
        self,
        config: RepairSettings,
        sequencers: dict[str, AggTradeSequencer],
        metrics: ProducerMetrics,
        *,
        live: bool,
        publish_trades: Callable[[str, list[dict]], None],
        publish_gap: Callable[[str, int, int, str], None],
    ) -> None:
        self.config = config
        self.sequencers = sequencers
        self.metrics = metrics
        self.live = live  # a replay's REST answers at once, as of its clock: no grace to wait out
        self.publish_trades = publish_trades
        self.publish_gap = publish_gap
        self.rest: RestClient | None = None

    async def rest_page(self, sym: str, from_id: int) -> list:
        """Up to a REST page (1,000) of `sym`'s aggregate trades from `from_id`, parsed; raises
        ``RestUnavailable``/``RestRejected``/``FrameError`` (the gap fill gives up, the catch-up logs)."""
        assert self.rest is not None
        rows, received = await self.rest.get_json(
            f"{self.config.rest_base_url}/fapi/v1/aggTrades", {"symbol": sym, "fromId": from_id, "limit": REST_PAGE}
        )
        return [parse_rest_agg_trade(r, sym, received) for r in rows]

    async def fill_gap(self, sym: str) -> None:
        seq = self.sequencers[sym]
        if self.live and self.config.gap_fill_grace_s > 0:
            # a hole the stream closes a moment later (frames out of order, a reconnect's overlap) costs
            # no REST weight: every aggTrades request weighs 20, and half a minute of reordered frames
            # hit the used-weight brake, so the next real hole waited ~30 s for the weight window
            await asyncio.sleep(self.config.gap_fill_grace_s)
        deadline = time.monotonic() + self.config.gap_fill_timeout_s
        while seq.gap is not None:
            gap = seq.gap
            if gap.to_id - gap.from_id + 1 > self.config.max_resume_gap_ids:
                self.give_up(sym, gap, "gap larger than max_resume_gap_ids; use `tapeflow backfill binance-vision`")
                continue
            try:
                trades = await self.rest_page(sym, gap.from_id)
            except (RestUnavailable, RestRejected, FrameError) as exc:
                self.give_up(sym, gap, f"REST fill failed: {exc}")
                continue
            before = seq.counters.gaps_filled
            self.publish_trades(sym, seq.offer_many(trades))
            if seq.counters.gaps_filled > before:
                self.metrics.gaps_filled.labels(sym).inc(seq.counters.gaps_filled - before)
            if seq.gap == gap and not trades:
                if time.monotonic() > deadline:
                    self.give_up(
                        sym,
                        gap,
                        f"REST has no trades from id {gap.from_id} after {self.config.gap_fill_timeout_s:.0f}s",
                    )
                    continue
                await asyncio.sleep(0.5)  # the REST view can lag the stream by a moment

    async def anchor(self, sym: str, since_ms: int) -> None:
        """A live start without a checkpoint: the symbol's chain starts at the first trade at or after
        ``since_ms`` (REST ``startTime``), so the trades before the stream's first frame are a gap that
        ``fill_gap`` fills. REST is asked once the first frame is held (so it has a trade since the
        start to show: the producer's ``_on_trade`` starts it then), and the chain starts at whichever is
        earlier. Without it, a first connection that found the exchange not sending yet reconnected after
        its read timeout, and the trades sent meanwhile never entered the pipeline, with nothing said.
        Trades are held (``AggTradeSequencer.anchoring``) until REST answers; if it cannot, the chain
        starts at the first frame as before, with a warning."""
        seq = self.sequencers[sym]
        first = await self._first_trade_since(sym, since_ms)
        before = seq.counters.gaps_detected
        self.publish_trades(sym, seq.anchor(first))
        if seq.counters.gaps_detected > before:
            self.metrics.gaps_detected.labels(sym).inc(seq.counters.gaps_detected - before)
        if seq.gap is not None:
            await self.fill_gap(sym)

    async def _first_trade_since(self, sym: str, since_ms: int) -> int | None:
        """The agg id of `sym`'s first trade at or after `since_ms` from REST (None: REST cannot say)."""
        assert self.rest is not None
        deadline = time.monotonic() + self.config.gap_fill_timeout_s
        while True:
            try:
                rows, received = await self.rest.get_json(
                    f"{self.config.rest_base_url}/fapi/v1/aggTrades", {"symbol": sym, "startTime": since_ms, "limit": 1}
                )
            except (RestUnavailable, RestRejected, FrameError) as exc:
                log.warning(
                    "no first trade since the start from REST; the chain starts at the first frame",
                    symbol=sym,
                    error=str(exc),
                )
                return None
            if rows:
                return parse_rest_agg_trade(rows[0], sym, received)["agg_id"]
            if time.monotonic() > deadline:
                log.warning("REST shows no trade since the start; the chain starts at the first frame", symbol=sym)
                return None
            await asyncio.sleep(0.5)  # the REST view can lag the stream by a moment

    async def catch_up(self, sym: str) -> None:
        """A live restart: the trades since the checkpoint, from REST at once, page by page until a short
        page (REST's present), then whatever hole the stream has opened meanwhile (`fill_gap`).

        Without it the hole a restart left was only seen at the stream's next trade of the symbol: a quiet
        symbol, or a session that ended while the producer was down (a broker restart after the exchange's
        last trade), kept the hole. At most ``max_resume_gap_ids`` trades this way; a longer downtime is then the gap the stream's
        next trade opens, given up on `md.gaps` as before. A REST failure here only logs: the stream's next
        trade opens the gap and `fill_gap` retries it."""
        seq = self.sequencers[sym]
        fetched = 0
        while seq.gap is None and seq.last_id is not None and fetched < self.config.max_resume_gap_ids:
            try:
                trades = await self.rest_page(sym, seq.last_id + 1)
            except (RestUnavailable, RestRejected, FrameError) as exc:
                log.warning(
                    "catch-up from the checkpoint failed; the stream's next trade opens the gap",
                    symbol=sym,
                    from_id=seq.last_id + 1,
                    error=str(exc),
                )
                return
            fetched += len(trades)
            self.publish_trades(sym, seq.offer_many(trades))
            if len(trades) < REST_PAGE:
                break
        if fetched:
            log.info("caught up from the checkpoint", symbol=sym, trades=fetched)
        if seq.gap is not None:
            await self.fill_gap(sym)

    def give_up(self, sym: str, gap: Gap, reason: str) -> None:
        seq = self.sequencers[sym]
        gap, released = seq.give_up(gap)
        self.metrics.gaps_unfilled.labels(sym).inc()
        log.error("aggTrade gap not fillable", symbol=sym, from_id=gap.from_id, to_id=gap.to_id, reason=reason)
        self.publish_gap(sym, gap.from_id, gap.to_id, reason)
        self.publish_trades(sym, released)
