"""Reading catalogue topics to their end (``tapeflow_runtime.topic_reader``) on the real broker: every
record in offset order, keyed by catalogue name under a prefix, from a time by record timestamp, and a
missing topic is an error (a state read must never pass for complete)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.topic_reader import StateReadError, read_to_end, read_topics


def _write(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 5}))
    for value in values:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0


def test_read_topics_gives_every_record_by_catalogue_name_and_from_a_time(kafka_bootstrap, topic_prefix):
    from schemas.catalogue import topic as spec

    ensure_topics(kafka_bootstrap, prefix=topic_prefix, specs=[spec("signals"), spec("positions")])
    _write(kafka_bootstrap, topic_prefix + "signals", [b"s%d" % i for i in range(500)])
    got = read_topics(kafka_bootstrap, topic_prefix, {"signals": [0], "positions": None}, None, timeout_s=60)
    assert set(got) == {"signals", "positions"}
    assert [r.value for r in got["signals"].records] == [b"s%d" % i for i in range(500)]
    assert [r.offset for r in got["signals"].records] == list(range(500))
    assert got["signals"].next_offsets == {0: 500}
    assert got["positions"].records == []
    # the broker stamps records on arrival (LogAppendTime): a read from a later time skips the older ones
    later = int(time.time() * 1000) + 1
    while int(time.time() * 1000) < later:
        time.sleep(0.001)
    _write(kafka_bootstrap, topic_prefix + "signals", [b"late0", b"late1"])
    seen: list[tuple[str, bytes]] = []
    read_topics(
        kafka_bootstrap,
        topic_prefix,
        {"signals": None},
        None,
        start_ms=later,
        timeout_s=60,
        on_record=lambda name, raw: seen.append((name, raw.value)),
    )
    assert seen == [("signals", b"late0"), ("signals", b"late1")]


def test_a_missing_topic_is_an_error(kafka_bootstrap, topic_prefix):
    with pytest.raises(StateReadError, match="gone"):
        read_to_end(kafka_bootstrap, {topic_prefix + "gone": None}, None, timeout_s=10)
