"""`tapeflow replay`: copy the records that reached the broker in a time range from `md.*` topics into a
namespace, in event-time order, with progress markers, at 1x, 10x or full speed, for rehearsals on
real history.

Two clocks, each used for what it can answer:
- The range (`--from`, `--to`) is in **arrival time**: the records' timestamps, which the broker sets
  when a record reaches it (every catalogue topic is ``message.timestamp.type=LogAppendTime``,
  ``schemas.catalogue``). Kafka's ListOffsets looks arrival times up in each segment's time index, so
  the range is an exact offset range per partition, found without reading the topic. A recording
  loaded today has arrived today, whatever its event times: `tapeflow topics describe` shows each
  topic's first and last arrival.
- The order, the pacing and the progress markers are in **event time**: the field each topic is
  ordered by in the engine (``schemas.catalogue.ENGINE_INPUT_TIME``: trade time, exchange event time,
  receive time), read from each record's value.

What it does, per run:
1. For every partition of the chosen topics, the range `[start, end)` of offsets: `start` the first
   offset stamped at or after `--from`, `end` the first stamped at or after `--to` (the partition's
   end offset when none is yet), both by ListOffsets (`tapeflow_runtime.offsets`). Records arriving
   during the replay are after `end`: a run copies what had arrived when it started.
2. One consumer reads all of them; a partition is done at offset `end - 1` (then paused: nothing after
   the range is read) or at its end. Arrival stamps grow with the offset unless the broker's clock
   stepped back; a record inside `[start, end)` stamped before `--from` nevertheless is skipped
   (counted, `skipped_before`), so the copy holds exactly the records stamped inside the range. The
   end is never guessed from a silence: a broker that stops answering before the ends are reached
   fails the replay (`stall_s`) instead of ending it short.
3. The records are merged by event time and produced unchanged (same key, same bytes, so the event
   times inside are kept) into `<prefix><NAME>.<topic>`. The copies' own timestamps are their arrival
   in the namespace (a LogAppendTime topic stamps every record it receives; the originals' arrival
   times cannot be kept). A partition mixes keys and sources, so its event times are only nearly
   ordered: a record is released once every partition still being read has reached `slack_ms` past it
   (a bounded-disorder merge, `slack_ms` = 5 s by default); one arriving later than that is still
   copied and counted (`late`).
4. Every 5 seconds of event time each key gets an `md.progress` marker: everything of the key up to
   the merge's watermark has been copied, at or below these offsets. An engine reading the namespace
   (`--input-prefix NAME`) releases its inputs marker by marker, so it computes exactly what it
   would on the same records in event-time order, whatever the speed. Final markers end the run.
5. `speed` paces the copy on event time (1x: as the events happened, whenever they arrived; `None`:
   as fast as possible).

Memory stays bounded: a partition running more than `max_ahead_ms` of event time ahead of the
merge is paused until the others catch up.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from schemas.catalogue import ENGINE_INPUT_TIME, ENGINE_INPUTS, TOPICS
from schemas.serde import AvroSerde
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.kafka_client import (
    HISTORY_FETCH_CONFIG,
    consumer_config,
    ensure_topics,
    topic_metadata,
)
from tapeflow_runtime.offsets import OffsetLookupError, offsets_at_or_after
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher, PublishMetrics

log = structlog.get_logger("replay")

SOURCE = "topic-replay"
MARKER_INTERVAL_MS = 5_000
_LEADER_UNKNOWN = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)
TIME_FIELDS = {**ENGINE_INPUT_TIME, "md.depth": "event_time", "md.gaps": "detected_time"}


class ReplayError(TapeflowError):
    """A replay that cannot run (unknown topic, empty range, bad namespace)."""


@dataclass
class ReplaySummary:
    from_ms: int
    to_ms: int
    copied: dict[str, int] = field(default_factory=dict)  # catalogue topic -> records copied
    skipped_symbols: int = 0
    skipped_before: int = 0  # stamped before --from although at or after the start offset
    in_range: int = 0  # offsets inside the range, every partition together (records and skips)
    read: int = 0  # of those, read so far
    late: int = 0
    markers: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    elapsed_s: float = 0.0
    undelivered: int = 0

    @property
    def records(self) -> int:
        return sum(self.copied.values())

    def line(self) -> str:
        rate = self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0
        topics = ", ".join(f"{t} {n}" for t, n in sorted(self.copied.items()))
        return (
            f"replayed {self.records} records ({topics}) in {self.elapsed_s:.1f} s ({rate:,.0f} records/s), "
            f"{self.markers} progress markers, {self.late} late, {self.undelivered} undelivered"
            + (f", {self.skipped_before} stamped before --from skipped" if self.skipped_before else "")
        )


@dataclass(order=True)
class _Item:
    time_ms: int
    order: int  # topic order, then offset: a stable order for equal times
    offset: int
    topic: str = field(compare=False)
    key: bytes | None = field(compare=False)
    value: bytes = field(compare=False)


@dataclass
class _Merge:
    """One copy's state: the partitions done, each partition's newest event time read, the partitions
    paused for running ahead, the records waiting for the watermark, and what has gone out."""

    ranges: dict[tuple[str, int], tuple[int, int]]  # (topic, partition) -> [start, end) offsets
    done: set[tuple[str, int]]
    newest: dict[tuple[str, int], int] = field(default_factory=dict)
    paused: set[tuple[str, int]] = field(default_factory=set)
    heap: list[_Item] = field(default_factory=list)
    emitted_ms: int | None = None  # watermark the copy has reached (markers promise up to it)
    marker_tick: int | None = None
    pace_origin: tuple[float, int] | None = None


def validate_topics(topics: Iterable[str]) -> list[str]:
    chosen = [t.strip() for t in topics if t.strip()]
    unknown = [t for t in chosen if t not in TIME_FIELDS or t not in TOPICS]
    if unknown or not chosen:
        raise ReplayError(f"cannot replay {', '.join(unknown) or 'no topic'}: choose from {', '.join(TIME_FIELDS)}")
    return list(dict.fromkeys(chosen))


class TopicReplay:
    """One copy of `[from_ms, to_ms)` of `topics` from `source_prefix` into `target_prefix`."""

    def __init__(
        self,
        bootstrap: str,
        serde: AvroSerde,
        *,
        source_prefix: str,
        target_prefix: str,
        topics: Iterable[str],
        from_ms: int,
        to_ms: int,
        speed: float | None = None,
        symbols: Iterable[str] | None = None,
        slack_ms: int = 5_000,
        max_ahead_ms: int = 600_000,
        stall_s: float = 120.0,
        on_progress: Callable[[ReplaySummary], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        pace_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if to_ms <= from_ms:
            raise ReplayError("--to must be after --from")
        if source_prefix == target_prefix:
            raise ReplayError("the target namespace is the source itself: a replay never writes into live topics")
        self.bootstrap, self.serde = bootstrap, serde
        self.source_prefix, self.target_prefix = source_prefix, target_prefix
        self.topics = validate_topics(topics)
        self.from_ms, self.to_ms, self.speed = from_ms, to_ms, speed
        self.symbols = {s.upper() for s in symbols} if symbols else None
        self.slack_ms, self.max_ahead_ms, self.stall_s = slack_ms, max_ahead_ms, stall_s
        self.on_progress = on_progress
        self.sleep, self.pace_clock = sleep, pace_clock  # pacing only (injectable); waits use time.monotonic
        self.summary = ReplaySummary(from_ms, to_ms)
        self._order = {t: i for i, t in enumerate(self.topics)}
        self._catalogue = {self.source_prefix + t: t for t in self.topics}  # source topic -> catalogue topic

    # ------------------------------------------------------------------------------------------
    def run(self) -> ReplaySummary:
        began = time.monotonic()
        ensure_topics(
            self.bootstrap, prefix=self.target_prefix, specs=[TOPICS[t] for t in (*self.topics, "md.progress")]
        )
        publisher = Publisher(
            self.bootstrap, self.serde, PublishMetrics(prefix="tapeflow_replay"), topic_prefix=self.target_prefix
        )
        markers = ProgressMarkers(publisher, SOURCE, [t for t in self.topics if t in ENGINE_INPUTS])
        consumer = Consumer(consumer_config(self.bootstrap, **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG}))
        try:
            ranges = self._ranges(consumer)
            self._copy(consumer, ranges, publisher, markers)
        finally:
            consumer.close()
        keys = sorted({k.decode() for (_, k) in publisher.produced_count if k})
        unpublished = markers.finish(keys)
        self.summary.markers = markers.published
        self.summary.undelivered = publisher.flush(30.0) + len(publisher.failed) + unpublished
        self.summary.elapsed_s = time.monotonic() - began
        return self.summary

    def _ranges(self, consumer: Consumer) -> dict[tuple[str, int], tuple[int, int]]:
        """(topic, partition) -> [start, end) offsets of the records that arrived in [from, to)."""
        partitions = []
        for topic in self.topics:
            full = self.source_prefix + topic
            metadata = topic_metadata(consumer, full, timeout_s=30)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise ReplayError(f"topic {full} does not exist on {self.bootstrap}")
            partitions += [(full, p) for p in sorted(metadata.partitions)]
        starts = self._offsets_at(partitions, self.from_ms)
        ends = self._offsets_at(partitions, self.to_ms)
        ranges = {tp: (starts[tp], max(starts[tp], ends[tp])) for tp in partitions}
        self.summary.in_range = sum(end - start for start, end in ranges.values())
        return ranges

    def _offsets_at(
        self, partitions: list[tuple[str, int]], at_ms: int, timeout_s: float = 30.0
    ) -> dict[tuple[str, int], int]:
        """ListOffsets by time, asked again while the broker answers with a retriable error: a topic
        created a moment ago has partitions whose leader the client does not know yet (Kafka answers
        NOT_LEADER_OR_FOLLOWER until its metadata has caught up)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return offsets_at_or_after(self.bootstrap, partitions, at_ms)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if (
                    err is None
                    or not (err.retriable() or err.code() in _LEADER_UNKNOWN)
                    or time.monotonic() >= deadline
                ):
                    raise ReplayError(f"no offsets by time for {partitions[0][0]}...: {exc}") from exc
            except OffsetLookupError as exc:  # errors per partition (a leader moving): asked again
                if time.monotonic() >= deadline:
                    raise ReplayError(str(exc)) from exc
            time.sleep(0.2)

    def _copy(
        self,
        consumer: Consumer,
        ranges: dict[tuple[str, int], tuple[int, int]],
        publisher: Publisher,
        markers: ProgressMarkers,
    ) -> None:
        merge = _Merge(ranges, {tp for tp, (start, end) in ranges.items() if start >= end})  # nothing arrived
        if len(merge.done) < len(ranges):
            consumer.assign(
                [TopicPartition(t, p, start) for (t, p), (start, _) in ranges.items() if (t, p) not in merge.done]
            )
        quiet_since = time.monotonic()
        while len(merge.done) < len(ranges):
            messages = consumer.consume(2_000, 0.2)
            if not messages:
                if time.monotonic() - quiet_since >= self.stall_s:
                    self._stalled(merge)
                continue
            quiet_since = time.monotonic()
            for m in messages:
                if self._within_range(consumer, m, merge):
                    self._take(m, merge)
            watermark = self._watermark(merge)
            self._release(merge, watermark, publisher, markers)
            self._balance(consumer, merge.newest, merge.done, merge.paused, watermark)
            if self.on_progress is not None:
                self.on_progress(self.summary)
        for item in sorted(merge.heap):  # whatever the last partitions left
            merge.pace_origin = self._pace(item.time_ms, merge.pace_origin)
            publisher.publish_encoded(item.topic, item.key, item.value)  # stamped on arrival in the namespace
            self._count(item)

    def _stalled(self, merge: _Merge) -> None:
        """The end is never guessed from a silence: the copy fails instead of ending short."""
        short = sorted(f"{t}[{p}]" for t, p in set(merge.ranges) - merge.done)
        raise ReplayError(
            f"the broker delivered nothing for {self.stall_s:.0f} s before the end of "
            f"{', '.join(short)}: the copy is incomplete"
        )

    def _within_range(self, consumer: Consumer, m: Message, merge: _Merge) -> bool:
        """Whether `m` is a record inside its partition's range; marks the partition done (and pauses it)
        at its end, so nothing after the range is read."""
        tp = (m.topic(), m.partition())
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                merge.done.add(tp)
                return False
            raise ReplayError(f"reading {tp[0]}[{tp[1]}]: {m.error().str()}")
        if tp in merge.done:
            return False
        end = merge.ranges[tp][1]
        if m.offset() >= end:  # after the range (the range's last offset was a transaction marker)
            merge.done.add(tp)
            consumer.pause([TopicPartition(*tp)])
            return False
        self.summary.read += 1
        if m.offset() == end - 1:  # the range's last record: nothing after it is read
            merge.done.add(tp)
            consumer.pause([TopicPartition(*tp)])
        return True

    def _take(self, m: Message, merge: _Merge) -> None:
        """One record of the range into the merge, unless it is skipped (stamped before --from, or a symbol
        not chosen)."""
        if m.timestamp()[1] < self.from_ms:  # arrived after start, stamped before: a clock step back
            self.summary.skipped_before += 1
            return
        topic = self._catalogue[m.topic()]
        record = self.serde.decode(m.value())
        if self.symbols is not None and record.get("symbol") not in self.symbols:
            self.summary.skipped_symbols += 1
            return
        event_ms = int(record[TIME_FIELDS[topic]])
        tp = (m.topic(), m.partition())
        merge.newest[tp] = max(merge.newest.get(tp, event_ms), event_ms)
        heapq.heappush(merge.heap, _Item(event_ms, self._order[topic], m.offset(), topic, m.key(), m.value()))

    def _watermark(self, merge: _Merge) -> int | None:
        """The event time at or below which no record can still be preceded by one unread (None: not known
        yet, a partition still being read has delivered nothing)."""
        open_parts = [tp for tp in merge.ranges if tp not in merge.done]
        if not open_parts:
            return 2**63 - 1
        if any(tp not in merge.newest for tp in open_parts):
            return None
        return min(merge.newest[tp] for tp in open_parts) - self.slack_ms

    def _release(self, merge: _Merge, watermark: int | None, publisher: Publisher, markers: ProgressMarkers) -> None:
        """Publish every merged record at or below `watermark`, paced, with a progress marker per key each
        `MARKER_INTERVAL_MS` of event time."""
        while merge.heap and watermark is not None and merge.heap[0].time_ms <= watermark:
            item = heapq.heappop(merge.heap)
            merge.pace_origin = self._pace(item.time_ms, merge.pace_origin)
            if merge.emitted_ms is not None and item.time_ms < merge.emitted_ms:  # read after later ones went out
                self.summary.late += 1
            publisher.publish_encoded(item.topic, item.key, item.value)  # stamped on arrival in the namespace
            self._count(item)
            merge.emitted_ms = item.time_ms if merge.emitted_ms is None else max(merge.emitted_ms, item.time_ms)
            tick = merge.emitted_ms // MARKER_INTERVAL_MS
            if merge.marker_tick != tick:
                merge.marker_tick = tick
                for key in sorted({k.decode() for (_, k) in publisher.produced_count if k}):
                    markers.mark(key, merge.emitted_ms - 1)
            if markers.has_ready:
                markers.publish_ready()

    def _count(self, item: _Item) -> None:
        s = self.summary
        s.copied[item.topic] = s.copied.get(item.topic, 0) + 1
        s.first_event_ms = item.time_ms if s.first_event_ms is None else min(s.first_event_ms, item.time_ms)
        s.last_event_ms = item.time_ms if s.last_event_ms is None else max(s.last_event_ms, item.time_ms)

    def _pace(self, event_ms: int, origin: tuple[float, int] | None) -> tuple[float, int]:
        """At 1x/10x: wait until `event_ms` is due on the wall clock (relative to the first record)."""
        if origin is None:
            return self.pace_clock(), event_ms
        if self.speed is not None:
            due = origin[0] + (event_ms - origin[1]) / 1000 / self.speed
            wait = due - self.pace_clock()
            if wait > 0:
                self.sleep(wait)
        return origin

    def _balance(self, consumer: Consumer, newest: dict, done: set, paused: set, watermark: int | None) -> None:
        """Pause partitions far ahead of the merge (bounded memory), resume them when it catches up."""
        if watermark is None:
            return
        ahead = {tp for tp, t in newest.items() if tp not in done and t - watermark > self.max_ahead_ms}
        pause, resume = ahead - paused, paused - ahead
        if pause:
            consumer.pause([TopicPartition(t, p) for t, p in pause])
        if resume:
            consumer.resume([TopicPartition(t, p) for t, p in resume])
        paused.clear()
        paused.update(ahead)
