"""False-discovery control across the variants of a search: stationary-bootstrap p-values and
Benjamini–Hochberg q-values.

Why: a search tries hundreds of variants and keeps the best; some look profitable by luck alone. The
deflated Sharpe ratio and PBO judge the winner; these two say how many of all the variants tried hold up:

- ``bootstrap_p_value``: for one variant's net R per trade (in entry order), the one-sided p-value of
  "mean net R per trade > 0" by the stationary bootstrap (Politis & Romano 1994). Trades of one
  strategy are not independent (a trending day makes many winners in a row), so resamples are made of
  blocks whose lengths are geometric with mean ``block`` (default ``n ** (1/3)``, the usual rate for
  the mean) starting at uniform positions, wrapping around the end. The null is imposed by centring
  the trades on their mean; p = (1 + #{resampled mean >= observed mean}) / (B + 1), which is never 0.
  A variant with fewer than 2 trades gets p = 1 (no evidence).
- ``benjamini_hochberg``: q-values (Benjamini & Hochberg 1995, the step-up procedure in its adjusted
  p-value form): sort the m p-values ascending, q_(i) = min over j >= i of min(1, p_(j) m / j). A
  variant with q <= alpha is a discovery at false-discovery rate alpha; counting them is the BH test.

Deterministic: the bootstrap takes its seed as an argument (a search derives it from the trial's slot,
so every worker of a shared study computes the same p-value for a trial).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 999


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH q-values, in the input order (NaN in, NaN out; NaNs do not count among the m tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if len(ok) == 0:
        return q
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def discoveries(q_values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> int:
    """How many q-values are at most ``alpha`` (the variants that survive at that false-discovery rate)."""
    q = np.asarray(q_values, dtype=np.float64)
    return int(np.count_nonzero(q <= alpha))


def default_block(n: int) -> float:
    """Mean block length of the stationary bootstrap for a mean of ``n`` values: n^(1/3), at least 1."""
    return max(1.0, float(n) ** (1.0 / 3.0))


def stationary_indices(n: int, resamples: int, block: float, rng: np.random.Generator) -> np.ndarray:
    """``resamples`` x ``n`` indices of stationary-bootstrap resamples of a series of length ``n``: each
    position starts a new block with probability 1/``block`` (always the first), a block starts at a
    uniform position and continues with the next index, wrapping at the end."""
    if n < 1 or resamples < 1:
        raise ValueError("the stationary bootstrap needs a non-empty series and at least one resample")
    if block < 1:
        raise ValueError("the mean block length must be at least 1")
    new = rng.random((resamples, n)) < 1.0 / block
    new[:, 0] = True
    starts = rng.integers(0, n, size=(resamples, n))
    positions = np.arange(n)
    last_start = np.maximum.accumulate(np.where(new, positions, 0), axis=1)
    rows = np.arange(resamples)[:, None]
    return (starts[rows, last_start] + positions - last_start) % n


def bootstrap_p_value(
    values: Sequence[float] | np.ndarray,
    *,
    seed: int,
    resamples: int = DEFAULT_RESAMPLES,
    block: float | None = None,
    chunk: int = 100,
) -> float:
    """One-sided p-value of "mean > 0" for ``values`` in time order (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or np.isnan(x).any():
        raise ValueError("the bootstrap needs a one-dimensional series without NaN")
    n = len(x)
    if n < 2:
        return 1.0
    observed = float(x.mean())
    centred = x - observed
    length = default_block(n) if block is None else float(block)
    rng = np.random.default_rng(seed)
    at_least = 0
    tolerance = 1e-12 * max(1.0, abs(observed))  # a resample equal to the observed mean up to rounding counts
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        means = centred[stationary_indices(n, count, length, rng)].mean(axis=1)
        at_least += int(np.count_nonzero(means >= observed - tolerance))
    p = (1 + at_least) / (resamples + 1)
    return float(min(1.0, p)) if math.isfinite(p) else 1.0
