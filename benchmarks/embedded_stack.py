"""The embedded PostgreSQL (and optionally Apache Kafka) a database benchmark runs against, migrated.

Shared by bench_sink, bench_features and bench_storage so each starts the services the way
`tapeflow up` does (same supervisor, free ports, default durability) instead of its own copy.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def embedded_stack(
    with_broker: bool = True, engine_extension: str | None = "timescaledb"
) -> Iterator[tuple[str | None, str]]:
    """Yield (broker bootstrap or None, superuser conninfo of the migrated `tapeflow` database).

    The database gets the server's layout (hypertables where this machine's PostgreSQL has
    TimescaleDB); `engine_extension=None` asks for plain time partitions on any server.
    """
    from sinks.migrate import migrate
    from tapeflow.stack.broker import KafkaBroker
    from tapeflow.stack.postgres import EmbeddedPostgres
    from tapeflow.stack.supervisor import Supervisor
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        paths = StackPaths(Path(tmp))
        paths.ensure()
        settings = Settings(home=Path(tmp), broker=None, database_url=None)
        pg = EmbeddedPostgres(settings, paths)
        services = ([KafkaBroker(settings, paths)] if with_broker else []) + [pg]
        sup = Supervisor(settings, paths, say=lambda m: None, services=services, steps=[])
        sup.start_all()
        try:
            conninfo = pg.admin_conninfo(sup.addresses["database"], "tapeflow")
            migrate(conninfo, engine_extension=engine_extension)
            yield sup.addresses.get("broker"), conninfo
        finally:
            sup.stop_all()
