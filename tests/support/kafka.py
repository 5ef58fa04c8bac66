"""Kafka helpers the integration tests share (real broker only)."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config


def committed_offsets(bootstrap, group: str, topic: str) -> dict[int, int]:
    consumer = Consumer(consumer_config(bootstrap, group_id=group))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in partitions], timeout=10) if tp.offset >= 0}
    finally:
        consumer.close()
