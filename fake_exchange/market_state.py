"""Latest prices per symbol, as far as the replay has got.

REST endpoints that the recording does not cover (premiumIndex, openInterest, ratios, spot and
Coinbase tickers) are generated around a reference price. Taking that price from the frames already
replayed keeps the generated bodies coherent with the websocket data a producer just saw (a Coinbase
premium computed against a price from another era would be meaningless). Before the replay reaches a
symbol's first trade the view is seeded with the first value of each kind in the session.

``at(event_time_ms)`` is the same view as of an event time instead of the replay position: what a
replaying client names with ``X-Tapeflow-As-Of``, so its REST answers do not depend on how far ahead
of it the replay has run (at ``max`` speed the replay can be minutes of event time ahead).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from .recording import RecordedFrame, Recording


def decimals_of(number: str) -> int:
    """Decimal places of a Binance number string (``"7.6110"`` -> 4)."""
    return len(number.split(".", 1)[1]) if "." in number else 0


class MarketView:
    """Last trade price, mark/funding fields and best bid/ask per symbol."""

    def __init__(self, recording: Recording) -> None:
        self.trade_price: dict[str, str] = {}
        self.mark: dict[str, dict[str, Any]] = {}
        self.touch: dict[str, dict[str, Any]] = {}
        self.price_decimals: dict[str, int] = {}
        self._snapshot_mid: dict[str, float] = {}
        for symbol, book in recording.initial_books.items():
            if book.bids and book.asks:
                self._snapshot_mid[symbol] = (float(book.bids[0][0]) + float(book.asks[0][0])) / 2
                self.price_decimals.setdefault(symbol, decimals_of(book.bids[0][0]))
        # per kind and symbol, (event times, values) in replay order, for ``at``
        self._timeline: dict[str, dict[str, tuple[list[int], list[Any]]]] = {"trade_price": {}, "mark": {}, "touch": {}}
        for frame in recording.frames:
            self._observe(frame, seed=True)
            self._record(frame)
        self._seed_trade_price = dict(self.trade_price)  # the first value of each kind (before any frame)
        self._seed_mark = dict(self.mark)
        self._seed_touch = dict(self.touch)

    def _record(self, frame: RecordedFrame) -> None:
        data = frame.payload
        if not isinstance(data, dict) or not isinstance(data.get("E"), int):
            return
        kind = {"aggTrade": "trade_price", "markPriceUpdate": "mark", "bookTicker": "touch"}.get(data.get("e"))
        if kind is None:
            return
        times, values = self._timeline[kind].setdefault(str(data.get("s", "")).upper(), ([], []))
        if times and data["E"] < times[-1]:
            return  # out of order: the view keeps moving forward in event time
        times.append(data["E"])
        values.append(str(data["p"]) if kind == "trade_price" else data)

    def mark_series(self, symbol: str) -> tuple[list[int], list[float]]:
        """Event times and mark prices of every mark update of ``symbol`` in the session."""
        times, values = self._timeline["mark"].get(symbol, ([], []))
        return times, [float(v["p"]) for v in values]

    def at(self, event_time_ms: int) -> MarketView:
        """The view as of an event time: each value is the last one at or before it (else the seed)."""
        view = MarketView.__new__(MarketView)
        view.price_decimals = self.price_decimals
        view._snapshot_mid = self._snapshot_mid
        view._timeline = self._timeline
        view._seed_trade_price, view._seed_mark, view._seed_touch = (
            self._seed_trade_price,
            self._seed_mark,
            self._seed_touch,
        )
        for kind in ("trade_price", "mark", "touch"):
            seeded = dict(getattr(self, "_seed_" + kind))
            for symbol, (times, values) in self._timeline[kind].items():
                i = bisect_right(times, event_time_ms) - 1
                if i >= 0:
                    seeded[symbol] = values[i]
            setattr(view, kind, seeded)
        return view

    def observe(self, frame: RecordedFrame) -> None:
        """Advance the view with one replayed frame."""
        self._observe(frame, seed=False)

    def _observe(self, frame: RecordedFrame, *, seed: bool) -> None:
        data = frame.payload
        if not isinstance(data, dict):
            return
        event = data.get("e")
        symbol = str(data.get("s", "")).upper()
        if event == "aggTrade":
            self._put(self.trade_price, symbol, str(data["p"]), seed)
            self.price_decimals.setdefault(symbol, decimals_of(str(data["p"])))
        elif event == "markPriceUpdate":
            self._put(self.mark, symbol, data, seed)
        elif event == "bookTicker":
            self._put(self.touch, symbol, data, seed)
            self.price_decimals.setdefault(symbol, decimals_of(str(data["b"])))

    @staticmethod
    def _put(target: dict[str, Any], symbol: str, value: Any, seed: bool) -> None:
        if seed:
            target.setdefault(symbol, value)
        else:
            target[symbol] = value

    def price(self, symbol: str) -> float:
        """Reference price: mark, else last trade, else touch mid, else snapshot mid, else 100."""
        if symbol in self.mark:
            return float(self.mark[symbol]["p"])
        if symbol in self.trade_price:
            return float(self.trade_price[symbol])
        if symbol in self.touch:
            return (float(self.touch[symbol]["b"]) + float(self.touch[symbol]["a"])) / 2
        return self._snapshot_mid.get(symbol, 100.0)

    def decimals(self, symbol: str) -> int:
        return self.price_decimals.get(symbol, 2)
