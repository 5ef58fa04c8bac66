"""The sink schema on a real PostgreSQL: tables, partitions, keys, types, privileges and roll-up views.

On the plain-PostgreSQL branch every table is checked end to end; on a TimescaleDB server (the
Docker image, or a machine whose PostgreSQL has TimescaleDB) the same assertions hold except where
noted (hypertables, no partitions).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest

from sinks.migrate import migrate
from sinks.partitions import PLANS, partition_plan
from sinks.tables import TABLES
from tests.support.storage import table_layout

pytestmark = pytest.mark.integration

TABLE_NAMES = set(TABLES) | {"backtest_runs", "backtest_trades", "ui_actions", "trade_levels_backfill"}
VIEW_NAMES = {"bars_5m", "bars_1h", "cvd_1m", "trades_closed", "xv_pairs_latest"}


@pytest.fixture
def db(migrated_database) -> str:
    return migrated_database


def _relkinds(conn) -> dict[str, str]:
    rows = conn.execute(
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND NOT c.relispartition"
    ).fetchall()
    return dict(rows)


def test_migrating_twice_creates_every_table_once_with_current_partitions(database, pg_server):
    first = migrate(database)
    second = migrate(database)
    assert second.applied == [] and set(second.already) == set(first.applied)
    with psycopg.connect(database) as conn:
        kinds = _relkinds(conn)
        assert TABLE_NAMES <= set(kinds), TABLE_NAMES - set(kinds)
        assert VIEW_NAMES <= set(kinds), VIEW_NAMES - set(kinds)
        if pg_server.timescaledb:
            assert all(kinds[t] == "r" for t in PLANS)  # hypertables are ordinary tables with chunks
            return
        assert {t for t in TABLE_NAMES if kinds[t] == "p"} == set(PLANS)
        assert all(kinds[v] == "v" for v in VIEW_NAMES)
        now = conn.execute("SELECT now()").fetchone()[0]
        rows = conn.execute(
            "SELECT table_name, partition_name, range_start, range_end, is_default FROM tapeflow_partitions"
        ).fetchall()
    for table, plan in PLANS.items():
        mine = [r for r in rows if r[0] == table]
        assert [r[1] for r in mine if r[4]] == [f"{table}_default"]
        current = [r for r in mine if not r[4] and r[2] <= now < r[3]]
        assert [r[1] for r in current] == [plan.partition_name(now)], table
        # the premade ones: through `premake` periods after the current one
        assert max(r[3] for r in mine if not r[4]) > plan.window(now)[1]


def test_registry_matches_the_python_plans(db, pg_server):
    with psycopg.connect(db) as conn:
        rows = conn.execute("SELECT table_name, time_column, granularity FROM tapeflow_partitioning").fetchall()
    if pg_server.timescaledb:  # nothing is partitioned, the registry is empty by design
        assert rows == [] and all(table_layout(db, t) == "hypertable" for t in PLANS)
        return
    assert {r[0]: (r[1], r[2]) for r in rows} == {t: (p.time_column, p.granularity) for t, p in PLANS.items()}


def test_primary_keys_are_the_natural_keys_of_sinks_tables(db):
    with psycopg.connect(db) as conn:
        for spec in TABLES.values():
            keys = conn.execute(
                """
                SELECT con.contype, array_agg(a.attname ORDER BY k.ord)
                FROM pg_constraint con
                CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
                JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
                WHERE con.conrelid = %s::regclass AND con.contype IN ('p', 'u')
                GROUP BY con.oid, con.contype""",
                (spec.table,),
            ).fetchall()
            assert list(spec.natural_key) in [k for _, k in keys], (spec.table, keys)
            if spec.table in PLANS:  # both engines require the time column in every unique key
                assert all(PLANS[spec.table].time_column in k for _, k in keys), spec.table


def test_time_columns_have_a_brin_index_on_partitioned_tables(db):
    with psycopg.connect(db) as conn:
        for table, plan in PLANS.items():
            found = conn.execute(
                """
                SELECT 1 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam
                WHERE i.indrelid = %s::regclass AND am.amname = 'brin'
                  AND pg_get_indexdef(i.indexrelid) LIKE %s""",
                (table, f"%({plan.time_column})"),
            ).fetchone()
            assert found, table


def _types(conn, table: str) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            (table,),
        ).fetchall()
    )


def test_money_is_numeric_market_values_are_double_and_times_are_timestamptz(db):
    with psycopg.connect(db) as conn:
        assert _types(conn, "fills")["fee"] == "numeric"
        positions = _types(conn, "positions")
        for col in ("r_usd", "pnl_r_gross", "pnl_r_net", "fees_r", "slippage_r", "funding_r"):
            assert positions[col] == "numeric", col
        assert positions["entry_price"] == "double precision"
        assert _types(conn, "risk_events")["daily_pnl_r"] == "numeric"
        for col in ("net_r", "initial_balance", "final_balance", "max_drawdown_r"):
            assert _types(conn, "backtest_runs")[col] == "numeric", col
        trades = _types(conn, "trades")
        assert trades["price"] == trades["qty"] == "double precision"
        for spec in TABLES.values():
            types = _types(conn, spec.table)
            for col, copy_type in zip(spec.columns, spec.copy_types):
                if copy_type == "timestamptz":
                    assert types[col] == "timestamp with time zone", (spec.table, col)


def test_readonly_reads_everything_and_writes_nothing_writer_writes(db):
    everything = sorted(TABLE_NAMES | VIEW_NAMES)
    with psycopg.connect(db, autocommit=True) as conn:
        partitions = (
            [r[0] for r in conn.execute("SELECT partition_name FROM tapeflow_partitions").fetchall()]
            if conn.execute("SELECT to_regclass('tapeflow_partitions')").fetchone()[0]
            else []
        )
        conn.execute("SET ROLE tapeflow_readonly")
        for rel in everything + partitions + ["tapeflow_partitions"]:
            conn.execute(f'SELECT * FROM "{rel}" LIMIT 1')
        conn.execute("SELECT * FROM tapeflow_default_partition_rows()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO data_gaps VALUES ('binance','BTCUSDT','md.trades',1,2,now(),'x')")
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE tapeflow_writer")
        conn.execute("INSERT INTO data_gaps VALUES ('binance','BTCUSDT','md.trades',1,2,now(),'x')")
        conn.execute(
            "INSERT INTO pipeline_errors (source_topic, raw_value, error, stage, event_time, content_sha256) "
            "VALUES ('md.trades', '\\x00', 'boom', 'sink:decode', now(), '\\x01')"
        )  # identity sequence
        conn.execute(
            "INSERT INTO ui_actions (action_id, kind, params, who, reason, requested_time, status) "
            "VALUES ('a1', 'kill_switch', '{}', 'ui', 'why', now(), 'pending')"
        )  # the UI's audit rows
        conn.execute("UPDATE ui_actions SET status = 'done' WHERE action_id = 'a1'")
        with pytest.raises(psycopg.errors.CheckViolation):  # an action without a reason is not kept
            conn.execute(
                "INSERT INTO ui_actions (action_id, kind, params, who, reason, requested_time, status) "
                "VALUES ('a2', 'kill_switch', '{}', 'ui', '  ', now(), 'pending')"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (x int)")


def _bar(minute: datetime, o, h, lo, c, buy, sell, trades, first):
    vol = buy + sell
    return (
        "binance",
        "BTCUSDT",
        minute,
        minute + timedelta(minutes=1),
        o,
        h,
        lo,
        c,
        vol,
        buy,
        sell,
        vol * c,
        c,
        trades,
        first,
        first + trades - 1,
    )


#: the trades of each bar below, (taker side, qty) in agg_id order: they add up to the bar's buy and
#: sell volume and trade count
_BAR_TRADES = [
    [("BUY", 1.0), ("SELL", 1.0), ("SELL", 1.0)],
    [("BUY", 2.0), ("SELL", 0.5)],
    [("BUY", 1.0), ("BUY", 0.5), ("SELL", 1.0), ("SELL", 0.5)],
    [("BUY", 1.0), ("BUY", 1.0), ("BUY", 1.0), ("SELL", 0.5), ("SELL", 0.5)],
    [("BUY", 0.5), ("SELL", 1.0), ("SELL", 1.0), ("SELL", 1.0), ("SELL", 0.5), ("SELL", 0.5)],
    [("BUY", 1.0), ("SELL", 1.0)],
]


def test_rollup_views_aggregate_bars_by_hand_computed_values(db):
    """Same answers on both layouts. cvd_1m sums bars_1m's buy/sell volume on plain PostgreSQL and the
    raw trades on TimescaleDB (a continuous aggregate of `trades`, migration 0003): the bars and the
    trades stored here agree, as the sink's do."""
    t0 = datetime(2024, 3, 4, 9, 58, tzinfo=UTC)  # 09:58, 09:59 | 10:00 .. 10:04 | 10:05
    bars = [
        _bar(t0, 100, 101, 99, 100.5, 1.0, 2.0, 3, 1),
        _bar(t0 + timedelta(minutes=1), 100.5, 102, 100, 101, 2.0, 0.5, 2, 4),
        _bar(t0 + timedelta(minutes=2), 101, 103, 100.5, 102, 1.5, 1.5, 4, 6),
        _bar(t0 + timedelta(minutes=3), 102, 104, 101, 103, 3.0, 1.0, 5, 10),
        _bar(t0 + timedelta(minutes=6), 103, 103.5, 98, 99, 0.5, 4.0, 6, 15),
        _bar(t0 + timedelta(minutes=7), 99, 100, 97, 98, 1.0, 1.0, 2, 21),
    ]
    trades = []
    for bar, sides in zip(bars, _BAR_TRADES, strict=True):
        assert len(sides) == bar[13] and sum(q for s, q in sides if s == "BUY") == bar[9]
        for k, (side, qty) in enumerate(sides):
            when = bar[2] + timedelta(seconds=k)
            trades.append(
                ("binance", "BTCUSDT", bar[14] + k, bar[7], qty, bar[14] + k, bar[14] + k, when, when, when, side)
            )
    with psycopg.connect(db) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bars_1m VALUES (" + ", ".join(["%s"] * 16) + ")", bars)
            cur.executemany("INSERT INTO trades VALUES (" + ", ".join(["%s"] * 11) + ")", trades)
        five = conn.execute(
            "SELECT open_time, open, high, low, close, volume, buy_volume, sell_volume, "
            "trade_count, first_agg_id, last_agg_id, bar_count FROM bars_5m "
            "WHERE symbol = 'BTCUSDT' ORDER BY open_time"
        ).fetchall()
        hour = conn.execute(
            "SELECT open_time, open, high, low, close, volume, trade_count, bar_count, vwap "
            "FROM bars_1h WHERE symbol = 'BTCUSDT' ORDER BY open_time"
        ).fetchall()
        cvd = conn.execute(
            "SELECT open_time, buy_qty, sell_qty, delta_qty, trade_count FROM cvd_1m "
            "WHERE symbol = 'BTCUSDT' ORDER BY open_time"
        ).fetchall()
    h10 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)
    assert five == [
        (datetime(2024, 3, 4, 9, 55, tzinfo=UTC), 100, 102, 99, 101, 5.5, 3.0, 2.5, 5, 1, 5, 2),
        (h10, 101, 104, 98, 99, 11.5, 5.0, 6.5, 15, 6, 20, 3),
        (datetime(2024, 3, 4, 10, 5, tzinfo=UTC), 99, 100, 97, 98, 2.0, 1.0, 1.0, 2, 21, 22, 1),
    ]
    # vwap of the 10:00 hour: sum(vol * close) / sum(vol) over its four bars
    q = 3.0 * 102 + 4.0 * 103 + 4.5 * 99 + 2.0 * 98
    assert hour[0][:8] == (datetime(2024, 3, 4, 9, 0, tzinfo=UTC), 100, 102, 99, 101, 5.5, 5, 2)
    assert hour[1][:8] == (h10, 101, 104, 97, 98, 13.5, 17, 4)
    assert hour[1][8] == pytest.approx(q / 13.5)
    assert [(r[0].minute, r[1], r[2], r[3], r[4]) for r in cvd] == [
        (58, 1.0, 2.0, -1.0, 3),
        (59, 2.0, 0.5, 1.5, 2),
        (0, 1.5, 1.5, 0.0, 4),
        (1, 3.0, 1.0, 2.0, 5),
        (4, 0.5, 4.0, -3.5, 6),
        (5, 1.0, 1.0, 0.0, 2),
    ]


