"""The compiled loops of the confidence model (``core.confidence``): a row's ``p_win`` and size band.

Apart from ``confidence`` so that reading a strategy file (which validates its ``model:`` section with
``confidence``) imports no numba: the executor, the UI and the CLI read strategies and never predict.
The engine imports this module on its first prediction. The rules are ``confidence``'s (its docstring); the packed arrays are ``ConfidenceModel.packed``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernels import cooling, fire

Z_CLIP = 5.0  # a standardised value's clip (backtest.research.model's)
LOGIT_CLIP = 50.0
CALIBRATED_RANGE = (0.001, 0.999)
EPS = 1e-6
ZERO_THRESHOLD = float(np.float32(1e-35))  # LightGBM's kZeroThreshold (a float constant)


@njit(cache=True)
def _tree_sum(
    x, i, roots, split_feature, threshold, default_left, missing_type, left, right, leaf_value
):  # pragma: no cover - compiled
    total = 0.0
    for t in range(roots.shape[0]):
        node = roots[t]
        while node >= 0:
            value = x[i, split_feature[node]]
            kind = missing_type[node]
            if math.isnan(value) and kind != 2:
                value = 0.0
            if (kind == 1 and abs(value) <= ZERO_THRESHOLD) or (kind == 2 and math.isnan(value)):
                node = left[node] if default_left[node] else right[node]
            elif value <= threshold[node]:
                node = left[node]
            else:
                node = right[node]
        total += leaf_value[~node]
    return total


@njit(cache=True)
def _linear(x, i, sign, mean, scale, coef, coef_sign, intercept):  # pragma: no cover - compiled
    total = intercept
    for j in range(coef.shape[0]):
        z = (x[i, j] - mean[j]) / scale[j]
        if math.isnan(z):
            z = 0.0
        elif z > Z_CLIP:
            z = Z_CLIP
        elif z < -Z_CLIP:
            z = -Z_CLIP
        total += z * coef[j] + (z * sign) * coef_sign[j]
    return total


@njit(cache=True, inline="always")
def _sigmoid(z):  # pragma: no cover - compiled
    return 1.0 / (1.0 + math.exp(-min(max(z, -LOGIT_CLIP), LOGIT_CLIP)))


@njit(cache=True)
def _interp(p, xs, ys):  # pragma: no cover - compiled
    """``np.interp(p, xs, ys)`` for one value (its rule: the ends beyond the points, else the line
    between the two points around ``p``, the right one's value when ``p`` is on it)."""
    n = xs.shape[0]
    if n == 1 or p < xs[0]:
        return ys[0]
    if p >= xs[n - 1]:
        return ys[n - 1]
    lo, hi = 0, n - 1  # xs[lo] <= p < xs[hi]: ends at the last point at or below p
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xs[mid] <= p:
            lo = mid
        else:
            hi = mid
    if p == xs[lo]:
        return ys[lo]
    slope = (ys[lo + 1] - ys[lo]) / (xs[lo + 1] - xs[lo])
    value = slope * (p - xs[lo]) + ys[lo]
    if math.isnan(value):
        value = slope * (p - xs[lo + 1]) + ys[lo + 1]
        if math.isnan(value) and ys[lo] == ys[lo + 1]:
            value = ys[lo]
    return value


@njit(cache=True)
def _verdict(x, i, sign, m):  # pragma: no cover - compiled
    """``(p_win, band multiplier)`` of row ``i`` of ``x`` (``ConfidenceModel.packed``: ``m``)."""
    if m[0]:
        raw = _tree_sum(x, i, m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8])
    else:
        raw = _linear(x, i, sign, m[9], m[10], m[11], m[12], m[13])
    p = _sigmoid(raw)
    if m[14]:  # isotonic, else Platt
        q = _interp(p, m[15], m[16])
    else:
        c = min(max(p, EPS), 1.0 - EPS)
        q = _sigmoid(m[17] * math.log(c / (1.0 - c)) + m[18])
    q = min(max(q, CALIBRATED_RANGE[0]), CALIBRATED_RANGE[1])
    return q, _band(q, m[19], m[20])


@njit(cache=True)
def predict_rows(x, sign, m, out, band):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i], band[i] = _verdict(x, i, sign[i], m)


@njit(cache=True)
def cooldown_model_rows(
    times,
    signs,
    scores,
    candidates,
    cooldown_ms,
    flip_threshold,
    timeout_ms,
    state,
    fired,
    flips,
    x,
    x_row,
    m,
    p_win,
    band,
    skipped,
):  # pragma: no cover - compiled
    """``kernels.cooldown_rows`` with the confidence model's veto: a candidate row out of its cooldown is
    judged by the model (features: row ``x_row[i]`` of ``x``); one in the skip band is ``skipped`` and
    starts no cooldown, the others fire. ``p_win``/``band`` are set at the rows judged: the model runs
    only where it decides, however many candidates a cooldown holds."""
    for j in range(candidates.shape[0]):
        i = candidates[j]
        if cooling(times[i], signs[i], state, cooldown_ms):
            continue
        p_win[i], band[i] = _verdict(x, x_row[i], float(signs[i]), m)
        if band[i] <= 0.0:
            skipped[i] = True
            continue
        fired[i] = True
        flips[i] = fire(times[i], signs[i], scores[i], state, flip_threshold, timeout_ms)


@njit(cache=True, inline="always")
def _band(p, bounds, multipliers):  # pragma: no cover - compiled
    """The size map's multiplier of ``p``: the first band (bounds descending) that ``p`` is above, else 0."""
    for k in range(bounds.shape[0]):
        if p > bounds[k]:
            return multipliers[k]
    return 0.0


@njit(cache=True)
def size_map(p, bounds, multipliers, out):  # pragma: no cover - compiled
    for i in range(p.shape[0]):
        out[i] = _band(p[i], bounds, multipliers)
