"""Offsets by time and a group's committed offsets.

`offsets_at_or_after`: the first offset of a partition whose record timestamp is at or after a time,
as Kafka's ListOffsets-by-timestamp answers it (`offsets_for_times`). Its answer is exact: the broker
looks the time up in each segment's time index. Record timestamps are the broker's arrival stamps
(``message.timestamp.type=LogAppendTime``, ``schemas.catalogue``), so they grow with the offset in a
partition and "the first record at or after T" is the start of everything that arrived from T on.
Used by the engine's warm-up (`stream_apps.faust_app.priming`), the producer's warm start and
`tapeflow replay`.

`committed_offsets` reads a group's committed offsets and refuses an answer the broker gave with an
error: librdkafka reports such a partition with offset -1001, the same value as "nothing committed".
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.kafka_client import ask_again, consumer_config, end_offsets, offsets_for_times


class OffsetLookupError(TapeflowError):
    """The broker answered an offset lookup with an error."""


class CommittedOffsetError(TapeflowError):
    """The broker answered a committed-offset request for some partitions with an error."""


_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError._TIMED_OUT,
}


def committed_offsets(consumer: Consumer, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    """``consumer.committed`` (its group's offsets; -1001 where none is committed), raising
    ``CommittedOffsetError`` when a partition came back with an error instead of an offset: read as
    "none committed", it would send a known group back to the start (or to a primed offset).

    Asked again until ``timeout`` while the group's coordinator is not there yet (a broker just started
    or restarted loads ``__consumer_offsets`` first: NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS)."""
    answer = ask_again(lambda seconds: consumer.committed(partitions, timeout=seconds), _COORDINATOR_MOVING, timeout)
    errors = {(tp.topic, tp.partition): tp.error for tp in answer if tp.error is not None}
    if errors:
        raise CommittedOffsetError(f"the broker did not say which offsets are committed: {errors}")
    return answer


def offsets_at_or_after(
    bootstrap: str, partitions: Iterable[tuple[str, int]], since_ms: int, timeout: float = 15.0
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> first offset whose timestamp is >= ``since_ms`` (the end when none is).
    A partition the broker answered with an error raises ``OffsetLookupError``, never a guess."""
    wanted = [TopicPartition(t, p, since_ms) for t, p in partitions]
    if not wanted:
        return {}
    reader = Consumer(consumer_config(bootstrap))
    try:
        answers = offsets_for_times(reader, wanted, timeout)
        failed = [(tp.topic, tp.partition, tp.error) for tp in answers if tp.error is not None]
        if failed:
            raise OffsetLookupError(f"no offset by time for {failed[:3]}")
        found = {(tp.topic, tp.partition): tp.offset for tp in answers}
        newer = [tp for tp, offset in found.items() if offset < 0]  # nothing that recent: the end
        ends = end_offsets(reader, newer, timeout) if newer else {}
    finally:
        reader.close()
    missing = [tp for tp in newer if tp not in ends]
    if missing:
        raise OffsetLookupError(f"no end offset for {missing[:3]}")
    return {tp: ends[tp] if offset < 0 else offset for tp, offset in found.items()}


def latest_offsets(bootstrap: str, tps: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """End offsets of ``tps`` (the offset after each partition's last record) in one ListOffsets
    request. A partition the broker did not answer is an error, never "empty"."""
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
