"""Kafka helpers the integration tests share (real broker only)."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from tapeflow_runtime.kafka_client import consumer_config, producer_config
from tapeflow_runtime.offsets import CommittedOffsetError
from tapeflow_runtime.offsets import committed_offsets as committed_or_raise


def committed_offsets(bootstrap, group: str, topic: str, timeout: float = 30.0, *,
                      consumer: Consumer | None = None, partitions: list[int] | None = None) -> dict[int, int]:
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


def single_record_batches(bootstrap, topic: str, values: list[bytes], partition: int,
                          key: bytes = b"binance:BTCUSDT") -> None:
    """Each value as a record batch of its own (what a live producer writes at one trade per linger),
    pipelined."""
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0, "batch.num.messages": 1}))
    for value in values:
        while True:
            try:
                producer.produce(topic, key=key, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    deadline = time.monotonic() + 300  # 5 s on an idle machine; over 60 s once in the loaded suite
    while (left := producer.flush(5)) and time.monotonic() < deadline:
        pass
    assert left == 0, f"{left} of {len(values)} records undelivered after 300 s"
