"""Parallel writers: batches commit in any order, offsets only up to the unbroken prefix in the database.

The integration test holds one natural key in an open transaction of its own, so the writer whose
batch contains it waits inside PostgreSQL while the other writers commit later batches. The group's
committed offset must stay below that record, every record below it must be in the table, and a
crash with batches in the database but offsets not committed must still end with each record
exactly once after the restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from sinks.consumer import Batch, SinkConfig, TopicSink
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics
from tests.sinks.test_sink import SERDE, Crash, checksum, expected_rows, make_sink, produce, table_rows, trade
from tests.support.storage import expected_layout, migrate_for_rows, table_layout
from tests.support.waiting import wait_until

TOPIC = "md.trades"


class RecordingSink(TopicSink):
    """The watermark alone: what `_collect` would send and commit, recorded instead of sent."""

    def __init__(self) -> None:
        super().__init__(SinkConfig(topics=[TOPIC], writers=3), "127.0.0.1:9", "dbname=unused", SERDE)
        self.commits: list[dict[tuple[str, int], int]] = []

    def _send_dlq(self, batch: Batch) -> None:
        pass

    def _commit_offsets(self, batches: list[Batch]) -> None:
        newest: dict[tuple[str, int], int] = {}
        for b in batches:
            newest.update(b.offsets)
        self.commits.append(newest)

    def finish(self, generation: int, number: int, offsets: dict[tuple[str, int], int]) -> None:
        batch = Batch(offsets=offsets, count=1)
        batch.seq = (generation, number)
        self._done.put(batch)
        self._collect()


def test_offsets_are_committed_only_up_to_the_first_batch_not_in_the_database():
    sink = RecordingSink()
    p0, p1 = (TOPIC, 0), (TOPIC, 1)
    sink.finish(0, 1, {p0: 20, p1: 7})  # batch 1 committed before batch 0: nothing may be committed yet
    sink.finish(0, 2, {p0: 30})
    assert sink.commits == []
    sink.finish(0, 0, {p0: 10})  # now 0, 1, 2 are all in: one commit of the newest offsets
    assert sink.commits == [{p0: 30, p1: 7}]
    sink.finish(0, 4, {p0: 50})  # batch 3 was given up (never handed back): 4 must wait for ever
    assert sink.commits == [{p0: 30, p1: 7}]
    sink._on_revoke(None, [])  # a rebalance: a new generation, numbering starts again
    sink.finish(0, 3, {p0: 40})  # the old generation's batch finishes late: in the table, offsets left alone
    assert sink.commits == [{p0: 30, p1: 7}]
    sink.finish(1, 0, {p0: 35})
    assert sink.commits == [{p0: 30, p1: 7}, {p0: 35}]
    assert sink.committed_batches == 6  # every batch in the database is counted, committed or not


def test_at_least_one_writer():
    with pytest.raises(ValueError, match="writers"):
        TopicSink(SinkConfig(topics=[TOPIC], writers=0), "127.0.0.1:9", "dbname=unused", SERDE)


def _committed_offset(bootstrap: str, group: str, topic: str, partition: int) -> int:
    c = Consumer(consumer_config(bootstrap, group))
    try:
        return c.committed([TopicPartition(topic, partition)], timeout=10)[0].offset
    finally:
        c.close()


def _offsets_of(bootstrap: str, topic: str, partition: int, n: int) -> dict[int, int]:
    """agg_id -> offset of the first `n` records of one partition (read without a group)."""
    c = Consumer(consumer_config(bootstrap, f"reader-{uuid.uuid4().hex[:8]}"))
    c.assign([TopicPartition(topic, partition, 0)])
    found: dict[int, int] = {}
    deadline = time.monotonic() + 30
    try:
        while len(found) < n and time.monotonic() < deadline:
            for msg in c.consume(num_messages=1000, timeout=0.5):
                if not msg.error():
                    found[SERDE.decode(msg.value())["agg_id"]] = msg.offset()
    finally:
        c.close()
    return found


@pytest.mark.integration
def test_parallel_writers_never_commit_an_offset_ahead_of_the_database(
    kafka_bootstrap, topic_prefix, database, pg_server
):
    migrate_for_rows(database, {"trades": (datetime(2023, 12, 31, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC))})
    assert table_layout(database, "trades") == expected_layout(pg_server.timescaledb)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    topic = topic_prefix + TOPIC
    records = [trade(i) for i in range(6_000)]  # one symbol: one partition, one order of offsets
    produce(kafka_bootstrap, topic, records)
    partition = _partition_of(kafka_bootstrap, topic)
    offsets = _offsets_of(kafka_bootstrap, topic, partition, len(records))
    assert len(offsets) == len(records)
    held = records[2_600]

    def die(batches):
        raise Crash("killed after the database commit, before the offset commit")

    # the chunk of the records' day exists before the blocker's transaction: on TimescaleDB the
    # transaction that creates a chunk holds every other writer of that chunk until it ends
    with psycopg.connect(database) as conn:
        conn.execute(
            "INSERT INTO trades VALUES (%s, %s, -1, 1, 1, 0, 0, now(), to_timestamp(%s / 1000.0), now(), 'BUY')",
            (held["exchange"], held["symbol"], held["trade_time"]),
        )
        conn.commit()
        conn.execute("DELETE FROM trades WHERE agg_id = -1")
        conn.commit()
    # an open transaction of the test holds the record's natural key: its batch waits in PostgreSQL
    blocker = psycopg.connect(database)
    blocker.execute(
        "INSERT INTO trades (exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, "
        "event_time, trade_time, receive_time, taker_side) VALUES (%s, %s, %s, %s, %s, %s, %s, "
        "now(), to_timestamp(%s / 1000.0), now(), %s)",
        (
            held["exchange"],
            held["symbol"],
            held["agg_id"],
            held["price"],
            held["qty"],
            held["first_trade_id"],
            held["last_trade_id"],
            held["trade_time"],
            held["taker_side"],
        ),
    )
    first = make_sink(kafka_bootstrap, topic_prefix, database, writers=3)
    crashed: list[BaseException] = []

    def run_first() -> None:
        try:
            first.run(should_stop=lambda: first.stop_requested)
        except Crash as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run_first, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the other writers store everything after the held batch
            with psycopg.connect(database) as conn:
                if conn.execute("SELECT max(agg_id) FROM trades").fetchone()[0] == records[-1]["agg_id"]:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("later batches were not committed while one batch was waiting")
        time.sleep(1.0)  # let the consumer thread commit whatever the watermark allows
        committed = _committed_offset(kafka_bootstrap, first.config.group_id, topic, partition)
        in_table = {r[2] for r in table_rows(database)}
        below = [agg for agg, off in offsets.items() if off < committed]
        assert committed > 0 and below, "the batches before the held one should have their offsets committed"
        assert held["agg_id"] not in below, "an offset was committed past a batch that is not in the database"
        assert set(below) <= in_table, "an offset was committed for records that are not in the table"
        assert held["agg_id"] not in in_table and len(in_table) < len(records)
        first._commit_offsets = die  # the held batch commits next; the process dies before any offset commit
    finally:
        blocker.rollback()  # the held batch goes on: its COPY stores the record itself
        blocker.close()
    thread.join(60)
    assert not thread.is_alive() and crashed
    assert len(table_rows(database)) == len(records)  # everything is in the database...
    assert _committed_offset(kafka_bootstrap, first.config.group_id, topic, partition) <= offsets[held["agg_id"]]

    second = make_sink(kafka_bootstrap, topic_prefix, database, writers=3)  # ...the same group resumes
    done = threading.Event()
    thread = threading.Thread(target=second.run, daemon=True, kwargs={"should_stop": done.is_set})
    thread.start()
    end = max(offsets.values()) + 1
    deadline = time.monotonic() + 60
    while (
        time.monotonic() < deadline
        and _committed_offset(kafka_bootstrap, second.config.group_id, topic, partition) < end
    ):
        time.sleep(0.5)
    done.set()
    thread.join(60)
    assert not thread.is_alive()
    rows = table_rows(database)
    assert len(rows) == len(records) and checksum(rows) == checksum(expected_rows(records))
    assert second.metrics.records._value.get() >= len(records) - 2_600  # the uncommitted batches came again
    assert _committed_offset(kafka_bootstrap, second.config.group_id, topic, partition) == end


def _partition_of(bootstrap: str, topic: str) -> int:
    """The one partition holding records (the test produces one key). A partition of a topic just
    created may not have its leader yet (NOT_LEADER_FOR_PARTITION): asked again until it has."""
    c = Consumer(consumer_config(bootstrap, f"probe-{uuid.uuid4().hex[:8]}"))

    def watermarks(p: int) -> tuple[int, int] | None:
        try:
            return c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.NOT_LEADER_FOR_PARTITION:
                raise
            return None

    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        for p in sorted(parts):
            low, high = wait_until(lambda p=p: watermarks(p), 30, f"a leader for {topic}[{p}]")
            if high > low:
                return p
    finally:
        c.close()
    raise AssertionError(f"no records in {topic}")
