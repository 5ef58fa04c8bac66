"""The sink through a real broker into a real PostgreSQL: each record exactly once per natural key.

Covers re-delivery of whole batches, a crash between the database commit and the offset commit,
a database outage in the middle of the stream, and malformed records (DLQ + pipeline_errors).
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Producer

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.consumer import SinkConfig, TopicSink
from tapeflow.stack.postgres import EmbeddedPostgres
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.storage import expected_layout, migrate_for_rows, table_layout

pytestmark = pytest.mark.integration

SERDE = AvroSerde(FileSchemaRegistry())
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def trade(i: int, symbol: str = "BTCUSDT") -> dict:
    return {
        "exchange": "binance",
        "symbol": symbol,
        "agg_id": 10_000 + i,
        "price": 42_000.0 + (i % 97) * 0.1,
        "qty": 0.001 * (1 + i % 13),
        "first_trade_id": 50_000 + 2 * i,
        "last_trade_id": 50_001 + 2 * i,
        "event_time": T0 + i * 10,
        "trade_time": T0 + i * 10,
        "receive_time": T0 + i * 10 + 3,
        "taker_side": "SELL" if i % 3 else "BUY",
    }


def produce(bootstrap: str, topic: str, records: list[dict], raw: list[bytes] = ()) -> None:
    p = Producer(producer_config(bootstrap))
    for r in records:
        p.produce(topic, key=f"binance:{r['symbol']}".encode(), value=SERDE.encode("md.trades", r))
    for value in raw:
        p.produce(topic, key=b"binance:BTCUSDT", value=value)
    assert p.flush(15) == 0


def checksum(rows) -> str:
    h = hashlib.sha256()
    for r in sorted(rows):
        h.update(repr(r).encode())
    return h.hexdigest()


def table_rows(conninfo: str) -> list[tuple]:
    """The trades as stored, trade_time back in Unix milliseconds (exact: integer timedelta arithmetic)."""
    unix_zero = datetime(1970, 1, 1, tzinfo=UTC)
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT exchange, symbol, agg_id, price, qty, first_trade_id, last_trade_id, "
            "trade_time, taker_side FROM trades"
        ).fetchall()
    return [(*r[:7], (r[7] - unix_zero) // timedelta(milliseconds=1), r[8]) for r in rows]


def expected_rows(records: list[dict]) -> list[tuple]:
    return [
        (
            r["exchange"],
            r["symbol"],
            r["agg_id"],
            r["price"],
            r["qty"],
            r["first_trade_id"],
            r["last_trade_id"],
            r["trade_time"],
            r["taker_side"],
        )
        for r in records
    ]


def run_sink_until(sink: TopicSink, done, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    thread = threading.Thread(
        target=sink.run, daemon=True, kwargs={"should_stop": lambda: done() or time.monotonic() > deadline}
    )
    thread.start()
    thread.join(timeout + 30)
    assert not thread.is_alive()


def count(conninfo: str, table: str = "trades") -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


#: the time range of the trades these tests write
TRADES_RANGE = {"trades": (datetime(2023, 12, 31, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC))}


@pytest.fixture
def db(database, pg_server):
    """Migrated with the server's layout: hypertables with TimescaleDB, time partitions without."""
    migrate_for_rows(database, TRADES_RANGE)
    assert table_layout(database, "trades") == expected_layout(pg_server.timescaledb)
    return database


def make_sink(bootstrap, prefix, conninfo, **kw) -> TopicSink:
    cfg = SinkConfig(
        topics=["md.trades"],
        topic_prefix=prefix,
        group_id=f"{prefix}sink",
        batch_rows=500,
        batch_ms=100,
        max_backoff_s=1.0,
        **kw,
    )
    return TopicSink(cfg, bootstrap, conninfo, SERDE)


class Crash(Exception):
    """A sink killed on purpose in the middle of its work (the crash tests)."""


