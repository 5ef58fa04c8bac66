"""The confidence model on synthetic data with known answers (``backtest.research.model``, ``model_train``).

- A planted effect: the win probability is a known logistic function of three of twelve features (one of
  them only through the direction), so the best possible AUC is that of the true probabilities; both
  learners must come within 0.03 of it out of fold, find the three features, and calibrate.
- Overlapping labels and no effect: labels of a random walk 10 steps ahead (neighbouring labels share
  most of their window), features slow random processes unrelated to it. Purged K-fold must give AUC
  0.5 +- 0.03; a shuffled K-fold scores measurably more (the model remembers neighbours), which is why
  ``tapeflow model train`` purges.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from backtest.research.model import (
    cross_validate,
    fit_calibrator,
    reliability,
    sigmoid,
    size_multiplier,
    size_table,
)
from backtest.research.model_data import SIGN_FEATURE, Dataset
from backtest.research.model_train import TrainOptions, load_model, model_document, save_model, train
from backtest.research.purged_cv import NaiveKFold, PurgedKFold
from backtest.research.windows import WalkForwardSpec

HOUR = 3_600_000


def planted(n: int = 30_000, seed: int = 1) -> tuple[Dataset, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 11))
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    truth = sigmoid(1.0 * x[:, 0] - 0.7 * x[:, 1] + 0.6 * sign * x[:, 2] - 0.4)
    y = (rng.random(n) < truth).astype(np.int8)
    x[rng.random(x.shape) < 0.03] = np.nan  # missing inputs, as real feature records have
    names = ["in_obi", "in_vwap_30m", "in_cvd_5m", "in_vpin", "in_wall_bid_usd"] + [f"in_noise_{j}" for j in range(6)]
    t0 = np.arange(n, dtype=np.int64) * 60_000  # an evaluation a minute, labels an hour long
    data = Dataset(
        np.column_stack([x, sign]),
        y,
        t0,
        t0 + HOUR,
        sign,
        np.array(["BTCUSDT"] * n, dtype=object),
        [*names, SIGN_FEATURE],
        "y_binary_60m",
        HOUR,
    )
    return data, truth


def test_a_planted_effect_is_recovered_within_003_of_the_best_possible_auc_and_its_model_file_predicts_it(tmp_path):
    """One training (~11 CPU-s) for both halves: the validation below, then the model file written from it
    (`check_model_file`). Two tests sharing a module fixture trained twice when xdist gave them to two
    workers."""
    data, truth = planted()
    spec = WalkForwardSpec(train_ms=10 * 24 * HOUR, test_ms=2 * 24 * HOUR, step_ms=2 * 24 * HOUR, embargo_ms=HOUR)
    result = train(data, TrainOptions(walk_forward=spec, threads=2), 0, int(data.t0[-1]) + 60_000)
    optimum = roc_auc_score(data.y, truth)
    assert 0.7 < optimum < 0.8
    for learner in ("logistic", "lightgbm"):
        report = result.doc["learners"][learner]
        assert abs(report["pooled"]["auc"] - optimum) < 0.03, learner
        assert len(report["folds"]) == 5 and all(abs(f["auc"] - optimum) < 0.06 for f in report["folds"])
        # purged: each fold lost the hour of rows before it and the hour (+ embargo) after it
        assert all(f["purged_rows"] > 0 for f in report["folds"])
        top = {r["feature"] for r in report["shap"]["features"][:3]}
        assert top == {"in_obi", "in_vwap_30m", "in_cvd_5m"}, learner
        assert report["shap"]["additivity_error"] < 1e-9  # SHAP values add up to the model's log-odds
        # the direction-only effect shows in SHAP but not as a monotone trend in the feature itself
        by_name = {r["feature"]: r for r in report["shap"]["features"]}
        assert by_name["in_obi"]["trend"] > 0.9 and by_name["in_vwap_30m"]["trend"] < -0.9
        assert abs(by_name["in_cvd_5m"]["trend"]) < 0.2
        # calibrated out of fold: every well-filled bin predicts its observed win rate within 0.05
        for b in report["reliability_calibrated"]:
            if b["rows"] >= 1000:
                assert abs(b["predicted"] - b["observed"]) < 0.05, (learner, b)
        assert report["calibrated"]["brier"] < report["pooled"]["brier"] + 0.002
        windows = report["walk_forward"]
        assert len(windows) >= 3 and all(w["train_to_ms"] + HOUR == w["test_from_ms"] for w in windows)
        assert all(abs(w["auc"] - optimum) < 0.08 for w in windows)
    # the detector columns carry nothing here: leaving them out costs (about) no AUC
    detectors = result.doc["learners"]["logistic"]["detectors"]
    assert detectors["detector_features"] == ["in_vpin", "in_wall_bid_usd"]
    assert abs(detectors["auc_difference"]) < 0.01
    check_model_file(data, result, tmp_path)


def test_purged_k_fold_sees_no_effect_where_naive_k_fold_leaks():
    rng = np.random.default_rng(0)
    n, h, phi = 50_000, 10, 0.97
    price = np.cumsum(rng.normal(size=n + h))
    y = (price[h:] > price[:n]).astype(np.int8)  # the next 10 steps: neighbours share their label window
    shocks = rng.normal(size=(n, 5))
    x = np.empty((n, 5))
    x[0] = shocks[0]
    for i in range(1, n):  # slow, unrelated to the price: they only tell where in time a row is
        x[i] = phi * x[i - 1] + np.sqrt(1 - phi**2) * shocks[i]
    t0 = np.arange(n, dtype=np.int64) * 1000
    data = Dataset(
        x, y, t0, t0 + h * 1000, np.ones(n), np.array(["X"] * n, dtype=object), [f"in_f{j}" for j in range(5)], "y", h
    )
    purged = cross_validate(data, "lightgbm", PurgedKFold(5, data.t0, data.t1, embargo_ms=h * 1000)).pooled["auc"]
    naive = cross_validate(data, "lightgbm", NaiveKFold(5, n, seed=0)).pooled["auc"]
    assert abs(purged - 0.5) < 0.03
    assert naive > purged + 0.04, (naive, purged)


def check_model_file(data, result, tmp_path):
    """The model file predicts what was validated and is named by its content."""
    document = model_document(result, {"name": "v53", "config_hash": "abc"})
    path = save_model(document, tmp_path)
    assert path.name.startswith("model-") and path == save_model(document, tmp_path)  # same content, same file
    assert len(list(tmp_path.iterdir())) == 1
    stored = json.loads(path.read_text())
    assert stored["features"] == data.features and stored["data"]["sha256"] == data.digest()
    assert stored["chosen"] in ("logistic", "lightgbm") and stored["versions"]["lightgbm"]
    for learner in ("logistic", "lightgbm"):
        model = load_model(path, learner)
        raw = model.predict(data.x[:500], data.sign[:500], calibrated=False)
        expected = sigmoid(result.fits[learner].logit(data.x[:500], data.sign[:500]))
        assert np.allclose(raw, expected, rtol=0, atol=1e-12)
        assert np.allclose(model.predict(data.x[:500], data.sign[:500]), result.calibrators[learner](expected))
    with pytest.raises(ValueError):
        load_model(path).predict(data.x[:5, :3], data.sign[:5])


def test_size_map_and_calibration_by_hand():
    assert [size_multiplier(p) for p in (0.9, 0.85, 0.7, 0.6, 0.5, 0.4, 0.1)] == [1.2, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0]
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.5, 0.62, 0.9, 0.95])
    bands = size_table(y, p)
    # > 0.85: 0.9, 0.95; (0.6, 0.85]: 0.62; (0.4, 0.6]: 0.5; <= 0.4: 0.1, 0.2, 0.3, 0.35
    assert [b["rows"] for b in bands] == [2, 1, 1, 4] and [b["multiplier"] for b in bands] == [1.2, 1.0, 0.5, 0.0]
    assert [b["win_rate"] for b in bands] == [1.0, 0.0, 1.0, 0.5]
    # isotonic by pool-adjacent-violators on y in p order 0,0,1,1,1,0,1,1: the 0 at 0.62 pools with the
    # three 1s before it (1,1,1,0 -> 0.75); between points the map is linear (0.25: halfway 0 to 0.75);
    # 0 and 1 are kept 0.001 inside (a calibrated p is never certain)
    iso = fit_calibrator(p, y, "isotonic")
    at = np.array([0.1, 0.2, 0.25, 0.3, 0.5, 0.62, 0.9, 0.99])
    assert iso(at) == pytest.approx([0.001, 0.001, 0.375, 0.75, 0.75, 0.75, 0.999, 0.999])
    platt = fit_calibrator(p, y, "platt")
    assert np.all(np.diff(platt(np.linspace(0.01, 0.99, 20))) > 0)
    rows = reliability(y, p, bins=2)
    assert rows == [
        {"bin": 0, "low": 0.0, "high": 0.5, "rows": 4, "predicted": pytest.approx(0.2375), "observed": 0.5},
        {"bin": 1, "low": 0.5, "high": 1.0, "rows": 4, "predicted": pytest.approx(0.7425), "observed": 0.75},
    ]
