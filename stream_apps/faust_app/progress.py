"""Progress markers on the consumer side: which keys wait for them, and when a marker may be applied.

A source that publishes ``md.progress`` markers (a replay's producer, ``tapeflow replay``, the warm
start; see ``tapeflow_runtime.progress``) promises, per key: every record with event time <= W is at
or below offsets O. A key under such a source is *marked*: its inputs are released only marker by
marker, in order, each once the worker has read every partition up to the marker's offsets (or
started reading past them). Each marker releases exactly the records it covers, so the engine sees
the same input in the same steps however the topics' fetches interleave: the output of a replay is a
function of what the source published, at any speed.

A key becomes marked when a non-final marker for it arrives, or from the start when the worker is
told to wait for progress (a new group reading a replay or a warm start: records read before the
first marker would otherwise slip through the unmarked rule). A final marker ends it: the key goes
back to the unmarked rule (``alignment``). If a marked key holds inputs and no marker has been
applied for ``timeout_s`` (the source died), it is unmarked too, loudly: better late input than none.

Pure bookkeeping, no Kafka; the processor asks and acts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Marker:
    source: str
    watermark: int
    bounds: dict[str, int]  # catalogue topic -> highest offset the marker covers
    final: bool
    sequence: int
    offset: int = -1  # where it is in md.progress (acknowledged with the snapshot that holds its effect)


def marker_from_record(record: Mapping[str, Any], offset: int = -1) -> tuple[str, Marker]:
    """(exchange:symbol, Marker) of a decoded md.progress record."""
    key = f"{record['exchange']}:{record['symbol']}"
    return key, Marker(
        str(record["source"]),
        int(record["watermark_ms"]),
        {str(t): int(o) for t, o in record["offsets"].items()},
        bool(record["final"]),
        int(record["sequence"]),
        offset,
    )


@dataclass
class KeyProgress:
    marked: bool
    since: float  # monotonic: when the key was marked or a marker last applied
    queue: deque[Marker] = field(default_factory=deque)
    applied: int = 0


class ProgressBook:
    """Per key: marked or not, and the markers waiting to be applied."""

    def __init__(self, wait_for_progress: bool, timeout_s: float, monotonic: Callable[[], float]) -> None:
        self.wait_for_progress = wait_for_progress
        self.timeout_s = timeout_s
        self.monotonic = monotonic
        self._keys: dict[str, KeyProgress] = {}
        self.timeouts = 0

    def _state(self, key: str) -> KeyProgress:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = KeyProgress(self.wait_for_progress, self.monotonic())
        return state

    def restored(self, key: str, finished: bool) -> None:
        """A key restored from a snapshot whose source had already sent its final marker: nothing to wait for."""
        if finished:
            self._state(key).marked = False

    def marked(self, key: str) -> bool:
        return self._state(key).marked

    def add(self, key: str, marker: Marker) -> None:
        state = self._state(key)
        if not state.marked and not marker.final:
            state.marked, state.since = True, self.monotonic()
        state.queue.append(marker)

    def next_covered(self, key: str, covered: Callable[[Marker], bool]) -> Marker | None:
        """The key's next marker if every record it covers has been read (then it is consumed)."""
        state = self._keys.get(key)
        if state is None or not state.queue or not covered(state.queue[0]):
            return None
        marker = state.queue.popleft()
        state.applied += 1
        state.since = self.monotonic()
        if marker.final and not state.queue:
            state.marked = False
        return marker

    def timed_out(self, key: str) -> bool:
        """A marked key whose source has gone quiet for ``timeout_s``: unmark it (counted)."""
        state = self._keys.get(key)
        if state is None or not state.marked or self.monotonic() - state.since < self.timeout_s:
            return False
        state.marked = False
        state.queue.clear()
        self.timeouts += 1
        return True

    def queued(self, key: str) -> int:
        state = self._keys.get(key)
        return len(state.queue) if state is not None else 0

    def waiting(self) -> dict[str, int]:
        """Marked keys and how many markers each has queued (for /health)."""
        return {k: len(s.queue) for k, s in self._keys.items() if s.marked}

    def forget(self) -> None:
        """Partitions revoked: the next owner reads the markers again from its committed offsets."""
        self._keys.clear()
