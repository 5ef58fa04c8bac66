"""Binance USD-M frames to tapeflow's normalised records (field names of `schemas/avro/*.avsc`).

Pure functions, one per stream, in the spirit of cryptofeed's per-exchange normalisation: the raw
exchange vocabulary (`a`, `p`, `m`, ...) stops here. A frame that does not have the expected shape
raises `FrameError` with the reason, so the producer can dead-letter it and keep going.
"""

from __future__ import annotations

from typing import Any

from producers.base.book import DepthDiff, DepthSnapshot, diff_record
from producers.base.frames import FrameError, finite_number

EXCHANGE = "binance"


_number = finite_number  # (producers.base.frames)


def _taker_side(maker: Any) -> str:
    """`m` = buyer is the maker => the aggressor (taker) sold; anything but a JSON boolean is refused
    (the text "false" is truthy and would have become SELL)."""
    if not isinstance(maker, bool):
        raise TypeError(f"m={maker!r} is not a boolean")
    return "SELL" if maker else "BUY"


def _levels(raw: Any, side: str) -> tuple[tuple[float, float], ...]:
    return tuple((_number(p, side + " price"), _number(q, side + " qty")) for p, q in raw)


def stream_kind(stream: str) -> str:
    """`btcusdt@aggTrade` → `aggTrade`; `btcusdt@depth@100ms` → `depth`; `!forceOrder@arr` → `forceOrder`."""
    name = stream.split("@", 2)
    if stream.startswith("!"):
        return name[0][1:]
    return name[1] if len(name) > 1 else stream


def parse_agg_trade(d: dict, receive_time: int) -> dict:
    try:
        if d["e"] != "aggTrade":
            raise FrameError(f"expected aggTrade event, got {d['e']!r}")
        return {
            "exchange": EXCHANGE,
            "symbol": d["s"],
            "agg_id": int(d["a"]),
            "price": _number(d["p"], "p"),
            "qty": _number(d["q"], "q"),
            "first_trade_id": int(d["f"]),
            "last_trade_id": int(d["l"]),
            "event_time": int(d["E"]),
            "trade_time": int(d["T"]),
            "receive_time": receive_time,
            "taker_side": _taker_side(d["m"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad aggTrade frame: {type(exc).__name__}: {exc}") from None


def parse_rest_agg_trade(d: dict, symbol: str, receive_time: int) -> dict:
    """REST `/fapi/v1/aggTrades` rows lack `e`/`E`/`s`: the trade time stands in for the event time."""
    try:
        return {
            "exchange": EXCHANGE,
            "symbol": symbol,
            "agg_id": int(d["a"]),
            "price": _number(d["p"], "p"),
            "qty": _number(d["q"], "q"),
            "first_trade_id": int(d["f"]),
            "last_trade_id": int(d["l"]),
            "event_time": int(d["T"]),
            "trade_time": int(d["T"]),
            "receive_time": receive_time,
            "taker_side": _taker_side(d["m"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad REST aggTrade row: {type(exc).__name__}: {exc}") from None


def parse_depth_diff(d: dict, receive_time: int) -> DepthDiff:
    try:
        if d["e"] != "depthUpdate":
            raise FrameError(f"expected depthUpdate event, got {d['e']!r}")
        return DepthDiff(
            symbol=d["s"],
            first_update_id=int(d["U"]),
            final_update_id=int(d["u"]),
            prev_final_update_id=int(d["pu"]),
            event_time=int(d["E"]),
            transaction_time=int(d["T"]),
            receive_time=receive_time,
            bids=_levels(d["b"], "bid"),
            asks=_levels(d["a"], "ask"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad depthUpdate frame: {type(exc).__name__}: {exc}") from None


def parse_depth_snapshot(d: dict, symbol: str, receive_time: int) -> DepthSnapshot:
    try:
        return DepthSnapshot(
            symbol=symbol,
            last_update_id=int(d["lastUpdateId"]),
            bids=_levels(d["bids"], "bid"),
            asks=_levels(d["asks"], "ask"),
            event_time=int(d.get("E", 0)),
            receive_time=receive_time,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad depth snapshot: {type(exc).__name__}: {exc}") from None


def depth_diff_record(diff: DepthDiff) -> dict:
    """`md.depth` record of a verified Binance diff."""
    return diff_record(EXCHANGE, diff)


def parse_force_order(d: dict, receive_time: int) -> dict:
    """`!forceOrder@arr`: order side BUY closes a SHORT (a short was liquidated), SELL a LONG."""
    try:
        if d["e"] != "forceOrder":
            raise FrameError(f"expected forceOrder event, got {d['e']!r}")
        o = d["o"]
        side = o["S"]
        if side not in ("BUY", "SELL"):
            raise FrameError(f"unknown liquidation side {side!r}")
        avg_price = _number(o["ap"], "ap")
        filled = _number(o["z"], "z")
        return {
            "exchange": EXCHANGE,
            "symbol": o["s"],
            "side": side,
            "liquidated_side": "SHORT" if side == "BUY" else "LONG",
            "price": _number(o["p"], "p"),
            "avg_price": avg_price,
            "qty": _number(o["q"], "q"),
            "filled_qty": filled,
            "usd_value": avg_price * filled,
            "event_time": int(d["E"]),
            "trade_time": int(o["T"]),
            "receive_time": receive_time,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad forceOrder frame: {type(exc).__name__}: {exc}") from None


def parse_mark_price(d: dict, receive_time: int) -> dict:
    try:
        if d["e"] != "markPriceUpdate":
            raise FrameError(f"expected markPriceUpdate event, got {d['e']!r}")
        return {
            "exchange": EXCHANGE,
            "symbol": d["s"],
            "mark_price": _number(d["p"], "p"),
            "index_price": _number(d["i"], "i"),
            "funding_rate": _number(d["r"], "r"),
            "next_funding_time": int(d["T"]),
            "event_time": int(d["E"]),
            "receive_time": receive_time,
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"bad markPriceUpdate frame: {type(exc).__name__}: {exc}") from None
