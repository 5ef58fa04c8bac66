"""Carrying executor state into a new topic epoch: records copied in order, resumable, signals skipped."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from execution.carry import STATE_TOPICS, carry_executor_state
from tapeflow_runtime.offsets import commit_group_start
from tapeflow_runtime.offsets import group_committed as committed
from tapeflow_runtime.kafka_client import ensure_topics, producer_config

pytestmark = pytest.mark.integration


def test_state_topics_are_copied_in_order_once_even_when_the_copy_is_resumed(kafka_bootstrap, topic_prefix,
                                                                           read_topic):
    old, new = topic_prefix, topic_prefix + "e1."
    ensure_topics(kafka_bootstrap, prefix=old)
    ensure_topics(kafka_bootstrap, prefix=new)
    producer = Producer(producer_config(kafka_bootstrap))
    for i in range(20):
        producer.produce(old + "orders", key=b"k%d" % (i % 3), value=b"order-%d" % i, partition=i % 2,
                         timestamp=1_000 + i)
        producer.produce(old + "signals", key=b"s", value=b"signal-%d" % i, partition=3, timestamp=2_000 + i)
    producer.produce(old + "risk.events", key=b"paper:daily", value=b"halt", partition=0)
    producer.flush(10)
    # an interrupted copy: the first 4 orders of partition 0 are there already
    for i in range(0, 8, 2):
        producer.produce(new + "orders", key=b"k%d" % (i % 3), value=b"order-%d" % i, partition=0, timestamp=1_000 + i)
    producer.flush(10)

    ends = carry_executor_state(kafka_bootstrap, old, new)
    assert set(ends) == set(STATE_TOPICS)
    assert ends["orders"][0] == 10 and ends["orders"][1] == 10 and ends["signals"][3] == 20
    assert ends["risk.events"][0] == 1
    orders = read_topic(kafka_bootstrap, new + "orders", raw=True)
    by_partition = {p: [r["value"] for r in orders if r["partition"] == p] for p in (0, 1)}
    assert by_partition[0] == [b"order-%d" % i for i in range(0, 20, 2)]
    assert by_partition[1] == [b"order-%d" % i for i in range(1, 20, 2)]
    assert [r["timestamp"] for r in orders if r["partition"] == 1] == [1_000 + i for i in range(1, 20, 2)]

    group = new + "tapeflow-executor-paper"
    commit_group_start(kafka_bootstrap, group, [new + "signals", new + "orders"], {new + "signals": ends["signals"]})
    assert committed(kafka_bootstrap, group, [(new + "signals", 3), (new + "signals", 0), (new + "orders", 1)]) == {
        (new + "signals", 3): 20, (new + "signals", 0): 0, (new + "orders", 1): 0}
    # run again (a rollover resumed after a crash) once the group has moved on: nothing is rewound
    commit_group_start(kafka_bootstrap, group, [new + "signals"], {new + "signals": {3: 5}})
    assert committed(kafka_bootstrap, group, [(new + "signals", 3)]) == {(new + "signals", 3): 20}
