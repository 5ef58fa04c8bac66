"""Retention on the embedded Kafka with the catalogue's topic configs: replayed history does not expire
on arrival, and what retention deletes is whole segments past their time. A broker of its own, with
its retention check every second (Kafka's default is five minutes; the stack's, one)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from schemas.catalogue import topic, topic_configs
from tapeflow.stack.broker import KafkaBroker
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.kafka_client import admin_client, consumer_config, ensure_topics, producer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.paths import RECORDING
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

#: the topics whose records used to carry event time: market data and what the engine derives from it
REPLAYED = ("md.trades", "md.book", "md.mark", "bars.1m", "features", "signals")


@pytest.fixture(scope="module")
def fast_retention_broker():
    home = Path(tempfile.mkdtemp(prefix="tapeflow-retention-"))
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    paths = StackPaths(home)
    paths.ensure()
    broker = KafkaBroker(settings, paths)
    broker.extra_properties = {"log.retention.check.interval.ms": "1000"}
    sup = Supervisor(settings, paths, say=lambda m: None, services=[broker], steps=[])
    sup.start_all()
    try:
        yield sup.addresses["broker"]
    finally:
        sup.stop_all()
        shutil.rmtree(home, ignore_errors=True)


def recorded_event_times() -> list[int]:
    """Event times (ms) of the real recording's frames: July 2021."""
    times = []
    for line in (RECORDING / "ws_frames.txt").read_text().splitlines()[1:]:
        _, _, frame = line.partition(": ")
        try:
            data = json.loads(frame).get("data", {})
        except ValueError:
            continue
        if "E" in data:
            times.append(int(data["E"]))
    return times


def log_start(bootstrap: str, name: str) -> int:
    consumer = Consumer(consumer_config(bootstrap))
    try:
        return consumer.get_watermark_offsets(TopicPartition(name, 0), timeout=10)[0]
    finally:
        consumer.close()


def read_all(bootstrap: str, name: str, partitions: int) -> list[int]:
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    consumer.assign([TopicPartition(name, p, -2) for p in range(partitions)])
    values, ends = [], set()
    deadline = time.monotonic() + 60
    while len(ends) < partitions and time.monotonic() < deadline:
        m = consumer.poll(1)
        if m is None:
            continue
        if m.error():
            ends.add(m.partition())
            continue
        values.append(int(m.value()))
    consumer.close()
    return values


def test_replayed_history_stays_past_a_retention_check(fast_retention_broker, topic_prefix):
    """Records stamped with a 2021 event time (what a replayed recording's producer, `tapeflow replay`
    and the engine's outputs carry) are all still there after retention checks that delete such
    records from a topic stamped by event time (the control, which shows the checks ran)."""
    bootstrap = fast_retention_broker
    times = recorded_event_times()
    assert len(times) > 500 and max(times) < 1_700_000_000_000  # years old
    hour_ms = 3_600_000
    ensure_topics(bootstrap, prefix=topic_prefix, specs=[topic(n) for n in REPLAYED], md_retention_ms=hour_ms)
    control = topic_prefix + "control.event-time"
    configs = {**topic_configs(topic("md.trades"), md_retention_ms=hour_ms), "message.timestamp.type": "CreateTime"}
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(control, 1, 1, config=configs)])[control].result(15)

    producer = Producer(producer_config(bootstrap))
    for name in (*[topic_prefix + n for n in REPLAYED], control):
        for i, stamp in enumerate(times):
            producer.produce(name, key=b"binance:SUSHIUSDT", value=str(i).encode(), timestamp=stamp)
    assert producer.flush(30) == 0

    # the control's records are past their hour by event time: a retention check deletes them
    wait_until(lambda: log_start(bootstrap, control) == len(times), 60, "the retention check deleted the control")
    for name in REPLAYED:
        got = read_all(bootstrap, topic_prefix + name, topic(name).partitions)
        assert sorted(got) == list(range(len(times))), f"{name}: {len(got)} of {len(times)} records left"


def test_retention_deletes_whole_segments_past_their_time(fast_retention_broker, topic_prefix):
    """Old records go a segment at a time, never a part of one, and never a record younger than the
    retention: the first batch's segment is deleted whole once past 20 s; the second batch, written after
    it rolled, is all there."""
    bootstrap = fast_retention_broker
    name = topic_prefix + "md.trades"
    ensure_topics(bootstrap, prefix=topic_prefix, specs=[topic("md.trades")], md_retention_ms=20_000)
    producer = Producer(producer_config(bootstrap))

    def write(values: range) -> None:
        for v in values:
            producer.produce(name, key=b"binance:BTCUSDT", value=str(v).encode(), partition=0)
        assert producer.flush(30) == 0

    write(range(0, 500))
    wait_until(lambda: log_start(bootstrap, name) > 0, 90, "the first segment was deleted")
    assert log_start(bootstrap, name) == 500, "retention deleted part of a segment"
    write(range(500, 800))
    got = read_all(bootstrap, name, topic("md.trades").partitions)
    assert got == list(range(500, 800))