def topic_of_trades(bootstrap: str, prefix: str, n: int) -> list[dict]:
    """``n`` trades produced to a fresh ``md.trades``; returns them."""
    ensure_topics(bootstrap, prefix=prefix)
    records = [trade(i) for i in range(n)]
    produce(bootstrap, prefix + "md.trades", records)
    return records


def test_same_batch_delivered_twice_lands_once(kafka_bootstrap, topic_prefix, db):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    records = [trade(i) for i in range(2_000)]
    produce(kafka_bootstrap, topic_prefix + "md.trades", records + records[:700])  # 700 duplicates
    sink = make_sink(kafka_bootstrap, topic_prefix, db)
    run_sink_until(sink, lambda: sink.metrics.records._value.get() >= 2_700)
    rows = table_rows(db)
    assert len(rows) == 2_000 and checksum(rows) == checksum(expected_rows(records))


def test_crash_between_db_commit_and_offset_commit(kafka_bootstrap, topic_prefix, db):
    records = topic_of_trades(kafka_bootstrap, topic_prefix, 1_500)
    crashing = make_sink(kafka_bootstrap, topic_prefix, db)

    def die(batch):
        raise Crash("killed after the database commit, before the offset commit")

    crashing._commit_offsets = die
    with pytest.raises(Crash):
        crashing.run()
    first = count(db)
    assert 0 < first <= 1_500  # the first batch is in the table, its offsets are not committed

    sink = make_sink(kafka_bootstrap, topic_prefix, db)  # same group: resumes from the committed offsets
    run_sink_until(sink, lambda: count(db) >= 1_500 and sink.metrics.records._value.get() >= 1_500)
    rows = table_rows(db)
    assert len(rows) == 1_500 and checksum(rows) == checksum(expected_rows(records))
    assert sink.metrics.records._value.get() >= 1_500  # the crashed batch was delivered again


def test_a_failing_decode_stage_ends_the_sink_with_its_error_and_loses_nothing(kafka_bootstrap, topic_prefix, db):
    """The sealer (the thread that decodes batches for the writers) failing fails the sink: `run` raises its
    error instead of waiting for ever on writers that get nothing, no offset passes what is stored, and the
    next run stores every record exactly once."""
    records = topic_of_trades(kafka_bootstrap, topic_prefix, 1_500)
    failing = make_sink(kafka_bootstrap, topic_prefix, db)
    real_seal, sealed = failing._seal, []

    def seal(batch):
        if sealed:
            raise Crash("the decode stage failed")
        sealed.append(batch.count)
        real_seal(batch)

    failing._seal = seal
    raised: list[BaseException] = []

    def run() -> None:
        try:
            failing.run()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the sink hung after its decode stage failed"
    assert len(raised) == 1 and isinstance(raised[0], Crash)
    assert count(db) <= sealed[0]  # only the batch decoded before the failure can be in the table

    sink = make_sink(kafka_bootstrap, topic_prefix, db)  # same group: resumes from what was committed
    run_sink_until(sink, lambda: count(db) >= 1_500)
    rows = table_rows(db)
    assert len(rows) == 1_500 and checksum(rows) == checksum(expected_rows(records))


