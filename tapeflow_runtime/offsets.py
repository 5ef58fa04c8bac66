"""The first offset of a partition whose record timestamp is at or after a time: Kafka's
`offsets_for_times`, checked against the records themselves.

Why checked: Tansu (the embedded broker) answers 0 for every `offsets_for_times` query, and its high
watermark counts record batches, not records. So the broker's answer is verified by reading the record
at it (and the one before), and replaced by a binary search over record timestamps when wrong. The
search relies on timestamps growing with the offset in a partition, which holds for records stamped
at publication by one producer per partition (the producers' create time), and for copies that keep
the original timestamps (`tapeflow replay`).

Used by the engine's warm-up (`stream_apps.faust_app.priming`) and by `tapeflow replay`.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config


def offsets_at_or_after(bootstrap: str, partitions: Iterable[tuple[str, int]], since_ms: int,
                        timeout: float = 15.0) -> dict[tuple[str, int], int]:
    """(topic, partition) -> first offset whose timestamp is >= ``since_ms`` (the end when none is)."""
    wanted = [TopicPartition(t, p, since_ms) for t, p in partitions]
    if not wanted:
        return {}
    reader = Consumer(consumer_config(bootstrap))
    try:
        answers = reader.offsets_for_times(wanted, timeout=timeout)
        return {(tp.topic, tp.partition): first_offset_at_or_after(reader, tp, since_ms, tp.offset, timeout)
                for tp in answers}
    finally:
        reader.close()


def first_offset_at_or_after(reader: Consumer, tp: TopicPartition, since_ms: int, answer: int,
                             timeout: float) -> int:
    """``answer`` (the broker's) when the records confirm it, else a binary search over timestamps."""
    low, high = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
    if high <= low:
        return high
    if answer < 0:  # the broker says: nothing that recent
        answer = high
    if low <= answer <= high and _is_first(reader, tp, since_ms, answer, low, timeout):
        return answer
    while low < high:  # first offset whose timestamp is >= since_ms (timestamps grow with offsets)
        middle = (low + high) // 2
        stamp = timestamp_at(reader, tp, middle, timeout)
        if stamp is None or stamp >= since_ms:
            high = middle
        else:
            low = middle + 1
    return low


def _is_first(reader: Consumer, tp: TopicPartition, since_ms: int, offset: int, low: int, timeout: float) -> bool:
    at = timestamp_at(reader, tp, offset, timeout)
    if at is not None and at < since_ms:
        return False
    if offset == low:
        return True
    before = timestamp_at(reader, tp, offset - 1, timeout)
    return before is not None and before < since_ms


def timestamp_at(reader: Consumer, tp: TopicPartition, offset: int, timeout: float) -> int | None:
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
