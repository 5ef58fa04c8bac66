"""How close a strategy's decisions are to flipping: key features perturbed by ±ε, re-scored.

The decisions are the ones the engine made in a run: its feature frames and scores (the
``FeatureBlock``s handed to ``BacktestRunner(on_features=...)``) are read block by block
(``SensitivityProbe``), and the evaluations *at a decision* are re-scored by
``stream_apps.core.scoring.score_frame`` (the function the engine itself calls, on the same columns)
with one key feature scaled by ``1 + ε`` and by ``1 - ε``. Nothing but counts and the raw scores at a
decision is kept, so a week of evaluations costs no more memory than an hour's frames.

Definitions:

- **at a decision**: an evaluation past the strategy's warm-up in which the scorer found a direction
  (CVD fast and mid agree; for a regime strategy, its direction rule gave one). Only there do the
  tier thresholds and the gates decide anything; an evaluation without a direction scores nothing.
- **decision**: what the scorer lets through: no signal, or a standard or heavy signal LONG or SHORT
  (``sign x tier`` where nothing blocks). Cooldown, warm-up and the executor come after it and depend
  on the whole sequence, so they are not part of the perturbed decision.
- **flip share** of a feature: the share of those evaluations whose decision differs with the feature
  at ``x (1 + ε)`` or at ``x (1 - ε)`` (each side is reported too).
- **margin** to a boundary: ``|raw score - threshold|`` for the entry and the heavy threshold, over
  the evaluations with a direction that no gate vetoed (there the score alone decides); the median is
  reported. A regime strategy's tier comes from rules, not from a score: no margins.

Perturbation is relative, so a feature at 0 stays 0. Price levels are not scaled as levels (5 % of a
price is a crash): VWAP moves its distance to the last price, ``vwap' = price - (price - vwap)(1 ± ε)``.
A net quantity (large-trade flow, net liquidations) scales both of its sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stream_apps.core.frame import FeatureFrame
from stream_apps.core.records import FeatureTable
from stream_apps.core.scoring import BELOW_ENTRY, ScoreFrame, score_frame
from stream_apps.core.strategy import StrategyConfig

DEFAULT_EPSILON = 0.05

Perturb = Callable[[FeatureFrame, StrategyConfig, float], FeatureFrame]


def _values(*names: str) -> Perturb:
    """Scale the frame columns ``names`` by ``k``."""

    def perturb(frame: FeatureFrame, cfg: StrategyConfig, k: float) -> FeatureFrame:
        return replace(frame, values={**frame.values, **{n: frame.values[n] * k for n in names}})

    return perturb


def _cvd(kind: str, window: Callable[[StrategyConfig], int]) -> Perturb:
    def perturb(frame: FeatureFrame, cfg: StrategyConfig, k: float) -> FeatureFrame:
        columns: dict[int, np.ndarray] = getattr(frame, kind)
        w = window(cfg)
        scaled = {**columns, w: columns[w] * k}
        if kind == "cvd":
            return replace(frame, cvd=scaled)
        if kind == "cvd_slope":
            return replace(frame, cvd_slope=scaled)
        return replace(frame, cvd_accel=scaled)

    return perturb


def _vwap(frame: FeatureFrame, cfg: StrategyConfig, k: float) -> FeatureFrame:
    price, vwap = frame.values["last_price"], frame.values["vwap_30m"]
    return replace(frame, values={**frame.values, "vwap_30m": price - (price - vwap) * k})


def _fast(cfg: StrategyConfig) -> int:
    return cfg.windows.cvd_fast


def _mid(cfg: StrategyConfig) -> int:
    return cfg.windows.cvd_mid


# every feature a layer, a gate or a regime rule reads, and how it is perturbed
PERTURBERS: dict[str, Perturb] = {
    "cvd_fast": _cvd("cvd", _fast),
    "cvd_mid": _cvd("cvd", _mid),
    "cvd_fast_slope": _cvd("cvd_slope", _fast),
    "cvd_fast_accel": _cvd("cvd_accel", _fast),
    "large_net_qty_15m": _values("large_buy_qty_15m", "large_sell_qty_15m"),
    "atr_price_ratio": _values("atr"),
    "vwap_30m": _vwap,
    "price_vwap_dev": _vwap,
    "liq_net_usd_5m": _values("liq_long_usd_5m", "liq_short_usd_5m"),
    "liq_net_usd": _values("liq_long_usd", "liq_short_usd"),
}
LAYER_FEATURES = {
    "direction": ("large_net_qty_15m", "cvd_fast_accel"),
    "crowding": ("long_short_ratio", "top_trader_long_share"),
    "environment": ("oi_change",),
    "confirmation": ("vwap_30m", "large_net_qty_15m"),
    "auxiliary": ("coinbase_premium",),
    "funding": ("funding_rate",),
    "liquidation": ("liq_long_usd_5m", "liq_short_usd_5m"),
}
GATE_FEATURES = {
    "min_atr_price": "atr_price_ratio",
    "obi_against": "obi",
    "spot_perp_divergence": "spot_perp_divergence",
    "whale_against": "whale_ratio_15m",
}


def key_features(cfg: StrategyConfig) -> list[str]:
    """The features ``cfg``'s decisions read: the CVD pair (the direction), then those of each layer
    weighted above 0 and each configured gate; for a regime strategy, those its rules read."""
    if cfg.regime is not None:
        return cfg.regime.features()
    names = ["cvd_fast", "cvd_mid"]
    for layer, features in LAYER_FEATURES.items():
        if getattr(cfg.weights, layer) > 0:
            names += features
    names += [feature for gate, feature in GATE_FEATURES.items() if getattr(cfg.gates, gate) is not None]
    return list(dict.fromkeys(names))


def perturb(frame: FeatureFrame, cfg: StrategyConfig, feature: str, k: float) -> FeatureFrame:
    """``frame`` with ``feature`` scaled by ``k`` (see the module docstring); other columns shared."""
    return PERTURBERS.get(feature, _values(feature))(frame, cfg, k)


def decisions(scores: ScoreFrame) -> np.ndarray:
    """The scorer's decision per row: ``sign x tier`` where nothing blocks, else 0 (int8)."""
    return np.where(scores.block == 0, scores.sign * scores.tier, 0).astype(np.int8)


