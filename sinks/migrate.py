"""Versioned SQL migrations that work on plain PostgreSQL and use TimescaleDB when it exists.

Files in `sinks/migrations/`: `NNNN_name.sql` always runs; `NNNN_name.timescale.sql` runs only when
the `timescaledb` extension is usable (detected from the catalogue without ever risking the
runner's connection, see sinks.extensions; never required). The first run decides the layout: a
database migrated with plain partitions keeps them even if TimescaleDB appears later (a notice
says so), because a partitioned table cannot become a hypertable. An extension that is installed
but not preloaded gives one line saying how to enable it, and the plain layout. Each file runs once, in its own transaction,
recorded with a checksum in `schema_migrations`; editing an applied file is an error rather than a
silent divergence. A session advisory lock keeps two runners (two sinks starting) from racing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import psycopg

from sinks.extensions import create_extension, extension_state, preload_hint
from tapeflow_runtime.errors import TapeflowError

MIGRATIONS_PACKAGE = "sinks"
MIGRATIONS_DIR = "migrations"
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+?)(\.timescale)?\.sql$")
_LOCK_KEY = 0x7A9EF10
#: checksums earlier releases recorded for files whose comments alone were reworded since (the statements
#: they run are unchanged): accepted as the file applied, so a database migrated before still starts
REWORDED = {
    "0003_market_data": "2018e1dc1ff155f4a969cbcd12c2816f87c3893982eb8655eab39c3a37d40c8a",  # pragma: allowlist secret
    "0016_pipeline_errors_source_key": "dce45e0098a988b7a8b79eef3e51516cb59793e9a89e815b933eac9d5a5237ad",  # pragma: allowlist secret
    "0006_backtest_report": "89937c6c4de84bb61d5cd13c8238f27a7d9c6f8585ae8038436b50a21a9359c5",  # pragma: allowlist secret
    "0010_research_labels": "43c5e53bb124196d3d9c29f5c473cf6f051e0d5386246eeb94e6ec409ac36441",  # pragma: allowlist secret
    "0012_strategy_timeout": "5b9fe0a33f1d10bdbcab4d5d2195abd28dcc7d643f884f208092759459b11467",  # pragma: allowlist secret
    "0013_research_studies": "8cee3efdff102f7b0178c2fe3cd3c21d85d798aedf011b35bdfdd24d18e20ff1",  # pragma: allowlist secret
    "0014_cross_venue_features": "6837110d8ccc3324008a2d140699c75887b19dffc611154f0dc11d6be2f42a39",  # pragma: allowlist secret
    "0017_watchlist_trading": "b2fb4bd7db26c9254de611936829f5a69490d34212a071a8f03357a16793683d",  # pragma: allowlist secret
    "0018_watchlist_leg_fills": "2a8dc7576a72dcf85ee2038bb9f885c240f2daaa712dfad53f9e42a6e42438fe",  # pragma: allowlist secret
    "0019_ui_actions": "73de88be96e5a101c003547013a5a31b638cee386f4d5b1424650746618cb7df",  # pragma: allowlist secret
    "0020_watchlist_commands": "001200fa38a45751d147f83875a1efb246f0e7eb122ab4d162cc0766feeadc25",  # pragma: allowlist secret
    "0021_trade_levels": "997982b1b5d7a66a1ff1e8d6c4deb526295e4102f30ebd027f2c97164f47f915",  # pragma: allowlist secret
}


class MigrationError(TapeflowError):
    """A migration could not be applied or the recorded history disagrees with the files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    timescale: bool
    sql: str

    @property
    def key(self) -> str:
        return f"{self.version:04d}_{self.name}{'.timescale' if self.timescale else ''}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    already: list[str]
    skipped_timescale: list[str]
    timescale: bool
    notice: str = ""  # one line for the user, e.g. TimescaleDB installed but not preloaded

    @property
    def engine(self) -> str:
        return "TimescaleDB" if self.timescale else "plain PostgreSQL"

    @property
    def pending(self) -> int:
        return len(self.applied)


def load_migrations() -> list[Migration]:
    folder = resources.files(MIGRATIONS_PACKAGE).joinpath(MIGRATIONS_DIR)
    out = []
    for entry in folder.iterdir():
        m = _FILE_RE.match(entry.name)
        if not m:
            if entry.name.endswith(".sql"):
                raise MigrationError(f"migration file name {entry.name!r} does not match NNNN_name[.timescale].sql")
            continue
        out.append(Migration(int(m.group(1)), m.group(2), bool(m.group(3)), entry.read_text()))
    out.sort(key=lambda mig: (mig.version, mig.timescale))
    keys = [mig.key for mig in out]
    if len(set(keys)) != len(keys):
        raise MigrationError("duplicate migration files")
    return out


_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    key        text PRIMARY KEY,
    version    integer NOT NULL,
    checksum   text NOT NULL,
    timescale  boolean NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


ENGINE_EXTENSION = "timescaledb"


def _applied(conn: psycopg.Connection) -> dict[str, str]:
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return {}
    return dict(conn.execute("SELECT key, checksum FROM schema_migrations").fetchall())


