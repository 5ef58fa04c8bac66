"""Scoring layers, gates and tiers of DESIGN §4, each rule checked on hand-built snapshots."""

from __future__ import annotations

import copy

import pytest

from stream_apps.core.scoring import LONG, SHORT, score
from stream_apps.core.strategy import (
    parse_strategy,
)
from tests.support.scoring import FAST, MID, V51, V52, V53, T, feats


def test_direction_needs_fast_and_mid_cvd_to_agree():
    assert score(feats(LONG), V53).direction == LONG
    assert score(feats(SHORT), V53).direction == SHORT
    mixed = score(feats(LONG, cvd=((FAST, 100.0), (MID, -1.0))), V53)
    assert (mixed.direction, mixed.score, mixed.tier, mixed.block_reason) == (None, 0.0, None, "no_direction")
    zero = score(feats(LONG, cvd=((FAST, 0.0), (MID, 5.0))), V53)
    assert zero.direction is None  # zero is not a direction (the old engine counted it as SHORT)


@pytest.mark.parametrize(
    "large_buy, large_sell, accel, expected_raw",
    [
        (30.0, 0.0, 2.0, 30 + 20 + 5),  # net large flow aligned, acceleration aligned
        (0.0, 0.0, 2.0, 30 + 10 + 5),  # no large trades: "no opposing pressure"
        (10.0, 10.0, -1.0, 30 + 10 + 0),  # balanced, acceleration against
        (5.0, 8.0, 2.0, 30 + 0 + 5),  # net large flow against
        (30.0, 0.0, 0.0, 30 + 20 + 0),  # zero acceleration earns no bonus
    ],
)
def test_direction_layer_points(large_buy, large_sell, accel, expected_raw):
    f = feats(LONG, large_buy_qty_15m=large_buy, large_sell_qty_15m=large_sell, cvd_accel=((FAST, accel),))
    assert score(f, V53).layer_scores["direction"] == expected_raw  # v53 weight 55 = raw max
    assert score(f, V51).layer_scores["direction"] == pytest.approx(45 * expected_raw / 55)
    assert score(f, V52).layer_scores["direction"] == pytest.approx(40 * expected_raw / 55)


@pytest.mark.parametrize(
    "direction, ratio, points",
    [
        (LONG, 0.45, 15),
        (LONG, 0.5, 10),
        (LONG, 0.65, 10),
        (LONG, 0.7, 7),
        (LONG, 0.99, 7),
        (LONG, 1.0, 0),
        (LONG, 1.4, 0),
        (SHORT, 2.1, 15),
        (SHORT, 2.0, 10),
        (SHORT, 1.6, 10),
        (SHORT, 1.5, 7),
        (SHORT, 1.01, 7),
        (SHORT, 1.0, 0),
        (SHORT, 0.5, 0),
    ],
)
def test_crowding_long_short_ratio_is_contrarian(direction, ratio, points):
    f = feats(direction, long_short_ratio=ratio, top_trader_long_share=0.5)  # top trader neutral: 5
    assert score(f, V53).layer_scores["crowding"] == points + 5


@pytest.mark.parametrize(
    "direction, share, points",
    [(LONG, 0.55, 10), (LONG, 0.5, 5), (LONG, 0.45, 0), (SHORT, 0.45, 10), (SHORT, 0.5, 5), (SHORT, 0.55, 0)],
)
def test_crowding_top_trader_long_share(direction, share, points):
    f = feats(direction, long_short_ratio=None, top_trader_long_share=share)
    evaluation = score(f, V53)
    assert evaluation.layer_scores["crowding"] == points
    assert "missing:long_short_ratio" in evaluation.notes
    assert score(f, V51).layer_scores["crowding"] == pytest.approx(20 * points / 25)


@pytest.mark.parametrize("change, points", [(0.05, 15), (0.03, 15), (0.029, 10), (0.0001, 10), (0.0, 5), (-0.02, 5)])
def test_environment_open_interest_change(change, points):
    assert score(feats(LONG, oi_change=change), V53).layer_scores["environment"] == points


def test_missing_inputs_score_zero_with_a_reason():
    f = feats(
        LONG,
        oi_change=None,
        coinbase_premium=None,
        long_short_ratio=None,
        top_trader_long_share=None,
        funding_rate=None,
    )
    evaluation = score(f, V52)
    assert evaluation.layer_scores["environment"] == 0
    assert evaluation.layer_scores["auxiliary"] == 0
    assert evaluation.layer_scores["crowding"] == 0
    assert evaluation.layer_scores["funding"] == 0
    assert set(evaluation.notes) == {
        "missing:oi_change",
        "missing:coinbase_premium",
        "missing:long_short_ratio",
        "missing:top_trader_long_share",
        "missing:funding_rate",
    }
    assert "oi_change" not in evaluation.inputs  # an unavailable input is absent from the record


