"""Never block, never flood: a bounded queue and a rate limit per channel, with a summary of what was held.

`Dispatcher.submit` is synchronous and returns at once: it either queues the message for the
channel's sender task or tallies it as held back. A channel takes at most `rate_per_minute` messages a
minute (a token bucket with that burst); what arrives beyond that, or while the channel's queue is
full (it is slow or hanging), is counted per kind, and as soon as a token is free again one summary
message says how many of which kind were held back. Delivery failures are counted and logged by
channel name, and the sender goes on with the next message: notifications are best effort.

The token bucket is hand-written (a dozen lines): the decision "send or tally" has to be taken
without awaiting, at submit time, and aiolimiter, the usual asyncio limiter, only offers an
`acquire()` that waits.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
import structlog

from tapeflow_notify.channels import Channel, DeliveryError
from tapeflow_notify.messages import Note, summary_note
from tapeflow_notify.metrics import NotifyMetrics

log = structlog.get_logger("notify")

QUEUE_SIZE = 100
SUMMARY_CHECK_S = 1.0
FAILING_AFTER = 3  # consecutive failures before a channel counts as failing in /health


class TokenBucket:
    def __init__(self, rate_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(rate_per_minute)
        self.per_second = rate_per_minute / 60.0
        self.clock = clock
        self.tokens = self.capacity
        self._at = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.per_second)
        self._at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ChannelSender:
    """One channel: its bucket, its queue, its sender task and what it held back."""

    def __init__(
        self,
        channel: Channel,
        rate_per_minute: int,
        metrics: NotifyMetrics,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.channel = channel
        self.rate = rate_per_minute
        self.metrics = metrics
        self.bucket = TokenBucket(rate_per_minute, clock)
        self.queue: asyncio.Queue[Note] = asyncio.Queue(maxsize=queue_size)
        self.held: Counter[str] = Counter()
        self.consecutive_failures = 0
        self.delivered = 0

    def submit(self, note: Note) -> None:
        # nothing overtakes a pending summary: while one cannot go out, new events join the tally
        held_because = self._flush_summary() if self.held else None
        if held_because is None:
            held_because = self._send(note)
        if held_because is not None:
            self.held[note.kind] += 1
            self.metrics.suppressed.labels(self.channel.name, note.kind, held_because).inc()
        self.metrics.queued.labels(self.channel.name).set(self.queue.qsize())

    def tick(self) -> None:
        """Called every second: sends the summary once the bucket has a token again."""
        if self.held:
            self._flush_summary()

    def _flush_summary(self) -> str | None:
        held_because = self._send(summary_note(dict(self.held), self.rate))
        if held_because is None:
            self.held.clear()
        return held_because

    def _send(self, note: Note) -> str | None:
        """Queue `note` if a token and a queue slot are free; otherwise why not (rate_limit, queue_full)."""
        if not self.bucket.take():
            return "rate_limit"
        try:
            self.queue.put_nowait(note)
        except asyncio.QueueFull:
            self.bucket.tokens += 1.0  # not sent: the token is still unused
            return "queue_full"
        return None

    @property
    def failing(self) -> bool:
        return self.consecutive_failures >= FAILING_AFTER

    async def run(self, session: aiohttp.ClientSession) -> None:
        name = self.channel.name
        while True:
            note = await self.queue.get()
            self.metrics.queued.labels(name).set(self.queue.qsize())
            try:
                await self.channel.send(session, note)
            except DeliveryError as exc:
                self.consecutive_failures += 1
                self.metrics.failures.labels(name).inc()
                log.warning("notification not delivered", channel=name, kind=note.kind, error=str(exc))
            else:
                self.consecutive_failures = 0
                self.delivered += 1
                self.metrics.sent.labels(name, note.kind).inc()
            finally:
                self.queue.task_done()  # drain() waits for this, not for an empty queue: one may be in flight


class Dispatcher:
    """Fans each note out to every channel; `run()` drives the senders until cancelled."""

    def __init__(
        self,
        channels: list[Channel],
        rate_per_minute: int,
        metrics: NotifyMetrics,
        clock: Callable[[], float] = time.monotonic,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.metrics = metrics
        metrics.expect_channels([c.name for c in channels])
        self.senders = [ChannelSender(c, rate_per_minute, metrics, clock, queue_size) for c in channels]

    def submit(self, note: Note) -> None:
        for sender in self.senders:
            sender.submit(note)

    async def run(self) -> None:
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.create_task(s.run(session)) for s in self.senders]
            try:
                while True:
                    await asyncio.sleep(SUMMARY_CHECK_S)
                    for s in self.senders:
                        s.tick()
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout_s: float) -> None:
        """At shutdown: give queued messages, and the one each sender is delivering, a moment to go out."""
        try:
            await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self.senders)), timeout_s)
        except TimeoutError:
            pass

    def health(self) -> dict:
        channels = {
            s.channel.name: {
                "delivered": s.delivered,
                "queued": s.queue.qsize(),
                "held": sum(s.held.values()),
                "failing": s.failing,
            }
            for s in self.senders
        }
        return {"channels": channels, "all_failing": all(s.failing for s in self.senders)}
