"""Polled REST bodies (Binance USD-M, Binance spot, Coinbase) to `md.indicators` records.

Pure functions, one per endpoint: the exchanges' vocabulary (`sumOpenInterest`, `longAccount`,
`buySellRatio`, ...) stops here and leaves as the `MarketIndicator` fields of
`schemas/avro/market_indicator.avsc` (snake-case `kind` and `extra` keys). No I/O, no clock: the
caller passes the receive time, so every function is testable from a literal body.

Times: `event_time` is the exchange's own timestamp of the data point (`time`, `timestamp`,
Coinbase's ISO `time`) and the receive time only where the body has none (spot `bookTicker`).
A value derived from two venues (Coinbase premium, spot–perp divergence) takes the later of its
two inputs' event times: it is only known once both prices are.

Funding: the one canonical field is premiumIndex `lastFundingRate` (the rate of the current funding
interval, what the next settlement charges unless it moves; a fraction per interval). The old
system mixed it with `/fapi/v1/fundingRate`'s `fundingRate`, which is the *settled* history and
lags by up to 8 h; the settled value is also implied by `md.mark` frames at each funding time.

Anything not of the documented shape (missing field, a non-numeric or non-finite number, a
non-positive price, a symbol other than the one asked for) raises `IndicatorParseError` with the
reason: the poller counts it and moves on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EXCHANGE = "binance"


class IndicatorParseError(ValueError):
    """A REST body that is not of the endpoint's documented shape."""


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One venue's price for a symbol, with when it was true and when we learnt it (Unix ms)."""

    price: float
    event_time: int
    receive_time: int


# -- field readers ------------------------------------------------------------------------------
def _number(row: Any, field: str, what: str) -> float:
    """A finite float from a Binance number (sent as a string; a JSON number is accepted too)."""
    if not isinstance(row, dict):
        raise IndicatorParseError(f"{what}: expected a JSON object, got {type(row).__name__}")
    if field not in row:
        raise IndicatorParseError(f"{what}: missing field {field!r}")
    raw = row[field]
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        raise IndicatorParseError(f"{what}: {field}={raw!r} is not a number")
    try:
        value = float(raw)
    except ValueError:
        raise IndicatorParseError(f"{what}: {field}={raw!r} is not a number") from None
    if not math.isfinite(value):
        raise IndicatorParseError(f"{what}: {field}={raw!r} is not finite")
    return value


def _price(row: Any, field: str, what: str) -> float:
    value = _number(row, field, what)
    if value <= 0:
        raise IndicatorParseError(f"{what}: {field}={row[field]!r} is not a positive price")
    return value


def _millis(row: dict, field: str, what: str) -> int:
    if field not in row:
        raise IndicatorParseError(f"{what}: missing field {field!r}")
    raw = row[field]
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise IndicatorParseError(f"{what}: {field}={raw!r} is not an Unix-ms integer")
    return raw


def _iso_millis(row: dict, field: str, what: str) -> int:
    raw = row.get(field)
    if not isinstance(raw, str):
        raise IndicatorParseError(f"{what}: missing or non-string field {field!r}")
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        raise IndicatorParseError(f"{what}: {field}={raw!r} is not an ISO-8601 time") from None
    if stamp.tzinfo is None:
        raise IndicatorParseError(f"{what}: {field}={raw!r} has no time zone")
    return round(stamp.timestamp() * 1000)


def _object(body: Any, what: str) -> dict:
    if not isinstance(body, dict):
        raise IndicatorParseError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _rows(body: Any, what: str) -> list[dict]:
    if not isinstance(body, list):
        raise IndicatorParseError(f"{what}: expected a JSON array, got {type(body).__name__}")
    for row in body:
        _object(row, what)
    return body


def _check_symbol(row: dict, symbol: str, what: str) -> None:
    """Series rows and point bodies carry `symbol` (takerlongshortRatio rows do not): it must match."""
    if "symbol" in row and row["symbol"] != symbol:
        raise IndicatorParseError(f"{what}: body is for {row['symbol']!r}, asked for {symbol!r}")


def indicator(
    symbol: str,
    kind: str,
    value: float,
    *,
    event_time: int,
    receive_time: int,
    period: str | None = None,
    extra: dict[str, float] | None = None,
) -> dict:
    """One `md.indicators` record (field names of `MarketIndicator`)."""
    return {
        "exchange": EXCHANGE,
        "symbol": symbol,
        "kind": kind,
        "value": value,
        "period": period,
        "extra": extra or {},
        "event_time": event_time,
        "receive_time": receive_time,
    }


# -- Binance USD-M point values -----------------------------------------------------------------
def parse_open_interest(body: Any, symbol: str, receive_time: int) -> list[dict]:
    """`/fapi/v1/openInterest`: `{"openInterest": "<base units>", "symbol", "time"}`."""
    what = f"openInterest {symbol}"
    row = _object(body, what)
    _check_symbol(row, symbol, what)
    return [
        indicator(
            symbol,
            "open_interest",
            _number(row, "openInterest", what),
            event_time=_millis(row, "time", what),
            receive_time=receive_time,
        )
    ]


