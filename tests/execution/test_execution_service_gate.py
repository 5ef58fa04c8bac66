"""The next topic epoch's executor service, started gated (``execution.following``), against a real
broker: it joins its group at once but reads, restores and commits nothing until its gate opens; then
it starts every input partition where the carry says (``starts``; 0 elsewhere), not where
``start_from`` would put a group without offsets, and commits that start."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from execution.config import ExecutorConfig
from execution.service import INPUTS, ExecuteOptions, ExecutorService
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics
from tapeflow_runtime.settings import Settings

pytestmark = pytest.mark.integration


def _until(condition, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def _committed(bootstrap: str, group: str, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    consumer = Consumer(consumer_config(bootstrap, group))
    try:
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(partitions, timeout=15)}
    finally:
        consumer.close()


def test_a_gated_service_joins_and_waits_then_starts_from_the_carry(kafka_bootstrap, topic_prefix, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(4):  # stand-ins for carried signals on partition 2: the new epoch's own start after them
        producer.produce(topic_prefix + "signals", value=b"carried-%d" % i, key=b"binance:BTCUSDT", partition=2)
        assert producer.flush(10) == 0
    gate = threading.Event()
    service = ExecutorService(Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix), "paper",
                              ExecutorConfig(), kafka_bootstrap, AvroSerde(FileSchemaRegistry()),
                              ExecuteOptions(start_from="latest"), gate=gate)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    partitions = [TopicPartition(topic_prefix + name, p) for name in INPUTS for p in range(6)]
    try:
        _until(lambda: service.status == "waiting for the carry")  # joined, assigned, nothing restored
        time.sleep(1.5)  # several commit intervals: still nothing committed, nothing restored
        assert service.executor is None and service.restores == 0
        assert all(offset < 0 for offset in _committed(kafka_bootstrap, service.group_id, partitions).values())
        end = 4  # Tansu counts batches: 4 single-record batches end at 4
        service.starts = {(topic_prefix + "signals", 2): end}
        gate.set()
        _until(lambda: service.executor is not None and service.restores == 1)
        committed = _committed(kafka_bootstrap, service.group_id, partitions)
        assert committed == {(tp.topic, tp.partition): end if (tp.topic, tp.partition) == (topic_prefix + "signals", 2)
                             else 0 for tp in partitions}
        assert service.executor.owner_ok  # every partition of the inputs is this service's
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
