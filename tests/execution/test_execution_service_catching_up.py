"""When the executor service may release a partition's held inputs without event-time order, against a real
broker: only when the topics holding it back have nothing left to read.

Seen in the replay test (tests/backtest/test_backtest_executor_replay.py) on a loaded machine: a
partition's signals, marks and books were all read and its trades not fetched yet (queued behind
another partition's), so md.trades had no consumer position; that counted as "nothing left to read"
and 16,236 inputs were released before the trades they belong after. A topic-partition not read yet
starts at the group's committed offset, else where `start_from` puts it; it is behind when that is
below the high watermark. A figure the broker does not give (yet: a new group's coordinator, a
loaded broker) counts as behind and is asked again; the tests wait until the service knows both
figures, so the answer is the decision itself, never a timeout's.
Also: without partitions the loop waits instead of spinning on consume(timeout=0).
"""

from __future__ import annotations

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

TRADES_P, EMPTY_P = 0, 1  # md.trades partition 0 holds records, partition 1 none


def paper_service(bootstrap: str, prefix: str, tmp_path, options: ExecuteOptions) -> ExecutorService:
    """A paper executor service with the default config, not started (no consumer yet)."""
    return ExecutorService(
        Settings(home=tmp_path, broker=bootstrap, topic_prefix=prefix),
        "paper",
        ExecutorConfig(),
        bootstrap,
        AvroSerde(FileSchemaRegistry()),
        options,
    )


def held_service(bootstrap: str, prefix: str, tmp_path, start_from: str, partition: int) -> ExecutorService:
    """A service whose consumer is assigned every input of `partition` and has read nothing; its aligner
    holds one signal there, with signals, md.book and md.mark at their end (md.trades holds it back)."""
    service = paper_service(bootstrap, prefix, tmp_path, ExecuteOptions(start_from=start_from))
    consumer = Consumer(
        consumer_config(bootstrap, f"{prefix}catching-up-{start_from}-{partition}", **{"auto.offset.reset": start_from})
    )
    consumer.assign([TopicPartition(prefix + name, partition) for name in INPUTS])
    service.inputs.consumer = consumer
    service.aligner.add("signals", partition, 1_000, 0, None)
    for name in ("signals", "md.book", "md.mark"):
        service.aligner.at_end(name, partition)
    assert service.aligner.blocking(partition) == ["md.trades"]
    assert consumer.position([TopicPartition(prefix + "md.trades", partition)])[0].offset < 0  # nothing read
    return service


def decided(service: ExecutorService, partition: int, timeout_s: float = 60.0) -> bool:
    """``inputs.catching_up(partition)`` once the service knows where md.trades starts and ends there (its
    once-a-second cache is skipped between attempts)."""
    tp = TopicPartition(service.prefix + "md.trades", partition)
    deadline = time.monotonic() + timeout_s
    while True:
        service.inputs.checked.clear()
        answer = service.inputs.catching_up(partition)
        if (tp.topic, partition) in service.inputs.start and min(service.inputs.watermarks(tp)) >= 0:
            service.inputs.checked.clear()
            return service.inputs.catching_up(partition)  # both figures known: cached start, answered watermarks
        assert time.monotonic() < deadline, f"the broker never said where {tp.topic} starts and ends ({answer})"
        time.sleep(0.1)


@pytest.fixture
def trades_in_partition_0(kafka_bootstrap, topic_prefix):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3):
        producer.produce(topic_prefix + "md.trades", value=b"x%d" % i, key=b"binance:BTCUSDT", partition=TRADES_P)
    assert producer.flush(10) == 0


def test_trades_not_fetched_yet_hold_the_partition(kafka_bootstrap, topic_prefix, tmp_path, trades_in_partition_0):
    service = held_service(kafka_bootstrap, topic_prefix, tmp_path, "earliest", TRADES_P)
    try:
        assert decided(service, TRADES_P)  # 3 records from offset 0 to read: its news is coming
        assert service.inputs.start[(topic_prefix + "md.trades", TRADES_P)] == 0
    finally:
        service.inputs.consumer.close()


def test_an_empty_topic_partition_does_not_hold(kafka_bootstrap, topic_prefix, tmp_path, trades_in_partition_0):
    service = held_service(kafka_bootstrap, topic_prefix, tmp_path, "earliest", EMPTY_P)
    try:
        assert not decided(service, EMPTY_P)
        assert service.inputs.start[(topic_prefix + "md.trades", EMPTY_P)] == 0
    finally:
        service.inputs.consumer.close()


def test_a_group_starting_at_the_end_does_not_wait_for_old_trades(
    kafka_bootstrap, topic_prefix, tmp_path, trades_in_partition_0
):
    service = held_service(kafka_bootstrap, topic_prefix, tmp_path, "latest", TRADES_P)
    try:
        assert not decided(service, TRADES_P)  # live: it reads from the end, nothing is coming
        assert service.inputs.start[(topic_prefix + "md.trades", TRADES_P)] == 3
    finally:
        service.inputs.consumer.close()


class _Recorded:
    """The service's real consumer, recording the timeout of every ``consume``."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.timeouts: list[float] = []

    def consume(self, num_messages: int, timeout: float):
        self.timeouts.append(timeout)
        return self.consumer.consume(num_messages=num_messages, timeout=timeout)


def test_without_partitions_the_loop_waits_instead_of_spinning(kafka_bootstrap, topic_prefix, tmp_path):
    """No executor (a group join, a broker outage): the loop used to ask consume() with timeout 0 and
    burn a third of a core until partitions came; every pass after the first waits a clock interval."""
    service = paper_service(kafka_bootstrap, topic_prefix, tmp_path, ExecuteOptions(clock_interval_ms=50))
    consumer = Consumer(consumer_config(kafka_bootstrap, f"{topic_prefix}no-partitions"))
    try:
        service._consumer = _Recorded(consumer)
        assert service.executor is None
        for _ in range(4):
            service._loop_once()
        assert [t > 0 for t in service._consumer.timeouts[1:]] == [True, True, True], service._consumer.timeouts
    finally:
        consumer.close()
