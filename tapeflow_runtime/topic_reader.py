"""Read partitions of topics from the beginning (or a time) to their end: executor state, the
backtest's topic source (`serde=None`: raw records).

"The end" is each partition's high watermark when the read reaches it (librdkafka's end-of-partition
event); `idle_s` more without a record lets a topic still being written settle. A record that cannot
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
from tapeflow_runtime.kafka_client import HISTORY_FETCH_CONFIG, consumer_config, offsets_for_times, topic_metadata

#: messages taken from librdkafka's queue per call (one call per message cost a Python round trip each)
CONSUME_BATCH = 10_000


class StateReadError(RuntimeError):
    """A state topic could not be read completely."""


@dataclass
class TopicSnapshot:
    records: list[dict[str, Any]]
    next_offsets: dict[int, int]  # partition -> offset after the last record read


@dataclass(frozen=True)
class RawRecord:
    """A record as stored (``read_to_end`` with ``serde=None``): copied, never decoded."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_to_end(
    bootstrap: str,
    topics: dict[str, list[int] | None],
    serde: AvroSerde | None,
    *,
    idle_s: float = 0.0,
    timeout_s: float = 60.0,
    start_ms: int | None = None,
    on_record: Callable[[str, dict[str, Any]], None] | None = None,
    raw_topics: frozenset[str] = frozenset(),
) -> dict[str, TopicSnapshot]:
    """Every record of the given partitions (None = all) of each topic, in offset order per partition.

    One consumer reads all topics at once, so the idle wait is paid once. `start_ms`: start at the
    first record with a timestamp at or after it instead of the beginning. `on_record(topic, record)`:
    hand each record over instead of keeping it (large reads: the backtest's topic source).
    `raw_topics`: topics whose records are handed over as ``RawRecord`` even with a serde (a caller
    that decodes them many at a time). A topic that does not exist is a ``StateReadError``.
    """
    consumer = Consumer(
        consumer_config(
            bootstrap,
            group_id=f"tapeflow-state-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG, "max.partition.fetch.bytes": 16 << 20},
        )
    )
    deadline = time.monotonic() + timeout_s  # one budget for the metadata and the read together
    try:
        assignment: list[TopicPartition] = []
        out: dict[str, TopicSnapshot] = {}
        for topic, partitions in topics.items():
            md = topic_metadata(consumer, topic, timeout_s=max(0.1, deadline - time.monotonic()))
            if md is None or md.error is not None:
                raise StateReadError(f"cannot read {topic}: {md.error if md else 'no such topic'}")
            parts = sorted(md.partitions) if partitions is None else sorted(partitions)
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING if start_ms is None else start_ms) for p in parts]
            out[topic] = TopicSnapshot([], {p: 0 for p in parts})
        if start_ms is not None:  # timestamps to offsets (-1 = after the end: nothing that new)
            assignment = [
                TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                for tp in offsets_for_times(consumer, assignment, 10)
            ]
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
                    raise StateReadError(f"{msg.topic()}: {msg.error().str()}")
                last = time.monotonic()
                topic = msg.topic()
                try:
                    record = (
                        serde.decode(msg.value())
                        if serde is not None and topic not in raw_topics
                        else RawRecord(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.timestamp()[1])
                    )
                    if on_record is None:
                        out[topic].records.append(record)
                    else:
                        on_record(topic, record)
                except Exception as exc:
                    raise StateReadError(f"{topic}[{msg.partition()}]@{msg.offset()} cannot be decoded: {exc}") from exc
                out[topic].next_offsets[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()


def read_topics(
    bootstrap: str,
    prefix: str,
    topics: dict[str, list[int] | None],
    serde: AvroSerde | None,
    *,
    idle_s: float = 0.0,
    timeout_s: float = 60.0,
    start_ms: int | None = None,
    on_record: Callable[[str, Any], None] | None = None,
    raw_topics: frozenset[str] = frozenset(),
) -> dict[str, TopicSnapshot]:
    """``read_to_end`` of catalogue topics under ``prefix``, keyed by catalogue name (``topics``,
    ``raw_topics``, the result and ``on_record``'s first argument)."""
    names = {prefix + name: name for name in topics}
    forward = None if on_record is None else (lambda full, record: on_record(names[full], record))
    snapshots = read_to_end(
        bootstrap,
        {prefix + name: parts for name, parts in topics.items()},
        serde,
        idle_s=idle_s,
        timeout_s=timeout_s,
        start_ms=start_ms,
        on_record=forward,
        raw_topics=frozenset(prefix + name for name in raw_topics),
    )
    return {names[full]: snapshot for full, snapshot in snapshots.items()}
