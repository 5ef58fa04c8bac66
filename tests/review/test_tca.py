"""TCA against the mid at send, checked against hand computations."""

from __future__ import annotations

import pytest

from review.tca import Fill, OrderSent, cost_share, slip_bps, tca


def test_slippage_of_known_fills_equals_the_hand_computation():
    orders = [
        OrderSent("e", "entry", "BUY", 1_000, 100.05, "book"),
        OrderSent("x", "tp1", "SELL", 9_000, 101.0, "last_trade"),
        OrderSent("never", "sl", "SELL", 9_500, 99.0, "book"),  # no fill: not in the report
    ]
    fills = [
        Fill("e", 100.10, 0.6, 0.03, "taker", 1_100),
        Fill("e", 100.20, 0.4, 0.02, "taker", 1_200),
        Fill("x", 100.90, 1.0, -0.01, "maker", 9_100),
    ]
    out = tca(orders, fills, gross_r=0.6, fees_r=0.9, funding_r=0.1)
    entry, exit_ = out.orders
    vwap = (0.6 * 100.10 + 0.4 * 100.20) / 1.0
    assert entry.vwap == pytest.approx(vwap)
    assert entry.slip_bps == pytest.approx((vwap - 100.05) / 100.05 * 10_000)  # paid above the mid: worse
    assert exit_.slip_bps == pytest.approx((101.0 - 100.90) / 101.0 * 10_000)  # sold below the mid: worse
    assert exit_.mid_source == "last_trade"
    assert out.maker_share == pytest.approx(1.0 / 2.0)
    assert out.fees_quote == pytest.approx(0.04)
    assert out.cost_share == pytest.approx((0.9 + 0.1) / 0.6)
    assert out.entry_slip_bps == pytest.approx(entry.slip_bps)
    assert out.exit_slip_bps == pytest.approx(exit_.slip_bps)


def test_a_fill_better_than_the_mid_is_negative_and_no_mid_gives_none():
    assert slip_bps("SELL", 101.0, 100.0) == pytest.approx(-100.0)
    assert slip_bps("BUY", 99.0, 100.0) == pytest.approx(-100.0)
    out = tca(
        [OrderSent("e", "entry", "BUY", 0, None, None)],
        [Fill("e", 10.0, 1.0, 0.0, "taker", 1)],
        gross_r=-1.0,
        fees_r=0.0,
        funding_r=0.0,
    )
    assert out.orders[0].slip_bps is None and out.entry_slip_bps is None
    assert cost_share(0.0, 0.1, 0.0) is None
    assert cost_share(-2.0, 0.1, -0.3) == pytest.approx(-0.1)  # funding received offsets fees