def _directed(frame: FeatureFrame, scores: ScoreFrame, cfg: StrategyConfig) -> np.ndarray:
    """Rows at a decision: past the warm-up, with a direction."""
    sign = scores.regime.sign if scores.regime is not None else scores.sign
    return (sign != 0) & frame.covers(cfg.warmup)


class SensitivityCounter:
    """Flip counts and raw scores of ``cfg``'s decisions, added a frame at a time (a run's memory does
    not grow with its evaluations: only the raw scores at a decision are kept, for the medians)."""

    def __init__(self, cfg: StrategyConfig, epsilon: float = DEFAULT_EPSILON) -> None:
        if not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be between 0 and 1, got {epsilon}")
        self.cfg, self.epsilon = cfg, epsilon
        self.features = key_features(cfg)
        self.n = self.signals = 0
        self.up = dict.fromkeys(self.features, 0)
        self.down = dict.fromkeys(self.features, 0)
        self.either = dict.fromkeys(self.features, 0)
        self.raw: list[np.ndarray] = []

    def add(self, whole: FeatureFrame, scores: ScoreFrame | None = None) -> None:
        """The rows of ``whole`` at a decision; ``scores``: ``score_frame(whole, cfg)`` when the caller
        has it (the engine's own), else computed here."""
        cfg = self.cfg
        scores = scores if scores is not None else score_frame(whole, cfg)
        rows = np.flatnonzero(_directed(whole, scores, cfg))
        if not len(rows):
            return
        frame = whole.take(rows)
        base = decisions(scores)[rows]
        self.n += len(rows)
        self.signals += int(np.count_nonzero(base))
        block = scores.block[rows]
        self.raw.append(scores.raw_score[rows][(block == 0) | (block == BELOW_ENTRY)])
        for feature in self.features:
            hi = decisions(score_frame(perturb(frame, cfg, feature, 1 + self.epsilon), cfg)) != base
            lo = decisions(score_frame(perturb(frame, cfg, feature, 1 - self.epsilon), cfg)) != base
            self.up[feature] += int(np.count_nonzero(hi))
            self.down[feature] += int(np.count_nonzero(lo))
            self.either[feature] += int(np.count_nonzero(hi | lo))

    def result(self) -> Sensitivity:
        n, cfg = self.n, self.cfg

        def share(count: int) -> float:
            return count / n if n else 0.0

        flips = [FeatureFlips(f, share(self.up[f]), share(self.down[f]), share(self.either[f])) for f in self.features]
        if cfg.regime is not None:
            note = "a regime's tier comes from its rules, not a score"
            return Sensitivity(self.epsilon, n, self.signals, flips, 0, None, None, note)
        raw = np.concatenate(self.raw) if self.raw else np.empty(0)
        if not len(raw):
            note = "no evaluation with a direction and no gate veto"
            return Sensitivity(self.epsilon, n, self.signals, flips, 0, None, None, note)
        return Sensitivity(
            self.epsilon,
            n,
            self.signals,
            flips,
            len(raw),
            float(np.median(np.abs(raw - cfg.thresholds.entry))),
            float(np.median(np.abs(raw - cfg.thresholds.heavy))),
        )