@pytest.mark.parametrize(
    "premium, long_points, short_points",
    [(0.0006, 5, 0), (0.0005, 2, 2), (0.0, 2, 2), (-0.0005, 2, 2), (-0.0006, 0, 5)],
)
def test_auxiliary_coinbase_premium(premium, long_points, short_points):
    assert score(feats(LONG, coinbase_premium=premium), V53).layer_scores["auxiliary"] == long_points
    assert score(feats(SHORT, coinbase_premium=premium), V53).layer_scores["auxiliary"] == short_points


@pytest.mark.parametrize(
    "price, vwap, large_buy, large_sell, points",
    [
        (30_010.0, 30_000.0, 0.0, 0.0, 15),  # price above VWAP, no large trades against
        (30_010.0, 30_000.0, 5.0, 1.0, 15),
        (29_990.0, 30_000.0, 5.0, 1.0, 0),  # CVD up but price below VWAP: divergence
        (30_010.0, 30_000.0, 1.0, 5.0, 0),  # large orders against the LONG
    ],
)
def test_confirmation_layer(price, vwap, large_buy, large_sell, points):
    f = feats(LONG, last_price=price, vwap_30m=vwap, large_buy_qty_15m=large_buy, large_sell_qty_15m=large_sell)
    assert score(f, V51).layer_scores["confirmation"] == points  # weight 15 = raw max
    assert "confirmation" not in score(f, V53).layer_scores  # v53 has no confirmation layer


@pytest.mark.parametrize(
    "direction, rate, points",
    [
        (LONG, 0.0012, -5),  # extreme, longs crowded and paying: going long is with the crowd
        (LONG, 0.001, -5),  # exactly 0.1 % counts as extreme
        (LONG, -0.0012, 5),  # extreme against the crowd
        (LONG, -0.0005, 5),  # moderate, against the crowd
        (LONG, 0.0005, 0),  # moderate, with the crowd
        (LONG, -0.0002, 0),  # below moderate
        (SHORT, -0.002, -5),
        (SHORT, 0.0003, 5),
        (SHORT, -0.0003, 0),
    ],
)
def test_v52_funding_layer(direction, rate, points):
    assert score(feats(direction, funding_rate=rate), V52).layer_scores["funding"] == points


@pytest.mark.parametrize(
    "symbol, long_usd, short_usd, direction, points",
    [
        ("BTCUSDT", 200_000.0, 400_000.0, LONG, 5),  # ratio 2, total 600k >= 500k
        ("BTCUSDT", 100_000.0, 300_000.0, LONG, 0),  # ratio 3 but total 400k below BTC's 500k floor
        ("ETHUSDT", 100_000.0, 300_000.0, LONG, 5),  # ETH floor 200k
        ("SOLUSDT", 0.0, 150_000.0, LONG, 5),  # only shorts liquidated: ratio infinite
        ("SOLUSDT", 100_000.0, 150_000.0, LONG, 0),  # ratio 1.5 < 2
        ("SOLUSDT", 200_000.0, 100_000.0, SHORT, 5),  # ratio 0.5 <= 0.5
        ("SOLUSDT", 200_000.0, 0.0, SHORT, 5),
        ("SOLUSDT", 120_000.0, 100_000.0, SHORT, 0),
        ("SOLUSDT", 0.0, 0.0, LONG, 0),
    ],
)
def test_v52_liquidation_layer(symbol, long_usd, short_usd, direction, points):
    f = feats(direction, symbol=symbol, liq_long_usd_5m=long_usd, liq_short_usd_5m=short_usd)
    assert score(f, V52).layer_scores["liquidation"] == points


def test_v53_total_by_hand_and_tiers():
    f = feats(LONG)
    evaluation = score(f, V53)
    # direction 30 + 20 + 5 = 55; crowding LS 0.4 -> 15, top 0.6 -> 10 = 25; OI +4 % -> 15; premium 0.1 % -> 5
    assert dict(evaluation.layer_scores) == {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 5}
    assert (evaluation.score, evaluation.tier, evaluation.block_reason, evaluation.gate) == (100, "heavy", None, None)
    # crowding 25 -> 7 + 5 = 12 and OI +1 % -> 10: 55 + 12 + 10 + 5 = 82: standard
    standard = score(feats(LONG, long_short_ratio=0.9, top_trader_long_share=0.5, oi_change=0.01), V53)
    assert (standard.score, standard.tier) == (82, "standard")
    # 55 + 0 + 10 + 2 = 67 < 75
    weak = score(
        feats(LONG, long_short_ratio=1.2, top_trader_long_share=0.45, oi_change=0.01, coinbase_premium=0.0), V53
    )
    assert (weak.score, weak.tier, weak.block_reason) == (67, None, "below_entry")


