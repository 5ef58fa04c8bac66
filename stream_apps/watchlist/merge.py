"""The event-time merge of the watchlist's inputs across every partition it reads.

Why: the cross-venue state wants each coin's inputs in event-time order across venues, and a coin's
venues are different keys (``binance:BTCUSDT``, ``okx:BTC-USDT-SWAP``), so they sit in different
partitions of three topics that Kafka delivers in no particular order. The engine's
``faust_app.alignment`` solves this per key; here one merge spans every input partition, because
one state holds every coin (see ``service``).

Rule: per topic-partition the merge remembers the newest event time read. Inputs are released up to
the *watermark*: strictly before the smallest newest time over the partitions not read to their end
(such a partition may deliver more at its newest time; one never read from holds everything back),
and never later than the newest *book* time read minus ``lateness_ms`` (live, every partition is at
its end most of the time, and a venue's books arrive a little behind another's; before any book is
read or fed, the newest time read anywhere). Per partition a released run is a prefix in offset order; the
runs are merged by (time, topic, partition, offset), a total order that does not depend on fetch
interleaving. So with the data already in the broker (replays, tests) the state sees the same input
however the fetches interleave; ``force`` releases what a stalled partition holds back.

Inputs far ahead of the books. A polled indicator is timed by its receive time (``cross_venue.events``),
which in a replayed or synthetic session is the wall clock, years after the books; ``AheadOfBooks``
drops it when it comes out of the merge. The lateness cap is taken from the books, not from the
newest time read anywhere, because such an input as the newest time would lift the cap past every
book: only the end-of-partition flags would then hold anything back, and they are stale as soon as
new data reaches the broker (a running service that read both venues to their end could fetch one
venue's new books before the other's and release them). An input more than ``max_ahead_ms`` ahead
of every book read or released is released by the end-of-partition rule alone, once the state has
been fed a book (a cap from the books would hold it for ever, and its partition behind it). It comes
out after the books released with it, more than ``max_ahead_ms`` ahead of all of them, so
``AheadOfBooks`` drops it, as the backtest over the same topics does (unless a book more than
``max_ahead_ms`` newer than any book read was still unread: the margin the cap gave, now
``max_ahead_ms`` instead of ``lateness_ms`` and only for such inputs).

``positions()`` is, per partition, the first offset not yet released (or the next one to read):
what a checkpoint of the state commits, so a restart reads exactly what the state has not seen.
Records that carry no input (another indicator kind) only move the read position and the newest
time. Pure: no Kafka, no clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from stream_apps.cross_venue.events import BookEvent

TopicPartition = tuple[str, int]
NOTHING = -(1 << 62)
EVERYTHING = 1 << 62

#: how far ahead of the newest book an input may be before ``AheadOfBooks`` drops it (the service's
#: ``max_ahead_ms`` default, and the backtest's over recorded topics or tables)
MAX_AHEAD_MS = 60_000


class PartitionMerge:
    def __init__(
        self, lateness_ms: int = 0, max_ahead_ms: int = MAX_AHEAD_MS, released_book: int | None = None
    ) -> None:
        """``released_book``: the newest book time the state was fed before (a checkpoint's
        ``AheadOfBooks.newest_book``); the merge keeps it up to date with the books it releases."""
        if lateness_ms < 0 or max_ahead_ms < 0:
            raise ValueError("lateness_ms and max_ahead_ms must not be negative")
        self.lateness_ms = lateness_ms
        self.max_ahead_ms = max_ahead_ms
        self.released_book = released_book
        self._held: dict[TopicPartition, deque[tuple[int, int, Any]]] = {}
        self._newest: dict[TopicPartition, int] = {}
        self._newest_book: dict[TopicPartition, int] = {}  # the books' clock: what the lateness cap follows
        self._next: dict[TopicPartition, int] = {}  # next offset to read
        self._at_end: set[TopicPartition] = set()

    # -- partitions --------------------------------------------------------------------------------
    def assign(self, positions: dict[TopicPartition, int | None]) -> None:
        """Partitions now read, with the offset reading starts at (None: not known yet)."""
        for tp, offset in positions.items():
            self._held.setdefault(tp, deque())
            if offset is not None and offset >= 0:
                self._next[tp] = offset

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            for table in (self._held, self._newest, self._newest_book, self._next):
                table.pop(tp, None)
            self._at_end.discard(tp)

    def partitions(self) -> list[TopicPartition]:
        return sorted(self._held)

    # -- input -------------------------------------------------------------------------------------
    def add(self, tp: TopicPartition, offset: int, time_ms: int | None, item: Any = None) -> None:
        """A record read from ``tp``; ``item`` None: it carries no input (only the position moves)."""
        queue = self._held.setdefault(tp, deque())
        self._at_end.discard(tp)
        self._next[tp] = offset + 1
        if time_ms is not None:
            self._newest[tp] = max(time_ms, self._newest.get(tp, time_ms))
            if isinstance(item, BookEvent):
                self._newest_book[tp] = max(time_ms, self._newest_book.get(tp, time_ms))
        if item is not None:
            queue.append((NOTHING if time_ms is None else time_ms, offset, item))

    def at_end(self, tp: TopicPartition) -> None:
        """``tp`` has been read to its end: what it delivers next is newer than anything held."""
        if tp in self._held:
            self._at_end.add(tp)

    # -- output ------------------------------------------------------------------------------------
    def held(self) -> int:
        return sum(len(q) for q in self._held.values())

    def newest(self) -> int | None:
        return max(self._newest.values(), default=None)

    def newest_book(self) -> int | None:
        return max(self._newest_book.values(), default=None)

    def watermark(self, force: bool = False) -> int:
        """Event time up to which the input is complete (``force``: ignore partitions still behind)."""
        books = [t for t in (self.newest_book(), self.released_book) if t is not None]
        # no book read or fed yet: the newest input (nothing is ahead of a book; ``AheadOfBooks`` keeps all)
        clock = max(books) if books else self.newest()
        if clock is None:
            return NOTHING
        return min(clock - self.lateness_ms, self._ends(force))

    def _ends(self, force: bool) -> int:
        """The end-of-partition rule: strictly before the newest time of every partition not at its end."""
        mark = EVERYTHING
        if not force:
            for tp in self._held:
                if tp not in self._at_end:  # it may still deliver more at its newest time: strictly before
                    mark = min(mark, self._newest.get(tp, NOTHING + 1) - 1)
        return mark

    def release(self, force: bool = False) -> list[tuple[int, TopicPartition, int, Any]]:
        """Every held input with time <= the watermark as (time, tp, offset, item) in merge order, and
        those far ahead of the books that the end-of-partition rule lets go (see the module docstring)."""
        mark = self.watermark(force)
        if mark == NOTHING:
            return []
        out: list[tuple[int, TopicPartition, int, Any]] = []
        self._pop(out, lambda t: t <= mark)
        far = self._far_ahead_from()
        if far is not None:  # the books released so far (and read) make these dropped when they come out
            ends = self._ends(force)
            self._pop(out, lambda t: t <= mark or far < t <= ends)
        out.sort(key=lambda r: (r[0], r[1], r[2]))
        return out

    def _pop(self, out: list, due: Callable[[int], bool]) -> None:
        """Per partition, the prefix of held inputs that are `due`, onto `out`."""
        for tp, queue in self._held.items():
            while queue and due(queue[0][0]):
                time_ms, offset, item = queue.popleft()
                out.append((time_ms, tp, offset, item))
                if isinstance(item, BookEvent):
                    self.released_book = max(time_ms, self.released_book or time_ms)

    def _far_ahead_from(self) -> int | None:
        """Times beyond this are far ahead: more than ``max_ahead_ms`` past every book read or released
        (``AheadOfBooks`` drops them); None while no book has been released (it would keep them)."""
        if self.released_book is None:
            return None
        return max(self.released_book, self.newest_book() or self.released_book) + self.max_ahead_ms

    def positions(self) -> dict[TopicPartition, int]:
        """Per partition with a known position: the first offset whose input the state has not seen."""
        out = {}
        for tp, queue in self._held.items():
            if queue:
                out[tp] = queue[0][1]
            elif tp in self._next:
                out[tp] = self._next[tp]
        return out


class AheadOfBooks:
    """Drops inputs more than ``limit_ms`` ahead of the newest book seen (``dropped`` counts them).

    Why: polled indicators are timed by their receive time (``cross_venue.events``), which in a
    replayed or synthetic session is the wall clock, years after the books' event times; fed, one
    would move the evaluation grid past every book still to come and make them all late. Live, books
    arrive several times a second and a receive time is never that far ahead. The service and the
    watchlist backtest over recorded topics apply the same rule in the same order, so they feed the
    state the same events."""

    def __init__(self, limit_ms: int, newest_book: int | None = None, dropped: int = 0) -> None:
        self.limit_ms = limit_ms
        self.newest_book = newest_book
        self.dropped = dropped

    def keep(self, time_ms: int, event: Any) -> bool:
        if isinstance(event, BookEvent):
            self.newest_book = time_ms if self.newest_book is None else max(self.newest_book, time_ms)
        elif self.newest_book is not None and time_ms > self.newest_book + self.limit_ms:
            self.dropped += 1
            return False
        return True
