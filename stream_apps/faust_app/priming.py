"""Warm-up from history for a worker group that has never committed: start ``prime_ms`` back.

Why: a new group would otherwise start where ``auto.offset.reset`` points — the end (and wait a day
for 24-h windows to fill by themselves) or the beginning of a 7-day retention (and spend hours
replaying days the windows drop anyway). The engine's warm-up is coverage-based, not a timer, so
starting from the records written in the last ``prime_ms`` (25 h covers the 24-h windows plus the
quantile window's partial hour) fills the windows for real, and signals begin as soon as they are
covered. Only partitions without a committed offset are touched: a restarted group resumes from
its own offsets and its state comes back from the table's changelog instead.

Kafka's record timestamps are the producers' create times (wall clock at publication), so "the last
25 h" means records published in the last 25 h, whatever event time they describe; they grow with
the offset in a partition (one producer per partition writes in order), which the search below
relies on. The broker's ``offsets_for_times`` answer is checked against the records themselves and
replaced by a binary search over record timestamps when wrong: Tansu answers 0 for every query.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config


def prime_group_offsets(bootstrap: str, group: str, topics: Iterable[str], since_ms: int,
                        timeout: float = 15.0) -> dict[tuple[str, int], int]:
    """Commit, for ``group``, the first offset at or after ``since_ms`` of every partition of
    ``topics`` that has no committed offset; returns what was committed."""
    consumer = Consumer(consumer_config(bootstrap, group_id=group))
    try:
        partitions = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
            partitions += [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = consumer.committed(partitions, timeout=timeout)
        fresh = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in committed if tp.offset < 0]
        if not fresh:
            return {}
        answers = consumer.offsets_for_times(fresh, timeout=timeout)
        reader = Consumer(consumer_config(bootstrap))
        try:
            to_commit = [TopicPartition(tp.topic, tp.partition,
                                        _first_at_or_after(reader, tp, since_ms, tp.offset, timeout))
                         for tp in answers]
        finally:
            reader.close()
        consumer.commit(offsets=to_commit, asynchronous=False)
        return {(tp.topic, tp.partition): tp.offset for tp in to_commit}
    finally:
        consumer.close()


def _first_at_or_after(reader: Consumer, tp: TopicPartition, since_ms: int, answer: int, timeout: float) -> int:
    low, high = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
    if high <= low:
        return high
    if answer < 0:  # the broker says: nothing that recent
        answer = high
    if low <= answer <= high and _is_first(reader, tp, since_ms, answer, low, timeout):
        return answer
    while low < high:  # first offset whose timestamp is >= since_ms (timestamps grow with offsets)
        middle = (low + high) // 2
        stamp = _timestamp_at(reader, tp, middle, timeout)
        if stamp is None or stamp >= since_ms:
            high = middle
        else:
            low = middle + 1
    return low


def _is_first(reader: Consumer, tp: TopicPartition, since_ms: int, offset: int, low: int, timeout: float) -> bool:
    at = _timestamp_at(reader, tp, offset, timeout)
    if at is not None and at < since_ms:
        return False
    if offset == low:
        return True
    before = _timestamp_at(reader, tp, offset - 1, timeout)
    return before is not None and before < since_ms


def _timestamp_at(reader: Consumer, tp: TopicPartition, offset: int, timeout: float) -> int | None:
    """Timestamp of the record at ``offset`` (None: no record there, e.g. at or past the end)."""
    reader.assign([TopicPartition(tp.topic, tp.partition, offset)])
    deadline_polls = max(int(timeout / 0.2), 1)
    for _ in range(deadline_polls):
        message = reader.poll(0.2)
        if message is None:
            if _ > 5:  # a second of nothing: the offset is past the end
                return None
            continue
        if message.error() or message.offset() < offset:
            continue
        return message.timestamp()[1] if message.offset() == offset else None
    return None
