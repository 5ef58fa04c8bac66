"""REST bodies the recording does not contain, generated in Binance's (and Coinbase's) exact shapes.

Numbers are strings where the exchange sends strings, timestamps are integer milliseconds, series are
ascending and aligned to period boundaries. Values are plausible, not realistic: they are derived from
the reference price and a hash of (symbol, kind, timestamp), so the same request always gets the same
answer and nothing depends on call order. Pure functions: the caller passes ``now_ms``.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from datetime import UTC, datetime
from typing import Any

PERIODS_MS = {
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
FUNDING_INTERVAL_MS = 8 * 3_600_000


def unit_noise(*parts: object) -> float:
    """Deterministic value in [0, 1) from its arguments."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


def period_stamps(period_ms: int, now_ms: int, start_ms: int | None, end_ms: int | None, limit: int) -> list[int]:
    """Period starts Binance would list: the latest ``limit`` up to now/endTime, or from startTime on."""
    latest = (now_ms // period_ms) * period_ms
    if end_ms is not None:
        latest = min(latest, (end_ms // period_ms) * period_ms)
    if start_ms is not None:
        first = -(-start_ms // period_ms) * period_ms
        return list(range(first, latest + 1, period_ms))[:limit]
    return [t for t in range(latest - (limit - 1) * period_ms, latest + 1, period_ms) if t >= 0]


def _open_interest(symbol: str, price: float, ts: int) -> float:
    base_notional = 2e8 * (0.5 + unit_noise(symbol, "oi-base"))
    wave = 1 + 0.04 * math.sin(ts / 3_600_000 + 6.28 * unit_noise(symbol, "oi-phase"))
    return base_notional / max(price, 1e-9) * wave * (1 + 0.01 * (unit_noise(symbol, "oi", ts) - 0.5))


def open_interest(symbol: str, price: float, now_ms: int) -> dict[str, Any]:
    return {"openInterest": fmt(_open_interest(symbol, price, now_ms), 3), "symbol": symbol, "time": now_ms}


def open_interest_hist(symbol: str, price: float, stamps: list[int]) -> list[dict[str, Any]]:
    rows = []
    for ts in stamps:
        oi = _open_interest(symbol, price, ts)
        rows.append(
            {
                "symbol": symbol,
                "sumOpenInterest": fmt(oi, 8),
                "sumOpenInterestValue": fmt(oi * price, 8),
                "CMCCirculatingSupply": fmt(oi * 40, 3),
                "timestamp": ts,
            }
        )
    return rows


def long_short_ratio(symbol: str, kind: str, stamps: list[int]) -> list[dict[str, Any]]:
    """``globalLongShortAccountRatio`` / ``topLongShortPositionRatio`` rows (kind picks the series)."""
    rows = []
    for ts in stamps:
        long_share = round(0.35 + 0.3 * unit_noise(symbol, kind, ts), 4)
        short_share = round(1 - long_share, 4)
        rows.append(
            {
                "symbol": symbol,
                "longShortRatio": fmt(long_share / short_share, 4),
                "longAccount": fmt(long_share, 4),
                "shortAccount": fmt(short_share, 4),
                "timestamp": ts,
            }
        )
    return rows


def taker_long_short_ratio(symbol: str, price: float, stamps: list[int]) -> list[dict[str, Any]]:
    rows = []
    for ts in stamps:
        buy = round(5e5 * (0.3 + unit_noise(symbol, "taker-buy", ts)) / max(price, 1e-9), 4)
        sell = round(5e5 * (0.3 + unit_noise(symbol, "taker-sell", ts)) / max(price, 1e-9), 4)
        rows.append(
            {
                "buySellRatio": fmt(buy / sell if sell else 0.0, 4),
                "buyVol": fmt(buy, 4),
                "sellVol": fmt(sell, 4),
                "timestamp": ts,
            }
        )
    return rows


def _funding_rate(symbol: str, ts: int) -> float:
    return 0.0001 + 0.0002 * (unit_noise(symbol, "funding", ts) - 0.5)


def premium_index(symbol: str, price: float, mark: dict[str, Any] | None, now_ms: int) -> dict[str, Any]:
    """Mark price and funding; copied from the last replayed markPrice frame when there is one."""
    next_funding = (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
    if mark is not None:
        mark_price, index_price = str(mark["p"]), str(mark.get("i", mark["p"]))
        settle, rate = str(mark.get("P", index_price)), str(mark.get("r", "0.00010000"))
        next_funding = int(mark.get("T", next_funding))
    else:
        index = price * (1 - 0.0003 * (unit_noise(symbol, "basis", now_ms // 1000) - 0.5))
        mark_price, index_price, settle = fmt(price, 8), fmt(index, 8), fmt(index, 8)
        rate = fmt(_funding_rate(symbol, next_funding), 8)
    return {
        "symbol": symbol,
        "markPrice": mark_price,
        "indexPrice": index_price,
        "estimatedSettlePrice": settle,
        "lastFundingRate": rate,
        "interestRate": "0.00010000",
        "nextFundingTime": next_funding,
        "time": now_ms,
    }


def funding_rate_history(symbol: str, price: float, stamps: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "symbol": symbol,
            "fundingTime": ts,
            "fundingRate": fmt(_funding_rate(symbol, ts), 8),
            "markPrice": fmt(price, 8),
        }
        for ts in stamps
    ]


def klines(
    stamps: list[int], interval_ms: int, times: list[int], prices: list[float], fallback: float
) -> list[list[Any]]:
    """Binance kline rows (open time, OHLC as strings, close time, zero volumes) of a price series
    sampled at ``times``; an interval with no sample repeats the previous close (``fallback`` first)."""
    rows: list[list[Any]] = []
    i = bisect_left(times, stamps[0]) if stamps else 0
    last = prices[i - 1] if i > 0 else fallback
    for start in stamps:
        end = start + interval_ms
        while i < len(times) and times[i] < start:  # gaps between requested stamps
            last = prices[i]
            i += 1
        inside = []
        while i < len(times) and times[i] < end:
            inside.append(prices[i])
            i += 1
        open_, high, low, close = (inside[0], max(inside), min(inside), inside[-1]) if inside else (last,) * 4
        last = close
        rows.append(
            [start, fmt(open_, 8), fmt(high, 8), fmt(low, 8), fmt(close, 8), "0", end - 1, "0", 0, "0", "0", "0"]
        )
    return rows


def spot_book_ticker(symbol: str, price: float, decimals: int, now_ms: int) -> dict[str, Any]:
    """Binance spot ``/api/v3/ticker/bookTicker``: a few basis points away from the perp price."""
    basis = 0.0004 * (unit_noise(symbol, "spot", now_ms // 60_000) - 0.5)
    tick = 10.0**-decimals
    bid = round(price * (1 + basis), decimals)
    return {
        "symbol": symbol,
        "bidPrice": fmt(bid, 8),
        "bidQty": fmt(1 + 50 * unit_noise(symbol, "spot-bq", now_ms // 1000), 8),
        "askPrice": fmt(bid + tick, 8),
        "askQty": fmt(1 + 50 * unit_noise(symbol, "spot-aq", now_ms // 1000), 8),
    }


def coinbase_ticker(product_id: str, price: float, decimals: int, now_ms: int) -> dict[str, Any]:
    """Coinbase Exchange ``/products/{id}/ticker``: the perp price with a small premium (+-0.1 %)."""
    premium = 0.002 * (unit_noise(product_id, "premium", now_ms // 60_000) - 0.5)
    places = min(max(2, decimals), 6)
    last = price * (1 + premium)
    tick = 10.0**-places
    when = datetime.fromtimestamp(now_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "ask": fmt(last + tick, places),
        "bid": fmt(last, places),
        "volume": fmt(1e7 / max(price, 1e-9) * (0.5 + unit_noise(product_id, "vol", now_ms // 3_600_000)), 8),
        "trade_id": 10_000_000 + now_ms // 100 % 1_000_000_000,
        "price": fmt(last, places),
        "size": fmt(0.001 + unit_noise(product_id, "size", now_ms), 8),
        "time": when,
    }


def base_asset(symbol: str) -> str:
    for quote in ("USDT", "USDC", "BUSD"):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return symbol


def exchange_info(symbols: list[str], decimals: dict[str, int], now_ms: int) -> dict[str, Any]:
    """A minimal USD-M ``exchangeInfo`` listing the session's symbols (used when none was recorded)."""
    listed = []
    for symbol in symbols:
        d = decimals.get(symbol, 2)
        quote = symbol[len(base_asset(symbol)) :] or "USDT"
        listed.append(
            {
                "symbol": symbol,
                "pair": symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "baseAsset": base_asset(symbol),
                "quoteAsset": quote,
                "marginAsset": quote,
                "pricePrecision": d,
                "quantityPrecision": 3,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "filters": [
                    {
                        "filterType": "PRICE_FILTER",
                        "minPrice": fmt(10.0**-d, d),
                        "maxPrice": "1000000",
                        "tickSize": fmt(10.0**-d, d),
                    },
                    {"filterType": "LOT_SIZE", "stepSize": "0.001", "maxQty": "1000", "minQty": "0.001"},
                    {"filterType": "MIN_NOTIONAL", "notional": "5"},
                ],
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
        )
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": listed,
    }


def trade_klines(trades: list, first_open_ms: int, last_open_ms: int, now_ms: int, limit: int) -> list[list]:
    """1m klines of REST-shaped aggTrades (``AggTrade``s, ``.body`` keys p, q, T, m) for the minutes opening
    in ``[first_open_ms, last_open_ms]`` that have ended by ``now_ms``: Binance's row with the taker-buy
    volume."""
    from decimal import Decimal

    minutes: dict[int, list] = {}
    for t in trades:
        minute = t.time // 60_000 * 60_000
        if first_open_ms <= minute <= last_open_ms and minute + 60_000 <= now_ms:
            minutes.setdefault(minute, []).append(t.body)
    rows = []
    for minute in sorted(minutes)[:limit]:
        body = minutes[minute]
        prices = [Decimal(b["p"]) for b in body]
        qty = [Decimal(b["q"]) for b in body]
        buy = [(p, q) for p, q, b in zip(prices, qty, body, strict=True) if not b["m"]]
        rows.append(
            [
                minute,
                body[0]["p"],
                str(max(prices)),
                str(min(prices)),
                body[-1]["p"],
                str(sum(qty)),
                minute + 59_999,
                str(sum(p * q for p, q in zip(prices, qty, strict=True))),
                len(body),
                str(sum((q for _, q in buy), Decimal(0))),
                str(sum((p * q for p, q in buy), Decimal(0))),
                "0",
            ]
        )
    return rows
