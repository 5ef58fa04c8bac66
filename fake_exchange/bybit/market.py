"""The Bybit exchange's own state as far as the replay has got: what a new subscriber's snapshot shows.

Bybit answers a subscription to ``orderbook.*`` or ``tickers.*`` with a full snapshot of *now*, then
deltas. So the fake keeps the book (levels, ``u``, cross sequence) and the merged ticker per symbol,
advanced by every replayed frame, including the ones a skip fault withheld (they happened at the
exchange). A client that re-subscribes after missing deltas therefore gets a snapshot whose ``u`` the
following deltas continue, exactly as on the real venue. It takes the place of the Binance fake's
:class:`~fake_exchange.market_state.MarketView` in the shared :class:`ExchangeState`, whose
replay calls :meth:`observe` for every frame. Pure and deterministic: no clock, no I/O.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from schemas.symbols import base_quote

from ..depth_book import _apply
from ..recording import RecordedFrame
from .synthetic import BybitSession

SNAPSHOT_TOPICS = ("orderbook", "tickers")  # the topics Bybit opens with a snapshot


class BybitMarket:
    """Books, update ids, cross sequences and tickers per symbol at the replay position."""

    def __init__(self, session: BybitSession) -> None:
        self.bids = {s: dict(b.bids) for s, b in session.recording.initial_books.items()}
        self.asks = {s: dict(b.asks) for s, b in session.recording.initial_books.items()}
        self.update_id = {s: b.last_update_id for s, b in session.recording.initial_books.items()}
        self.seq = dict(session.initial_seq)
        self.tickers = {s: dict(t) for s, t in session.initial_tickers.items()}
        self.ts = dict.fromkeys(session.symbols, session.start_ms)

    def observe(self, frame: RecordedFrame) -> None:
        """Advance the state with one replayed message."""
        msg = frame.payload
        kind = frame.stream.split(".", 1)[0]
        data = msg.get("data") if isinstance(msg, dict) else None
        if kind == "orderbook" and isinstance(data, dict):
            symbol = data["s"]
            if msg["type"] == "snapshot":
                self.bids[symbol], self.asks[symbol] = {}, {}
            _apply(self.bids[symbol], tuple((p, q) for p, q in data["b"]))
            _apply(self.asks[symbol], tuple((p, q) for p, q in data["a"]))
            self.update_id[symbol] = data["u"]
            self.seq[symbol] = max(self.seq[symbol], data["seq"])
            self.ts[symbol] = msg["ts"]
        elif kind == "tickers" and isinstance(data, dict):
            symbol = data["symbol"]
            self.tickers[symbol].update(data)
            self.ts[symbol] = msg["ts"]

    def instruments(self) -> list[dict[str, Any]]:
        """``GET /v5/market/instruments-info?category=linear`` rows, in symbol order: the fields of
        Bybit's documented linear perpetual, with the synthetic market's lot (0.001, as the Binance
        fake's exchangeInfo) and the tick of its prices."""
        out = []
        for number, symbol in enumerate(sorted(self.bids), start=1):
            prices = [*self.bids[symbol], *self.asks[symbol]]
            decimals = max((len(p.split(".", 1)[1]) if "." in p else 0 for p in prices), default=2)
            tick = format(Decimal(1).scaleb(-decimals), "f")
            base, quote = base_quote(symbol)
            out.append(
                {
                    "symbol": symbol,
                    "symbolId": number,
                    "contractType": "LinearPerpetual",
                    "status": "Trading",
                    "baseCoin": base,
                    "quoteCoin": quote,
                    "launchTime": "1585526400000",
                    "deliveryTime": "0",
                    "deliveryFeeRate": "",
                    "priceScale": str(decimals),
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", "tickSize": tick},
                    "lotSizeFilter": {
                        "maxOrderQty": "1190.000",
                        "minOrderQty": "0.001",
                        "qtyStep": "0.001",
                        "postOnlyMaxOrderQty": "1190.000",
                        "maxMktOrderQty": "500.000",
                        "minNotionalValue": "5",
                    },
                    "unifiedMarginTrade": True,
                    "fundingInterval": 480,
                    "settleCoin": quote,
                    "copyTrading": "both",
                    "upperFundingRate": "0.00375",
                    "lowerFundingRate": "-0.00375",
                    "isPreListing": False,
                    "preListingInfo": None,
                    "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
                    "symbolType": "",
                }
            )
        return out

    def book_levels(self, symbol: str, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        """Best ``depth`` bids (highest first) and asks (lowest first) as Bybit strings."""
        bids = sorted(self.bids[symbol].items(), key=lambda kv: float(kv[0]), reverse=True)[:depth]
        asks = sorted(self.asks[symbol].items(), key=lambda kv: float(kv[0]))[:depth]
        return [list(level) for level in bids], [list(level) for level in asks]

    def snapshot_message(self, topic: str) -> str | None:
        """The snapshot a new subscriber to ``topic`` receives, or None for topics without one."""
        parts = topic.split(".")
        kind, symbol = parts[0], parts[-1]
        if symbol not in self.ts or kind not in SNAPSHOT_TOPICS:
            return None
        ts = self.ts[symbol]
        if kind == "tickers":
            msg: dict[str, Any] = {
                "topic": topic,
                "type": "snapshot",
                "ts": ts,
                "cs": self.seq[symbol],
                "data": dict(self.tickers[symbol]),
            }
        else:
            bids, asks = self.book_levels(symbol, int(parts[1]))
            msg = {
                "topic": topic,
                "type": "snapshot",
                "ts": ts,
                "data": {"s": symbol, "b": bids, "a": asks, "u": self.update_id[symbol], "seq": self.seq[symbol]},
                "cts": ts,
            }
        return orjson.dumps(msg).decode()
