"""Kafka helpers the integration tests share (real broker only)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config
from tapeflow_runtime.offsets import CommittedOffsetError
from tapeflow_runtime.offsets import committed_offsets as committed_or_raise


def committed_offsets(
    bootstrap,
    group: str,
    topic: str,
    timeout: float = 30.0,
    *,
    consumer: Consumer | None = None,
    partitions: list[int] | None = None,
) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (partitions without one are left out).

    An answer with errors (coordinator busy, request timed out) is asked again until ``timeout``,
    then raises: dropping those partitions would read as "nothing committed".

    ``consumer``: a client of ``group`` to ask with (``group_consumer``), for a caller that asks again
    and again (``tests.support.services.wait_consumed``): each answer is still the broker's (an
    OffsetFetch to the group's coordinator per call), only the client is not made and closed again
    (a new librdkafka client per question, twice a second per topic, was most of what a long wait cost).
    ``partitions``: ask for these only, without the topic's metadata."""
    own = consumer is None
    if own:
        consumer = group_consumer(bootstrap, group)
    try:
        if partitions is None:
            partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        deadline = time.monotonic() + timeout
        while True:
            try:
                answer = committed_or_raise(consumer, [TopicPartition(topic, p) for p in partitions], 10)
                return {tp.partition: tp.offset for tp in answer if tp.offset >= 0}
            except (CommittedOffsetError, KafkaException) as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"committed offsets of {group} on {topic}: {exc}") from exc
            time.sleep(0.5)
    finally:
        if own:
            consumer.close()


def group_consumer(bootstrap, group: str) -> Consumer:
    """A client of ``group`` that only asks for its committed offsets (it never subscribes, so it never
    joins the group); the caller closes it."""
    return Consumer(consumer_config(bootstrap, group_id=group))
