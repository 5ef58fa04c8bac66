"""Is a PostgreSQL extension usable here, and can it be created without hurting the caller?

Why this exists: TimescaleDB installed on a server but missing from `shared_preload_libraries`
answers `CREATE EXTENSION timescaledb` with a FATAL, which closes the connection. Trying it on the
migration runner's connection ended the migrations ("the connection is closed") and with them
`tapeflow up`. Other extensions fail the same way with an ordinary ERROR (pg_cron: "unrecognized
configuration parameter cron.database_name", because its settings only exist once the library was
loaded at server start).

So availability is decided from the catalogue first (`pg_extension`, `pg_available_extensions`,
`SHOW shared_preload_libraries`), never by trying on a connection that matters:

- installed: usable, nothing to do;
- not listed by the server: unavailable;
- known to need preloading (`MUST_PRELOAD`) and not preloaded: `needs_preload`, without any attempt;
- otherwise one probe, `CREATE EXTENSION` in a transaction that is rolled back, on a throwaway
  connection: success means `available`; a closed connection (a FATAL), or an error that names
  preloading or an unknown configuration parameter, means `needs_preload`; any other error is
  `failed` with its first line.

`create_extension` then creates it on its own connection; a connection closed under it is a reason
to report, not to crash. `preload_hint` is the one line a user reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import psycopg

#: Extensions known to answer CREATE EXTENSION with a FATAL (closing the connection) unless preloaded:
#: never tried without preloading. Others are probed (pg_cron, citus fail with an ERROR).
MUST_PRELOAD = frozenset({"timescaledb"})

State = Literal["installed", "available", "needs_preload", "unavailable", "failed"]


@dataclass(frozen=True)
class ExtensionState:
    name: str
    state: State
    version: str | None = None  # installed version, else the server's default version
    detail: str = ""

    @property
    def usable(self) -> bool:
        return self.state in ("installed", "available")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def preloaded_libraries(conn: psycopg.Connection) -> list[str]:
    """`shared_preload_libraries` as a list of library names (`$libdir/` and quotes removed)."""
    raw = conn.execute("SHOW shared_preload_libraries").fetchone()[0] or ""
    names = []
    for part in raw.split(","):
        name = part.strip().strip('"').removeprefix("$libdir/").strip()
        if name:
            names.append(name)
    return names


def _probe_failure_needs_preload(exc: BaseException, connection_closed: bool) -> bool:
    if connection_closed or isinstance(exc, psycopg.OperationalError):
        return True
    text = str(exc).lower()
    return "preload" in text or "unrecognized configuration parameter" in text


def probe_create(conninfo: str, name: str) -> tuple[bool, BaseException | None, bool]:
    """CREATE EXTENSION `name` in a rolled-back transaction on a throwaway connection.

    Returns (created, error, connection_closed). Nothing persists either way.
    """
    from psycopg import sql

    try:
        conn = psycopg.connect(conninfo, connect_timeout=5)
    except psycopg.Error as exc:
        return False, exc, True
    try:
        try:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
            return True, None, False
        except psycopg.Error as exc:
            # a FATAL arrives either as the error itself or as the socket closing: both end the session
            return False, exc, conn.closed or conn.broken or isinstance(exc, psycopg.OperationalError)
        finally:
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg.Error:
                    pass
    finally:
        conn.close()


def extension_state(
    conninfo: str, name: str, probe: Callable[[str, str], tuple[bool, BaseException | None, bool]] = probe_create
) -> ExtensionState:
    """What `name` looks like on the server behind `conninfo` (see the module docstring)."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        installed = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (name,)).fetchone()
        if installed:
            return ExtensionState(name, "installed", installed[0])
        listed = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = %s", (name,)).fetchone()
        if not listed:
            return ExtensionState(name, "unavailable", None, f"{name} is not installed on the server")
        preloaded = name in preloaded_libraries(conn)
    version = listed[0]
    if name in MUST_PRELOAD and not preloaded:
        return ExtensionState(name, "needs_preload", version, f"{name} is not in shared_preload_libraries")
    created, error, closed = probe(conninfo, name)
    if created:
        return ExtensionState(name, "available", version)
    if not preloaded and _probe_failure_needs_preload(error, closed):
        why = "the server closed the connection" if closed else _first_line(error)
        return ExtensionState(name, "needs_preload", version, f"CREATE EXTENSION {name} failed: {why}")
    return ExtensionState(name, "failed", version, f"CREATE EXTENSION {name} failed: {_first_line(error)}")


def create_extension(conninfo: str, name: str) -> ExtensionState:
    """Create `name` for real on its own connection; a failure is reported in the state, never raised."""
    from psycopg import sql

    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(name)))
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = %s", (name,)).fetchone()[0]
    except psycopg.Error as exc:
        return ExtensionState(name, "failed", None, f"CREATE EXTENSION {name} failed: {_first_line(exc)}")
    return ExtensionState(name, "installed", version)


def preload_hint(state: ExtensionState) -> str:
    """One line: what is wrong and how to enable the extension (empty when nothing is to be said)."""
    if state.state == "needs_preload":
        return (
            f"{state.name} is installed on the database server but not preloaded ({state.detail}); "
            f"using plain PostgreSQL. To enable it: add shared_preload_libraries = '{state.name}' to "
            f"postgresql.conf, restart PostgreSQL and run `tapeflow db migrate` (a database already "
            f"migrated with plain partitions keeps them)"
        )
    if state.state == "failed":
        return f"{state.detail}; using plain PostgreSQL"
    return ""
