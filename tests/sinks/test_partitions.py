"""Time partitions on plain PostgreSQL: UTC boundaries, idempotency, the DEFAULT partition, retention."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest

from sinks.partitions import (
    PLANS,
    add_periods,
    adopt_default_rows,
    count_periods,
    default_partition_rows,
    ensure_partitions,
    ensure_partitions_ahead,
    partition_plan,
    period_start,
)
from sinks.retention import drop_expired, resolve_policies
from sinks.tables import TRADES, write_rows
from tapeflow_runtime.settings import TableRetention
from tests.support.storage import expected_layout, table_layout

LAST_MS_OF_JANUARY = datetime(2024, 1, 31, 23, 59, 59, 999000, tzinfo=UTC)
FIRST_OF_FEBRUARY = datetime(2024, 2, 1, tzinfo=UTC)


# --- pure period arithmetic -------------------------------------------------------------------------


def test_period_start_is_the_utc_day_or_month_even_for_other_offsets():
    paris = timezone(timedelta(hours=1))
    just_after_midnight_paris = datetime(2024, 2, 1, 0, 30, tzinfo=paris)  # 2024-01-31T23:30Z
    assert period_start("day", just_after_midnight_paris) == datetime(2024, 1, 31, tzinfo=UTC)
    assert period_start("month", just_after_midnight_paris) == datetime(2024, 1, 1, tzinfo=UTC)
    assert partition_plan("trades").partition_name(just_after_midnight_paris) == "trades_p20240131"
    assert partition_plan("bars_1m").partition_name(FIRST_OF_FEBRUARY) == "bars_1m_p202402"


def test_add_periods_crosses_years_and_leap_days():
    assert add_periods("month", datetime(2023, 12, 1, tzinfo=UTC), 1) == datetime(2024, 1, 1, tzinfo=UTC)
    assert add_periods("month", datetime(2024, 1, 1, tzinfo=UTC), -1) == datetime(2023, 12, 1, tzinfo=UTC)
    assert add_periods("month", datetime(2024, 1, 1, tzinfo=UTC), 14) == datetime(2025, 3, 1, tzinfo=UTC)
    assert add_periods("day", datetime(2024, 2, 28, tzinfo=UTC), 1) == datetime(2024, 2, 29, tzinfo=UTC)
    assert add_periods("day", datetime(2023, 2, 28, tzinfo=UTC), 1) == datetime(2023, 3, 1, tzinfo=UTC)
    assert count_periods("day", LAST_MS_OF_JANUARY, FIRST_OF_FEBRUARY) == 2
    assert count_periods("month", datetime(2023, 11, 15, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)) == 4


def test_window_is_one_period_back_to_premake_ahead():
    plan = partition_plan("trades")
    assert plan.window(datetime(2024, 3, 1, 5, tzinfo=UTC)) == (
        datetime(2024, 2, 29, tzinfo=UTC),
        datetime(2024, 3, 1 + plan.premake, tzinfo=UTC),
    )
    monthly = partition_plan("mark_prices")
    assert monthly.window(datetime(2024, 12, 31, 23, tzinfo=UTC)) == (
        datetime(2024, 11, 1, tzinfo=UTC),
        datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        period_start("day", datetime(2024, 1, 1))


# --- against PostgreSQL -----------------------------------------------------------------------------


@pytest.fixture
def db(plain_db) -> str:
    return plain_db  # plain partitions on any server; hypertables: test_the_servers_layout_needs_no_partitions


def _trade(agg_id: int, when: datetime) -> dict:
    ms = int(when.timestamp() * 1000)
    return {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "agg_id": agg_id,
        "price": 42000.5,
        "qty": 0.01,
        "first_trade_id": agg_id,
        "last_trade_id": agg_id,
        "event_time": ms,
        "trade_time": ms,
        "receive_time": ms + 5,
        "taker_side": "BUY",
    }


def _partition_of(conn, table: str, key_col: str, key) -> str:
    return conn.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE {key_col} = %s", (key,)).fetchone()[0]


def test_rows_either_side_of_a_utc_month_boundary_land_in_different_partitions(db):
    with psycopg.connect(db) as conn:
        conn.execute("SET TimeZone = 'America/New_York'")  # the session's zone must not matter
        created = ensure_partitions(conn, "trades", LAST_MS_OF_JANUARY, FIRST_OF_FEBRUARY)
        assert created == ["trades_p20240131", "trades_p20240201"]
        assert ensure_partitions(conn, "mark_prices", LAST_MS_OF_JANUARY, FIRST_OF_FEBRUARY) == [
            "mark_prices_p202401",
            "mark_prices_p202402",
        ]
        write_rows(
            conn, TRADES, [TRADES.to_row(_trade(1, LAST_MS_OF_JANUARY)), TRADES.to_row(_trade(2, FIRST_OF_FEBRUARY))]
        )
        conn.execute(
            "INSERT INTO mark_prices VALUES ('binance','BTCUSDT',1,1,0,%s,%s,%s), ('binance','BTCUSDT',1,1,0,%s,%s,%s)",
            (LAST_MS_OF_JANUARY,) * 3 + (FIRST_OF_FEBRUARY,) * 3,
        )
        conn.commit()
        assert _partition_of(conn, "trades", "agg_id", 1) == "trades_p20240131"
        assert _partition_of(conn, "trades", "agg_id", 2) == "trades_p20240201"
        assert _partition_of(conn, "mark_prices", "event_time", LAST_MS_OF_JANUARY) == "mark_prices_p202401"
        assert _partition_of(conn, "mark_prices", "event_time", FIRST_OF_FEBRUARY) == "mark_prices_p202402"
        bounds = conn.execute(
            "SELECT range_start, range_end FROM tapeflow_partitions WHERE partition_name = 'mark_prices_p202402'"
        ).fetchone()
    assert bounds == (FIRST_OF_FEBRUARY, datetime(2024, 3, 1, tzinfo=UTC))


def test_ensure_is_idempotent(db):
    with psycopg.connect(db) as conn:
        first = ensure_partitions(
            conn, "features", datetime(2023, 11, 20, tzinfo=UTC), datetime(2024, 2, 3, tzinfo=UTC)
        )
        assert first == ["features_p202311", "features_p202312", "features_p202401", "features_p202402"]
        before = conn.execute(
            "SELECT partition_name, range_start, range_end FROM tapeflow_partitions "
            "WHERE table_name = 'features' ORDER BY 1"
        ).fetchall()
        assert (
            ensure_partitions(conn, "features", datetime(2023, 11, 1, tzinfo=UTC), datetime(2024, 2, 29, tzinfo=UTC))
            == []
        )
        now = conn.execute("SELECT now()").fetchone()[0]
        assert ensure_partitions_ahead(conn, now) == {t: [] for t in PLANS}  # the migration made them
        after = conn.execute(
            "SELECT partition_name, range_start, range_end FROM tapeflow_partitions "
            "WHERE table_name = 'features' ORDER BY 1"
        ).fetchall()
    assert before == after


def test_concurrent_callers_create_each_partition_once(db):
    def run(_):
        with psycopg.connect(db) as conn:
            return ensure_partitions(
                conn, "depth_updates", datetime(2024, 6, 1, tzinfo=UTC), datetime(2024, 6, 10, tzinfo=UTC)
            )

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(4)))
    created = sorted(p for r in results for p in r)
    assert created == [f"depth_updates_p202406{d:02d}" for d in range(1, 11)]


def test_default_partition_catches_out_of_range_rows_until_their_partition_exists(db):
    far = datetime(2031, 7, 4, 12, tzinfo=UTC)
    with psycopg.connect(db) as conn:
        assert write_rows(conn, TRADES, [TRADES.to_row(_trade(7, far)), TRADES.to_row(_trade(8, far))]) == 2
        conn.commit()
        assert _partition_of(conn, "trades", "agg_id", 7) == "trades_default"
        parked = {d.table: d for d in default_partition_rows(conn)}
        assert parked["trades"].rows == 2 and parked["trades"].first_time == far
        assert parked["mark_prices"].rows == 0
        # creating the partition moves the rows out of DEFAULT
        assert adopt_default_rows(conn) == {"trades": ["trades_p20310704"]}
        assert _partition_of(conn, "trades", "agg_id", 7) == "trades_p20310704"
        assert {d.table: d.rows for d in default_partition_rows(conn)}["trades"] == 0
        # and the natural key still deduplicates across the move
        assert write_rows(conn, TRADES, [TRADES.to_row(_trade(7, far))]) == 0
        conn.commit()
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 2


def test_a_wild_range_is_refused(db):
    with psycopg.connect(db) as conn, pytest.raises(ValueError, match="max_partitions"):
        ensure_partitions(conn, "trades", datetime(1970, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))


def test_the_writer_role_can_ensure_but_not_create_tables(db):
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tapeflow_writer")
        assert ensure_partitions(
            conn, "bars_1m", datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
        ) == ["bars_1m_p202501"]
        with pytest.raises(psycopg.errors.RaiseException, match="not a time-partitioned table"):
            conn.execute("SELECT * FROM tapeflow_ensure_partitions('signals', now(), now())")


def test_retention_drops_only_partitions_that_ended_before_the_cutoff(db):
    now = datetime(2024, 6, 15, 10, tzinfo=UTC)
    policies = resolve_policies()
    with psycopg.connect(db) as conn:
        ensure_partitions(conn, "depth_updates", datetime(2024, 6, 5, tzinfo=UTC), now)
        dropped = drop_expired(conn, policies["depth_updates"], now, now)  # 7 days: cutoff 06-08T10:00
        assert dropped == [f"depth_updates_p202406{d:02d}" for d in range(5, 8)]
        left = {
            r[0]
            for r in conn.execute(
                "SELECT partition_name FROM tapeflow_partitions WHERE table_name = 'depth_updates'"
            ).fetchall()
        }
        assert "depth_updates_p20240608" in left and "depth_updates_default" in left
        assert drop_expired(conn, policies["bars_1m"], now, now) == []  # kept forever


def test_noop_without_partitioned_tables(database):
    """TimescaleDB (hypertables) looks like this to the functions: ordinary tables, no registry."""
    with psycopg.connect(database) as conn:
        conn.execute("CREATE TABLE trades (trade_time timestamptz)")
        assert ensure_partitions(conn, "trades", LAST_MS_OF_JANUARY, FIRST_OF_FEBRUARY) == []
        assert (
            drop_expired(
                conn,
                resolve_policies({"trades": TableRetention(keep="1d")})["trades"],
                FIRST_OF_FEBRUARY,
                FIRST_OF_FEBRUARY,
                "plain",
            )
            == []
        )
        assert default_partition_rows(conn) == []
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'trades_p%'").fetchone()[0] == 0


def test_the_servers_layout_needs_no_partitions_on_hypertables(migrated_database, pg_server):
    """What this machine's server gives by default: with TimescaleDB, hypertables that take rows of
    any time without a partition being made (every function here does nothing); without it, time
    partitions that `ensure_partitions` makes and the rows then land in."""
    layout = table_layout(migrated_database, "trades")
    assert layout == expected_layout(pg_server.timescaledb)
    with psycopg.connect(migrated_database) as conn:
        made = ensure_partitions(conn, "trades", LAST_MS_OF_JANUARY, FIRST_OF_FEBRUARY)
        write_rows(
            conn, TRADES, [TRADES.to_row(_trade(1, LAST_MS_OF_JANUARY)), TRADES.to_row(_trade(2, FIRST_OF_FEBRUARY))]
        )
        conn.commit()
        rows = default_partition_rows(conn)
        assert conn.execute("SELECT count(*) FROM trades").fetchone()[0] == 2
    if layout == "hypertable":
        assert made == [] and rows == []
    else:
        assert made == ["trades_p20240131", "trades_p20240201"]
        assert [(r.table, r.rows) for r in rows if r.rows] == []
