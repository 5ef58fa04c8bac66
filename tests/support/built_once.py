"""An expensive, read-only test input built once per `make test` run and shared by the pytest-xdist workers.

Why: a module- or session-scoped fixture is per worker, and `make test` hands tests out one at a time
(--maxschedchunk 1), so the tests of one module land on different workers and each built the same
input again (the research study tests built one 2-million-trade feature store three times). Here the
first worker that needs it builds it under an exclusive lock (stdlib `fcntl.flock`: one call, no
dependency for it) in the run's own temporary directory (the parent of the workers' basetemps, which
pytest numbers per run); the others wait on the lock, then find it done. A test that may write to it
works on a copy of its own (`copy_of`). A failed build leaves nothing marked done: the next test
that needs it builds it again, and fails the same way.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest


def run_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary directory of the whole run: shared by its xdist workers, its own per run."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The directory `name`, made by `build(directory)` in the first worker that asks, once per run."""
    root = run_temp_dir(tmp_path_factory)
    target = root / f"built-once-{name}"
    with open(root / f"built-once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not (root / f"built-once-{name}.done").exists():
            shutil.rmtree(target, ignore_errors=True)  # a build that failed half-way
            target.mkdir()
            build(target)
            (root / f"built-once-{name}.done").touch()
    return target


def copy_of(source: Path, destination: Path) -> Path:
    """`source` copied to `destination` (a test's own tmp_path): the test may change its copy."""
    return Path(shutil.copytree(source, destination))
