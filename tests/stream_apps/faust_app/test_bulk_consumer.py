"""`idle_fetch_wait` on a real aiokafka consumer against the real broker: an idle consumer asks few
fetches, a record still arrives, and the short wait is back while records flow."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic

from stream_apps.faust_app.bulk_consumer import idle_fetch_wait
from tapeflow_runtime.kafka_client import admin_client, producer_config

pytestmark = pytest.mark.integration


async def _count_fetches(bootstrap: str, topic: str, idle: bool,
                         seconds: float) -> tuple[list[tuple[int, bool]], AIOKafkaConsumer]:
    """A consumer of both partitions from their end (with `idle_fetch_wait` or the fixed 20 ms) and the
    list it fills: (the request's wait, whether its answer brought records), one per fetch."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=20, enable_auto_commit=False)
    await consumer.start()
    fetcher = consumer._fetcher
    if idle:
        idle_fetch_wait(fetcher, 20, 200)
    fetches: list[tuple[int, bool]] = []
    inner = fetcher._proc_fetch_request

    async def counted(assignment, node_id, request):
        got = await inner(assignment, node_id, request)
        fetches.append((request._max_wait_ms, bool(got)))
        return got

    fetcher._proc_fetch_request = counted
    consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
    await consumer.seek_to_end()
    await asyncio.sleep(seconds)
    return fetches, consumer


async def test_an_idle_consumer_waits_longer_and_a_record_still_arrives(kafka_bootstrap):
    topic = f"idle-fetch-{time.time_ns()}"
    admin = admin_client(kafka_bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(15)
    plain, c0 = await _count_fetches(kafka_bootstrap, topic, idle=False, seconds=2.0)
    await c0.stop()
    fetches, consumer = await _count_fetches(kafka_bootstrap, topic, idle=True, seconds=2.0)
    try:
        waits = [w for w, _ in fetches]
        # idle: the first request waits 20 ms, every one after an empty answer 200 ms
        assert waits[0] == 20 and set(waits[1:]) == {200}, waits
        assert len(fetches) * 4 < len(plain), (len(fetches), len(plain))  # a few where 20 ms asked dozens
        idle_count = len(fetches)
        producer = Producer(producer_config(kafka_bootstrap, **{"linger.ms": 0}))
        for i in range(50):
            producer.produce(topic, value=b"%d" % i, partition=i % 2)
        producer.flush(10)
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 50 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                got += [r.value for r in records]
        assert sorted(got) == sorted(b"%d" % i for i in range(50))
        # records came: every request after an answer that brought them waited 20 ms again
        after = fetches[idle_count - 1:]
        assert any(got for _, got in after), after
        assert all(nxt[0] == 20 for (_, got), nxt in zip(after, after[1:]) if got), after
    finally:
        await consumer.stop()
