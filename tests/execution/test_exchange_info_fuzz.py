"""The broker's REST answers at their edge: `exchangeInfo` filters (execution/exchange_filters.py) and
Binance error bodies (execution/binance_signing.py `classify`).

Why: the broker's start (`execution.safety`) turns `BinanceApiError`, OSError and ValueError into
"cannot reach the exchange ..." and refuses to trade; anything else was a crash, and a filter that
parsed as NaN or a negative step passed the start and then raised decimal.InvalidOperation on the
first order. So any body gives filters that are finite and >= 0 or an `ExchangeInfoError` (a
ValueError) on one line naming the symbol; the real recorded body parses to its filters, and so do
well-formed generated ones.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from execution.binance_signing import ErrorKind, classify
from execution.exchange_filters import ExchangeInfoError, SymbolFilters, parse_exchange_info
from tests.support.fuzz import FUZZ, json_values, mutated, numberish, outcome

PRICE = {"filterType": "PRICE_FILTER", "minPrice": "556.72", "maxPrice": "4529764", "tickSize": "0.10"}
LOT = {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"}
MARKET = {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"}
NOTIONAL = {"filterType": "MIN_NOTIONAL", "notional": "100"}
SYMBOL = {"symbol": "BTCUSDT", "status": "TRADING", "filters": [PRICE, LOT, MARKET, NOTIONAL]}


def _check(body) -> None:
    filters, _ = outcome(parse_exchange_info, body, errors=ExchangeInfoError)
    for f in (filters or {}).values():
        for name in SymbolFilters.__dataclass_fields__:
            value = getattr(f, name)
            assert name == "symbol" or (value.is_finite() and value >= 0), (name, value, body)


@FUZZ
@given(body=json_values)
# found by this property: a body that is not an object raised AttributeError (.get on a list)
@example(body=[])
def test_any_json_body_is_filters_or_an_exchange_info_error(body):
    _check(orjson.loads(orjson.dumps(body)))


symbol_infos = st.one_of(
    mutated(SYMBOL, ["symbol", "filters"], numberish | json_values),
    st.builds(
        lambda fs: {**SYMBOL, "filters": fs},
        st.lists(
            st.sampled_from([PRICE, LOT, MARKET, NOTIONAL]).flatmap(
                lambda f: mutated(f, sorted(f), numberish | json_values)
            ),
            max_size=4,
        ),
    ),
)


@FUZZ
@given(infos=st.lists(symbol_infos, max_size=3))
# found by this property: decimal.InvalidOperation (not a ValueError) escaped the start for a filter
# that is not a number; "NaN" and negative steps were accepted and failed the first order instead
@example(infos=[{**SYMBOL, "filters": [{**PRICE, "tickSize": "abc"}]}])
@example(infos=[{**SYMBOL, "filters": [{**LOT, "stepSize": "NaN"}]}])
@example(infos=[{**SYMBOL, "filters": [{**NOTIONAL, "notional": "-5"}]}])
def test_odd_filters_are_refused_on_one_line(infos):
    _check({"timezone": "UTC", "symbols": infos})


@FUZZ
@given(
    tick=st.decimals(min_value="0.00000001", max_value="1000", places=8),
    step=st.decimals(min_value="0.00000001", max_value="1000", places=8),
    notional=st.decimals(min_value=0, max_value="1000", places=2),
)
def test_well_formed_filters_parse_to_their_values(tick, step, notional):
    body = {
        "symbols": [
            {
                **SYMBOL,
                "filters": [
                    {**PRICE, "tickSize": str(tick)},
                    {**LOT, "stepSize": str(step)},
                    {**NOTIONAL, "notional": str(notional)},
                ],
            }
        ]
    }
    f = parse_exchange_info(orjson.loads(orjson.dumps(body)))["BTCUSDT"]
    assert (f.tick_size, f.step_size, f.market_step_size, f.min_notional) == (
        Decimal(str(tick)),
        Decimal(str(step)),
        Decimal(str(step)),
        Decimal(str(notional)),
    )


@FUZZ
@given(status=st.one_of(st.none(), st.integers(100, 599)), code=st.one_of(st.none(), st.integers(-(2**31), 2**31)))
def test_every_error_answer_has_a_kind(status, code):
    """classify() decides retry/recover/reject for any status and code, never raising."""
    assert isinstance(classify(status, code), ErrorKind)
