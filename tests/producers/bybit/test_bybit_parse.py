"""Bybit v5 frames → normalised records, against frames in the documented format (Bybit v5 websocket docs).

Every expected value below is written out by hand from the frame text, not printed by the code.
"""

from __future__ import annotations

import orjson
import pytest

from producers.base.book import DepthDiff
from producers.bybit.parse import (
    FrameError,
    TradePrint,
    bybit_depth_record,
    parse_all_liquidation,
    parse_orderbook,
    parse_public_trades,
    split_topic,
    ticker_fields,
)
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde

# publicTrade example of the v5 docs (with the `seq` newer frames carry)
TRADE = orjson.loads(
    b'{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1672304486868,"data":[{"T":1672304486865,'
    b'"s":"BTCUSDT","S":"Buy","v":"0.001","p":"16578.50","L":"PlusTick",'
    b'"i":"20f43950-d8dd-5b31-9112-a178eb6023af","BT":false,"seq":1783284617}]}'
)
# orderbook.50 snapshot of the v5 docs (levels shortened)
BOOK_SNAPSHOT = orjson.loads(
    b'{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{"s":"BTCUSDT",'
    b'"b":[["16493.50","0.006"],["16493.00","0.100"]],"a":[["16611.00","0.029"],'
    b'["16612.00","0.213"]],"u":18521288,"seq":7961638724},"cts":1672304484976}'
)
BOOK_DELTA = orjson.loads(
    b'{"topic":"orderbook.50.BTCUSDT","type":"delta","ts":1672304484998,"data":{"s":"BTCUSDT",'
    b'"b":[],"a":[["16611.00","0"],["16611.50","1.250"]],"u":18521289,"seq":7961638730},'
    b'"cts":1672304484990}'
)
# allLiquidation example of the v5 docs
LIQUIDATION = orjson.loads(
    b'{"topic":"allLiquidation.ROSEUSDT","type":"snapshot","ts":1739502303204,"data":[{'
    b'"T":1739502302929,"s":"ROSEUSDT","S":"Sell","v":"20000","p":"0.04499"}]}'
)
# tickers (linear) snapshot example of the v5 docs
TICKER = orjson.loads(
    b'{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT","tickDirection":"PlusTick",'
    b'"price24hPcnt":"0.017103","lastPrice":"17216.00","prevPrice24h":"16926.50",'
    b'"highPrice24h":"17281.50","lowPrice24h":"16915.00","prevPrice1h":"17238.00",'
    b'"markPrice":"17217.33","indexPrice":"17227.36","openInterest":"68744.761",'
    b'"openInterestValue":"1183601235.91","turnover24h":"1570383121.943499","volume24h":"91705.276",'
    b'"nextFundingTime":"1673280000000","fundingRate":"-0.000212","bid1Price":"17215.50",'
    b'"bid1Size":"84.489","ask1Price":"17216.00","ask1Size":"83.020"},"cs":24987956059,'
    b'"ts":1673272861686}'
)


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    return AvroSerde(FileSchemaRegistry(), strict=True)


def test_topic_names():
    assert split_topic("publicTrade.BTCUSDT") == ("publicTrade", "BTCUSDT")
    assert split_topic("orderbook.50.ETHUSDT") == ("orderbook", "ETHUSDT")
    assert split_topic("allLiquidation.ROSEUSDT") == ("allLiquidation", "ROSEUSDT")
    with pytest.raises(FrameError):
        split_topic("publicTrade")


def test_public_trade_from_the_docs(serde):
    [t] = parse_public_trades(TRADE, receive_time=1672304486900)
    assert t == TradePrint(
        symbol="BTCUSDT",
        trade_id="20f43950-d8dd-5b31-9112-a178eb6023af",
        seq=1783284617,
        price=16578.5,
        qty=0.001,
        taker_side="BUY",
        trade_time=1672304486865,
        event_time=1672304486868,
        receive_time=1672304486900,
        block_trade=False,
    )
    record = t.record(1672304486865000)
    assert record == {
        "exchange": "bybit",
        "symbol": "BTCUSDT",
        "agg_id": 1672304486865000,
        "price": 16578.5,
        "qty": 0.001,
        "first_trade_id": 1672304486865000,
        "last_trade_id": 1672304486865000,
        "event_time": 1672304486868,
        "trade_time": 1672304486865,
        "receive_time": 1672304486900,
        "taker_side": "BUY",
    }
    assert serde.decode(serde.encode("md.trades", record)) == record


def test_sell_taker_several_fills_and_no_seq():
    msg = {
        "topic": "publicTrade.ETHUSDT",
        "type": "snapshot",
        "ts": 10,
        "data": [
            {"T": 7, "s": "ETHUSDT", "S": "Sell", "v": "2.5", "p": "1999.99", "i": "a", "BT": True},
            {"T": 8, "s": "ETHUSDT", "S": "Sell", "v": "0.5", "p": "1999.98", "i": "b", "BT": False},
        ],
    }
    first, second = parse_public_trades(msg, 11)
    assert (first.taker_side, first.qty, first.price, first.seq, first.block_trade) == (
        "SELL",
        2.5,
        1999.99,
        None,
        True,
    )
    assert (second.trade_id, second.trade_time, second.event_time) == ("b", 8, 10)


