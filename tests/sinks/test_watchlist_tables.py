"""The watchlist's trading tables (migration 0017) on a real PostgreSQL, in both layouts: plain monthly
partitions on any server, hypertables where the server has TimescaleDB (the PGlite test in
test_db_schema_timescale.py runs them on TimescaleDB everywhere).

- one record of each topic (xv.signals, xv.orders, xv.funding, xv.pairs), written twice, is stored once;
- xv_pairs_latest is each pair's change with the highest seq, whatever order the changes arrived in;
- through Kafka, the sink stores each re-delivered record once, in the partition of its own time: the
  tables whose time column is named otherwise in the record (order_time <- time_ms, funding_time <-
  funding_time_ms) get their partitions made from the record's field, not the DEFAULT partition.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from confluent_kafka import Producer

from sinks.consumer import SinkConfig, TopicSink
from sinks.tables import table_for_topic, write_rows
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tests.support.execution import SERDE
from tests.support.storage import expected_layout, table_layout
from tests.support.watchlist_trading import (
    HOUR,
    PAIR_ID,
    XV_FUNDING_PAYMENT,
    XV_LEG_ORDER,
    XV_PAIR_EVENT,
    XV_SIGNAL,
)

pytestmark = pytest.mark.integration

SAMPLES = {
    "xv.signals": XV_SIGNAL,
    "xv.orders": XV_LEG_ORDER,
    "xv.funding": XV_FUNDING_PAYMENT,
    "xv.pairs": XV_PAIR_EVENT,
}
TABLES = ("xv_signals", "xv_leg_orders", "xv_funding_payments", "xv_pair_events")


def decoded(topic: str, record: dict) -> dict:
    """`record` as the sink sees it: encoded with the topic's registered schema and decoded."""
    return SERDE.decode(SERDE.encode(topic, record))


def counts(conn) -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # nosec B608 # fixed names


@pytest.fixture(params=["plain", "server"])
def db(request, new_migrated_database, pg_server) -> str:
    """Migrated with plain partitions (any server), and as a default migration lays it out on this
    server (hypertables where it has TimescaleDB, plain partitions where not): both layouts first-class."""
    if request.param == "plain":
        database = new_migrated_database(engine_extension=None)
        layout = "partitioned"
    else:
        database = new_migrated_database()
        layout = expected_layout(pg_server.timescaledb)
    assert {table_layout(database, t) for t in TABLES} == {layout}
    return database


def test_each_record_written_twice_is_stored_once(db):
    with psycopg.connect(db) as conn:
        for topic, record in SAMPLES.items():
            spec = table_for_topic(topic)
            row = spec.to_row(decoded(topic, record))
            assert write_rows(conn, spec, [row]) == 1, topic
            assert write_rows(conn, spec, [row, spec.to_row(decoded(topic, record))]) == 0, topic  # re-delivered
        conn.commit()
        assert counts(conn) == dict.fromkeys(TABLES, 1)
        leg = conn.execute("SELECT client_order_id, side, fee, order_time, book_time FROM xv_leg_orders").fetchone()
        paid = conn.execute("SELECT paid, funding_time FROM xv_funding_payments").fetchone()
        imputed = conn.execute("SELECT imputed FROM xv_signals").fetchone()[0]
    assert leg[:2] == (XV_LEG_ORDER["client_order_id"], "SELL") and float(leg[2]) == XV_LEG_ORDER["fee"]
    assert [int(t.timestamp() * 1000) for t in leg[3:]] == [XV_LEG_ORDER["time_ms"], XV_LEG_ORDER["book_time_ms"]]
    assert float(paid[0]) == XV_FUNDING_PAYMENT["paid"]
    assert int(paid[1].timestamp() * 1000) == XV_FUNDING_PAYMENT["funding_time_ms"]
    assert imputed == XV_SIGNAL["imputed"]


def _pair_event(pair_id: str, seq: int, status: str, **changes) -> dict:
    t0 = XV_PAIR_EVENT["opened_ms"]
    return dict(XV_PAIR_EVENT, pair_id=pair_id, seq=seq, status=status, event_time=t0 + (seq - 1) * HOUR, **changes)


def test_pairs_latest_is_the_highest_seq_of_each_pair(db):
    spec = table_for_topic("xv.pairs")
    other = "pair-other"
    events = [  # out of order on purpose: a later change may be stored before an earlier one
        XV_PAIR_EVENT,  # PAIR_ID seq 3: closed
        _pair_event(PAIR_ID, 1, "open", close_reason=None, closed_ms=None, exit_spread=None),
        _pair_event(other, 2, "unwinding", reason="binance: no book", close_reason=None, closed_ms=None),
        _pair_event(PAIR_ID, 2, "open", close_reason=None, closed_ms=None, exit_spread=None),
        _pair_event(other, 1, "opening", close_reason=None, closed_ms=None),
    ]
    with psycopg.connect(db) as conn:
        assert write_rows(conn, spec, [spec.to_row(decoded("xv.pairs", e)) for e in events]) == 5
        assert write_rows(conn, spec, [spec.to_row(decoded("xv.pairs", events[1]))]) == 0
        conn.commit()
        latest = conn.execute(
            "SELECT pair_id, seq, status, close_reason, closed_time IS NULL, net_usd "
            "FROM xv_pairs_latest ORDER BY pair_id"
        ).fetchall()
    assert sorted(r[:5] for r in latest) == sorted(
        [(PAIR_ID, 3, "closed", "convergence", False), (other, 2, "unwinding", None, True)]
    )
    assert [float(r[5]) for r in latest if r[0] == PAIR_ID] == [XV_PAIR_EVENT["net_usd"]]


def test_the_sink_stores_each_redelivered_record_once_in_its_own_partition(kafka_bootstrap, topic_prefix, plain_db):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    producer = Producer(producer_config(kafka_bootstrap))
    for _ in range(2):  # everything published twice (a producer restart re-publishing)
        for topic, record in SAMPLES.items():
            producer.produce(topic_prefix + topic, key=record["coin"].encode(), value=SERDE.encode(topic, record))
    assert producer.flush(15) == 0
    sink = TopicSink(
        SinkConfig(
            topics=list(SAMPLES),
            topic_prefix=topic_prefix,
            group_id=f"{topic_prefix}sink",
            batch_rows=500,
            batch_ms=100,
            max_backoff_s=1.0,
        ),
        kafka_bootstrap,
        plain_db,
        SERDE,
    )
    deadline = time.monotonic() + 60
    thread = threading.Thread(
        target=sink.run,
        daemon=True,
        kwargs={"should_stop": lambda: sink.metrics.records._value.get() >= 8 or time.monotonic() > deadline},
    )
    thread.start()
    thread.join(90)
    assert not thread.is_alive()
    with psycopg.connect(plain_db) as conn:
        assert counts(conn) == dict.fromkeys(TABLES, 1)
        in_default = {t: conn.execute(f"SELECT count(*) FROM {t}_default").fetchone()[0] for t in TABLES}  # nosec B608
    assert in_default == dict.fromkeys(TABLES, 0)  # each in its month's partition (February 2024)
