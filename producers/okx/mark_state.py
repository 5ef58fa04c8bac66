"""OKX mark price, index price and funding, from three channels, merged into `md.mark` records.

`md.mark` holds mark, index, funding rate and next funding time together (Binance sends them in one
`markPrice` frame, Bybit in its tickers). OKX pushes them separately: `mark-price` (every 200 ms when it
moves, else every 10 s), `index-tickers` (every 100 ms when it moves) and `funding-rate` (every 30-90 s).
The latest of each is kept per symbol; a record is published once all three are known and then
whenever one of the four values changes, with the `ts` of the push that changed it as its event time.
A repeated value (a 10-s mark refresh, a funding push that moved nothing) publishes nothing. The spot
pair's touch (`tickers` on `BTC-USDT`) against the mark is the spot–perp divergence (`on_spot`). Pure state.
"""

from __future__ import annotations

from dataclasses import dataclass

from producers.okx.parse import EXCHANGE


@dataclass
class OkxMarkState:
    symbol: str
    mark: float | None = None
    index: float | None = None
    funding_rate: float | None = None
    next_funding_time: int | None = None
    _published: tuple | None = None
    _spot_published_ts: int | None = None

    def on_mark(self, price: float, ts: int, receive_time: int) -> dict | None:
        self.mark = price
        return self._record(ts, receive_time)

    def on_index(self, price: float, ts: int, receive_time: int) -> dict | None:
        self.index = price
        return self._record(ts, receive_time)

    def on_funding(self, rate: float, funding_time: int, ts: int, receive_time: int) -> dict | None:
        self.funding_rate, self.next_funding_time = rate, funding_time
        return self._record(ts, receive_time)

    def on_spot(self, bid: float, ask: float, ts: int, receive_time: int, interval_ms: int) -> dict | None:
        """The spot touch: `md.indicators` kind `spot_perp_divergence` = (mark − spot mid) / spot mid, once
        the mark is known and at most once per `interval_ms` of event time; a crossed or empty touch (OKX's
        pre-open) publishes nothing."""
        if self.mark is None or not 0 < bid <= ask:
            return None
        if self._spot_published_ts is not None and ts - self._spot_published_ts < interval_ms:
            return None
        self._spot_published_ts = ts
        spot = (bid + ask) / 2
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "kind": "spot_perp_divergence",
            "value": (self.mark - spot) / spot,
            "period": None,
            "extra": {"perp_price": self.mark, "spot_price": spot},
            "event_time": ts,
            "receive_time": receive_time,
        }

    def _record(self, ts: int, receive_time: int) -> dict | None:
        values = (self.mark, self.index, self.funding_rate, self.next_funding_time)
        if any(v is None for v in values) or values == self._published:
            return None
        self._published = values
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "mark_price": self.mark,
            "index_price": self.index,
            "funding_rate": self.funding_rate,
            "next_funding_time": self.next_funding_time,
            "event_time": ts,
            "receive_time": receive_time,
        }