def parse_funding_rate(body: Any, symbol: str, receive_time: int) -> list[dict]:
    """`/fapi/v1/premiumIndex?symbol=`: value = `lastFundingRate` (see the module docstring)."""
    what = f"premiumIndex {symbol}"
    row = _object(body, what)
    _check_symbol(row, symbol, what)
    extra = {
        "mark_price": _price(row, "markPrice", what),
        "index_price": _price(row, "indexPrice", what),
        "next_funding_time": float(_millis(row, "nextFundingTime", what)),
    }
    if "interestRate" in row:
        extra["interest_rate"] = _number(row, "interestRate", what)
    return [
        indicator(
            symbol,
            "funding_rate",
            _number(row, "lastFundingRate", what),
            event_time=_millis(row, "time", what),
            receive_time=receive_time,
            extra=extra,
        )
    ]


def perp_mark_price(body: Any, symbol: str, receive_time: int) -> PricePoint:
    """The perpetual's mark price from `/fapi/v1/premiumIndex?symbol=` (the fair price Binance marks
    positions with; unlike a last trade it does not jump on one print)."""
    what = f"premiumIndex {symbol}"
    row = _object(body, what)
    _check_symbol(row, symbol, what)
    return PricePoint(_price(row, "markPrice", what), _millis(row, "time", what), receive_time)


# -- Binance USD-M 5-minute series (`/futures/data/*`) ------------------------------------------
def parse_open_interest_hist(body: Any, symbol: str, period: str, receive_time: int) -> list[dict]:
    """`openInterestHist`: value = `sumOpenInterest` (base units), extra `sum_open_interest_value` (USD)."""
    what = f"openInterestHist {symbol}"
    out = []
    for row in _rows(body, what):
        _check_symbol(row, symbol, what)
        out.append(
            indicator(
                symbol,
                "open_interest_hist",
                _number(row, "sumOpenInterest", what),
                period=period,
                extra={"sum_open_interest_value": _number(row, "sumOpenInterestValue", what)},
                event_time=_millis(row, "timestamp", what),
                receive_time=receive_time,
            )
        )
    return out


def _long_short_rows(body: Any, symbol: str, period: str, receive_time: int, kind: str, what: str) -> list[dict]:
    out = []
    for row in _rows(body, what):
        _check_symbol(row, symbol, what)
        out.append(
            indicator(
                symbol,
                kind,
                _number(row, "longShortRatio", what),
                period=period,
                extra={
                    "long_account": _number(row, "longAccount", what),
                    "short_account": _number(row, "shortAccount", what),
                },
                event_time=_millis(row, "timestamp", what),
                receive_time=receive_time,
            )
        )
    return out


def parse_long_short_account_ratio(body: Any, symbol: str, period: str, receive_time: int) -> list[dict]:
    """`globalLongShortAccountRatio`: value = `longShortRatio`; extra `long_account`/`short_account`
    are the shares (0..1) of all accounts net long/short."""
    return _long_short_rows(
        body, symbol, period, receive_time, "long_short_account_ratio", f"globalLongShortAccountRatio {symbol}"
    )


def parse_top_trader_position_ratio(body: Any, symbol: str, period: str, receive_time: int) -> list[dict]:
    """`topLongShortPositionRatio`: value = `longShortRatio`; extra `long_account` is the top traders'
    long share of *positions* (0..1, the old engine's crowding input), despite Binance's field name."""
    return _long_short_rows(
        body, symbol, period, receive_time, "top_trader_position_ratio", f"topLongShortPositionRatio {symbol}"
    )


def parse_taker_buy_sell_ratio(body: Any, symbol: str, period: str, receive_time: int) -> list[dict]:
    """`takerlongshortRatio` (rows carry no symbol): value = `buySellRatio`, extra `buy_vol`/`sell_vol`."""
    what = f"takerlongshortRatio {symbol}"
    out = []
    for row in _rows(body, what):
        _check_symbol(row, symbol, what)
        out.append(
            indicator(
                symbol,
                "taker_buy_sell_ratio",
                _number(row, "buySellRatio", what),
                period=period,
                extra={"buy_vol": _number(row, "buyVol", what), "sell_vol": _number(row, "sellVol", what)},
                event_time=_millis(row, "timestamp", what),
                receive_time=receive_time,
            )
        )
    return out


# -- other venues' prices and the cross-venue values --------------------------------------------
def spot_mid_price(body: Any, symbol: str, receive_time: int) -> PricePoint:
    """Binance spot `/api/v3/ticker/bookTicker?symbol=`: mid of the touch. The body has no time, so
    the receive time stands in."""
    what = f"spot bookTicker {symbol}"
    row = _object(body, what)
    _check_symbol(row, symbol, what)
    bid, ask = _price(row, "bidPrice", what), _price(row, "askPrice", what)
    if bid > ask:
        raise IndicatorParseError(f"{what}: crossed touch bid {bid} > ask {ask}")
    return PricePoint((bid + ask) / 2, receive_time, receive_time)


