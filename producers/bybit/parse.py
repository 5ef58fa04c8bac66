"""Bybit v5 public (linear) frames to tapeflow's normalised records (field names of `schemas/avro/*.avsc`).

Pure functions, one per topic, as `producers.binance.parse` does for Binance: Bybit's vocabulary
(`S`, `v`, `u`, `markPrice`, ...) stops here. A frame not of the documented shape raises the shared
`FrameError` with the reason, so the producer dead-letters it and keeps going.

Mappings that are not one-to-one (each is a decision, documented where it is made):
- publicTrade `S` is the taker side (`Buy`/`Sell`) → `taker_side` BUY/SELL. Bybit trade ids are UUID
  strings and its per-trade `seq` is the matching engine's cross sequence (shared by the fills of one
  match, advanced by non-trade events too), so neither gives tapeflow's consecutive `agg_id`: a
  `TradePrint` carries both, and `trade_numbering` assigns the id.
- orderbook frames become the Binance `DepthDiff` type so the shared book machinery applies them:
  `first_update_id = final_update_id = u`; a delta chains to `prev_final_update_id = u - 1`; a
  snapshot is a full book that chains to nothing, `prev_final_update_id = None`.
- allLiquidation `S` is the side of the *position* that was liquidated (Bybit: "Buy" means a long
  position was liquidated) → `liquidated_side` LONG for Buy, SHORT for Sell; the liquidation order
  closing it is the opposite side, which is what `side` holds (SELL closes a LONG, as on Binance).
  Bybit reports only a price and a size per liquidation: price = avg_price = `p`, qty = filled = `v`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from producers.base.book import DepthDiff, diff_record
from producers.base.frames import FrameError, finite_number, normalising

EXCHANGE = "bybit"
TAKER_SIDES = {"Buy": "BUY", "Sell": "SELL"}
# allLiquidation S (position side) -> (liquidation order side, liquidated position)
LIQUIDATION_SIDES = {"Buy": ("SELL", "LONG"), "Sell": ("BUY", "SHORT")}

__all__ = [
    "EXCHANGE",
    "FrameError",
    "TradePrint",
    "bybit_depth_record",
    "parse_all_liquidation",
    "parse_orderbook",
    "parse_public_trades",
    "split_topic",
    "ticker_fields",
]


def split_topic(topic: str) -> tuple[str, str]:
    """`publicTrade.BTCUSDT` → (`publicTrade`, `BTCUSDT`); `orderbook.50.BTCUSDT` → (`orderbook`, `BTCUSDT`)."""
    parts = topic.split(".")
    if len(parts) < 2 or not parts[0] or not parts[-1]:
        raise FrameError(f"unexpected topic {topic!r}")
    return parts[0], parts[-1]


_finite = finite_number  # (producers.base.frames)


def _levels(raw: Any) -> tuple[tuple[float, float], ...]:
    return tuple((_finite(p, "price"), _finite(q, "size")) for p, q in raw)


def _message(msg: Any, kind: str) -> tuple[int, Any]:
    """(ts, data) of a topic message, after checking its envelope."""
    if not isinstance(msg, dict) or not str(msg.get("topic", "")).startswith(kind + "."):
        raise FrameError(f"expected a {kind} message")
    ts = msg.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise FrameError(f"{kind}: ts={ts!r} is not an Unix-ms integer")
    return ts, msg.get("data")


@dataclass(frozen=True, slots=True)
class TradePrint:
    """One publicTrade fill before tapeflow numbering; `record(agg_id)` is its `md.trades` value."""

    symbol: str
    trade_id: str  # Bybit `i` (UUID or numeric string)
    seq: int | None  # Bybit cross sequence `seq` (newer frames only)
    price: float
    qty: float
    taker_side: str  # BUY | SELL
    trade_time: int  # `T`
    event_time: int  # message `ts`
    receive_time: int
    block_trade: bool

    def record(self, agg_id: int) -> dict:
        """`md.trades` record; a Bybit print is one trade, so first = last trade id = `agg_id`."""
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "agg_id": agg_id,
            "price": self.price,
            "qty": self.qty,
            "first_trade_id": agg_id,
            "last_trade_id": agg_id,
            "event_time": self.event_time,
            "trade_time": self.trade_time,
            "receive_time": self.receive_time,
            "taker_side": self.taker_side,
        }


@normalising("publicTrade")
def parse_public_trades(msg: Any, receive_time: int) -> list[TradePrint]:
    """`publicTrade.<SYMBOL>`: every fill of the frame, in frame order (block and RPI trades included)."""
    ts, data = _message(msg, "publicTrade")
    if not isinstance(data, list) or not data:
        raise FrameError("publicTrade: data is not a non-empty list")
    out = []
    for row in data:
        side = TAKER_SIDES.get(row["S"])
        if side is None:
            raise FrameError(f"publicTrade: unknown taker side {row['S']!r}")
        trade_id = row["i"]
        if not isinstance(trade_id, str) or not trade_id:
            raise FrameError(f"publicTrade: trade id {trade_id!r} is not a string")
        seq = row.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
            raise FrameError(f"publicTrade: seq={seq!r} is not an integer")
        out.append(
            TradePrint(
                symbol=row["s"],
                trade_id=trade_id,
                seq=seq,
                price=_finite(row["p"], "p"),
                qty=_finite(row["v"], "v"),
                taker_side=side,
                trade_time=int(row["T"]),
                event_time=ts,
                receive_time=receive_time,
                block_trade=bool(row.get("BT", False)),
            )
        )
    return out


@normalising("orderbook")
def parse_orderbook(msg: Any, receive_time: int) -> DepthDiff:
    """`orderbook.<depth>.<SYMBOL>` snapshot or delta as a `DepthDiff` (see the module docstring)."""
    ts, data = _message(msg, "orderbook")
    kind = msg["type"]
    if kind not in ("snapshot", "delta"):
        raise FrameError(f"orderbook: unknown type {kind!r}")
    u = data["u"]
    if isinstance(u, bool) or not isinstance(u, int) or u < 1:
        raise FrameError(f"orderbook: update id u={u!r} is not a positive integer")
    return DepthDiff(
        symbol=data["s"],
        first_update_id=u,
        final_update_id=u,
        prev_final_update_id=None if kind == "snapshot" else u - 1,  # type: ignore[arg-type]
        event_time=ts,
        transaction_time=int(msg.get("cts", ts)),
        receive_time=receive_time,
        bids=_levels(data["b"]),
        asks=_levels(data["a"]),
    )


def bybit_depth_record(diff: DepthDiff) -> dict:
    """`md.depth` record of a verified Bybit update."""
    return diff_record(EXCHANGE, diff)


@normalising("allLiquidation")
def parse_all_liquidation(msg: Any, receive_time: int) -> list[dict]:
    """`allLiquidation.<SYMBOL>`: one `md.liquidations` record per entry (side mapping in the module docstring)."""
    ts, data = _message(msg, "allLiquidation")
    if not isinstance(data, list) or not data:
        raise FrameError("allLiquidation: data is not a non-empty list")
    out = []
    for row in data:
        sides = LIQUIDATION_SIDES.get(row["S"])
        if sides is None:
            raise FrameError(f"allLiquidation: unknown side {row['S']!r}")
        price, qty = _finite(row["p"], "p"), _finite(row["v"], "v")
        out.append(
            {
                "exchange": EXCHANGE,
                "symbol": row["s"],
                "side": sides[0],
                "liquidated_side": sides[1],
                "price": price,
                "avg_price": price,
                "qty": qty,
                "filled_qty": qty,
                "usd_value": price * qty,
                "event_time": ts,
                "trade_time": int(row["T"]),
                "receive_time": receive_time,
            }
        )
    return out


# tickers fields tapeflow reads, with their parsers; every other ticker field is ignored
TICKER_FIELDS: dict[str, Callable[[Any], float | int]] = {
    "markPrice": lambda raw: _finite(raw, "markPrice"),
    "indexPrice": lambda raw: _finite(raw, "indexPrice"),
    "fundingRate": lambda raw: _finite(raw, "fundingRate"),
    "nextFundingTime": int,
    "openInterest": lambda raw: _finite(raw, "openInterest"),
    "openInterestValue": lambda raw: _finite(raw, "openInterestValue"),
}


@normalising("tickers")
def ticker_fields(msg: Any) -> tuple[str, str, int, dict[str, float | int]]:
    """`tickers.<SYMBOL>` → (type, symbol, ts, the fields of TICKER_FIELDS present in this message).

    A delta carries only what changed; Bybit sends "" for a field that has no value (e.g. before a
    listing opens), which counts as "not in this message".
    """
    ts, data = _message(msg, "tickers")
    kind = msg["type"]
    if kind not in ("snapshot", "delta"):
        raise FrameError(f"tickers: unknown type {kind!r}")
    symbol = data["symbol"]
    if not isinstance(symbol, str) or not symbol:
        raise FrameError(f"tickers: symbol={symbol!r} is not a symbol")
    fields = {name: convert(data[name]) for name, convert in TICKER_FIELDS.items() if data.get(name) not in (None, "")}
    return kind, symbol, ts, fields
