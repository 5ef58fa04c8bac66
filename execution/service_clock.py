"""The ``now`` the executor service passes its executor: event time in paper mode
(``execution.event_clock``), the wall clock in testnet and live (real orders, real acks, an exchange
that answers on its own clock).

Paper: every input is handed with the event clock's ``now`` and ``on_clock`` runs where the clock says
(before the input), kill-switch records take the clock's ``now``, and on an assignment the clock comes
back from the committed offsets' metadata (the clock committed with them), else from what the restore
read (module docstring of ``execution.event_clock``). The service's own wall-clock tick (gauges, SLO
windows, consumer lag, and in exchange modes the executor's ``on_clock`` and reconciliation) goes on as
before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaException, TopicPartition

from execution.event_clock import EventClock
from execution.executor import Executor
from schemas.catalogue import market_key
from tapeflow_runtime.offsets import CommittedOffsetError, committed_offsets

log = structlog.get_logger("executor")


class ExecutorClock:
    """Event time for paper, the wall clock otherwise (module docstring)."""

    def __init__(self, mode: str, wall: Callable[[], int]) -> None:
        self.wall = wall
        self.events: EventClock | None = EventClock() if mode == "paper" else None
        self.restored_from = "none"  # where the last assignment's clock came from (log, tests)

    @property
    def on_events(self) -> bool:
        return self.events is not None

    def now(self) -> int:
        """What the executor's clock reads between inputs (kill-switch records, health, the risk state)."""
        return self.events.now if self.events is not None else self.wall()

    def before(self, ex: Executor, name: str, when: int, record: Mapping[str, Any] | Exception) -> int:
        """The ``now`` for an input of ``name`` at event time ``when``; on event time, the executor's clock
        is ticked first when due. An undecodable input (dead-lettered) moves nothing."""
        if self.events is None:
            return self.wall()
        if isinstance(record, Exception):
            return self.events.now
        now, tick = self.events.advance(name, when, market_key(record["exchange"], record["symbol"]))
        if tick:
            ex.on_clock(now)
        return now

    def after(self, ex: Executor, name: str) -> None:
        """An input was handed: a signal, mark or book renews the markets whose trades tick."""
        if self.events is not None:
            self.events.handed(name, ex.busy_markets)

    def metadata(self) -> str | None:
        """What goes with the committed input offsets (the clock at that cut), None on the wall clock."""
        return self.events.encode() if self.events is not None else None

    # --- on an assignment -----------------------------------------------------------------------------
    def committed(self, consumer: Consumer, topics: Iterable[str], partitions: list[int]) -> bool:
        """Take the clock committed with the group's offsets of ``topics`` on ``partitions`` (the newest:
        ``EventClock.latest``); False when none was (a new group, one that committed without it)."""
        if self.events is None:
            return False
        try:
            answer = committed_offsets(consumer, [TopicPartition(t, p) for t in topics for p in partitions], 10)
        except (KafkaException, CommittedOffsetError) as exc:
            log.warning("committed event clock not read: it starts from the restored state", error=str(exc))
            return False
        clock = EventClock.latest(tp.metadata for tp in answer if tp.offset >= 0)
        if clock is None:
            return False
        self.events, self.restored_from = clock, "committed"
        return True

    def from_restore(
        self,
        trades: Iterable[Mapping[str, Any]],
        books: Iterable[Mapping[str, Any]],
        outputs: Iterable[Mapping[str, Any]],
    ) -> None:
        """No committed clock: ``now`` the newest event time of the warm market data and of our restored
        orders and positions (fresh group: -1, the first input sets it)."""
        if self.events is None:
            return
        times = [int(r["trade_time"]) for r in trades] + [int(r["event_time"]) for r in books]
        times += [int(r["event_time"]) for r in outputs if r.get("mode") == "paper" and r.get("event_time") is not None]
        self.events = EventClock.from_restore(times, ())
        self.restored_from = "restore" if times else "none"

    def restored(self, ex: Executor) -> None:
        """After the executor's state is restored: without a committed clock, its busy markets tick."""
        if self.events is not None and self.restored_from != "committed":
            self.events.ticking = frozenset(ex.busy_markets())
