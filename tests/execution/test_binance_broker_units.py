"""Pure parts of the Binance broker: filter rounding, request signing, error classes, reconciliation diff.

Reference values are computed by hand (filters) or independently with `hmac` (signing), plus the
worked example of Binance's own API documentation.
"""

from __future__ import annotations

import hashlib
import hmac
from decimal import Decimal
from urllib.parse import parse_qsl

import orjson
import pytest
from pydantic import SecretStr

from execution.binance_signing import ErrorKind, classify, sign, signed_query
from execution.exchange_filters import FilterViolation, parse_exchange_info, plain
from execution.reconcile import Reconciler, compare
from tests.support.paths import RECORDING

DATA = RECORDING / "session_config_and_rest.txt"


@pytest.fixture(scope="module")
def filters():
    line = DATA.read_text().splitlines()[0]
    return parse_exchange_info(orjson.loads(line.partition(": ")[2]))


def test_real_exchange_info_filters_are_parsed(filters):
    btc = filters["BTCUSDT"]
    assert (btc.tick_size, btc.step_size, btc.min_qty, btc.min_notional) == (
        Decimal("0.01"),
        Decimal("0.001"),
        Decimal("0.001"),
        Decimal(5),
    )
    assert btc.min_price == Decimal("556.72") and btc.market_step_size == Decimal("0.001")


def test_price_rounding_by_direction(filters):
    btc = filters["BTCUSDT"]
    assert btc.round_price(31999.987, "down") == Decimal("31999.98")
    assert btc.round_price(31999.981, "up") == Decimal("31999.99")
    assert btc.round_price(31999.985, "nearest") == Decimal("31999.98")  # half-even: 3199998.5 -> ...98
    assert btc.round_price("31999.995", "nearest") == Decimal("32000.00")
    assert plain(btc.round_price(32000, "down")) == "32000"
    with pytest.raises(FilterViolation) as exc:
        btc.round_price(500.0)  # minPrice 556.72
    assert exc.value.rule == "min_price"


def test_quantity_rounds_down_to_the_step_and_respects_min_qty(filters):
    btc = filters["BTCUSDT"]
    assert btc.round_qty(0.0129999) == Decimal("0.012")
    assert btc.round_qty(0.1 + 0.2) == Decimal("0.300")  # float residue 0.30000000000000004 does not leak
    assert plain(btc.round_qty(0.1 + 0.2)) == "0.3"
    with pytest.raises(FilterViolation) as exc:
        btc.round_qty(0.0009)
    assert exc.value.rule == "min_qty"


def test_min_notional_and_reduce_only_exemption(filters):
    btc = filters["BTCUSDT"]
    btc.check_notional(Decimal("0.001"), Decimal(5000), reduce_only=False)  # exactly 5
    with pytest.raises(FilterViolation) as exc:
        btc.check_notional(Decimal("0.001"), Decimal("4999.99"), reduce_only=False)  # 4.99999 < 5
    assert exc.value.rule == "min_notional"
    btc.check_notional(Decimal("0.001"), Decimal(100), reduce_only=True)


def test_signature_is_hmac_sha256_hex_rfc4231_vector():
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    assert sign(SecretStr("Jefe"), "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_signed_query_is_the_hmac_of_exactly_what_is_sent():
    secret = SecretStr("s3cr3t")
    q = signed_query(
        {"symbol": "BTCUSDT", "reduceOnly": True, "price": None, "quantity": "0.01"}, secret, 1_700_000_000_000, 4000
    )
    body, _, signature = q.rpartition("&signature=")
    assert body == "symbol=BTCUSDT&reduceOnly=true&quantity=0.01&timestamp=1700000000000&recvWindow=4000"
    assert signature == hmac.new(b"s3cr3t", body.encode(), hashlib.sha256).hexdigest()
    assert dict(parse_qsl(q))["signature"] == signature


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (None, None, ErrorKind.UNKNOWN_STATE),
        (503, -1001, ErrorKind.UNKNOWN_STATE),
        (500, None, ErrorKind.UNKNOWN_STATE),
        (400, -1021, ErrorKind.RETRYABLE),
        (429, -1003, ErrorKind.RETRYABLE),
        (418, -1003, ErrorKind.RETRYABLE),
        (400, -2011, ErrorKind.NOT_FOUND),
        (400, -2013, ErrorKind.NOT_FOUND),
        (400, -4116, ErrorKind.DUPLICATE),
        (400, -2010, ErrorKind.REJECTED),
        (400, -4164, ErrorKind.REJECTED),
        (400, -1111, ErrorKind.REJECTED),
        (400, -5022, ErrorKind.REJECTED),
    ],
)
def test_error_classes(status, code, kind):
    assert classify(status, code) is kind


