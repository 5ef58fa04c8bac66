"""The confidence model: p = P(win | features), fitted and validated without leakage.

Two learners on the same rows (``model_data.Dataset``):

- ``logistic``: L2 logistic regression (scikit-learn, Newton-Cholesky) on standardised features (training
  mean and deviation, clipped at +-5; a missing value is imputed at the mean, i.e. 0) and on each feature
  times ``direction_sign``: a linear model cannot otherwise tell "buy pressure before a long" from "buy
  pressure before a short".
- ``lightgbm``: gradient-boosted trees (LightGBM), missing values handled by the trees; a fixed number
  of rounds (no early stopping, which would pick the rounds on the test fold).

Validation (``cross_validate``): purged K-fold with an embargo (``purged_cv.PurgedKFold``) gives every row
one out-of-fold prediction from a model that never saw its label window; AUC, Brier score and log loss
per fold and pooled. Walk-forward windows (``purged_cv.walk_forward_splits``) give the same metrics for
a model fitted only on the past.

Calibration: isotonic regression (or Platt scaling) fitted on the out-of-fold predictions, the mapping the
saved model applies. Its reliability curve is drawn cross-fitted: each fold's predictions are calibrated
by a mapping fitted on the other folds' predictions only, so the curve is not the calibrator grading its
own training data.

Explanations: LightGBM's gain importances and its exact tree SHAP values (``pred_contrib=True``); for the
logistic regression the SHAP values of a linear model are exact in closed form, coefficient x (value -
training mean), summed over a feature's two terms; both in log-odds. The ``shap`` package is not needed
for either.

Detectors: every metric is computed again without the detector columns; the report gives the AUC
difference.

Size map: the plan's multiplier of a position by p (> 0.85: x1.2; 0.6-0.85: x1.0; 0.4-0.6: x0.5;
< 0.4: skip), written into the model file and tabulated on the out-of-fold predictions.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model_data import Dataset
from .purged_cv import PurgedKFold, walk_forward_splits
from .windows import WalkForwardSpec

# LightGBM's and scikit-learn's OpenMP threads spin while they wait by default: on a machine whose cores are
# busy with other work a fit took 9x its time (4 s -> 38 s measured). Passive waiting, read when the OpenMP
# runtime starts (at the first import of either), costs nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

LEARNERS = ("logistic", "lightgbm")
CALIBRATIONS = ("isotonic", "platt")
SIZE_MAP = ((0.85, 1.2), (0.6, 1.0), (0.4, 0.5), (0.0, 0.0))  # p above the bound -> multiplier
RELIABILITY_BINS = 10
SHAP_ROWS = 5_000
EPS = 1e-6
LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 200,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.5,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "max_bin": 63,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
}
LIGHTGBM_ROUNDS = 100
# Evaluations a second apart are near copies of each other (their features and label windows overlap
# almost entirely), so beyond a few hundred thousand rows a fit learns little more from all of them: a fit
# uses at most MAX_FIT_ROWS of its training rows, evenly spaced in time (after purging). Predictions,
# metrics and calibration use every row.
MAX_FIT_ROWS = 250_000
LOGISTIC_C = 1.0
Z_CLIP = 5.0  # standardised values beyond +-5 sigma are clipped: one outlier must not swing the logit
CALIBRATED_RANGE = (0.001, 0.999)  # a calibrated p is never 0 or 1: isotonic ends at 0/1 on thin tails


def size_multiplier(p: float) -> float:
    """The plan's size multiplier for a win probability ``p``."""
    for bound, multiplier in SIZE_MAP:
        if p > bound:
            return multiplier
    return 0.0


# -- learners --------------------------------------------------------------------------------------------


@dataclass
class LogisticFit:
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray  # of the standardised features
    coef_sign: np.ndarray  # of the standardised features x direction_sign
    intercept: float
    background: np.ndarray  # mean of each design column over the training rows (SHAP's base)

    def design(self, x: np.ndarray, sign: np.ndarray) -> np.ndarray:
        z = np.clip((x - self.mean) / self.scale, -Z_CLIP, Z_CLIP)
        z[np.isnan(z)] = 0.0
        return np.hstack([z, z * sign[:, None]])

    def logit(self, x: np.ndarray, sign: np.ndarray) -> np.ndarray:
        return self.design(x, sign) @ np.concatenate([self.coef, self.coef_sign]) + self.intercept

    def contributions(self, x: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, float]:
        """Exact SHAP values (log-odds) per feature, and the base value (the mean logit)."""
        d = self.design(x, sign)
        w = np.concatenate([self.coef, self.coef_sign])
        phi = (d - self.background) * w
        k = len(self.coef)
        return phi[:, :k] + phi[:, k:], float(self.intercept + self.background @ w)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "coef_sign": self.coef_sign.tolist(),
            "intercept": self.intercept,
            "background": self.background.tolist(),
        }


