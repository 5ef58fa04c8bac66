"""Order-book snapshots that stay consistent with the replayed diff chain.

A real exchange answers ``/fapi/v1/depth`` with the book *as of now*. Serving only the snapshot
taken at recording start would trap a client that resyncs later (after a dropped connection) in a
resync loop: every new diff would be newer than the stale snapshot and none would straddle it. So
:class:`DepthTimeline` serves the recorded snapshot while it is still current and, once the replay
has moved past it, the recorded snapshot with every later diff applied. The synthetic generator uses
the same path with its initial book as the base.

The served state is the book *after* the next diff the replay will send, with ``lastUpdateId`` = that
diff's ``u``. A client following Binance's documented sync (drop ``u`` < ``lastUpdateId``, first
event must satisfy ``U`` <= ``lastUpdateId`` <= ``u``, then ``pu`` == previous ``u``) receives that
diff next, it straddles, and re-applying it is harmless because diffs carry absolute quantities.

Pure and deterministic: no clock, no I/O.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

import orjson

Level = tuple[str, str]


def _is_zero(qty: str) -> bool:
    return float(qty) == 0.0


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """A ``/fapi/v1/depth`` answer: levels best-first, optionally with the exact recorded body."""

    symbol: str
    last_update_id: int
    event_time: int | None
    transaction_time: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    raw: bytes | None = None

    @classmethod
    def from_body(cls, symbol: str, body: bytes) -> BookSnapshot:
        doc = orjson.loads(body)
        return cls(
            symbol=symbol,
            last_update_id=int(doc["lastUpdateId"]),
            event_time=doc.get("E"),
            transaction_time=doc.get("T"),
            bids=tuple((str(p), str(q)) for p, q in doc.get("bids", [])),
            asks=tuple((str(p), str(q)) for p, q in doc.get("asks", [])),
            raw=body,
        )

    def to_body(self, limit: int) -> bytes:
        """Response body with at most ``limit`` levels a side; the recorded bytes when they fit."""
        if self.raw is not None and limit >= len(self.bids) and limit >= len(self.asks):
            return self.raw
        doc: dict[str, Any] = {"lastUpdateId": self.last_update_id}
        if self.event_time is not None:
            doc["E"] = self.event_time
        if self.transaction_time is not None:
            doc["T"] = self.transaction_time
        doc["bids"] = [list(level) for level in self.bids[:limit]]
        doc["asks"] = [list(level) for level in self.asks[:limit]]
        return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class DepthDiff:
    """One ``depthUpdate`` payload with the replay position of the frame that carries it."""

    frame_index: int
    first_id: int  # U
    final_id: int  # u
    prev_final_id: int  # pu
    event_time: int
    transaction_time: int | None
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    @classmethod
    def from_payload(cls, frame_index: int, data: dict[str, Any]) -> DepthDiff:
        return cls(
            frame_index=frame_index,
            first_id=int(data["U"]),
            final_id=int(data["u"]),
            prev_final_id=int(data.get("pu", -1)),
            event_time=int(data.get("E", 0)),
            transaction_time=data.get("T"),
            bids=tuple((str(p), str(q)) for p, q in data.get("b", [])),
            asks=tuple((str(p), str(q)) for p, q in data.get("a", [])),
        )


class DepthTimeline:
    """Book state of one symbol at any replay position (see module docstring)."""

    def __init__(self, symbol: str, base: BookSnapshot | None, diffs: list[DepthDiff]) -> None:
        self.symbol = symbol
        self.base = base
        self.diffs = diffs
        self._frame_indexes = [d.frame_index for d in diffs]
        self._event_times = [d.event_time for d in diffs]  # ascending: a symbol's diffs are in u order
        self._applied = -1
        self._bids: dict[str, str] = {}
        self._asks: dict[str, str] = {}
        self._reset()

    def _reset(self) -> None:
        self._applied = -1
        self._bids = dict(self.base.bids) if self.base else {}
        self._asks = dict(self.base.asks) if self.base else {}

    def _base_id(self) -> int:
        return self.base.last_update_id if self.base else -1

    def snapshot_at(self, position: int) -> BookSnapshot | None:
        """Snapshot to serve when frames ``[0, position)`` have been dispatched."""
        n = len(self.diffs)
        j = bisect_left(self._frame_indexes, position)
        if self.base is not None:
            base_id = self.base.last_update_id
            if j < n and base_id >= self.diffs[j].first_id:
                return self.base
            if j == n and (n == 0 or base_id >= self.diffs[-1].final_id):
                return self.base
        if n == 0:
            return None
        return self.book_after(min(j, n - 1))

    def snapshot_as_of(self, event_time_ms: int) -> BookSnapshot | None:
        """The book as of an event time (a replaying client's clock, ``X-Tapeflow-As-Of``): the base
        with every diff up to the last one whose event time is at or before it. A client that has
        buffered the diffs up to its clock receives that diff again or next; it straddles
        ``lastUpdateId``, so the sync goes on exactly where the client is, at any replay speed."""
        j = bisect_right(self._event_times, event_time_ms) - 1
        if j < 0:
            return self.base if self.base is not None or not self.diffs else self.book_after(0)
        return self.book_after(j)

    def book_after(self, j: int) -> BookSnapshot:
        """Base book with every synced diff up to and including diff ``j`` applied."""
        if j < self._applied:
            self._reset()
        base_id = self._base_id()
        for k in range(self._applied + 1, j + 1):
            diff = self.diffs[k]
            if diff.final_id >= base_id:
                _apply(self._bids, diff.bids)
                _apply(self._asks, diff.asks)
            self._applied = k
        diff = self.diffs[j]
        if diff.final_id < base_id and self.base is not None:
            return self.base
        return BookSnapshot(
            symbol=self.symbol,
            last_update_id=diff.final_id,
            event_time=diff.event_time,
            transaction_time=diff.transaction_time,
            bids=tuple(sorted(self._bids.items(), key=lambda kv: float(kv[0]), reverse=True)),
            asks=tuple(sorted(self._asks.items(), key=lambda kv: float(kv[0]))),
        )


def _apply(side: dict[str, str], levels: tuple[Level, ...]) -> None:
    for price, qty in levels:
        if _is_zero(qty):
            side.pop(price, None)
        else:
            side[price] = qty


def build_timelines(recording: Any) -> dict[str, DepthTimeline]:
    """One timeline per symbol that has a snapshot or depth diffs in the recording."""
    diffs: dict[str, list[DepthDiff]] = {}
    for frame in recording.frames:
        if frame.event == "depthUpdate":
            symbol = str(frame.payload.get("s", "")).upper()
            diffs.setdefault(symbol, []).append(DepthDiff.from_payload(frame.index, frame.payload))
    symbols = dict.fromkeys([*recording.initial_books, *diffs])
    return {s: DepthTimeline(s, recording.initial_books.get(s), diffs.get(s, [])) for s in symbols}
