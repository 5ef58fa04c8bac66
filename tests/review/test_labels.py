"""Outcome labels (`review.labels`) against hand computations: a known trade with a partial exit, fees,
a funding settlement inside the 12 h window and one outside it, and an unrealized rest at 12 h; a
vetoed signal's hypothetical position; the cases that get no label."""

from __future__ import annotations

import pytest

from execution.client_ids import client_order_id, position_id
from execution.config import ExecutorConfig
from review.labels import (
    HOUR_MS,
    Fill,
    LabelParams,
    PricePath,
    Sample,
    Settlement,
    classify,
    label_sample,
    label_samples,
    samples_from_records,
    settlements_from_marks,
)

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
# an outcome.labels record (tests/schemas/test_schemas.py round-trips every topic's sample)
OUTCOME_LABEL = {
    "source": "paper",
    "sample_kind": "trade",
    "sample_id": "pos-abc",
    "horizon_h": 12,
    "strategy": "v53",
    "config_hash": "h",
    "config_rev": 2,
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "direction": "LONG",
    "taken": True,
    "position_id": "pos-abc",
    "t0": T0,
    "price_at_horizon": 104.0,
    "qty_open": 1.0,
    "realized_pnl": 10.0,
    "unrealized_pnl": 4.0,
    "fees": 0.155,
    "funding": 0.0105,
    "net_pnl": 13.8345,
    "basis": 200.0,
    "net_roi": 0.0691725,
    "threshold": 0.005,
    "label": "pos",
    "computed_at": T0 + 13 * 3_600_000,
}
H = HOUR_MS
NOW = T0 + 100 * H

# LONG 2 @ 100 (fee 0.1), half sold @ 110 at +5 h (fee 0.055); the rest open at 12 h
TRADE_FILLS = (
    Fill(T0, "BUY", 100.0, 2.0, 0.1),
    Fill(T0 + 5 * H, "SELL", 110.0, 1.0, 0.055),
    Fill(T0 + 20 * H, "SELL", 90.0, 1.0, 0.045),  # after 12 h: not in the 12 h label
)
SETTLEMENTS = (
    Settlement(T0, 0.0003, 100.0),  # at t0, not after it: not charged
    Settlement(T0 + 8 * H, 0.0001, 105.0),  # 1 open: pays 1 x 105 x 0.0001 = 0.0105
    Settlement(T0 + 16 * H, 0.0002, 108.0),  # outside 12 h; in 24 h: 1 x 108 x 0.0002 = 0.0216
    Settlement(T0 + 28 * H, 0.0005, 95.0),  # in 36 h, but flat by then: 0
)
# the last trade at or before t0 + 12 h is 104 (11 h); one a millisecond later is 200
PRICES = PricePath(
    [T0, T0 + 11 * H, T0 + 12 * H + 1, T0 + 23 * H, T0 + 24 * H + 10, T0 + 35 * H, T0 + 36 * H + 10],
    [100.0, 104.0, 200.0, 97.0, 97.5, 96.5, 96.2],
)


def trade(**kw) -> Sample:
    base = dict(
        kind="trade",
        sample_id="pos-1",
        strategy="s",
        config_hash="h",
        exchange="binance",
        symbol="BTCUSDT",
        direction="LONG",
        t0_ms=T0,
        fills=TRADE_FILLS,
        taken=True,
        position_id="pos-1",
    )
    return Sample(**(base | kw))


def test_known_trade_at_12h_equals_the_hand_computation():
    got = label_sample(trade(), 12, PRICES, SETTLEMENTS, LabelParams(), NOW)
    assert got is not None
    realized = (110 - 100) * 1.0
    unrealized = (104 - 100) * 1.0
    fees = 0.1 + 0.055
    funding = 1 * 105 * 0.0001
    net = realized + unrealized - fees - funding  # 13.8345
    assert got.price_at_horizon == 104.0
    assert got.qty_open == 1.0
    assert got.realized_pnl == pytest.approx(realized)
    assert got.unrealized_pnl == pytest.approx(unrealized)
    assert got.fees == pytest.approx(fees)
    assert got.funding == pytest.approx(funding)
    assert got.net_pnl == pytest.approx(net)
    assert got.basis == pytest.approx(200.0)
    assert got.net_roi == pytest.approx(net / 200.0)
    assert got.label == "pos"


