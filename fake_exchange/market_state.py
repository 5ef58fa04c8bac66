"""Latest prices per symbol, as far as the replay has got.

REST endpoints that the recording does not cover (premiumIndex, openInterest, ratios, spot and
Coinbase tickers) are generated around a reference price. Taking that price from the frames already
replayed keeps the generated bodies coherent with the websocket data a producer just saw (a Coinbase
premium computed against a price from another era would be meaningless). Before the replay reaches a
symbol's first trade the view is seeded with the first value of each kind in the session.
"""

from __future__ import annotations

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
        for frame in recording.frames:
            self._observe(frame, seed=True)

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
