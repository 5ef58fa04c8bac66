"""Retention users control, and never at the expense of data loaded on purpose.

- defaults keep every kind of market data; only raw depth expires;
- the `retention:` setting changes keep/compress_after per table, validated in one line;
- plain PostgreSQL: partitions past the configured cutoff are dropped, except those holding a day
  written recently; `tapeflow db retention` shows it and `--apply` does it;
- a backfill older than every default retention, with the sink killed in the middle (a real
  `tapeflow sink` process, real broker, real PostgreSQL), is all still there after the restarted
  sink's maintenance.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

import orjson
import psycopg
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.partitions import PLANS, ensure_partitions
from sinks.retention import (
    DEFAULTS,
    RetentionPolicy,
    apply_retention,
    drop_expired,
    protect_since,
    record_writes,
    resolve_policies,
    retention_report,
)
from tapeflow.cli import app
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.settings import (
    ConfigError,
    TableRetention,
    load_settings,
    parse_duration,
)
from tests.support.waiting import wait_until

SERDE = AvroSerde(FileSchemaRegistry())
DAY = timedelta(days=1)


# --- configuration -----------------------------------------------------------------------------------


def test_defaults_keep_all_market_data_and_expire_only_raw_depth():
    forever = {t for t, p in DEFAULTS.items() if p.keep is None}
    assert forever == {
        "trades",
        "bars_1m",
        "liquidations",
        "mark_prices",
        "market_indicators",
        "features",
        "xv_features",
        "xv_signals",
        "xv_leg_orders",
        "xv_funding_payments",
        "xv_pair_events",
    }
    assert DEFAULTS["depth_updates"].keep == 7 * DAY and DEFAULTS["depth_snapshots"].keep == 30 * DAY
    assert all(p.compress_after is not None for p in DEFAULTS.values())  # compressed where TimescaleDB is
    assert set(DEFAULTS) == set(PLANS)


def test_durations():
    assert parse_duration("90d") == 90 * DAY and parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("2w") == 14 * DAY and parse_duration("1y") == 365 * DAY and parse_duration(3) == 3 * DAY
    assert parse_duration("forever") is None and parse_duration("never") is None
    for bad in ("0d", "ten days", "-1d", "5x"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_the_setting_overrides_per_table_from_yaml(tmp_path, monkeypatch):
    monkeypatch.delenv("TAPEFLOW_RETENTION", raising=False)
    cfg = tmp_path / "t.yaml"
    cfg.write_text("retention:\n  trades: {keep: 90d}\n  depth_updates: {keep: forever, compress_after: 2d}\n")
    policies = resolve_policies(load_settings(cfg).retention)
    assert policies["trades"] == RetentionPolicy("trades", 90 * DAY, DAY, True)
    assert policies["depth_updates"] == RetentionPolicy("depth_updates", None, 2 * DAY, True)
    assert policies["bars_1m"] == DEFAULTS["bars_1m"]


def test_bad_retention_settings_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TAPEFLOW_RETENTION", '{"trades": {"keep": "ninety"}}')
    with pytest.raises(ConfigError, match=r"retention\.trades\.keep.*expected a duration"):
        load_settings()
    monkeypatch.setenv("TAPEFLOW_RETENTION", '{"tardes": {"keep": "90d"}}')
    with pytest.raises(ConfigError, match="retention.tardes: not a time-series table"):
        resolve_policies(load_settings().retention)
    result = CliRunner().invoke(app, ["db", "retention"])
    assert result.exit_code != 0


# --- plain PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def db(plain_db) -> str:
    return plain_db  # plain partitions on any server; TimescaleDB: tests/sinks/test_retention_timescale.py


def _partitions(conn, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT partition_name FROM tapeflow_partitions WHERE table_name = %s "
            "AND NOT is_default ORDER BY range_start",
            (table,),
        ).fetchall()
    ]


@pytest.mark.integration
def test_configured_retention_drops_old_partitions_but_never_recently_written_ones(db):
    now = datetime.now(UTC).replace(microsecond=0)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    policy = resolve_policies({"trades": TableRetention(keep="2d")})["trades"]
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, "trades", today - 10 * DAY, today)
        backfilled = (today - 8 * DAY).date()
        record_writes(conn, "trades", [backfilled])  # a backfill wrote that old day just now
        report = {r.table: r for r in retention_report(conn, {"trades": policy}, now)}["trades"]
        old = [f"trades_p{(today - d * DAY):%Y%m%d}" for d in range(10, 2, -1)]
        protected = f"trades_p{backfilled:%Y%m%d}"
        assert report.keep == "2d" and report.source == "configured" and report.engine == "plain"
        assert report.protected == [protected]
        assert report.expired == [p for p in old if p != protected]
        dropped = drop_expired(conn, policy, now, protect_since(now, now))
        assert dropped == report.expired
        assert protected in _partitions(conn, "trades")
        # the guard is what kept it: a maintenance that protects nothing would drop it
        assert conn.execute(
            "SELECT * FROM tapeflow_droppable_partitions('trades', %s, %s)", (now - 2 * DAY, now + DAY)
        ).fetchall() == [(protected,)]
        # defaults never drop trades, whatever their age
        assert apply_retention(conn, resolve_policies(), now + 3650 * DAY, now + 3650 * DAY)["trades"] == []


@pytest.mark.integration
def test_db_retention_shows_and_applies_the_configuration(db, monkeypatch):
    now = datetime.now(UTC)
    today = datetime(now.year, now.month, now.day, tzinfo=UTC)
    with psycopg.connect(db, autocommit=True) as conn:
        ensure_partitions(conn, "depth_updates", today - 12 * DAY, today)
    monkeypatch.setenv("TAPEFLOW_DATABASE_URL", _url(db))
    monkeypatch.setenv("TAPEFLOW_RETENTION", '{"depth_updates": {"keep": "3d"}}')
    runner = CliRunner()
    shown = runner.invoke(app, ["db", "retention"])
    assert shown.exit_code == 0, shown.output
    lines = {ln.split()[0]: ln.split() for ln in shown.output.splitlines()[2:] if ln.strip()}
    assert shown.output.splitlines()[0] == "storage: plain PostgreSQL (partitions)"
    assert lines["depth_updates"][1:4] == ["3d", "n/a", "configured"]
    assert lines["trades"][1:4] == ["forever", "n/a", "default"]
    expired = int(lines["depth_updates"][6])
    assert expired >= 9  # 12 days back, 3 kept (+ today's partial period)
    as_json = orjson.loads(runner.invoke(app, ["db", "retention", "--json"]).output)
    depth = next(t for t in as_json["tables"] if t["table"] == "depth_updates")
    assert len(depth["expired"]) == expired and depth["protected"] == []
    applied = runner.invoke(app, ["db", "retention", "--apply"])
    assert applied.exit_code == 0 and f"depth_updates: dropped {expired}" in applied.output
    with psycopg.connect(db) as conn:
        assert not [p for p in _partitions(conn, "depth_updates") if p < f"depth_updates_p{today - 4 * DAY:%Y%m%d}"]


def _url(conninfo: str) -> str:
    d = psycopg.conninfo.conninfo_to_dict(conninfo)
    return f"postgresql://{d['user']}:{d['password']}@{d['host']}:{d['port']}/{d['dbname']}"


# --- the backfill that used to vanish ----------------------------------------------------------------

BACKFILL_DAY = datetime(2026, 1, 1, tzinfo=UTC)  # older than every default retention (7 and 30 days)


def _trade(i: int) -> dict:
    t = int((BACKFILL_DAY + timedelta(seconds=2 * i)).timestamp() * 1000)
    return {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "agg_id": 1_000 + i,
        "price": 87_000.0 + i % 50,
        "qty": 0.01,
        "first_trade_id": 3 * i,
        "last_trade_id": 3 * i + 2,
        "event_time": t,
        "trade_time": t,
        "receive_time": t + 4,
        "taker_side": "BUY" if i % 2 else "SELL",
    }


def _depth(i: int) -> dict:
    t = int((BACKFILL_DAY + timedelta(seconds=5 * i)).timestamp() * 1000)
    return {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "first_update_id": 10 * i,
        "final_update_id": 10 * i + 9,
        "prev_final_update_id": 10 * i - 1,
        "event_time": t,
        "transaction_time": t,
        "receive_time": t + 3,
        "bids": [{"price": 86_999.0, "qty": 1.5}],
        "asks": [{"price": 87_001.0, "qty": 0.5}],
    }


def _produce(bootstrap: str, prefix: str, trades: list[dict], depth: list[dict]) -> None:
    p = Producer(producer_config(bootstrap))
    for r in trades:
        p.produce(prefix + "md.trades", key=b"binance:BTCUSDT", value=SERDE.encode("md.trades", r))
    for r in depth:
        p.produce(prefix + "md.depth", key=b"binance:BTCUSDT", value=SERDE.encode("md.depth", r))
    assert p.flush(30) == 0


def _counts(conninfo: str) -> tuple[int, int]:
    with psycopg.connect(conninfo) as conn:
        return (
            conn.execute("SELECT count(*) FROM trades").fetchone()[0],
            conn.execute("SELECT count(*) FROM depth_updates").fetchone()[0],
        )


def _start_sink(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tapeflow", "sink", "--topics", "md.trades,md.depth"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _running(proc: subprocess.Popen):
    """For `wait_until`'s ``alive``: the sink has not exited (its stderr when it has)."""

    def check() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"sink exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")

    return check


