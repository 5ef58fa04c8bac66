"""From a scored ``Evaluation`` to an emitted signal: warm-up, cooldown, flip, exit plan.

Kept apart from ``scoring`` because this is the only step with state: it reads and updates the
strategy's ``CooldownBook`` (plain data, persisted, so a restart does not re-fire). Order of reasons
when nothing is emitted: ``warmup`` (data does not yet cover the strategy's warm-up window; never a
timer), then the scorer's ``no_direction`` / ``gate`` / ``below_entry``, then ``missing_atr`` (no
exits can be placed), then ``cooldown``, then ``model_skip`` (a row that would fire, but the strategy's
confidence model puts its ``p_win`` in the skip band: no signal, and no cooldown started) (same strategy, symbol and direction fired less than
``cooldown`` ago; a reverse signal has its own key, so it is never held back by the other side).
A signal is a flip when its score reaches ``thresholds.flip`` and the strategy's previous signal on the
symbol was the other direction and not older than ``exits.timeout_min`` (a position from it may still
be open; the executor closes it with exit reason ``signal_flip``).

Size: a signal's ``size_mult`` is its tier's multiplier (``sizing.tier_multipliers``), times the model's
band multiplier for its ``p_win`` when the strategy has a model, clamped to ``model.max_size_mult``
(``core.confidence``); the executor sizes by it. ``p_win`` is computed, inside the compiled cooldown
loop, at the rows the model decides (out of their cooldown: a signal or a ``model_skip``), from features
gathered with array operations: the same numbers for any batching.

``decide_frame`` decides every row of a scored ``FeatureFrame`` (the engine's columnar path); ``decide``
is the same function on one row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .confidence_inputs import cooldown_inputs, model_cooldown
from .cooldown import CooldownBook
from .exits import ExitPlan, plan_exits
from .features import Features
from .frame import FeatureFrame
from .kernels import NONE_TIME, cooldown_rows
from .scoring import (
    BLOCK_REASONS,
    COOLDOWN,
    DIRECTIONS,
    LONG,
    MISSING_ATR,
    MODEL_SKIP,
    SHORT,
    TIERS,
    WARMUP,
    Evaluation,
    ScoreFrame,
    with_block,
)
from .strategy import StrategyConfig


@dataclass(frozen=True, slots=True)
class Decision:
    evaluation: Evaluation
    plan: ExitPlan | None  # set only when a signal is emitted


@dataclass(slots=True)
class DecisionFrame:
    """``decide`` for every row of a scored frame: the final block reason codes (``BLOCK_REASONS``)
    and, for the rows that emit a signal, the exit plan and whether it is a flip."""

    block: np.ndarray  # int8
    plans: dict[int, ExitPlan]  # row -> plan, rows in time order
    flips: dict[int, bool]
    size_mult: dict[int, float]  # row -> the signal's final size multiplier (see the module docstring)
    p_win: np.ndarray | None = None  # float64 per row, NaN where the model was not asked; None: no model

    def p_win_at(self, row: int) -> float | None:
        return None if self.p_win is None else float(self.p_win[row])


def decide_frame(frame: FeatureFrame, scores: ScoreFrame, cfg: StrategyConfig, book: CooldownBook) -> DecisionFrame:
    """Warm-up, missing ATR (array operations over every row), then cooldown and flips in time order
    over the rows the scorer let through (a compiled loop: a low entry threshold lets through most
    rows, nearly all of them in cooldown); updates ``book`` like ``decide`` does."""
    block = scores.block.copy()
    block[~frame.covers(cfg.warmup)] = WARMUP
    candidates = (block == 0) & (scores.sign != 0) & (scores.tier != 0)
    atr, price = frame.values["atr"], frame.values["last_price"]
    with np.errstate(invalid="ignore"):
        no_atr = candidates & (np.isnan(atr) | ~(atr > 0) | np.isnan(price) | (price == 0))
    block[no_atr] = MISSING_ATR
    plans: dict[int, ExitPlan] = {}
    flips: dict[int, bool] = {}
    sizes: dict[int, float] = {}
    rows = np.flatnonzero(candidates & ~no_atr)
    if len(rows) == 0:
        return DecisionFrame(block, plans, flips, sizes, None if cfg.model is None else np.full(len(frame), np.nan))
    ex, sym = frame.exchange, frame.symbol
    state = book.symbol_state(ex, sym, NONE_TIME)
    fired = np.zeros(len(frame), dtype=np.bool_)
    flip = np.zeros(len(frame), dtype=np.bool_)
    p_win = band = None
    if cfg.model is None:
        cooldown_rows(*cooldown_inputs(frame, scores, cfg, rows, state, fired, flip))
    else:  # the same loop with the model's veto, which judges only the rows out of their cooldown
        p_win, band, skipped = model_cooldown(frame, scores, cfg, rows, state, fired, flip)
        block[skipped] = MODEL_SKIP
    book.set_symbol_state(ex, sym, state, NONE_TIME)
    block[rows[~(fired | (block == MODEL_SKIP))[rows]]] = COOLDOWN
    for i in np.flatnonzero(fired).tolist():
        direction = DIRECTIONS[int(scores.sign[i])]
        flips[i] = bool(flip[i])
        multiplier = getattr(cfg.sizing.tier_multipliers, TIERS[int(scores.tier[i])])
        plans[i] = plan_exits(direction, float(price[i]), float(atr[i]), cfg.exits, multiplier)
        sizes[i] = multiplier
        if band is not None and cfg.model is not None:
            sizes[i] = min(multiplier * float(band[i]), cfg.model.max_size_mult)
    return DecisionFrame(block, plans, flips, sizes, p_win)


def decide(evaluation: Evaluation, features: Features, cfg: StrategyConfig, book: CooldownBook) -> Decision:
    """``decide_frame`` on one row: the evaluation with its final block reason, and the exit plan."""
    frame = FeatureFrame.from_features([features])
    scores = ScoreFrame(
        np.array([1 if evaluation.direction == LONG else -1 if evaluation.direction == SHORT else 0], dtype=np.int8),
        {name: np.array([value]) for name, value in evaluation.layer_scores.items()},  # a model may read them
        np.array([evaluation.raw_score]),
        np.array([evaluation.score]),
        np.array([TIERS.index(evaluation.tier)], dtype=np.int8),
        np.zeros(1, dtype=np.int8),
        np.array([BLOCK_REASONS.index(evaluation.block_reason)], dtype=np.int8),
    )
    decided = decide_frame(frame, scores, cfg, book)
    reason = BLOCK_REASONS[int(decided.block[0])]
    if reason != evaluation.block_reason:
        return Decision(with_block(evaluation, reason), None)
    if 0 not in decided.plans:
        return Decision(evaluation, None)
    return Decision(replace(evaluation, is_flip=decided.flips[0]), decided.plans[0])
