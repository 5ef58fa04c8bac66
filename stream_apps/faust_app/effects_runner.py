"""Perform the processor's ``Effects`` on Kafka to the end, one set after another, even when the
caller is cancelled.

Why: ``EngineProcessor`` hands back effects whose bookkeeping it has already done (a snapshot taken
clears the key's unsaved offsets). If the coroutine performing them is cancelled between the
snapshot and the acknowledgements, those offsets are acknowledged by nobody: the next flush sees
nothing unsaved and the group commits nothing. It happened: the worker stops by cancelling its
timer task, which was sending a periodic snapshot; the clean stop of the restart test then committed
no offset at all (1 run in 6 under CPU load; the restarted worker would re-read the whole log).

So each set runs in its own task that a cancellation of the caller does not reach
(``asyncio.shield``), and the next set, and ``settle``, first wait for it: snapshots of one key
reach the table in the order they were taken, and a flush before a commit sees every earlier
acknowledgement. Hand-rolled because it is ten lines of asyncio; no library offers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

E = TypeVar("E")


class EffectsRunner(Generic[E]):
    """Runs ``perform(effects)`` for each set, in call order, each to its end."""

    def __init__(self, perform: Callable[[E], Awaitable[None]]) -> None:
        self._perform = perform
        self._last: asyncio.Future[None] | None = None

    async def run(self, effects: E) -> None:
        """Perform ``effects`` after every earlier set; a cancelled caller does not stop it."""
        await self.settle()
        if not effects:
            return
        task = asyncio.ensure_future(self._perform(effects))
        self._last = task
        await asyncio.shield(task)

    async def settle(self) -> None:
        """Wait until the last set has been performed (its error, if any, is raised here)."""
        last = self._last
        if last is None:
            return
        try:
            await asyncio.shield(last)
        finally:
            if last.done() and self._last is last:
                self._last = None  # a failed set is reported once, not before every later set
