"""OKX v5 public frames at their edges (producers/okx/parse.py and the OkxStream envelope).

Why: as for Binance and Bybit, the producer dead-letters a frame only when its parser raises
`FrameError`; any other exception is a parser bug and a non-finite number that parses is published as
data. Each parser, on anything JSON can hold or on a documented frame (tests/data/okx_ws) with odd
fields, returns finite numbers or raises a one-line `FrameError`; a well-formed trade keeps its fields
with its size converted exactly; every raw message the stream reads is delivered, consumed as a
control message, or dead-lettered once.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from producers.base.frames import FrameError
from producers.okx.parse import (
    Instrument,
    parse_books,
    parse_funding_rate,
    parse_history_trades,
    parse_index_tickers,
    parse_instruments,
    parse_mark_price,
    parse_rest_books,
    parse_spot_tickers,
    parse_trades,
)
from producers.okx.ws_stream import OkxStream, OkxStreamConfig
from tests.support.fuzz import FUZZ, floats_in, json_values, mutated, numberish, one_line, outcome

DATA = Path(__file__).resolve().parents[2] / "data" / "okx_ws"
RECEIVED = 1_700_000_000_123
SWAP = Instrument("BTC-USDT", "BTCUSDT", Decimal("0.01"))  # the documented frames' instId, a swap's ctVal


def doc(name: str) -> dict:
    return json.loads((DATA / name).read_text())


TRADE, BOOK, MARK, INDEX, FUNDING, REST_BOOK, HISTORY, SPOT = (
    doc(n)
    for n in (
        "trades.json",
        "books_update.json",
        "mark_price.json",
        "index_tickers.json",
        "funding_rate.json",
        "rest_books.json",
        "rest_history_trades.json",
        "spot_tickers.json",
    )
)

PARSERS = {  # kind: (parse, documented frame, the row the odd values go into)
    "trades": (lambda m: parse_trades(m, SWAP, RECEIVED), TRADE, TRADE["data"][0]),
    "books": (lambda m: parse_books(m, SWAP, RECEIVED), BOOK, BOOK["data"][0]),
    "mark-price": (parse_mark_price, MARK, MARK["data"][0]),
    "index-tickers": (parse_index_tickers, INDEX, INDEX["data"][0]),
    "tickers": (parse_spot_tickers, SPOT, SPOT["data"][0]),
    "funding-rate": (parse_funding_rate, FUNDING, FUNDING["data"][0]),
    "rest-books": (lambda m: parse_rest_books(m, SWAP, RECEIVED), REST_BOOK, REST_BOOK["data"][0]),
    "history-trades": (lambda m: parse_history_trades(m, SWAP, RECEIVED), HISTORY, HISTORY["data"][0]),
    "instruments": (
        parse_instruments,
        {
            "code": "0",
            "msg": "",
            "data": [
                {
                    "instType": "SWAP",
                    "instId": "BTC-USDT-SWAP",
                    "ctType": "linear",
                    "ctVal": "0.01",
                    "ctMult": "1",
                    "ctValCcy": "BTC",
                }
            ],
        },
        {
            "instType": "SWAP",
            "instId": "BTC-USDT-SWAP",
            "ctType": "linear",
            "ctVal": "0.01",
            "ctMult": "1",
            "ctValCcy": "BTC",
        },
    ),
}


def _check(kind: str, msg) -> None:
    result, _ = outcome(PARSERS[kind][0], msg, errors=FrameError)
    if result is not None:
        assert all(math.isfinite(x) for x in floats_in(result)), f"{kind}: non-finite number from {msg!r}"


def _odd(kind: str) -> st.SearchStrategy[tuple[str, dict]]:
    _, msg, row = PARSERS[kind]
    envelope = mutated(msg, sorted(msg), numberish | json_values)
    inner = st.lists(mutated(row, sorted(row), numberish | json_values), min_size=1, max_size=3)
    return st.tuples(
        st.just(kind),
        st.builds(lambda m, rows, keep: m if keep else {**m, "data": rows}, envelope, inner, st.booleans()),
    )


@FUZZ
@given(kind=st.sampled_from(sorted(PARSERS)), msg=json_values)
def test_any_json_value_parses_or_is_a_frame_error(kind, msg):
    _check(kind, msg)


@FUZZ
@given(case=st.sampled_from(sorted(PARSERS)).flatmap(_odd))
@example(case=("books", {**BOOK, "data": [{**BOOK["data"][0], "bids": [["nan", "1", "0", "1"]]}]}))
@example(case=("books", {**BOOK, "data": [{**BOOK["data"][0], "asks": [["8476.98", "1e999999999", "0", "1"]]}]}))
@example(case=("trades", {**TRADE, "data": [{**TRADE["data"][0], "tradeId": "١٢٣"}]}))
@example(case=("funding-rate", {**FUNDING, "data": [{**FUNDING["data"][0], "fundingTime": "soon"}]}))
def test_a_documented_frame_with_odd_fields_parses_or_is_a_frame_error(case):
    kind, msg = case
    _check(kind, msg)


prices = st.decimals(min_value="0.1", max_value="1000000", places=1, allow_nan=False)
sizes = st.decimals(min_value="0.01", max_value="100000", places=2, allow_nan=False)


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            prices,
            sizes,
            st.sampled_from(["buy", "sell"]),
            st.integers(1, 2**41),
            st.integers(1, 2**40),
            st.integers(1, 50),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_well_formed_trades_keep_their_fields_in_base_coin(rows):
    msg = {
        "arg": {"channel": "trades", "instId": "BTC-USDT"},
        "data": [
            {
                "instId": "BTC-USDT",
                "tradeId": str(i + c),
                "px": str(p),
                "sz": str(q),
                "side": side,
                "ts": str(t),
                "count": str(c),
                "source": "0",
                "seqId": 1,
            }
            for p, q, side, t, i, c in rows
        ],
    }
    prints = parse_trades(orjson.loads(orjson.dumps(msg)), SWAP, RECEIVED)
    assert [(x.price, x.qty, x.taker_side, x.trade_time, x.first_trade_id, x.trade_id) for x in prints] == [
        (float(p), float(q * Decimal("0.01")), side.upper(), t, i + 1, i + c) for p, q, side, t, i, c in rows
    ]


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=48),
        st.builds(orjson.dumps, json_values),
        st.builds(
            lambda v, ev: orjson.dumps({"event": ev, **v} if isinstance(v, dict) else {"event": ev}),
            json_values,
            st.sampled_from(["subscribe", "unsubscribe", "error", "login", 3]),
        ),
        st.sampled_from([b"pong", b"ping", orjson.dumps(TRADE), orjson.dumps(BOOK), orjson.dumps(FUNDING)]),
    )
)
@example(raw=b'{"event":"error","code":"60012","msg":"line one\\nline two"}')
def test_every_raw_message_has_one_outcome(raw):
    """OkxStream._dispatch: a push is delivered (and parsed), a control message consumed, anything else
    dead-lettered with a one-line reason; nothing raises."""
    delivered, dead = [], []
    by_channel = {"trades": "trades", "books": "books", "funding-rate": "funding-rate"}

    def on_frame(topic, msg, received, raw_):
        kind = by_channel.get(topic.split(":", 1)[0])
        if kind is not None:
            PARSERS[kind][0](msg)
        delivered.append(topic)

    stream = OkxStream(
        OkxStreamConfig("ws://127.0.0.1:1", ["trades:BTC-USDT"]),
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
