"""Small confidence-model files for tests: fitted on synthetic rows whose win probability is planted in the
order-book imbalance in the signal's direction (``in_obi`` x ``direction_sign``), written as
``tapeflow model train`` writes them (``backtest.research.model_train.save_model``), so the engine loads
the same format it loads in production.

The features are ones every strategy's evaluations carry (``score``, ``layer_direction``, ``in_obi``,
``in_funding_rate``, ``in_cvd_fast_accel``, ``direction_sign``), drawn over the ranges the test sessions
produce (their books give obi within +-0.6), so the model's p spreads over every band of the size map
at the sessions' signals.

The LightGBM one is checked in (``tests/data/models/lightgbm_obi.json``): the engine tests load it without
importing LightGBM (seconds of import in every test process). Regenerate it with
``.venv/bin/python -m tests.support.confidence_model`` (LightGBM runs deterministic: the same bytes). The
logistic one is fitted when asked for, into a folder under the system's temporary directory named by its
content (concurrent test processes write identical bytes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from stream_apps.core.confidence import FORMAT, PLAN_SIZE_MAP
from stream_apps.core.strategy import StrategyConfig, parse_strategy

FEATURES = ("score", "layer_direction", "in_obi", "in_funding_rate", "in_cvd_fast_accel", "direction_sign")
FOLDER = Path(tempfile.gettempdir()) / "tapeflow-test-models"
CHECKED_IN = Path(__file__).resolve().parent.parent / "data" / "models" / "lightgbm_obi.json"


def synthetic_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``FEATURES`` (some missing) and 0/1 labels with P(win) = sigmoid(6 obi sign + (score - 48) / 8)."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], size=n)
    x = np.column_stack(
        [
            rng.uniform(40, 56, n),
            rng.uniform(30, 55, n),
            rng.uniform(-0.6, 0.6, n),
            rng.uniform(-2e-4, 2e-4, n),
            rng.normal(0, 5, n),
            sign,
        ]
    )
    x[rng.random(n) < 0.1, 2] = np.nan  # a book not yet seen
    x[rng.random(n) < 0.2, 3] = np.nan
    logit = 6.0 * np.nan_to_num(x[:, 2]) * sign + (x[:, 0] - 48.0) / 8.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    return x, y


def _calibration(raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    from sklearn.isotonic import IsotonicRegression

    p = 1.0 / (1.0 + np.exp(-raw))
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist(), "a": 1.0, "b": 0.0}


def document(learner: str = "lightgbm", rows: int = 4000, seed: int = 7) -> dict[str, Any]:
    """A model file's content (the fields the engine reads, as ``model_train.model_document`` writes them)."""
    x, y = synthetic_rows(rows, seed)
    if learner == "lightgbm":
        import lightgbm as lgb

        params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 50, "learning_rate": 0.2}
        params |= {"verbosity": -1, "deterministic": True, "force_row_wise": True, "num_threads": 1, "seed": 0}
        booster = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=30)
        model: dict[str, Any] = {"model": booster.model_to_string()}
        raw = booster.predict(x, raw_score=True)
    else:
        from backtest.research.model import fit_logistic

        fit = fit_logistic(x, y, x[:, -1])
        model = fit.as_dict()
        raw = fit.logit(x, x[:, -1])
    model["calibration"] = _calibration(np.asarray(raw), y)
    return {
        "format": FORMAT,
        "features": list(FEATURES),
        "chosen": learner,
        "models": {learner: model},
        "size_map": [{"above": bound, "multiplier": multiplier} for bound, multiplier in PLAN_SIZE_MAP],
    }


def write(doc: dict[str, Any], path: Path) -> Path:
    """``doc`` as a model file (the JSON of ``model_train.save_model``), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(
        json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8"
    )
    temporary.replace(path)
    return path


@functools.cache
def model_file(learner: str = "lightgbm") -> tuple[Path, str]:
    """The model file of ``document(learner)`` and its sha256 (the LightGBM one checked in)."""
    if learner == "lightgbm":
        path = CHECKED_IN
    else:
        doc = document(learner)
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        path = write(doc, FOLDER / f"{learner}-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json")
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def with_model(base: StrategyConfig, name: str, learner: str = "lightgbm", **model: Any) -> StrategyConfig:
    """``base`` renamed to ``name`` with the test model (``model`` adds keys such as max_size_mult)."""
    path, sha256 = model_file(learner)
    data = {**base.model_dump(mode="json"), "name": name, "model": {"file": str(path), "sha256": sha256, **model}}
    return parse_strategy(data, f"<{name}>")


if __name__ == "__main__":
    print(write(document("lightgbm"), CHECKED_IN))
