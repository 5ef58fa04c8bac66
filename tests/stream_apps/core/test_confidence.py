"""The confidence model in the engine core (``stream_apps.core.confidence``): its compiled loop against
LightGBM's and scikit-learn's own predictions, the size map's bounds, the strategy's ``model:`` key
(hash pinned, part of the config_hash, features the strategy can give) and the executor sizing by
``size_mult``."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from stream_apps.core.confidence import PLAN_SIZE_MAP, from_document, load_model
from stream_apps.core.strategy import StrategyConfigError, parse_strategy
from tests.support.confidence_model import FEATURES, document, model_file, synthetic_rows, with_model

BASE = {
    "name": "modelled",
    "version": "1",
    "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
    "warmup": "10m",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "exits": {"sl_atr_mult": 1.5, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 60},
}


def _rows(n=3000, seed=11):
    """Rows over and beyond the training ranges, with NaNs and exact zeros in every column."""
    x, _ = synthetic_rows(n, seed)
    rng = np.random.default_rng(seed)
    x[:, :5] *= rng.uniform(0.5, 1.5, size=(n, 1))
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(x.shape) < 0.03] = 0.0
    x[:, -1] = rng.choice([-1.0, 1.0], size=n)  # the direction is always known
    return x


def test_trees_equal_lightgbms_own_prediction():
    import lightgbm as lgb

    doc = document("lightgbm")
    booster = lgb.Booster(model_str=doc["models"]["lightgbm"]["model"])
    model = from_document(doc)
    x = _rows()
    raw = booster.predict(x, raw_score=True)
    calibration = doc["models"]["lightgbm"]["calibration"]
    expected = np.clip(np.interp(1.0 / (1.0 + np.exp(-raw)), calibration["x"], calibration["y"]), 0.001, 0.999)
    np.testing.assert_allclose(model.predict(x, x[:, -1]), expected, rtol=0, atol=1e-12)
    # uncalibrated: the tree walk gives LightGBM's probability itself
    platt = from_document({**doc, "models": {"lightgbm": {**doc["models"]["lightgbm"], "calibration": _identity()}}})
    np.testing.assert_allclose(platt.predict(x, x[:, -1]), np.clip(booster.predict(x), 0.001, 0.999), atol=1e-12)


def _identity():
    return {"method": "platt", "a": 1.0, "b": 0.0, "x": [], "y": []}


def test_a_tree_model_with_zero_as_missing_follows_lightgbm():
    """LightGBM's third missing-value rule (zero as missing: 0 and NaN go the default side)."""
    import lightgbm as lgb

    x, y = synthetic_rows(3000, 5)
    params = {"objective": "binary", "num_leaves": 15, "verbosity": -1, "zero_as_missing": True, "min_data_in_leaf": 20}
    booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=20)
    doc = {"format": document()["format"], "features": list(FEATURES), "chosen": "lightgbm"}
    doc["models"] = {"lightgbm": {"model": booster.model_to_string(), "calibration": _identity()}}
    rows = _rows()
    np.testing.assert_allclose(from_document(doc).predict(rows, rows[:, -1]), booster.predict(rows), atol=1e-12)


def test_logistic_equals_scikit_learns_predict_proba():
    from sklearn.linear_model import LogisticRegression

    from backtest.research.model import fit_logistic

    x, y = synthetic_rows(3000, 3)
    fit = fit_logistic(x, y, x[:, -1])
    design = fit.design(x, x[:, -1])
    sk = LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=100, tol=1e-5).fit(design, y)
    np.testing.assert_allclose(np.concatenate([fit.coef, fit.coef_sign]), sk.coef_[0])  # the same fit
    doc = {"format": document()["format"], "features": list(FEATURES), "chosen": "logistic"}
    doc["models"] = {"logistic": {**fit.as_dict(), "calibration": _identity()}}
    rows = _rows()
    expected = np.clip(sk.predict_proba(fit.design(rows, rows[:, -1]))[:, 1], 0.001, 0.999)
    np.testing.assert_allclose(from_document(doc).predict(rows, rows[:, -1]), expected, rtol=0, atol=1e-12)


