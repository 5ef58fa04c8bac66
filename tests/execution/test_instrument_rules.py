"""Venue instrument rules (execution/instrument_rules.py) parsed from the venues' own answers, every
number read off the body by hand: Binance's real July 2021 exchangeInfo (tests/data/binance_futures_ws),
Bybit's and OKX's documented response examples (tests/data/instrument_rules, see its README).

Units: every rule is in coins. Binance's 1000SHIBUSDT trades 1,000 SHIB per unit, so its stepSize 1
is 1,000 SHIB; an OKX contract is ctVal coins, so lotSz 0.1 of a 0.01 BTC contract is 0.001 BTC. A
book carries its symbol's units (a 1000SHIBUSDT quantity of 1 is 1,000 SHIB; the cross-venue state
divides only prices by the multiplier), so a step goes back into those units by ÷ the multiplier.
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest

from execution.instrument_rules import (
    InstrumentRule,
    InstrumentRules,
    InstrumentRulesError,
    bybit_next_cursor,
    in_symbol_units,
    parse_binance,
    parse_bybit,
    parse_okx,
)
from stream_apps.cross_venue.events import BookEvent
from stream_apps.cross_venue.state import CrossVenueParams, CrossVenueState
from tests.support.paths import REPO

DATA = REPO / "tests" / "data"
D = Decimal


def binance_body() -> dict:
    line = (DATA / "binance_futures_ws" / "session_config_and_rest.txt").read_text().splitlines()[0]
    return json.loads(line.split(": ", 1)[1])  # "<url> -> <time>: <body>"


def fixture(name: str) -> dict:
    return json.loads((DATA / "instrument_rules" / name).read_text())


def okx_swap_body(**values) -> dict:
    """OKX's documented example row as the SWAP its field table describes: BTC-USDT-SWAP, linear,
    ctVal 0.01 BTC, lotSz and minSz in contracts (only the documented fields' values change)."""
    body = fixture("okx_instruments.json")
    row = body["data"][0]
    row.update(
        {
            "instType": "SWAP",
            "instId": "BTC-USDT-SWAP",
            "instFamily": "BTC-USDT",
            "uly": "BTC-USDT",
            "baseCcy": "",
            "quoteCcy": "",
            "settleCcy": "USDT",
            "ctType": "linear",
            "ctVal": "0.01",
            "ctMult": "1",
            "ctValCcy": "BTC",
            "lotSz": "0.1",
            "minSz": "0.1",
        }
        | values
    )
    return body


def test_binance_perpetuals_from_exchange_info_market_lot_and_min_notional():
    rules = {r.symbol: r for r in parse_binance(binance_body())}
    # BTCUSDT: MARKET_LOT_SIZE stepSize 0.001, minQty 0.001; MIN_NOTIONAL notional 5
    assert rules["BTCUSDT"] == InstrumentRule("binance", "BTCUSDT", "BTC", "USDT", D("0.001"), D("0.001"), D("5"))
    # 1000SHIBUSDT: stepSize 1 and minQty 1 of a 1,000-SHIB unit = 1,000 SHIB
    assert rules["1000SHIBUSDT"] == InstrumentRule(
        "binance", "1000SHIBUSDT", "SHIB", "USDT", D("1000"), D("1000"), D("5")
    )
    # SUSHIUSDT: LOT_SIZE maxQty 10,000,000 but MARKET_LOT_SIZE maxQty 100,000: the market filter is read
    assert rules["SUSHIUSDT"].lot_step == 1 and rules["SUSHIUSDT"].min_qty == 1
    assert not any("_" in s for s in rules)  # quarterlies (BTCUSDT_210924) are not perpetuals
    assert len(rules) == sum(s["contractType"] == "PERPETUAL" for s in binance_body()["symbols"])


def test_bybit_linear_perpetuals_from_the_documented_examples():
    [btc] = parse_bybit(fixture("bybit_instruments_linear.json"))
    assert btc == InstrumentRule("bybit", "BTCUSDT", "BTC", "USDT", D("0.001"), D("0.001"), D("5"))
    prelisting = fixture("bybit_instruments_prelisting.json")
    [bio] = parse_bybit(prelisting)
    assert (bio.coin, bio.lot_step, bio.min_qty, bio.min_notional) == ("BIO", 1, 1, 5)
    assert bybit_next_cursor(prelisting) == "first%3DBIOUSDT%26last%3DBIOUSDT"
    assert bybit_next_cursor(fixture("bybit_instruments_linear.json")) == ""
    # a symbol per 1,000 coins: qtyStep 100 units = 100,000 coins
    body = fixture("bybit_instruments_linear.json")
    row = body["result"]["list"][0]
    row.update({"symbol": "1000PEPEUSDT", "baseCoin": "1000PEPE"})
    row["lotSizeFilter"].update({"qtyStep": "100", "minOrderQty": "100"})
    [pepe] = parse_bybit(body)
    assert (pepe.coin, pepe.lot_step, pepe.min_qty) == ("PEPE", 100_000, 100_000)
    with pytest.raises(InstrumentRulesError, match="retCode"):
        parse_bybit({"retCode": 10001, "retMsg": "params error", "result": {}})


def test_okx_contracts_become_coins_by_the_contract_value():
    assert parse_okx(fixture("okx_instruments.json")) == []  # the documented example is spot BTC-USDT
    [btc] = parse_okx(okx_swap_body())
    # lotSz 0.1 and minSz 0.1 contracts of ctVal 0.01 BTC: 0.001 BTC each
    assert btc == InstrumentRule("okx", "BTC-USDT-SWAP", "BTC", "USDT", D("0.001"), D("0.001"), D("0"), D("0.01"))
    # ctMult multiplies in; PEPE: 10,000,000 coins a contract, lotSz 1 -> 10,000,000 PEPE
    [pepe] = parse_okx(
        okx_swap_body(instId="PEPE-USDT-SWAP", ctValCcy="PEPE", ctVal="1000000", ctMult="10", lotSz="1", minSz="2")
    )
    assert (pepe.coin, pepe.lot_step, pepe.min_qty, pepe.contract_value) == ("PEPE", 10**7, 2 * 10**7, 10**7)
    assert parse_okx(okx_swap_body(ctType="inverse", instId="BTC-USD-SWAP", ctValCcy="USD")) == []
    with pytest.raises(InstrumentRulesError, match="ctVal"):
        parse_okx(okx_swap_body(ctVal="x"))


def test_a_rule_is_found_by_the_book_symbol_and_converted_to_its_units():
    binance = {r.symbol: r for r in parse_binance(binance_body())}
    okx_shib = parse_okx(okx_swap_body(instId="SHIB-USDT-SWAP", ctValCcy="SHIB", ctVal="1000000", lotSz="1", minSz="1"))
    rules = InstrumentRules([binance["1000SHIBUSDT"], binance["BTCUSDT"], *okx_shib])
    # the OKX producer publishes SHIB-USDT-SWAP under 1000SHIBUSDT (prices x 1000, quantities / 1000)
    assert rules.for_symbol("okx", "1000SHIBUSDT") == rules.for_symbol("okx", "SHIB-USDT-SWAP") == okx_shib[0]
    assert rules.for_symbol("binance", "1000SHIBUSDT").lot_step == 1000
    assert in_symbol_units(D(1000), "binance", "1000SHIBUSDT") == 1  # one 1000SHIBUSDT unit
    assert in_symbol_units(D(10**6), "okx", "1000SHIBUSDT") == 1000
    assert in_symbol_units(D("0.001"), "okx", "BTC-USDT-SWAP") == D("0.001")
    assert rules.for_coin("binance", "SHIB") == binance["1000SHIBUSDT"] and rules.for_coin("bybit", "SHIB") is None
    assert rules.for_symbol("binance", "ETHBTC") is None
    # two listings of one coin on a venue: ambiguous, no rule
    plain = InstrumentRule("binance", "SHIBUSDT", "SHIB", "USDT", D(1), D(1), D(5))
    assert InstrumentRules([binance["1000SHIBUSDT"], plain]).for_coin("binance", "SHIB") is None


def test_the_books_units_are_the_symbols_the_state_divides_only_prices():
    """What the conversion rests on: a 1000SHIBUSDT book's quantities stay in 1,000-SHIB units in the
    cross-venue state (its sweep notional is price x qty in the book's units) while its prices become
    per coin; so a coin step is ÷ 1000 to step the book's quantities."""
    state = CrossVenueState(CrossVenueParams(venues=("binance", "okx"), sweep_notional_usd=100.0))
    t = 1_790_000_000_000
    book = BookEvent("binance", "1000SHIBUSDT", t, ((0.0101, 20_000.0),), ((0.0102, 20_000.0),))
    state.feed([book])
    leg = state.coins["SHIB"].legs["binance"]
    assert leg.multiplier == 1000 and leg.bid == pytest.approx(0.0101 / 1000)  # per coin
    assert leg.sweep_bid.qty == pytest.approx(100 / 0.0101)  # in 1000SHIBUSDT units, as the book


def test_rules_as_plain_data_and_a_file(tmp_path):
    rules = InstrumentRules(
        [
            *parse_binance(binance_body()),
            *parse_bybit(fixture("bybit_instruments_linear.json")),
            *parse_okx(okx_swap_body()),
        ]
    )
    path = tmp_path / "rules.json"
    rules.save(path)
    again = InstrumentRules.load(path)
    assert again == rules and again.to_dict() == rules.to_dict() and again.digest() == rules.digest()
    assert again.for_symbol("okx", "BTCUSDT").contract_value == D("0.01")
    first = json.loads(path.read_text())["rules"][0]  # sorted by venue and symbol; decimals as strings
    assert (first["venue"], first["symbol"], first["lot_step"]) == ("binance", "1000SHIBUSDT", "1000")
    # the digest changes with a rule
    changed = copy.deepcopy(rules.to_dict())
    for item in changed["rules"]:
        if item["venue"] == "okx":
            item["lot_step"] = "0.01"
    assert InstrumentRules.from_dict(changed).digest() != rules.digest()
    with pytest.raises(InstrumentRulesError):
        InstrumentRules.from_dict({"version": 99, "rules": []})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InstrumentRulesError, match="bad.json"):
        InstrumentRules.load(tmp_path / "bad.json")
