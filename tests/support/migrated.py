"""Migrated databases for tests, copied from a template migrated once per test process.

Why: about forty tests need a migrated schema only as their setting, and migrating an empty
database runs every migration file (~1.5 s wall, ~0.6 CPU-s of PostgreSQL on this machine), for
each of them, in a suite that is CPU-bound. `CREATE DATABASE ... TEMPLATE` copies a database that
was migrated once instead (measured: the copy, the check below and the DROP cost PostgreSQL about
half of an empty database plus a migration). Tests of the migrations themselves (tests/sinks/
test_migrations.py, the storage-engine tests) keep migrating fresh databases.

One template per layout and process (pytest-xdist workers each have their own), made on first use:

- the server's default layout, `migrate(conninfo)`: hypertables where the server has TimescaleDB
  (the copy is then exactly that layout), plain time partitions elsewhere;
- the plain layout, `migrate(conninfo, engine_extension=None)`, on any server.

What a copy would otherwise get wrong, and how it is kept equal to a fresh migration:

- Partitions: the plain layout pre-creates day and month partitions around `now()`. A template is
  therefore made per UTC day: after midnight a new one is made (and the old one dropped), so a copy
  has the partitions a migration on that day would make.
- Database-level settings live in `pg_database`, not in the copied files: 0001's
  `GRANT CONNECT ON DATABASE` is granted on each copy as the migration grants it. (Roles are
  cluster-wide: the template's migration made them.) tests/sinks/test_migrations.py compares a copy
  with a freshly migrated database, ACLs included.
- Currency: `migrate()` runs on every copy (tens of milliseconds when nothing is pending) and must
  find nothing to apply; the copy is also then seen by migrate exactly as a migrated database is.
- No connection to a template may be open while it is copied: the template refuses connections
  once migrated (`ALLOW_CONNECTIONS false`, like template0), which also keeps TimescaleDB's
  background scheduler off it; a lock serialises this process's threads around the template.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime

import psycopg
from psycopg import sql

from sinks.migrate import ENGINE_EXTENSION, MigrationReport, migrate


class MigratedTemplates:
    """Migrated template databases on one server, and copies of them (see the module docstring)."""

    def __init__(self, conninfo: Callable[[str], str], today: Callable[[], date] = lambda: datetime.now(UTC).date()):
        self._conninfo = conninfo
        self._today = today
        self._lock = threading.Lock()
        self._tag = uuid.uuid4().hex[:8]
        self._templates: dict[str | None, tuple[date, str]] = {}

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self._conninfo("postgres"), autocommit=True)

    def _template(self, engine_extension: str | None) -> str:
        """The template's name for this layout and UTC day; made (migrated) on first use. Holds the lock."""
        day = self._today()
        made = self._templates.get(engine_extension)
        if made and made[0] == day:
            return made[1]
        name = f"tpl_{engine_extension or 'plain'}_{self._tag}_{day:%Y%m%d}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        migrate(self._conninfo(name), engine_extension=engine_extension)
        with self._admin() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            if made:  # yesterday's: its partitions are a day old
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(made[1])))
        self._templates[engine_extension] = (day, name)
        return name

    def create(self, name: str, engine_extension: str | None = ENGINE_EXTENSION) -> MigrationReport:
        """Database `name`, a copy of the migrated template of that layout; returns the check's report."""
        with self._lock:
            template = self._template(engine_extension)
            with self._admin() as conn:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
                )
                # 0001's database-level grant: pg_database is not copied with the files
                conn.execute(
                    sql.SQL("GRANT CONNECT ON DATABASE {} TO tapeflow_writer, tapeflow_readonly").format(
                        sql.Identifier(name)
                    )
                )
        report = migrate(self._conninfo(name), engine_extension=engine_extension)
        if report.applied:
            raise AssertionError(f"the copy of {template} was not current: migrate applied {report.applied}")
        return report

    def drop_all(self) -> None:
        with self._lock, self._admin() as conn:
            for _day, name in self._templates.values():
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            self._templates.clear()
