"""The broker a benchmark runs against: the given bootstrap, or an embedded Tansu for the run.

Shared by the benchmarks that need only a broker (no database), so each starts and stops Tansu the
way `tapeflow up` does (same supervisor, free port, memory storage) instead of its own copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def broker(bootstrap: str | None, home: Path) -> Iterator[str]:
    """Yield ``bootstrap`` unchanged, or start Tansu under ``home`` and yield its address."""
    if bootstrap:
        yield bootstrap
        return
    from tapeflow.stack.broker import TansuBroker
    from tapeflow.stack.supervisor import Supervisor
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import Settings

    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    sup = Supervisor(settings, paths, say=lambda m: None, services=[TansuBroker(settings, paths)], steps=[])
    sup.start_all()
    try:
        yield sup.addresses["broker"]
    finally:
        sup.stop_all()
