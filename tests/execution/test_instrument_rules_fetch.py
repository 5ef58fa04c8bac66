"""The venue rules downloaded (execution/instrument_rules_fetch.py) from the fake Binance, Bybit and
OKX exchanges over real sockets: each serves its instruments endpoint shaped like the real one.

Expected, from what each fake lists for BTCUSDT and ETHUSDT: Binance's generated exchangeInfo and
Bybit's instruments-info step 0.001 coin, minimum 0.001, minimum notional 5 USD; OKX lists lotSz and
minSz 0.01 contract of ctVal 0.01 BTC / 0.1 ETH: 0.0001 BTC and 0.001 ETH, no minimum notional.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from execution.instrument_rules import InstrumentRulesError
from execution.instrument_rules_fetch import fetch_rules
from fake_exchange import FakeExchangeConfig, serve
from fake_exchange.bybit import BybitSyntheticSpec, serve_bybit
from fake_exchange.okx import OkxSyntheticSpec, serve_okx
from fake_exchange.synthetic import SyntheticSpec

pytestmark = pytest.mark.timeout(60)
SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
async def fakes():
    started = [
        await serve(
            FakeExchangeConfig(synthetic=SyntheticSpec(symbols=SYMBOLS, duration_s=2), speed="max", start="manual")
        ),
        await serve_bybit(BybitSyntheticSpec(symbols=SYMBOLS, duration_s=2), speed=None, start="manual"),
        await serve_okx(OkxSyntheticSpec(symbols=SYMBOLS, duration_s=2), speed=None, start="manual"),
    ]
    try:
        yield dict(zip(("binance", "bybit", "okx"), (f.rest_url for f in started), strict=True))
    finally:
        for fake in started:
            await fake.stop()


async def test_rules_of_every_venue_from_the_fake_exchanges(fakes):
    rules = await fetch_rules(base_urls=fakes, page_size=1)  # Bybit in pages of one: the cursor is followed
    assert sorted(rules.rules) == [
        (v, s)
        for v in ("binance", "bybit", "okx")
        for s in (("BTC-USDT-SWAP", "ETH-USDT-SWAP") if v == "okx" else SYMBOLS)
    ]
    for venue in ("binance", "bybit"):
        for coin in ("BTC", "ETH"):
            rule = rules.for_coin(venue, coin)
            assert (rule.lot_step, rule.min_qty, rule.min_notional) == (Decimal("0.001"), Decimal("0.001"), 5)
    okx_btc, okx_eth = rules.for_symbol("okx", "BTCUSDT"), rules.for_symbol("okx", "ETHUSDT")
    assert (okx_btc.lot_step, okx_btc.min_qty, okx_btc.min_notional, okx_btc.contract_value) == (
        Decimal("0.0001"),
        Decimal("0.0001"),
        0,
        Decimal("0.01"),
    )
    assert (okx_eth.lot_step, okx_eth.contract_value) == (Decimal("0.001"), Decimal("0.1"))
    assert (await fetch_rules(["okx"], fakes)).rules == {k: r for k, r in rules.rules.items() if k[0] == "okx"}


async def test_a_venue_that_does_not_answer_is_an_error_naming_it(fakes):
    with pytest.raises(InstrumentRulesError, match="bybit: GET .* failed: HTTP 404"):
        await fetch_rules(["bybit"], {"bybit": fakes["binance"]})  # the Binance fake has no Bybit path
    with pytest.raises(InstrumentRulesError, match="okx: GET .* failed"):
        await fetch_rules(["okx"], {"okx": "http://127.0.0.1:9"}, attempts=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(InstrumentRulesError, match="kraken"):
        await fetch_rules(["kraken"])
