"""Reading a logical topic's segments (``tapeflow_runtime.topic_reader.read_chain``) on the real broker:
a rolling epoch's topic that is not readable yet is not read, and a finished segment deleted by
retention between listing and reading is skipped, not an error."""

from __future__ import annotations

from confluent_kafka import Producer

from tapeflow_runtime.epochs import Chain, ChainLink
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.topic_reader import read_chain, read_to_end


def _write(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
    for value in values:
        producer.produce(topic, value=value, partition=0)
        producer.flush(30)  # one batch each: Tansu's offsets then count records


def test_a_rolling_epochs_carried_topic_waits_for_the_carry_and_a_gone_segment_is_skipped(kafka_bootstrap, topic_prefix):
    from schemas.catalogue import topic as spec

    old, cur, nxt = topic_prefix + "e1.", topic_prefix, topic_prefix + "e2."
    for prefix in (cur, nxt):
        ensure_topics(kafka_bootstrap, prefix=prefix, specs=[spec("signals"), spec("md.trades")])
    _write(kafka_bootstrap, cur + "signals", [b"s0", b"s1"])
    _write(kafka_bootstrap, nxt + "signals", [b"carried-s0", b"carried-s1", b"s2"])  # the carry, then its own
    _write(kafka_bootstrap, nxt + "md.trades", [b"t9"])
    # the finished segment e1 is listed but its topics are gone (retention deleted them)
    links = (ChainLink(old, 1, True, {}, {}, {"signals": {0: 5}, "md.trades": {0: 5}}),
             ChainLink(cur, 2, False, {}, {"signals": {0: 5}, "md.trades": {0: 5}}),
             ChainLink(nxt, 3, False, {}, {}, pending=frozenset({"signals"})))
    got = read_chain(kafka_bootstrap, Chain(links), {"signals": [0], "md.trades": [0]}, None, idle_s=0.3, timeout_s=60)
    assert [r.value for r in got["signals"].records] == [b"s0", b"s1"]  # not the next epoch's before its carry
    assert [r.value for r in got["md.trades"].records] == [b"t9"]  # its md.trades are readable from the switch
    assert [r.offset for r in got["signals"].records] == [5, 6]  # logical offsets on from the deleted segment
    # the carry is recorded: the next epoch's signals from its first own record
    links = links[:2] + (ChainLink(nxt, 3, False, {"signals": {0: 2}}, {}),)
    got = read_chain(kafka_bootstrap, Chain(links), {"signals": [0]}, None, idle_s=0.3, timeout_s=60)
    assert [r.value for r in got["signals"].records] == [b"s0", b"s1", b"s2"]


def test_an_optional_topic_missing_at_the_start_is_an_empty_snapshot(kafka_bootstrap, topic_prefix):
    from schemas.catalogue import topic as spec

    ensure_topics(kafka_bootstrap, prefix=topic_prefix, specs=[spec("signals")])
    _write(kafka_bootstrap, topic_prefix + "signals", [b"a"])
    got = read_to_end(kafka_bootstrap, {topic_prefix + "signals": [0], topic_prefix + "gone": None}, None,
                      idle_s=0.3, timeout_s=60, optional=frozenset({topic_prefix + "gone"}))
    assert got[topic_prefix + "gone"].gone and got[topic_prefix + "gone"].records == []
    assert [r.value for r in got[topic_prefix + "signals"].records] == [b"a"]
