"""IdleFetchCycle: an idle consumer's fetches paused on the embedded broker, one let through per cycle,
nothing lost or reordered."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tapeflow_runtime.idle_fetch import IdleFetchCycle
from tapeflow_runtime.kafka_client import consumer_config


class Recorder:
    """The two calls IdleFetchCycle makes of a confluent-kafka consumer, recorded."""

    def __init__(self):
        self.paused: set[tuple[str, int]] = set()
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def pause(self, parts):
        keys = [(tp.topic, tp.partition) for tp in parts]
        self.paused.update(keys)
        self.calls.append(("pause", keys))

    def resume(self, parts):
        keys = [(tp.topic, tp.partition) for tp in parts]
        self.paused.difference_update(keys)
        self.calls.append(("resume", keys))


def _cycle(clock):
    return IdleFetchCycle(every_s=10.0, open_s=2.0, idle_after_s=5.0, monotonic=lambda: clock[0])


def test_an_idle_consumer_is_paused_opened_once_per_cycle_and_woken_by_a_record():
    clock = [0.0]
    cycle, consumer = _cycle(clock), Recorder()
    assignment = [TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)]

    def at(t, records=0):
        clock[0] = t
        cycle.saw(records)
        cycle.step(consumer, assignment, own_paused={("b", 0)})
        return set(consumer.paused)

    assert at(1.0, records=3) == set()
    assert at(5.9) == set()  # 4.9 s without a record: not idle yet
    # idle: everything paused but the partition the service paused itself (never touched here)
    assert at(6.0) == {("a", 0), ("a", 1)} and cycle.idle and cycle.idle_periods == 1
    assert at(15.9) == {("a", 0), ("a", 1)}
    assert at(16.0) == set() and cycle.openings == 1  # the cycle's fetch
    assert at(17.9) == set()
    assert at(18.0) == {("a", 0), ("a", 1)}  # closed again until 28 s
    assert at(27.0) == {("a", 0), ("a", 1)}
    assert at(28.0) == set() and cycle.openings == 2
    assert at(28.5, records=1) == set() and not cycle.idle  # a record during the opening: awake
    assert at(33.0) == set()  # 4.5 s since that record
    assert at(33.5) == {("a", 0), ("a", 1)} and cycle.idle_periods == 2
    assert ("resume", [("b", 0)]) not in consumer.calls


def test_a_rebalance_forgets_what_was_paused():
    clock = [0.0]
    cycle, consumer = _cycle(clock), Recorder()
    clock[0] = 6.0
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert cycle.idle
    cycle.forget()  # on_revoke / on_assign: librdkafka assigns the new partitions unpaused
    assert not cycle.idle
    clock[0] = 10.0
    cycle.step(consumer, [TopicPartition("a", 1)])  # 4 s since the rebalance: not idle yet
    assert not cycle.idle and consumer.paused == {("a", 0)}  # the revoked one's pause is librdkafka's to drop
    clock[0] = 11.0
    cycle.step(consumer, [TopicPartition("a", 1)])
    assert cycle.idle and ("a", 1) in consumer.paused


def test_bad_cycle_lengths_are_refused():
    with pytest.raises(ValueError, match="open_s"):
        IdleFetchCycle(every_s=1.0, open_s=1.0)


def test_records_sent_while_the_consumer_is_idle_arrive_once_and_in_order(kafka_bootstrap):
    """The real broker: a consumer left idle is paused, so what is produced then is fetched only when
    the cycle opens or wakes it: every record still arrives, once, in order."""
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(30)
    consumer = Consumer(consumer_config(kafka_bootstrap, f"g-{topic}", **{"fetch.wait.max.ms": 100}))
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    cycle = IdleFetchCycle(every_s=1.0, open_s=0.5, idle_after_s=0.5)
    consumer.subscribe([topic], on_assign=lambda c, parts: cycle.forget())
    got: dict[int, list[int]] = {0: [], 1: []}
    sent = 0

    def poll_until(condition, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out: {got}, idle={cycle.idle}"
            msgs = [m for m in consumer.consume(num_messages=100, timeout=0.05) if not m.error()]
            for m in msgs:
                got[m.partition()].append(int(m.value()))
            cycle.saw(len(msgs))
            cycle.step(consumer, consumer.assignment())

    try:
        poll_until(lambda: len(consumer.assignment()) == 2)
        for burst in range(3):
            poll_until(lambda: cycle.idle)  # paused: nothing is fetched now
            for _ in range(20):
                producer.produce(topic, value=str(sent).encode(), partition=sent % 2)
                sent += 1
            producer.flush(10)
            poll_until(lambda: sum(map(len, got.values())) == sent)
        poll_until(lambda: cycle.idle)
        assert cycle.idle_periods >= 4
        for partition, values in got.items():
            assert values == [v for v in range(sent) if v % 2 == partition]  # once each, in order
    finally:
        consumer.close()
