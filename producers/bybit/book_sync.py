"""Bybit v5 local order book: the `orderbook.<depth>` snapshot/delta rules on the shared book machinery.

Bybit needs no REST snapshot: subscribing pushes a snapshot, then deltas whose update id `u` grows by
exactly one per message. The rules (Bybit v5 "Orderbook" docs):
1. a snapshot replaces the local book (Bybit also re-sends one when its side had a problem);
2. a message with `u` = 1 is a snapshot after a restart of Bybit's service, whatever its `type`;
3. a delta must have `u` = previous `u` + 1; a size of "0" deletes the level;
4. any other `u` is a break: the book is dropped and stays down until the next snapshot, which the
   producer obtains by re-subscribing the topic (Bybit sends no snapshot otherwise).

What is the same as Binance (level updates, the crossed-book check that turns a bad update into a
break, top-N views, state and counters) is inherited from `producers.base.book.OrderBookSync`;
only the chaining differs, so that is all this class overrides. Nothing unverified is ever emitted:
deltas while waiting for a snapshot are dropped, and a crossed book after any update is a break.
A snapshot is emitted as a `DepthDiff` with `prev_final_update_id = None`: a full book, so a consumer
replaying `md.depth` starts from an empty book there. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import replace

from producers.base.book import (
    DepthDiff,
    DepthSnapshot,
    OrderBookSync,
    SyncResult,
    SyncState,
)


class BybitBookSync(OrderBookSync):
    """Local book for one symbol following Bybit's snapshot/delta rules (see module docstring)."""

    def __init__(self, symbol: str) -> None:
        super().__init__(symbol, max_buffer=0)
        self.restarts = 0  # `u` = 1 snapshots seen while live (Bybit service restarts)

    @property
    def needs_snapshot(self) -> bool:
        """True after a break (or before the first snapshot): the topic must be (re)subscribed."""
        return self.state is SyncState.WAITING_SNAPSHOT

    def on_diff(self, diff: DepthDiff) -> SyncResult:
        """Feed one parsed orderbook message (snapshot: `prev_final_update_id is None`)."""
        if diff.prev_final_update_id is None or diff.final_update_id == 1:
            if self.is_live and diff.final_update_id == 1:
                self.restarts += 1
            return self._install(diff)
        if not self.is_live:
            return SyncResult()  # a delta means nothing without its snapshot
        if diff.final_update_id <= self.last_update_id:
            return SyncResult()  # duplicate or replayed message
        if diff.final_update_id != self.last_update_id + 1:
            return self._break(f"gap u={diff.final_update_id} after u={self.last_update_id}", None)
        return self._apply(diff)

    def on_snapshot(self, snap: DepthSnapshot) -> SyncResult:
        """A REST snapshot (`/v5/market/orderbook`) installs like a websocket snapshot."""
        return self._install(
            DepthDiff(
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
        )

    def invalidate(self) -> None:
        """The connection carrying the book is gone: stop vouching for it until the next snapshot.

        Not a resync (nothing was inconsistent), so it is not counted as one.
        """
        self.state = SyncState.WAITING_SNAPSHOT
        self.bids, self.asks = {}, {}

    def _install(self, snapshot: DepthDiff) -> SyncResult:
        self.bids, self.asks = {}, {}
        self.state = SyncState.LIVE
        full = snapshot if snapshot.prev_final_update_id is None else replace(snapshot, prev_final_update_id=None)
        return self._apply(full)  # a crossed snapshot is a break like a crossed delta
