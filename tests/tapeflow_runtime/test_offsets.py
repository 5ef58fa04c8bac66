"""`tapeflow_runtime.offsets` against the embedded broker: the first offset at or after a time.

Tansu answers every `offsets_for_times` with 0, so the lookup checks the answer against the records
and binary-searches their timestamps. The search once read each record with the live 10 ms fetch
wait; on a partition of ~20,000 single-record batches Tansu answers such a fetch with nothing, the
silence was taken for "past the end", and the search ended at offset 0 (a `tapeflow replay` of a
sub-range then copied from the beginning). The partition here has 24,000 batches.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from tapeflow_runtime.kafka_client import (
    HISTORY_FETCH_CONFIG,
    admin_client,
    consumer_config,
    producer_config,
)
from tapeflow_runtime.offsets import offsets_at_or_after, timestamp_at

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
BATCHES = 24_000


def _many_batches(kafka_bootstrap):
    """One partition of BATCHES single-record batches stamped T0 + 10 ms * offset, and an empty one."""
    topic = f"offsets-{time.time_ns()}"
    admin = admin_client(kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    # one record per batch (what a producer writes when records come slower than its linger), several
    # produce requests in flight: a flush after each record took ~90 s under the suite's load
    producer = Producer(producer_config(kafka_bootstrap, **{"linger.ms": 0, "batch.num.messages": 1}))
    began = time.monotonic()
    for i in range(BATCHES):
        producer.produce(topic, key=b"k", value=b"x", partition=0, timestamp=T0 + 10 * i)
        if i % 1000 == 999:
            producer.flush(60)
    assert producer.flush(60) == 0
    reader = Consumer(consumer_config(kafka_bootstrap))
    try:  # the broker counts batches in its high watermark (Tansu) or records (Kafka): BATCHES either way
        assert reader.get_watermark_offsets(TopicPartition(topic, 0), 15) == (0, BATCHES)
    finally:
        reader.close()
    print(f"{BATCHES} batches written in {time.monotonic() - began:.1f} s")
    return topic


@pytest.mark.timeout(600)
def test_offsets_and_timestamps_on_a_partition_of_many_batches(kafka_bootstrap):
    """One test, not two sharing a module fixture: pytest-xdist handed the two to different workers,
    and each wrote the 24,000 batches (~30 CPU-s, broker included)."""
    many_batches = _many_batches(kafka_bootstrap)
    _first_offset_at_or_after_a_time(kafka_bootstrap, many_batches)
    _timestamp_at_reads_the_record_or_says_past_the_end(kafka_bootstrap, many_batches)


def _first_offset_at_or_after_a_time(kafka_bootstrap, many_batches):
    parts = [(many_batches, 0), (many_batches, 1)]
    for since, want in ((T0 - 5, 0), (T0, 0), (T0 + 1, 1), (T0 + 10 * 17_000, 17_000),
                        (T0 + 10 * 17_000 - 3, 17_000), (T0 + 10 * (BATCHES - 1), BATCHES - 1),
                        (T0 + 10 * BATCHES, BATCHES)):
        starts = offsets_at_or_after(kafka_bootstrap, parts, since)
        assert starts == {(many_batches, 0): want, (many_batches, 1): 0}, since


def _timestamp_at_reads_the_record_or_says_past_the_end(kafka_bootstrap, many_batches):
    reader = Consumer(consumer_config(kafka_bootstrap, **HISTORY_FETCH_CONFIG))
    try:
        tp = TopicPartition(many_batches, 0)
        assert timestamp_at(reader, tp, 23_456, 15.0) == T0 + 10 * 23_456
        assert timestamp_at(reader, tp, 0, 15.0) == T0
        began = time.monotonic()
        assert timestamp_at(reader, tp, BATCHES, 15.0) is None
        assert time.monotonic() - began < 5.0  # decided by the end offset, not by waiting for silence
        assert timestamp_at(reader, TopicPartition(many_batches, 1), 0, 15.0) is None
    finally:
        reader.close()
