"""``/fapi/v1/aggTrades`` answered from every aggTrade of the session.

Gap filling is the reason this endpoint exists in the fake: a producer that lost frames (dropped
connection, skip fault) asks ``fromId=<last seen + 1>`` and must get exactly the trades it missed,
including ones the websocket never delivered. Binance semantics, pure and clock-free:

- ``fromId``: trades with ``a`` >= fromId, ascending, at most ``limit``;
- ``startTime``/``endTime`` (inclusive, on ``T``): the earliest ``limit`` trades from ``startTime``,
  or the latest ``limit`` up to ``endTime`` when only ``endTime`` is given;
- none of them: the most recent ``limit`` trades, ascending.

``visible_before`` optionally hides trades the replay has not reached yet (a stricter, more realistic
mode; by default the whole session is visible so a test can page it without replaying first).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

REST_FIELDS = ("a", "p", "q", "f", "l", "T", "m")


@dataclass(frozen=True, slots=True)
class AggTrade:
    """The REST view of one aggregate trade plus the replay position of its frame."""

    agg_id: int
    body: dict[str, Any]
    frame_index: int

    @property
    def time(self) -> int:
        return int(self.body["T"])


class AggTradeIndex:
    """All aggTrades of a session, per symbol, sorted and de-duplicated by agg id."""

    def __init__(self, recording: Any) -> None:
        per_symbol: dict[str, dict[int, AggTrade]] = {}
        for frame in recording.frames:
            if frame.event != "aggTrade":
                continue
            data = frame.payload
            trade = AggTrade(int(data["a"]), {k: data[k] for k in REST_FIELDS if k in data}, frame.index)
            per_symbol.setdefault(str(data["s"]).upper(), {}).setdefault(trade.agg_id, trade)
        self._trades = {s: sorted(t.values(), key=lambda t: t.agg_id) for s, t in per_symbol.items()}
        self._ids = {s: [t.agg_id for t in trades] for s, trades in self._trades.items()}

    def symbols(self) -> list[str]:
        return list(self._trades)

    def all(self, symbol: str) -> list[AggTrade]:
        return list(self._trades.get(symbol, []))

    def query(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
        visible_before: int | None = None,
    ) -> list[dict[str, Any]]:
        trades = self._trades.get(symbol, [])
        if from_id is not None:
            trades = trades[bisect_left(self._ids.get(symbol, []), from_id) :]
        if visible_before is not None:
            trades = [t for t in trades if t.frame_index < visible_before]
        if start_time is not None:
            trades = [t for t in trades if t.time >= start_time]
        if end_time is not None:
            trades = [t for t in trades if t.time <= end_time]
        latest_first = from_id is None and start_time is None
        chosen = (trades[-limit:] if limit > 0 else []) if latest_first else trades[:limit]
        return [t.body for t in chosen]
