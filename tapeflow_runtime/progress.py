"""Progress markers on `md.progress`: a source's exact promise about how far a key's `md.*` data is complete.

Why: the engine joins five `md.*` topics per `exchange:symbol`, and Kafka gives no order across topics.
With the data already in the broker it can wait until every topic is read to its end; while a replay,
a topic copy or a warm start is still writing, "read to the end" proves nothing, and a wall-clock
lateness allowance only makes a loss less likely. A source that publishes markers removes the guess:

    marker k of key K = (watermark W, offsets O): every record of K this source will ever publish
    with an event time <= W is already on the topics, at or below offset O[topic] of K's partition.

The engine holds K's inputs and releases them marker by marker (records at or below O with event time
<= W), so what it computes depends only on what the source published, in the order it published it,
never on how the consumer's fetches interleave (`stream_apps.faust_app.processor`).

Offsets are known only once the broker acknowledged a record. `Publisher.track` counts records per
(topic, key) and reports each acknowledgement with its offset; since a partition acknowledges in
produce order, "the n-th record of K on a topic" identifies one offset. A marker records, when it is
made, how many records of K each topic had been given, and is published once all of those are
acknowledged (never from inside a delivery callback: `publish_ready` runs from the source's loop).
Markers of one key are published in order. `finish` sends each key's final marker (the consumer then
stops waiting for this source) after a flush.

Hand-written because the promise is specific to tapeflow's topics (Kafka has no cross-topic
watermark; Flink's watermarks live inside one job, not between producer and consumer processes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from schemas.catalogue import PROGRESS_TOPIC
from tapeflow_runtime.publisher import Publisher

FINAL_WATERMARK = 2**63 - 1


@dataclass
class _Marker:
    key: bytes
    watermark: int
    final: bool
    sequence: int
    need: dict[str, int]  # full topic -> records of the key produced there when the marker was made
    offsets: dict[str, int] = field(default_factory=dict)  # full topic -> offset of that record

    @property
    def ready(self) -> bool:
        return len(self.offsets) == len(self.need)


class ProgressMarkers:
    """Makes and publishes the markers of one source (one process) for the keys it writes."""

    def __init__(self, publisher: Publisher, source: str, topics: Iterable[str]) -> None:
        self.publisher = publisher
        self.source = source
        self.topics = tuple(topics)
        self._full = {publisher.prefix + t: t for t in self.topics}
        publisher.track(self.topics)
        publisher.on_tracked_ack = self._acked
        self._pending: dict[bytes, deque[_Marker]] = {}
        self._sequence: dict[bytes, int] = {}
        self._ready = False
        self.published = 0
        self.watermarks: dict[str, int] = {}  # key -> watermark of its newest marker (for status)

    def mark(self, key: str, watermark: int, final: bool = False) -> None:
        """Promise that `key`'s records up to event time `watermark` have been given to the publisher."""
        k = key.encode()
        produced = self.publisher.produced_count
        need = {t: produced[(t, k)] for t in self._full if produced.get((t, k), 0) > 0}
        sequence = self._sequence.get(k, 0)
        self._sequence[k] = sequence + 1
        marker = _Marker(k, FINAL_WATERMARK if final else watermark, final, sequence, need)
        acked, offsets = self.publisher.acked_count, self.publisher.acked_offset
        for t, n in need.items():
            if acked.get((t, k), 0) >= n:  # acknowledged already: the newest acknowledged is that record
                marker.offsets[t] = offsets[(t, k)]
        self._pending.setdefault(k, deque()).append(marker)
        self.watermarks[key] = marker.watermark
        self._ready = self._ready or marker.ready

    def _acked(self, topic: str, key: bytes | None, count: int, offset: int) -> None:
        for marker in self._pending.get(key or b"", ()):
            if marker.need.get(topic) == count:
                marker.offsets[topic] = offset
                self._ready = self._ready or marker.ready

    @property
    def has_ready(self) -> bool:
        return self._ready

    def publish_ready(self) -> int:
        """Publish every marker whose records are all acknowledged, in order per key; returns how many."""
        if not self._ready:
            return 0
        self._ready = False
        sent = 0
        for queue in self._pending.values():
            while queue and queue[0].ready:
                self._publish(queue.popleft())
                sent += 1
        return sent

    def pending(self) -> int:
        return sum(len(q) for q in self._pending.values())

    def finish(self, keys: Iterable[str], timeout: float = 30.0) -> int:
        """Final markers for `keys` once everything is delivered; returns markers still unpublished."""
        self.publisher.flush(timeout)
        for key in keys:
            self.mark(key, FINAL_WATERMARK, final=True)
        self._ready = True
        self.publish_ready()
        self.publisher.flush(timeout)
        return self.pending()

    def _publish(self, marker: _Marker) -> None:
        exchange, _, symbol = marker.key.decode().partition(":")
        self.publisher.publish(
            PROGRESS_TOPIC,
            marker.key.decode(),
            {
                "exchange": exchange,
                "symbol": symbol,
                "source": self.source,
                "watermark_ms": marker.watermark,
                "offsets": {self._full[t]: o for t, o in marker.offsets.items()},
                "final": marker.final,
                "sequence": marker.sequence,
            },
        )
        self.published += 1