def test_known_trade_at_24h_and_36h_takes_the_later_exit_and_settlements():
    got = {
        lab.horizon_h: lab
        for lab in label_samples(
            [trade()], {("binance", "BTCUSDT"): PRICES}, {("binance", "BTCUSDT"): SETTLEMENTS}, LabelParams(), NOW
        )
    }
    assert set(got) == {12, 24, 36}
    for h in (24, 36):
        lab = got[h]
        assert lab.qty_open == 0
        assert lab.unrealized_pnl == 0
        assert lab.realized_pnl == pytest.approx(10.0 + (90 - 100) * 1.0)
        assert lab.fees == pytest.approx(0.1 + 0.055 + 0.045)
        assert lab.funding == pytest.approx(0.0105 + 0.0216)
        assert lab.net_pnl == pytest.approx(0.0 - 0.2 - 0.0321)
        # -0.2321 / 200 = -0.116 %: inside +-0.5 %
        assert lab.label == "neutral"


def test_per_strategy_threshold_decides_the_label():
    strict = LabelParams(thresholds={"s": 0.001})
    lab = label_sample(trade(), 24, PRICES, SETTLEMENTS, strict, NOW)
    assert lab is not None and lab.threshold == 0.001 and lab.label == "neg"
    assert classify(0.005, 0.005) == "pos" and classify(-0.005, 0.005) == "neg" and classify(0.0049, 0.005) == "neutral"


def test_short_position_funding_sign_and_leverage_basis():
    fills = (Fill(T0, "SELL", 100.0, 1.0, 0.05),)
    lab = label_sample(
        trade(direction="SHORT", fills=fills, leverage=5.0),
        12,
        PRICES,
        (Settlement(T0 + 8 * H, -0.0002, 102.0),),
        LabelParams(),
        NOW,
    )
    assert lab is not None
    # short: (100 - 104) x 1 = -4; a negative rate is paid by shorts: 1 x 102 x 0.0002 = 0.0204
    assert lab.unrealized_pnl == pytest.approx(-4.0)
    assert lab.funding == pytest.approx(0.0204)
    assert lab.basis == pytest.approx(100.0 / 5.0)
    assert lab.net_roi == pytest.approx((-4.0 - 0.05 - 0.0204) / 20.0)
    assert lab.label == "neg"


