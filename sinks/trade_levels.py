"""Compaction of ``trade_levels_1m`` on plain PostgreSQL (migration 0021), from the sink's hourly maintenance.

Why: the triggers on ``trades`` append one partial row per (minute, price) per insert statement
(append-only, so parallel writers never wait on each other's rows), and a live sink's small batches
leave several rows per key. The UI's volume profile sums them, so they are exact either way, but a
day read fastest at one row per key: every day of trades the sink wrote since its last maintenance
is merged in one statement per day (``tapeflow_compact_trade_levels``). TimescaleDB keeps the same
roll-up as a continuous aggregate: nothing to do there.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import psycopg


def compact_written_days(conn: psycopg.Connection, since: datetime) -> int:
    """Merge the partial rows of every day of ``trades`` written at or after ``since``
    (``tapeflow_partition_writes``); returns the rows left for those days (0 on TimescaleDB)."""
    if conn.execute("SELECT to_regprocedure('tapeflow_compact_trade_levels(timestamptz, timestamptz)')"
                    ).fetchone()[0] is None:
        return 0
    days = [r[0] for r in conn.execute("SELECT day FROM tapeflow_partition_writes WHERE table_name = 'trades' "
                                       "AND last_write >= %s ORDER BY day", (since,)).fetchall()]
    left = 0
    for day in days:
        lo = datetime.combine(day, time(), tzinfo=UTC)
        with conn.transaction():
            left += conn.execute("SELECT tapeflow_compact_trade_levels(%s, %s)",
                                 (lo, lo + timedelta(days=1))).fetchone()[0]
    return left
