"""From a scored ``Evaluation`` to an emitted signal: warm-up, cooldown, flip, exit plan.

Kept apart from ``scoring`` because this is the only step with state: it reads and updates the
strategy's ``CooldownBook`` (plain data, persisted, so a restart does not re-fire). Order of reasons
when nothing is emitted: ``warmup`` (data does not yet cover the strategy's warm-up window; never a
timer), then the scorer's ``no_direction`` / ``gate`` / ``below_entry``, then ``missing_atr`` (no
exits can be placed), then ``cooldown`` (same strategy, symbol and direction fired less than
``cooldown`` ago; a reverse signal has its own key, so it is never held back by the other side).
A signal is a flip when its score reaches ``thresholds.flip`` and the strategy's previous signal on the
symbol was the other direction and not older than ``exits.timeout_min`` (a position from it may still
be open; the executor closes it with exit reason ``signal_flip``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .cooldown import CooldownBook
from .exits import ExitPlan, plan_exits
from .features import Features
from .scoring import Evaluation, with_block
from .strategy import StrategyConfig


@dataclass(frozen=True, slots=True)
class Decision:
    evaluation: Evaluation
    plan: ExitPlan | None  # set only when a signal is emitted


def decide(evaluation: Evaluation, features: Features, cfg: StrategyConfig, book: CooldownBook) -> Decision:
    if not features.covers(cfg.warmup):
        return Decision(with_block(evaluation, "warmup"), None)
    if evaluation.block_reason is not None or evaluation.direction is None or evaluation.tier is None:
        return Decision(evaluation, None)
    if features.atr is None or features.atr <= 0 or not features.last_price:
        return Decision(with_block(evaluation, "missing_atr"), None)
    ex, sym, direction, now = features.exchange, features.symbol, evaluation.direction, evaluation.time_ms
    if book.in_cooldown(ex, sym, direction, now, cfg.cooldown):
        return Decision(with_block(evaluation, "cooldown"), None)
    previous = book.previous_signal(ex, sym)
    is_flip = (
        evaluation.score >= cfg.thresholds.flip
        and previous is not None
        and previous[0] != direction
        and now - previous[1] <= cfg.exits.timeout_min * 60_000
    )
    multiplier = getattr(cfg.sizing.tier_multipliers, evaluation.tier)
    plan = plan_exits(direction, features.last_price, features.atr, cfg.exits, multiplier)
    book.record(ex, sym, direction, now)
    return Decision(replace(evaluation, is_flip=is_flip), plan)
