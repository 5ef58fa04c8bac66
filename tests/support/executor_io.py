"""Feeding the executor's input topics and watching its output topics, for the executor service tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from schemas.catalogue import symbol_key
from tapeflow_runtime.kafka_client import (
    consumer_config,
    producer_config,
)
from tests.support.execution import SERDE, signal_record, trade_record

pytestmark = pytest.mark.integration
KEY = symbol_key("binance", "BTCUSDT")


class Watcher:
    """Follows output topics from the beginning and waits for records matching a predicate."""

    def __init__(self, bootstrap: str, prefix: str, topics: list[str]) -> None:
        self.prefix = prefix
        self.c = Consumer(consumer_config(bootstrap, f"watch-{uuid.uuid4().hex[:8]}"))
        parts = []
        for name in topics:
            md = self.c.list_topics(prefix + name, timeout=10).topics[prefix + name]
            parts += [TopicPartition(prefix + name, p, OFFSET_BEGINNING) for p in md.partitions]
        self.c.assign(parts)
        self.seen: dict[str, list[dict[str, Any]]] = {name: [] for name in topics}
        self.keys: set[bytes] = set()

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            msg = self.c.poll(0.05)
            if msg is None or msg.error():
                continue
            name = msg.topic()[len(self.prefix) :]
            self.seen[name].append(SERDE.decode(msg.value()))
            if name != "risk.events":
                self.keys.add(msg.key())

    def wait(self, topic: str, pred: Callable[[dict], bool], timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for rec in self.seen[topic]:
                if pred(rec):
                    return rec
            self.pump(0.1)
        raise AssertionError(f"no matching {topic} record within {timeout}s; have {self.seen[topic][-5:]}")

    def close(self) -> None:
        self.c.close()


class Feed:
    """Produces signals and trades with wall-clock times (strictly increasing)."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.p = Producer(producer_config(bootstrap))
        self.prefix = prefix
        self.last = 0

    def now(self) -> int:
        self.last = max(self.last + 1, int(time.time() * 1000))
        return self.last

    def send(self, topic: str, record: dict) -> dict:
        self.p.produce(self.prefix + topic, key=KEY, value=SERDE.encode(topic, record))
        assert self.p.flush(10) == 0
        return record

    def trade(self, price: float) -> dict:
        return self.send("md.trades", trade_record(price, self.now()))

    def signal(self, **kw) -> dict:
        return self.send("signals", signal_record(eval_time=self.now(), **kw))


def wait_consumed(bootstrap: str, prefix: str, topic: str, count: int, timeout: float = 60.0) -> None:
    """Wait until the executor's group has committed `count` records of `topic` (it processed them)."""
    c = Consumer(consumer_config(bootstrap, f"{prefix}tapeflow-executor-paper"))
    try:
        md = c.list_topics(prefix + topic, timeout=10).topics[prefix + topic]
        parts = [TopicPartition(prefix + topic, p) for p in md.partitions]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                done = sum(max(tp.offset, 0) for tp in c.committed(parts, timeout=10))
            except KafkaException:  # the group coordinator moving or loading (NOT_COORDINATOR): ask again
                done = -1
            if done >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"executor did not consume {count} records of {topic} within {timeout}s")
    finally:
        c.close()


def free_port() -> int:
    from tapeflow.stack.process import free_port as stack_free_port

    return stack_free_port()  # below the ephemeral range: no client socket can take it meanwhile
