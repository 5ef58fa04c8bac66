"""The producer's checkpoint file: written when a trade was delivered since the last save, not every
second of an idle session (a file replaced each second for nothing, measured in an idle stack's CPU)."""

from __future__ import annotations

import json

from producers.binance.producer import BinanceProducer, ProducerConfig
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.publisher import Publisher


def test_the_checkpoint_is_written_again_only_after_a_new_delivery(tmp_path):
    checkpoint = tmp_path / "producer" / "binance-default.json"
    publisher = Publisher("127.0.0.1:9", AvroSerde(FileSchemaRegistry(), strict=True), ProducerMetrics())
    producer = BinanceProducer(
        ProducerConfig(symbols=["BTCUSDT", "ETHUSDT"], checkpoint_path=checkpoint), publisher, ProducerMetrics()
    )
    producer._every_second()
    assert not checkpoint.exists()  # nothing delivered yet: nothing to resume from

    producer.delivered_agg_id["BTCUSDT"] = 100
    producer._every_second()
    assert json.loads(checkpoint.read_text())["last_agg_id"] == {"BTCUSDT": 100}

    checkpoint.unlink()  # a second without a delivery: the file is not written again
    producer._every_second()
    assert not checkpoint.exists()

    producer.delivered_agg_id["ETHUSDT"] = 7  # a delivery on another symbol: saved whole
    producer._every_second()
    assert json.loads(checkpoint.read_text())["last_agg_id"] == {"BTCUSDT": 100, "ETHUSDT": 7}
    producer.delivered_agg_id["BTCUSDT"] = 101
    producer._every_second()
    assert json.loads(checkpoint.read_text())["last_agg_id"] == {"BTCUSDT": 101, "ETHUSDT": 7}