def fit_logistic(x: np.ndarray, y: np.ndarray, sign: np.ndarray, threads: int | None = None) -> LogisticFit:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column without values in these rows: mean 0, scale 1
        mean = np.nanmean(x, axis=0)
        scale = np.nanstd(x, axis=0)
    mean[np.isnan(mean)] = 0.0
    scale[~(scale > 0)] = 1.0
    blank = LogisticFit(mean, scale, np.empty(0), np.empty(0), 0.0, np.empty(0))
    design = blank.design(x, sign)
    # Newton steps with a Cholesky solve: a handful of iterations where lbfgs took hundreds on the engine's
    # features (scales that differ by orders of magnitude even after standardising heavy tails)
    model = LogisticRegression(C=LOGISTIC_C, solver="newton-cholesky", max_iter=100, tol=1e-5)
    model.fit(design, y)
    coef = model.coef_[0]
    k = x.shape[1]
    return LogisticFit(mean, scale, coef[:k], coef[k:], float(model.intercept_[0]), design.mean(axis=0))


@dataclass
class LightGBMFit:
    booster: Any
    features: int

    def logit(self, x: np.ndarray, sign: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, raw_score=True), dtype=np.float64)

    def contributions(self, x: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, float]:
        out = np.asarray(self.booster.predict(x, pred_contrib=True), dtype=np.float64)
        return out[:, : self.features], float(out[0, -1]) if len(out) else 0.0

    def importances(self) -> np.ndarray:
        gain = np.asarray(self.booster.feature_importance(importance_type="gain"), dtype=np.float64)
        total = gain.sum()
        return gain / total if total > 0 else gain


def fit_lightgbm(
    x: np.ndarray, y: np.ndarray, sign: np.ndarray, threads: int | None = None, seed: int = 0
) -> LightGBMFit:
    return LightGBMFitter(x, y, threads, seed)(np.arange(len(y)))


class LightGBMFitter:
    """LightGBM fits on subsets of one set of rows. The bins (each feature's quantiles, labels not read)
    are computed once over all rows and every fold's training subset reuses them: binning a million rows
    costs as much as a fit, and does not depend on which fold is being tested."""

    def __init__(self, x: np.ndarray, y: np.ndarray, threads: int | None = None, seed: int = 0) -> None:
        import lightgbm as lgb

        self.params = {**LIGHTGBM_PARAMS, "seed": seed, "num_threads": threads or 0}
        binning = {"max_bin": self.params["max_bin"], "verbosity": -1}
        self.data = lgb.Dataset(x, label=y, free_raw_data=False, params=binning).construct()
        self.features = x.shape[1]

    def __call__(self, rows: np.ndarray) -> LightGBMFit:
        import lightgbm as lgb

        rows = spaced(rows)
        if len(rows) == self.data.num_data():
            subset = self.data
        else:  # an index array: LightGBM takes it as it is (its annotation says list; a list costs 0.3 s a fold)
            subset = self.data.subset(np.sort(rows))  # type: ignore[arg-type]
        return LightGBMFit(lgb.train(self.params, subset, num_boost_round=LIGHTGBM_ROUNDS), self.features)


