"""Book sweeps against hand-computed fills (exact fractions), and venue symbols to coins."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_apps.cross_venue.events import (
    FundingEvent,
    book_event_from_record,
    event_from_record,
    funding_event_from_record,
    spot_event_from_record,
)
from stream_apps.cross_venue.sweep import BUY, SELL, sweep
from stream_apps.cross_venue.symbols import Instrument, SymbolError, coin_of, instrument
from tests.support.fuzz import FUZZ  # hypothesis settings that write nothing outside the run's temp dirs

ASKS = [(100.0, 1.0), (101.0, 2.0), (103.0, 5.0)]
BIDS = [(99.0, 2.0), (98.0, 1.0), (97.0, 10.0)]


def test_buying_takes_whole_levels_then_part_of_the_next():
    # 250 USD: all of 100 (1 coin = 100 USD), then the remaining 150 USD at 101 (150/101 coins)
    expected = Fraction(250) / (1 + Fraction(150, 101))
    got = sweep(ASKS, 250.0, BUY)
    assert got.vwap == pytest.approx(float(expected), rel=1e-15)
    assert got.qty == pytest.approx(float(1 + Fraction(150, 101)), rel=1e-15)
    assert (got.levels, got.worst_price, got.reason) == (2, 101.0, None)


def test_selling_walks_the_bids_down():
    # 300 USD: 2 coins at 99 (198), 1 at 98 (98, total 296), then 4 USD at 97
    expected = Fraction(300) / (3 + Fraction(4, 97))
    got = sweep(BIDS, 300.0, SELL)
    assert got.vwap == pytest.approx(float(expected), rel=1e-15)
    assert (got.levels, got.worst_price) == (3, 97.0)


def test_a_notional_inside_the_first_level_fills_at_the_touch():
    assert sweep(ASKS, 100.0, BUY).vwap == 100.0
    assert sweep(ASKS, 37.5, BUY).vwap == 100.0
    assert sweep(BIDS, 1.0, SELL).vwap == 99.0


def test_insufficient_depth_is_missing_with_the_depth_there_is():
    got = sweep(ASKS, 1_000.0, BUY)  # the asks hold 100 + 202 + 515 = 817 USD
    assert got.vwap is None
    assert got.reason == "insufficient depth: asks hold 817 USD of 1,000 in 3 levels"
    assert got.qty == 8.0
    empty = sweep([], 10.0, SELL)
    assert empty.vwap is None and empty.reason == "insufficient depth: bids hold 0 USD of 10 in 0 levels"


def test_bad_or_unordered_levels_give_no_price():
    assert "out of order" in sweep([(100.0, 1.0), (99.0, 1.0)], 150.0, BUY).reason
    assert "out of order" in sweep([(99.0, 1.0), (99.0, 1.0)], 150.0, SELL).reason
    assert "bad level" in sweep([(100.0, 0.0)], 50.0, BUY).reason
    assert "bad level" in sweep([(float("nan"), 1.0)], 50.0, BUY).reason
    with pytest.raises(ValueError):
        sweep(ASKS, 0.0, BUY)
    with pytest.raises(ValueError):
        sweep(ASKS, 10.0, "long")


@st.composite
def books(draw):
    """A side of a book, best first, with prices and quantities that are exact in binary."""
    n = draw(st.integers(0, 8))
    steps = draw(st.lists(st.integers(1, 50), min_size=n, max_size=n))
    qtys = draw(st.lists(st.integers(1, 400), min_size=n, max_size=n))
    side = draw(st.sampled_from([BUY, SELL]))
    price, levels = 1000, []
    for step, q in zip(steps, qtys):
        price += step if side == BUY else -step
        levels.append((float(price), q / 8))
    return side, levels, draw(st.integers(1, 400_000)) / 4


@settings(FUZZ, max_examples=150)
@given(books())
def test_sweep_equals_an_exact_walk_in_fractions(case):
    side, levels, notional = case
    remaining, coins = Fraction(notional), Fraction(0)
    for price, qty in levels:
        take = min(remaining, Fraction(price) * Fraction(qty))
        coins += take / Fraction(price)
        remaining -= take
        if remaining == 0:
            break
    got = sweep(levels, notional, side)
    if remaining > 0:
        assert got.vwap is None and got.reason.startswith("insufficient depth")
    else:
        assert got.vwap == pytest.approx(float(Fraction(notional) / coins), rel=1e-12)
        prices = [p for p, _ in levels[: got.levels]]
        assert min(prices) <= got.vwap <= max(prices)


@pytest.mark.parametrize(
    "exchange, symbol, expected",
    [
        ("binance", "BTCUSDT", Instrument("BTC", "USDT")),
        ("bybit", "ETHUSDC", Instrument("ETH", "USDC")),
        ("okx", "BTC-USDT-SWAP", Instrument("BTC", "USDT")),
        ("okx", "BTC-USDT", Instrument("BTC", "USDT", 1, "spot")),
        ("binance", "1000PEPEUSDT", Instrument("PEPE", "USDT", 1000)),
        ("bybit", "10000SATSUSDT", Instrument("SATS", "USDT", 10000)),
        ("binance", "1INCHUSDT", Instrument("1INCH", "USDT")),
        ("binance", "BTCFDUSD", Instrument("BTC", "FDUSD")),
        ("bybit", "BTCUSD", Instrument("BTC", "USD")),
    ],
)
def test_symbols_map_to_their_coin(exchange, symbol, expected):
    assert instrument(exchange, symbol) == expected


def test_one_coin_across_venues_and_unmappable_symbols():
    assert coin_of("binance", "BTCUSDT") == coin_of("bybit", "BTCUSDT") == coin_of("okx", "BTC-USDT-SWAP") == "BTC"
    for bad in ("BTCUSDT_240329", "BTC-USDT-240329", "USDT", "BTCEUR", "btc usdt"):
        with pytest.raises(SymbolError):
            instrument("binance", bad)


def test_records_adapt_to_events():
    book = book_event_from_record(
        {
            "exchange": "okx",
            "symbol": "BTC-USDT-SWAP",
            "last_update_id": 1,
            "event_time": 5,
            "receive_time": 6,
            "bids": [{"price": 99.0, "qty": 2.0}],
            "asks": [{"price": 100.0, "qty": 1.0}],
            "obi_10": 0.3,
        }
    )
    assert (book.time_ms, book.bids, book.asks) == (5, ((99.0, 2.0),), ((100.0, 1.0),))
    mark = funding_event_from_record(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "mark_price": 1.0,
            "index_price": 1.0,
            "funding_rate": 0.0001,
            "next_funding_time": 28_800_000,
            "event_time": 7,
            "receive_time": 8,
        }
    )
    assert (mark.time_ms, mark.funding_rate, mark.next_funding_time_ms) == (7, 0.0001, 28_800_000)
    assert mark.interval_ms is None  # md.mark has no interval: the state learns it
    base = {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "value": 0.001,
        "period": None,
        "event_time": 1,
        "receive_time": 9,
    }
    spot = spot_event_from_record(
        {**base, "kind": "spot_perp_divergence", "extra": {"perp_price": 100.1, "spot_price": 100.0}}
    )
    assert (spot.time_ms, spot.price) == (9, 100.0)  # the receive time: when the value became known
    assert spot_event_from_record({**base, "kind": "open_interest", "extra": {}}) is None
    assert (
        event_from_record("md.indicators", {**base, "kind": "spot_perp_divergence", "extra": {"spot_price": 100.0}})
        == spot
    )
    assert event_from_record("md.trades", {**base, "kind": "spot_perp_divergence"}) is None
    # OKX's funding-rate channel states the interval (fundingTime 8 h, nextFundingTime 16 h)
    okx = {
        **base,
        "exchange": "okx",
        "kind": "funding_rate",
        "value": 0.0002,
        "extra": {
            "next_funding_time": 28_800_000.0,
            "following_funding_time": 57_600_000.0,
            "funding_interval_ms": 28_800_000.0,
        },
    }
    assert event_from_record("md.indicators", okx) == FundingEvent("okx", "BTCUSDT", 9, 0.0002, 28_800_000, 28_800_000)
    binance = {**base, "kind": "funding_rate", "value": 0.0001, "extra": {"next_funding_time": 28_800_000.0}}
    assert event_from_record("md.indicators", binance) == FundingEvent("binance", "BTCUSDT", 9, 0.0001, 28_800_000)
    assert event_from_record("md.indicators", {**base, "kind": "open_interest", "extra": {}}) is None
