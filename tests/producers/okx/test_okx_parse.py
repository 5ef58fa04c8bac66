"""OKX documentation examples (tests/data/okx_ws/, see its README) parsed into tapeflow's records, every field.

Expected values are read off the documented frames by hand: the numbers below are OKX's, not outputs
of the parser. Also: contracts → base coin by ctVal, exactly; the instruments answer keeps only linear
USDT swaps; the symbol mapping BTCUSDT ↔ BTC-USDT-SWAP; malformed frames are FrameErrors.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from producers.base.frames import FrameError
from producers.okx.mark_state import OkxMarkState
from producers.okx.parse import (
    Instrument,
    channel_of,
    okx_depth_record,
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
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from schemas.symbols import base_quote, coin_multiplier, okx_index_id, okx_swap_inst_id, symbol_from_okx

DATA = Path(__file__).resolve().parents[2] / "data" / "okx_ws"
RECEIVED = 1_700_000_000_123
SPOT = Instrument("BTC-USDT", "BTCUSDT", Decimal("1"))  # the documented examples are spot: sizes in BTC
SWAP = Instrument("BTC-USDT-SWAP", "BTCUSDT", Decimal("0.01"))  # OKX's BTC-USDT-SWAP: 0.01 BTC per contract


def doc(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def on_swap(msg: dict) -> dict:
    """The same push as the producer receives it for the swap (instId is the only difference)."""
    text = json.dumps(msg).replace('"BTC-USDT"', '"BTC-USDT-SWAP"')
    return json.loads(text)


def test_symbol_mapping_both_ways():
    assert okx_swap_inst_id("BTCUSDT") == "BTC-USDT-SWAP"
    assert okx_index_id("ethusdt") == "ETH-USDT"
    assert symbol_from_okx("BTC-USDT-SWAP") == symbol_from_okx("BTC-USDT") == "BTCUSDT"
    assert base_quote("1000PEPEUSDT") == ("1000PEPE", "USDT") and base_quote("BTCUSDC") == ("BTC", "USDC")
    for bad in ("BTC", "USDT", "BTCEUR"):
        with pytest.raises(ValueError):
            base_quote(bad)
    for bad in ("BTC-USD-240628", "BTCUSDT", "BTC-EUR-SWAP"):
        with pytest.raises(ValueError):
            symbol_from_okx(bad)
    # quoted per 1,000 coins on Binance/Bybit, per coin on OKX
    assert coin_multiplier("1000PEPEUSDT") == ("PEPE", "USDT", 1000) and coin_multiplier("1INCHUSDT")[2] == 1
    assert (okx_swap_inst_id("1000PEPEUSDT"), okx_index_id("1000PEPEUSDT")) == ("PEPE-USDT-SWAP", "PEPE-USDT")


def test_a_per_thousand_symbol_is_published_in_its_own_units():
    pepe = Instrument("PEPE-USDT-SWAP", "1000PEPEUSDT", Decimal("10000000"), multiplier=1000)  # 10 M PEPE a contract
    trade = json.loads(json.dumps(doc("trades.json")).replace('"BTC-USDT"', '"PEPE-USDT-SWAP"'))
    trade["data"][0].update(px="0.0000123", sz="2")
    (p,) = parse_trades(trade, pepe, RECEIVED)
    assert (p.symbol, p.price, p.qty) == ("1000PEPEUSDT", 0.0123, 20000.0)  # 1000 PEPE cost 0.0123; 20 M PEPE
    mark = json.loads(json.dumps(doc("mark_price.json")))
    mark["data"][0]["markPx"] = "0.0000123"
    assert parse_mark_price(mark, 1000)[0][1] == 0.0123


def test_documented_trade_every_field():
    msg = doc("trades.json")
    assert channel_of(msg) == ("trades", "BTC-USDT")
    (p,) = parse_trades(msg, SPOT, RECEIVED)
    # count 3, tradeId 130639474: the row aggregates OKX trades 130639472, 130639473, 130639474
    assert p.record(agg_id=7) == {
        "exchange": "okx",
        "symbol": "BTCUSDT",
        "agg_id": 7,
        "price": 42219.9,
        "qty": 0.12060306,
        "first_trade_id": 130639472,
        "last_trade_id": 130639474,
        "event_time": 1630048897897,
        "trade_time": 1630048897897,
        "receive_time": RECEIVED,
        "taker_side": "BUY",
    }


def test_swap_sizes_become_base_coin_exactly():
    trade = on_swap(doc("trades.json"))
    trade["data"][0]["sz"] = "3"  # three contracts of 0.01 BTC
    (p,) = parse_trades(trade, SWAP, RECEIVED)
    assert p.qty == 0.03  # exactly the float of 0.03, not 3 * 0.01 = 0.030000000000000002 in binary
    book = parse_books(on_swap(doc("books_snapshot.json")), SWAP, RECEIVED)
    assert book.asks[0] == (8476.98, 4.15) and book.bids[-1] == (8446.0, 0.95)  # 415 and 95 contracts
    assert parse_trades({**trade, "data": [{**trade["data"][0], "sz": "0.12060306"}]}, SWAP, RECEIVED)[0].qty == float(
        Decimal("0.0012060306")
    )


def test_documented_book_snapshot_and_update_every_field():
    snap = parse_books(doc("books_snapshot.json"), SPOT, RECEIVED)
    record = okx_depth_record(snap)
    assert record == {
        "exchange": "okx",
        "symbol": "BTCUSDT",
        "first_update_id": 123456,
        "final_update_id": 123456,
        "prev_final_update_id": None,
        "event_time": 1597026383085,
        "transaction_time": 1597026383085,
        "receive_time": RECEIVED,
        "bids": [
            {"price": p, "qty": q}
            for p, q in [
                (8476.97, 256.0),
                (8475.55, 101.0),
                (8475.54, 100.0),
                (8475.3, 1.0),
                (8447.32, 6.0),
                (8447.02, 246.0),
                (8446.83, 24.0),
                (8446.0, 95.0),
            ]
        ],
        "asks": [
            {"price": p, "qty": q}
            for p, q in [
                (8476.98, 415.0),
                (8477.0, 7.0),
                (8477.34, 85.0),
                (8477.56, 1.0),
                (8505.84, 8.0),
                (8506.37, 85.0),
                (8506.49, 2.0),
                (8506.96, 100.0),
            ]
        ],
    }
    update = okx_depth_record(parse_books(doc("books_update.json"), SPOT, RECEIVED))
    assert update == {**record, "first_update_id": 123457, "final_update_id": 123457, "prev_final_update_id": 123456}
    serde = AvroSerde(FileSchemaRegistry(), strict=True)  # what the producer publishes fits md.depth's schema
    assert serde.decode(serde.encode("md.depth", update)) == update


def test_documented_rest_book():
    snap = parse_rest_books(doc("rest_books.json"), SPOT, RECEIVED)
    assert (snap.symbol, snap.last_update_id, snap.event_time, snap.receive_time) == (
        "BTCUSDT",
        3235851742,
        1629966436396,
        RECEIVED,
    )
    assert snap.bids == ((41006.3, 0.30178218),) and snap.asks == ((41006.8, 0.60038921),)


def test_documented_history_trades_oldest_first_one_fill_each():
    fills = parse_history_trades(doc("rest_history_trades.json"), SPOT, RECEIVED)
    assert [f.record(agg_id=i) for i, f in enumerate(fills)] == [
        {
            "exchange": "okx",
            "symbol": "BTCUSDT",
            "agg_id": 0,
            "price": 29964.1,
            "qty": 0.00001,
            "first_trade_id": 242720719,
            "last_trade_id": 242720719,
            "event_time": 1654161641568,
            "trade_time": 1654161641568,
            "receive_time": RECEIVED,
            "taker_side": "SELL",
        },
        {
            "exchange": "okx",
            "symbol": "BTCUSDT",
            "agg_id": 1,
            "price": 29963.2,
            "qty": 0.00001,
            "first_trade_id": 242720720,
            "last_trade_id": 242720720,
            "event_time": 1654161646974,
            "trade_time": 1654161646974,
            "receive_time": RECEIVED,
            "taker_side": "SELL",
        },
    ]


def test_documented_mark_index_and_funding():
    assert parse_mark_price(doc("mark_price.json")) == [("LTC-USD-190628", 0.1, 1597026383085)]
    assert parse_index_tickers(doc("index_tickers.json")) == [("BTC-USDT", 0.1, 1597026383085)]
    (point,) = parse_funding_rate(doc("funding_rate.json"))
    assert (point.inst_id, point.rate, point.funding_time, point.next_funding_time, point.premium, point.ts) == (
        "BTC-USD-SWAP",
        0.0001875391284828,
        1700726400000,
        1700755200000,
        0.0001233824646391,
        1700724675402,
    )
    assert point.indicator("BTCUSD", RECEIVED) == {
        "exchange": "okx",
        "symbol": "BTCUSD",
        "kind": "funding_rate",
        "value": 0.0001875391284828,
        "period": None,
        "extra": {
            "next_funding_time": 1700726400000.0,
            "following_funding_time": 1700755200000.0,
            "funding_interval_ms": 8 * 3600 * 1000.0,
            "premium": 0.0001233824646391,
        },
        "event_time": 1700724675402,
        "receive_time": RECEIVED,
    }


def test_documented_spot_ticker_and_the_divergence_it_gives():
    assert parse_spot_tickers(doc("spot_tickers.json")) == [("BTC-USDT", 8888.88, 9999.99, 1597026383085)]
    state = OkxMarkState("BTCUSDT")
    assert state.on_spot(8888.88, 9999.99, 1, RECEIVED, interval_ms=60_000) is None  # no mark yet
    state.on_mark(9500.0, 2, RECEIVED)
    spot = (8888.88 + 9999.99) / 2
    assert state.on_spot(8888.88, 9999.99, 3, RECEIVED, interval_ms=60_000) == {
        "exchange": "okx",
        "symbol": "BTCUSDT",
        "kind": "spot_perp_divergence",
        "value": (9500.0 - spot) / spot,
        "period": None,
        "extra": {"perp_price": 9500.0, "spot_price": spot},
        "event_time": 3,
        "receive_time": RECEIVED,
    }
    assert state.on_spot(9000.0, 9001.0, 60_002, RECEIVED, interval_ms=60_000) is None  # within the minute
    assert state.on_spot(9001.0, 9000.0, 60_003, RECEIVED, interval_ms=60_000) is None  # crossed (pre-open)
    assert state.on_spot(9000.0, 9001.0, 60_003, RECEIVED, interval_ms=60_000)["extra"]["spot_price"] == 9000.5
    empty = doc("spot_tickers.json")
    empty["data"][0]["bidPx"] = ""
    assert parse_spot_tickers(empty) == []  # one side empty: no touch, nothing to say


def test_mark_state_merges_three_channels_and_publishes_changes_only():
    state = OkxMarkState("BTCUSDT")
    assert state.on_mark(42310.6, 1, RECEIVED) is None  # index and funding not known yet
    assert state.on_index(42309.1, 2, RECEIVED) is None
    first = state.on_funding(0.00012, 1700000800000, 3, RECEIVED)
    assert first == {
        "exchange": "okx",
        "symbol": "BTCUSDT",
        "mark_price": 42310.6,
        "index_price": 42309.1,
        "funding_rate": 0.00012,
        "next_funding_time": 1700000800000,
        "event_time": 3,
        "receive_time": RECEIVED,
    }
    assert state.on_mark(42310.6, 4, RECEIVED) is None  # a 10-s refresh of the same mark
    assert state.on_index(42311.0, 5, RECEIVED)["index_price"] == 42311.0


def test_instruments_keep_linear_usdt_swaps_with_their_contract_value():
    body = {
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
            },
            {
                "instType": "SWAP",
                "instId": "ETH-USDT-SWAP",
                "ctType": "linear",
                "ctVal": "0.1",
                "ctMult": "1",
                "ctValCcy": "ETH",
            },
            {
                "instType": "SWAP",
                "instId": "BTC-USD-SWAP",
                "ctType": "inverse",
                "ctVal": "100",
                "ctMult": "1",
                "ctValCcy": "USD",
            },
            {"instType": "SPOT", "instId": "BTC-USDT", "ctType": "", "ctVal": "", "ctMult": "", "ctValCcy": ""},
        ],
    }
    assert parse_instruments(body) == {
        "BTC-USDT-SWAP": Instrument("BTC-USDT-SWAP", "BTCUSDT", Decimal("0.01")),
        "ETH-USDT-SWAP": Instrument("ETH-USDT-SWAP", "ETHUSDT", Decimal("0.1")),
    }
    with pytest.raises(FrameError):
        parse_instruments({"code": "50011", "msg": "Too Many Requests", "data": []})


@pytest.mark.parametrize(
    "name, change",
    [
        ("trades.json", lambda m: m["data"][0].update(side="long")),
        ("trades.json", lambda m: m["data"][0].update(sz="nan")),
        ("trades.json", lambda m: m["data"][0].update(count="0")),
        ("trades.json", lambda m: m["data"][0].update(instId="ETH-USDT")),
        ("books_update.json", lambda m: m.update(action="partial")),
        ("books_update.json", lambda m: m["data"][0].update(prevSeqId=-1)),
        ("books_update.json", lambda m: m["data"][0]["bids"].append(["8440", "-1", "0", "1"])),
        ("books_update.json", lambda m: m["data"][0].update(ts="soon")),
    ],
)
def test_malformed_documented_frames_are_frame_errors(name, change):
    msg = doc(name)
    change(msg)
    parse = parse_trades if name.startswith("trades") else parse_books
    with pytest.raises(FrameError):
        parse(msg, SPOT, RECEIVED)
