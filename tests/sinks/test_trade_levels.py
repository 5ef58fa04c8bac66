"""trade_levels_1m on plain PostgreSQL (migration 0021): kept equal to the trades by triggers, retention
and compaction, whatever path rows take in and out."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg

from sinks.partitions import ensure_partitions
from sinks.retention import RetentionPolicy, drop_expired, record_writes
from sinks.tables import table_for_topic, write_rows
from sinks.trade_levels import backfill_pending, compact_written_days, pending_days

SPEC = table_for_topic("md.trades")
DAY0 = datetime(2024, 3, 1, tzinfo=UTC)


def trade(agg_id: int, at: datetime, price: float, qty: float, side: str) -> tuple:
    ms = int(at.timestamp() * 1000)
    return SPEC.to_row(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_id": agg_id,
            "price": price,
            "qty": qty,
            "first_trade_id": agg_id,
            "last_trade_id": agg_id,
            "event_time": ms,
            "trade_time": ms,
            "receive_time": ms,
            "taker_side": side,
        }
    )


def levels(conn: psycopg.Connection) -> list[tuple]:
    """The table's sums per (minute, price), as the UI reads them (partial rows summed)."""
    return conn.execute(
        "SELECT open_time, price, sum(bought)::float8, sum(sold)::float8, sum(trade_count) "
        "FROM trade_levels_1m GROUP BY 1, 2 HAVING sum(trade_count) <> 0 ORDER BY 1, 2"
    ).fetchall()


def row_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM trade_levels_1m").fetchone()[0]


