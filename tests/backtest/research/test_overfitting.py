"""Deflated Sharpe ratio and PBO (CSCV) against published and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.research.overfitting import (
    deflated_sharpe_of,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    return_moments,
)


def test_worked_example_of_bailey_and_lopez_de_prado_2014():
    # 100 trials whose annualised Sharpe ratios vary by 0.5, the winner 2.5 annualised over 5 years of
    # daily returns (1,250) with skewness -3 and kurtosis 10: SR0 = 0.1132 and DSR = 0.9004 (paper)
    daily_variance, daily_sharpe = 0.5 / 250, 2.5 / math.sqrt(250)
    assert expected_max_sharpe(100, daily_variance) == pytest.approx(0.1132, abs=5e-5)
    assert deflated_sharpe_ratio(daily_sharpe, 100, daily_variance, 1250, -3.0, 10.0) == pytest.approx(0.9004, abs=2e-4)


def test_psr_by_hand():
    # kurtosis 1 and skew 0 make the denominator exactly 1: Z(0.1 * sqrt(100)) = Z(1) = 0.8413447
    assert probabilistic_sharpe_ratio(0.1, 0.0, 101, 0.0, 1.0) == pytest.approx(0.8413447461, abs=1e-9)
    # against a benchmark equal to the Sharpe ratio: one half
    assert probabilistic_sharpe_ratio(0.3, 0.3, 50) == pytest.approx(0.5)
    # one trial: nothing to deflate
    assert deflated_sharpe_ratio(0.1, 1, 0.7, 101, 0.0, 1.0) == pytest.approx(0.8413447461, abs=1e-9)


def test_more_trials_deflate_more():
    values = [deflated_sharpe_ratio(0.1, n, 0.002, 500) for n in (1, 10, 100, 1000)]
    assert values == sorted(values, reverse=True) and values[-1] < values[0]


def test_moments_of_a_return_series_by_hand():
    m = return_moments([1.0, -1.0, 1.0, -1.0])
    assert m.sharpe == pytest.approx(0.0) and m.skew == pytest.approx(0.0) and m.kurtosis == pytest.approx(1.0)
    m = return_moments([2.0, 0.0, 2.0, 0.0])  # mean 1, sample std sqrt(4/3)
    assert m.sharpe == pytest.approx(1 / math.sqrt(4 / 3))
    # the DSR of the winner from its returns and the trials' Sharpe ratios
    winner = [2.0, 0.0, 2.0, 0.0]
    trials = [m.sharpe, 0.2, -0.1]
    expected = deflated_sharpe_ratio(m.sharpe, 3, float(np.var(trials, ddof=1)), 4, m.skew, m.kurtosis)
    assert deflated_sharpe_of(winner, trials) == pytest.approx(expected)


def test_pbo_by_hand_two_configurations():
    # A wins in the first half and loses in the second; B is flat: every split picks the loser
    results = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    out = probability_of_backtest_overfitting(results, blocks=2, metric=lambda b: b.sum(axis=0))
    assert out.splits == 2 and out.pbo == 1.0
    assert out.logits == pytest.approx([math.log(0.5), math.log(0.5)])  # rank 1 of 2: w = 1/3
    # A always better: never overfit
    steady = np.array([[1.0, 0.0]] * 4)
    assert probability_of_backtest_overfitting(steady, blocks=2, metric=lambda b: b.sum(axis=0)).pbo == 0.0


def test_pbo_by_hand_three_configurations_four_blocks():
    # C earns 2 every period; A and B alternate 3/0 and 0/3. Of the 6 splits (2 of 4 rows in sample),
    # {r0, r2} picks A and {r1, r3} picks B, which then rank last out of sample (w = 1/4); the other
    # four pick C, which ranks first (w = 3/4). PBO = 2/6.
    results = np.array([[3.0, 0.0, 2.0], [0.0, 3.0, 2.0], [3.0, 0.0, 2.0], [0.0, 3.0, 2.0]])
    out = probability_of_backtest_overfitting(results, blocks=4, metric=lambda b: b.sum(axis=0))
    assert out.splits == 6
    assert out.pbo == pytest.approx(1 / 3)
    assert sorted(out.logits) == pytest.approx(sorted([math.log(1 / 3)] * 2 + [math.log(3)] * 4))


def test_pbo_of_pure_noise_is_one_half_on_average_and_of_a_real_edge_near_zero():
    # one noise matrix's splits overlap, so its PBO varies a lot; over many it averages one half
    values = [
        probability_of_backtest_overfitting(np.random.default_rng(seed).normal(0, 1, (120, 10)), blocks=6).pbo
        for seed in range(40)
    ]
    assert 0.4 < float(np.mean(values)) < 0.6
    edge = np.random.default_rng(3).normal(0, 1, (400, 20))
    edge[:, 7] += 0.5  # one configuration really is better
    assert probability_of_backtest_overfitting(edge, blocks=8).pbo < 0.05


def test_pbo_rejects_bad_shapes():
    with pytest.raises(ValueError):
        probability_of_backtest_overfitting(np.zeros((10, 1)))
    with pytest.raises(ValueError):
        probability_of_backtest_overfitting(np.zeros((10, 3)), blocks=3)
    with pytest.raises(ValueError):
        probability_of_backtest_overfitting(np.zeros((10, 3)), blocks=16)  # fewer periods than blocks