def test_no_label_before_the_horizon_past_the_data_or_across_a_gap():
    assert label_sample(trade(), 12, PRICES, (), LabelParams(), T0 + 12 * H - 1) is None
    assert label_sample(trade(), 12, PRICES, (), LabelParams(), T0 + 12 * H) is not None
    short_data = PricePath([T0, T0 + 11 * H], [100.0, 104.0])  # no trade at or after t0 + 12 h
    assert label_sample(trade(), 12, short_data, (), LabelParams(), NOW) is None
    late = PricePath([T0, T0 + 11 * H, T0 + 13 * H], [100.0, 104.0, 105.0])  # none in the hour from 12 h on
    assert label_sample(trade(), 12, late, (), LabelParams(), NOW) is None
    gap = PricePath([T0, T0 + 10 * H, T0 + 12 * H + H // 2], [100.0, 104.0, 105.0])  # newest before 12 h is 2 h old
    assert label_sample(trade(), 12, gap, (), LabelParams(), NOW) is None
    assert label_sample(trade(), 12, None, (), LabelParams(), NOW) is None


def test_settlements_take_the_newest_mark_before_the_funding_time():
    f = T0 + 8 * H
    marks = [
        {"event_time": f - 2000, "next_funding_time": f, "funding_rate": 0.0001, "mark_price": 100.0},
        {"event_time": f - 1000, "next_funding_time": f, "funding_rate": 0.0002, "mark_price": 101.0},
        {"event_time": f, "next_funding_time": f + 8 * H, "funding_rate": 0.0003, "mark_price": 102.0},
    ]
    assert settlements_from_marks(reversed(marks)) == [
        Settlement(f, 0.0002, 101.0),
        Settlement(f + 8 * H, 0.0003, 102.0),
    ]


def _signal(sid: str, **kw) -> dict:
    return {
        "signal_id": sid,
        "strategy": "s",
        "config_hash": "h",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "direction": "SHORT",
        "tier": "standard",
        "price": 50.0,
        "risk_distance": 2.0,
        "eval_time": T0,
        "factors": {},
    } | kw


def test_vetoed_signal_is_a_hypothetical_taker_entry_of_the_executor_size():
    [sample] = samples_from_records([_signal("sig-v")], [], [], ExecutorConfig())
    assert not sample.taken and sample.kind == "signal"
    # 10,000 x 2 % x 1.0 = 200 USDT of risk over a 2.0 risk distance = 100; taker 0.05 % of 5,000
    assert sample.fills == (Fill(T0, "SELL", 50.0, 100.0, 2.5),)
    prices = PricePath([T0, T0 + 12 * H], [50.0, 49.0])
    lab = label_sample(sample, 12, prices, (Settlement(T0 + 4 * H, -0.0001, 50.5),), LabelParams(), NOW)
    assert lab is not None
    funding = 100 * 50.5 * 0.0001  # a short pays a negative rate
    assert lab.unrealized_pnl == pytest.approx(100.0)
    assert lab.fees == pytest.approx(2.5)
    assert lab.funding == pytest.approx(funding)
    assert lab.net_roi == pytest.approx((100.0 - 2.5 - funding) / 5000.0)
    assert lab.label == "pos"
    heavy = samples_from_records([_signal("sig-h", factors={"risk_multiplier": 2.0})], [], [], ExecutorConfig())
    assert heavy[0].fills[0].qty == pytest.approx(200.0)


def test_a_label_carries_the_revision_of_its_signal():
    prices = PricePath([T0, T0 + 12 * H], [50.0, 49.0])
    for record, rev in ((_signal("sig-r", config_rev=4), 4), (_signal("sig-0"), 0)):  # 0: signals before revisions
        [sample] = samples_from_records([record], [], [], ExecutorConfig())
        lab = label_sample(sample, 12, prices, (), LabelParams(), NOW)
        assert lab is not None and lab.config_rev == rev


def test_taken_signal_and_its_trade_share_the_position_fills():
    sid = "s:h:binance:BTCUSDT:1:LONG"
    pid = position_id(sid)
    opened = {
        "position_id": pid,
        "signal_id": sid,
        "strategy": "s",
        "config_hash": "h",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "direction": "LONG",
        "event_time": T0 + 1000,
    }
    fills = [
        {
            "client_order_id": client_order_id(sid, "entry"),
            "side": "BUY",
            "price": 100.0,
            "qty": 2.0,
            "fee": 0.1,
            "event_time": T0 + 1000,
        },
        {
            "client_order_id": client_order_id(sid, "tp1"),
            "side": "SELL",
            "price": 110.0,
            "qty": 1.0,
            "fee": 0.055,
            "event_time": T0 + 5 * H,
        },
        {
            "client_order_id": client_order_id("other", "entry"),
            "side": "BUY",
            "price": 1.0,
            "qty": 1.0,
            "fee": 0.0,
            "event_time": T0,
        },
    ]
    samples = samples_from_records([_signal(sid, direction="LONG", eval_time=T0)], [opened], fills, ExecutorConfig())
    by_kind = {s.kind: s for s in samples}
    assert by_kind["signal"].taken and by_kind["signal"].position_id == pid
    assert by_kind["trade"].sample_id == pid and by_kind["trade"].t0_ms == T0 + 1000
    assert len(by_kind["signal"].fills) == len(by_kind["trade"].fills) == 2
