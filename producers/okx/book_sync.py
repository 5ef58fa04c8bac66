"""OKX local order book (`books`, 400 levels): `seqId`/`prevSeqId` chaining on the shared book machinery.

OKX's rules (docs-v5, "WS / Order book channel", "Sequence ID"):
1. subscribing pushes a full snapshot (`prevSeqId` = -1), then updates every 100 ms whose `prevSeqId`
   is the previous message's `seqId` (ids grow by arbitrary steps, so only identity is checked);
2. a quiet book sends a heartbeat update with empty sides and `prevSeqId` = `seqId` = the last id;
3. after maintenance the sequence may reset: an update whose `seqId` is *smaller* than its
   `prevSeqId`, still chained by `prevSeqId`; later updates chain normally;
4. a size of "0" deletes the level. (`checksum` is deprecated and always 0: not used.)

Any other `prevSeqId` is a break: the book is dropped, nothing is published, later updates are
buffered, and the producer fetches a REST snapshot (`GET /api/v5/market/books?sz=400`, which carries
its `seqId` S). The snapshot is installed and the buffered updates replayed from it the way Binance's
sync splices a snapshot into its diffs: an update with `seqId` <= S is already in the snapshot
(dropped); the first one applied must straddle it (`prevSeqId` <= S < `seqId`: OKX's REST book is
refreshed every 50 ms, between two 100 ms pushes, and an update's levels are absolute sizes, so
re-applying a part the snapshot already holds is harmless); from there the chain rule applies. A
snapshot older than the buffered stream (the first update has `prevSeqId` > S) is a break again: fetch
another. A websocket snapshot (a new connection's subscription) replaces the book whatever the state.

Level updates, the crossed-book check (a crossed book after any update is a break), top-N views and
counters are inherited from `producers.base.book.OrderBookSync`. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import replace

from producers.base.book import DepthDiff, DepthSnapshot, OrderBookSync, SyncResult, SyncState


class OkxBookSync(OrderBookSync):
    """Local book for one OKX instrument (see the module docstring)."""

    def __init__(self, symbol: str, max_buffer: int = 10_000) -> None:
        super().__init__(symbol, max_buffer=max_buffer)
        self.resync_needed = False  # a break happened: only a REST snapshot (or a new ws snapshot) helps
        self._anchor: int | None = None  # seqId of the installed REST snapshot, until an update straddles it
        self.heartbeats = 0
        self.sequence_resets = 0

    @property
    def needs_snapshot(self) -> bool:
        """True after a break: the producer must fetch a REST snapshot."""
        return self.state is SyncState.WAITING_SNAPSHOT and self.resync_needed

    def on_diff(self, diff: DepthDiff) -> SyncResult:
        """Feed one parsed `books` push (snapshot: `prev_final_update_id is None`)."""
        if diff.prev_final_update_id is None:
            return self._install(diff)
        if not self.is_live:
            if self.resync_needed:  # keep it for the REST snapshot's splice
                self._buffer.append(diff)
                if len(self._buffer) > self.max_buffer:
                    del self._buffer[: len(self._buffer) - self.max_buffer]
            return SyncResult()  # before the first snapshot of a connection an update means nothing
        return self._chain(diff)

    def on_rest_snapshot(self, snap: DepthSnapshot) -> SyncResult:
        """Install a REST snapshot after a break and replay what was buffered since (see the docstring).

        Ignored when the book is live again (a websocket snapshot came first)."""
        if self.is_live or not self.resync_needed:
            return SyncResult()
        buffered = self._buffer
        full = DepthDiff(
            snap.symbol,
            snap.last_update_id,
            snap.last_update_id,
            None,  # type: ignore[arg-type]
            snap.event_time,
            snap.event_time,
            snap.receive_time,
            snap.bids,
            snap.asks,
        )
        result = self._install(full)
        if result.resync_reason:
            return result
        self._anchor = snap.last_update_id
        for i, diff in enumerate(buffered):
            step = self._chain(diff)
            result.applied.extend(step.applied)
            if step.resync_reason:
                if not self.is_live:  # refused: keep what is still buffered for the next snapshot
                    self._buffer = buffered[i:] if step.resync_reason.startswith("snapshot") else self._buffer
                return SyncResult(result.applied, step.resync_reason)
        return result

    def invalidate(self) -> None:
        """The connection carrying the book is gone: stop vouching for it until the next connection's
        snapshot. Not a resync (nothing was inconsistent), so not counted as one."""
        self.state = SyncState.WAITING_SNAPSHOT
        self.bids, self.asks = {}, {}
        self._buffer = []
        self._anchor = None
        self.resync_needed = False

    # --- internals ----------------------------------------------------------------------------------
    def _chain(self, diff: DepthDiff) -> SyncResult:
        prev, seq = diff.prev_final_update_id, diff.final_update_id
        if self._anchor is not None:  # first update after a REST snapshot: it must straddle it
            anchor = self._anchor
            if seq <= anchor:
                return SyncResult()  # already in the snapshot
            if prev > anchor:
                return self._break(f"snapshot seqId={anchor} older than the next update's prevSeqId={prev}", diff)
            self._anchor = None
            return self._apply(diff)
        if prev == self.last_update_id:
            if seq == prev and not diff.bids and not diff.asks:
                self.heartbeats += 1
                return SyncResult()  # a heartbeat: the book did not change
            if seq < prev:
                self.sequence_resets += 1  # maintenance restarted the sequence; still chained
            return self._apply(diff)
        if seq <= self.last_update_id and prev < self.last_update_id:
            return SyncResult()  # an update already applied (a repeated push)
        return self._break(f"prevSeqId={prev} != last seqId={self.last_update_id}", diff)

    def _break(self, reason: str, pending: DepthDiff | None) -> SyncResult:
        result = super()._break(reason, pending)
        self._anchor = None
        self.resync_needed = True
        return result

    def _install(self, snapshot: DepthDiff) -> SyncResult:
        self.bids, self.asks = {}, {}
        self._buffer = []
        self._anchor = None
        self.resync_needed = False
        self.state = SyncState.LIVE
        full = snapshot if snapshot.prev_final_update_id is None else replace(snapshot, prev_final_update_id=None)
        return self._apply(full)  # a crossed snapshot is a break like a crossed update