def coinbase_last_price(body: Any, product: str, receive_time: int) -> PricePoint:
    """Coinbase Exchange `/products/<product>/ticker`: last trade `price` at its ISO `time`."""
    what = f"coinbase ticker {product}"
    row = _object(body, what)
    return PricePoint(_price(row, "price", what), _iso_millis(row, "time", what), receive_time)


def _relative_gap(kind: str, symbol: str, of: PricePoint, against: PricePoint, extra_names: tuple[str, str]) -> dict:
    return indicator(
        symbol,
        kind,
        (of.price - against.price) / against.price,
        extra={extra_names[0]: of.price, extra_names[1]: against.price},
        event_time=max(of.event_time, against.event_time),
        receive_time=max(of.receive_time, against.receive_time),
    )


def coinbase_premium(symbol: str, coinbase: PricePoint, binance: PricePoint) -> list[dict]:
    """(Coinbase − Binance) / Binance as a fraction: > 0 when US buyers pay up (old engine: > 0.0005
    is bullish). Binance is the USDT perp, so USD/USDT basis is part of the number."""
    return [_relative_gap("coinbase_premium", symbol, coinbase, binance, ("coinbase_price", "binance_price"))]


def spot_perp_divergence(symbol: str, perp: PricePoint, spot: PricePoint) -> list[dict]:
    """(perp − spot) / spot as a fraction: > 0 when the perpetual trades rich to spot (leveraged longs
    lead). NOTE: the old system stored (spot − mark)/mark, the opposite sign; consumers port its gate
    ("block LONG if div < −thr") with the sign flipped."""
    return [_relative_gap("spot_perp_divergence", symbol, perp, spot, ("perp_price", "spot_price"))]


def parse_server_time(body: Any) -> int:
    """`/fapi/v1/time`: `{"serverTime": <Unix ms>}`."""
    return _millis(_object(body, "time"), "serverTime", "time")


# -- warm start history bodies -------------------------------------------------------------------
def parse_funding_history(body: Any, symbol: str) -> list[tuple[int, float]]:
    """`/fapi/v1/fundingRate` (settled history): (fundingTime, fundingRate) per row, sorted by time."""
    what = f"fundingRate {symbol}"
    out = []
    for row in _rows(body, what):
        _check_symbol(row, symbol, what)
        out.append((_millis(row, "fundingTime", what), _number(row, "fundingRate", what)))
    return sorted(out)


def parse_mark_price_klines(body: Any, symbol: str) -> list[tuple[int, float]]:
    """`/fapi/v1/markPriceKlines`: (open time, close) per row; a row is `[openTime, open, high, low,
    close, ...]` (a JSON array, not an object)."""
    what = f"markPriceKlines {symbol}"
    if not isinstance(body, list):
        raise IndicatorParseError(f"{what}: expected a JSON array, got {type(body).__name__}")
    out = []
    for i, row in enumerate(body):
        if not isinstance(row, list) or len(row) < 5:
            raise IndicatorParseError(f"{what}: row {i} is not a kline array of at least 5 fields")
        fields = {"openTime": row[0], "close": row[4]}
        out.append((_millis(fields, "openTime", f"{what} row {i}"), _price(fields, "close", f"{what} row {i}")))
    return out


def parse_klines_1m(body: Any, symbol: str) -> list[dict]:
    """`/fapi/v1/klines?interval=1m` rows -> md.indicators records of kind `kline_1m` (a minute bar the engine
    applies in place of the minute's trades: `stream_apps.core.minute_bars`): value the close, extra the
    OHLC, the taker-buy (buy_volume) and the rest of the volume (sell_volume), the quote volume and the
    trade count; event_time the open, receive_time the close time (open + 59,999 ms)."""
    if not isinstance(body, list):
        raise IndicatorParseError(f"klines body is a {type(body).__name__}, not a JSON array")
    out = []
    for row in body:
        try:
            open_ms, o, h, lo, c, volume = (
                int(row[0]),
                float(row[1]),
                float(row[2]),
                float(row[3]),
                float(row[4]),
                float(row[5]),
            )
            quote, trades, buy = float(row[7]), int(row[8]), float(row[9])
        except (TypeError, ValueError, IndexError) as exc:
            raise IndicatorParseError(f"bad kline row {row!r}: {exc}") from None
        out.append(
            {
                "exchange": "binance",
                "symbol": symbol,
                "kind": "kline_1m",
                "value": c,
                "period": "1m",
                "extra": {
                    "open": o,
                    "high": h,
                    "low": lo,
                    "close": c,
                    "buy_volume": buy,
                    "sell_volume": round(volume - buy, 8),
                    "quote_volume": quote,
                    "trades": float(trades),
                },
                "event_time": open_ms,
                "receive_time": open_ms + 59_999,
            }
        )
    return out
