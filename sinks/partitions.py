"""Keep time partitions ahead of the data on plain PostgreSQL; do nothing on TimescaleDB.

Why this exists: a RANGE-partitioned table needs a partition for a row's time before the row can go
anywhere but the DEFAULT partition, and partitions are not created by inserts. The sink therefore
calls `ensure_partitions_ahead` when it starts and then hourly (never per flush: creating a
partition takes a lock on the parent), which keeps `premake` periods ready. Rows that still miss a
partition (a backfill of old history, a skewed clock) land in the DEFAULT partition instead of
failing the batch; `default_partition_rows` reports them and `ensure_partitions` over their range
moves them into proper partitions. Backfills should call `ensure_partitions` for their range first.

The DDL itself lives in SQL (migration 0002: `tapeflow_ensure_partitions`, a SECURITY DEFINER
function, because the sink's role does not own the tables); period boundaries are UTC calendar
days or months, computed there. On TimescaleDB the same tables are hypertables, which create their
chunks themselves, so every function here returns without doing anything.

`PLANS` mirrors what the migrations register (time column, granularity) plus how many periods are
made ahead; tests check the two agree. Retention (what is dropped, and the guard that never drops
what was just written) is sinks/retention.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Literal

import psycopg

Granularity = Literal["day", "month"]


@dataclass(frozen=True)
class PartitionPlan:
    """How one table is partitioned on plain PostgreSQL and how far ahead/back partitions are kept."""

    table: str
    time_column: str
    granularity: Granularity
    premake: int  # periods created ahead of the current one

    @property
    def default_partition(self) -> str:
        return f"{self.table}_default"

    def partition_name(self, when: datetime) -> str:
        """Name of the partition holding `when` (aware datetime), e.g. trades_p20240131, bars_1m_p202401."""
        start = period_start(self.granularity, when)
        return f"{self.table}_p{start:%Y%m%d}" if self.granularity == "day" else f"{self.table}_p{start:%Y%m}"

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The range `ensure_partitions_ahead` covers: one period back (late rows after a rollover)
        through `premake` periods after the current one."""
        current = period_start(self.granularity, now)
        return add_periods(self.granularity, current, -1), add_periods(self.granularity, current, self.premake)


PLANS: Mapping[str, PartitionPlan] = MappingProxyType(
    {
        p.table: p
        for p in (
            PartitionPlan("trades", "trade_time", "day", 3),
            PartitionPlan("depth_updates", "event_time", "day", 3),
            PartitionPlan("depth_snapshots", "event_time", "day", 3),
            PartitionPlan("liquidations", "trade_time", "month", 1),
            PartitionPlan("mark_prices", "event_time", "month", 1),
            PartitionPlan("market_indicators", "event_time", "month", 1),
            PartitionPlan("bars_1m", "open_time", "month", 1),
            PartitionPlan("features", "eval_time", "month", 1),
            PartitionPlan("xv_features", "eval_time", "month", 1),
            PartitionPlan("xv_signals", "eval_time", "month", 1),
            PartitionPlan("xv_leg_orders", "order_time", "month", 1),
            PartitionPlan("xv_funding_payments", "funding_time", "month", 1),
            PartitionPlan("xv_pair_events", "event_time", "month", 1),
        )
    }
)


def partition_plan(table: str) -> PartitionPlan:
    """The plan of a time-partitioned table; ValueError names the partitioned tables."""
    try:
        return PLANS[table]
    except KeyError:
        raise ValueError(f"{table!r} is not a time-partitioned table (partitioned: {', '.join(PLANS)})") from None


def _utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: partitions are bounded in UTC, pass an aware datetime")
    return when.astimezone(UTC)


def period_start(granularity: Granularity, when: datetime) -> datetime:
    """Start (UTC) of the day or month containing `when`."""
    t = _utc(when)
    if granularity == "day":
        return datetime(t.year, t.month, t.day, tzinfo=UTC)
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def add_periods(granularity: Granularity, start: datetime, n: int) -> datetime:
    """`start` (a period start) moved by `n` days or calendar months."""
    if granularity == "day":
        return start + timedelta(days=n)
    months = start.year * 12 + (start.month - 1) + n
    return start.replace(year=months // 12, month=months % 12 + 1)


def is_partitioned(conn: psycopg.Connection, table: str) -> bool:
    """True when `table` is a partitioned table (plain PostgreSQL branch of the migrations)."""
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] == "p"


def count_periods(granularity: Granularity, start: datetime, end: datetime) -> int:
    """Number of days or months intersecting [start, end]."""
    a, b = period_start(granularity, start), period_start(granularity, end)
    if granularity == "day":
        return (b - a).days + 1
    return (b.year - a.year) * 12 + (b.month - a.month) + 1


MAX_PARTITIONS_PER_CALL = 400


def ensure_partitions(
    conn: psycopg.Connection,
    table: str,
    start: datetime,
    end: datetime,
    *,
    max_partitions: int = MAX_PARTITIONS_PER_CALL,
) -> list[str]:
    """Create every missing partition of `table` intersecting [start, end]; return the names created.

    Idempotent (existing partitions are left alone) and safe against concurrent callers (the SQL
    function serialises per table). Rows waiting in the DEFAULT partition for a created range are
    moved into it. Returns [] on TimescaleDB (hypertables) without touching anything. A range
    spanning more than `max_partitions` periods is refused (ValueError): one row with a wild
    timestamp must not make thousands of partitions.
    """
    plan = partition_plan(table)
    start, end = _utc(start), _utc(end)
    if end < start:
        raise ValueError(f"end {end.isoformat()} is before start {start.isoformat()}")
    n = count_periods(plan.granularity, start, end)
    if n > max_partitions:
        raise ValueError(
            f"{table}: [{start.isoformat()}, {end.isoformat()}] spans {n} {plan.granularity}s, "
            f"more than max_partitions={max_partitions}"
        )
    if not is_partitioned(conn, table):
        return []
    with conn.transaction():
        rows = conn.execute("SELECT * FROM tapeflow_ensure_partitions(%s, %s, %s)", (table, start, end)).fetchall()
    return [r[0] for r in rows]


def ensure_partitions_ahead(
    conn: psycopg.Connection, now: datetime, tables: tuple[str, ...] | None = None
) -> dict[str, list[str]]:
    """What the sink runs at start and hourly: each table's `window(now)`; returns what was created."""
    return {t: ensure_partitions(conn, t, *partition_plan(t).window(now)) for t in (tables or tuple(PLANS))}


@dataclass(frozen=True)
class DefaultPartitionRows:
    """Rows of one table that sit in its DEFAULT partition (normally none)."""

    table: str
    rows: int
    first_time: datetime | None
    last_time: datetime | None


def default_partition_rows(conn: psycopg.Connection) -> list[DefaultPartitionRows]:
    """Per partitioned table, how many rows the DEFAULT partition holds and their time span.

    [] on TimescaleDB (nothing is registered there).
    """
    if conn.execute("SELECT to_regproc('tapeflow_default_partition_rows')").fetchone()[0] is None:
        return []
    rows = conn.execute(
        "SELECT table_name, row_count, first_time, last_time FROM tapeflow_default_partition_rows()"
    ).fetchall()
    return [DefaultPartitionRows(*r) for r in rows]


def adopt_default_rows(conn: psycopg.Connection) -> dict[str, list[str]]:
    """Create the partitions that rows in DEFAULT partitions belong to, moving those rows there."""
    return {
        d.table: ensure_partitions(conn, d.table, d.first_time, d.last_time)
        for d in default_partition_rows(conn)
        if d.rows
    }
