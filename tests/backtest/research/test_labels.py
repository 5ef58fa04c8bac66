"""Research labels on hand-built price paths: first touch decides, horizons, missing data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.research.labels import PricePath, barrier_labels, forward_returns, label_columns

T = 1_700_006_400_000  # whole seconds
MIN = 60_000


def path(points, end_ms=None):
    times, prices = zip(*points)
    return PricePath.from_trades(np.array(times), np.array(prices), end_ms)


def y(p, direction=1, entry=100.0, atr=1.0, at=T):
    return barrier_labels(np.array([at]), np.array([entry]), np.array([atr]), np.array([direction]), p)[0]


def test_long_target_before_stop_is_one_and_stop_first_is_zero():
    # entry 100, ATR 1: target 102, stop 99
    up = path(
        [(T + 1_000, 100.5), (T + 10 * MIN, 101.9), (T + 20 * MIN, 102.0), (T + 30 * MIN, 98.0)], T + 2 * 3_600_000
    )
    assert y(up) == 1.0  # 102 reached (at the level counts) before 98
    down = path([(T + 1_000, 99.5), (T + 5 * MIN, 99.0), (T + 20 * MIN, 103.0)], T + 2 * 3_600_000)
    assert y(down) == 0.0  # 99 touched first; the later +3 does not count


def test_short_is_mirrored():
    p = path([(T + 1_000, 99.0), (T + 2 * MIN, 98.0), (T + 3 * MIN, 101.5)], T + 2 * 3_600_000)
    assert y(p, direction=-1) == 1.0  # 98 = entry - 2 ATR first
    q = path([(T + 1_000, 101.0), (T + 2 * MIN, 97.0)], T + 2 * 3_600_000)
    assert y(q, direction=-1) == 0.0  # 101 = entry + 1 ATR first


def test_only_the_hour_after_the_evaluation_counts():
    late = path([(T + 1_000, 100.0), (T + 60 * MIN, 105.0)], T + 2 * 3_600_000)  # at exactly t + 60 min: outside
    assert y(late) == 0.0
    inside = path([(T + 1_000, 100.0), (T + 60 * MIN - 1, 105.0)], T + 2 * 3_600_000)
    assert y(inside) == 1.0
    before = path([(T - 5_000, 105.0), (T + 1_000, 100.0)], T + 2 * 3_600_000)  # before the evaluation: ignored
    assert y(before) == 0.0


def test_both_levels_in_one_second_are_ordered_by_the_trades():
    first_target = path([(T + 5 * MIN + 100, 102.5), (T + 5 * MIN + 900, 98.0)], T + 2 * 3_600_000)
    assert y(first_target) == 1.0
    first_stop = path([(T + 5 * MIN + 100, 98.0), (T + 5 * MIN + 900, 102.5)], T + 2 * 3_600_000)
    assert y(first_stop) == 0.0


def test_undefined_without_direction_atr_or_enough_data():
    p = path([(T + 1_000, 100.0), (T + 10 * MIN, 100.5)], T + 30 * MIN)  # data ends after 30 min
    assert math.isnan(y(p))  # nothing touched and the hour is not known
    hit = path([(T + 1_000, 100.0), (T + 10 * MIN, 102.0)], T + 30 * MIN)
    assert y(hit) == 1.0  # a touch inside the known part decides
    full = path([(T + 1_000, 100.0)], T + 2 * 3_600_000)
    assert math.isnan(y(full, direction=0))
    assert math.isnan(y(full, atr=float("nan")))
    assert math.isnan(y(full, atr=0.0))
    with pytest.raises(ValueError):
        barrier_labels(np.array([T + 1]), np.array([100.0]), np.array([1.0]), np.array([1]), full)


def test_atr_scales_the_levels():
    p = path([(T + 1_000, 100.0), (T + 10 * MIN, 103.0), (T + 20 * MIN, 97.0)], T + 2 * 3_600_000)
    assert y(p, atr=1.0) == 1.0  # 102 hit at 10 min
    assert y(p, atr=2.0) == 0.0  # 104 never; 98 hit at 20 min


def test_forward_returns_use_the_last_trade_before_each_horizon():
    p = path(
        [(T - 1_000, 100.0), (T + 4 * MIN, 101.0), (T + 5 * MIN, 150.0), (T + 14 * MIN, 99.0), (T + 59 * MIN, 110.0)],
        T + 61 * MIN,
    )
    out = forward_returns(np.array([T]), np.array([100.0]), p)
    assert out["fwd_return_5m"][0] == pytest.approx(0.01)  # the trade at exactly t + 5 min is after it
    assert out["fwd_return_15m"][0] == pytest.approx(-0.01)
    assert out["fwd_return_60m"][0] == pytest.approx(0.10)
    short = forward_returns(np.array([T + 10 * MIN]), np.array([150.0]), p)
    assert math.isnan(short["fwd_return_60m"][0])  # t + 60 min is past the end of the data
    assert short["fwd_return_5m"][0] == pytest.approx(99.0 / 150.0 - 1)


def test_label_columns_for_many_evaluations_at_once():
    rng = np.random.default_rng(5)
    times = T + np.sort(rng.integers(0, 3 * 3_600_000, 20_000))
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, len(times))))
    p = PricePath.from_trades(times, prices)
    evals = np.arange(T + 1_000, T + 3_600_000, 15_000)
    entry = p.price_before(evals)
    atr = np.full(len(evals), 0.3)
    sign = np.where(np.arange(len(evals)) % 2, 1, -1)
    labels = label_columns(evals, entry, atr, sign, p)
    assert set(labels) == {"y_binary_60m", "fwd_return_5m", "fwd_return_15m", "fwd_return_60m"}
    # each label equals the one computed alone from a plain scan of the trades
    for k in range(0, len(evals), 37):
        after = (times >= evals[k]) & (times < evals[k] + 3_600_000)
        moves = (prices[after] - entry[k]) * sign[k]
        hits = np.flatnonzero((moves >= 0.6) | (moves <= -0.3))
        expected = float(moves[hits[0]] >= 0.6) if len(hits) else 0.0
        assert labels["y_binary_60m"][k] == expected