def test_malformed_records_go_to_the_dlq_and_pipeline_errors(kafka_bootstrap, topic_prefix, db, read_topic):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    records = [trade(i) for i in range(300)]
    produce(kafka_bootstrap, topic_prefix + "md.trades", records, raw=[b"garbage", b"\x00\x00\x00\x00\x01\xff"])
    sink = make_sink(kafka_bootstrap, topic_prefix, db)
    run_sink_until(sink, lambda: sink.metrics.records._value.get() >= 302)
    assert count(db) == 300
    with psycopg.connect(db) as conn:
        errors = conn.execute("SELECT source_topic, raw_value, error, stage FROM pipeline_errors").fetchall()
    assert sorted(e[1] for e in errors) == sorted([b"garbage", b"\x00\x00\x00\x00\x01\xff"])
    assert all(e[0] == topic_prefix + "md.trades" and e[3] == "sink" and e[2] for e in errors)
    dlq = [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + "dlq.md", idle_s=1)]
    assert sorted(d["value"] for d in dlq) == sorted([b"garbage", b"\x00\x00\x00\x00\x01\xff"])
    # what the alert rules read: errors per table and kind, dead letters per DLQ topic and reason
    sample = sink.metrics.registry.get_sample_value
    assert sample("tapeflow_sink_errors_total", {"table": "trades", "kind": "decode"}) == 2
    assert sample("tapeflow_sink_errors_total", {"table": "trades", "kind": "database"}) == 0  # present at 0
    assert sample("tapeflow_sink_dlq_messages_total", {"topic": "dlq.md", "reason": "sink"}) == 2


def test_database_down_for_30s_mid_stream_loses_nothing(kafka_bootstrap, topic_prefix, server_tmp_path):
    """A dedicated PostgreSQL that the test stops for 30 s while records keep arriving (either layout:
    whatever this machine's PostgreSQL gives)."""
    home = server_tmp_path / "pg"
    paths = StackPaths(home)
    paths.ensure()
    from tapeflow.stack.process import free_port

    # a fixed port: the sink's connection string must stay valid across the restart
    settings = Settings(home=home, broker=None, database_url=None, database_port=free_port())
    service = EmbeddedPostgres(settings, paths)
    service.extra_options = {"fsync": "off"}
    sup = Supervisor(settings, paths, say=lambda m: None, services=[service], steps=[])
    sup.start_all()
    address = sup.addresses["database"]
    conninfo = service.admin_conninfo(address, "tapeflow")
    migrate_for_rows(conninfo, TRADES_RANGE)
    assert table_layout(conninfo, "trades") == expected_layout("timescaledb" in service.preloaded)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    records = [trade(i) for i in range(6_000)]
    sink = make_sink(kafka_bootstrap, topic_prefix, conninfo)
    thread = threading.Thread(target=sink.run, daemon=True, kwargs={"should_stop": lambda: sink.stop_requested})
    try:
        produce(kafka_bootstrap, topic_prefix + "md.trades", records[:2_000])
        thread.start()
        deadline = time.monotonic() + 30
        while count(conninfo) < 2_000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count(conninfo) == 2_000
        sup.stop_all()  # the database goes away...
        produce(kafka_bootstrap, topic_prefix + "md.trades", records[2_000:4_000])
        down_since = time.monotonic()
        lag = 0.0
        while time.monotonic() - down_since < 20 and lag == 0:  # the lag gauge shows the backlog meanwhile
            time.sleep(0.5)
            lag = sum(
                s.value
                for m in sink.metrics.registry.collect()
                for s in m.samples
                if s.name == "tapeflow_sink_consumer_lag_messages" and s.labels["group"] == sink.config.group_id
            )
        time.sleep(max(0.0, 30 - (time.monotonic() - down_since)))  # ...for 30 s, while records keep arriving
        sup.start_all()
        produce(kafka_bootstrap, topic_prefix + "md.trades", records[4_000:])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if count(conninfo) >= 6_000:
                    break
            except psycopg.OperationalError:
                pass
            time.sleep(0.5)
    finally:
        sink.stop_requested = True
        thread.join(60)
        sup.stop_all()
        sup.start_all()
    try:
        rows = table_rows(conninfo)
        assert len(rows) == 6_000 and checksum(rows) == checksum(expected_rows(records))
        assert sink.metrics.db_retries._value.get() >= 1
        assert (
            sink.metrics.registry.get_sample_value(
                "tapeflow_sink_errors_total", {"table": "trades", "kind": "database"}
            )
            >= 1
        )
        assert lag > 0, "the lag gauge did not grow while the database was down"
    finally:
        sup.stop_all()


