"""The first offset of a partition whose record timestamp is at or after a time: Kafka's
`offsets_for_times`, checked against the records themselves.

Why checked: Tansu (the embedded broker) answers 0 for every `offsets_for_times` query, and its high
watermark counts record batches, not records. So the broker's answer is verified by reading the record
at it (and the one before), and replaced by a binary search over record timestamps when wrong. The
search relies on timestamps growing with the offset in a partition, which holds for records stamped
at publication by one producer per partition (the producers' create time), and for copies that keep
the original timestamps (`tapeflow replay`).

Records are read with the history fetch wait (``HISTORY_FETCH_CONFIG``): with the live 10 ms wait,
Tansu answers a fetch on a partition of tens of thousands of batches with nothing, and a lookup that
took that silence for "past the end" sent the search to offset 0 (a `tapeflow replay` of a sub-range
then started at the beginning). "Past the end" is now decided by the high watermark alone, and a
broker that does not answer within the timeout is an error, never a guess. Tansu's high watermark
(`ListOffsets`) is the last batch's base offset + 1, so the search never looks inside the last
batch: a time inside it is answered with an offset at most one batch early, which every caller
tolerates (priming reads a little more history; `tapeflow replay` skips records stamped too early).

Used by the engine's warm-up (`stream_apps.faust_app.priming`) and by `tapeflow replay`.

`committed_offsets` reads a group's committed offsets and refuses an answer the broker gave with an
error: librdkafka reports such a partition with offset -1001, the same value as "nothing committed".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from confluent_kafka import Consumer, KafkaError, TopicPartition

from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.kafka_client import HISTORY_FETCH_CONFIG, consumer_config, end_offsets, topic_metadata


class OffsetLookupError(TapeflowError):
    """The broker did not deliver a record that its watermarks say exists."""


class CommittedOffsetError(TapeflowError):
    """The broker answered a committed-offset request for some partitions with an error."""


def committed_offsets(consumer: Consumer, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    """``consumer.committed`` (its group's offsets; -1001 where none is committed), raising
    ``CommittedOffsetError`` when a partition came back with an error instead of an offset: read as
    "none committed", it would send a known group back to the start (or to a primed offset)."""
    answer = consumer.committed(partitions, timeout=timeout)
    errors = {(tp.topic, tp.partition): tp.error for tp in answer if tp.error is not None}
    if errors:
        raise CommittedOffsetError(f"the broker did not say which offsets are committed: {errors}")
    return answer


def commit_group_start(bootstrap: str, group_id: str, topics: Iterable[str],
                       after: Mapping[str, Mapping[int, int]] | None = None, timeout: float = 15.0) -> int:
    """Commit where a group no member has joined yet starts on every partition of ``topics``: after the
    records ``after`` names (topic -> partition -> next offset), else at 0 (a new topic epoch whose
    history is carried, not re-read: no warm-up priming, and no partition left without a committed
    offset to be reset to wherever). A partition the group has committed already keeps its offset, so
    a rollover step run again after a crash never rewinds a group that has started. Returns the
    partitions committed."""
    after = after or {}
    consumer = Consumer(consumer_config(bootstrap, group_id=group_id))
    try:
        partitions = []
        for topic in topics:
            metadata = topic_metadata(consumer, topic, timeout_s=timeout)
            if metadata.error is not None:
                raise TapeflowError(f"cannot list the partitions of {topic}: {metadata.error}")
            partitions += [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        wanted = [TopicPartition(tp.topic, tp.partition, max(0, after.get(tp.topic, {}).get(tp.partition, 0)))
                  for tp in committed_offsets(consumer, partitions, timeout) if tp.offset < 0]
        if wanted:
            consumer.commit(offsets=wanted, asynchronous=False)
        return len(wanted)
    finally:
        consumer.close()


def offsets_at_or_after(bootstrap: str, partitions: Iterable[tuple[str, int]], since_ms: int,
                        timeout: float = 15.0) -> dict[tuple[str, int], int]:
    """(topic, partition) -> first offset whose timestamp is >= ``since_ms`` (the end when none is)."""
    wanted = [TopicPartition(t, p, since_ms) for t, p in partitions]
    if not wanted:
        return {}
    reader = Consumer(consumer_config(bootstrap, **HISTORY_FETCH_CONFIG))
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
    if low <= answer <= high and _is_first(reader, tp, since_ms, answer, low, high, timeout):
        return answer
    while low < high:  # first offset whose timestamp is >= since_ms (timestamps grow with offsets)
        middle = (low + high) // 2
        stamp = timestamp_at(reader, tp, middle, timeout, end=high)
        if stamp is None or stamp >= since_ms:
            high = middle
        else:
            low = middle + 1
    return low


def _is_first(reader: Consumer, tp: TopicPartition, since_ms: int, offset: int, low: int, high: int,
              timeout: float) -> bool:
    at = timestamp_at(reader, tp, offset, timeout, end=high)
    if at is not None and at < since_ms:
        return False
    if offset == low:
        return True
    before = timestamp_at(reader, tp, offset - 1, timeout, end=high)
    return before is not None and before < since_ms


def timestamp_at(reader: Consumer, tp: TopicPartition, offset: int, timeout: float,
                 end: int | None = None) -> int | None:
    """Timestamp of the first record at or after ``offset`` (None at or past ``end``, the high watermark:
    looked up when not given). A control record (a transaction marker) takes an offset but is never
    delivered: the next record stands for it. Raises `OffsetLookupError` when the broker delivers
    nothing within ``timeout`` s although the watermark says a record is there."""
    if end is None:
        _, end = reader.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)
    if offset >= end:
        return None
    reader.assign([TopicPartition(tp.topic, tp.partition, offset)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = reader.poll(0.2)
        if message is None or message.error() or message.offset() < offset:
            continue
        return message.timestamp()[1]
    raise OffsetLookupError(f"{tp.topic}[{tp.partition}]: no record delivered at offset {offset} within "
                            f"{timeout:.0f} s although the partition ends at {end}")


def latest_offsets(bootstrap: str, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offsets of ``tps`` in one ListOffsets request (on Tansu: record batches, not records).
    A partition the broker did not answer is an error (the step is retried), never "empty"."""
    tps = list(tps)
    consumer = Consumer(consumer_config(bootstrap))
    try:
        ends = end_offsets(consumer, tps, 10)
    finally:
        consumer.close()
    missing = [tp for tp in tps if tp not in ends]
    if missing:
        raise RuntimeError(f"no end offset for {missing[:3]}")
    return {tp: max(offset, 0) for tp, offset in ends.items()}


def true_ends(bootstrap: str, tps: Iterable[tuple[str, int]], timeout_s: float = 60.0,
              last_ms: dict[tuple[str, int], int] | None = None) -> dict[tuple[str, int], int]:
    """The offset after the last *record* of each partition. Tansu's end offset is the last batch's
    base offset + 1, so the last batch is read and its records counted (a batch of five records at
    base 100 ends at 105, not 101). ``last_ms``, when given, receives each non-empty partition's
    newest record timestamp (of its last batch)."""
    latest = latest_offsets(bootstrap, tps)
    ends = dict(latest)
    todo = {tp: off for tp, off in latest.items() if off > 0}
    if not todo:
        return ends
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG}))
    try:
        consumer.assign([TopicPartition(t, p, off - 1) for (t, p), off in todo.items()])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            tp = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF and tp in todo:
                    todo.pop(tp)
                continue
            ends[tp] = max(ends[tp], msg.offset() + 1)
            if last_ms is not None:
                last_ms[tp] = max(last_ms.get(tp, 0), msg.timestamp()[1])
        if todo:
            raise TimeoutError(f"end of {sorted(todo)[:3]}... not read in {timeout_s:.0f} s")
    finally:
        consumer.close()
    return ends


def group_committed(bootstrap: str, group: str, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The group's committed offsets (-1: none); a partition the broker answered with an error raises
    (``committed_offsets``): read as "none" it would only stall the step, as a wrong number it could not."""
    wanted = [TopicPartition(t, p) for t, p in tps]
    if not wanted:
        return {}
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        got = committed_offsets(consumer, wanted, 10)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else -1 for tp in got}
