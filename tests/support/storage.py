"""The two storage layouts in tests: which one a database has, and a migrated database ready for trades.

Both layouts are first-class: a server with TimescaleDB gives hypertables, one without gives plain
time partitions (sinks/migrate.py). Tests that write rows use `migrate_for_rows`, which prepares
either layout for the rows' time range, and assert with `table_layout` that they got the layout the
server should give.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from sinks.migrate import ENGINE_EXTENSION, MigrationReport, migrate
from sinks.partitions import ensure_partitions


def table_layout(conninfo: str, table: str) -> str:
    """'hypertable', 'partitioned' (plain time partitions) or 'table'."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        hyper = (
            conn.execute("SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL").fetchone()[0]
            and conn.execute(
                "SELECT 1 FROM _timescaledb_catalog.hypertable WHERE schema_name = 'public' AND table_name = %s",
                (table,),
            ).fetchone()
        )
        if hyper:
            return "hypertable"
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    return "partitioned" if kind and kind[0] == "p" else "table"


def expected_layout(timescaledb: bool) -> str:
    """The layout of `trades` after a default migration on a server with or without TimescaleDB."""
    return "hypertable" if timescaledb else "partitioned"


def migrate_for_rows(
    conninfo: str, tables: dict[str, tuple[datetime, datetime]], engine_extension: str | None = ENGINE_EXTENSION
) -> MigrationReport:
    """Migrate, then make the partitions of each table's [start, end] (hypertables need nothing)."""
    report = migrate(conninfo, engine_extension=engine_extension)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for table, (start, end) in tables.items():
            ensure_partitions(conn, table, start, end)
    return report