def spaced(rows: np.ndarray, limit: int | None = None) -> np.ndarray:
    """``rows`` sorted, thinned to at most ``limit`` (default ``MAX_FIT_ROWS``) evenly spaced ones (the
    rows of a dataset are in time order)."""
    limit = MAX_FIT_ROWS if limit is None else limit
    rows = np.sort(rows)
    return rows if len(rows) <= limit else rows[:: -(-len(rows) // limit)]


def fitter(learner: str, data: Dataset, threads: int | None = None, seed: int = 0) -> Callable[[np.ndarray], Any]:
    """A function that fits ``learner`` on the rows it is given (indices into ``data``)."""
    if learner == "lightgbm":
        return LightGBMFitter(data.x, data.y, threads, seed)
    if learner == "logistic":

        def fit(rows: np.ndarray) -> LogisticFit:
            rows = spaced(rows)
            return fit_logistic(data.x[rows], data.y[rows], data.sign[rows], threads)

        return fit
    raise ValueError(f"learner {learner!r}: use one of {', '.join(LEARNERS)}")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


# -- metrics and calibration -----------------------------------------------------------------------------


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    """AUC (None with one class), Brier score and log loss of probabilities ``p`` for labels ``y``."""
    from sklearn.metrics import roc_auc_score

    q = np.clip(p, EPS, 1 - EPS)
    both = 0 < int(y.sum()) < len(y)
    return {
        "rows": len(y),
        "positives": int(y.sum()),
        "auc": float(roc_auc_score(y, p)) if both else None,
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))),
    }


@dataclass
class Calibrator:
    """A monotone map of raw probabilities: isotonic (piecewise linear through ``x``/``y``) or Platt
    (``sigmoid(a * logit(p) + b)``), clipped into ``CALIBRATED_RANGE``."""

    method: str
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    a: float = 1.0
    b: float = 0.0

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=np.float64)
        if self.method == "isotonic":
            out = np.interp(p, self.x, self.y)
        else:
            z = np.log(np.clip(p, EPS, 1 - EPS) / (1 - np.clip(p, EPS, 1 - EPS)))
            out = sigmoid(self.a * z + self.b)
        return np.clip(out, *CALIBRATED_RANGE)

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": self.x, "y": self.y, "a": self.a, "b": self.b}


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return Calibrator("isotonic", iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist())
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        z = np.log(np.clip(p, EPS, 1 - EPS) / (1 - np.clip(p, EPS, 1 - EPS)))
        lr = LogisticRegression(C=1e6, max_iter=200).fit(z[:, None], y)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    raise ValueError(f"calibration {method!r}: use one of {', '.join(CALIBRATIONS)}")


