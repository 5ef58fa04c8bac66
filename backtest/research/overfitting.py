"""Overfitting guards: the deflated Sharpe ratio and the probability of backtest overfitting (CSCV).

Why hand-written: both are a few lines of published formulas, and the libraries that carry them are
either a heavy stack for two functions (skfolio has a deflated Sharpe ratio, but pulls in cvxpy,
scikit-learn and scipy, and has no PBO) or young single-release packages without a track record
(``deflated-sharpe`` 0.1.0; ``pypbo`` is not on PyPI). The normal distribution comes from the
standard library (``statistics.NormalDist``). Both functions are checked in the tests against the
worked example of Bailey & López de Prado (2014) and against values computed by hand.

- Probabilistic Sharpe ratio (Bailey & López de Prado 2012): the probability that the true Sharpe
  ratio exceeds ``benchmark`` given the observed one over ``n`` returns with skewness ``skew`` and
  (non-excess) kurtosis ``kurtosis``:
  PSR = Z[(SR - SR*) sqrt(n - 1) / sqrt(1 - skew SR + (kurtosis - 1)/4 SR^2)].
- Deflated Sharpe ratio (Bailey & López de Prado 2014): PSR against the Sharpe ratio that the best
  of ``n_trials`` unskilled trials would show, SR0 = sqrt(V) ((1 - g) Z^-1[1 - 1/N] + g Z^-1[1 - 1/(N e)])
  with V the variance of the trials' Sharpe ratios and g the Euler-Mascheroni constant.
- PBO by combinatorially symmetric cross-validation (Bailey, Borwein, López de Prado & Zhu 2015): the
  T x N matrix of per-period results of N configurations is cut into S blocks of rows; for every way
  of taking S/2 blocks as in-sample, the configuration best in sample is ranked out of sample; PBO is
  the share of splits where it lands in the bottom half (logit of its relative rank <= 0).

All Sharpe ratios here are per period (not annualised): SR, V and n must use the same period.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def probabilistic_sharpe_ratio(
    sharpe: float, benchmark: float, n: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """P(true SR > ``benchmark``) for an observed per-period ``sharpe`` over ``n`` returns."""
    if n < 2:
        raise ValueError("the probabilistic Sharpe ratio needs at least 2 returns")
    spread = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if spread <= 0:
        raise ValueError("skewness and kurtosis give a non-positive variance of the Sharpe ratio")
    return _NORMAL.cdf((sharpe - benchmark) * math.sqrt(n - 1) / math.sqrt(spread))


def expected_max_sharpe(n_trials: int, trial_variance: float) -> float:
    """SR0: the Sharpe ratio the best of ``n_trials`` trials with true SR 0 is expected to show."""
    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    if n_trials == 1:
        return 0.0
    z = _NORMAL.inv_cdf
    return math.sqrt(trial_variance) * (
        (1.0 - EULER_GAMMA) * z(1.0 - 1.0 / n_trials) + EULER_GAMMA * z(1.0 - 1.0 / (n_trials * math.e))
    )


def deflated_sharpe_ratio(
    sharpe: float, n_trials: int, trial_variance: float, n: int, skew: float = 0.0, kurtosis: float = 3.0
) -> float:
    """P(true SR > 0) for the best of ``n_trials`` configurations, whose Sharpe ratios have variance
    ``trial_variance``; ``sharpe``, ``skew``, ``kurtosis`` and ``n`` describe the winner's returns."""
    return probabilistic_sharpe_ratio(sharpe, expected_max_sharpe(n_trials, trial_variance), n, skew, kurtosis)


@dataclass(frozen=True)
class ReturnMoments:
    sharpe: float  # mean / standard deviation (ddof=1), per period
    skew: float
    kurtosis: float  # non-excess (3 for a normal distribution)
    n: int


def return_moments(returns: Sequence[float] | np.ndarray) -> ReturnMoments:
    """Per-period Sharpe ratio, skewness and kurtosis (population moments) of a return series."""
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        raise ValueError("moments need at least 2 returns")
    std = float(r.std(ddof=1))
    centred = r - r.mean()
    m2 = float(np.mean(centred**2))
    if std == 0 or m2 == 0:
        return ReturnMoments(0.0, 0.0, 3.0, len(r))
    return ReturnMoments(
        float(r.mean()) / std, float(np.mean(centred**3)) / m2**1.5, float(np.mean(centred**4)) / m2**2, len(r)
    )


def deflated_sharpe_of(winner: Sequence[float] | np.ndarray, trial_sharpes: Sequence[float]) -> float:
    """DSR of the winner's per-period returns, given every trial's per-period Sharpe ratio."""
    m = return_moments(winner)
    trials = np.asarray(trial_sharpes, dtype=np.float64)
    variance = float(trials.var(ddof=1)) if len(trials) > 1 else 0.0
    return deflated_sharpe_ratio(m.sharpe, len(trials), variance, m.n, m.skew, m.kurtosis)


def sharpe_metric(block: np.ndarray) -> np.ndarray:
    """Per-column mean / standard deviation (ddof=1); 0 where a column does not vary."""
    std = block.std(axis=0, ddof=1)
    mean = block.mean(axis=0)
    return np.divide(mean, std, out=np.zeros_like(mean), where=std > 0)


@dataclass(frozen=True)
class PBOResult:
    pbo: float  # share of splits whose in-sample winner ranks in the bottom half out of sample
    logits: np.ndarray  # logit of the winner's relative out-of-sample rank, per split
    splits: int


def probability_of_backtest_overfitting(
    results: np.ndarray,
    blocks: int = 16,
    metric: Callable[[np.ndarray], np.ndarray] = sharpe_metric,
) -> PBOResult:
    """PBO by CSCV of a (periods x configurations) matrix of per-period results.

    Rows are cut into ``blocks`` (even) contiguous groups of equal size (the first ``T mod blocks``
    rows are dropped). For every choice of half of the groups as in-sample, the configuration with
    the best ``metric`` in sample (the first on ties) is ranked out of sample among all N (rank 1 =
    worst, ties share their average rank); its relative rank w = rank / (N + 1) gives the logit
    ln(w / (1 - w)). PBO = share of splits with logit <= 0.
    """
    m = np.asarray(results, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("PBO needs a periods x configurations matrix with at least 2 configurations")
    if blocks < 2 or blocks % 2:
        raise ValueError("blocks must be an even number of at least 2")
    rows = m.shape[0] - m.shape[0] % blocks
    if rows < blocks:
        raise ValueError(f"PBO needs at least {blocks} periods for {blocks} blocks")
    groups = np.split(m[m.shape[0] - rows :], blocks)
    n = m.shape[1]
    logits = []
    for chosen in combinations(range(blocks), blocks // 2):
        inside = np.concatenate([groups[g] for g in chosen])
        outside = np.concatenate([groups[g] for g in range(blocks) if g not in chosen])
        winner = int(np.argmax(metric(inside)))
        oos = metric(outside)
        rank = float(np.sum(oos < oos[winner]) + (np.sum(oos == oos[winner]) + 1) / 2)
        w = rank / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
    values = np.asarray(logits)
    return PBOResult(float(np.mean(values <= 0)), values, len(values))
