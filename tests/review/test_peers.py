"""Peers' percentiles on a planted set, against hand counts."""

from __future__ import annotations

import pytest

from review.peers import PeerTrade, peers, percentile, regime_of, size_bucket

MIN = 60_000


def _t(i: str, net: float, hold_min: int, *, direction="LONG", regime="volatile", r_usd=200.0, strategy="v53"):
    return PeerTrade(i, strategy, direction, regime, r_usd, net, net * 2.0, hold_min * MIN)


NETS = [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
GROUP = [_t(f"p{k}", n, 10 * (k + 1)) for k, n in enumerate(NETS)]
OTHERS = [
    _t("short1", 5.0, 1, direction="SHORT"),
    _t("quiet1", 5.0, 1, regime="quiet"),
    _t("big1", 5.0, 1, r_usd=400.0),
    _t("other-strategy", 5.0, 1, strategy="v51"),
]


def test_percentiles_in_the_full_group_are_mid_ranks_of_the_peers():
    me = _t("me", 0.2, 30)
    out = peers(me, [me, *GROUP, *OTHERS])
    assert out.group == "strategy=v53, direction=LONG, regime=volatile, size=normal" and out.fallback is None
    assert out.count == 12
    assert out.net_r_percentile == pytest.approx(100 * (5 + 0.5) / 12)  # five below, one equal
    assert out.roi_percentile == pytest.approx(100 * (5 + 0.5) / 12)
    assert out.holding_percentile == pytest.approx(100 * (2 + 0.5) / 12)  # 10 and 20 min below, 30 equal
    assert out.win_rate == pytest.approx(8 / 12)
    assert out.median_net_r == pytest.approx((0.2 + 0.3) / 2)


def test_a_small_group_falls_back_to_a_coarser_one_and_says_so():
    me = _t("me", 1.0, 5, direction="SHORT")  # one SHORT peer: direction cannot be kept
    out = peers(me, [me, *GROUP, *OTHERS])
    assert out.level == 3 and out.group == "strategy=v53"
    assert "direction, regime, size dropped" in out.fallback
    assert out.count == 15  # every other v53 trade
    assert out.net_r_percentile == pytest.approx(100 * 12 / 15)  # the 12 of GROUP below, 3 fives above


def test_labels():
    assert regime_of({"atr_percentile": 10.0}) == "quiet"
    assert regime_of({"atr_percentile": 50.0}) == "normal"
    assert regime_of({"atr_percentile": 90.0}) == "volatile"
    assert regime_of({"regime": "whale_pump", "atr_percentile": 90.0}) == "whale_pump"
    assert regime_of(None) == "unknown"
    assert [size_bucket(r, 200.0) for r in (100.0, 200.0, 260.0)] == ["small", "normal", "large"]
    assert percentile(1.0, []) is None