def test_trades_closed_view_joins_the_lifecycle_of_a_position(db):
    t = datetime(2024, 5, 1, 12, tzinfo=UTC)
    base = ("p1", "s1", "v53", "1.0", "abc", "binance", "ETHUSDT", "paper")
    plan = ("LONG", "standard", 3000.0)
    with psycopg.connect(db) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO positions VALUES (" + ", ".join(["%s"] * 24) + ")",
                [
                    base + ("opened",) + plan + (1.0, 200, 2970.0, 3022.5, 3045.0, None, None, None, None, 0.05, 0, t),
                    base
                    + ("tp1",)
                    + plan
                    + (0.5, 200, 3000.0, 3022.5, 3045.0, 3022.5, None, None, None, 0.1, 0, t + timedelta(minutes=30)),
                    base
                    + ("closed",)
                    + plan
                    + (0.0, 200, 3000.0, 3022.5, 3045.0, 3045.0, "tp", 1.225, 1.1, 0.125, 0, t + timedelta(minutes=50)),
                ],
            )
        row = conn.execute(
            "SELECT entry_time, exit_time, tp1_hit, exit_reason, pnl_r_net, pnl_usd_net "
            "FROM trades_closed WHERE position_id = 'p1'"
        ).fetchone()
    assert row[:4] == (t, t + timedelta(minutes=50), True, "tp")
    # numeric: 1.1 R x 200 USD is exactly 220 (as doubles it would be 220.00000000000003)
    assert row[4] == Decimal("1.1") and row[5] == Decimal(220)


def test_plans_are_reachable_by_name():
    assert partition_plan("trades").granularity == "day"
    with pytest.raises(ValueError, match="not a time-partitioned table.*trades"):
        partition_plan("signals")