def locked_layout(migrations: list[Migration], done: dict[str, str]) -> str | None:
    """The storage layout the applied migrations already chose, or None while nothing decided it.

    'plain' when a file with a TimescaleDB twin ran without it (its tables are partitioned now, and a
    partitioned table cannot become a hypertable); 'timescaledb' when any twin ran.
    """
    twins = {m.version for m in migrations if m.timescale}
    if any(m.timescale and m.key in done for m in migrations):
        return "timescaledb"
    if any(not m.timescale and m.version in twins and m.key in done for m in migrations):
        return "plain"
    return None


def choose_engine(
    conninfo: str, migrations: list[Migration], done: dict[str, str], extension: str | None = ENGINE_EXTENSION
) -> tuple[bool, str]:
    """(use TimescaleDB, one-line notice or ""): creates the extension when it is usable and wanted.

    Never tries CREATE EXTENSION on a server that would answer with a FATAL (see sinks.extensions).
    `extension=None` asks for the plain layout whatever the server has.
    """
    layout = locked_layout(migrations, done)
    if extension is None:
        if layout == "timescaledb":
            raise MigrationError("this database uses hypertables; it cannot be migrated to plain partitions")
        return False, ""
    state = extension_state(conninfo, extension)
    if layout == "plain":
        if state.usable:
            return False, (
                f"{extension} is available but this database was migrated with plain PostgreSQL "
                f"partitions; keeping them (a new database would use {extension})"
            )
        return False, ""
    if state.state == "installed":
        return True, ""
    if state.state == "available":
        state = create_extension(conninfo, extension)
        if state.state == "installed":
            return True, ""
    if layout == "timescaledb":
        raise MigrationError(
            f"this database uses {extension} but the extension is not usable: {preload_hint(state) or state.detail}"
        )
    return False, preload_hint(state)


def migrate(
    conninfo: str, log: Callable[[str], None] = lambda _m: None, engine_extension: str | None = ENGINE_EXTENSION
) -> MigrationReport:
    """Apply pending migrations; `engine_extension` is the extension the `.timescale.sql` files need.

    `engine_extension=None` gives the plain layout (time partitions) even where TimescaleDB is usable:
    what a database migrated before TimescaleDB was installed has, and what the tests and benchmarks
    use to run both layouts on one server.
    """
    migrations = load_migrations()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_HISTORY_DDL)
            done = _applied(conn)
            ts, notice = choose_engine(conninfo, migrations, done, engine_extension)
            if notice:
                log(notice)
            applied, already, skipped = [], [], []
            for mig in migrations:
                if mig.key in done:
                    if done[mig.key] not in (mig.checksum, REWORDED.get(mig.key)):
                        raise MigrationError(
                            f"migration {mig.key} was changed after it was applied; add a new migration instead"
                        )
                    already.append(mig.key)
                    continue
                if mig.timescale and not ts:
                    skipped.append(mig.key)
                    continue
                log(f"applying {mig.key}")
                try:
                    with conn.transaction():
                        conn.execute(mig.sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (key, version, checksum, timescale) VALUES (%s,%s,%s,%s)",
                            (mig.key, mig.version, mig.checksum, mig.timescale),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"migration {mig.key} failed: {str(exc).strip().splitlines()[0]}") from exc
                applied.append(mig.key)
            return MigrationReport(applied, already, skipped, ts, notice)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def set_role_passwords(conninfo: str, passwords: dict[str, str]) -> list[str]:
    """Give the tapeflow roles LOGIN with the given passwords (external servers; needs CREATEROLE).

    Kept out of the SQL files on purpose: migrations are committed, passwords never are.
    """
    from psycopg import sql

    done = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for role, password in passwords.items():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                raise MigrationError(f"role {role} does not exist (run the migrations first)")
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
            done.append(role)
    return done


def pending_migrations(conninfo: str) -> list[str]:
    """Migration keys not yet applied (TimescaleDB-only files count only when it is available)."""
    migrations = load_migrations()
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
        has_table = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0]
        done = set()
        if has_table:
            done = {r[0] for r in conn.execute("SELECT key FROM schema_migrations").fetchall()}
        layout = locked_layout(migrations, dict.fromkeys(done, ""))
        ts = layout == "timescaledb" or (
            layout is None
            and bool(conn.execute("SELECT 1 FROM pg_extension WHERE extname = %s", (ENGINE_EXTENSION,)).fetchone())
        )
    return [m.key for m in migrations if m.key not in done and (ts or not m.timescale)]


def storage_engine(conninfo: str) -> str:
    """What stores the data, for `tapeflow status`: 'TimescaleDB 2.x (hypertables)' or 'plain PostgreSQL ...'."""
    migrations = load_migrations()
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=3) as conn:
        done = _applied(conn)
        layout = locked_layout(migrations, done)
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (ENGINE_EXTENSION,)).fetchone()
    if layout == "timescaledb":
        return f"TimescaleDB {version[0] if version else '?'} (hypertables, compression)"
    if layout == "plain":
        return "plain PostgreSQL (time partitions)"
    return "not migrated yet"