def recomputed(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT date_bin('1 minute', trade_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'), price, "
        "sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END)::float8, "
        "sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END)::float8, count(*) FROM trades "
        "GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def test_inserts_redeliveries_deletes_and_truncate_keep_the_levels_equal_to_the_trades(plain_db):
    t = DAY0 + timedelta(hours=10)
    rows = [
        trade(1, t, 100.0, 0.5, "BUY"),
        trade(2, t + timedelta(seconds=10), 100.0, 0.25, "SELL"),
        trade(3, t + timedelta(seconds=20), 100.0, 1.0, "BUY"),
        trade(4, t + timedelta(seconds=70), 100.1, 2.0, "SELL"),
    ]
    with psycopg.connect(plain_db) as conn:
        ensure_partitions(conn, "trades", DAY0, DAY0 + timedelta(days=1))
        write_rows(conn, SPEC, rows)
        write_rows(conn, SPEC, rows[:2])  # redelivered: nothing new stored, nothing added
        conn.commit()
        assert levels(conn) == [(t, 100.0, 1.5, 0.25, 3), (t + timedelta(minutes=1), 100.1, 0.0, 2.0, 1)]
        conn.execute("DELETE FROM trades WHERE agg_id IN (1, 4)")
        assert levels(conn) == [(t, 100.0, 1.0, 0.25, 2)] == recomputed(conn)
        conn.commit()
        # partial rows: the insert's two keys, none from the redelivery, the delete's two negated ones;
        # compaction merges them to one per key and drops the minute whose only trade is gone
        assert row_count(conn) == 4
        conn.execute("SELECT tapeflow_compact_trade_levels(%s, %s)", (DAY0, DAY0 + timedelta(days=1)))
        assert row_count(conn) == 1 and levels(conn) == [(t, 100.0, 1.0, 0.25, 2)]
        conn.execute("TRUNCATE trades")
        assert levels(conn) == []


def exact_levels(conn: psycopg.Connection) -> dict[tuple, tuple]:
    """The table's sums per (minute, price) as numeric text (value and scale), partial rows summed."""
    rows = conn.execute(
        "SELECT open_time, price, sum(bought)::text, sum(sold)::text, sum(trade_count) "
        "FROM trade_levels_1m GROUP BY 1, 2 HAVING sum(trade_count) <> 0"
    ).fetchall()
    return {(at, price): (Decimal(bought), Decimal(sold), int(n)) for at, price, bought, sold, n in rows}


def decimal_sums(trades: list[tuple]) -> dict[tuple, tuple]:
    """The same sums recomputed here from the trades written, without the database: each qty as
    PostgreSQL's float8 -> numeric cast takes it (15 significant digits), summed exactly per side."""
    out: dict[tuple, list] = {}
    for at, price, qty, side in trades:
        minute = at.replace(second=0, microsecond=0)
        sums = out.setdefault((minute, price), [Decimal(0), Decimal(0), 0])
        sums[0 if side == "BUY" else 1] += Decimal(f"{qty:.15g}")
        sums[2] += 1
    return {k: tuple(v) for k, v in out.items()}


def test_the_triggers_sums_are_exact_per_side_against_a_recomputation(plain_db):
    """The insert and delete triggers' sums, as numeric text (value and scale), equal an exact
    recomputation from the trades written, including keys with trades of one side only (the other side
    0) and statements of several rows per key: what a cheaper trigger must keep identical (a FILTER
    variant, one cast and one addition per trade, kept them so but measured no cheaper: benchmarks/
    RESULTS.md, "The suite's CPU, eighth session")."""
    rng = random.Random(7)
    t = DAY0 + timedelta(hours=5)
    written = []
    for i in range(600):
        at = t + timedelta(seconds=rng.randrange(0, 600))
        side = "BUY" if rng.random() < 0.6 else "SELL"
        price = (
            round(100 + rng.randrange(0, 6) * 0.1, 1) if side == "BUY" else round(99.0 - rng.randrange(0, 3) * 0.1, 1)
        )
        written.append((i + 1, at, price, rng.choice([0.001, 0.013, 0.25, 1.5, 2.125, 0.3333, 7.0]), side))
    with psycopg.connect(plain_db) as conn:
        ensure_partitions(conn, "trades", DAY0, DAY0 + timedelta(days=1))
        for lo in range(0, len(written), 150):  # four statements: several partial rows per key
            write_rows(conn, SPEC, [trade(*w) for w in written[lo : lo + 150]])
        conn.commit()
        got, want = exact_levels(conn), decimal_sums([w[1:] for w in written])
        assert got == want
        assert {k: tuple(v.as_tuple().exponent for v in s[:2]) for k, s in got.items()} == {
            k: tuple(v.as_tuple().exponent for v in s[:2]) for k, s in want.items()
        }  # the same scale
        assert any(s[0] == 0 for s in want.values()) and any(s[1] == 0 for s in want.values())
        gone = {w[0] for w in written if w[0] % 3 == 0}
        conn.execute("DELETE FROM trades WHERE agg_id = ANY(%s)", (sorted(gone),))
        conn.commit()
        assert exact_levels(conn) == decimal_sums([w[1:] for w in written if w[0] not in gone])


def test_the_sinks_maintenance_compacts_the_days_it_wrote(plain_db):
    t = DAY0 + timedelta(hours=3)
    with psycopg.connect(plain_db) as conn:
        ensure_partitions(conn, "trades", DAY0, DAY0 + timedelta(days=1))
        write_rows(conn, SPEC, [trade(9, t - timedelta(minutes=1), 99.0, 1.0, "SELL")])  # a key with one row
        for i in range(4):  # four batches of the same minute and price: four partial rows
            write_rows(conn, SPEC, [trade(i, t + timedelta(seconds=i), 100.0, 0.5, "BUY")])
        record_writes(conn, "trades", [DAY0.date()])
        conn.commit()
        single = conn.execute("SELECT ctid FROM trade_levels_1m WHERE price = 99.0").fetchone()[0]
        assert row_count(conn) == 5
        assert compact_written_days(conn, datetime.now(UTC) - timedelta(hours=1)) == 1  # the one merged row
        assert row_count(conn) == 2 and levels(conn) == recomputed(conn) == [
            (t - timedelta(minutes=1), 99.0, 0.0, 1.0, 1),
            (t, 100.0, 2.0, 0.0, 4),
        ]
        # the key that had one row was not rewritten; a second pass has nothing to merge
        assert conn.execute("SELECT ctid FROM trade_levels_1m WHERE price = 99.0").fetchone()[0] == single
        assert compact_written_days(conn, datetime.now(UTC) - timedelta(hours=1)) == 0 and row_count(conn) == 2


def test_rows_moved_out_of_the_default_partition_count_once_and_retention_drops_their_days(plain_db):
    with psycopg.connect(plain_db) as conn:
        # no partition for these days yet: the rows land in trades_default
        write_rows(
            conn,
            SPEC,
            [
                trade(1, DAY0 + timedelta(hours=1), 50.0, 1.0, "BUY"),
                trade(2, DAY0 + timedelta(days=1, hours=1), 51.0, 2.0, "SELL"),
            ],
        )
        conn.commit()
        ensure_partitions(conn, "trades", DAY0, DAY0 + timedelta(days=1, hours=2))  # moves them out of DEFAULT
        conn.commit()
        assert conn.execute("SELECT count(*) FROM trades_default").fetchone()[0] == 0
        assert (
            levels(conn)
            == recomputed(conn)
            == [(DAY0 + timedelta(hours=1), 50.0, 1.0, 0.0, 1), (DAY0 + timedelta(days=1, hours=1), 51.0, 0.0, 2.0, 1)]
        )
        now = DAY0 + timedelta(days=30)
        dropped = drop_expired(conn, RetentionPolicy("trades", timedelta(days=29), None, True), now, now)
        assert dropped == ["trades_p20240301"]
        assert levels(conn) == recomputed(conn) == [(DAY0 + timedelta(days=1, hours=1), 51.0, 0.0, 2.0, 1)]


def test_trades_stored_before_the_migration_are_summed_later_one_day_at_a_time(database, monkeypatch):
    """0021 lists the days of the trades already stored (a partition's, one in DEFAULT) instead of summing
    them in its own transaction; the backfill sums each day once, a trade stored after the migration
    into a listed day included exactly once."""
    import sinks.migrate as mig

    every = mig.load_migrations()
    monkeypatch.setattr(mig, "load_migrations", lambda: [m for m in every if m.version < 21])
    mig.migrate(database, engine_extension=None)
    t, late = DAY0 + timedelta(hours=10), DAY0 + timedelta(days=5, hours=1)
    with psycopg.connect(database) as conn:
        ensure_partitions(conn, "trades", DAY0, DAY0 + timedelta(days=1))
        write_rows(
            conn,
            SPEC,
            [
                trade(1, t, 100.0, 0.5, "BUY"),
                trade(2, t + timedelta(seconds=5), 100.0, 0.25, "SELL"),
                trade(3, t + timedelta(minutes=1), 100.1, 2.0, "SELL"),
                trade(4, late, 90.0, 1.0, "BUY"),
            ],
        )  # no partition for that day: DEFAULT
    monkeypatch.setattr(mig, "load_migrations", lambda: every)
    mig.migrate(database, engine_extension=None)
    with psycopg.connect(database, autocommit=True) as conn:
        assert pending_days(conn) == [late.date(), DAY0.date()] and row_count(conn) == 0
        write_rows(conn, SPEC, [trade(5, t + timedelta(seconds=30), 100.0, 1.0, "BUY")])  # after: its trigger's row
        assert levels(conn) == [(t, 100.0, 1.0, 0.0, 1)]
        conn.execute("SET ROLE tapeflow_writer")  # as the sink runs it
        assert backfill_pending(conn) == 2
        assert pending_days(conn) == [] and backfill_pending(conn) == 0
        assert (
            levels(conn)
            == recomputed(conn)
            == [
                (t, 100.0, 1.5, 0.25, 3),
                (t + timedelta(minutes=1), 100.1, 0.0, 2.0, 1),
                (late.replace(minute=0), 90.0, 1.0, 0.0, 1),
            ]
        )
