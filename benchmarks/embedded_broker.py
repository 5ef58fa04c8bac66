"""The broker a benchmark runs against: the given bootstrap, or the embedded Apache Kafka for the run.

Shared by the benchmarks that need only a broker (no database), so each starts and stops Kafka the
way `tapeflow up` does (same supervisor, free ports, its log under the run's home) instead of its own
copy. The benchmark creates the topics it uses (the broker does not auto-create them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def broker(bootstrap: str | None, home: Path) -> Iterator[str]:
    """Yield ``bootstrap`` unchanged, or start Kafka under ``home`` and yield its address."""
    if bootstrap:
        yield bootstrap
        return
    sup = start_broker(home)
    try:
        yield sup.addresses["broker"]
    finally:
        sup.stop_all()


def start_broker(home: Path):
    """The embedded Kafka under ``home``, started by the stack's supervisor (``stop_all()`` stops it);
    its address is ``addresses["broker"]``."""
    from tapeflow.stack.broker import KafkaBroker
    from tapeflow.stack.supervisor import Supervisor
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    sup = Supervisor(settings, paths, say=lambda m: None, services=[KafkaBroker(settings, paths)], steps=[])
    sup.start_all()
    return sup