def test_the_file_predicts_what_the_research_code_loads():
    """The engine's arrays and ``model_train.load_model`` (LightGBM's booster, numpy) agree on the same file."""
    from backtest.research.model_train import load_model as research_load

    for learner in ("lightgbm", "logistic"):
        path, sha256 = model_file(learner)
        rows = _rows(500)
        np.testing.assert_allclose(
            load_model(str(path), sha256).predict(rows, rows[:, -1]),
            research_load(path).predict(rows, rows[:, -1]),
            rtol=0,
            atol=1e-12,
        )


def test_a_row_does_not_depend_on_the_rows_beside_it():
    path, sha256 = model_file("lightgbm")
    model = load_model(str(path), sha256)
    rows = _rows(1000)
    whole = model.predict(rows, rows[:, -1])
    for size in (1, 7):
        parts = [model.predict(rows[i : i + size], rows[i : i + size, -1]) for i in range(0, len(rows), size)]
        assert np.array_equal(np.concatenate(parts), whole)


def test_size_map_bounds_belong_to_the_band_below():
    model = load_model(*map(str, model_file("lightgbm")))
    assert [(float(b), float(m)) for b, m in zip(model.size_bounds, model.size_multipliers)] == list(PLAN_SIZE_MAP)
    p = np.array(
        [0.999, np.nextafter(0.85, 1), 0.85, 0.7, np.nextafter(0.6, 1), 0.6, 0.5, np.nextafter(0.4, 1), 0.4, 0.001]
    )
    assert model.size_multiplier(p).tolist() == [1.2, 1.2, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0]


def test_a_model_file_with_another_hash_is_refused(tmp_path):
    path, sha256 = model_file("lightgbm")
    copy = tmp_path / "model.json"
    copy.write_bytes(path.read_bytes())
    ok = parse_strategy({**BASE, "model": {"file": str(copy), "sha256": sha256}})
    assert ok.model is not None and ok.model.compiled.features == FEATURES
    copy.write_bytes(path.read_bytes().replace(b'"chosen":"lightgbm"', b'"chosen": "lightgbm"'))  # one byte more
    with pytest.raises(StrategyConfigError) as error:
        parse_strategy({**BASE, "model": {"file": str(copy), "sha256": sha256}}, "s.yaml")
    message = str(error.value)
    assert message.startswith("s.yaml: model: model file") and hashlib.sha256(copy.read_bytes()).hexdigest() in message
    with pytest.raises(StrategyConfigError, match="cannot read"):
        parse_strategy({**BASE, "model": {"file": str(tmp_path / "absent.json"), "sha256": sha256}})
    with pytest.raises(StrategyConfigError, match="sha256"):
        parse_strategy({**BASE, "model": {"file": str(copy), "sha256": "ABC"}})


def test_the_model_is_part_of_the_config_hash_by_content_not_by_path(tmp_path):
    plain = parse_strategy(BASE)
    path, sha256 = model_file("lightgbm")
    moved = tmp_path / "elsewhere.json"
    moved.write_bytes(path.read_bytes())
    a = parse_strategy({**BASE, "model": {"file": str(path), "sha256": sha256}})
    b = parse_strategy({**BASE, "model": {"file": str(moved), "sha256": sha256}})
    assert a.config_hash == b.config_hash != plain.config_hash
    assert "model" not in plain.model_dump(mode="json")  # a strategy without a model hashes as before
    other_path, other_sha = model_file("logistic")
    c = parse_strategy({**BASE, "model": {"file": str(other_path), "sha256": other_sha}})
    d = parse_strategy({**BASE, "model": {"file": str(path), "sha256": sha256, "max_size_mult": 1.5}})
    assert len({a.config_hash, c.config_hash, d.config_hash}) == 3
    # a dump loads again as the same strategy (revisions are stored as their text)
    assert parse_strategy(json.loads(json.dumps(a.model_dump(mode="json")))).config_hash == a.config_hash


