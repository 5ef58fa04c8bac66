"""Binance websocket frames and REST depth/aggTrades rows at their edges (producers/binance/parse.py).

Why: the producer dead-letters a frame only when its parser raises `FrameError` (or the record fails
the schema); any other exception is a bug in the parser, and a record that parses but carries a
NaN price or an `inf` quantity is worse: it is published and poisons every bar and feature after it.
So each parser, on anything JSON can hold, returns a record with finite numbers or raises a
one-line `FrameError`; well-formed frames parse to exactly their fields; and on the wire, every raw
frame the combined stream reads is either handed on or dead-lettered once, never raised.
"""

from __future__ import annotations

import math

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from producers.base.frames import FrameError
from producers.base.stream import CombinedStream, StreamConfig
from producers.binance.parse import (
    parse_agg_trade,
    parse_depth_diff,
    parse_depth_snapshot,
    parse_force_order,
    parse_mark_price,
    parse_rest_agg_trade,
    stream_kind,
)
from tests.support.fuzz import FUZZ, floats_in, json_values, mutated, numberish, one_line, outcome

RECEIVED = 1_700_000_000_123

AGG_TRADE = {
    "e": "aggTrade",
    "E": 1700000000000,
    "s": "BTCUSDT",
    "a": 5,
    "p": "37000.10",
    "q": "0.015",
    "f": 100,
    "l": 105,
    "T": 1699999999999,
    "m": True,
}
DEPTH = {
    "e": "depthUpdate",
    "E": 1700000000000,
    "T": 1699999999999,
    "s": "BTCUSDT",
    "U": 10,
    "u": 12,
    "pu": 9,
    "b": [["37000.1", "1.5"]],
    "a": [["37000.2", "0.25"], ["37001", "0"]],
}
MARK = {
    "e": "markPriceUpdate",
    "E": 1700000000000,
    "s": "BTCUSDT",
    "p": "37000.5",
    "i": "36999.9",
    "r": "0.0001",
    "T": 1700006400000,
}
FORCE = {
    "e": "forceOrder",
    "E": 1700000000000,
    "o": {"s": "BTCUSDT", "S": "SELL", "p": "36000", "ap": "36010.5", "q": "0.5", "z": "0.5", "T": 1699999999999},
}
SNAPSHOT = {"lastUpdateId": 600859605926, "E": 1626992741264, "bids": [["7.6110", "6"]], "asks": [["7.6120", "3"]]}
REST_ROW = {"a": 5, "p": "37000.10", "q": "0.015", "f": 100, "l": 105, "T": 1699999999999, "m": False}

WS_PARSERS = {
    "aggTrade": (lambda d: parse_agg_trade(d, RECEIVED), AGG_TRADE),
    "depthUpdate": (lambda d: parse_depth_diff(d, RECEIVED), DEPTH),
    "markPriceUpdate": (lambda d: parse_mark_price(d, RECEIVED), MARK),
    "forceOrder": (lambda d: parse_force_order(d, RECEIVED), FORCE),
    "depth snapshot": (lambda d: parse_depth_snapshot(d, "BTCUSDT", RECEIVED), SNAPSHOT),
    "REST aggTrade": (lambda d: parse_rest_agg_trade(d, "BTCUSDT", RECEIVED), REST_ROW),
}


def _check(kind: str, frame) -> None:
    parse, _ = WS_PARSERS[kind]
    record, _err = outcome(parse, frame, errors=FrameError)
    if record is not None:
        bad = [x for x in floats_in(record) if not math.isfinite(x)]
        assert not bad, f"{kind}: non-finite number accepted from {frame!r}"
        if kind in ("aggTrade", "REST aggTrade"):
            assert isinstance(frame["m"], bool), f"{kind}: taker side taken from m={frame['m']!r}"


@FUZZ
@given(kind=st.sampled_from(sorted(WS_PARSERS)), frame=json_values)
def test_any_json_value_parses_or_is_a_frame_error(kind, frame):
    """Whatever JSON the socket delivers (a list, a string, a number where an object was expected)."""
    _check(kind, frame)


