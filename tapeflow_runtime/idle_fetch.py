"""An idle consumer's fetches, spaced out on the embedded broker.

Tansu 0.6.0 answers a fetch by a loop over every partition the request names (a metadata read per
topic, the watermarks twice per partition) and sleeps before it answers, even when it found nothing:
a consumer with a fetch wait W that receives nothing makes 5-10 such passes a second over all its
partitions, for ever. The stack's consumers ask for 24-100 partitions each, so an idle stack kept the
broker at ~7 % of a core (benchmarks/RESULTS.md, issue 34). Apache Kafka answers a fetch as soon as
data arrives and an idle fetch costs it nothing, so this is installed on the embedded broker only.

``IdleFetchCycle`` (confluent-kafka consumers: the sink, the executor): once the whole assignment has
brought no record for ``idle_after_s``, every assigned partition is paused (librdkafka then sends no
fetch at all) and resumed for ``open_s`` every ``every_s``: one or two fetches per cycle instead of
several a second. The first record ends it: every partition it paused is resumed. What it costs is
latency after an idle period only: the first record waits at most ``every_s`` (live market data
never stops that long, so a running stack never enters it; a replay that ended, or an exchange that
cannot be reached, does). Nothing is lost or reordered: a paused partition keeps its position.

Why not a cheaper probe (ListOffsets) instead of the fetches: Tansu answers ListOffsets(latest) by
listing every batch object of the partition, a cost that grows with the partition (measured on a
bare broker with 100 partitions of 200 batches: a probe a second cost 1.5 % of a core, as much as
the idle fetches it would replace).

Hand-rolled because neither client has it: librdkafka's fetch wait is fixed per consumer, and its
pause/resume is the documented way to stop a consumer's fetches without leaving the group.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

#: nothing received on any assigned partition this long: the consumer is idle
IDLE_AFTER_S = 5.0
#: ... or this long when it has received nothing since it started: a restarted service waiting for
#: its first records (the producer restarting too, a broker that came back empty) must not wait a
#: cycle for them (measured: a sink restarted with the broker took 30.5 s to store trades again)
FIRST_IDLE_AFTER_S = 60.0


class IdleFetchCycle:
    """Pause an idle confluent-kafka consumer's fetches, let one through every ``every_s``."""

    def __init__(self, every_s: float, open_s: float, idle_after_s: float = IDLE_AFTER_S,
                 monotonic: Callable[[], float] = time.monotonic, log: Any = None,
                 first_idle_after_s: float = FIRST_IDLE_AFTER_S) -> None:
        if open_s <= 0 or every_s <= open_s:
            raise ValueError(f"need 0 < open_s < every_s, got open_s={open_s} every_s={every_s}")
        self.every_s, self.open_s, self.idle_after_s = every_s, open_s, idle_after_s
        self.first_idle_after_s = max(first_idle_after_s, idle_after_s)
        self.seen_any = False  # a record since the process started
        self.monotonic = monotonic
        self.log = log  # a structlog logger: says when the consumer goes idle and wakes (None: silent)
        self.last_record = monotonic()
        self.paused: list[TopicPartition] | None = None  # what this cycle paused; None: not idle
        self.open_until: float | None = None
        self.next_open = 0.0
        self._asleep_at = 0.0  # last_record when it went idle
        self.idle_periods = 0  # how often the consumer went idle (tests, logs)
        self.openings = 0

    @property
    def idle(self) -> bool:
        return self.paused is not None

    def saw(self, records: int) -> None:
        """The consumer's last poll returned ``records`` records (not counting EOF or error events)."""
        if records:
            self.last_record = self.monotonic()
            self.seen_any = True

    def busy(self) -> None:
        """The service held its fetches for reasons of its own (back-pressure from a slow writer): that
        time is not silence, so the idle clock starts again."""
        self.last_record = self.monotonic()

    def forget(self, consumer=None, assignment: Iterable[TopicPartition] = ()) -> None:
        """The assignment changed (a rebalance, a new subscription): call it from ``on_assign`` with the
        consumer and the new assignment. Whatever this cycle paused that is assigned again is resumed
        here: librdkafka keeps an application's pause on a partition across a rebalance that gives it
        back, and nothing else would resume it (a sink following the topic segments re-subscribes at
        every rollover; a partition left paused so was starved until the supervisor restarted the sink).
        Then the idle clock starts afresh."""
        if consumer is not None and self.paused:
            self._resume(consumer, assignment)
        self.paused, self.open_until = None, None
        self.last_record = self.monotonic()

    def step(self, consumer, assignment: Iterable[TopicPartition] | Callable[[], Iterable[TopicPartition]],
             own_paused: Iterable[tuple[str, int]] = ()) -> None:
        """Called from the consumer's own loop after each poll. ``own_paused``: (topic, partition) the
        service paused for reasons of its own (back-pressure, input order): never resumed here.
        ``assignment`` may be a callable (``consumer.assignment``): called only when a pause or a resume
        needs it, not on every pass of an idle loop."""
        if callable(assignment):
            assignment = _Lazy(assignment)
        now = self.monotonic()
        if self.paused is not None:
            if self.last_record > self._asleep_at:  # a record came: awake again
                self._resume(consumer, assignment)
                self.paused, self.open_until = None, None
                if self.log is not None:
                    self.log.info("records again: fetching as usual", idle_openings=self.openings)
            elif self.open_until is not None:
                if now >= self.open_until:
                    self._pause(consumer, assignment)
                    self.open_until, self.next_open = None, now + self.every_s
            elif now >= self.next_open:
                self._resume(consumer, assignment)
                self.open_until = now + self.open_s
                self.openings += 1
            return
        quiet_s = self.idle_after_s if self.seen_any else self.first_idle_after_s
        if now - self.last_record < quiet_s:
            return
        mine = set(own_paused)
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in assignment if (tp.topic, tp.partition) not in mine]
        if not wanted:
            return
        self.paused, self._asleep_at = wanted, self.last_record
        self._pause(consumer, assignment)
        self.next_open = now + self.every_s
        self.idle_periods += 1
        if self.log is not None:
            self.log.info(f"no record for {quiet_s:g} s: one fetch every {self.every_s:g} s until one "
                          "comes (the embedded broker's idle CPU)", partitions=len(wanted))

    def _current(self, assignment: Iterable[TopicPartition]) -> list[TopicPartition]:
        have = {(tp.topic, tp.partition) for tp in assignment}
        return [tp for tp in self.paused or () if (tp.topic, tp.partition) in have]

    def _pause(self, consumer, assignment: Iterable[TopicPartition]) -> None:
        parts = self._current(assignment)
        if parts:
            try:
                consumer.pause(parts)
            except KafkaException:  # not assigned any more: the rebalance's forget() follows
                self.paused = None

    def _resume(self, consumer, assignment: Iterable[TopicPartition]) -> None:
        parts = self._current(assignment)
        if parts:
            try:
                consumer.resume(parts)
            except KafkaException:
                self.paused = None


class _Lazy:
    """An assignment asked of the consumer the first time it is iterated, then kept for the pass."""

    def __init__(self, get: Callable[[], Iterable[TopicPartition]]) -> None:
        self._get, self._parts = get, None

    def __iter__(self):
        if self._parts is None:
            self._parts = list(self._get())
        return iter(self._parts)
