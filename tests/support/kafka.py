"""Kafka helpers the integration tests share (real broker only)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config


def committed_offsets(bootstrap, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (partitions without one are left out).

    A partition the broker answered with an error (coordinator busy, request timed out) is asked
    again until ``timeout``, then raises: dropping it would read as "nothing committed"."""
    consumer = Consumer(consumer_config(bootstrap, group_id=group))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
                errors = {tp.partition: tp.error for tp in answer if tp.error is not None}
            except KafkaException as exc:
                answer, errors = [], {-1: exc}
            if not errors:
                return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}
            if time.monotonic() > deadline:
                raise AssertionError(f"committed offsets of {group} on {topic}: broker errors {errors}")
            time.sleep(0.5)
    finally:
        consumer.close()
