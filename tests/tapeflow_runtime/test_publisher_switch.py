"""`Publisher.switch_prefix`: a topic-epoch switch at a record boundary, progress markers kept in their epoch."""

from __future__ import annotations

import pytest

from producers.metrics import ProducerMetrics
from schemas.catalogue import ENGINE_INPUTS, PROGRESS_TOPIC
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher

pytestmark = pytest.mark.integration

KEY = "binance:BTCUSDT"
TRADE = {"exchange": "binance", "symbol": "BTCUSDT", "agg_id": 1, "price": 1.0, "qty": 1.0, "first_trade_id": 1,
         "last_trade_id": 1, "event_time": 1, "trade_time": 1, "receive_time": 1, "taker_side": "BUY"}


def test_every_record_lands_in_exactly_one_epoch_in_order_and_markers_name_their_own_epoch(
        kafka_bootstrap, topic_prefix, read_topic):
    old, new = topic_prefix, topic_prefix + "e1."
    ensure_topics(kafka_bootstrap, prefix=old)
    ensure_topics(kafka_bootstrap, prefix=new)
    pub = Publisher(kafka_bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=old)
    markers = ProgressMarkers(pub, "test", ENGINE_INPUTS)
    for i in range(500):
        pub.publish("md.trades", KEY, {**TRADE, "agg_id": i, "event_time": i})
    markers.mark(KEY, 499)  # pending: its records are not acknowledged yet
    assert pub.switch_prefix(new) == 0
    assert markers.pending() == 0  # published under the old names before the switch
    for i in range(500, 800):
        pub.publish("md.trades", KEY, {**TRADE, "agg_id": i, "event_time": i})
    pub.flush(10)
    markers.mark(KEY, 799)
    markers.publish_ready()
    assert pub.flush(10) == 0

    before = [r["value"]["agg_id"] for r in read_topic(kafka_bootstrap, old + "md.trades")]
    after = [r["value"]["agg_id"] for r in read_topic(kafka_bootstrap, new + "md.trades")]
    assert before == list(range(500)) and after == list(range(500, 800))
    old_markers = [r["value"] for r in read_topic(kafka_bootstrap, old + PROGRESS_TOPIC)]
    new_markers = [r["value"] for r in read_topic(kafka_bootstrap, new + PROGRESS_TOPIC)]
    assert [m["watermark_ms"] for m in old_markers] == [499]
    assert old_markers[0]["offsets"] == {"md.trades": 499}  # catalogue names: offsets of its own epoch
    assert [m["watermark_ms"] for m in new_markers] == [799]
    assert new_markers[0]["offsets"] == {"md.trades": 299}  # the 300th record of the new epoch
