"""The time span a topic holds: the timestamp of its oldest and of its newest record.

Topics are stamped by the broker on arrival (``message.timestamp.type=LogAppendTime``,
``schemas.catalogue``), so within a partition timestamps grow with the offset: the oldest record of a
partition is the one at its low watermark and the newest the one at its high watermark - 1. One
consumer, no group, reads just those records; nothing is committed and no service is disturbed.
A partition whose edge offset holds a transaction marker (never delivered) reports no time for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config, end_offsets, start_offsets, topic_metadata


@dataclass(frozen=True)
class TopicSpan:
    first_ms: int | None  # oldest record over the partitions (None: empty, or not read in time)
    last_ms: int | None  # newest record over the partitions


def topic_spans(
    bootstrap: str, topics: list[str], *, newest: bool = True, timeout_s: float = 10.0
) -> dict[str, TopicSpan]:
    """topic -> its ``TopicSpan``; ``newest=False`` reads only the oldest records (``last_ms`` None).
    A topic that does not exist is left out."""
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    try:
        tps: list[tuple[str, int]] = []
        for topic in topics:
            md = topic_metadata(consumer, topic, timeout_s=timeout_s, attempt_s=timeout_s)
            if md is None or md.error is not None:
                continue
            tps += [(topic, p) for p in sorted(md.partitions)]
        lows, highs = start_offsets(consumer, tps, timeout_s), end_offsets(consumer, tps, timeout_s)
        unanswered = [tp for tp in tps if tp not in lows or tp not in highs]
        if unanswered:
            raise RuntimeError(f"the broker did not answer the offsets of {unanswered[:3]}")
        edges = {tp: (lows[tp], highs[tp]) for tp in tps}
        present = {t for t, _ in edges}
        first = _read_at(consumer, {tp: low for tp, (low, high) in edges.items() if high > low}, timeout_s)
        last = (
            _read_at(consumer, {tp: high - 1 for tp, (low, high) in edges.items() if high > low}, timeout_s)
            if newest
            else {}
        )
    finally:
        consumer.close()
    out = {}
    for topic in sorted(present):
        firsts = [ms for (t, _), ms in first.items() if t == topic]
        lasts = [ms for (t, _), ms in last.items() if t == topic]
        out[topic] = TopicSpan(min(firsts) if firsts else None, max(lasts) if lasts else None)
    return out


def _read_at(consumer: Consumer, offsets: dict[tuple[str, int], int], timeout_s: float) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the timestamp of the record at the given offset (or the first one after it
    when that offset is a marker and a record follows)."""
    if not offsets:
        return {}
    consumer.assign([TopicPartition(t, p, off) for (t, p), off in offsets.items()])
    left = set(offsets)
    found: dict[tuple[str, int], int] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while left and time.monotonic() < deadline:
            for msg in consumer.consume(len(left) * 4, 0.2):
                tp = (msg.topic(), msg.partition())
                if tp not in left:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        left.discard(tp)
                    continue
                found[tp] = msg.timestamp()[1]
                left.discard(tp)
    finally:
        consumer.unassign()
    return found


def format_ms(ms: int | None) -> str:
    """A record timestamp as ``2024-01-01 12:00:00 UTC`` ("-" for none)."""
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def format_retention(retention_ms: str | int | None) -> str:
    """``retention.ms`` as a duration (``30d``, ``36h``); ``-1`` is ``forever``."""
    if retention_ms is None:
        return "?"
    ms = int(retention_ms)
    if ms < 0:
        return "forever"
    from stream_apps.core.durations import format_duration_ms

    return format_duration_ms(ms)
