"""Agg-id order for archived trades: duplicates dropped, holes measured, small disorder repaired.

The live producer's `AggTradeSequencer` holds trades behind a hole until REST fills it. An archive
has nothing to fill from, so here a hole is given up (counted, its range recorded) as soon as
`reorder_window` later trades are waiting behind it: rows swapped within that window are still
published in order, while a real hole costs at most that many held rows of memory. A row that
arrives after its hole was given up cannot be published in order any more; it is counted as
`late` (not as a duplicate, which is an id already published). `drain` gives up whatever hole is
left at the end of a file so that every held trade is released before the day is checkpointed.

Hand-rolled on top of the sequencer rather than a sort: a day does not fit comfortably in memory
as Python objects, and archives are already in order except for the anomalies counted here.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from producers.base.sequencer import AggTradeSequencer, Gap

DEFAULT_REORDER_WINDOW = 1_000


@dataclass
class ContinuityCounters:
    duplicates: int = 0
    late: int = 0
    gaps: int = 0
    missing_ids: int = 0
    gap_ranges: list[tuple[int, int]] = field(default_factory=list)  # every hole given up, ascending


class ArchiveContinuity:
    """Feed trades of one symbol in file order; get back the trades to publish, in agg-id order."""

    def __init__(self, symbol: str, reorder_window: int = DEFAULT_REORDER_WINDOW) -> None:
        if reorder_window < 1:
            raise ValueError("reorder_window must be >= 1")
        self.window = reorder_window
        # the sequencer's own give-up bound is never reached: the window decides here
        self._seq = AggTradeSequencer(symbol, max_held=reorder_window + 1)
        self.counters = ContinuityCounters()
        self._gap_starts: list[int] = []

    @property
    def last_id(self) -> int | None:
        """Highest agg id published or given up (the chain position)."""
        return self._seq.last_id

    def continue_after(self, agg_id: int | None) -> None:
        """Chain from `agg_id` (the previous day's last trade, a checkpoint); None starts a new chain."""
        self._seq.last_id = agg_id
        self._seq.held.clear()

    def offer(self, trade: dict) -> list[dict]:
        seq = self._seq
        agg_id = trade["agg_id"]
        last = seq.last_id
        if last is not None and agg_id == last + 1 and not seq.held:
            # the next id with nothing held: what seq.offer would do, without its bookkeeping (hot path)
            seq.last_id = agg_id
            seq.counters.published += 1
            return [trade]
        if last is not None and agg_id <= last and self._in_given_up_gap(agg_id):
            self.counters.late += 1
            return []
        before = seq.counters.duplicates
        out = seq.offer(trade)
        if seq.counters.duplicates != before:
            self.counters.duplicates += 1
        elif len(seq.held) >= self.window:
            out += self._give_up()
        return out

    def drain(self) -> list[dict]:
        """Give up every hole still open and release all held trades (end of a file)."""
        out: list[dict] = []
        while self._seq.held:
            out += self._give_up()
        return out

    def _give_up(self) -> list[dict]:
        gap = self._seq.gap
        assert gap is not None, "trades are held only behind a hole"
        given, released = self._seq.give_up(gap)
        self._record(given)
        return released

    def _record(self, gap: Gap) -> None:
        c = self.counters
        c.gaps += 1
        c.missing_ids += gap.to_id - gap.from_id + 1
        c.gap_ranges.append((gap.from_id, gap.to_id))
        self._gap_starts.append(gap.from_id)

    def _in_given_up_gap(self, agg_id: int) -> bool:
        i = bisect.bisect_right(self._gap_starts, agg_id) - 1
        return i >= 0 and agg_id <= self.counters.gap_ranges[i][1]
