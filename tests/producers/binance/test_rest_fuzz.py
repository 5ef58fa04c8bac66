"""REST bodies at their edges: the pollers' and the warm start's parsers (producers/binance/indicator_parse.py).

Why: the poller counts a malformed body and skips the tick, the warm start marks the symbol failed
and lets it warm up from the live stream; both only for `IndicatorParseError` (and the aggTrades
rows' `FrameError`). Anything else raised ends the poll task or the whole warm start. So each
parser, on any JSON value or on a documented body with odd fields, returns records with finite
numbers or raises a one-line `IndicatorParseError`; documented bodies parse to their fields.
"""

from __future__ import annotations

import math

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from producers.binance.indicator_parse import (
    IndicatorParseError,
    coinbase_last_price,
    parse_funding_history,
    parse_funding_rate,
    parse_long_short_account_ratio,
    parse_mark_price_klines,
    parse_open_interest,
    parse_open_interest_hist,
    parse_server_time,
    parse_taker_buy_sell_ratio,
    parse_top_trader_position_ratio,
    perp_mark_price,
    spot_mid_price,
)
from tests.support.fuzz import FUZZ, floats_in, json_values, mutated, numberish, outcome

S, R = "BTCUSDT", 1_700_000_000_000

OPEN_INTEREST = {"openInterest": "10659.509", "symbol": S, "time": 1589437530011}
PREMIUM = {
    "symbol": S,
    "markPrice": "11793.63104562",
    "indexPrice": "11781.80495970",
    "estimatedSettlePrice": "11781.16138815",
    "lastFundingRate": "0.00038246",
    "interestRate": "0.00010000",
    "nextFundingTime": 1597392000000,
    "time": 1597370495002,
}
OI_HIST = {
    "symbol": S,
    "sumOpenInterest": "20403.63700000",
    "sumOpenInterestValue": "150570784.07809979",
    "timestamp": 1583127900000,
}
LONG_SHORT = {
    "symbol": S,
    "longShortRatio": "0.1960",
    "longAccount": "0.6622",
    "shortAccount": "0.3378",
    "timestamp": 1583139600000,
}
TAKER = {"buySellRatio": "1.5586", "buyVol": "387.3300", "sellVol": "248.5030", "timestamp": 1585614900000}
BOOK_TICKER = {
    "symbol": S,
    "bidPrice": "4.00000000",
    "bidQty": "431.00000000",
    "askPrice": "4.00000200",
    "askQty": "9.00000000",
}
COINBASE = {"trade_id": 4729088, "price": "333.99", "size": "0.193", "time": "2015-11-14T20:46:03.511254Z"}
FUNDING = {"symbol": S, "fundingTime": 1698768000000, "fundingRate": "-0.00003020", "markPrice": "34651.4"}
KLINE = [1607444700000, "18879.99", "18900.00", "18878.98", "18896.13", "0", 1607444759999, "0", 60, "0", "0", "0"]

# name: (parse(body), one documented body, whether the body is an array of that row)
PARSERS = {
    "openInterest": (lambda b: parse_open_interest(b, S, R), OPEN_INTEREST, False),
    "premiumIndex": (lambda b: parse_funding_rate(b, S, R), PREMIUM, False),
    "mark price": (lambda b: [perp_mark_price(b, S, R)], PREMIUM, False),
    "openInterestHist": (lambda b: parse_open_interest_hist(b, S, "5m", R), OI_HIST, True),
    "globalLongShortAccountRatio": (lambda b: parse_long_short_account_ratio(b, S, "5m", R), LONG_SHORT, True),
    "topLongShortPositionRatio": (lambda b: parse_top_trader_position_ratio(b, S, "5m", R), LONG_SHORT, True),
    "takerlongshortRatio": (lambda b: parse_taker_buy_sell_ratio(b, S, "5m", R), TAKER, True),
    "spot bookTicker": (lambda b: [spot_mid_price(b, S, R)], BOOK_TICKER, False),
    "coinbase ticker": (lambda b: [coinbase_last_price(b, "BTC-USD", R)], COINBASE, False),
    "time": (lambda b: [parse_server_time(b)], {"serverTime": 1499827319559}, False),
    "fundingRate history": (lambda b: parse_funding_history(b, S), FUNDING, True),
}


def _check(name: str, body) -> None:
    parse = PARSERS[name][0] if name != "markPriceKlines" else (lambda b: parse_mark_price_klines(b, S))
    result, _ = outcome(parse, body, errors=IndicatorParseError)
    if result is not None:
        assert all(math.isfinite(x) for x in floats_in(result)), f"{name}: non-finite number from {body!r}"


@FUZZ
@given(name=st.sampled_from([*sorted(PARSERS), "markPriceKlines"]), body=json_values)
def test_any_json_body_parses_or_is_an_indicator_parse_error(name, body):
    _check(name, orjson.loads(orjson.dumps(body)))


def _odd(name: str) -> st.SearchStrategy[tuple[str, object]]:
    _, row, is_array = PARSERS[name]
    rows = mutated(row, sorted(row), numberish | json_values)
    return st.tuples(st.just(name), st.lists(rows, min_size=1, max_size=3) if is_array else rows)


@FUZZ
@given(case=st.sampled_from(sorted(PARSERS)).flatmap(_odd))
@example(case=("coinbase ticker", {**COINBASE, "time": "0001-01-01T00:00:00+14:00"}))
@example(case=("premiumIndex", {**PREMIUM, "markPrice": "nan"}))
@example(case=("fundingRate history", [{**FUNDING, "fundingRate": "x"}]))  # escaped the warm start as ValueError
@example(case=("fundingRate history", [{**FUNDING, "fundingTime": None}]))  # ... as TypeError
def test_a_documented_body_with_odd_fields_parses_or_is_an_indicator_parse_error(case):
    name, body = case
    _check(name, body)


@FUZZ
@given(rows=st.lists(st.lists(numberish | json_values, max_size=8) | st.just(KLINE), max_size=4))
@example(rows=[[1607444700000, "1", "1", "1"]])  # a short row: IndexError escaped the warm start
@example(rows=[[None, "1", "1", "1", "1"]])  # a null open time: TypeError escaped the warm start
@example(rows=[[1607444700000, "1", "1", "1", "nan"]])  # a NaN close became a mark price
def test_mark_price_klines_parse_or_are_an_indicator_parse_error(rows):
    _check("markPriceKlines", rows)


@FUZZ
@given(
    opens=st.lists(st.integers(0, 2**45), max_size=5),
    closes=st.lists(st.decimals(min_value="0.0001", max_value="1000000", places=4), min_size=5, max_size=5),
)
def test_well_formed_klines_keep_open_time_and_close(opens, closes):
    body = [[t, "1", "1", "1", str(c), "0", t + 59_999] for t, c in zip(opens, closes, strict=False)]
    assert parse_mark_price_klines(orjson.loads(orjson.dumps(body)), S) == [
        (t, float(c)) for t, c in zip(opens, closes, strict=False)
    ]


@FUZZ
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 2**45), st.decimals(min_value="-0.01", max_value="0.01", places=8)), max_size=6
    )
)
def test_well_formed_funding_history_is_sorted_by_time(rows):
    body = [{"symbol": S, "fundingTime": t, "fundingRate": str(r), "markPrice": "1"} for t, r in rows]
    assert parse_funding_history(body, S) == sorted((t, float(r)) for t, r in rows)
