"""The confidence model in the engine core: ``p_win`` = calibrated P(win | features) and the size it gives.

A strategy may name a model file (``model: {file, sha256}``, ``strategy.ConfidenceModelRef``), the JSON that
``tapeflow model train`` writes (``backtest.research.model_train``, format ``FORMAT``). Loading it here
reads no pickle and imports neither LightGBM nor scikit-learn: the file's numbers become flat arrays
(``ConfidenceModel``) that one compiled loop (``confidence_kernels.predict_rows``) evaluates per row:

- LightGBM: the trees of the file's own text model (``models.lightgbm.model``), node by node
  (``split_feature``, ``threshold``, ``decision_type``, ``left_child``/``right_child``, ``leaf_value``),
  walked as LightGBM's ``NumericalDecision`` walks them: a missing value (NaN) goes the node's default
  side when the node's missing type is NaN, and is read as 0 otherwise; a zero goes the default side when
  the missing type is Zero; else ``value <= threshold`` goes left. The raw score is the sum of the trees'
  leaves in tree order (LightGBM folds its initial score into the first tree).
- logistic: ``intercept + sum(z * coef) + sum(z * sign * coef_sign)`` with ``z`` the standardised value
  clipped at +-5 and a missing value at 0 (``backtest.research.model.LogisticFit``).

Then the sigmoid (argument clipped at +-50) and the file's calibration map (isotonic: ``np.interp``
through its points; Platt: ``sigmoid(a * logit(p) + b)``), clipped into [0.001, 0.999]: the numbers of
``backtest.research.model_train.LoadedModel.predict``. Each row is computed by the same scalar code
whatever the number of rows in the call, so a row's ``p_win`` does not depend on batching (numba without
SVML: no vectorised ``exp`` with other rounding). Tests check the loop against LightGBM's and
scikit-learn's own predictions.

Size: the file's size map (the plan's: p > 0.85 x1.2, > 0.6 x1.0, > 0.4 x0.5, else 0 = skip; a bound
belongs to the band below it, as in the training report's table). The engine multiplies the band's
multiplier with the rules' (the tier multiplier) and clamps the product to ``ConfidenceModelRef.max_size_mult``.

Why hand-rolled: LightGBM's own ``predict`` costs tens of microseconds per call however few the rows (the
live engine evaluates one or two rows a call) and builds Python objects on every call; the walk above is
twenty lines of the format LightGBM documents, and checked against it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .durations import parse_duration_ms

FORMAT = "tapeflow-confidence-model/1"
PLAN_SIZE_MAP = ((0.85, 1.2), (0.6, 1.0), (0.4, 0.5), (0.0, 0.0))  # p above the bound -> multiplier
DEFAULT_MAX_SIZE_MULT = 1.8  # the plan's largest product: the heavy tier's 1.5 x the top band's 1.2
_LEARNERS = ("lightgbm", "logistic")
SIGN_FEATURE = "direction_sign"
STRATEGY_INPUTS = ("cvd_fast", "cvd_mid", "cvd_fast_slope", "cvd_fast_accel", "large_net_qty_15m")
SLOPE_WINDOW_MS = 1_800_000  # the engine always keeps the 30-min CVD's slope and acceleration
_ISOTONIC, _PLATT = 0, 1


class ModelFileError(ValueError):
    """A model file that cannot be used (missing, another hash, not this format); the message says which."""


@dataclass(frozen=True, eq=False)
class ConfidenceModel:
    """A model file as the arrays the compiled loop reads (see the module docstring)."""

    sha256: str
    learner: str
    features: tuple[str, ...]
    # trees: nodes of every tree back to back; a child < 0 is the leaf ~child (leaves back to back too)
    roots: np.ndarray  # int64 per tree: its root node, or ~leaf for a tree of one leaf
    split_feature: np.ndarray  # int64 per node
    threshold: np.ndarray  # float64 per node
    default_left: np.ndarray  # bool per node
    missing_type: np.ndarray  # int64 per node: 0 None, 1 Zero, 2 NaN
    left: np.ndarray  # int64 per node
    right: np.ndarray  # int64 per node
    leaf_value: np.ndarray  # float64 per leaf
    # logistic
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    coef_sign: np.ndarray
    intercept: float
    # calibration
    calibration: int  # _ISOTONIC or _PLATT
    cal_x: np.ndarray
    cal_y: np.ndarray
    cal_a: float
    cal_b: float
    # size map, bounds descending
    size_bounds: np.ndarray
    size_multipliers: np.ndarray

    def predict(self, x: np.ndarray, sign: np.ndarray) -> np.ndarray:
        """Calibrated P(win) of each row of ``x`` (float64, columns in ``features`` order, NaN = missing);
        ``sign`` +1 LONG / -1 SHORT per row (the logistic model's direction terms)."""
        return self.verdicts(x, sign)[0]

    def verdicts(self, x: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(p_win, size map multiplier)`` of each row (``predict``, then ``size_multiplier``, in one call)."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"the model takes {len(self.features)} features per row, got shape {x.shape}")
        from .confidence_kernels import predict_rows

        p, band = np.empty(len(x)), np.empty(len(x))
        predict_rows(x, np.ascontiguousarray(sign, dtype=np.float64), self.packed, p, band)
        return p, band

    @functools.cached_property
    def packed(self) -> tuple[Any, ...]:
        """The arrays and numbers the compiled loop reads, as one tuple (one argument to dispatch)."""
        return (
            self.learner == "lightgbm",
            self.roots,
            self.split_feature,
            self.threshold,
            self.default_left,
            self.missing_type,
            self.left,
            self.right,
            self.leaf_value,
            self.mean,
            self.scale,
            self.coef,
            self.coef_sign,
            self.intercept,
            self.calibration == _ISOTONIC,  # the loop's flag: isotonic, else Platt
            self.cal_x,
            self.cal_y,
            self.cal_a,
            self.cal_b,
            self.size_bounds,
            self.size_multipliers,
        )

    def size_multiplier(self, p: np.ndarray) -> np.ndarray:
        """The size map's multiplier of each probability (0: skip)."""
        from .confidence_kernels import size_map

        out = np.zeros(len(p))
        size_map(np.ascontiguousarray(p, dtype=np.float64), self.size_bounds, self.size_multipliers, out)
        return out


def cvd_feature(name: str) -> tuple[str, int] | None:
    """``("cvd" | "cvd_slope" | "cvd_accel", window_ms)`` of a ``cvd*_<window>`` input name, else None."""
    for prefix in ("cvd_slope_", "cvd_accel_", "cvd_"):
        if name.startswith(prefix):
            try:
                return prefix[:-1], parse_duration_ms(name[len(prefix) :])
            except ValueError:
                return None
    return None


# -- loading -----------------------------------------------------------------------------------------------

_LOADED: dict[str, ConfidenceModel] = {}


def resolve(file: str) -> Path:
    """The model file a strategy names: an absolute path, or a path relative to the working directory."""
    return Path(file).expanduser()


def load_model(file: str, sha256: str) -> ConfidenceModel:
    """The model ``file`` names, refused (``ModelFileError``) unless its content hashes to ``sha256``; parsed
    once per content (a strategy is validated again on every copy and revision switch)."""
    path = resolve(file)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ModelFileError(f"model file {file}: cannot read ({error.strerror or error})") from None
    actual = hashlib.sha256(data).hexdigest()
    # the digest of the bytes (sha256sum), or of the text without its final newline (the digest
    # ``tapeflow model train`` names the file by): both name this content and no other
    if sha256.lower() not in (actual, hashlib.sha256(data.rstrip(b"\n")).hexdigest()):
        raise ModelFileError(
            f"model file {file}: its sha256 is {actual}, the strategy names {sha256}: a model is part of the "
            "strategy's revision, so a changed file needs a new sha256 in the strategy (and a new revision)"
        )
    cached = _LOADED.get(actual)
    if cached is None:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ModelFileError(f"model file {file}: not JSON ({error})") from None
        cached = _LOADED[actual] = from_document(document, actual, str(file))
    return cached


def from_document(document: Any, sha256: str = "", source: str = "<model>") -> ConfidenceModel:
    """A parsed model file as a ``ConfidenceModel`` (its chosen learner)."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"model file {source}: not a {FORMAT} file")
    try:
        learner = document["chosen"]
        params = document["models"][learner]
        features = tuple(str(name) for name in document["features"])
        calibration = params["calibration"]
    except (KeyError, TypeError) as error:
        raise ModelFileError(f"model file {source}: missing {error}") from None
    if learner not in _LEARNERS:
        raise ModelFileError(f"model file {source}: unknown learner {learner!r}")
    size_map = document.get("size_map") or [{"above": b, "multiplier": m} for b, m in PLAN_SIZE_MAP]
    bands = sorted(((float(r["above"]), float(r["multiplier"])) for r in size_map), reverse=True)
    empty = np.empty(0)
    trees = _trees(params["model"], len(features), source) if learner == "lightgbm" else None
    linear = _logistic(params, len(features), source) if learner == "logistic" else None
    nodes = trees or {
        k: np.empty(0, dtype=np.int64) for k in ("roots", "split_feature", "missing_type", "left", "right")
    }
    lin = linear or {"mean": empty, "scale": empty, "coef": empty, "coef_sign": empty, "intercept": 0.0}
    method = calibration.get("method")
    if method not in ("isotonic", "platt"):
        raise ModelFileError(f"model file {source}: unknown calibration {method!r}")
    cal_x = np.asarray(calibration.get("x") or [], dtype=np.float64)
    if method == "isotonic" and (len(cal_x) == 0 or len(cal_x) != len(calibration.get("y") or [])):
        raise ModelFileError(f"model file {source}: an isotonic calibration needs as many x as y points")
    return ConfidenceModel(
        sha256=sha256,
        learner=learner,
        features=features,
        roots=nodes["roots"],
        split_feature=nodes["split_feature"],
        threshold=nodes.get("threshold", empty),
        default_left=nodes.get("default_left", np.empty(0, dtype=np.bool_)),
        missing_type=nodes["missing_type"],
        left=nodes["left"],
        right=nodes["right"],
        leaf_value=nodes.get("leaf_value", empty),
        mean=lin["mean"],
        scale=lin["scale"],
        coef=lin["coef"],
        coef_sign=lin["coef_sign"],
        intercept=float(lin["intercept"]),
        calibration=_ISOTONIC if method == "isotonic" else _PLATT,
        cal_x=cal_x,
        cal_y=np.asarray(calibration.get("y") or [], dtype=np.float64),
        cal_a=float(calibration.get("a", 1.0)),
        cal_b=float(calibration.get("b", 0.0)),
        size_bounds=np.array([b for b, _ in bands], dtype=np.float64),
        size_multipliers=np.array([m for _, m in bands], dtype=np.float64),
    )


def _logistic(params: dict[str, Any], k: int, source: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        name: np.asarray(params[name], dtype=np.float64) for name in ("mean", "scale", "coef", "coef_sign")
    }
    if any(len(out[name]) != k for name in out):
        raise ModelFileError(f"model file {source}: the logistic model's arrays do not have {k} features")
    out["intercept"] = float(params["intercept"])
    return out


def _numbers(fields: dict[str, str], name: str, kind: type) -> list[Any]:
    return [kind(v) for v in fields.get(name, "").split()]


def _trees(text: str, k: int, source: str) -> dict[str, np.ndarray]:
    """LightGBM's text model as node arrays (see ``ConfidenceModel``); numerical splits only."""
    blocks = text.split("end of trees")[0].split("\nTree=")[1:]
    if not blocks:
        raise ModelFileError(f"model file {source}: the LightGBM model has no trees")
    roots: list[int] = []
    feature: list[int] = []
    threshold: list[float] = []
    decision: list[int] = []
    left: list[int] = []
    right: list[int] = []
    leaves: list[float] = []
    for block in blocks:
        fields = dict(line.split("=", 1) for line in block.splitlines()[1:] if "=" in line)
        if int(fields.get("num_cat", "0")) or int(fields.get("is_linear", "0")):
            raise ModelFileError(f"model file {source}: categorical or linear trees are not supported")
        node0, leaf0 = len(feature), len(leaves)
        values = _numbers(fields, "leaf_value", float)
        if int(fields["num_leaves"]) == 1:
            roots.append(~leaf0)
        else:
            roots.append(node0)

            def child(c: int, node0: int = node0, leaf0: int = leaf0) -> int:
                return c + node0 if c >= 0 else ~(~c + leaf0)

            left += [child(c) for c in _numbers(fields, "left_child", int)]
            right += [child(c) for c in _numbers(fields, "right_child", int)]
            feature += _numbers(fields, "split_feature", int)
            threshold += _numbers(fields, "threshold", float)
            decision += _numbers(fields, "decision_type", int)
        leaves += values
    types = np.asarray(decision, dtype=np.int64)
    if (types & 1).any() or (np.asarray(feature, dtype=np.int64) >= k).any():
        raise ModelFileError(
            f"model file {source}: a split the engine cannot read (categorical, or a feature beyond {k})"
        )
    return {
        "roots": np.asarray(roots, dtype=np.int64),
        "split_feature": np.asarray(feature, dtype=np.int64),
        "threshold": np.asarray(threshold, dtype=np.float64),
        "default_left": (types & 2) > 0,
        "missing_type": (types >> 2) & 3,
        "left": np.asarray(left, dtype=np.int64),
        "right": np.asarray(right, dtype=np.int64),
        "leaf_value": np.asarray(leaves, dtype=np.float64),
    }


def file_sha256(path: str | Path) -> str:
    """The sha256 a strategy names for a model file (``tapeflow`` users copy it from here or ``sha256sum``)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
