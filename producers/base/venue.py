"""What every exchange producer shares: status, keys, dead letters, gaps, book snapshots, housekeeping,
health, one-at-a-time repair tasks, the end of a replay and its summary (`VenueProducer`).

End of a replay. The fake exchange's end-of-replay marker (`producers.base.stream`) says how many
messages it sent on the connection; once the producer has read that many, every frame has been read
and processed (frames are handled synchronously, in order). The producer then waits for its repairs
(gap fills, book snapshots) and ends; `run` flushes the publisher before it reports. The summary
counts what really happened: frames in, records delivered per topic, duplicates, dead letters, gaps,
undelivered. (It replaces a poll of the fake's status followed by a 0.5 s grace period, which
dropped whatever was still unread in the socket buffer at `max` speed while reporting nothing lost.)

A venue (`producers/binance`, `producers/bybit`) subclasses `VenueProducer` and keeps only what differs:
parsing, continuity, book rules and its repairs. A fix to, say, the end-of-replay handshake lands in
every producer at once; venues import this base and the runtime, never each other (as cryptofeed's
exchanges build on its `feed.py`, or NautilusTrader's adapters on its common data client).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import structlog

from producers.base.book import order_book_imbalance
from producers.base.stream import sleep_or_stop
from producers.metrics import ProducerMetrics
from schemas.catalogue import market_key
from tapeflow_runtime.publisher import Publisher

log = structlog.get_logger("producer")

DLQ_TOPIC = "dlq.md"


@dataclass
class ProducerStatus:
    state: str = "starting"  # starting | connected | unreachable | silent | replay-finished | stopped
    detail: str = ""
    since: float = field(default_factory=time.time)

    def set(self, state: str, detail: str = "") -> None:
        self.state, self.detail, self.since = state, detail, time.time()


class RepairTasks:
    """Named background tasks (a gap fill per symbol, a snapshot per book): at most one of each at a time."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task] = {}

    def ensure(self, name: str, coro: Coroutine) -> None:
        task = self.tasks.get(name)
        if task is not None and not task.done():
            coro.close()  # already running: the running one will see the new state
            return
        self.tasks[name] = asyncio.create_task(coro, name=name)

    def busy(self) -> bool:
        return any(not t.done() for t in self.tasks.values())

    async def cancel_all(self) -> None:
        for t in self.tasks.values():
            t.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


class TopBook(Protocol):
    symbol: str
    last_update_id: int
    last_event_time: int

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]: ...


def book_snapshot_parts(
    exchange: str, book: TopBook, depth: int, now_ms: int | None = None
) -> tuple[dict, list[tuple[float, float]], list[tuple[float, float]]]:
    """An md.book record's fields but its levels (``obi_10`` included), and the levels: the verified
    book's top ``depth`` bids and asks as (price, qty), best first. A backtest source that wants the
    levels as arrays too builds them from these (``backtest.sources.recording``)."""
    bids, asks = book.top(depth)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return (
        {
            "exchange": exchange,
            "symbol": book.symbol,
            "last_update_id": book.last_update_id,
            "event_time": book.last_event_time,
            "receive_time": now,
            "obi_10": order_book_imbalance(bids, asks, 10),
        },
        bids,
        asks,
    )


def book_snapshot_record(exchange: str, book: TopBook, depth: int, now_ms: int | None = None) -> dict:
    """An md.book record: the verified book's top `depth` levels and OBI over 10 levels."""
    fields, bids, asks = book_snapshot_parts(exchange, book, depth, now_ms)
    obi = fields.pop("obi_10")  # the schema's order: the levels before it
    fields["bids"] = [{"price": p, "qty": q} for p, q in bids]
    fields["asks"] = [{"price": p, "qty": q} for p, q in asks]
    fields["obi_10"] = obi
    return fields


