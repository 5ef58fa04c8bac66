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

from typing import TYPE_CHECKING

import numpy as np

from .confidence import SIGN_FEATURE, cvd_feature
from .frame import FeatureFrame, duration_name
from .scoring import ScoreFrame, strategy_input_columns

if TYPE_CHECKING:
    from .strategy import StrategyConfig


def feature_matrix(
    names: tuple[str, ...], frame: FeatureFrame, scores: ScoreFrame, cfg: StrategyConfig, rows: np.ndarray
) -> np.ndarray:
    """The model's features at ``rows`` of a scored frame: one float64 row per evaluation, NaN = missing."""
    out = np.empty((len(rows), len(names)))
    own = dict(strategy_input_columns(frame, cfg))
    for j, name in enumerate(names):
        out[:, j] = _column(name, frame, scores, own)[rows]
    return out


def _column(name: str, frame: FeatureFrame, scores: ScoreFrame, own: dict[str, np.ndarray]) -> np.ndarray:
    if name == "score":
        return scores.score
    if name == "raw_score":
        return scores.raw_score
    if name == SIGN_FEATURE:
        return scores.sign
    if name.startswith("layer_"):
        layer = scores.layers.get(name.removeprefix("layer_"))
        return layer if layer is not None else np.full(len(frame), np.nan)  # not a layer of the strategy
    field = name.removeprefix("in_")
    if field in own:
        return own[field]
    if field == "atr_price_ratio":
        return frame.atr_price_ratio
    if field in frame.values:
        return frame.values[field]
    kind, window = cvd_feature(field) or ("", 0)
    columns = {"cvd": frame.cvd, "cvd_slope": frame.cvd_slope, "cvd_accel": frame.cvd_accel}.get(kind, {})
    if window not in columns:  # check_features refused the strategy: only a frame built without its windows
        raise KeyError(f"{name}: no such column in the frame ({duration_name(window)} not kept)")
    return columns[window]


def model_verdicts(
    frame: FeatureFrame, scores: ScoreFrame, cfg: StrategyConfig, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(p_win, band multiplier)`` of the strategy's model at ``rows`` (a multiplier of 0: skip)."""
    assert cfg.model is not None
    model = cfg.model.compiled
    x = feature_matrix(model.features, frame, scores, cfg, rows)
    p = model.predict(x, scores.sign[rows].astype(np.float64))
    return p, model.size_multiplier(p)