def test_tier_boundaries_are_inclusive():
    data = {
        "name": "edge",
        "version": "1",
        "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0, "liquidation": 30},
        "thresholds": {"entry": 55, "heavy": 85, "flip": 85},
        "exits": {"sl_atr_mult": 2.0, "tp1_r": 0.75, "tp2_r": 1.5, "timeout_min": 240},
    }
    cfg = parse_strategy(data)
    assert score(feats(LONG), cfg).tier == "standard"  # exactly 55 = entry
    hot = feats(LONG, liq_long_usd_5m=100_000.0, liq_short_usd_5m=900_000.0)
    assert score(hot, cfg).score == 85 and score(hot, cfg).tier == "heavy"  # exactly 85 = heavy


@pytest.mark.parametrize(
    "symbol, overrides, gate",
    [
        ("BTCUSDT", {"atr": 59.0}, "min_atr"),  # 59 / 30000 = 0.197 % < 0.2 %
        ("SOLUSDT", {"atr": 170.0}, "min_atr"),  # 0.567 % < SOL's 0.6 %
        ("BTCUSDT", {"obi": -0.31}, "obi"),  # against a LONG beyond 0.30
        ("SOLUSDT", {"obi": -0.44, "atr": 200.0}, None),  # SOL tolerates up to 0.45
        ("BTCUSDT", {"spot_perp_divergence": -0.0031}, "spot_perp_divergence"),
        ("XRPUSDT", {"spot_perp_divergence": -0.0059}, None),  # XRP threshold 0.6 %
        ("BTCUSDT", {"whale_ratio_15m": -0.51}, "whale_flow"),
        ("ETHUSDT", {"whale_ratio_15m": -0.9}, None),  # the whale gate is BTC only
        ("BTCUSDT", {"obi": None}, "obi"),  # missing gate input: fail closed
        ("BTCUSDT", {"atr": None}, "min_atr"),
        ("BTCUSDT", {"obi": 0.9, "spot_perp_divergence": 0.02, "whale_ratio_15m": 1.0}, None),  # all in favour
    ],
)
def test_v53_gates_veto_with_their_name(symbol, overrides, gate):
    evaluation = score(feats(LONG, symbol=symbol, **overrides), V53)
    assert evaluation.gate == gate
    if gate:
        assert (evaluation.score, evaluation.tier, evaluation.block_reason) == (0.0, None, "gate")
        assert evaluation.raw_score == 100  # the layers are still recorded for auditing
    else:
        assert evaluation.score == 100


def test_gates_mirror_for_short_and_run_in_order():
    assert score(feats(SHORT, obi=0.31), V53).gate == "obi"
    assert score(feats(SHORT, obi=-0.9), V53).gate is None
    assert score(feats(SHORT, whale_ratio_15m=0.6), V53).gate == "whale_flow"
    # several gates fire: the first in order (min_atr, obi, spot_perp_divergence, whale_flow) is named
    assert score(feats(LONG, atr=1.0, obi=-0.9, whale_ratio_15m=-1.0), V53).gate == "min_atr"
    assert score(feats(LONG, obi=-0.9, whale_ratio_15m=-1.0), V53).gate == "obi"


def test_missing_gate_input_can_be_configured_to_pass():
    data = V53.model_dump(mode="json")
    data["gates"]["on_missing_input"] = "pass"
    lenient = parse_strategy(copy.deepcopy(data))
    assert score(feats(LONG, obi=None, spot_perp_divergence=None), lenient).gate is None
    assert lenient.config_hash != V53.config_hash


def test_evaluation_carries_inputs_and_deterministic_ids():
    evaluation = score(feats(LONG), V53)
    assert evaluation.inputs["cvd_fast"] == 100.0 and evaluation.inputs["cvd_mid"] == 400.0
    assert evaluation.inputs["cvd_fast_accel"] == 2.0 and evaluation.inputs["atr_price_ratio"] == 0.005
    assert evaluation.evaluation_id == f"v53:{V53.config_hash}:binance:BTCUSDT:{T}"
    assert evaluation.signal_id == evaluation.evaluation_id + ":LONG"
    assert score(feats(LONG), V53) == evaluation  # pure: same input, same evaluation
    with pytest.raises(TypeError):
        evaluation.layer_scores["direction"] = 0  # read-only
