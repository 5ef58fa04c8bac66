"""A supervisor of stand-in services running its loop on a thread, for the supervisor's own tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from tapeflow.stack.supervisor import Supervisor


@dataclass
class Supervised:
    sup: Supervisor
    said: list[str] = field(default_factory=list)  # every line the supervisor said
    result: list[int] = field(default_factory=list)  # supervise()'s exit code, once it returned


@contextmanager
def supervising(settings, paths, services: Sequence) -> Iterator[Supervised]:
    """`services` started and supervised (``supervise(poll_s=0.05)`` on a thread) until the block ends,
    then stopped as `down` stops them, the lock released."""
    said: list[str] = []
    run = Supervised(Supervisor(settings, paths, say=said.append, services=list(services), steps=[]), said)
    run.sup.acquire_lock()
    thread = threading.Thread(target=lambda: run.result.append(run.sup.supervise(poll_s=0.05)), daemon=True)
    try:
        run.sup.start_all()
        thread.start()
        yield run
    finally:
        run.sup.stop_requested.set()
        thread.join(10)
        run.sup.stop_all()
        run.sup.release()