@pytest.mark.integration
def test_an_old_backfill_survives_a_sink_restart_and_its_maintenance(kafka_bootstrap, topic_prefix, db, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    trades, depth = [_trade(i) for i in range(20_000)], [_depth(i) for i in range(4_000)]
    env = {
        **os.environ,
        "TAPEFLOW_BROKER": kafka_bootstrap,
        "TAPEFLOW_DATABASE_URL": _url(db),
        "TAPEFLOW_TOPIC_PREFIX": topic_prefix,
        "TAPEFLOW_HOME": str(tmp_path / "home"),
    }
    env.pop("TAPEFLOW_RETENTION", None)
    _produce(kafka_bootstrap, topic_prefix, trades[:10_000], depth[:2_000])
    first = _start_sink(env)
    try:
        wait_until(
            lambda: _counts(db) == (10_000, 2_000), 90, "the sink stored them", interval=0.2, alive=_running(first)
        )
    finally:
        first.send_signal(signal.SIGKILL)  # killed in the middle of the backfill
        first.wait(10)
    _produce(kafka_bootstrap, topic_prefix, trades[10_000:], depth[2_000:])
    second = _start_sink(env)  # its maintenance runs at start: the old code dropped the day here
    try:
        wait_until(
            lambda: _counts(db) == (20_000, 4_000), 90, "the sink stored them", interval=0.2, alive=_running(second)
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    with psycopg.connect(db, autocommit=True) as conn:
        # a later hourly maintenance of a sink started now: still nothing dropped
        now = datetime.now(UTC)
        assert apply_retention(conn, resolve_policies(), now, protect_since(now, now)) == {t: [] for t in DEFAULTS}
        days = {r[0] for r in conn.execute("SELECT day FROM tapeflow_partition_writes").fetchall()}
        assert date(2026, 1, 1) in days
        # depth's 7 days have long passed: only the guard keeps that partition
        assert conn.execute(
            "SELECT * FROM tapeflow_droppable_partitions('depth_updates', %s, %s)", (now - 7 * DAY, now + DAY)
        ).fetchall() == [("depth_updates_p20260101",)]
    assert _counts(db) == (20_000, 4_000)


def _lock_waiter(conn, exclude_pid: int) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s "
        "AND datname = current_database()",
        (exclude_pid,),
    ).fetchone()
    return row[0] if row else None


@pytest.mark.integration
def test_a_reader_of_two_tables_is_never_deadlocked_by_the_sink_making_old_partitions(
    kafka_bootstrap, topic_prefix, db, tmp_path
):
    """The sink makes each table's partitions in a transaction of its own: while it waits for one
    parent's lock it holds no other's. It once made them inside the batch's write transaction
    (depth_updates, then trades), and a reader counting trades, then depth_updates, in one
    transaction deadlocked with it; PostgreSQL aborted the reader (a suite run, 2026-11-25)."""
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    env = {
        **os.environ,
        "TAPEFLOW_BROKER": kafka_bootstrap,
        "TAPEFLOW_DATABASE_URL": _url(db),
        "TAPEFLOW_TOPIC_PREFIX": topic_prefix,
        "TAPEFLOW_HOME": str(tmp_path / "home"),
    }
    env.pop("TAPEFLOW_RETENTION", None)
    _produce(kafka_bootstrap, topic_prefix, [_trade(i) for i in range(3_000)], [_depth(i) for i in range(600)])
    with psycopg.connect(db) as reader, psycopg.connect(db, autocommit=True) as watcher:
        reader_pid = reader.info.backend_pid
        assert reader.execute("SELECT count(*) FROM trades").fetchone()[0] == 0  # trades locked until commit
        sink = _start_sink(env)
        try:
            deadline = time.monotonic() + 90
            while (waiter := _lock_waiter(watcher, reader_pid)) is None:  # the sink, held up by the reader
                assert sink.poll() is None, sink.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the sink never waited for the reader's lock"
                time.sleep(0.05)
            held = watcher.execute(
                "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE l.pid = %s AND l.granted AND l.mode = 'AccessExclusiveLock'",
                (waiter,),
            ).fetchall()
            assert not [name for name, _ in held if name.startswith("depth_updates")], held
            # the second table of the reader's transaction: a deadlock before the fix
            assert reader.execute("SELECT count(*) FROM depth_updates").fetchone()[0] >= 0
            reader.commit()
            wait_until(
                lambda: _counts(db) == (3_000, 600), 90, "the sink stored them", interval=0.2, alive=_running(sink)
            )
        finally:
            sink.terminate()
            sink.wait(30)
