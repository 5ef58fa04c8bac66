"""A chain-verified local order book, as a pure state machine, shared by every venue.

The base rules are Binance USD-M's documented diff-depth synchronisation; other venues subclass
`OrderBookSync` for their own snapshot/delta rules (`producers.bybit.book_sync`).

Procedure (Binance "How to manage a local order book correctly", USD-M futures):
1. buffer `@depth` diffs from the stream, 2. fetch a REST snapshot (`lastUpdateId` = L),
3. drop buffered diffs with `u < L`, 4. the first applied diff must straddle L (`U <= L <= u`),
5. every later diff must continue the chain (`pu` == previous `u`); any break means resync.

The machine never publishes a book it cannot vouch for: diffs are only emitted once the chain is
verified, a crossed book after an update is treated as a break, and after a break everything is
buffered again until a new snapshot arrives. No I/O here: the producer feeds frames and snapshots in
and does the REST call when `needs_snapshot` says so, which is what makes it testable on recordings.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum


class SyncState(Enum):
    WAITING_SNAPSHOT = "waiting_snapshot"  # buffering diffs, a snapshot is (or must be) requested
    LIVE = "live"  # chain verified; every diff applied and emitted


@dataclass(frozen=True)
class DepthDiff:
    """One `depthUpdate` frame, prices/quantities already parsed."""

    symbol: str
    first_update_id: int  # U
    final_update_id: int  # u
    prev_final_update_id: int  # pu
    event_time: int
    transaction_time: int
    receive_time: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class DepthSnapshot:
    symbol: str
    last_update_id: int
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]
    event_time: int = 0
    receive_time: int = 0


@dataclass
class SyncResult:
    """What one input produced: verified diffs to publish, and whether a (re)sync is required."""

    applied: list[DepthDiff] = field(default_factory=list)
    resync_reason: str | None = None


class OrderBookSync:
    """Local book for one symbol plus the synchronisation state machine."""

    def __init__(self, symbol: str, max_buffer: int = 10_000) -> None:
        self.symbol = symbol
        self.max_buffer = max_buffer
        self.state = SyncState.WAITING_SNAPSHOT
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_update_id = 0  # u of the last applied diff (or L of the snapshot)
        self.last_event_time = 0
        self._buffer: list[DepthDiff] = []
        self._snapshot_id: int | None = None  # L while waiting for the straddling diff
        self.resyncs = 0

    # --- inputs ------------------------------------------------------------------------------------
    @property
    def needs_snapshot(self) -> bool:
        return self.state is SyncState.WAITING_SNAPSHOT and self._snapshot_id is None

    def on_diff(self, diff: DepthDiff) -> SyncResult:
        if self.state is SyncState.LIVE:
            return self._apply_live(diff)
        if self._snapshot_id is None:
            self._buffer.append(diff)
            if len(self._buffer) > self.max_buffer:  # snapshot never came: keep the newest only
                del self._buffer[: len(self._buffer) - self.max_buffer]
            return SyncResult()
        return self._try_first(diff)

    def on_snapshot(self, snap: DepthSnapshot, after_each=None) -> SyncResult:
        """Install a REST snapshot and replay the buffered diffs that follow it.

        `after_each(diff)` runs once the snapshot is installed (with None) and after each replayed diff
        is applied, while the book is in that state (a caller that publishes a book per update needs
        every state: an exchange snapshot can already contain updates the stream delivered earlier).
        """
        self.bids = {p: q for p, q in snap.bids if q > 0}
        self.asks = {p: q for p, q in snap.asks if q > 0}
        self.last_update_id = snap.last_update_id
        self.last_event_time = snap.event_time
        self._snapshot_id = snap.last_update_id
        if after_each is not None:
            after_each(None)
        buffered, self._buffer = self._buffer, []
        result = SyncResult()
        for diff in buffered:
            step = self.on_diff(diff)
            result.applied.extend(step.applied)
            if step.resync_reason:
                return SyncResult(result.applied, step.resync_reason)
            if step.applied and after_each is not None:
                after_each(diff)
        return result

    # --- internals -----------------------------------------------------------------------------------
    def _try_first(self, diff: DepthDiff) -> SyncResult:
        snap_id = self._snapshot_id
        assert snap_id is not None
        if diff.final_update_id < snap_id:
            return SyncResult()  # older than the snapshot: drop
        if diff.first_update_id > snap_id:
            # the stream is already past the snapshot: events between them are missing
            return self._break(f"snapshot {snap_id} older than first diff U={diff.first_update_id}", diff)
        self.state = SyncState.LIVE
        self._snapshot_id = None
        return self._apply(diff)

    def _apply_live(self, diff: DepthDiff) -> SyncResult:
        if diff.final_update_id <= self.last_update_id:
            return SyncResult()  # duplicate or replayed frame (reconnect overlap)
        if diff.prev_final_update_id != self.last_update_id:
            return self._break(f"pu={diff.prev_final_update_id} != last u={self.last_update_id}", diff)
        return self._apply(diff)

    def _apply(self, diff: DepthDiff) -> SyncResult:
        for side, levels in ((self.bids, diff.bids), (self.asks, diff.asks)):
            for price, qty in levels:
                if qty == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last_update_id = diff.final_update_id
        self.last_event_time = diff.event_time
        if self.bids and self.asks and max(self.bids) >= min(self.asks):
            return self._break(f"crossed book after u={diff.final_update_id}", None)
        return SyncResult(applied=[diff])

    def _break(self, reason: str, pending: DepthDiff | None) -> SyncResult:
        """Drop the book and start buffering again; the caller must fetch a new snapshot."""
        self.state = SyncState.WAITING_SNAPSHOT
        self.bids, self.asks = {}, {}
        self._snapshot_id = None
        self._buffer = [pending] if pending is not None else []
        self.resyncs += 1
        return SyncResult(resync_reason=reason)

    # --- views -------------------------------------------------------------------------------------
    @property
    def is_live(self) -> bool:
        return self.state is SyncState.LIVE

    def best_bid(self) -> tuple[float, float] | None:
        if not self.bids:
            return None
        p = max(self.bids)
        return p, self.bids[p]

    def best_ask(self) -> tuple[float, float] | None:
        if not self.asks:
            return None
        p = min(self.asks)
        return p, self.asks[p]

    def top(self, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids = [(p, self.bids[p]) for p in heapq.nlargest(depth, self.bids)]
        asks = [(p, self.asks[p]) for p in heapq.nsmallest(depth, self.asks)]
        return bids, asks


def order_book_imbalance(bids: list[tuple[float, float]], asks: list[tuple[float, float]], levels: int = 10) -> float:
    """OBI = (bid qty − ask qty) / (bid qty + ask qty) over the top `levels` (DESIGN.md §3); 0 when empty."""
    b = sum(q for _, q in bids[:levels])
    a = sum(q for _, q in asks[:levels])
    return (b - a) / (b + a) if b + a > 0 else 0.0


def diff_record(exchange: str, diff: DepthDiff) -> dict:
    """The `md.depth` record of a verified update (a snapshot has `prev_final_update_id` None)."""
    return {
        "exchange": exchange,
        "symbol": diff.symbol,
        "first_update_id": diff.first_update_id,
        "final_update_id": diff.final_update_id,
        "prev_final_update_id": diff.prev_final_update_id,
        "event_time": diff.event_time,
        "transaction_time": diff.transaction_time,
        "receive_time": diff.receive_time,
        "bids": [{"price": p, "qty": q} for p, q in diff.bids],
        "asks": [{"price": p, "qty": q} for p, q in diff.asks],
    }
