"""The search space: candidates are valid strategy files with whole weights summing to 100."""

from __future__ import annotations

import optuna
import pytest

from backtest.research.space import RANGES, build, grid, suggest, whole_weights
from stream_apps.core.strategy import default_strategy_dir, load_strategy

V53 = load_strategy(default_strategy_dir() / "v53.yaml")


def test_whole_weights_sum_to_exactly_100():
    assert whole_weights({"a": 1, "b": 1, "c": 1}) == {"a": 34.0, "b": 33.0, "c": 33.0}
    assert whole_weights({"a": 55, "b": 25, "c": 15, "d": 5}) == {"a": 55.0, "b": 25.0, "c": 15.0, "d": 5.0}
    assert sum(whole_weights({"a": 0.123, "b": 0.456, "c": 0.789}).values()) == 100.0
    with pytest.raises(ValueError):
        whole_weights({"a": 0.0})


def test_build_applies_every_parameter_and_validates():
    params = {
        "w_direction": 2,
        "w_crowding": 1,
        "w_environment": 1,
        "w_auxiliary": 0,
        "entry": 70.0,
        "heavy_step": 10.0,
        "flip_step": 40.0,
        "min_atr_scale": 0.5,
        "obi_scale": 1.2,
        "sl_atr_mult": 1.5,
        "tp1_r": 1.0,
        "tp2_step": 0.5,
        "timeout_min": 120,
    }
    cfg = build(V53, params, "v53_try_001")
    assert cfg.name == "v53_try_001" and cfg.windows == V53.windows
    assert (cfg.weights.direction, cfg.weights.crowding, cfg.weights.environment, cfg.weights.auxiliary) == (
        50.0,
        25.0,
        25.0,
        0.0,
    )
    assert (cfg.thresholds.entry, cfg.thresholds.heavy, cfg.thresholds.flip) == (70.0, 80.0, 100.0)  # capped
    assert cfg.gates.min_atr_price.symbols["BTCUSDT"] == pytest.approx(0.001)
    assert cfg.gates.obi_against.symbols["SOLUSDT"] == pytest.approx(0.54)
    assert cfg.gates.whale_against == V53.gates.whale_against
    assert (cfg.exits.sl_atr_mult, cfg.exits.tp1_r, cfg.exits.tp2_r, cfg.exits.timeout_min) == (1.5, 1.0, 1.5, 120)
    assert build(V53, {}, "v53_same").config_hash == build(V53, {}, "v53_same").config_hash


def test_grid_starts_at_the_base_and_has_no_duplicates():
    sets = list(grid(V53, 20))
    assert len(sets) == 20 and len({tuple(sorted(p.items())) for p in sets}) == 20
    assert sets[0]["entry"] == V53.thresholds.entry and sets[0]["sl_atr_mult"] == V53.exits.sl_atr_mult


def test_tpe_suggestions_stay_in_range_and_build():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1))
    for k in range(30):
        trial = study.ask()
        params = suggest(trial, V53)
        for key, (low, high) in RANGES.items():
            assert low <= params[key] <= high
        cfg = build(V53, params, f"v53_t_{k:03d}")
        assert sum(cfg.weights.model_dump().values()) == 100.0
        assert cfg.thresholds.entry <= cfg.thresholds.heavy <= 100 and cfg.exits.tp2_r > cfg.exits.tp1_r
        study.tell(trial, float(k))
