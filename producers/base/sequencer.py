"""Per-symbol aggTrade continuity: publish in agg-id order with no hole, or say exactly where a hole is.

Binance agg ids are consecutive per symbol, so continuity is checkable: after id N the next published
trade must be N+1. When the stream jumps (reconnect, dropped frame, late start), newer trades are
held back while the producer fills `[N+1, M-1]` from REST `/fapi/v1/aggTrades?fromId=`; only then
are the held trades released. Duplicates (reconnect overlap, REST/stream overlap) are dropped by id.
A hole the REST API cannot fill in time is given up explicitly (`give_up`), which the producer
publishes on `md.gaps`; nothing is skipped silently. Pure state, no I/O, so every path is testable.

A producer that starts live with no checkpoint can *anchor* a symbol's chain in time: while
``anchoring``, trades are held; ``anchor(first_id)`` (the first agg id at or after the producer's
start, asked from REST by ``startTime``) then starts the chain there, so the trades between the start
and the first frame (a slow first connection, a reconnect before anything arrived) are a gap that is
filled like any other, instead of history that silently never entered the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gap:
    symbol: str
    from_id: int  # first missing agg id
    to_id: int  # last missing agg id (inclusive)


@dataclass
class SequencerCounters:
    published: int = 0
    duplicates: int = 0
    gaps_detected: int = 0
    gaps_filled: int = 0
    gaps_given_up: int = 0
    ids_given_up: int = 0


@dataclass
class AggTradeSequencer:
    symbol: str
    last_id: int | None = None  # last agg id published (None: nothing yet; the first trade starts the chain)
    anchoring: bool = False  # hold everything until ``anchor`` says where the chain starts
    max_held: int = 200_000
    held: dict[int, dict] = field(default_factory=dict)  # trades waiting for a gap to be filled
    counters: SequencerCounters = field(default_factory=SequencerCounters)

    @property
    def gap(self) -> Gap | None:
        """The hole currently blocking publication, if any."""
        if not self.held or self.last_id is None:
            return None
        first_held = min(self.held)
        return Gap(self.symbol, self.last_id + 1, first_held - 1) if first_held > self.last_id + 1 else None

    def offer(self, trade: dict) -> list[dict]:
        """Feed one trade (stream or REST); returns the trades that may be published now, in order."""
        agg_id = trade["agg_id"]
        if self.last_id is None and self.anchoring:
            if agg_id not in self.held:
                self.held[agg_id] = trade
            return []
        if self.last_id is None:
            self.last_id = agg_id - 1
        if agg_id == self.last_id + 1 and not self.held:  # the hot path: the next trade, no hole open
            self.last_id = agg_id
            self.counters.published += 1
            return [trade]
        if agg_id <= self.last_id or agg_id in self.held:
            self.counters.duplicates += 1
            return []
        before = self.gap
        self.held[agg_id] = trade
        released = self._release()
        after = self.gap
        # a gap is identified by its upper end: REST fills shrink it from below, a new hole has a new end
        if before is not None and (after is None or after.to_id != before.to_id):
            self.counters.gaps_filled += 1
        if after is not None and (before is None or after.to_id != before.to_id):
            self.counters.gaps_detected += 1
        if len(self.held) > self.max_held:
            # bounded memory: the fill is hopeless at this size, give the hole up explicitly
            gap = self.gap
            if gap is not None:
                released += self.give_up(gap)[1]
        return released

    def offer_many(self, trades: list[dict]) -> list[dict]:
        out: list[dict] = []
        for t in trades:
            out.extend(self.offer(t))
        return out

    def anchor(self, first_id: int | None) -> list[dict]:
        """End ``anchoring``: the chain starts at ``first_id`` (None: at the first trade held, as without
        an anchor). Returns what may be published now; a hole below the held trades is then ``gap``."""
        self.anchoring = False
        if self.last_id is not None:
            return []
        starts = [i for i in (first_id, min(self.held, default=None)) if i is not None]
        if not starts:
            return []
        self.last_id = min(starts) - 1
        released = self._release()
        if self.gap is not None:
            self.counters.gaps_detected += 1
        return released

    def give_up(self, gap: Gap) -> tuple[Gap, list[dict]]:
        """Declare `gap` unfillable: move past it and release what was held behind it."""
        current = self.gap
        if current is None or current.from_id != gap.from_id:
            return gap, []
        self.counters.gaps_given_up += 1
        self.counters.ids_given_up += current.to_id - current.from_id + 1
        self.last_id = current.to_id
        return current, self._release()

    def _release(self) -> list[dict]:
        out = []
        nxt = self.last_id + 1
        while nxt in self.held:
            out.append(self.held.pop(nxt))
            self.last_id = nxt
            nxt += 1
        self.counters.published += len(out)
        return out