def test_a_writer_in_backoff_retries_as_soon_as_another_writer_reaches_the_database(db):
    """Two writers fail while the database is away; the first to get through must wake the other,
    or its older batch stays out of the table for the rest of its backoff (up to 10 s) while newer
    batches land: a hole that closes late, which a full database disk showed once in CI. Here writer 0
    fails on a real refused connection with a first backoff of at least 30 s; the database "comes
    back" (the connection string now names the test's PostgreSQL) and writer 1 writes a batch."""
    from sinks.consumer import Batch
    from tapeflow.stack.process import free_port

    dead = f"postgresql://tapeflow@127.0.0.1:{free_port()}/tapeflow?connect_timeout=2"  # nothing listens
    sink = TopicSink(
        SinkConfig(topics=["md.trades"], first_backoff_s=60.0, max_backoff_s=60.0), "127.0.0.1:9", dead, SERDE
    )  # the broker is never reached: the writers are called directly
    first = threading.Thread(target=sink.writer.flush, args=(Batch(), 0), daemon=True)
    first.start()
    deadline = time.monotonic() + 30
    while sink.metrics.db_retries._value.get() < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.metrics.db_retries._value.get() == 1 and sink.database_down, sink.database_error
    assert "Connection refused" in sink.database_error or "connection" in sink.database_error.lower()
    sink.writer.conninfo = db  # the database is back
    sink.writer.flush(Batch(), 1)  # writer 1 gets through
    assert not sink.database_down
    first.join(20)  # its own backoff would end 30-60 s after its failure
    assert not first.is_alive(), "the writer in backoff did not retry when the database came back"
    assert sink.metrics.db_retries._value.get() == 1  # and its retry succeeded


def test_an_aborted_transactions_records_never_reach_the_table(kafka_bootstrap, topic_prefix, database):
    """bars.1m is written in transactions by the engine: a bar of an aborted transaction (a worker that
    died or was fenced mid-batch) must never be stored, whichever way the sink fetches; the bars of the
    committed transactions around it are."""
    migrate_for_rows(database, {"bars_1m": (datetime(2023, 12, 31, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC))})
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    topic = topic_prefix + "bars.1m"

    def bar(minute: int) -> bytes:
        start = T0 + minute * 60_000
        return SERDE.encode(
            "bars.1m",
            {
                "exchange": "binance",
                "symbol": "BTCUSDT",
                "open_time": start,
                "close_time": start + 59_999,
                "open": 1.0,
                "high": 2.0,
                "low": 0.5,
                "close": 1.5,
                "volume": 3.0,
                "buy_volume": 2.0,
                "sell_volume": 1.0,
                "quote_volume": 4.5,
                "vwap": 1.5,
                "trade_count": 7,
                "first_agg_id": minute * 10,
                "last_agg_id": minute * 10 + 6,
            },
        )

    tx = Producer(producer_config(kafka_bootstrap, **{"transactional.id": topic_prefix + "engine-test"}))
    tx.init_transactions(30)
    for minutes, commit in (((0, 1), True), ((2, 3), False), ((4,), True)):
        tx.begin_transaction()
        for m in minutes:
            tx.produce(topic, key=b"binance:BTCUSDT", value=bar(m), partition=0)
        assert tx.flush(15) == 0
        (tx.commit_transaction if commit else tx.abort_transaction)(30)

    cfg = SinkConfig(
        topics=["bars.1m"],
        topic_prefix=topic_prefix,
        group_id=f"{topic_prefix}sink",
        batch_rows=500,
        batch_ms=100,
        max_backoff_s=1.0,
    )
    sink = TopicSink(cfg, kafka_bootstrap, database, SERDE)
    run_sink_until(sink, lambda: count(database, "bars_1m") >= 3, timeout=30)
    with psycopg.connect(database) as conn:
        stored = [r[0] for r in conn.execute("SELECT first_agg_id FROM bars_1m ORDER BY open_time").fetchall()]
    assert stored == [0, 10, 40]