def _mutations(kind: str) -> st.SearchStrategy[tuple[str, dict]]:
    _, base = WS_PARSERS[kind]
    frames = mutated(base, sorted(base), numberish | json_values)
    if kind == "forceOrder":
        frames = st.builds(lambda f, o: {**f, "o": o}, frames, mutated(FORCE["o"], sorted(FORCE["o"]), numberish))
    return st.tuples(st.just(kind), frames)


odd_frames = st.sampled_from(sorted(WS_PARSERS)).flatmap(_mutations)


@FUZZ
@given(case=odd_frames)
# found by this property: non-finite numbers sent as text were published as NaN/inf prices
@example(case=("aggTrade", {**AGG_TRADE, "p": "nan"}))
@example(case=("aggTrade", {**AGG_TRADE, "q": "inf"}))
@example(case=("markPriceUpdate", {**MARK, "r": "NaN"}))
@example(case=("depthUpdate", {**DEPTH, "b": [["nan", "1"]]}))
@example(case=("depth snapshot", {**SNAPSHOT, "asks": [["1", "Infinity"]]}))
@example(case=("REST aggTrade", {**REST_ROW, "p": "-inf"}))
@example(case=("forceOrder", {**FORCE, "o": {**FORCE["o"], "ap": "1e400"}}))
# found by this property: any truthy `m` (the text "false" included) became a SELL
@example(case=("aggTrade", {**AGG_TRADE, "m": "false"}))
@example(case=("REST aggTrade", {**REST_ROW, "m": 0}))
def test_a_real_frame_with_odd_fields_parses_or_is_a_frame_error(case):
    """One good frame with fields replaced by odd values ("nan", 1e400 as text, lists, nulls) or dropped:
    a record with finite numbers or a one-line FrameError."""
    kind, frame = case
    _check(kind, frame)


@FUZZ
@given(
    kind=st.sampled_from(["aggTrade", "markPriceUpdate", "REST aggTrade"]),
    text=st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e999"]),
)
def test_non_finite_prices_are_refused(kind, text):
    """The price field as non-finite text is a FrameError, not a NaN/inf record (checked apart from
    the random search so that it can never be skipped)."""
    parse, base = WS_PARSERS[kind]
    record, err = outcome(parse, {**base, "p": text}, errors=FrameError)
    assert record is None and "p" in str(err), (kind, text, record)


prices = st.decimals(min_value="0.00000001", max_value="1000000", places=8, allow_nan=False)
ids = st.integers(0, 2**62)


@FUZZ
@given(
    agg_id=ids,
    first=ids,
    span=st.integers(0, 1000),
    price=prices,
    qty=prices,
    maker=st.booleans(),
    event=st.integers(1, 2**41),
    symbol=st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True),
)
def test_a_well_formed_agg_trade_parses_to_its_fields(agg_id, first, span, price, qty, maker, event, symbol):
    frame = {
        "e": "aggTrade",
        "E": event,
        "s": symbol,
        "a": agg_id,
        "p": str(price),
        "q": str(qty),
        "f": first,
        "l": first + span,
        "T": event - 1,
        "m": maker,
    }
    record = parse_agg_trade(orjson.loads(orjson.dumps(frame)), RECEIVED)
    assert record == {
        "exchange": "binance",
        "symbol": symbol,
        "agg_id": agg_id,
        "price": float(price),
        "qty": float(qty),
        "first_trade_id": first,
        "last_trade_id": first + span,
        "event_time": event,
        "trade_time": event - 1,
        "receive_time": RECEIVED,
        "taker_side": "SELL" if maker else "BUY",
    }


