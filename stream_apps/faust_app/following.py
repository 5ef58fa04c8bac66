"""The engine's side of a topic-epoch rollover, in the worker's own process (``tapeflow_runtime.epochs``:
``EpochCursor`` says the sequence and why it survives a kill anywhere).

Before, the supervisor stopped the old epoch's engine process and started a new one: a fresh
interpreter, the numba kernels loaded again and a group join, ~12 s in which no feature was computed.
Now the process stays (``worker.run_worker``). As soon as a rollover from epoch N opens (``opening``),
a Faust app for N+1 is started beside N's, *gated*: it joins its group
and restores its (empty) table while N's app drains, but applies nothing. A new group's join costs
~3 s on Tansu (it holds the first JoinGroup for a while) and Faust's start ~1 s more; overlapped, the
features pause only for the rest: once the rollover says N is finished for the engine (its md.* are
final, ``finished``) and N's group has committed N's inputs to their true ends (its
snapshots then hold every input), N's app is frozen (it applies nothing more, its timers stop), the
newest snapshot of every key is carried into N+1's changelog (``carry``) and N+1's table
(``EngineWorker.adopt``), the carry is recorded (``save_carried``: a restarted worker then runs N+1)
and the gate opens; N's app leaves its group after that. The N+1 group has no committed offset
before, so it reads its topics from the start (``auto_offset_reset`` earliest). The rollover holds
the producers' switch until N+1's app has joined (``/health`` ``next_prefix``), so the join overlaps
the old epoch's last seconds rather than the new one's first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

from tapeflow_runtime.epochs import EpochCursor, load_carried, save_carried
from tapeflow_runtime.kafka_client import existing_partitions
from tapeflow_runtime.offsets import group_committed, true_ends

from .carry import carry_engine_snapshots
from .config import INPUT_TOPICS, PROGRESS_TOPIC, EngineAppConfig

log = structlog.get_logger("engine")
GROUP = "tapeflow-engine"
POLL_S = 0.25


def engine_config_for(config: EngineAppConfig, prefix: str, **update: Any) -> EngineAppConfig:
    """``config`` moved to the epoch named by ``prefix``: its group, its topics, its data directory."""
    app_id = prefix + GROUP
    return config.model_copy(update={"app_id": app_id, "topic_prefix": prefix,
                                     "datadir": config.datadir.parent / app_id, **update})


def read_topics(config: EngineAppConfig) -> list[str]:
    return [config.topic(t) for t in (*INPUT_TOPICS, PROGRESS_TOPIC)]


class EngineEpochs:
    """Which epoch the worker runs and when it moves on (see the module doc)."""

    def __init__(self, cursor: EpochCursor, bootstrap: str, home: Path) -> None:
        self.cursor = cursor
        self.bootstrap = bootstrap
        self.home = Path(home)

    def first(self) -> tuple[int, str]:
        """Where a (re)started worker runs: the next epoch once its carry into it is recorded."""
        return self.cursor.first(
            lambda _group, _prefix: load_carried(self.home, self.cursor.state().next_epoch, "engine") is not None)

    async def opening(self, epoch: int) -> tuple[int, str]:
        """Wait until a rollover from ``epoch`` has begun (its next epoch's name slot is chosen then);
        the next (epoch, prefix). The next epoch's app can join its group from here on."""
        while (nxt := self.cursor.opening(epoch)) is None:
            await asyncio.sleep(POLL_S)
        return nxt

    async def finished(self, epoch: int) -> tuple[int, str]:
        """Wait until the rollover says ``epoch`` is finished for the engine; the next (epoch, prefix)."""
        while (nxt := self.cursor.finished(epoch)) is None:
            await asyncio.sleep(POLL_S)
        return nxt

    async def drained(self, epoch: int, config: EngineAppConfig,
                      snapshot: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Wait until the group ``config.app_id`` committed every input partition of its (finished)
        epoch to its true end: its snapshots then hold every input. ``snapshot`` (the worker's
        ``snapshot_now``) is called before each look, so the last inputs are committable within a
        commit interval instead of the snapshot timer's 5 s. Returns True."""
        began = time.monotonic()
        tps = await asyncio.to_thread(existing_partitions, self.bootstrap, read_topics(config))
        ends = {tp: end for tp, end in (await asyncio.to_thread(true_ends, self.bootstrap, tps)).items() if end > 0}
        log.info("epoch finished: draining", epoch=epoch, partitions=len(ends))
        while True:
            if snapshot is not None:
                await snapshot()
            done = await asyncio.to_thread(group_committed, self.bootstrap, config.app_id, ends)
            if all(done.get(tp, -1) >= end for tp, end in ends.items()):
                log.info("epoch drained", epoch=epoch, seconds=round(time.monotonic() - began, 2))
                return True
            await asyncio.sleep(POLL_S)

    def carry(self, old: EngineAppConfig, new: EngineAppConfig, epoch: int,
              newest: dict[bytes, tuple[int, bytes]] | None = None) -> dict[bytes, tuple[int, bytes]]:
        """Carry the state into the new epoch's changelog and record it (both idempotent); the
        snapshots carried, for the new worker's table (``EngineWorker.adopt``). ``newest``: the old
        worker's own copy of every key's newest snapshot (``EngineWorker.snapshots``), if it has it."""
        carried = carry_engine_snapshots(self.bootstrap, old.app_id, new.app_id, newest=newest)
        save_carried(self.home, epoch, {}, "engine")
        return carried
