"""Read partitions of topics from the beginning to their end: executor state, the backtest's topic
source, the state a topic-epoch rollover carries (`serde=None`: raw records).

"The end" needs care on the embedded broker: Tansu's high watermark counts record batches, not
records, so end-of-partition can be reported before the last record. We therefore wait for
end-of-partition on every partition and then for `idle_s` without any record. A record that cannot
be decoded is an error, not a skip: state restored from a partial history could reopen a position or
forget a halt, so the executor refuses to start (fail closed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    TopicPartition,
)

from schemas.serde import AvroSerde
from tapeflow_runtime.epochs import Chain, ChainLink
from tapeflow_runtime.kafka_client import HISTORY_FETCH_CONFIG, consumer_config, topic_metadata


#: messages taken from librdkafka's queue per call (one call per message cost a Python round trip each)
CONSUME_BATCH = 10_000


class StateReadError(RuntimeError):
    """A state topic could not be read completely."""


class TopicDeletedError(StateReadError):
    """An ``optional`` topic of ``read_to_end`` (a finished segment) was deleted while it was read."""

    def __init__(self, topic: str, detail: str) -> None:
        super().__init__(f"{topic}: deleted while it was read ({detail})")
        self.topic = topic


#: what librdkafka reports for a partition whose topic was deleted under a consumer
GONE_CODES = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION)


@dataclass
class TopicSnapshot:
    records: list[dict[str, Any]]
    next_offsets: dict[int, int]  # partition -> offset after the last record read
    gone: bool = False  # an ``optional`` topic that did not exist when the read began


@dataclass(frozen=True)
class RawRecord:
    """A record as stored (``read_to_end`` with ``serde=None``): copied, never decoded."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_to_end(bootstrap: str, topics: dict[str, list[int] | None], serde: AvroSerde | None, *,
                idle_s: float = 0.5, timeout_s: float = 60.0, start_ms: int | None = None,
                on_record: Callable[[str, dict[str, Any]], None] | None = None,
                raw_topics: frozenset[str] = frozenset(),
                optional: frozenset[str] = frozenset()) -> dict[str, TopicSnapshot]:
    """Every record of the given partitions (None = all) of each topic, in offset order per partition.

    One consumer reads all topics at once, so the idle wait is paid once. `start_ms`: start at the
    first record with a timestamp at or after it instead of the beginning. `on_record(topic, record)`:
    hand each record over instead of keeping it (large reads: the backtest's topic source).
    `raw_topics`: topics whose records are handed over as ``RawRecord`` even with a serde (a caller
    that decodes them many at a time). `optional`: topics that may be gone (a finished segment that
    retention deletes): one missing at the start is an empty snapshot with ``gone``; one deleted during
    the read raises ``TopicDeletedError`` (its records were partly handed over already).
    """
    consumer = Consumer(consumer_config(bootstrap, group_id=f"tapeflow-state-{uuid.uuid4().hex[:8]}",
                                        **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG, "max.partition.fetch.bytes": 16 << 20}))
    deadline = time.monotonic() + timeout_s  # one budget for the metadata and the read together
    try:
        assignment: list[TopicPartition] = []
        out: dict[str, TopicSnapshot] = {}
        for topic, partitions in topics.items():
            md = topic_metadata(consumer, topic, timeout_s=max(0.1, deadline - time.monotonic()))
            if (md is None or md.error is not None) and topic in optional:
                out[topic] = TopicSnapshot([], {}, gone=True)
                continue
            if md is None or md.error is not None:
                raise StateReadError(f"cannot read {topic}: {md.error if md else 'no such topic'}")
            parts = sorted(md.partitions) if partitions is None else sorted(partitions)
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING if start_ms is None else start_ms) for p in parts]
            out[topic] = TopicSnapshot([], {p: 0 for p in parts})
        if start_ms is not None:  # timestamps to offsets (-1 = after the end: nothing that new)
            assignment = [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                          for tp in consumer.offsets_for_times(assignment, timeout=10)]
        consumer.assign(assignment)
        at_end: set[tuple[str, int]] = set()
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if now > deadline:
                raise StateReadError(f"{', '.join(topics)}: not at the end after {timeout_s:.0f} s")
            if len(at_end) == len(assignment) and now - last >= idle_s:
                return out
            for msg in consumer.consume(CONSUME_BATCH, 0.05):
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add((msg.topic(), msg.partition()))
                        continue
                    if msg.topic() in optional and msg.error().code() in GONE_CODES:
                        raise TopicDeletedError(msg.topic(), msg.error().str())
                    raise StateReadError(f"{msg.topic()}: {msg.error().str()}")
                last = time.monotonic()
                topic = msg.topic()
                try:
                    record = serde.decode(msg.value()) if serde is not None and topic not in raw_topics else RawRecord(
                        msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
                    if on_record is None:
                        out[topic].records.append(record)
                    else:
                        on_record(topic, record)
                except Exception as exc:
                    raise StateReadError(f"{topic}[{msg.partition()}]@{msg.offset()} cannot be decoded: {exc}") \
                        from exc
                out[topic].next_offsets[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()


def read_chain(bootstrap: str, chain: Chain, topics: dict[str, list[int] | None], serde: AvroSerde | None, *,
               idle_s: float = 0.5, timeout_s: float = 60.0, start_ms: int | None = None,
               on_record: Callable[[str, Any], None] | None = None,
               raw_topics: frozenset[str] = frozenset()) -> dict[str, TopicSnapshot]:
    """``read_to_end`` of logical topics: every segment of ``chain`` (``tapeflow_runtime.epochs``),
    keyed by catalogue name (``topics``, ``raw_topics`` and ``on_record``'s first argument too).

    Records come per partition in the logical topic's order (segment after segment, each in offset
    order); ``RawRecord`` offsets and ``next_offsets`` are logical. Each segment's carried records
    (the executor's state copied into a new epoch) are skipped: they are the older segment's again,
    and so is a rolling epoch's topic that is not readable yet (``ChainLink.readable``).
    With ``on_record`` the segments are read at once, so only the order within a segment holds. A
    finished segment whose topic is gone (deleted by retention meanwhile) is skipped; one deleted
    while it is read raises ``StateReadError`` saying so (retention deletes the oldest segment first,
    so reading again gives the history from the next one on, without a gap); a missing topic of the
    newest segment is an error, as with ``read_to_end``.
    """
    physical: dict[str, tuple[ChainLink, str]] = {}
    existing = None
    for link in chain.links:
        for name in topics:
            if not link.readable(name):
                continue
            if link.closed:
                if existing is None:
                    consumer = Consumer(consumer_config(bootstrap))
                    try:
                        existing = consumer.list_topics(timeout=15).topics
                    finally:
                        consumer.close()
                if link.prefix + name not in existing:
                    continue
            physical[link.prefix + name] = (link, name)
    per_segment: dict[str, list[Any]] = {full: [] for full in physical}
    out = {name: TopicSnapshot([], {}) for name in topics}

    def take(full: str, raw: RawRecord) -> None:
        link, name = physical[full]
        if raw.offset < link.start(name, raw.partition):
            return  # carried into this segment: the older segment holds it
        logical = RawRecord(raw.partition, link.logical(name, raw.partition, raw.offset), raw.key, raw.value,
                            raw.timestamp_ms)
        try:
            record = logical if serde is None or name in raw_topics else serde.decode(raw.value)
        except Exception as exc:
            raise StateReadError(f"{full}[{raw.partition}]@{raw.offset} cannot be decoded: {exc}") from exc
        snapshot = out[name]
        snapshot.next_offsets[raw.partition] = max(snapshot.next_offsets.get(raw.partition, 0), logical.offset + 1)
        if on_record is not None:
            on_record(name, record)
        else:
            per_segment[full].append(record)

    try:
        snapshots = read_to_end(bootstrap, {full: topics[name] for full, (_link, name) in physical.items()}, None,
                                idle_s=idle_s, timeout_s=timeout_s, start_ms=start_ms, on_record=take,
                                optional=frozenset(full for full, (link, _n) in physical.items() if link.closed))
    except TopicDeletedError as exc:
        link, name = physical[exc.topic]
        raise StateReadError(
            f"the segment of epoch {link.epoch} of {name} was deleted by retention (TAPEFLOW_TOPIC_RETENTION) "
            "while it was being read; read again (the history then starts at the next segment), or read the "
            "database (`--source db`)") from exc
    for full, (link, name) in physical.items():
        out[name].records.extend(per_segment[full])
        for partition in snapshots[full].next_offsets:  # a partition without records: at its base
            out[name].next_offsets.setdefault(partition, link.bases.get(name, {}).get(partition, 0))
    return out
