"""Warm-up from history for a worker group that has never committed: start ``prime_ms`` back.

Why: a new group would otherwise start where ``auto.offset.reset`` points — the end (and wait a day
for 24-h windows to fill by themselves) or the beginning of a 7-day retention (and spend hours
replaying days the windows drop anyway). The engine's warm-up is coverage-based, not a timer, so
starting from the records written in the last ``prime_ms`` (25 h covers the 24-h windows plus the
quantile window's partial hour) fills the windows for real, and signals begin as soon as they are
covered. Only partitions without a committed offset are touched: a restarted group resumes from
its own offsets and its state comes back from the table's changelog instead.

The catalogue's topics are stamped by the broker on arrival (``LogAppendTime``), so "the last 25 h"
means records that reached the broker in the last 25 h, whatever event time they describe (a replay
written today is primed from in full); arrival times grow with the offset in a partition, which the
broker's time index (``offsets_for_times``, via ``tapeflow_runtime.offsets``) relies on.
"""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config, topic_metadata
from tapeflow_runtime.offsets import committed_offsets, offsets_at_or_after


def prime_group_offsets(
    bootstrap: str, group: str, topics: Iterable[str], since_ms: int, timeout: float = 15.0
) -> dict[tuple[str, int], int]:
    """Commit, for ``group``, the first offset at or after ``since_ms`` of every partition of
    ``topics`` that has no committed offset; returns what was committed."""
    consumer = Consumer(consumer_config(bootstrap, group_id=group))
    try:
        partitions = []
        for topic in topics:
            metadata = topic_metadata(consumer, topic, timeout_s=timeout)
            partitions += [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = committed_offsets(consumer, partitions, timeout)  # an error is not "none committed"
        fresh = [TopicPartition(tp.topic, tp.partition, since_ms) for tp in committed if tp.offset < 0]
        if not fresh:
            return {}
        starts = offsets_at_or_after(bootstrap, [(tp.topic, tp.partition) for tp in fresh], since_ms, timeout)
        to_commit = [TopicPartition(topic, partition, offset) for (topic, partition), offset in starts.items()]
        consumer.commit(offsets=to_commit, asynchronous=False)
        return {(tp.topic, tp.partition): tp.offset for tp in to_commit}
    finally:
        consumer.close()