def test_compare_reports_every_kind_of_difference():
    findings = compare(
        exchange_positions={"BTCUSDT": 0.5, "ETHUSDT": -2.0, "SOLUSDT": 3.0},
        exchange_orders=[
            {
                "clientOrderId": "manual-1",
                "symbol": "BTCUSDT",
                "side": "SELL",
                "type": "LIMIT",
                "origQty": "0.5",
                "price": "60000",
            },
            {
                "clientOrderId": "tfours-en",
                "symbol": "ETHUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "origQty": "1",
                "price": "2000",
            },
        ],
        our_positions={"ETHUSDT": -1.0, "XRPUSDT": 10.0, "SOLUSDT": 3.0},
        our_orders={"tfours-en"},
    )
    kinds = {(f.kind, f.symbol) for f in findings}
    assert kinds == {
        ("orphan_position", "BTCUSDT"),
        ("size_mismatch", "ETHUSDT"),
        ("missing_position", "XRPUSDT"),
        ("orphan_order", "BTCUSDT"),
    }
    assert compare({"BTCUSDT": 0.5}, [], {}, [], adopted={"BTCUSDT": 0.5}) == []


def test_an_adopted_position_is_compared_under_our_own_trades_and_followed_when_it_changes():
    """The exchange nets an adopted orphan and our own position on one symbol into one amount: no
    mismatch is reported for it. When its owner changes or closes it, that is reported once and the
    adoption follows (new amount, or ended)."""

    class Exchange:
        def __init__(self):
            self.amounts = {"BTCUSDT": 0.5}

        def positions(self):
            return dict(self.amounts)

        def open_orders(self):
            return []

        def submit(self, request, now_ms):
            raise AssertionError(f"adopt sends nothing: {request}")

    exchange = Exchange()
    reconciler = Reconciler(exchange, policy="adopt")
    [adopted] = reconciler.run({}, [], 1).findings
    assert (adopted.kind, adopted.outcome) == ("orphan_position", "adopted")
    exchange.amounts["BTCUSDT"] = 0.5 + 0.02  # our own long of 0.02 opened on top
    assert reconciler.run({"BTCUSDT": 0.02}, [], 2).clean
    assert reconciler.run({"BTCUSDT": 0.02}, [], 3).clean  # and not on later runs either
    exchange.amounts["BTCUSDT"] = 0.2 + 0.02  # its owner sold 0.3 of it
    [changed] = reconciler.run({"BTCUSDT": 0.02}, [], 4).findings
    assert (changed.kind, changed.outcome) == ("size_mismatch", "adopted")
    assert reconciler.adopted == {"BTCUSDT": pytest.approx(0.2)}
    assert reconciler.run({"BTCUSDT": 0.02}, [], 5).clean
    exchange.amounts["BTCUSDT"] = 0.02  # closed by its owner
    [ended] = reconciler.run({"BTCUSDT": 0.02}, [], 6).findings
    assert ended.outcome == "adoption_ended" and reconciler.adopted == {}
    exchange.amounts["BTCUSDT"] = 0.0  # our position closed too
    assert reconciler.run({}, [], 7).clean
