"""How long each time-series table keeps its rows, and when TimescaleDB compresses them.

Why: retention used to be fixed in code and SQL (trades 90 days) and dropped by data time, so a
backfill or replay older than that was deleted while, or right after, it was loaded. Now:

- defaults keep every kind of market data a user may load on purpose (trades, bars, liquidations,
  mark prices, indicators, features, cross-venue features) and the watchlist's trading records
  (signals, leg orders, funding payments, pair events); only raw depth diffs (7 days) and book
  snapshots (30 days) expire. The `retention:` setting overrides keep/compress_after per table.
- one guard for both engines: the sink records which UTC days of which table it wrote
  (`tapeflow_partition_writes`, migration 0007), and nothing holding a day written since the sink
  started, or within the last 24 hours, is dropped.
- plain PostgreSQL: whole partitions past the cutoff are dropped (`tapeflow_drop_partitions_before`).
  TimescaleDB: chunks are dropped by the same maintenance (`tapeflow_drop_chunks_before`, up to the
  oldest protected day), not by add_retention_policy jobs, which cannot be guarded; compression
  stays a policy job whose interval follows the configuration (`apply_compression`, run with the
  owner's rights by `db migrate`/`up` and `db retention --apply`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import psycopg

from sinks.partitions import PLANS, is_partitioned
from tapeflow_runtime.settings import ConfigError, TableRetention, parse_duration

DAY = timedelta(days=1)
#: a restarted sink still protects what was written this long ago (its predecessor's work)
PROTECT_AT_LEAST = timedelta(hours=24)


@dataclass(frozen=True)
class RetentionPolicy:
    table: str
    keep: timedelta | None  # None: forever
    compress_after: timedelta | None  # TimescaleDB only; None: never compressed
    configured: bool = False  # False: tapeflow's default

    def cutoff(self, now: datetime) -> datetime | None:
        return None if self.keep is None else now - self.keep


DEFAULTS: Mapping[str, RetentionPolicy] = {
    p.table: p
    for p in (
        RetentionPolicy("trades", None, DAY),
        RetentionPolicy("depth_updates", 7 * DAY, DAY),
        RetentionPolicy("depth_snapshots", 30 * DAY, DAY),
        RetentionPolicy("liquidations", None, 30 * DAY),
        RetentionPolicy("mark_prices", None, 7 * DAY),
        RetentionPolicy("market_indicators", None, 30 * DAY),
        RetentionPolicy("bars_1m", None, 30 * DAY),
        RetentionPolicy("features", None, 7 * DAY),
        RetentionPolicy("xv_features", None, 7 * DAY),
        # the watchlist's trading records: kept like the features they came from; compressed a month on, since
        # a pair's legs, funding and state keep arriving while it is open (up to a week)
        RetentionPolicy("xv_signals", None, 30 * DAY),
        RetentionPolicy("xv_leg_orders", None, 30 * DAY),
        RetentionPolicy("xv_funding_payments", None, 30 * DAY),
        RetentionPolicy("xv_pair_events", None, 30 * DAY),
    )
}
assert set(DEFAULTS) == set(PLANS), "every time-partitioned table needs a default policy"


def resolve_policies(configured: Mapping[str, TableRetention] | None = None) -> dict[str, RetentionPolicy]:
    """Defaults overlaid with the `retention:` setting; an unknown table is a ConfigError."""
    out = dict(DEFAULTS)
    for table, setting in (configured or {}).items():
        if table not in DEFAULTS:
            raise ConfigError(f"retention.{table}: not a time-series table (tables: {', '.join(DEFAULTS)})")
        base = DEFAULTS[table]
        keep = base.keep if setting.keep is None else parse_duration(setting.keep)
        compress = base.compress_after if setting.compress_after is None else parse_duration(setting.compress_after)
        out[table] = RetentionPolicy(table, keep, compress, True)
    return out


def protect_since(sink_started: datetime, now: datetime) -> datetime:
    """Days written at or after this moment are never dropped."""
    return min(sink_started, now - PROTECT_AT_LEAST)


def storage_layout(conn: psycopg.Connection) -> str:
    """'timescaledb' when the tables are hypertables, else 'plain'."""
    row = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if (
        row
        and conn.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'trades'"
        ).fetchone()
    ):
        return "timescaledb"
    return "plain"


def record_writes(conn: psycopg.Connection, table: str, days: Iterable[date]) -> None:
    """Remember that `table` received rows for these UTC days now (the retention guard reads it)."""
    days = sorted(set(days))
    if days:
        conn.execute(
            "INSERT INTO tapeflow_partition_writes (table_name, day, last_write) "
            "SELECT %s, d, now() FROM unnest(%s::date[]) AS d "
            "ON CONFLICT (table_name, day) DO UPDATE SET last_write = excluded.last_write",
            (table, days),
        )


def drop_expired(
    conn: psycopg.Connection, policy: RetentionPolicy, now: datetime, guard: datetime, layout: str | None = None
) -> list[str]:
    """Drop what `policy` says has expired at `now`, except days written since `guard`; names dropped."""
    cutoff = policy.cutoff(now)
    if cutoff is None:
        return []
    layout = layout or storage_layout(conn)
    if layout == "plain" and not is_partitioned(conn, policy.table):
        return []
    fn = "tapeflow_drop_chunks_before" if layout == "timescaledb" else "tapeflow_drop_partitions_before"
    with conn.transaction():
        rows = conn.execute(f"SELECT * FROM {fn}(%s, %s, %s)", (policy.table, cutoff, guard)).fetchall()  # nosec B608 # fn is one of two fixed function names; every value is bound
        if layout == "plain" and policy.table == "trades" and rows:
            _drop_trade_levels(conn, [r[0] for r in rows])
    return [r[0] for r in rows]


def _drop_trade_levels(conn: psycopg.Connection, dropped: list[str]) -> None:
    """Forget the dropped trades partitions' days in ``trade_levels_1m`` (migration 0021: its triggers
    see inserts and deletes, not a dropped partition), so the UI's volume profile keeps equalling the
    trades that remain."""
    plan = PLANS["trades"]
    days = [
        datetime.strptime(name.removeprefix("trades_p"), "%Y%m%d").replace(tzinfo=UTC)
        for name in dropped
        if name != plan.default_partition
    ]
    if days:
        conn.execute(
            "DELETE FROM trade_levels_1m l USING unnest(%s::timestamptz[]) AS d(day) "
            "WHERE l.open_time >= d.day AND l.open_time < d.day + interval '1 day'",
            (days,),
        )


def apply_retention(
    conn: psycopg.Connection, policies: Mapping[str, RetentionPolicy], now: datetime, guard: datetime
) -> dict[str, list[str]]:
    """Every table's drops (see `drop_expired`); {table: dropped partition or chunk names}."""
    layout = storage_layout(conn)
    return {t: drop_expired(conn, p, now, guard, layout) for t, p in policies.items()}