@FUZZ
@given(
    bids=st.lists(st.tuples(prices, prices), max_size=5),
    asks=st.lists(st.tuples(prices, prices), max_size=5),
    u=st.integers(1, 2**60),
)
def test_a_well_formed_depth_update_keeps_its_levels(bids, asks, u):
    frame = {
        **DEPTH,
        "U": u,
        "u": u + 2,
        "pu": u - 1,
        "b": [[str(p), str(q)] for p, q in bids],
        "a": [[str(p), str(q)] for p, q in asks],
    }
    diff = parse_depth_diff(frame, RECEIVED)
    assert (diff.first_update_id, diff.final_update_id, diff.prev_final_update_id) == (u, u + 2, u - 1)
    assert diff.bids == tuple((float(p), float(q)) for p, q in bids)
    assert diff.asks == tuple((float(p), float(q)) for p, q in asks)


# --- on the wire: the combined-stream envelope ------------------------------------------------------
def _dispatching(data: dict, stream: str) -> None:
    """What the producer's on_frame does before publishing: pick the parser by stream kind."""
    kind = stream_kind(stream)
    parse = {
        "aggTrade": parse_agg_trade,
        "depth": parse_depth_diff,
        "markPrice": parse_mark_price,
        "forceOrder": parse_force_order,
    }.get(kind)
    if parse is None:
        raise FrameError(f"unexpected stream {stream!r}")
    parse(data, RECEIVED)


def _raw_frames() -> st.SearchStrategy[bytes]:
    good = [
        orjson.dumps({"stream": "btcusdt@aggTrade", "data": AGG_TRADE}),
        orjson.dumps({"stream": "btcusdt@depth@100ms", "data": DEPTH}),
        orjson.dumps({"stream": "!forceOrder@arr", "data": FORCE}),
        orjson.dumps({"stream": "btcusdt@markPrice@1s", "data": MARK}),
    ]

    def cut(raw: bytes, at: int) -> bytes:
        return raw[: at % (len(raw) + 1)]

    def flip(raw: bytes, at: int, byte: int) -> bytes:
        i = at % len(raw)
        return raw[:i] + bytes([byte]) + raw[i + 1 :]

    return st.one_of(
        st.binary(max_size=64),
        st.builds(lambda v: orjson.dumps(v), json_values),
        st.builds(
            lambda v, s: orjson.dumps({"stream": s, "data": v}),
            json_values,
            st.sampled_from(["btcusdt@aggTrade", "btcusdt@depth@100ms", "!forceOrder@arr", "x", "", "@"]),
        ),
        st.builds(cut, st.sampled_from(good), st.integers(0, 10_000)),
        st.builds(flip, st.sampled_from(good), st.integers(0, 10_000), st.integers(0, 255)),
        st.sampled_from(good),
    )


@FUZZ
@given(raw=_raw_frames())
@example(raw=b'{"stream": 5, "data": {}}')  # a non-text stream name
@example(raw=b"\xff\xfe")  # not UTF-8
@example(raw=b'{"result": null, "id": 1}')  # a SUBSCRIBE acknowledgement: neither delivered nor dead
def test_every_raw_frame_is_delivered_or_dead_lettered_once(raw):
    """CombinedStream._dispatch: one outcome per frame, and the dead letter says why on one line."""
    delivered, dead = [], []

    def on_frame(stream, data, received, raw_):
        _dispatching(data, stream)
        delivered.append(raw_)

    stream = CombinedStream(
        StreamConfig("ws://127.0.0.1:1", ["btcusdt@aggTrade"]),
        on_frame,
        lambda raw_, why: dead.append(why),
        lambda *a: None,
        lambda *a: None,
    )
    stream._dispatch(raw, RECEIVED)
    assert len(delivered) + len(dead) <= 1
    for why in dead:
        one_line(ValueError(why))
    try:
        msg = orjson.loads(raw)
    except orjson.JSONDecodeError:
        assert dead, "undecodable bytes were not dead-lettered"
        return
    if isinstance(msg, dict) and "result" in msg and "id" in msg and "stream" not in msg:
        assert not delivered and not dead
    else:
        assert len(delivered) + len(dead) == 1
