"""Staging a fault on the fake exchange's replay: wait on a condition while the replay is held
(``pause_replay``), never a fixed sleep, so a loaded machine changes when a step happens, not what
the producer sees."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Return once ``condition()`` holds, or after ``timeout_s`` (the test's assertions then say why)."""
    for _ in range(int(timeout_s / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
