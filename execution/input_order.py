"""Event-time order of the executor's inputs (signals, trades, book, mark) per partition.

Why: a paper fill is decided by the order of inputs. A market entry fills at the first trade at or
after the signal's evaluation time that the executor processes *after* the signal, and a flip
closes the open position at the first trade after the flip signal; so an executor that reads an hour
of md.trades before the signals of that hour (a restart, a replay whose data is already in the
broker) would fill every order an hour late, and never as the backtest does. Live, nothing is ever
late enough for this to matter, and nothing is held.

Rule (the engine's, ``stream_apps.faust_app.alignment``, on records): per partition, an input is
released once every input topic of that partition that has not reached its end has delivered a
record at least as new (its newest event time); a topic at its end (read to the high watermark of
its last fetch, or librdkafka's partition EOF, whichever the service sees first: `InputGate`) does
not hold anything. Released inputs come out in event-time order, and at equal times a signal
first, then mark, then book, then trades: the order the backtest runner feeds
(``backtest.runner``), so a replay of data already in the broker trades exactly as the backtest.
Within one topic-partition inputs leave in offset order (a prefix of what was read), so storing the
offset of each released record keeps the commit safe. A partition whose holding topics deliver
nothing for ``max_hold_s`` and have nothing left to read (an end never reported) has those topics
taken as at their end (``execution.service_inputs.InputGate``); ``release(partition, force=True)``
takes a partition's held inputs as they are.

Across partitions (``release_all``, what the service uses): one executor trades every assigned
partition on one event clock (``execution.event_clock``), so it is handed inputs in event-time order
across them, as the backtest feeds its markets: up to the least watermark of all partitions (one
whose every topic is at its end bounds nothing; one whose bound is unknown holds everything). Ties
across partitions (equal time and rank) go by offset, then queue: deterministic for the same records.
Live, every topic is at its end after each fetch and nothing waits; on a replay or after a restart,
a partition that is behind holds the others, as it must for the clock to be the backtest's.

The consumer delivers all partitions through one queue, so a topic far ahead (an hour of md.trades
read at once) can bury the very records that would release it: the service pauses a topic-partition
holding more than ``PAUSE_AT`` inputs until it is drained below ``RESUME_AT``.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PAUSE_AT, RESUME_AT = 20_000, 5_000
RANK = {"signals": 0, "md.mark": 1, "md.book": 2, "md.trades": 3}
TIME_FIELD = {"signals": "eval_time", "md.mark": "event_time", "md.book": "event_time", "md.trades": "trade_time"}


@dataclass(order=True, slots=True)
class Held:
    time: int
    rank: int
    offset: int
    topic: str = field(compare=False)
    partition: int = field(compare=False)
    item: Any = field(compare=False)  # whatever the caller needs back (decoded record, message)


class InputAligner:
    def __init__(self, topics: Sequence[str] = tuple(RANK)) -> None:
        self.topics = tuple(topics)
        self._queues: dict[tuple[str, int], deque[Held]] = {}
        self._newest: dict[tuple[str, int], int] = {}
        self._at_end: set[tuple[str, int]] = set()

    def add(self, topic: str, partition: int, time: int, offset: int, item: Any) -> None:
        tp = (topic, partition)
        self._queues.setdefault(tp, deque()).append(Held(time, RANK[topic], offset, topic, partition, item))
        self._newest[tp] = max(time, self._newest.get(tp, time))
        self._at_end.discard(tp)

    def newest(self, topic: str, partition: int) -> int:
        """Newest event time added for ``topic``/``partition`` (0 before any)."""
        return self._newest.get((topic, partition), 0)

    def at_end(self, topic: str, partition: int) -> None:
        """The consumer reached the end of ``topic``/``partition`` (its position at the last fetch's high
        watermark, or librdkafka's partition EOF)."""
        self._at_end.add((topic, partition))

    def held(self, partition: int | None = None) -> int:
        return sum(len(q) for (_, p), q in self._queues.items() if partition is None or p == partition)

    def held_by_topic(self) -> dict[tuple[str, int], int]:
        """Held inputs per (topic, partition): the service pauses a topic that runs far ahead."""
        return {tp: len(q) for tp, q in self._queues.items() if q}

    def blocking(self, partition: int) -> list[str]:
        """The topics of ``partition`` that are not at their end (they bound its watermark)."""
        return [t for t in self.topics if (t, partition) not in self._at_end]

    def describe(self, partition: int) -> dict[str, str]:
        """Per topic of ``partition``: at its end, or its newest time and held count (for the log)."""
        out = {}
        for topic in self.topics:
            tp = (topic, partition)
            held = len(self._queues.get(tp, ()))
            out[topic] = "at end" if tp in self._at_end else f"newest={self._newest.get(tp)} held={held}"
        return out

    def partitions(self) -> set[int]:
        return {p for (_, p), q in self._queues.items() if q}

    def watermark(self, partition: int) -> int | None:
        """Event time up to which ``partition``'s inputs are complete; None while one is unknown."""
        mark: int | None = None
        for topic in self.topics:
            tp = (topic, partition)
            if tp in self._at_end:
                continue
            newest = self._newest.get(tp)
            if newest is None:
                return None
            mark = newest if mark is None else min(mark, newest)
        return mark

    def release(self, partition: int, force: bool = False) -> list[Held]:
        """Every held input of ``partition`` up to its watermark (all with ``force``), in order."""
        mark = math.inf if force else self.bound(partition)
        if mark is None:
            return []
        return _merged([q for (_, p), q in self._queues.items() if p == partition and q], mark)

    def known(self) -> set[int]:
        """Every partition the aligner has heard of (a record, an end)."""
        return {p for _, p in self._newest} | {p for _, p in self._at_end} | self.partitions()

    def bound(self, partition: int) -> float | None:
        """Event time up to which ``partition``'s inputs are complete: infinite when every topic is at its
        end, None while a topic not at its end has delivered nothing (it may hold anything)."""
        if all((t, partition) in self._at_end for t in self.topics):
            return math.inf
        return self.watermark(partition)

    def oldest(self) -> int | None:
        """The oldest held input's event time, over every partition (None: nothing held)."""
        return min((q[0].time for q in self._queues.values() if q), default=None)

    def release_all(self, partitions: Iterable[int]) -> list[Held]:
        """Every held input up to the watermark of all ``partitions`` together (the least ``bound``), in
        event-time order across partitions: the order the backtest feeds its markets in (one executor
        trades every assigned partition, on one event clock: ``execution.event_clock``). Within a
        partition this is the order ``release`` gives; nothing is released while a partition's bound is
        unknown."""
        mark = math.inf
        for partition in partitions:
            bound = self.bound(partition)
            if bound is None:
                return []
            mark = min(mark, bound)
        return _merged([q for q in self._queues.values() if q], mark)

    def drop(self, partitions: Sequence[tuple[str, int]]) -> None:
        """Forget revoked partitions (their records are read again by the next owner)."""
        for tp in partitions:
            self._queues.pop(tp, None)
            self._newest.pop(tp, None)
            self._at_end.discard(tp)


def _merged(queues: list[deque[Held]], mark: float) -> list[Held]:
    """The heads of ``queues`` (each in offset order) taken in ``Held`` order while at or before
    ``mark``: a k-way merge that stops at the first head past it (heads are the oldest of their queues,
    so nothing else is due either)."""
    heap = [(q[0], i) for i, q in enumerate(queues)]
    heapq.heapify(heap)
    out: list[Held] = []
    while heap:
        head, i = heapq.heappop(heap)
        if head.time > mark:
            break
        out.append(queues[i].popleft())
        if queues[i]:
            heapq.heappush(heap, (queues[i][0], i))
    return out
