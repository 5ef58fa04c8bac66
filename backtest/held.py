"""Sparse feed: the marks and books held back (newest per kind and market) and the quiet bands of the
markets some account is busy on, which say what may be held or skipped there. A band (low, high,
until) is the intersection of the busy accounts' ``Executor.quiet_trades`` bands of a market, ending
at the latest at the funding time a held mark of it would set."""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Any

from backtest.accounts import Accounts
from backtest.inputs import Record
from execution.routing import SpreadTracker

_CHANGES = attrgetter("changes")


class HeldRecords:
    """What the sparse feed holds, and the bands it is held against (remembered while no executor
    changed; ``version`` moves whenever a remembered band is forgotten)."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.records: dict[tuple[int, str], Record] = {}  # (rank, key) -> newest mark/book held
        self._stamp = -1  # the executors' changes the memo is for (a mark passed or held for another
        # funding time forgets its market's band: funding times end the bands)
        self._memo: dict[str, tuple[float, float, float] | None] = {}
        self.version = 0
        self._spreads: list[SpreadTracker] | None = None  # routed entries: the routers' spread trackers

    def keys(self) -> set[str]:
        """The markets something is held of."""
        return {k for _, k in self.records}

    def may_hold(self, rank: int, key: str, t: int, busy: set[str]) -> bool:
        """Whether a holdable mark or book of ``key`` at ``t`` may be held. Always on a market no account is
        busy on. On a busy market only while its trades have a quiet band (no entry or order there: a
        fill reads the book), and a mark only before the band's end, which is at or before the funding
        time the executor knows and the one a held mark would set (``band``): a mark that would settle
        funding is passed at its place, and a held one is passed before the first trade at or after
        its funding time (``SparseFeed._pass_held`` before every busy trade that is fed). Held records
        change only latest values that trades inside the band do not read, so passing them late, before
        the next point that reads them, gives every account the state the dense feed gives it there."""
        if key not in busy:
            return True
        band = self.band_of(key)
        return band is not None and (rank == 2 or t < band[2])

    def band_of(self, key: str) -> tuple[float, float, float] | None:
        """``band(key)``, remembered while no executor changed (positions, entries, orders) and no mark
        of the market was passed or held for another funding time. Funding settled by a trade only
        widens a band, so a remembered one is never wider than the true one."""
        self.check()
        memo = self._memo
        if key not in memo:
            memo[key] = self.band(key)
        return memo[key]

    def check(self) -> None:
        stamp = sum(map(_CHANGES, self.accounts.executors))
        if stamp != self._stamp:
            self._stamp, self._memo = stamp, {}
            self.version += 1

    def forget_band(self, key: str) -> None:
        """Forget the market's band (its funding time may move); what was found with it
        (``SparseFeed._quiet_before``) is checked again."""
        if key in self._memo:
            del self._memo[key]
            self.version += 1

    def hold(self, rank: int, key: str, record: Record) -> None:
        """Hold a mark or book (newest per kind and market); a held mark for another funding time than
        the one held before forgets the market's band (``band`` ends at it)."""
        if rank == 1:
            before = self.records.get((1, key))
            if before is None or before["next_funding_time"] != record["next_funding_time"]:
                self.forget_band(key)
        else:
            self.observe_book(key, record)
        self.records[(rank, key)] = record

    def observe_book(self, key: str, record: Record) -> None:
        """Routed entries: the router's spread mean reads every book, so a book held (or passed over)
        is counted as it comes; passed later, the router does not count it again."""
        if self._spreads is None:
            self._spreads = self._trackers()
        for tracker in self._spreads:
            tracker.defer([(key, record["event_time"], record, None)])

    def observe_books(self, keys: list[str], records: list[Record], times: list[int], at: list[int]) -> None:
        """``observe_book`` of ``records[i]`` (of market ``keys[i]``, event time ``times[i]``) for each
        ``i`` in ``at``, in that order; the records are not read here (most never are: ``SpreadTracker.defer``)."""
        if self._spreads is None:
            self._spreads = self._trackers()
        if self._spreads:
            books = [(keys[i], times[i], records[i], None) for i in at]
            for tracker in self._spreads:
                tracker.defer(books)

    def _trackers(self) -> list[SpreadTracker]:
        """The accounts' spread trackers (one, shared by the runner: the same books); none unless routed.
        The trackers count what they are given lazily (``SpreadTracker.defer``): the sums read by a probe
        are the same as if each book were counted as it came."""
        if self.accounts.config.entry.kind != "routed":
            return []
        trackers = (executor.entry_flow.router.spreads for executor in self.accounts.executors)
        return list({id(tracker): tracker for tracker in trackers}.values())

    def take(self, key: str) -> list[tuple[int, int, Any]]:
        """What is held of ``key``, taken out, as (time, rank, record)."""
        held = self.records
        if (1, key) not in held and (2, key) not in held:
            return []
        return [
            (int(rec["event_time"]), rank, rec) for rank in (1, 2) if (rec := held.pop((rank, key), None)) is not None
        ]

    def band(self, key: str) -> tuple[float, float, float] | None:
        """The intersection of the quiet bands of the accounts busy on ``key`` (None: every trade), ending
        at the latest at the funding time a held mark of ``key`` would set."""
        low, high, until = -math.inf, math.inf, math.inf
        mark = self.records.get((1, key))
        if mark is not None:
            until = int(mark["next_funding_time"])
        for book in self.accounts.books.values():
            if key in book.busy_markets():
                band = book.executor.quiet_trades(key)
                if band is None:
                    return None
                low, high, until = max(low, band[0]), min(high, band[1]), min(until, band[2])
        return low, high, until