def test_features_the_strategy_cannot_give_are_refused(tmp_path):
    doc = document("lightgbm")
    for name, reason in (
        ("in_vpin", "a detector output and the strategy has no detectors section"),
        ("in_cvd_2h", "needs a CVD window"),
        ("in_cvd_slope_4h", "needs a CVD window"),
        ("in_colour", "not one the engine computes"),
        ("last_price", "not one the engine computes"),
    ):
        bad = {**doc, "features": [name, *doc["features"][1:]]}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(StrategyConfigError, match=reason):
            parse_strategy({**BASE, "model": {"file": str(path), "sha256": sha256}})
    good = {**doc, "features": ["in_cvd_4h", "in_cvd_slope_5m", "in_atr_price_ratio", *doc["features"][3:]]}
    path = tmp_path / "good.json"
    path.write_text(json.dumps(good))
    parse_strategy({**BASE, "model": {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}})


def test_the_executor_sizes_by_size_mult():
    """A position risks 1R x the signal's size_mult; a signal from before size_mult, its tier multiplier."""
    from tests.support.execution import Harness, signal_record

    h = Harness()
    base_r = h.ex.config.base_r_usd
    old = {**signal_record(), "factors": {"direction": 40.0, "risk_multiplier": 1.25}}
    h.signal_rec(old)
    for k, size_mult in enumerate((0.5, 1.8)):
        h.signal_rec({**signal_record(strategy=f"m{k}"), "p_win": 0.9, "size_mult": size_mult})
    h.trade(100.0, h.now + 1000)
    r_usd = {p["strategy"]: p["r_usd"] for p in h.positions("opened")}
    assert r_usd == {"v53": base_r * 1.25, "m0": base_r * 0.5, "m1": base_r * 1.8}


def test_max_size_mult_clamps_the_product():
    from stream_apps.core.engine import Engine
    from tests.stream_apps.core.test_core_engine import FAST, _run, _stream

    clamped = with_model(FAST, "clamped", max_size_mult=1.0)
    signals = _run(Engine([clamped]), _stream(minutes=25), 1000).signals
    assert signals and max(s["size_mult"] for s in signals) == 1.0
    assert any(s["p_win"] > 0.85 for s in signals)  # where the band alone would give 1.2


def test_one_row_is_gathered_as_every_row_is():
    """The live worker's one-row calls read each feature without its column (``atr_price_ratio`` computed at
    the row): the same numbers as the columns of a many-row call, NaNs in the same places."""
    from stream_apps.core.confidence_inputs import feature_matrix
    from stream_apps.core.engine import Engine
    from tests.stream_apps.core.test_core_engine import FAST, _run, _stream

    names = ("score", "raw_score", "layer_direction", "layer_crowding", "direction_sign", "in_atr_price_ratio")
    names += ("in_obi", "in_funding_rate", "in_cvd_fast", "in_large_net_qty_15m", "in_cvd_1h", "in_cvd_slope_30m")
    blocks = [b for t in _run(Engine([FAST]), _stream(minutes=15), 1000).tables for b in t.blocks]
    checked = 0
    for block in blocks:
        rows = np.arange(len(block))
        whole = feature_matrix(names, block.frame, block.scores, FAST, rows)
        single = np.concatenate([feature_matrix(names, block.frame, block.scores, FAST, rows[i : i + 1]) for i in rows])
        assert np.array_equal(whole, single, equal_nan=True)
        checked += int(np.isfinite(whole[:, 5]).sum())
    assert checked > 100  # rows with an ATR ratio were compared


def test_reading_strategies_imports_no_numba():
    """The executor, the UI and the CLI read strategy files (with their `model:` section) and never
    predict: they must not pay numba's import (~0.5 CPU-s per process, every service start)."""
    import subprocess
    import sys

    code = (
        "import sys, execution.service, tapeflow_ui, stream_apps.core.strategy;"
        "print(sorted(m for m in sys.modules if m == 'numba' or m.endswith('confidence_kernels')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
