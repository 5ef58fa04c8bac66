"""`tapeflow_runtime.kafka_client.topic_metadata` against the real broker behind a slow link.

The CI's loaded run once left an executor's metadata request unanswered for 10 s in the middle of a
rebalance; `read_to_end` raised and the executor exited 1. The helper asks again while the broker
times out. Here the broker is reached through `LinkProxy` delaying every chunk 1.5 s: one request with
a 0.5 s timeout fails, the helper with 0.5 s attempts returns the topic; a bootstrap that never
answers still fails after the helper's whole budget.
"""

from __future__ import annotations

import socket
import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

from tapeflow_runtime.kafka_client import admin_client, consumer_config, offsets_for_times, topic_metadata
from tests.support.faults_links import LinkProxy

pytestmark = pytest.mark.integration


def _consumer(bootstrap: str) -> Consumer:
    return Consumer(consumer_config(bootstrap, group_id=f"meta-{time.time_ns()}"))


def test_topic_metadata_waits_out_a_broker_slower_than_one_request(kafka_bootstrap):
    topic = f"meta-{time.time_ns()}"
    admin = admin_client(kafka_bootstrap)  # kept: a collected client cancels its futures
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(15)
    host, port = kafka_bootstrap.rsplit(":", 1)
    with LinkProxy(lambda: (host, int(port))) as proxy:
        proxy.delay_s = 1.5
        slow = f"127.0.0.1:{proxy.port}"
        once = _consumer(slow)
        try:
            with pytest.raises(KafkaException):
                once.list_topics(topic, timeout=0.5)  # what `read_to_end` did: the executor died of it
        finally:
            once.close()
        patient = _consumer(slow)
        try:
            md = topic_metadata(patient, topic, timeout_s=30, attempt_s=0.5)
        finally:
            patient.close()
    assert md is not None and md.error is None and sorted(md.partitions) == [0, 1, 2]


def test_topic_metadata_gives_up_after_its_budget_when_nothing_answers():
    with socket.socket() as hole:  # accepts connections (the backlog) and never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        consumer = _consumer(f"127.0.0.1:{hole.getsockname()[1]}")
        try:
            began = time.monotonic()
            with pytest.raises(KafkaException):
                topic_metadata(consumer, "any", timeout_s=2.0, attempt_s=0.5)
            took = time.monotonic() - began
        finally:
            consumer.close()
    assert took >= 1.9  # it kept asking for the whole budget, not one attempt


def test_offsets_by_time_on_a_topic_created_a_moment_ago_wait_for_its_leader(kafka_bootstrap):
    """A topic's creation returns before every broker cache knows its leader: ListOffsets asked at
    once can answer NOT_LEADER_FOR_PARTITION (the CI's backtest died of it). The helper asks again."""
    admin = admin_client(kafka_bootstrap)
    consumer = _consumer(kafka_bootstrap)
    try:
        for i in range(12):
            topic = f"fresh-{time.time_ns()}-{i}"
            admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(15)
            answer = offsets_for_times(consumer, [TopicPartition(topic, p, 0) for p in range(6)], 15)
            assert [(tp.partition, tp.error) for tp in answer] == [(p, None) for p in range(6)]
            assert all(tp.offset == -1 for tp in answer)  # empty: nothing at or after time 0
    finally:
        consumer.close()


def test_ask_again_retries_only_the_codes_it_is_given_and_returns_a_pending_answer_at_the_deadline():
    from confluent_kafka import KafkaError, KafkaException

    from tapeflow_runtime.kafka_client import _NotYet, ask_again

    calls: list[float] = []

    def flaky(seconds: float) -> str:
        calls.append(seconds)
        if len(calls) < 3:
            raise KafkaException(KafkaError(KafkaError.NOT_COORDINATOR))
        return "answer"

    assert ask_again(flaky, {KafkaError.NOT_COORDINATOR}, 10, pause_s=0) == "answer" and len(calls) == 3
    assert all(0.5 <= s <= 10 for s in calls)  # each attempt gets what is left, at least the floor

    def refused(seconds: float) -> str:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        ask_again(refused, {KafkaError.NOT_COORDINATOR}, 10, pause_s=0)

    between: list[float] = []
    assert (
        ask_again(lambda s: (_ for _ in ()).throw(_NotYet("partial")), set(), 0.3, pause_s=0.05, between=between.append)
        == "partial"
    )
    assert between and all(left <= 0.3 for left in between)


def test_created_topics_are_hosted_when_ensure_topics_returns(kafka_bootstrap, topic_prefix):
    """A produce into a partition the broker has not created yet can be lost while acknowledged
    (``kafka_client.wait_hosted``): when ``ensure_topics`` has created the catalogue's topics, the
    broker's leader already answers for every one of their partitions (one ListOffsets, asked once)."""
    from tapeflow_runtime.kafka_client import ensure_topics, start_offsets

    results = ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    created = [r.name for r in results if r.action == "created"]
    assert len(created) == len(results)
    consumer = Consumer(consumer_config(kafka_bootstrap))
    try:
        wanted = [(name, p) for name in created for p in topic_metadata(consumer, name, 10).partitions]
        assert len(wanted) > len(created)  # some have more than one partition
        hosted = start_offsets(consumer, wanted, 0.5)
    finally:
        consumer.close()
    assert sorted(set(wanted) - set(hosted)) == []
