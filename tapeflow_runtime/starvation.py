"""Is a consumer receiving what its partitions receive? A pure watch over (position, end offset) samples.

Why: on the embedded broker (Tansu 0.6.0, memory storage) a fetch walks the partition's whole batch
list, so past about 20,000 record batches a consumer with a short fetch wait gets nothing at all.
Nothing fails: the consumer polls, the broker answers empty, and a health check that only asks
"is the process up, is it assigned" keeps saying ok while the sink stops storing trades. The one
symptom every broker shows is this: the partition's end offset moves while the consumer's position
does not. That is what this module recognises; the services feed it samples (their committed or
read position and an end offset asked from the broker, not a cached one) and report ``degraded``
with the reason it gives.

Rules, per partition (``topic[partition]``):
- the position *moving* is progress, whatever the end offset does;
- a partition is *starving* when, for at least ``window_s``, its position has not moved, the end
  offset has moved since the position last did, and the position is still below the end;
- caught up (position ≥ end: on Tansu the end offset counts batches, so a consumer that has read
  everything is at or past it) or idle (end not moving) is never starving;
- except a partition sampled at its consumer's *fetch* position (the caller names those in
  ``fetch_positioned``): a fetch position passes transaction markers and aborted records, so below an
  end that stands still it is starving after ``window_s`` too. Seen on Tansu after a rebalance: a
  worker that took over partitions whose input had all been produced already never received a record
  of them, with nothing in its log; "the end must move" (which keeps a consumer whose *delivered*
  position sits below a transaction marker quiet) hid it;
- partitions that stop being sampled (revoked) are forgotten.

The clock is injected (``now`` in seconds), so the rules are unit-tested without a broker.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass


@dataclass
class _Track:
    position: int
    end: int
    since: float  # when the position last moved (or was first seen)
    end_at_move: int  # the end offset at that moment
    fetch_positioned: bool = False  # a fetch position: a standing end counts too


@dataclass(frozen=True)
class Starving:
    partition: str
    position: int
    end_then: int
    end_now: int
    for_s: float
    standing_end: bool = False

    def describe(self) -> str:
        if self.standing_end:
            return (f"{self.partition} not receiving: fetch position {self.position:,} below the end offset "
                    f"{self.end_now:,} for {self.for_s:.0f} s")
        return (f"{self.partition} not receiving: position {self.position:,} for {self.for_s:.0f} s "
                f"while the end offset moved {self.end_then:,} -> {self.end_now:,}")


class StarvationWatch:
    """Feed it ``observe(now, {partition: (position, end)})``; ``starving()`` lists the partitions that
    receive records their consumer does not (see the module doc for the rules)."""

    def __init__(self, window_s: float = 60.0) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self.window_s = window_s
        self._tracks: dict[str, _Track] = {}
        self._now = 0.0

    def observe(self, now: float, samples: Mapping[str, tuple[int | None, int | None]],
                fetch_positioned: Collection[str] = ()) -> None:
        """One sample per partition: its position (committed or next to read; ``None`` = unknown) and
        its end offset (``None`` = the broker did not answer). Unknown values keep the last ones.
        ``fetch_positioned``: the partitions whose position is the consumer's fetch position."""
        self._now = now
        for name in list(self._tracks):
            if name not in samples:
                del self._tracks[name]
        for name, (position, end) in samples.items():
            track = self._tracks.get(name)
            if track is None:
                if position is not None and end is not None:
                    self._tracks[name] = _Track(position, end, now, end, name in fetch_positioned)
                continue
            track.fetch_positioned = name in fetch_positioned
            if end is not None:
                track.end = end
            if position is not None and position != track.position:
                track.position, track.since, track.end_at_move = position, now, track.end

    def starving(self) -> list[Starving]:
        found = []
        for name, track in sorted(self._tracks.items()):
            waited = self._now - track.since
            moved = track.end > track.end_at_move
            if waited >= self.window_s and (moved or track.fetch_positioned) and track.position < track.end:
                found.append(Starving(name, track.position, track.end_at_move, track.end, waited, not moved))
        return found

    def reason(self) -> str | None:
        """``None`` when every partition receives; else one line naming the worst and how many more."""
        found = self.starving()
        if not found:
            return None
        worst = max(found, key=lambda s: s.end_now - s.position)
        more = f" (and {len(found) - 1} more partitions)" if len(found) > 1 else ""
        return worst.describe() + more


class StuckPhaseWatch:
    """A phase that should end on its own (a rebalance with its changelog recovery) and has made no
    progress for ``window_s``: ``observe(now, active, progress)`` with any comparable progress token
    (what the phase has done so far); ``reason()`` says how long, or ``None``.

    Why: Faust keeps a worker "rebalancing" until its table recovery has read every changelog
    partition to the end offset the broker gave. On Tansu that recovery was seen to wait for good
    after a takeover, so a health check that counts "rebalancing" as healthy never let the supervisor
    restart the worker. A phase that keeps progressing (a long recovery) is never stuck."""

    def __init__(self, window_s: float = 60.0, what: str = "phase") -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self.window_s = window_s
        self.what = what
        self._began: float | None = None
        self._since = 0.0
        self._token: object = None
        self._now = 0.0

    def observe(self, now: float, active: bool, progress: object = None) -> None:
        self._now = now
        if not active:
            self._began = None
            return
        if self._began is None or progress != self._token:
            if self._began is None:
                self._began = now
            self._since, self._token = now, progress

    def reason(self) -> str | None:
        if self._began is None or self._now - self._since < self.window_s:
            return None
        return (f"{self.what} for {self._now - self._began:.0f} s, no progress for "
                f"{self._now - self._since:.0f} s")
