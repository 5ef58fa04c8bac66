"""The publisher never loses a record silently: failed deliveries are retried, then reported."""

from __future__ import annotations

import pytest

from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.publisher import MAX_REDELIVERIES, Publisher

pytestmark = pytest.mark.integration

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


def test_undeliverable_records_are_retried_counted_and_reported():
    # nothing listens on port 1: every delivery times out quickly
    metrics = ProducerMetrics()
    pub = Publisher("127.0.0.1:1", AvroSerde(FileSchemaRegistry()), metrics, **{"message.timeout.ms": 200})
    for _ in range(3):
        pub.publish("md.trades", "binance:BTCUSDT", TRADE)
    remaining = pub.flush(10)
    assert not pub.healthy and len(pub.failed) == 3 and remaining == 0
    errors = sum(
        s.value
        for m in metrics.registry.collect()
        for s in m.samples
        if s.name == "tapeflow_producer_delivery_errors_total"
    )
    assert errors == 3 * MAX_REDELIVERIES


def test_delivered_records_call_back_once(kafka_bootstrap, topic_prefix):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    pub = Publisher(kafka_bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=topic_prefix)
    seen = []
    for i in range(1000):
        pub.publish("md.trades", "binance:BTCUSDT", {**TRADE, "agg_id": i}, on_delivered=lambda i=i: seen.append(i))
    assert pub.flush(10) == 0
    assert seen == list(range(1000)) and pub.delivered == 1000 and pub.healthy
