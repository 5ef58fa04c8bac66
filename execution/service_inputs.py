"""The executor service's inputs between the consumer and the executor: decoded, held for event-time
order per partition (`execution.input_order`), released in that order, and the consumer's flow control.

A topic the consumer has read to the high watermark of its last fetch is at its end (`read_to_end`),
as its partition EOF will say: librdkafka reports an end only in a fetch after the last records, fetches
nothing while its one local queue holds `queued.min.messages` (100,000) records, and then queues the EOF
behind all of them. On a replay the EOFs of a partition read to its end therefore came after every
other partition's records, seconds later on a loaded machine, and its inputs newer than its last signal
waited for them.

Inputs are released in event-time order across every assigned partition (`InputAligner.release_all`:
one executor, one event clock). A partition whose topics hold the inputs back is taken as at its end
when it got no new record for `max_hold_s` and those topics have nothing left to read as the broker
says (`catching_up`): then the news it waits for is not coming. A topic that still has records to read only has its news queued behind other
partitions', and a release then would trade signals before the trades they belong after.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from execution.input_order import PAUSE_AT, RESUME_AT, TIME_FIELD, Held, InputAligner
from execution.metrics import ExecutorMetrics
from schemas.serde import AvroSerde
from tapeflow_runtime.offsets import CommittedOffsetError, committed_offsets

log = structlog.get_logger("executor")

INPUTS = ("signals", "md.trades", "md.book", "md.mark")


class InputGate:
    """Holds the consumer's input records until their event-time turn (module docstring). `consumer` is
    set once the service has one."""

    def __init__(
        self, prefix: str, serde: AvroSerde, metrics: ExecutorMetrics, *, max_hold_s: float, start_from: str
    ) -> None:
        self.prefix = prefix
        self.serde = serde
        self.metrics = metrics
        self.max_hold_s = max_hold_s
        self.start_from = start_from
        self.names = {prefix + name: name for name in INPUTS}  # topic -> input name
        self.aligner = InputAligner(INPUTS)
        self.consumer: Consumer | None = None
        self.holding: dict[int, float] = {}  # partition -> since when its inputs wait for another topic
        self.paused: set[tuple[str, int]] = set()  # (topic, partition) paused for running ahead
        self.reported: dict[int, float] = {}  # partition -> when its holding was last logged
        self.checked: dict[int, tuple[float, bool]] = {}  # partition -> (when, whether it was catching up)
        self.start: dict[tuple[str, int], int] = {}  # topic-partition not read yet -> the offset it starts at
        self.assigned: set[int] = set()  # the partitions the executor trades (`assign`)

    def hold(self, msg: Any) -> None:
        """Decode an input and hand it to the aligner; an undecodable one keeps its bytes and the error
        (dead-lettered when its turn comes), so offsets are still stored in order."""
        name = self.names[msg.topic()]
        self.metrics.messages_in.labels(name).inc()
        record: dict[str, Any] | Exception
        try:
            record = self.serde.decode(msg.value())
            when = int(record[TIME_FIELD[name]])
        except Exception as exc:  # not ours to fix: keep the bytes and the reason, go on
            record, when = exc, self.aligner.newest(name, msg.partition())
        self.aligner.add(name, msg.partition(), when, msg.offset(), (record, msg))
        self.holding.pop(msg.partition(), None)  # news: the partition's wait starts again

    def at_end(self, msg: Any) -> None:
        """The consumer reached the end of a topic-partition (a partition EOF event)."""
        self.aligner.at_end(self.names[msg.topic()], msg.partition())

    def assign(self, partitions: Iterable[int]) -> None:
        """The partitions the service's executor trades (every input topic of each): released together."""
        self.assigned = set(partitions)

    def release(self, handle: Callable[[Held], None]) -> None:
        """`handle` every input the aligner releases, in event-time order across every assigned partition
        (`InputAligner.release_all`: one executor, one event clock); the topics holding it back that are
        read to their end count as at their end. A partition that holds the others back for `max_hold_s`
        without news and is not catching up has its silent topics taken as at their end (released
        without waiting for them). Then pause or resume topic-partitions by how much they hold."""
        partitions = sorted(self.assigned | self.aligner.known())
        for partition in partitions:
            self.read_to_end(partition)
        released = self.aligner.release_all(partitions)
        if released:
            self.holding.clear()
            self.reported.clear()
        elif self.aligner.held() and self._force_silent(partitions):
            released = self.aligner.release_all(partitions)
        for held in released:
            handle(held)
        self.flow_control()

    def _force_silent(self, partitions: list[int]) -> bool:
        """Take the topics of a partition that holds the held inputs back as at their end once it had no
        news for `max_hold_s` and has nothing left to read (`catching_up`): its news is not coming.
        True when one was."""
        now = time.monotonic()
        oldest = self.aligner.oldest()
        forced = False
        for partition in partitions:
            bound = self.aligner.bound(partition)
            if oldest is None or (bound is not None and bound >= oldest):
                self.holding.pop(partition, None)
                continue
            if now - self.holding.setdefault(partition, now) < self.max_hold_s or self.catching_up(partition):
                continue
            log.warning(
                "inputs released without event-time order",
                partition=partition,
                held=self.aligner.held(),
                topics=self.aligner.describe(partition),
            )
            for topic in self.aligner.blocking(partition):
                self.aligner.at_end(topic, partition)
            self.holding.pop(partition, None)
            forced = True
        return forced

    def read_to_end(self, partition: int) -> None:
        """Mark the topics holding `partition` back that the consumer has read to their end at their end,
        as their partition EOF (queued behind other partitions' records, module docstring) will. Read to
        its end: its next offset is the high watermark of its last fetch (`consume` returned every record
        before it: each is held or handled), or, before it delivered anything, its start offset as
        `catching_up` learnt it is, or it is empty (low = high). The consumer's own figures only, never
        the broker's (this runs on every pass): a figure not known yet leaves the topic holding."""
        for topic in self.aligner.blocking(partition):
            tp = TopicPartition(self.prefix + topic, partition)
            try:
                low, high = self._live().get_watermark_offsets(tp, cached=True)
            except KafkaException:  # a partition the client does not know (yet): not read to its end
                continue
            offset = self.next_offset(tp, ask_broker=False)
            if high >= 0 and (offset >= high or (offset < 0 and low == high)):
                self.aligner.at_end(topic, partition)

    def catching_up(self, partition: int) -> bool:
        """Whether a topic that holds `partition` back has records left to read (its next offset is below
        the high watermark): then its news is only queued behind other partitions'. A topic-partition the
        consumer has not delivered anything from yet has no position: its next offset is the group's
        committed offset, else where `start_from` puts it (a replay read from the beginning buries one
        partition's trades behind another's for seconds on a loaded machine; releasing then would trade
        its signals before their trades). Checked at most once a second per partition (it may ask the
        broker)."""
        now = time.monotonic()
        checked = self.checked.get(partition)
        if checked is not None and now - checked[0] < 1.0:
            return checked[1]
        behind = {}
        for topic in self.aligner.blocking(partition):
            tp = TopicPartition(self.prefix + topic, partition)
            position = self.next_offset(tp)
            _, high = self.watermarks(tp)
            if high < 0 or position < 0 or position < high:  # unknown counts as behind: wait for the fetch
                behind[topic] = f"{position}/{high}"
        if behind and now - self.reported.setdefault(partition, now) >= 10:  # say why, every 10 s
            self.reported[partition] = now + 10
            log.info(
                "inputs held for event-time order",
                partition=partition,
                held=self.aligner.held(partition),
                topics=self.aligner.describe(partition),
                reading=behind,
                paused=sorted(self.paused),
            )
        self.checked[partition] = (now, bool(behind))
        return bool(behind)

    def _live(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("the input gate has no consumer yet")
        return self.consumer

    def next_offset(self, tp: TopicPartition, ask_broker: bool = True) -> int:
        """The next offset the consumer reads from `tp` (negative when the broker does not say). Before
        anything was delivered, the start offset learnt before; unknown, asked of the broker only when
        `ask_broker` (else negative)."""
        position = self._live().position([tp])[0].offset
        if position >= 0:
            return position
        key = (tp.topic, tp.partition)
        if key not in self.start and ask_broker:
            try:
                committed = committed_offsets(self._live(), [tp], 5)[0].offset
            except (KafkaException, CommittedOffsetError):  # not "none committed": ask again next time
                return -1
            if committed >= 0:
                self.start[key] = committed
            else:
                low, high = self.watermarks(tp)
                start = low if self.start_from == "earliest" else high
                if start < 0:  # the broker did not answer: unknown now, asked again next time
                    return -1
                self.start[key] = start
        return self.start.get(key, -1)

    def watermarks(self, tp: TopicPartition) -> tuple[int, int]:
        """(low, high) of `tp`: those of the last fetch, else asked from the broker ((-1, -1) if it does not answer)."""
        low, high = self._live().get_watermark_offsets(tp, cached=True)
        if high >= 0 and low >= 0:
            return low, high
        try:
            return self._live().get_watermark_offsets(tp, timeout=5, cached=False)
        except KafkaException:
            return -1, -1

    def flow_control(self) -> None:
        """Pause topic-partitions far ahead of the others (see `execution.input_order`), resume them once drained."""
        held = self.aligner.held_by_topic()
        for tp in [tp for tp in self.paused if held.get(tp, 0) < RESUME_AT]:
            self._live().resume([TopicPartition(self.prefix + tp[0], tp[1])])
            self.paused.discard(tp)
        for tp, count in held.items():
            if count > PAUSE_AT and tp not in self.paused:
                self._live().pause([TopicPartition(self.prefix + tp[0], tp[1])])
                self.paused.add(tp)

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget what is held and known of revoked topic-partitions."""
        partitions = list(partitions)
        self.aligner.drop([(self.names[tp.topic], tp.partition) for tp in partitions if tp.topic in self.names])
        for tp in partitions:
            self.holding.pop(tp.partition, None)
            self.checked.pop(tp.partition, None)
            self.start.pop((tp.topic, tp.partition), None)
            self.paused.discard((self.names.get(tp.topic, tp.topic), tp.partition))
            self.assigned.discard(tp.partition)
