"""Compaction and backfill of ``trade_levels_1m`` (migration 0021), from the sink's maintenance.

Why: the triggers on ``trades`` append one partial row per (minute, price) per insert statement
(append-only, so parallel writers never wait on each other's rows), and a live sink's small batches
leave several rows per key. The UI's volume profile sums them, so they are exact either way, but a
day read fastest at one row per key: every day of trades the sink wrote since its last maintenance
is merged in one statement per day (``tapeflow_compact_trade_levels``: it rewrites only the keys that
have several rows, so an hourly pass over a busy day rewrites the hour's rows, not the day's).
TimescaleDB keeps the same roll-up as a continuous aggregate: nothing to compact there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

import psycopg


def compact_written_days(conn: psycopg.Connection, since: datetime) -> int:
    """Merge the partial rows of every day of ``trades`` written at or after ``since``
    (``tapeflow_partition_writes``); returns the merged rows written (0 on TimescaleDB)."""
    if (
        conn.execute("SELECT to_regprocedure('tapeflow_compact_trade_levels(timestamptz, timestamptz)')").fetchone()[0]
        is None
    ):
        return 0
    days = [
        r[0]
        for r in conn.execute(
            "SELECT day FROM tapeflow_partition_writes WHERE table_name = 'trades' AND last_write >= %s ORDER BY day",
            (since,),
        ).fetchall()
    ]
    left = 0
    for day in days:
        lo = datetime.combine(day, time(), tzinfo=UTC)
        with conn.transaction():
            left += conn.execute(
                "SELECT tapeflow_compact_trade_levels(%s, %s)", (lo, lo + timedelta(days=1))
            ).fetchone()[0]
    return left


def pending_days(conn: psycopg.Connection) -> list:
    """Days of trades stored before migration 0021 and not summed into ``trade_levels_1m`` yet."""
    if conn.execute("SELECT to_regclass('trade_levels_backfill')").fetchone()[0] is None:
        return []
    return [r[0] for r in conn.execute("SELECT day FROM trade_levels_backfill ORDER BY day DESC").fetchall()]


def backfill_pending(conn: psycopg.Connection, should_stop: Callable[[], bool] = lambda: False) -> int:
    """Sum the listed days of old trades into ``trade_levels_1m``, newest first, one day per transaction
    (``conn`` in autocommit); returns the days done.

    Why per day: migration 0021 cannot sum a big trades table in its own transaction without keeping
    every sink from writing (its CREATE TRIGGER locks ``trades`` until commit). Plain PostgreSQL:
    ``tapeflow_backfill_trade_levels`` locks only that day's partitions against writes while it
    recomputes the day. TimescaleDB: the continuous aggregate is refreshed for that day
    (``refresh_continuous_aggregate`` runs outside a transaction, and needs the aggregate's owner).
    Two sinks doing this at once serialise on an advisory lock (plain) or refresh the same day twice
    (harmless)."""
    plain = conn.execute("SELECT to_regprocedure('tapeflow_backfill_trade_levels(date)')").fetchone()[0] is not None
    done = 0
    for day in pending_days(conn):
        if should_stop():
            break
        if plain:
            with conn.transaction():
                done += bool(conn.execute("SELECT tapeflow_backfill_trade_levels(%s)", (day,)).fetchone()[0])
        else:
            lo = datetime.combine(day, time(), tzinfo=UTC)
            conn.execute("CALL refresh_continuous_aggregate('trade_levels_1m', %s, %s)", (lo, lo + timedelta(days=1)))
            conn.execute("DELETE FROM trade_levels_backfill WHERE day = %s", (day,))
            done += 1
    return done
