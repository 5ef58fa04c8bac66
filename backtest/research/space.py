"""The search space: strategy configurations derived from a base strategy by a handful of parameters.

Parameters (all validated by ``stream_apps.core.strategy`` — a candidate is a strategy file):

- layer weights: the layers the base uses, non-negative whole points summing to 100;
- thresholds: ``entry``, ``heavy`` (entry + a step) and ``flip`` (entry + a step), at most 100;
- gates: ``min_atr_scale`` and ``obi_scale`` multiply the base's per-symbol ``min_atr_price`` and
  ``obi_against`` values (the other gates stay as in the base);
- exits: ``sl_atr_mult``, ``tp1_r``, ``tp2_r`` (tp1_r + a step) and ``timeout_min``.

Windows stay those of the base: every candidate reads the same features (see ``store``).
Two samplers: ``grid`` (a fixed lattice, the base's values first) and ``tpe`` (optuna's
Tree-structured Parzen Estimator, seeded, asked for a batch at a time so a batch is scored at once).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna

from stream_apps.core.strategy import StrategyConfig, parse_strategy

LAYERS = ("direction", "crowding", "environment", "confirmation", "auxiliary", "funding", "liquidation")
RANGES: dict[str, tuple[float, float]] = {
    "entry": (55.0, 90.0),
    "heavy_step": (0.0, 15.0),
    "flip_step": (0.0, 15.0),
    "min_atr_scale": (0.5, 1.5),
    "obi_scale": (0.75, 1.5),
    "sl_atr_mult": (1.0, 3.0),
    "tp1_r": (0.5, 1.5),
    "tp2_step": (0.25, 2.0),
    "timeout_min": (60.0, 480.0),
}


def whole_weights(shares: dict[str, float]) -> dict[str, float]:
    """Non-negative whole points summing to exactly 100, proportional to ``shares`` (largest
    remainders get the leftover points)."""
    total = sum(shares.values())
    if total <= 0:
        raise ValueError("weights need a positive share")
    exact = {k: 100.0 * v / total for k, v in shares.items()}
    points = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (points[k] - exact[k], k))[: 100 - sum(points.values())]:
        points[k] += 1
    return {k: float(v) for k, v in points.items()}


@dataclass(frozen=True)
class Candidate:
    params: dict[str, Any]
    config: StrategyConfig


def build(base: StrategyConfig, params: dict[str, Any], name: str) -> StrategyConfig:
    """The base strategy with ``params`` applied, validated (raises StrategyConfigError)."""
    data = base.model_dump(mode="json")
    layers = [k for k in LAYERS if getattr(base.weights, k) > 0]
    weights = whole_weights({k: float(params.get(f"w_{k}", getattr(base.weights, k))) for k in layers})
    data["weights"] = {k: weights.get(k, 0.0) for k in LAYERS}
    entry = float(params.get("entry", base.thresholds.entry))
    data["thresholds"] = {
        "entry": entry,
        "heavy": min(100.0, entry + float(params.get("heavy_step", base.thresholds.heavy - base.thresholds.entry))),
        "flip": min(100.0, entry + float(params.get("flip_step", base.thresholds.flip - base.thresholds.entry))),
    }
    for gate, key in (("min_atr_price", "min_atr_scale"), ("obi_against", "obi_scale")):
        scale = float(params.get(key, 1.0))
        setting = data["gates"].get(gate)
        if setting is not None and scale != 1.0:
            setting["default"] = None if setting["default"] is None else round(setting["default"] * scale, 6)
            setting["symbols"] = {s: round(v * scale, 6) for s, v in setting["symbols"].items()}
    tp1 = float(params.get("tp1_r", base.exits.tp1_r))
    data["exits"] = {
        "sl_atr_mult": float(params.get("sl_atr_mult", base.exits.sl_atr_mult)),
        "tp1_r": tp1,
        "tp2_r": tp1 + float(params.get("tp2_step", base.exits.tp2_r - base.exits.tp1_r)),
        "timeout_min": int(params.get("timeout_min", base.exits.timeout_min)),
    }
    data["name"] = name
    data["version"] = f"{base.version}+{name.rsplit('_', 1)[-1]}"[:32]
    data["description"] = f"{base.name} searched: " + ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return parse_strategy(data, f"<candidate {name}>")


def grid(base: StrategyConfig, size: int) -> Iterator[dict[str, Any]]:
    """Up to ``size`` parameter sets of a fixed lattice (entry, sl_atr_mult, tp1_r, timeout first)."""
    axes = {
        "entry": [base.thresholds.entry, 65.0, 70.0, 80.0, 85.0],
        "sl_atr_mult": [base.exits.sl_atr_mult, 1.5, 2.5],
        "tp1_r": [base.exits.tp1_r, 1.0],
        "timeout_min": [base.exits.timeout_min, 120],
        "min_atr_scale": [1.0, 0.75],
    }
    seen = set()
    for values in itertools.product(*axes.values()):
        params = dict(zip(axes, values))
        key = tuple(sorted(params.items()))
        if key in seen:
            continue
        seen.add(key)
        yield params
        if len(seen) >= size:
            return


def suggest(trial: optuna.trial.Trial, base: StrategyConfig) -> dict[str, Any]:
    """One parameter set from optuna (TPE): weights as shares, the rest from ``RANGES``."""
    params: dict[str, Any] = {}
    for layer in (k for k in LAYERS if getattr(base.weights, k) > 0):
        params[f"w_{layer}"] = trial.suggest_float(f"w_{layer}", 0.05, 1.0)
    for key, (low, high) in RANGES.items():
        if key == "timeout_min":
            params[key] = trial.suggest_int(key, int(low), int(high), step=30)
        else:
            params[key] = round(trial.suggest_float(key, low, high), 4)
    return params
