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


def _cycle(clock, first_idle_after_s=5.0):
    return IdleFetchCycle(every_s=10.0, open_s=2.0, idle_after_s=5.0, monotonic=lambda: clock[0],
                          first_idle_after_s=first_idle_after_s)


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


def test_a_rebalance_resumes_what_it_paused_and_gets_back_and_starts_counting_afresh():
    """librdkafka keeps an application's pause on a partition across a rebalance that hands it back:
    on_assign's forget() must resume ours, or that partition starves (a sink re-subscribes at every
    rollover)."""
    clock = [0.0]
    cycle, consumer = _cycle(clock), Recorder()
    clock[0] = 6.0
    cycle.step(consumer, [TopicPartition("a", 0), TopicPartition("a", 1)], own_paused={("a", 1)})
    assert cycle.idle and consumer.paused == {("a", 0)}
    consumer.paused.add(("a", 1))  # the service's own pause, which it resumes itself
    cycle.forget(consumer, [TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)])
    assert not cycle.idle and consumer.paused == {("a", 1)}  # ours resumed, the service's left alone
    clock[0] = 10.0
    cycle.step(consumer, [TopicPartition("b", 0)])  # 4 s since the rebalance: not idle yet
    assert not cycle.idle
    clock[0] = 11.0
    cycle.step(consumer, [TopicPartition("b", 0)])
    assert cycle.idle and ("b", 0) in consumer.paused


def test_time_spent_held_by_the_service_is_not_silence():
    clock = [0.0]
    cycle, consumer = _cycle(clock), Recorder()
    clock[0] = 4.0
    cycle.busy()  # e.g. 4 s waiting on a slow database writer with the partitions paused
    clock[0] = 8.0
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert not cycle.idle  # 4 s since, not 8
    clock[0] = 9.0
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert cycle.idle


def test_a_consumer_that_never_received_a_record_waits_longer_before_going_idle():
    """A restarted service waiting for its first records (a broker that came back empty) keeps fetching
    as usual for a minute: its first records must not wait a cycle."""
    clock = [0.0]
    cycle, consumer = _cycle(clock, first_idle_after_s=60.0), Recorder()
    clock[0] = 59.0
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert not cycle.idle
    clock[0] = 60.0
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert cycle.idle
    clock[0] = 61.0
    cycle.saw(1)
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert not cycle.idle
    clock[0] = 66.0  # records seen: 5 s of silence from now on is idle
    cycle.step(consumer, [TopicPartition("a", 0)])
    assert cycle.idle


def test_an_assignment_given_as_a_callable_is_asked_only_when_a_pause_or_resume_needs_it():
    clock = [0.0]
    cycle, consumer = _cycle(clock), Recorder()
    asked = []

    def assignment():
        asked.append(clock[0])
        return [TopicPartition("a", 0)]

    for t in (1.0, 2.0, 3.0):  # records flowing: nothing to pause, the consumer is not asked
        clock[0] = t
        cycle.saw(1)
        cycle.step(consumer, assignment)
    for t in (4.0, 8.0, 9.0, 12.0):  # 8.0: idle, paused; 9.0 and 12.0: waiting for the opening at 18.0
        clock[0] = t
        cycle.saw(0)
        cycle.step(consumer, assignment)
    assert asked == [8.0] and consumer.paused == {("a", 0)}
    clock[0] = 18.0
    cycle.step(consumer, assignment)
    assert asked == [8.0, 18.0] and consumer.paused == set()


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
    cycle = IdleFetchCycle(every_s=1.0, open_s=0.5, idle_after_s=0.5, first_idle_after_s=0.5)
    consumer.subscribe([topic], on_assign=lambda c, parts: cycle.forget(c, parts))
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


def test_a_partition_paused_while_idle_is_read_again_after_a_resubscription(kafka_bootstrap):
    """The real broker and librdkafka: a partition paused by the cycle stays paused through a rebalance
    that hands it back (measured: without the resume in forget() its record never arrived), so the
    sink's re-subscription at a rollover starved it until the supervisor restarted the sink."""
    first, second = (f"idle-{uuid.uuid4().hex[:8]}" for _ in range(2))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(first, 1, 1), NewTopic(second, 1, 1)]).values():
        future.result(30)
    consumer = Consumer(consumer_config(kafka_bootstrap, f"g-{first}", **{"fetch.wait.max.ms": 100}))
    cycle = IdleFetchCycle(every_s=600.0, open_s=1.0, idle_after_s=0.2, first_idle_after_s=0.2)  # no opening
    assigned: list[list[str]] = []

    def on_assign(c, parts):
        assigned.append(sorted(tp.topic for tp in parts))
        cycle.forget(c, parts)

    def poll_until(condition, timeout_s=60.0):
        got = []
        deadline = time.monotonic() + timeout_s
        while not condition(got):
            assert time.monotonic() < deadline, f"timed out: got {got}, assignments {assigned}"
            msgs = [m for m in consumer.consume(num_messages=10, timeout=0.05) if not m.error()]
            got += [m.topic() for m in msgs]
            cycle.saw(len(msgs))
            cycle.step(consumer, consumer.assignment())
        return got

    try:
        consumer.subscribe([first], on_assign=on_assign)
        poll_until(lambda _: len(assigned) == 1 and cycle.idle)  # idle: the first topic's partition paused
        consumer.subscribe([first, second], on_assign=on_assign)  # what the sink does at a rollover
        poll_until(lambda _: len(assigned) == 2)
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
        producer.produce(first, value=b"kept")
        producer.produce(second, value=b"new")
        assert producer.flush(10) == 0
        got = poll_until(lambda got: {first, second} <= set(got))
        assert sorted(got) == sorted([first, second])
    finally:
        consumer.close()