def reliability(y: np.ndarray, p: np.ndarray, bins: int = RELIABILITY_BINS) -> list[dict[str, float | int]]:
    """Equal-width bins of predicted probability: rows, mean prediction, observed win rate (empty bins left out)."""
    which = np.minimum((np.clip(p, 0, 1) * bins).astype(np.int64), bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        n = int(inside.sum())
        if n:
            out.append(
                {
                    "bin": b,
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "rows": n,
                    "predicted": float(p[inside].mean()),
                    "observed": float(y[inside].mean()),
                }
            )
    return out


def size_table(y: np.ndarray, p: np.ndarray) -> list[dict[str, Any]]:
    """Rows, win rate and mean p in each band of the size map."""
    out = []
    upper = 1.0
    for bound, multiplier in SIZE_MAP:
        inside = (p > bound) & (p <= upper) if bound > 0 else p <= upper
        n = int(inside.sum())
        out.append(
            {
                "band": f"{bound:.2f} < p <= {upper:.2f}" if bound > 0 else f"p <= {upper:.2f}",
                "multiplier": multiplier,
                "rows": n,
                "win_rate": float(y[inside].mean()) if n else None,
                "mean_p": float(p[inside].mean()) if n else None,
            }
        )
        upper = bound
    return out


# -- validation ------------------------------------------------------------------------------------------


@dataclass
class Validation:
    """Out-of-fold predictions of one learner on one feature set, with per-fold metrics."""

    learner: str
    oof: np.ndarray  # raw probability per row (NaN: in no test fold)
    folds: list[dict[str, Any]]
    fold_of: np.ndarray  # fold index per row
    pooled: dict[str, Any]  # metrics over every row with a prediction


def cross_validate(
    data: Dataset,
    learner: str,
    splitter: Any,
    *,
    threads: int | None = None,
    on_fit: Callable[[str], None] | None = None,
    fit: Callable[[np.ndarray], Any] | None = None,
) -> Validation:
    """Out-of-fold predictions of ``learner`` over ``splitter``'s folds (any scikit-learn splitter: the
    purged one, or the naive one to show what it leaks), metrics per fold and pooled."""
    fit = fit or fitter(learner, data, threads)
    oof = np.full(len(data), np.nan)
    fold_of = np.full(len(data), -1, dtype=np.int64)
    folds = []
    for k, (train, test) in enumerate(splitter.split(data.x)):
        if on_fit:
            on_fit(f"{learner} fold {k + 1}")
        y_train = data.y[train]
        if len(train) == 0:
            raise ValueError(
                f"fold {k + 1}: no training rows are left after purging and the embargo (the range is too short "
                "for this many folds with this label window)"
            )
        if y_train.min() == y_train.max():
            raise ValueError(f"fold {k + 1}: the training rows after purging have one class only")
        model = fit(train)
        oof[test] = sigmoid(model.logit(data.x[test], data.sign[test]))
        fold_of[test] = k
        row = metrics(data.y[test], oof[test])
        row.update(
            fold=k + 1,
            train_rows=len(train),
            purged_rows=len(data) - len(train) - len(test),
            test_from_ms=int(data.t0[test].min()),
            test_to_ms=int(data.t0[test].max()),
        )
        folds.append(row)
    done = ~np.isnan(oof)
    return Validation(learner, oof, folds, fold_of, metrics(data.y[done], oof[done]))


def cross_fitted_calibration(v: Validation, y: np.ndarray, method: str) -> np.ndarray:
    """Each fold's out-of-fold predictions calibrated by a map fitted on the other folds' only."""
    out = np.full(len(y), np.nan)
    for k in np.unique(v.fold_of[v.fold_of >= 0]):
        own = v.fold_of == k
        other = (v.fold_of >= 0) & ~own
        out[own] = fit_calibrator(v.oof[other], y[other], method)(v.oof[own])
    return out


def walk_forward(
    data: Dataset,
    learner: str,
    spec: WalkForwardSpec,
    from_ms: int,
    to_ms: int,
    *,
    threads: int | None = None,
    on_fit: Callable[[str], None] | None = None,
    fit: Callable[[np.ndarray], Any] | None = None,
) -> list[dict[str, Any]]:
    """Metrics of a model fitted on each window's (purged) training rows, on its test rows."""
    out = []
    fit = fit or fitter(learner, data, threads)
    for window, train, test in walk_forward_splits(spec, data.t0, data.t1, from_ms, to_ms):
        y_train = data.y[train]
        if y_train.min() == y_train.max():
            continue
        if on_fit:
            on_fit(f"{learner} walk-forward window {window.index}")
        model = fit(train)
        p = sigmoid(model.logit(data.x[test], data.sign[test]))
        row = metrics(data.y[test], p)
        row.update(
            window=window.index,
            train_rows=len(train),
            train_from_ms=window.train_start,
            train_to_ms=window.train_end,
            test_from_ms=window.test_start,
            test_to_ms=window.test_end,
        )
        out.append(row)
    return out


def shap_summary(model: Any, data: Dataset, rows: int = SHAP_ROWS, seed: int = 0) -> dict[str, Any]:
    """Mean |SHAP| per feature (log-odds) on a sample of rows, with how the SHAP value moves with the
    feature (Spearman-like: the correlation of ranks; + = higher value, higher p)."""
    n = len(data)
    index = np.sort(np.random.default_rng(seed).choice(n, size=min(n, rows), replace=False))
    phi, base = model.contributions(data.x[index], data.sign[index])
    out: list[dict[str, Any]] = []
    for j, name in enumerate(data.features):
        values = data.x[index, j]
        present = ~np.isnan(values)
        trend = None
        if present.sum() > 2 and np.ptp(values[present]) > 0 and np.ptp(phi[present, j]) > 0:
            ranks = np.argsort(np.argsort(values[present])).astype(np.float64)
            trend = float(np.corrcoef(ranks, phi[present, j])[0, 1])
        out.append({"feature": name, "mean_abs": float(np.abs(phi[:, j]).mean()), "trend": trend})
    out.sort(key=lambda r: -r["mean_abs"])
    check = float(np.max(np.abs(phi.sum(axis=1) + base - model.logit(data.x[index], data.sign[index]))))
    return {"rows": len(index), "base": base, "features": out, "additivity_error": check}


def coefficient_importances(model: LogisticFit) -> np.ndarray:
    """|coefficient| of each standardised feature plus |coefficient| of its direction term, as shares."""
    weight = np.abs(model.coef) + np.abs(model.coef_sign)
    total = weight.sum()
    return weight / total if total > 0 else weight


def purged_splitter(data: Dataset, folds: int, embargo_ms: int) -> PurgedKFold:
    return PurgedKFold(folds, data.t0, data.t1, embargo_ms)


def finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
