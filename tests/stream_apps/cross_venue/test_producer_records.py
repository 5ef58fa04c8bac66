"""The records the producers really publish, through the Avro wire format, become the right inputs.

The records are made by the producers' own record builders (md.book from the shared venue base, the
Binance premiumIndex and spot-perp records, OKX's funding-rate indicator), encoded and decoded with
the topics' schemas as a consumer would read them, then fed to the state: field names and units the
cross-venue core assumes are checked against the code that writes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from producers.base.venue import book_snapshot_record
from producers.binance.indicator_parse import PricePoint, parse_funding_rate, spot_perp_divergence
from producers.okx.parse import FundingPoint
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.cross_venue.events import BookEvent, FundingEvent, SpotEvent, event_from_record
from stream_apps.cross_venue.state import CrossVenueParams, CrossVenueState

HOUR = 3_600_000
T = 1_764_000_000_000


@dataclass
class Book:
    symbol: str
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    last_update_id: int = 1
    last_event_time: int = T

    def top(self, depth):
        return self.bids[:depth], self.asks[:depth]


@pytest.fixture(scope="module")
def serde():
    return AvroSerde(FileSchemaRegistry(), strict=True)


def wire(serde, topic, record):
    return event_from_record(topic, serde.decode(serde.encode(topic, record), topic=topic))


def test_producer_records_through_avro_are_the_inputs_and_features_follow(serde):
    binance_book = book_snapshot_record(
        "binance",
        Book("BTCUSDT", [(100_010.0, 0.5), (100_000.0, 1.0)], [(100_020.0, 0.5), (100_030.0, 1.0)]),
        20,
        T + 3,
    )
    okx_book = book_snapshot_record(
        "okx", Book("BTCUSDT", [(99_950.0, 2.0)], [(99_960.0, 0.05), (99_970.0, 2.0)]), 20, T + 4
    )
    b, o = wire(serde, "md.book", binance_book), wire(serde, "md.book", okx_book)
    assert isinstance(b, BookEvent) and b.time_ms == T and b.bids == ((100_010.0, 0.5), (100_000.0, 1.0))
    assert o.asks == ((99_960.0, 0.05), (99_970.0, 2.0))
    premium = parse_funding_rate(
        {
            "symbol": "BTCUSDT",
            "markPrice": "100015.0",
            "indexPrice": "100000.0",
            "lastFundingRate": "0.00010000",
            "nextFundingTime": T + HOUR,
            "interestRate": "0.0001",
            "time": T - 500,
        },
        "BTCUSDT",
        T - 400,
    )[0]
    fb = wire(serde, "md.indicators", premium)
    assert fb == FundingEvent("binance", "BTCUSDT", T - 400, 0.0001, T + HOUR)
    okx_funding = FundingPoint("BTC-USDT-SWAP", 0.0003, T + HOUR, T + 5 * HOUR, None, T - 300).indicator(
        "BTCUSDT", T - 200
    )
    fo = wire(serde, "md.indicators", okx_funding)
    assert fo == FundingEvent("okx", "BTCUSDT", T - 200, 0.0003, T + HOUR, 4 * HOUR)
    divergence = spot_perp_divergence(
        "BTCUSDT", PricePoint(100_015.0, T - 600, T - 590), PricePoint(99_990.0, T - 590, T - 580)
    )[0]
    spot = wire(serde, "md.indicators", divergence)
    assert spot == SpotEvent("binance", "BTCUSDT", T - 580, 99_990.0)

    state = CrossVenueState(CrossVenueParams(sweep_notional_usd=10_000.0))
    out = state.feed(sorted([b, o, fb, fo, spot], key=lambda e: e.time_ms)) + state.advance_to(T + 1_000)
    f = out[-1]
    assert f.coin == "BTC" and f.time_ms == T + 1_000
    p = f.pair("binance", "okx")
    assert p.spread_top == pytest.approx(math.log(100_010.0 / 99_960.0), rel=1e-12)
    # 10,000 USD from okx's asks: 0.05 BTC at 99,960 (4,998 USD), then 5,002 USD at 99,970
    coins = 0.05 + 5_002.0 / 99_970.0
    assert p.spread_sweep == pytest.approx(math.log(100_010.0 / (10_000.0 / coins)), rel=1e-12)
    assert p.funding_diff == pytest.approx(0.0001 - 0.0003)
    assert p.reason("funding_diff_8h") == "funding interval of binance not known yet"
    assert f.venue("okx").funding_interval_ms == 4 * HOUR
    assert f.venue("binance").basis == pytest.approx(math.log((100_010.0 + 100_020.0) / 2 / 99_990.0), rel=1e-12)
