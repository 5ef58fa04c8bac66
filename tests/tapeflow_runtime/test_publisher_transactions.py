"""The publisher's transactional mode on the real broker: committed records and offsets are visible
together, aborted records never are, and a second producer with the same transactional.id fences the first."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics
from tapeflow_runtime.publisher import Publisher, TransactionFenced
from tapeflow_runtime.topic_reader import read_to_end

pytestmark = pytest.mark.integration

SERDE = AvroSerde(FileSchemaRegistry())
TRADE = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "agg_id": 1,
    "price": 1.0,
    "qty": 1.0,
    "first_trade_id": 1,
    "last_trade_id": 1,
    "event_time": 1,
    "trade_time": 1,
    "receive_time": 1,
    "taker_side": "BUY",
}


def publisher(bootstrap: str, prefix: str, tid: str) -> Publisher:
    pub = Publisher(bootstrap, SERDE, ProducerMetrics(), topic_prefix=prefix, transactional_id=tid)
    pub.init_transactions()
    pub.begin_transaction()
    return pub


def committed_ids(bootstrap: str, prefix: str) -> list[int]:
    """agg_ids of md.trades as a read_committed reader sees them."""
    snap = read_to_end(bootstrap, {prefix + "md.trades": None}, SERDE)
    return sorted(r["agg_id"] for r in snap[prefix + "md.trades"].records)


def test_commit_publishes_records_with_offsets_and_abort_hides_them(kafka_bootstrap, topic_prefix):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    group = f"{topic_prefix}g"
    consumer = Consumer(consumer_config(kafka_bootstrap, group))  # its metadata names the group for the offsets
    consumer.subscribe([topic_prefix + "signals"])
    consumer.poll(0.1)
    pub = publisher(kafka_bootstrap, topic_prefix, f"{topic_prefix}tx")
    for i in range(5):
        pub.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": i})
    assert pub.transaction_records == 5
    pub.commit_transaction([TopicPartition(topic_prefix + "signals", 0, 42)], consumer.consumer_group_metadata())
    pub.begin_transaction()
    for i in range(5, 8):
        pub.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": i})
    assert pub.flush(10) == 0  # written to the log, still not visible
    pub.abort_transaction()
    pub.begin_transaction()
    pub.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": 8})
    pub.commit_transaction([], consumer.consumer_group_metadata())
    assert committed_ids(kafka_bootstrap, topic_prefix) == [0, 1, 2, 3, 4, 8]
    [tp] = consumer.committed([TopicPartition(topic_prefix + "signals", 0)], timeout=10)
    assert tp.offset == 42
    consumer.close()


def test_a_newer_producer_with_the_same_id_fences_the_older_and_aborts_its_transaction(kafka_bootstrap, topic_prefix):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    tid = f"{topic_prefix}tx-{uuid.uuid4().hex[:6]}"
    old = publisher(kafka_bootstrap, topic_prefix, tid)
    old.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": 1})
    assert old.flush(10) == 0
    new = publisher(kafka_bootstrap, topic_prefix, tid)  # the open transaction of `old` is aborted here
    new.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": 2})
    new.commit_transaction([], None)
    old.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": 3})
    with pytest.raises(TransactionFenced):
        old.commit_transaction([], None)
    assert committed_ids(kafka_bootstrap, topic_prefix) == [2]
