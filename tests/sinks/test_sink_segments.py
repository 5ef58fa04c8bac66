"""The sink follows the embedded stack's topic segments on a real broker into a real PostgreSQL:
through a rollover it adds the next segment's partitions and drops the finished one's without a
group rebalance, so no record is delivered twice; a sink that dies in the middle of the switch
resumes from its committed offsets in the finished segment, then reads the next one."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from schemas.catalogue import topic as topic_spec
from sinks.consumer import SinkConfig, TopicSink
from tapeflow_runtime.epochs import EpochState
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics, existing_partitions
from tapeflow_runtime.offsets import group_committed, true_ends
from tests.sinks.test_sink import SERDE, checksum, count, db, expected_rows, produce, table_rows, trade  # noqa: F401

pytestmark = pytest.mark.integration


def segments(bootstrap: str, base: str) -> tuple[EpochState, str, str]:
    """A stack's epochs in memory: epoch 0 under ``base`` (slot 0), the next one's md.trades (slot 1)
    created as the rollover's open step does; returns (state, old topic, new topic)."""
    for prefix in (base, base + "e1."):
        ensure_topics(bootstrap, prefix=prefix, specs=[topic_spec("md.trades")])
    return EpochState(epoch=0, slot=0, history_since=time.time()), base + "md.trades", base + "e1.md.trades"


def close(bootstrap: str, state: EpochState, old: str) -> dict[tuple[str, int], int]:
    """The rollover's delete step: epoch 0 becomes a finished segment with its true ends."""
    state.step, state.next_slot = "delete", 1
    ends = true_ends(bootstrap, existing_partitions(bootstrap, [old]))
    state.close_current({"md.trades": {p: e for (_, p), e in ends.items()}}, time.time(), None, keep=True)
    return {tp: e for tp, e in ends.items() if e > 0}


def sink_for(bootstrap: str, base: str, conninfo: str, state: EpochState) -> TopicSink:
    cfg = SinkConfig(topics=["md.trades"], topic_prefix=base, group_id=f"{base}tapeflow-sink", batch_rows=500,
                     batch_ms=100, max_backoff_s=1.0, follow=lambda: state.chain(base))
    sink = TopicSink(cfg, bootstrap, conninfo, SERDE)
    sink.follower.interval_s = 0.2  # checks the chain often: the test waits less
    return sink


def records_from(bootstrap: str, positions: dict[tuple[str, int], int]) -> int:
    """How many records lie at or after ``positions`` (-1: none committed, the partition's start): read,
    not computed from offsets (Tansu numbers a batch's records from a base that counts batches)."""
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    try:
        consumer.assign([TopicPartition(t, p, o if o >= 0 else OFFSET_BEGINNING) for (t, p), o in positions.items()])
        todo, n, deadline = set(positions), 0, time.monotonic() + 60
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard((msg.topic(), msg.partition()))
                continue
            n += 1
        assert not todo, f"not read to the end: {sorted(todo)[:3]}"
        return n
    finally:
        consumer.close()


def wait_for(condition, what: str, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_sink_follows_a_rollover_without_a_rebalance_or_a_record_delivered_twice(kafka_bootstrap,
                                                                                         topic_prefix, db):
    state, old, new = segments(kafka_bootstrap, topic_prefix)
    records = [trade(i) for i in range(2_500)]
    produce(kafka_bootstrap, old, records[:1_000])
    sink = sink_for(kafka_bootstrap, topic_prefix, db, state)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, kwargs={"should_stop": stop.is_set}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: count(db) == 1_000, "epoch 0's trades")
        # the switch: producers write to the next epoch, which the sink reads from then on
        state.step, state.next_slot = "switch", 1
        produce(kafka_bootstrap, new, records[1_000:2_000])
        wait_for(lambda: count(db) == 2_000, "the next epoch's first trades")
        assert {tp.topic for tp in sink.assignment} == {old, new}
        ends = close(kafka_bootstrap, state, old)
        produce(kafka_bootstrap, new, records[2_000:])
        # the finished segment is left once committed to its end (what the rollover's sink step waits for)
        wait_for(lambda: count(db) == 2_500 and {tp.topic for tp in sink.assignment} == {new}, "the old segment left")
        committed = group_committed(kafka_bootstrap, f"{topic_prefix}tapeflow-sink", ends)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    rows = table_rows(db)
    assert len(rows) == 2_500 and checksum(rows) == checksum(expected_rows(records))
    assert committed == ends
    # every record was delivered once: no rebalance dropped a batch in flight and read it again
    assert sink.rebalances == 0
    assert sink.metrics.records._value.get() == 2_500


def test_a_sink_that_died_in_the_switch_resumes_in_the_finished_segment(kafka_bootstrap, topic_prefix, db):
    state, old, new = segments(kafka_bootstrap, topic_prefix)
    records = [trade(i) for i in range(4_000)]
    produce(kafka_bootstrap, old, records[:3_000])
    state.step, state.next_slot = "switch", 1
    produce(kafka_bootstrap, new, records[3_000:])
    ends = close(kafka_bootstrap, state, old)

    class Crash(Exception):
        pass

    dying = sink_for(kafka_bootstrap, topic_prefix, db, state)
    real_commit = dying._commit_offsets

    def commit_first_then_die(batches):  # the first batch's offsets land; the process dies before the rest
        real_commit(batches[:1])
        raise Crash("killed after database commits, before their offsets")

    dying._commit_offsets = commit_first_then_die
    with pytest.raises(Crash):
        dying.run()
    group = f"{topic_prefix}tapeflow-sink"
    done = group_committed(kafka_bootstrap, group, existing_partitions(kafka_bootstrap, [old, new]))
    left = records_from(kafka_bootstrap, done)  # what a reader from the committed offsets reads
    assert 0 < left < 4_000
    sink = sink_for(kafka_bootstrap, topic_prefix, db, state)
    stop = threading.Event()
    thread = threading.Thread(target=sink.run, kwargs={"should_stop": stop.is_set}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: count(db) == 4_000 and {tp.topic for tp in sink.assignment} == {new}, "every trade")
        committed = group_committed(kafka_bootstrap, group, ends)
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    rows = table_rows(db)
    assert len(rows) == 4_000 and checksum(rows) == checksum(expected_rows(records))
    assert committed == ends
    # it went on from the committed offsets: nothing before them read again, nothing after them skipped
    assert sink.metrics.records._value.get() == left
    assert sink.rebalances == 0