class SensitivityProbe:
    """``on_features`` of a run: the sensitivity of the strategy that runs as ``run_name`` (its rules:
    ``cfg``), from the engine's own frames and scores, block by block."""

    def __init__(self, run_name: str, cfg: StrategyConfig, epsilon: float = DEFAULT_EPSILON) -> None:
        self.run_name = run_name
        self.counter = SensitivityCounter(cfg, epsilon)
        self.evaluations = 0  # every evaluation of the strategy seen

    def __call__(self, table: FeatureTable) -> None:
        for block in table.blocks:
            if block.strategy.name == self.run_name:
                self.evaluations += len(block)
                self.counter.add(block.frame, block.scores)

    def result(self) -> Sensitivity:
        return self.counter.result()


@dataclass(frozen=True)
class FeatureFlips:
    feature: str
    up: float  # share of decisions that differ at x (1 + ε)
    down: float  # ... at x (1 - ε)
    either: float  # ... at one or both


@dataclass(frozen=True)
class Sensitivity:
    epsilon: float
    evaluations: int  # the evaluations at a decision that were perturbed
    signals: int  # of those, how many the scorer lets through (standard or heavy)
    flips: list[FeatureFlips]
    scored: int  # evaluations with a direction that no gate vetoed: where the margins are measured
    entry_margin: float | None  # median |raw score - thresholds.entry| over ``scored``
    heavy_margin: float | None  # median |raw score - thresholds.heavy|
    margin_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "epsilon": self.epsilon,
            "evaluations_at_a_decision": self.evaluations,
            "signals_among_them": self.signals,
            "flip_share": {f.feature: {"up": f.up, "down": f.down, "either": f.either} for f in self.flips},
            "margins": {
                "evaluations": self.scored,
                "median_to_entry": self.entry_margin,
                "median_to_heavy": self.heavy_margin,
                "note": self.margin_note,
            },
        }


def sensitivity(frames: list[FeatureFrame], cfg: StrategyConfig, epsilon: float = DEFAULT_EPSILON) -> Sensitivity:
    """Flip shares and margins of ``cfg``'s decisions on the rows of ``frames`` (each of one symbol;
    rows without a direction or inside the warm-up are left out, so any frames will do)."""
    counter = SensitivityCounter(cfg, epsilon)
    for frame in frames:
        counter.add(frame)
    return counter.result()
