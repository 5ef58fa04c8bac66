"""The executor's side of a topic-epoch rollover, in its own process (``tapeflow_runtime.epochs``:
``EpochCursor`` says the sequence and why it survives a kill anywhere).

Before, the supervisor stopped the old epoch's executor process and started a new one. Now the process
stays and runs one ``ExecutorService`` per epoch, one after the other, behind one ``/health`` and
``/metrics`` endpoint: once the rollover reaches the ``executor`` step (the engine has moved on, so
epoch N's signals are final) and N's group has committed ``signals`` and ``md.trades`` to their true
ends (``md.book``/``md.mark`` too, or ``QUOTES_WAIT_S`` passed: a group was seen to leave them
unread for minutes, and they are stored by the sink either way), N's service stops (it commits), its
state is carried into N+1 (``execution.carry``), the carry's ends are recorded for the supervisor
(``save_carried``), and N+1's service starts after the carried signals: it restores from the carried
records exactly as after a restart. N+1's service is started *gated* as soon as the rollover opens, so
its group join (~3 s on Tansu) overlaps N's drain; when the gate opens it seeks to the carry's ends,
commits them as its group's start and restores (``ExecutorService._open_gate``). A worker that sees
the rollover only once it is finished (restarted in the middle) commits the start and starts N+1's
service after the carry, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from execution.carry import carry_executor_state
from tapeflow_runtime.epochs import EpochCursor, save_carried
from tapeflow_runtime.kafka_client import existing_partitions
from tapeflow_runtime.native_memory import release_freed_memory
from tapeflow_runtime.offsets import commit_group_start, group_committed, true_ends

log = structlog.get_logger("executor")
REQUIRED = ("signals", "md.trades")
QUOTES_WAIT_S = 30.0
POLL_S = 0.25


class ExecutorEpochs:
    """Runs the executor's services epoch after epoch (see the module doc)."""

    def __init__(self, cursor: EpochCursor, bootstrap: str, home: Path, inputs: Sequence[str]) -> None:
        self.cursor, self.bootstrap, self.home, self.inputs = cursor, bootstrap, Path(home), tuple(inputs)

    def first(self) -> tuple[int, str]:
        return self.cursor.first(self._started)

    def _tps(self, prefix: str, names: Sequence[str]) -> list[tuple[str, int]]:
        return existing_partitions(self.bootstrap, [prefix + t for t in names])

    def _started(self, group: str, prefix: str) -> bool:
        try:
            return any(o >= 0 for o in group_committed(self.bootstrap, group, self._tps(prefix, self.inputs)).values())
        except Exception:  # noqa: BLE001 - not answerable: run the current epoch, which is always right
            return False

    def run(self, make: Callable[..., Any], on_service: Callable[[Any], None], stop: threading.Event,
            epoch: int, prefix: str) -> None:
        """Run ``make(prefix)``'s service (``run(stop_event)`` in a thread, ``group`` its consumer group)
        epoch after epoch until ``stop``; an exception of a service is raised here. When a rollover
        opens, ``make(next_prefix, gate=Event())`` starts the next epoch's service beside the old one:
        it joins its group (held ~3 s by Tansu) while the old one drains, and starts from the carry's
        ends once its gate is set (``ExecutorService._open_gate``)."""
        service = make(prefix)
        running = _Running(service)
        upcoming: _Running | None = None  # the next epoch's gated service, once the rollover opens
        try:
            while True:
                on_service(service)
                nxt = ends = quotes = None
                finished_at = 0.0
                while running.thread.is_alive():
                    if stop.wait(POLL_S):
                        break
                    if upcoming is None and (opening := self.cursor.opening(epoch)) is not None:
                        upcoming = _Running(make(opening[1], gate=threading.Event()))
                    if upcoming is not None and upcoming.failed:
                        raise upcoming.failed[0]
                    if nxt is None and (nxt := self.cursor.finished(epoch)) is not None:
                        finished_at = time.monotonic()
                        ends = _nonempty(true_ends(self.bootstrap, self._tps(prefix, REQUIRED)))
                        quotes = _nonempty(true_ends(self.bootstrap, self._tps(
                            prefix, [t for t in self.inputs if t not in REQUIRED])))
                        log.info("epoch finished: draining", epoch=epoch, next_epoch=nxt[0])
                    if nxt is not None and self._drained(prefix + self.cursor.group, ends, quotes, finished_at):
                        break
                running.stop()
                if stop.is_set() or nxt is None:
                    return
                paused = time.monotonic()
                old_prefix, (epoch, prefix) = prefix, nxt
                carried = carry_executor_state(self.bootstrap, old_prefix, prefix)
                save_carried(self.home, epoch, carried)
                group = prefix + self.cursor.group
                if upcoming is not None and upcoming.service.prefix == prefix:
                    service = upcoming.service
                    service.starts = {(prefix + "signals", p): end
                                      for p, end in carried.get("signals", {}).items()}
                    service.gate.set()
                    running, upcoming = upcoming, None
                else:  # a rollover seen only once finished (a restart in the middle): as before the gate
                    if upcoming is not None:  # (never seen) gated on another epoch: it restored nothing
                        upcoming.stop(reraise=False)
                        upcoming = None
                    commit_group_start(self.bootstrap, group, [prefix + t for t in self.inputs],
                                       {prefix + "signals": carried.get("signals", {})})
                    service = make(prefix)
                    running = _Running(service)
                log.info("executor moved on to the next topic epoch", epoch=epoch, group=group,
                         records_carried=sum(sum(v.values()) for v in carried.values()),
                         seconds=round(time.monotonic() - paused, 2))
                # the old service's clients and threads are gone: what glibc keeps free of them goes
                # back to the OS (native_memory: without it the process grew ~0.5 MB per rollover)
                release_freed_memory()
        finally:  # leaving (a stop, an error of either service): no service thread is left running
            for left in (upcoming, running):
                if left is not None:
                    left.stop(reraise=False)

    def _drained(self, group: str, ends: dict, quotes: dict, finished_at: float) -> bool:
        done = group_committed(self.bootstrap, group, {**ends, **quotes})
        if any(done.get(tp, -1) < end for tp, end in ends.items()):
            return False
        behind = [tp for tp, end in quotes.items() if done.get(tp, -1) < end]
        if behind and time.monotonic() - finished_at < QUOTES_WAIT_S:
            return False
        if behind:
            log.warning("md.book/md.mark not read to their end; moving on (the sink stores them either way)",
                        waited_s=QUOTES_WAIT_S, partitions=len(behind))
        return True


def _nonempty(ends: dict) -> dict:
    return {tp: end for tp, end in ends.items() if end > 0}


class _Running:
    """One service running in its own thread, with the event that stops it."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.inner = threading.Event()
        self.failed: list[BaseException] = []
        self.thread = threading.Thread(target=_catching, args=(service.run, self.inner, self.failed), daemon=True,
                                       name=f"executor-{service.prefix or 'plain'}")
        self.thread.start()

    def stop(self, reraise: bool = True) -> None:
        self.inner.set()
        self.thread.join()
        if self.failed and reraise:
            raise self.failed[0]


def _catching(run: Callable[[threading.Event], None], stop: threading.Event, failed: list[BaseException]) -> None:
    try:
        run(stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
        failed.append(exc)
