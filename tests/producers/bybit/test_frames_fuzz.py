"""Bybit v5 public frames at their edges (producers/bybit/parse.py and the BybitStream envelope).

Why: as for Binance, the producer dead-letters a frame only when its parser raises `FrameError`;
any other exception is a parser bug and a non-finite number that parses is published as data. Each
parser, on anything JSON can hold or on a documented frame with odd fields, returns finite numbers
or raises a one-line `FrameError`; a well-formed trade keeps its fields; every raw message the
stream reads is delivered, consumed as a control message, or dead-lettered once.
"""

from __future__ import annotations

import math

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from producers.base.frames import FrameError
from producers.bybit.parse import (
    parse_all_liquidation,
    parse_orderbook,
    parse_public_trades,
    split_topic,
    ticker_fields,
)
from producers.bybit.ws_stream import BybitStream, BybitStreamConfig
from tests.support.fuzz import FUZZ, floats_in, json_values, mutated, numberish, one_line, outcome

RECEIVED = 1_700_000_000_123

TRADE_ROW = {
    "T": 1672304486865,
    "s": "BTCUSDT",
    "S": "Buy",
    "v": "0.001",
    "p": "16578.50",
    "L": "PlusTick",
    "i": "20f43950-d8dd-5b31-9112-a178eb6023af",
    "BT": False,
    "seq": 1783284617,
}
TRADE = {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1672304486868, "data": [TRADE_ROW]}
BOOK_DATA = {
    "s": "BTCUSDT",
    "b": [["16493.50", "0.006"]],
    "a": [["16611.00", "0.029"]],
    "u": 18521288,
    "seq": 7961638724,
}
BOOK = {"topic": "orderbook.50.BTCUSDT", "type": "delta", "ts": 1672304484998, "data": BOOK_DATA, "cts": 1672304484990}
LIQ_ROW = {"T": 1739502302929, "s": "ROSEUSDT", "S": "Sell", "v": "20000", "p": "0.04499"}
LIQUIDATION = {"topic": "allLiquidation.ROSEUSDT", "type": "snapshot", "ts": 1739502303204, "data": [LIQ_ROW]}
TICKER_DATA = {
    "symbol": "BTCUSDT",
    "markPrice": "17217.33",
    "indexPrice": "17227.36",
    "openInterest": "68744.761",
    "openInterestValue": "1183601235.91",
    "nextFundingTime": "1673280000000",
    "fundingRate": "-0.000212",
}
TICKER = {"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 1673272861686, "data": TICKER_DATA}

PARSERS = {
    "publicTrade": (lambda m: parse_public_trades(m, RECEIVED), TRADE, TRADE_ROW),
    "orderbook": (lambda m: parse_orderbook(m, RECEIVED), BOOK, BOOK_DATA),
    "allLiquidation": (lambda m: parse_all_liquidation(m, RECEIVED), LIQUIDATION, LIQ_ROW),
    "tickers": (ticker_fields, TICKER, TICKER_DATA),
}


def _check(kind: str, msg) -> None:
    parse = PARSERS[kind][0]
    result, _ = outcome(parse, msg, errors=FrameError)
    if result is not None:
        assert all(math.isfinite(x) for x in floats_in(result)), f"{kind}: non-finite number from {msg!r}"


def _odd(kind: str) -> st.SearchStrategy[tuple[str, dict]]:
    _, msg, data = PARSERS[kind]
    envelope = mutated(msg, ["topic", "type", "ts", "data", "cts"], numberish | json_values)
    inner = mutated(data, sorted(data), numberish | json_values)
    if isinstance(msg["data"], list):
        inner = st.lists(inner, min_size=1, max_size=3)
    return st.tuples(
        st.just(kind), st.builds(lambda m, d, keep: m if keep else {**m, "data": d}, envelope, inner, st.booleans())
    )


@FUZZ
@given(kind=st.sampled_from(sorted(PARSERS)), msg=json_values)
def test_any_json_value_parses_or_is_a_frame_error(kind, msg):
    _check(kind, msg)


@FUZZ
@given(case=st.sampled_from(sorted(PARSERS)).flatmap(_odd))
@example(case=("orderbook", {**BOOK, "data": {**BOOK_DATA, "b": [["nan", "1"]]}}))
@example(case=("tickers", {**TICKER, "data": {**TICKER_DATA, "nextFundingTime": "soon"}}))
@example(case=("publicTrade", {**TRADE, "data": [{**TRADE_ROW, "T": [1]}]}))
def test_a_documented_frame_with_odd_fields_parses_or_is_a_frame_error(case):
    kind, msg = case
    _check(kind, msg)


@FUZZ
@given(topic=st.text(max_size=30))
def test_a_topic_splits_or_is_a_frame_error(topic):
    parts, _ = outcome(split_topic, topic, errors=FrameError)
    if parts is not None:
        assert all(parts) and topic.startswith(parts[0] + ".") and topic.endswith("." + parts[1])


prices = st.decimals(min_value="0.00000001", max_value="1000000", places=8, allow_nan=False)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(prices, prices, st.sampled_from(["Buy", "Sell"]), st.integers(1, 2**41), st.uuids().map(str)),
        min_size=1,
        max_size=5,
    ),
    ts=st.integers(1, 2**41),
)
def test_well_formed_trades_keep_their_fields(rows, ts):
    msg = {
        "topic": "publicTrade.ETHUSDT",
        "type": "snapshot",
        "ts": ts,
        "data": [
            {"T": t, "s": "ETHUSDT", "S": side, "v": str(q), "p": str(p), "i": i, "BT": False}
            for p, q, side, t, i in rows
        ],
    }
    prints = parse_public_trades(orjson.loads(orjson.dumps(msg)), RECEIVED)
    assert [(x.price, x.qty, x.taker_side, x.trade_time, x.trade_id, x.event_time) for x in prints] == [
        (float(p), float(q), side.upper(), t, i, ts) for p, q, side, t, i in rows
    ]


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=48),
        st.builds(orjson.dumps, json_values),
        st.builds(
            lambda v, op: orjson.dumps({"op": op, **v} if isinstance(v, dict) else {"op": op}),
            json_values,
            st.sampled_from(["ping", "pong", "subscribe", "unsubscribe", "auth", 3]),
        ),
        st.sampled_from([orjson.dumps(TRADE), orjson.dumps(BOOK), orjson.dumps(TICKER)]),
    )
)
@example(raw=b'{"op":"subscribe","success":false,"ret_msg":"line one\\nline two"}')
def test_every_raw_message_has_one_outcome(raw):
    """BybitStream._dispatch: a market message is delivered (and parsed), a control message consumed,
    anything else dead-lettered with a one-line reason; nothing raises."""
    delivered, dead = [], []

    def on_frame(topic, msg, received, raw_):
        kind, _ = split_topic(topic)
        if kind in PARSERS:
            PARSERS[kind][0](msg)
        delivered.append(topic)

    stream = BybitStream(
        BybitStreamConfig("ws://127.0.0.1:1", ["publicTrade.BTCUSDT"]),
        on_frame,
        lambda raw_, why: dead.append(why),
        lambda *a: None,
        lambda *a: None,
    )
    pongs = stream.pongs
    stream._dispatch(raw, RECEIVED)
    assert len(delivered) + len(dead) + (stream.pongs - pongs) <= 1
    for why in dead:
        one_line(ValueError(why))
