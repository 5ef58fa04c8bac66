"""The confidence model's features read from the engine's own columns, and the model's verdict per row.

A model file lists its features by the names of the research table (``backtest.research.dataset``,
which ``tapeflow model train`` fits on): ``score``, ``raw_score``, ``layer_<layer>``, ``direction_sign``
and ``in_<input>`` for every input of a feature record (a ``Features`` field, ``in_cvd_<window>``,
``in_cvd_slope_<window>``, ``in_cvd_accel_<window>``, ``in_atr_price_ratio`` and the strategy's own
``in_cvd_fast``, ``in_cvd_mid``, ``in_cvd_fast_slope``, ``in_cvd_fast_accel``, ``in_large_net_qty_15m``).
Here each name is the same array the engine scored and writes on the feature record, taken at the rows
asked for: the numbers the model sees live and in a backtest are the numbers of the evaluation, and the
numbers it was trained on.

``strategy.StrategyConfig`` refuses, when a strategy is loaded, a model whose features this strategy cannot give
(an unknown name, a CVD window the engine does not keep for it, a detector output without the detector
turned on): a model fitted with a detector and served without it would read NaN where it learnt values.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .confidence import SIGN_FEATURE, STRATEGY_INPUTS, cvd_feature
from .confidence_kernels import cooldown_model_rows
from .features import SCALAR_FIELDS
from .frame import FeatureFrame, duration_name
from .kernels import NONE_TIME
from .scoring import ScoreFrame, strategy_input_columns

if TYPE_CHECKING:
    from .strategy import StrategyConfig


_PLANS: dict[tuple[tuple[str, ...], int, int], list[tuple[str, Any]]] = {}


def _plan(names: tuple[str, ...], cfg: StrategyConfig) -> list[tuple[str, Any]]:
    """Where each feature's column is, worked out once per model and CVD windows: (kind, key) per name."""
    key = (names, cfg.windows.cvd_fast, cfg.windows.cvd_mid)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    plan = []
    for name in names:
        field = name.removeprefix("in_")
        if name in ("score", "raw_score"):
            plan.append((name, None))
        elif name == SIGN_FEATURE:
            plan.append(("sign", None))
        elif name.startswith("layer_"):
            plan.append(("layer", name.removeprefix("layer_")))
        elif field in STRATEGY_INPUTS:
            plan.append(("own", field))
        elif field == "atr_price_ratio":
            plan.append(("atr_price_ratio", None))
        elif field in SCALAR_FIELDS:
            plan.append(("value", field))
        else:
            cvd = cvd_feature(field)
            if cvd is None:  # the strategy's validation refused such a model
                raise KeyError(f"{name}: not a feature the engine computes")
            plan.append(cvd)
    if len(_PLANS) > 256:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def feature_matrix(
    names: tuple[str, ...], frame: FeatureFrame, scores: ScoreFrame, cfg: StrategyConfig, rows: np.ndarray
) -> np.ndarray:
    """The model's features at ``rows`` of a scored frame: one float64 row per evaluation, NaN = missing.

    Values are copied, never computed again: a row's numbers are the evaluation's whatever the rows
    beside it (one row, the live worker's usual call, is gathered without an array per feature)."""
    plan = _plan(names, cfg)
    own = dict(strategy_input_columns(frame, cfg)) if any(kind == "own" for kind, _ in plan) else {}
    values = frame.values  # most features: a Features field, read here without a call per feature
    if len(rows) == 1:  # the live worker's usual call: one value per feature, no column computed for it
        row = int(rows[0])
        return np.array(
            [
                [
                    values[key][row] if kind == "value" else _value_at(kind, key, frame, scores, own, row)
                    for kind, key in plan
                ]
            ],
            dtype=np.float64,
        )
    columns = [values[key] if kind == "value" else _column(kind, key, frame, scores, own) for kind, key in plan]
    out = np.empty((len(rows), len(names)))
    for j, column in enumerate(columns):
        out[:, j] = column[rows]
    return out


