"""The OKX exchange's own state as far as the replay has got: what a new subscriber or a REST GET sees.

OKX answers a subscription to ``books`` with a full snapshot of *now* (``prevSeqId`` -1), then updates
chained by ``seqId``; ``GET /api/v5/market/books`` returns the same book with its ``seqId``. So the fake
keeps each instrument's book, sequence id, mark, index and funding, advanced by every replayed push,
including the ones a skip fault withheld (they happened at the exchange): a client that lost updates and
fetches a REST snapshot gets one the following updates continue, exactly as on the real venue. It takes
the place of the Binance fake's market view in the shared :class:`ExchangeState`, whose replay calls
:meth:`observe` for every frame. Pure and deterministic: no clock, no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..depth_book import _apply
from ..recording import RecordedFrame
from .synthetic import OkxSession, OkxSymbolState, _copy

SNAPSHOT_CHANNELS = ("books", "mark-price", "index-tickers", "funding-rate", "tickers")  # pushed at once on subscribe


class OkxMarket:
    """Per instrument: book (contracts), seqId, mark, index, funding at the replay position."""

    def __init__(self, session: OkxSession) -> None:
        self.fills = session.fills
        self.by_symbol: dict[str, OkxSymbolState] = {s: _copy(st) for s, st in session.initial.items()}
        self.by_inst: dict[str, OkxSymbolState] = {}
        for st in self.by_symbol.values():
            self.by_inst[st.inst_id] = st
            self.by_inst[st.index_id] = st

    def observe(self, frame: RecordedFrame) -> None:
        """Advance the state with one replayed push."""
        msg = frame.payload
        if not isinstance(msg, dict) or not isinstance(msg.get("data"), list) or not msg["data"]:
            return
        channel, inst_id = frame.stream.split(":", 1)
        st = self.by_inst.get(inst_id)
        if st is None:
            return
        row = msg["data"][0]
        if channel == "books":
            _apply(st.bids, tuple((lvl[0], lvl[1]) for lvl in row["bids"]))
            _apply(st.asks, tuple((lvl[0], lvl[1]) for lvl in row["asks"]))
            st.seq_id, st.ts = row["seqId"], int(row["ts"])
        elif channel == "trades":
            st.trade_id = int(row["tradeId"])
        elif channel == "mark-price":
            st.mark = dict(row)
        elif channel == "index-tickers":
            st.index = dict(row)
        elif channel == "tickers":
            st.spot = dict(row)
        elif channel == "funding-rate":
            st.funding = dict(row)

    def book_row(self, inst_id: str, depth: int) -> dict[str, Any] | None:
        """The book as OKX rows (best first), with its seqId and ts; None for an unknown instrument."""
        st = self.by_inst.get(inst_id)
        if st is None or st.inst_id != inst_id:
            return None
        bids = sorted(st.bids.items(), key=lambda kv: float(kv[0]), reverse=True)[:depth]
        asks = sorted(st.asks.items(), key=lambda kv: float(kv[0]))[:depth]
        return {
            "asks": [[p, q, "0", "1"] for p, q in asks],
            "bids": [[p, q, "0", "1"] for p, q in bids],
            "ts": str(st.ts),
            "seqId": st.seq_id,
        }

    def history_trades(self, inst_id: str, after: int | None, limit: int) -> list[dict[str, str]] | None:
        """`GET /api/v5/market/history-trades?type=1`: the fills that have happened with tradeId < `after`
        (all when None), newest first, at most `limit`; None for an unknown instrument."""
        st = self.by_inst.get(inst_id)
        if st is None or st.inst_id != inst_id:
            return None
        newest = st.trade_id if after is None else min(st.trade_id, after - 1)
        out = []
        for fill in reversed(self.fills.get(inst_id, ())):
            if int(fill["tradeId"]) <= newest:
                out.append(dict(fill))
                if len(out) == limit:
                    break
        return out

    def subscribe_push(self, channel: str, inst_id: str) -> str | None:
        """The push a new subscriber to (channel, inst_id) receives at once, or None."""
        st = self.by_inst.get(inst_id)
        if st is None or channel not in SNAPSHOT_CHANNELS:
            return None
        arg = {"channel": channel, "instId": inst_id}
        if channel == "books":
            row = self.book_row(inst_id, 400)
            if row is None:
                return None
            msg: dict[str, Any] = {"arg": arg, "action": "snapshot", "data": [{**row, "checksum": 0, "prevSeqId": -1}]}
        else:
            row = {"mark-price": st.mark, "index-tickers": st.index, "funding-rate": st.funding, "tickers": st.spot}[
                channel
            ]
            if not row:
                return None
            msg = {"arg": arg, "data": [dict(row)]}
        return orjson.dumps(msg).decode()

    def instruments(self) -> list[dict[str, Any]]:
        """`GET /api/v5/public/instruments?instType=SWAP` rows (the fields the docs list for a SWAP)."""
        out = []
        for st in self.by_symbol.values():
            base, quote = st.index_id.split("-")
            out.append(
                {
                    "alias": "",
                    "auctionEndTime": "",
                    "baseCcy": "",
                    "category": "1",
                    "ctMult": "1",
                    "ctType": "linear",
                    "ctVal": str(st.ct_val),
                    "ctValCcy": base,
                    "contTdSwTime": "",
                    "expTime": "",
                    "futureSettlement": False,
                    "groupId": "2",
                    "instFamily": st.index_id,
                    "instId": st.inst_id,
                    "instType": "SWAP",
                    "lever": "100",
                    "listTime": "1611916828000",
                    "lotSz": "0.01",
                    "maxIcebergSz": "100000000.0000000000000000",
                    "maxLmtAmt": "20000000",
                    "maxLmtSz": "100000000",
                    "maxMktAmt": "",
                    "maxMktSz": "12000",
                    "maxStopSz": "12000",
                    "maxTriggerSz": "100000000.0000000000000000",
                    "maxTwapSz": "100000000.0000000000000000",
                    "minSz": "0.01",
                    "optType": "",
                    "openType": "",
                    "preMktSwTime": "",
                    "quoteCcy": "",
                    "tradeQuoteCcyList": [],
                    "settleCcy": quote,
                    "state": "live",
                    "ruleType": "normal",
                    "stk": "",
                    "tickSz": "0.1",
                    "uly": st.index_id,
                    "instIdCode": None,
                    "instCategory": "1",
                    "upcChg": [],
                }
            )
        return out