@pytest.mark.parametrize(
    "bad",
    [
        {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1, "data": []},
        {
            "topic": "publicTrade.BTCUSDT",
            "type": "snapshot",
            "ts": 1,
            "data": [{"T": 1, "s": "BTCUSDT", "S": "Up", "v": "1", "p": "1", "i": "x"}],
        },
        {
            "topic": "publicTrade.BTCUSDT",
            "type": "snapshot",
            "ts": 1,
            "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "nan", "i": "x"}],
        },
        {
            "topic": "publicTrade.BTCUSDT",
            "type": "snapshot",
            "ts": 1,
            "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "1", "i": 5}],
        },
        {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": "1", "data": [{}]},
        {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 0, "data": [{}]},  # the fake's hollow garbage
        {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 0, "data": ["x"]},
        {"topic": "tickers.BTCUSDT", "type": "snapshot", "ts": 0, "data": []},
    ],
)
def test_malformed_trades_raise_frame_error(bad):
    with pytest.raises(FrameError):
        parse_public_trades(bad, 0)


def test_orderbook_snapshot_and_delta_from_the_docs(serde):
    snap = parse_orderbook(BOOK_SNAPSHOT, receive_time=5)
    assert snap == DepthDiff(
        "BTCUSDT",
        18521288,
        18521288,
        None,
        1672304484978,
        1672304484976,
        5,
        ((16493.5, 0.006), (16493.0, 0.1)),
        ((16611.0, 0.029), (16612.0, 0.213)),
    )
    delta = parse_orderbook(BOOK_DELTA, receive_time=6)
    assert delta == DepthDiff(
        "BTCUSDT", 18521289, 18521289, 18521288, 1672304484998, 1672304484990, 6, (), ((16611.0, 0.0), (16611.5, 1.25))
    )
    record = bybit_depth_record(delta)
    assert record == {
        "exchange": "bybit",
        "symbol": "BTCUSDT",
        "first_update_id": 18521289,
        "final_update_id": 18521289,
        "prev_final_update_id": 18521288,
        "event_time": 1672304484998,
        "transaction_time": 1672304484990,
        "receive_time": 6,
        "bids": [],
        "asks": [{"price": 16611.0, "qty": 0.0}, {"price": 16611.5, "qty": 1.25}],
    }
    assert serde.decode(serde.encode("md.depth", record)) == record
    assert serde.decode(serde.encode("md.depth", bybit_depth_record(snap)))["prev_final_update_id"] is None


def test_orderbook_without_cts_uses_ts():
    msg = {**BOOK_DELTA}
    del msg["cts"]
    assert parse_orderbook(msg, 0).transaction_time == 1672304484998


@pytest.mark.parametrize(
    "change",
    [
        {"type": "partial"},
        {"data": {"s": "BTCUSDT", "b": [], "a": [], "u": 0, "seq": 1}},
        {"data": {"s": "BTCUSDT", "b": [["1"]], "a": [], "u": 5, "seq": 1}},
        {"data": {}},
        {"data": []},
        {"topic": "tickers.BTCUSDT"},
    ],
)
def test_malformed_orderbook_raises_frame_error(change):
    with pytest.raises(FrameError):
        parse_orderbook({**BOOK_DELTA, **change}, 0)


def test_all_liquidation_from_the_docs(serde):
    [rec] = parse_all_liquidation(LIQUIDATION, receive_time=1739502303300)
    # S = Sell: a SHORT position was liquidated, by a BUY order; 0.04499 * 20000 = 899.8 USDT
    assert rec == {
        "exchange": "bybit",
        "symbol": "ROSEUSDT",
        "side": "BUY",
        "liquidated_side": "SHORT",
        "price": 0.04499,
        "avg_price": 0.04499,
        "qty": 20000.0,
        "filled_qty": 20000.0,
        "usd_value": pytest.approx(899.8),
        "event_time": 1739502303204,
        "trade_time": 1739502302929,
        "receive_time": 1739502303300,
    }
    assert serde.decode(serde.encode("md.liquidations", rec))["liquidated_side"] == "SHORT"


def test_buy_liquidation_is_a_long_position():
    msg = {
        "topic": "allLiquidation.BTCUSDT",
        "type": "snapshot",
        "ts": 2,
        "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "0.003", "p": "43511.70"}],
    }
    [rec] = parse_all_liquidation(msg, 3)
    assert (rec["side"], rec["liquidated_side"]) == ("SELL", "LONG")
    assert rec["usd_value"] == pytest.approx(130.5351)  # 43511.7 * 0.003


def test_malformed_liquidation_raises_frame_error():
    with pytest.raises(FrameError):
        parse_all_liquidation({**LIQUIDATION, "data": [{"T": 1, "s": "X", "S": "Long", "v": "1", "p": "1"}]}, 0)
    with pytest.raises(FrameError):
        parse_all_liquidation({**LIQUIDATION, "data": [{}]}, 0)


def test_ticker_fields_from_the_docs():
    assert ticker_fields(TICKER) == (
        "snapshot",
        "BTCUSDT",
        1673272861686,
        {
            "markPrice": 17217.33,
            "indexPrice": 17227.36,
            "fundingRate": -0.000212,
            "nextFundingTime": 1673280000000,
            "openInterest": 68744.761,
            "openInterestValue": 1183601235.91,
        },
    )


def test_ticker_delta_carries_only_what_changed_and_empty_strings_are_absent():
    delta = {
        "topic": "tickers.BTCUSDT",
        "type": "delta",
        "ts": 1673272861786,
        "data": {"symbol": "BTCUSDT", "lastPrice": "17216.50", "markPrice": "17217.40", "fundingRate": ""},
    }
    assert ticker_fields(delta) == ("delta", "BTCUSDT", 1673272861786, {"markPrice": 17217.4})


@pytest.mark.parametrize(
    "data",
    [
        {"symbol": "BTCUSDT", "markPrice": "abc"},
        {"markPrice": "1"},
        {"symbol": "BTCUSDT", "nextFundingTime": "soon"},
        [],
    ],
)
def test_malformed_ticker_raises_frame_error(data):
    with pytest.raises(FrameError):
        ticker_fields({"topic": "tickers.BTCUSDT", "type": "delta", "ts": 1, "data": data})