def _interval(td: timedelta) -> str:
    return f"{int(td.total_seconds())} seconds"


def compression_jobs(conn: psycopg.Connection) -> dict[str, timedelta]:
    """TimescaleDB compression policy per hypertable: {table: compress_after}."""
    rows = conn.execute(
        "SELECT hypertable_name, (config->>'compress_after')::interval "
        "FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def apply_compression(conn: psycopg.Connection, policies: Mapping[str, RetentionPolicy]) -> dict[str, str]:
    """Make the compression policy jobs match the policies (TimescaleDB; needs the tables' owner).

    Returns {table: what changed}; {} on plain PostgreSQL or when everything already matches.
    """
    if storage_layout(conn) != "timescaledb":
        return {}
    jobs = compression_jobs(conn)
    changed = {}
    for table, policy in policies.items():
        current = jobs.get(table)
        if current == policy.compress_after:
            continue
        with conn.transaction():
            if current is not None:
                conn.execute("SELECT remove_compression_policy(%s::regclass, if_exists => true)", (table,))
            if policy.compress_after is not None:
                conn.execute(
                    "SELECT add_compression_policy(%s::regclass, %s::interval)",
                    (table, _interval(policy.compress_after)),
                )
        changed[table] = f"compress after {format_duration(policy.compress_after)}"
    return changed


def format_duration(td: timedelta | None) -> str:
    if td is None:
        return "forever"
    seconds = int(td.total_seconds())
    for unit, size in (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class TableRetentionReport:
    """One line of `tapeflow db retention`: the policy and what the database holds now."""

    table: str
    keep: str
    compress_after: str
    source: str  # default | configured
    engine: str  # plain | timescaledb
    pieces: int  # partitions (plain, without DEFAULT) or chunks (TimescaleDB)
    compressed: int | None  # compressed chunks (TimescaleDB)
    oldest: datetime | None  # start of the oldest partition/chunk
    expired: list[str]  # partitions/chunks past the cutoff now (what the next maintenance drops)
    protected: list[str]  # past the cutoff but kept: written recently
    compression_job: str | None  # TimescaleDB: the job's compress_after as applied in the database

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def retention_report(
    conn: psycopg.Connection,
    policies: Mapping[str, RetentionPolicy],
    now: datetime | None = None,
    guard: datetime | None = None,
) -> list[TableRetentionReport]:
    now = now or datetime.now(UTC)
    guard = guard or now - PROTECT_AT_LEAST
    layout = storage_layout(conn)
    jobs = compression_jobs(conn) if layout == "timescaledb" else {}
    out = []
    for table, p in policies.items():
        cutoff = p.cutoff(now)
        if layout == "timescaledb":
            rows = conn.execute(
                "SELECT chunk_name, range_start, range_end, is_compressed "
                "FROM timescaledb_information.chunks WHERE hypertable_name = %s "
                "ORDER BY range_start",
                (table,),
            ).fetchall()
            pieces = [(r[0], r[1], r[2]) for r in rows]
            compressed = sum(1 for r in rows if r[3])
        else:
            pieces = conn.execute(
                "SELECT partition_name, range_start, range_end FROM tapeflow_partitions "
                "WHERE table_name = %s AND NOT is_default ORDER BY range_start",
                (table,),
            ).fetchall()
            compressed = None
        written = conn.execute(
            "SELECT day FROM tapeflow_partition_writes WHERE table_name = %s AND last_write >= %s", (table, guard)
        ).fetchall()
        written_days = [datetime(d[0].year, d[0].month, d[0].day, tzinfo=UTC) for d in written]
        expired, protected = [], []
        oldest_written = min(written_days, default=None)
        for name, start, end in pieces:
            if cutoff is None or end > cutoff:
                continue
            if layout == "timescaledb":
                keep = oldest_written is not None and end > oldest_written
            else:
                keep = any(d < end and d + DAY > start for d in written_days)
            (protected if keep else expired).append(name)
        job = jobs.get(table)
        out.append(
            TableRetentionReport(
                table,
                format_duration(p.keep),
                format_duration(p.compress_after) if layout == "timescaledb" else "n/a",
                "configured" if p.configured else "default",
                layout,
                len(pieces),
                compressed,
                pieces[0][1] if pieces else None,
                expired,
                protected,
                format_duration(job) if job is not None else (None if layout == "plain" else "none"),
            )
        )
    return out
