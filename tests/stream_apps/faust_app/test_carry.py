"""Carrying engine state into a new topic epoch: the newest snapshot per key, offsets cleared."""

from __future__ import annotations

import zlib

import orjson
import pytest
from confluent_kafka import Producer

from stream_apps.faust_app.carry import carry_engine_snapshots, changelog_topic, reset_offsets
from confluent_kafka.admin import NewTopic

from schemas.catalogue import SYMBOL_PARTITIONS
from tapeflow_runtime.kafka_client import admin_client, producer_config

pytestmark = pytest.mark.integration


def blob(key: str, clock: int, applied: dict) -> bytes:
    return zlib.compress(orjson.dumps({"format": 1, "key": key, "applied": applied, "progress_finished": True,
                                       "engine": {"clock_ms": clock}}), 1)


def test_reset_offsets_keeps_the_state_and_forgets_the_offsets():
    out = orjson.loads(zlib.decompress(reset_offsets(blob("binance:BTCUSDT", 7, {"md.trades": 41}))))
    assert out == {"format": 1, "key": "binance:BTCUSDT", "applied": {}, "progress_finished": True,
                   "engine": {"clock_ms": 7}}


def test_the_newest_snapshot_of_each_key_is_carried_to_its_partition_and_again_harmlessly(
        kafka_bootstrap, topic_prefix, read_topic):
    old_app, new_app = f"{topic_prefix}tapeflow-engine", f"{topic_prefix}e1.tapeflow-engine"
    assert len(carry_engine_snapshots(kafka_bootstrap, old_app, new_app)) == 0  # no changelog yet: nothing to carry
    admin = admin_client(kafka_bootstrap)
    for future in admin.create_topics([NewTopic(changelog_topic(old_app), num_partitions=SYMBOL_PARTITIONS,
                                                replication_factor=-1)]).values():
        future.result(15)
    producer = Producer(producer_config(kafka_bootstrap, **{"linger.ms": 0}))
    for clock in (1, 2, 3):
        for partition, key in ((1, "binance:BTCUSDT"), (4, "binance:ETHUSDT")):
            producer.produce(changelog_topic(old_app), key=key.encode(), partition=partition,
                              value=blob(key, clock * 10 + partition, {"md.trades": clock * 100}))
            producer.flush(10)
    assert len(carry_engine_snapshots(kafka_bootstrap, old_app, new_app)) == 2
    assert len(carry_engine_snapshots(kafka_bootstrap, old_app, new_app)) == 2  # a resumed rollover copies again
    records = read_topic(kafka_bootstrap, changelog_topic(new_app), raw=True)
    seen = {(r["key"], r["partition"], orjson.loads(zlib.decompress(r["value"]))["engine"]["clock_ms"],
             tuple(orjson.loads(zlib.decompress(r["value"]))["applied"])) for r in records}
    assert seen == {(b"binance:BTCUSDT", 1, 31, ()), (b"binance:ETHUSDT", 4, 34, ())}


def test_a_worker_that_holds_every_snapshot_carries_them_without_reading_the_changelog(
        kafka_bootstrap, topic_prefix, read_topic):
    """The rollover's fast path: the old worker's own newest snapshots (no changelog to read: none was
    created for ``old_app`` here) land in the new changelog, each in its partition, offsets cleared."""
    old_app, new_app = f"{topic_prefix}tapeflow-engine", f"{topic_prefix}e1.tapeflow-engine"
    newest = {b"binance:BTCUSDT": (2, blob("binance:BTCUSDT", 5, {"md.trades": 9})),
              b"binance:SOLUSDT": (5, blob("binance:SOLUSDT", 6, {"md.book": 3}))}
    carried = carry_engine_snapshots(kafka_bootstrap, old_app, new_app, newest=newest)
    assert {key: partition for key, (partition, _) in carried.items()} == {b"binance:BTCUSDT": 2, b"binance:SOLUSDT": 5}
    records = read_topic(kafka_bootstrap, changelog_topic(new_app), raw=True)
    seen = {(r["key"], r["partition"], orjson.loads(zlib.decompress(r["value"]))["engine"]["clock_ms"],
             tuple(orjson.loads(zlib.decompress(r["value"]))["applied"])) for r in records}
    assert seen == {(b"binance:BTCUSDT", 2, 5, ()), (b"binance:SOLUSDT", 5, 6, ())}
    assert carry_engine_snapshots(kafka_bootstrap, old_app, new_app, newest={}) == {}