def _value_at(
    kind: str, key: Any, frame: FeatureFrame, scores: ScoreFrame, own: dict[str, np.ndarray], row: int
) -> float:
    """``_column(...)[row]`` without the column where the column is computed (``atr_price_ratio``: the same
    IEEE division of the same two numbers, NaN where the frame's property gives NaN)."""
    if kind != "atr_price_ratio":
        return float(_column(kind, key, frame, scores, own)[row])
    atr, price = frame.values["atr"][row], frame.values["last_price"][row]
    return float(atr / price) if not (np.isnan(atr) or np.isnan(price) or price == 0) else math.nan


def _column(kind: str, key: Any, frame: FeatureFrame, scores: ScoreFrame, own: dict[str, np.ndarray]) -> np.ndarray:
    if kind == "value":
        return frame.values[key]
    if kind == "score":
        return scores.score
    if kind == "raw_score":
        return scores.raw_score
    if kind == "sign":
        return scores.sign
    if kind == "layer":
        layer = scores.layers.get(key)
        return layer if layer is not None else np.full(len(frame), np.nan)  # not a layer of the strategy
    if kind == "own":
        return own[key]
    if kind == "atr_price_ratio":
        return frame.atr_price_ratio
    columns = {"cvd": frame.cvd, "cvd_slope": frame.cvd_slope, "cvd_accel": frame.cvd_accel}[kind]
    if key not in columns:  # the strategy's validation refused it: only a frame built without its windows
        raise KeyError(f"in_{kind}_{duration_name(key)}: no such column in the frame")
    return columns[key]


def cooldown_inputs(
    frame: FeatureFrame,
    scores: ScoreFrame,
    cfg: StrategyConfig,
    candidates: np.ndarray,
    state: np.ndarray,
    fired: np.ndarray,
    flips: np.ndarray,
) -> tuple[Any, ...]:
    """The arguments of the cooldown loop over ``candidates``: ``kernels.cooldown_rows``'s, which the
    model's loop (``cooldown_model_rows``) takes first, before the model's own. Gathered here for both
    loops so that the engine with and without a model runs the cooldown rule on the same numbers (times,
    signs, scores, the cooldown, the flip threshold, the timeout in ms, the symbol's state, the outputs)."""
    return (
        frame.time_ms,
        scores.sign,
        scores.score,
        candidates,
        cfg.cooldown,
        float(cfg.thresholds.flip),
        cfg.exits.timeout_min * 60_000,
        state,
        fired,
        flips,
    )


def model_cooldown(
    frame: FeatureFrame,
    scores: ScoreFrame,
    cfg: StrategyConfig,
    rows: np.ndarray,
    state: np.ndarray,
    fired: np.ndarray,
    flips: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``kernels.cooldown_rows`` over ``rows`` with the strategy's model (``confidence_kernels.cooldown_model_rows``):
    ``(p_win, band, skipped)`` per row of the frame (NaN / 0 / False where the model did not judge). The
    features are gathered for the candidate rows not already in a cooldown that started before this frame
    (a row in one stays in it whatever the model says); the model runs where it decides."""
    assert cfg.model is not None
    model = cfg.model.compiled
    n = len(frame)
    p_win, band, skipped = np.full(n, np.nan), np.zeros(n), np.zeros(n, dtype=np.bool_)
    last = np.where(scores.sign[rows] > 0, state[0], state[1])
    ask = rows[(last == NONE_TIME) | (frame.time_ms[rows] - last >= cfg.cooldown)]
    if len(ask) == 0:
        return p_win, band, skipped  # every candidate is in a cooldown: none fires, the state stays
    x = feature_matrix(model.features, frame, scores, cfg, ask)
    x_row = np.full(n, -1, dtype=np.int64)
    x_row[ask] = np.arange(len(ask))
    # one starred tuple of any length: mypy counts positional arguments after a star as too many
    loop_args: tuple[Any, ...] = (*cooldown_inputs(frame, scores, cfg, ask, state, fired, flips), x, x_row)
    cooldown_model_rows(*(*loop_args, model.packed, p_win, band, skipped))
    return p_win, band, skipped
