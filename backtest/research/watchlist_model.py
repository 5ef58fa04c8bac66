"""Fitting the watchlist's expected-pnl / win-probability model on recorded cross-venue features
(``stream_apps.watchlist.model`` has the factors and the prediction; this module writes what it reads).

Rows and labels (``label_records``): one xv.features record per ordered venue pair and evaluation
(sell on A, buy on B, at ``t``). Its label is what the hedge entered then and closed ``horizon_ms``
later would have made, as a fraction of notional, from the records alone: entering captures the swept
spread ``s_AB(t)``; closing buys back on A and sells on B, which is the other direction's swept spread
at ``t + H``, ``s_BA(t + H)``; minus the four fees (entry and exit on both legs); plus the funding the
hedge receives at the settlements within ``(t, t + H]`` (the short leg's rate if A settles then, minus
the long leg's if B does, at the rates known at ``t``). A row without its spread, or without the other
direction's spread at ``t + H``, has no label and is not used. Win = label > 0.

Fit (``fit_model``), numpy only (no scikit-learn or statsmodels in the environment, and two small
convex fits do not need them):

- factors standardised with the training rows' mean and σ (ignoring missing ones); a missing factor
  in training is imputed at the mean, as it will be when predicting;
- expected pnl: ridge regression, ``min |y − b0 − Xb|² / n + alpha |b|²`` (intercept not penalised),
  closed form;
- win probability: L2-regularised logistic regression, ``min logloss + l2/2 |c|²`` (intercept not
  penalised), Newton's method;
- out of sample: rows split by time (the last ``test_fraction`` of evaluation times is the test set),
  and the training rows whose label reaches past the split (``t + H`` beyond it) are dropped (an
  embargo: no label overlaps the test period). Reported: R² and rank IC of expected pnl, AUC, Brier
  score and log loss of the win probability, on the test rows, with the base rates.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from stream_apps.cross_venue.events import CrossVenueEvent
from stream_apps.cross_venue.state import CrossVenueParams, CrossVenueState
from stream_apps.watchlist.model import DEFAULT_FACTORS, PairModel, factor_values
from stream_apps.watchlist.records import feature_records


def session_records(
    events: Iterable[CrossVenueEvent], params: CrossVenueParams, sample_ms: int = 15_000
) -> list[dict[str, Any]]:
    """The xv.features records of a session, at the evaluations on a `sample_ms` grid (what the
    watchlist service publishes every ``--publish-interval-ms``)."""
    state = CrossVenueState(params)
    out: list[dict[str, Any]] = []
    last = None
    for event in events:
        last = event.time_ms
        for features in state.feed([event]):
            if features.time_ms % sample_ms == 0:
                out += feature_records(features, params.sweep_notional_usd)
    if last is not None:
        for features in state.advance_to(last):
            if features.time_ms % sample_ms == 0:
                out += feature_records(features, params.sweep_notional_usd)
    return out


def label_records(
    records: Sequence[Mapping[str, Any]], horizon_ms: int, four_fees: Callable[[str, str], float]
) -> tuple[list[Mapping[str, Any]], np.ndarray]:
    """The records that have a label, and their labels (fraction of notional; module docstring)."""
    by_key = {(r["coin"], r["sell_venue"], r["buy_venue"], r["eval_time"]): r for r in records}
    rows: list[Mapping[str, Any]] = []
    labels: list[float] = []
    for r in records:
        s = r.get("spread_sweep")
        if s is None:
            continue
        t, end = r["eval_time"], r["eval_time"] + horizon_ms
        back = by_key.get((r["coin"], r["buy_venue"], r["sell_venue"], end))
        if back is None or back.get("spread_sweep") is None:
            continue
        funding = 0.0
        for side, sign in (("sell", 1.0), ("buy", -1.0)):
            rate, when = r.get(f"{side}_funding_rate"), r.get(f"{side}_next_funding_time")
            if rate is not None and when is not None and t < when <= end:
                funding += sign * rate
        rows.append(r)
        labels.append(s + back["spread_sweep"] - four_fees(r["sell_venue"], r["buy_venue"]) + funding)
    return rows, np.asarray(labels, dtype=float)


def factor_matrix(rows: Sequence[Mapping[str, Any]], factors: Sequence[str]) -> np.ndarray:
    """Rows × factors, NaN where a factor is missing."""
    out = np.full((len(rows), len(factors)), np.nan)
    for i, row in enumerate(rows):
        values, _ = factor_values(row, factors)
        out[i] = [np.nan if v is None else v for v in values]
    return out


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """Intercept and coefficients of ``min |y − b0 − xb|²/n + alpha |b|²`` (x standardised)."""
    n, k = x.shape
    xc = x - x.mean(axis=0)
    b = np.linalg.solve(xc.T @ xc / n + alpha * np.eye(k), xc.T @ (y - y.mean()) / n)
    return float(y.mean() - x.mean(axis=0) @ b), b


def logistic(x: np.ndarray, won: np.ndarray, l2: float, iterations: int = 50) -> tuple[float, np.ndarray]:
    """Intercept and coefficients of ``min mean logloss + l2/2 |c|²`` by Newton's method."""
    n, k = x.shape
    a = np.column_stack([np.ones(n), x])
    w = np.zeros(k + 1)
    penalty = np.diag([0.0] + [l2] * k)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(a @ w, -500, 500)))
        grad = a.T @ (p - won) / n + penalty @ w
        hess = (a * (p * (1 - p))[:, None]).T @ a / n + penalty + 1e-12 * np.eye(k + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return float(w[0]), w[1:]


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    return ranks


def auc(score: np.ndarray, won: np.ndarray) -> float | None:
    """Probability that a random winner scores above a random loser (Mann-Whitney)."""
    pos, neg = int(won.sum()), int(len(won) - won.sum())
    if pos == 0 or neg == 0:
        return None
    ranks = _ranks(score) + 1
    return float((ranks[won == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _split(
    rows: Sequence[Mapping[str, Any]], labels: np.ndarray, horizon_ms: int, n_factors: int, test_fraction: float
) -> tuple[int, np.ndarray, np.ndarray]:
    """The split time and the training and test masks: the last ``test_fraction`` of the distinct
    evaluation times test, and a training row must have its horizon end before the split (the embargo).
    Raises ValueError when either part is too small."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    times = np.array([r["eval_time"] for r in rows], dtype=np.int64)
    if len(rows) != len(labels):
        raise ValueError("one label per row")
    distinct = np.unique(times)
    if len(distinct) < 10:
        raise ValueError(
            f"{len(rows)} labelled rows at {len(distinct)} evaluation times: too few to fit and test "
            "(record a longer session, or a shorter --horizon)"
        )
    split = int(distinct[int(len(distinct) * (1 - test_fraction))])
    train = times + horizon_ms < split
    test = times >= split
    if train.sum() < 2 * n_factors + 2 or test.sum() < 2:
        raise ValueError(
            f"{int(train.sum())} training and {int(test.sum())} test rows after the embargo: too few "
            "(record a longer session, or a shorter --horizon)"
        )
    return split, train, test


def _standardise(raw: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(means, scales, standardised factors) from the training rows; a missing value becomes the mean."""
    # a factor with no training value (funding_8h in a session shorter than its window) is centred on 0
    # and unscaled below; numpy warns on that empty column's mean, which is not a problem to report
    trained = np.where(train[:, None], raw, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.where(np.isnan(raw[train]).all(axis=0), 0.0, np.nanmean(trained, axis=0))
        scales = np.nanstd(trained, axis=0)
    scales = np.where(~np.isfinite(scales) | (scales == 0), 1.0, scales)
    x = np.nan_to_num((raw - means) / scales, nan=0.0)  # missing: the training mean
    return means, scales, x


def _out_of_sample(pred: np.ndarray, prob: np.ndarray, y: np.ndarray, w: np.ndarray) -> dict[str, float | None]:
    """The test part's scores of the predicted P&L ``pred`` and win probability ``prob`` against the
    labels ``y`` and wins ``w``."""
    sst = float(((y - y.mean()) ** 2).sum())
    eps = 1e-12
    return {
        "r2": 1 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else None,
        "rank_ic": float(np.corrcoef(_ranks(pred), _ranks(y))[0, 1]) if np.std(pred) > 0 and np.std(y) > 0 else None,
        "auc": auc(prob, w),
        "brier": float(((prob - w) ** 2).mean()),
        "log_loss": float(-(w * np.log(prob + eps) + (1 - w) * np.log(1 - prob + eps)).mean()),
        "base_win_rate": float(w.mean()),
        "mean_pnl": float(y.mean()),
    }


def fit_model(
    rows: Sequence[Mapping[str, Any]],
    labels: np.ndarray,
    horizon_ms: int,
    fees: float,
    factors: Sequence[str] = DEFAULT_FACTORS,
    alpha: float = 0.01,
    l2: float = 0.01,
    test_fraction: float = 0.3,
) -> PairModel:
    """Fit both models on the training part of `rows` and score them on the test part (module
    docstring); the scores are in the model's ``fit``. Raises ValueError when there is too little data."""
    split, train, test = _split(rows, labels, horizon_ms, len(factors), test_fraction)
    raw = factor_matrix(rows, factors)
    missing_share = np.isnan(raw[train]).mean(axis=0)
    means, scales, x = _standardise(raw, train)
    won = (labels > 0).astype(float)
    b0, b = ridge(x[train], labels[train], alpha)
    c0, c = logistic(x[train], won[train], l2)
    pred = b0 + x[test] @ b
    prob = 1 / (1 + np.exp(-np.clip(c0 + x[test] @ c, -500, 500)))
    scores = _out_of_sample(pred, prob, labels[test], won[test])
    fit = {
        "rows": len(rows),
        "train_rows": int(train.sum()),
        "test_rows": int(test.sum()),
        "embargoed_rows": int((~train & ~test).sum()),
        "split_time_ms": split,
        "alpha": alpha,
        "l2": l2,
        "test_fraction": test_fraction,
        "train_win_rate": float(won[train].mean()),
        "missing_share": {f: float(m) for f, m in zip(factors, missing_share)},
        "out_of_sample": {k: (None if v is None or not math.isfinite(v) else v) for k, v in scores.items()},
    }
    return PairModel(
        tuple(factors),
        tuple(float(v) for v in means),
        tuple(float(v) for v in scales),
        (b0, *map(float, b)),
        (c0, *map(float, c)),
        int(horizon_ms),
        float(fees),
        fit,
    )
