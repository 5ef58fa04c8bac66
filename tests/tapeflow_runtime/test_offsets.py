"""`tapeflow_runtime.offsets.offsets_at_or_after` against a real Kafka: the first offset at or after a
time, as ListOffsets-by-timestamp answers it, and the end of a partition with nothing that recent."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from tapeflow_runtime.kafka_client import admin_client, consumer_config, producer_config
from tapeflow_runtime.offsets import latest_offsets, offsets_at_or_after

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
RECORDS = 3_000


def _stamped_topic(kafka_bootstrap) -> str:
    """Partition 0: RECORDS records stamped T0 + 10 ms * offset (several batches, several segments'
    worth of time-index entries); partition 1 empty."""
    topic = f"offsets-{time.time_ns()}"
    admin = admin_client(kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1, config={"segment.bytes": str(1 << 20)})])[topic].result(15)
    producer = Producer(producer_config(kafka_bootstrap, **{"linger.ms": 5}))
    for i in range(RECORDS):
        producer.produce(topic, key=b"k", value=b"x" * 1_000, partition=0, timestamp=T0 + 10 * i)
    assert producer.flush(60) == 0
    reader = Consumer(consumer_config(kafka_bootstrap))
    try:
        assert reader.get_watermark_offsets(TopicPartition(topic, 0), 15) == (0, RECORDS)
    finally:
        reader.close()
    return topic


def test_first_offset_at_or_after_a_time_and_the_end_past_the_newest(kafka_bootstrap):
    topic = _stamped_topic(kafka_bootstrap)
    parts = [(topic, 0), (topic, 1)]
    for since, want in (
        (T0 - 5, 0),
        (T0, 0),
        (T0 + 1, 1),
        (T0 + 10 * 1_700, 1_700),
        (T0 + 10 * 1_700 - 3, 1_700),
        (T0 + 10 * (RECORDS - 1), RECORDS - 1),
        (T0 + 10 * RECORDS, RECORDS),
    ):
        assert offsets_at_or_after(kafka_bootstrap, parts, since) == {(topic, 0): want, (topic, 1): 0}, since
    assert latest_offsets(kafka_bootstrap, parts) == {(topic, 0): RECORDS, (topic, 1): 0}
    assert offsets_at_or_after(kafka_bootstrap, [], T0) == {}
