"""A producer replaying a recording runs on the recording's clock, so its output is the same at any speed.

Live, a producer's periodic work follows the wall clock: a top-N book every 250 ms, REST indicators
every 5 minutes, a depth snapshot whenever the book needs one, fetched while frames keep arriving.
Replayed at 60x or at `max`, the same wall-clock timers land on different frames, and the same
recording yields different `md.book` and `md.indicators` records (and so different features). In a
replay (`ReplayClock`):

- the clock is the newest exchange event time among the frames processed so far;
- periodic work is due when that clock crosses a multiple of its interval (books every
  `book_interval_ms` of event time, indicator polls every `poll_interval_ms`);
- repairs and polls are lockstep: the stream reads no further frame while one runs (`hold`), and
  REST requests name the clock (`X-Tapeflow-As-Of`), so the fake exchange answers as of the frame
  the producer is at, however far ahead its replay has run;
- every 5 seconds of event time each key gets a progress marker (`tapeflow_runtime.progress`) with
  watermark = clock − `disorder_ms`: the exchange's own disorder (a trade stamped a little before a
  depth update that was sent earlier) is bounded by that; a record published at or below a
  watermark already promised is counted (`violations`), never dropped.

Everything here depends only on the frames in the order received, so the records, and the markers
between them, come out in the same order at every speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from schemas.catalogue import ENGINE_INPUT_TIME, ENGINE_INPUTS
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher

log = structlog.get_logger("producer.replay")

AS_OF_HEADER = "X-Tapeflow-As-Of"
MARKER_INTERVAL_MS = 5_000  # each marker is one engine step: fewer, larger steps cost less


class ReplayClock:
    """Event-time clock, due-work ticks and progress markers of one replaying producer."""

    def __init__(
        self,
        publisher: Publisher,
        keys: Iterable[str],
        *,
        book_interval_ms: int,
        poll_interval_ms: int,
        disorder_ms: int = 2_000,
        source: str = "producer-replay",
        markers: ProgressMarkers | None = None,
    ) -> None:
        self.keys = list(keys)
        self.book_interval_ms = book_interval_ms
        self.poll_interval_ms = poll_interval_ms
        self.disorder_ms = disorder_ms
        self.clock_ms: int | None = None
        self.markers = markers or ProgressMarkers(publisher, source, ENGINE_INPUTS)  # shared with a warm start
        self.violations = 0
        self._promised: dict[str, int] = {}  # key -> watermark of its last marker
        self._ticks: dict[str, int] = {}
        publisher.on_publish = self._check

    def headers(self) -> dict[str, str]:
        return {AS_OF_HEADER: str(self.clock_ms)} if self.clock_ms is not None else {}

    def as_of(self) -> int:
        return self.clock_ms if self.clock_ms is not None else 0

    def advance(self, event_ms: Any, publish_books: Callable[[], None], poll: Callable[[], None]) -> None:
        """After a frame: move the clock to its event time and do what became due, in a fixed order
        (books, markers, then the poll, which runs before the next frame is read)."""
        if isinstance(event_ms, int) and (self.clock_ms is None or event_ms > self.clock_ms):
            self.clock_ms = event_ms
            if self.book_interval_ms > 0 and self._crossed("book", self.book_interval_ms):
                publish_books()
            if self._crossed("marker", MARKER_INTERVAL_MS):
                watermark = event_ms - self.disorder_ms
                for key in self.keys:
                    self.markers.mark(key, watermark)
                    self._promised[key] = watermark
            if self.poll_interval_ms > 0 and self._crossed("poll", self.poll_interval_ms):
                poll()
        if self.markers.has_ready:
            self.markers.publish_ready()

    def _crossed(self, name: str, interval: int) -> bool:
        assert self.clock_ms is not None
        tick = self.clock_ms // interval
        if self._ticks.get(name) == tick:
            return False
        self._ticks[name] = tick
        return True

    def _check(self, topic: str, key: str, record: dict) -> None:
        field = ENGINE_INPUT_TIME.get(topic)
        promised = self._promised.get(key)
        if field is not None and promised is not None and record.get(field, promised + 1) <= promised:
            self.violations += 1
            if self.violations <= 10:
                log.warning(
                    "record at or below a promised watermark (counted; the engine applies it late)",
                    topic=topic,
                    key=key,
                    time=record.get(field),
                    watermark=promised,
                )

    def finish(self) -> int:
        """Final markers for every key once everything is delivered; returns markers left unpublished."""
        return self.markers.finish(self.keys)


async def wait_idle(tasks: dict[str, asyncio.Task]) -> None:
    """Until no task in `tasks` is running (a finishing task may start another: checked again)."""
    while running := [t for t in tasks.values() if not t.done()]:
        await asyncio.gather(*running, return_exceptions=True)