class VenueProducer:
    """The shared half of an exchange producer; a venue sets `exchange` and fills in the hooks.

    Subclasses provide `books` (symbol -> a live/verified book with `top()`), `on_frame`, `run` and
    the `_connected_detail`, `_book_version`, `_health_extra` hooks.
    """

    exchange: ClassVar[str]
    dlq_source: ClassVar[str]  # `source_topic` prefix of dead-lettered frames, e.g. "ws:" or "ws:bybit:"

    def __init__(
        self, publisher: Publisher, metrics: ProducerMetrics, *, book_depth: int, book_interval_ms: int
    ) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self.status = ProducerStatus()
        self.books: Mapping[str, Any] = {}
        self.book_depth = book_depth
        self.book_interval_ms = book_interval_ms
        self._book_published: dict[str, Any] = {}  # symbol -> _book_version at its last md.book
        self._repairs = RepairTasks()
        self._stop: asyncio.Event | None = None
        self.replay_end: dict | None = None  # the fake's end-of-replay marker, with what we received
        self.stream: Any = None  # the venue's CombinedStream (its `messages_in` is the summary's frames in)
        self.undelivered = 0  # set by run() after the final flush
        # what a replay lost in transport (a connection lost mid-replay, messages unread at its end):
        # frames the exchange sent that never reached us cannot be repaired from a recording's stream,
        # so the run says so (summary, status, exit code) instead of reporting a clean replay
        self.replay_losses: list[str] = []

    # --- records --------------------------------------------------------------------------------
    def _key(self, symbol: str) -> str:
        return market_key(self.exchange, symbol)

    def _bad_frame(self, raw: bytes, reason: str, stream: str = "unknown") -> None:
        log.warning("dead-lettering frame", exchange=self.exchange, stream=stream, reason=reason)
        self.publisher.dead_letter(DLQ_TOPIC, f"{self.dlq_source}{stream}", raw, reason, stage="normalise")

    def _publish_gap(self, symbol: str, from_id: int, to_id: int, reason: str) -> None:
        """A hole in `md.trades` that will not be filled, on `md.gaps` for the sink and the audit."""
        self.publisher.publish(
            "md.gaps",
            self._key(symbol),
            {
                "exchange": self.exchange,
                "symbol": symbol,
                "stream": "md.trades",
                "from_id": from_id,
                "to_id": to_id,
                "detected_time": int(time.time() * 1000),
                "reason": reason[:500],
            },
        )

    def _count_resync(self, symbol: str, reason: str) -> None:
        """A broken order book: counted, logged and recorded on `md.gaps` (stream ``md.depth``, reason
        ``resync: …``), so the database keeps every break for the UI's light and the audit. The record
        marks where the chain broke: ``from_id`` = ``to_id`` = the first update id after the last one
        the book applied (how many updates the new snapshot then replaced is not known at the break)."""
        # the label is the reason's kind only ("pu=123 != last u=120" -> "pu"): an update id in a label
        # value made a new series per resync
        self.metrics.book_resyncs.labels(symbol, reason.split(" ")[0].split("=")[0]).inc()
        log.warning("order book resync", exchange=self.exchange, symbol=symbol, reason=reason)
        book = self.books.get(symbol)
        after = (getattr(book, "last_update_id", None) or 0) + 1
        self.publisher.publish(
            "md.gaps",
            self._key(symbol),
            {
                "exchange": self.exchange,
                "symbol": symbol,
                "stream": "md.depth",
                "from_id": after,
                "to_id": after,
                "detected_time": int(time.time() * 1000),
                "reason": f"resync: {reason}"[:500],
            },
        )

    # --- md.book ----------------------------------------------------------------------------------
    def _book_version(self, symbol: str) -> Any:
        """What changes whenever the book does (a venue's update id or a count of applied updates)."""
        raise NotImplementedError

    def publish_book(self, book: TopBook) -> None:
        self._book_published[book.symbol] = self._book_version(book.symbol)
        record = book_snapshot_record(self.exchange, book, self.book_depth)
        self.publisher.publish("md.book", self._key(book.symbol), record, record["receive_time"])

    async def _book_snapshots(self, stop: asyncio.Event) -> None:
        """Top-N snapshots of every live book that changed, every `book_interval_ms` (0: on each update)."""
        if self.book_interval_ms == 0:
            return  # published on every update instead
        interval = self.book_interval_ms / 1000
        while not await sleep_or_stop(stop, interval):
            self._publish_changed_books()

    def _publish_changed_books(self) -> None:
        for sym, book in self.books.items():
            if book.is_live and self._book_published.get(sym) != self._book_version(sym):
                self.publish_book(book)

    # --- periodic work and status -------------------------------------------------------------------
    def _every_second(self) -> None:
        """Housekeeping a venue adds (e.g. a checkpoint)."""

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        while not await sleep_or_stop(stop, 1.0):
            self.publisher.poll(0)
            self.metrics.refresh_freshness()
            self._every_second()

    def _connected_detail(self) -> str:
        raise NotImplementedError

    def _on_ws_status(self, state: str, detail: str) -> None:
        if state == "connected":
            detail = self._connected_detail()
        self.status.set(state, detail)

    def _on_reconnect(self, reason: str) -> None:
        self.metrics.reconnects.labels(reason).inc()
        stream = self.stream
        replaying = stream is not None and getattr(stream.config, "replay_end", False)
        if replaying and reason != "rotation" and stream.messages_in > 0 and self.replay_end is None:
            # frames queued for the lost connection (and those sent while none was open) are gone
            self.replay_losses.append(f"connection lost mid-replay after {stream.messages_in} messages ({reason})")
            log.error(
                "replay connection lost: frames in flight are lost", reason=reason, messages_in=stream.messages_in
            )

    @property
    def replay_incomplete(self) -> bool:
        return bool(self.replay_losses)

    def _replay_finished(self, fake_status: dict) -> None:
        # run() flushes the publisher once the workers have stopped, before it reports the end
        frames = fake_status.get("frames_sent_total", fake_status.get("frames_sent", "?"))
        if self.replay_losses:  # finished, but not whole: never shown as a clean replay
            self.status.set("replay-finished", f"INCOMPLETE replay of {frames} frames: {'; '.join(self.replay_losses)}")
            return
        self.status.set("replay-finished", f"replayed {frames} frames")

    def _on_replay_end(self, marker: dict, received: int) -> None:
        """The fake's end-of-replay marker arrived after `received` messages on this connection."""
        sent = marker.get("messages")
        self.replay_end = {**marker, "received": received}
        if sent != received:  # a transport loss the replay cannot repair: said loudly, never hidden
            log.error("replay connection lost messages", sent=sent, received=received)
            self.replay_losses.append(
                f"{sent - received if isinstance(sent, int) else '?'} messages of the last connection unread"
            )
        self._repairs.ensure("replay-end", self._end_replay_when_repaired(marker))

    def _repair_delays_end(self, name: str) -> bool:
        """Does the running repair `name` publish records the replay must wait for? (A venue may say no:
        a Bybit resubscription waits for a snapshot a finished replay never sends.)"""
        return name != "replay-end"

    async def _end_replay_when_repaired(self, marker: dict) -> None:
        while any(not t.done() for name, t in self._repairs.tasks.items() if self._repair_delays_end(name)):
            await asyncio.sleep(0.02)  # a gap fill or book snapshot still publishing
        self._replay_finished({"frames_sent_total": marker.get("frames_sent_total")})
        log.info(
            "replay finished",
            frames_sent=marker.get("frames_sent_total"),
            received=(self.replay_end or {}).get("received"),
        )
        if self._stop is not None:
            self._stop.set()

    def _continuity_counts(self) -> dict[str, int]:
        """Venue counters for the summary (duplicates dropped, gaps unfilled)."""
        return {}

    def summary(self, ended: str, frames_in: int, undelivered: int) -> str:
        """One line, the last of the log (`tapeflow status` shows it): what the run really did."""
        prefix = self.publisher.prefix
        by_topic = sorted(
            (t[len(prefix) :] if t.startswith(prefix) else t, n) for t, n in self.publisher.delivered_by_topic.items()
        )
        sent = (self.replay_end or {}).get("frames_sent_total")
        frames = f"{frames_in} frames in" + (f" ({sent} sent by the fake exchange)" if sent is not None else "")
        topics = ", ".join(f"{t} {n}" for t, n in by_topic)
        counts = {
            "duplicates dropped": 0,
            "gaps unfilled": 0,
            **self._continuity_counts(),
            "dead letters": self.publisher.dead_lettered,
            "undelivered": undelivered,
        }
        line = f"{ended}: {frames}, {self.publisher.delivered} records delivered ({topics}), " + ", ".join(
            f"{n} {label}" for label, n in counts.items()
        )
        if self.replay_losses:
            line += f"; INCOMPLETE: {'; '.join(self.replay_losses)}"
        return line

    def _health_extra(self) -> dict:
        return {}

    def health(self) -> dict:
        return {
            "status": self.status.state,
            "detail": self.status.detail,
            "books_live": sum(b.is_live for b in self.books.values()),
            "symbols": len(self.books),
            "publisher_healthy": self.publisher.healthy,
            "topic_prefix": self.publisher.prefix,
            **self._health_extra(),
        }
