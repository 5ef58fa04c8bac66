"""``train``: both learners validated, calibrated, explained and fitted on every row; ``save_model`` and
``load_model``: the model file the engine can load later.

The model file (JSON, named ``model-<first 16 hex of its SHA-256>.json``, so a file is its content):
format, the strategy and its config hash, target and label window, the feature list (in the order
``predict`` takes them), the data window (range, rows, symbols, SHA-256 of the training matrix), the
chosen learner and both learners' parameters (the logistic regression's standardisation and
coefficients; LightGBM's own text model), each learner's calibration map, the cross-validation results,
the size map, and the library versions it was fitted with. No pickle: loading a model runs no code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .model import (
    CALIBRATIONS,
    LEARNERS,
    SIZE_MAP,
    Calibrator,
    LightGBMFit,
    LogisticFit,
    coefficient_importances,
    cross_fitted_calibration,
    cross_validate,
    fit_calibrator,
    fitter,
    metrics,
    purged_splitter,
    reliability,
    shap_summary,
    sigmoid,
    size_table,
    walk_forward,
)
from .model_data import Dataset
from .windows import WalkForwardSpec

FORMAT = "tapeflow-confidence-model/1"


@dataclass(frozen=True)
class TrainOptions:
    folds: int = 5
    embargo_ms: int = 3_600_000
    calibration: str = "isotonic"
    walk_forward: WalkForwardSpec | None = None
    ablation: bool = True  # also without the detector columns
    learners: tuple[str, ...] = LEARNERS
    threads: int | None = None
    seed: int = 0


@dataclass
class Trained:
    """What ``train`` produced: the report document and the fitted models (for the model file)."""

    doc: dict[str, Any]
    fits: dict[str, Any]
    calibrators: dict[str, Calibrator]


def _learner_report(
    data: Dataset,
    learner: str,
    options: TrainOptions,
    fit: Callable[[np.ndarray], Any],
    on_fit: Callable[[str], None] | None,
) -> tuple[dict[str, Any], Calibrator]:
    """Purged cross-validation, calibration and reliability of one learner on all features."""
    splitter = purged_splitter(data, options.folds, options.embargo_ms)
    v = cross_validate(data, learner, splitter, threads=options.threads, on_fit=on_fit, fit=fit)
    done = v.fold_of >= 0
    calibrated = cross_fitted_calibration(v, data.y, options.calibration)
    calibrator = fit_calibrator(v.oof[done], data.y[done], options.calibration)
    y, raw, cal = data.y[done], v.oof[done], calibrated[done]
    return {
        "folds": v.folds,
        "pooled": v.pooled,
        "calibrated": metrics(y, cal),
        "reliability_raw": reliability(y, raw),
        "reliability_calibrated": reliability(y, cal),
        "size_bands": size_table(y, cal),
    }, calibrator


def _ablation(
    data: Dataset, learner: str, options: TrainOptions, full_auc: float | None, on_fit: Callable[[str], None] | None
) -> dict[str, Any]:
    """Pooled out-of-fold AUC without the detector columns, on the same purged folds."""
    detector = data.detector_features
    if not detector:
        return {"detector_features": [], "auc_with": full_auc, "auc_without": None, "auc_difference": None}
    reduced = data.without(detector)
    splitter = purged_splitter(reduced, options.folds, options.embargo_ms)
    labelled = None if on_fit is None else (lambda what: on_fit(f"{what} without detectors"))
    v = cross_validate(reduced, learner, splitter, threads=options.threads, on_fit=labelled)
    without = v.pooled["auc"]
    return {
        "detector_features": detector,
        "auc_with": full_auc,
        "auc_without": without,
        "auc_difference": None if full_auc is None or without is None else full_auc - without,
        "log_loss_without": v.pooled["log_loss"],
    }


def _explain(learner: str, model: Any, data: Dataset, seed: int) -> dict[str, Any]:
    if learner == "lightgbm":
        shares = model.importances()
        kind = "gain share"
    else:
        shares = coefficient_importances(model)
        kind = "|standardised coefficient| share (feature + its direction term)"
    order = np.argsort(-np.asarray(shares), kind="stable")
    importances = [{"feature": data.features[j], "importance": float(shares[j])} for j in order]
    return {"importance_kind": kind, "importances": importances, "shap": shap_summary(model, data, seed=seed)}


def train(
    data: Dataset,
    options: TrainOptions,
    from_ms: int,
    to_ms: int,
    on_fit: Callable[[str], None] | None = None,
) -> Trained:
    """Validate, calibrate and explain every learner of ``options``; fit each on every row (see the module
    docstrings of ``model`` and this one)."""
    if options.calibration not in CALIBRATIONS:
        raise ValueError(f"calibration {options.calibration!r}: use one of {', '.join(CALIBRATIONS)}")
    learners: dict[str, Any] = {}
    fits: dict[str, Any] = {}
    calibrators: dict[str, Calibrator] = {}
    for learner in options.learners:
        fit = fitter(learner, data, options.threads, options.seed)
        report, calibrators[learner] = _learner_report(data, learner, options, fit, on_fit)
        if options.ablation:
            report["detectors"] = _ablation(data, learner, options, report["pooled"]["auc"], on_fit)
        if options.walk_forward is not None:
            report["walk_forward"] = walk_forward(
                data, learner, options.walk_forward, from_ms, to_ms, threads=options.threads, on_fit=on_fit, fit=fit
            )
        if on_fit:
            on_fit(f"{learner} on every row")
        fits[learner] = fit(np.arange(len(data)))
        report.update(_explain(learner, fits[learner], data, options.seed))
        learners[learner] = report
    chosen = min(learners, key=lambda name: learners[name]["calibrated"]["log_loss"])
    doc = {
        "format": FORMAT,
        "target": data.target,
        "horizon_ms": data.horizon_ms,
        "features": data.features,
        "detector_features": data.detector_features,
        "dropped_features": data.dropped,
        "data": {
            "from_ms": from_ms,
            "to_ms": to_ms,
            "rows": len(data),
            "positives": int(data.y.sum()),
            "symbols": sorted({str(s) for s in data.symbols}),
            "sha256": data.digest(),
        },
        "validation": {
            "method": "purged k-fold",
            "folds": options.folds,
            "embargo_ms": options.embargo_ms,
            "walk_forward": None if options.walk_forward is None else str(options.walk_forward),
            "calibration": options.calibration,
        },
        "learners": learners,
        "chosen": chosen,
        "size_map": [{"above": bound, "multiplier": multiplier} for bound, multiplier in SIZE_MAP],
    }
    return Trained(doc, fits, calibrators)


# -- the model file --------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import lightgbm
    import sklearn

    return {"scikit-learn": sklearn.__version__, "lightgbm": lightgbm.__version__, "numpy": np.__version__}


def model_document(trained: Trained, strategy: dict[str, str]) -> dict[str, Any]:
    """Everything the model file holds (see the module docstring). No creation time: the same data and
    settings give the same fits (LightGBM runs deterministic) and so the same file."""
    params: dict[str, Any] = {}
    for learner, fit in trained.fits.items():
        if isinstance(fit, LightGBMFit):
            params[learner] = {"model": fit.booster.model_to_string()}
        else:
            params[learner] = fit.as_dict()
        params[learner]["calibration"] = trained.calibrators[learner].as_dict()
    return {**trained.doc, "strategy": strategy, "versions": _versions(), "models": params}


def save_model(document: dict[str, Any], directory: Path) -> Path:
    """Write the model file, named by its content's SHA-256 (an identical model is the same file)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    name = f"model-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    temporary = directory / f".{name}.tmp"
    temporary.write_text(text + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


@dataclass
class LoadedModel:
    """A model file ready to predict: ``predict(x, sign)`` with ``x`` in the file's feature order."""

    document: dict[str, Any]
    learner: str
    fit: Any
    calibrator: Calibrator

    @property
    def features(self) -> list[str]:
        return list(self.document["features"])

    def predict(self, x: np.ndarray, sign: np.ndarray, calibrated: bool = True) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"the model takes {len(self.features)} features per row")
        p = sigmoid(self.fit.logit(x, np.asarray(sign, dtype=np.float64)))
        return self.calibrator(p) if calibrated else p


def load_model(path: Path, learner: str | None = None) -> LoadedModel:
    """A saved model (``learner`` default: the file's chosen one)."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if document.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    name = learner or document["chosen"]
    params = document["models"][name]
    if name == "lightgbm":
        import lightgbm as lgb

        fit: Any = LightGBMFit(lgb.Booster(model_str=params["model"]), len(document["features"]))
    else:
        fit = LogisticFit(
            np.asarray(params["mean"]),
            np.asarray(params["scale"]),
            np.asarray(params["coef"]),
            np.asarray(params["coef_sign"]),
            float(params["intercept"]),
            np.asarray(params["background"]),
        )
    c = params["calibration"]
    return LoadedModel(document, name, fit, Calibrator(c["method"], c["x"], c["y"], c["a"], c["b"]))
