"""Regime strategies (``core.regime``): the schema's refusals, the rules on hand-built rows (fires, does
not fire, missing input), and the one-row ``score`` equal to ``score_frames`` on generated frames."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

from stream_apps.core.frame import FeatureFrame
from stream_apps.core.scoring import LONG, SHORT, evaluation_at, score, score_frames
from stream_apps.core.strategy import StrategyConfigError, default_strategy_dir, load_strategies, parse_strategy
from tests.support.scoring import V53, feats

DETECTORS = {"bar": "1m", "divergence": {"window": "30m"}, "liquidations": {}}
BASE = {
    "name": "demo_regime",
    "version": "1",
    "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
    "thresholds": {"entry": 75, "heavy": 85, "flip": 85},
    "exits": {"sl_atr_mult": 2.0, "tp1_r": 0.75, "tp2_r": 1.5, "timeout_min": 240},
    "detectors": DETECTORS,
    "regime": {
        "name": "demo",
        "sign_of": "cvd_fast",
        "conditions": [
            {"feature": "whale_ratio_15m", "op": ">=", "value": 0.2, "aligned": True},
            {"feature": "vpin", "op": ">", "value": 0.5},
        ],
        "heavy": [{"feature": "cvd_divergence", "op": ">", "value": 0, "aligned": True}],
    },
}
CFG = parse_strategy(BASE)


def with_(path: str, value) -> dict:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


_DELETE = object()


def error(data: dict) -> str:
    with pytest.raises(StrategyConfigError) as info:
        parse_strategy(data, "demo.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


# -- schema ----------------------------------------------------------------------------------------
def test_regime_strategy_loads_with_zero_weights_and_no_layers():
    assert CFG.regime is not None and CFG.weights.max_score() == 0
    assert CFG.regime.features() == ["cvd_fast", "whale_ratio_15m", "vpin", "cvd_divergence"]


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("regime.conditions.0.extra", 1, "regime.conditions.0.extra: Extra inputs are not permitted"),
        ("regime.conditions.1.value", "high", "regime.conditions.1.value: Input should be a valid number"),
        ("regime.conditions.0.op", "=>", "regime.conditions.0.op: Input should be '>', '>=', '<', '<=', '==' or '!='"),
        ("regime.conditions.0.feature", "whale_ratio", "regime.conditions.0.feature: unknown feature 'whale_ratio'"),
        ("regime.direction", "UP", "regime.direction: Input should be 'LONG' or 'SHORT'"),
        ("regime.sign_of", "nope", "regime.sign_of: unknown feature 'nope'"),
        ("regime.direction", "LONG", "regime: set direction (LONG or SHORT) or sign_of (a feature), exactly one"),
        ("regime.sign_of", _DELETE, "regime: set direction (LONG or SHORT) or sign_of (a feature), exactly one"),
        ("regime.conditions", [], "regime.conditions: List should have at least 1 item"),
        ("regime.name", "Bad Name", "regime.name: String should match pattern"),
    ],
)
def test_schema_refuses_bad_regimes_in_one_line(path, value, expected):
    assert expected in error(with_(path, value))


def test_a_rule_over_a_detector_output_needs_that_detector():
    no_section = with_("detectors", _DELETE)
    assert error(no_section) == (
        "demo.yaml: regime.conditions.1.feature: vpin is a detector output and the strategy has no detectors section"
    )
    no_divergence = with_("detectors.divergence", _DELETE)
    assert error(no_divergence) == (
        "demo.yaml: regime.heavy.0.feature: cvd_divergence needs detectors.divergence, "
        "which the strategy does not turn on"
    )
    signed = with_("regime.sign_of", "liq_cascade_net")
    signed["detectors"] = {"bar": "1m"}
    assert error(signed) == (
        "demo.yaml: regime.sign_of: liq_cascade_net needs detectors.liquidations, which the strategy does not turn on"
    )


def test_a_regime_strategy_has_no_layers_and_no_gates():
    weighted = with_("weights", {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 5})
    assert error(weighted) == (
        "demo.yaml: weights: a regime strategy is scored by its rules, not by layers; leave weights out"
    )
    gated = with_("gates", {"obi_against": {"default": 0.3}})
    assert error(gated) == "demo.yaml: gates: a regime strategy has no gates; write the veto as a regime condition"


def test_strategies_without_a_regime_keep_their_hash_and_the_default_set():
    configs = load_strategies(default_strategy_dir())
    assert [c.name for c in configs] == ["v51_baseline", "v52_8signals", "v53"]  # regimes/ is not loaded
    assert all(c.regime is None and "regime" not in c.model_dump() for c in configs)
    assert parse_strategy(V53.model_dump(mode="json")).config_hash == V53.config_hash


# -- rules on hand-built rows ----------------------------------------------------------------------
def test_fires_standard_then_heavy_in_the_direction_of_the_sign():
    long_row = feats(LONG, vpin=0.7, cvd_divergence=0.0)
    e = score(long_row, CFG)
    assert (e.direction, e.score, e.tier, e.block_reason) == (LONG, 75.0, "standard", None)
    assert e.notes == ("regime:demo: heavy: cvd_divergence aligned = 0, not > 0",)
    assert e.layer_scores == {} and e.gate is None
    heavy = score(feats(SHORT, vpin=0.7, cvd_divergence=-1.0), CFG)  # bearish divergence is aligned for SHORT
    assert (heavy.direction, heavy.score, heavy.tier, heavy.notes) == (SHORT, 85.0, "heavy", ())


def test_does_not_fire_when_a_condition_is_false_and_says_which():
    e = score(feats(LONG, vpin=0.7, whale_ratio_15m=0.1), CFG)
    assert (e.direction, e.score, e.tier, e.block_reason) == (None, 0.0, None, "rules_not_met")
    assert e.notes == ("regime:demo: whale_ratio_15m aligned = 0.1, not >= 0.2",)
    against = score(feats(LONG, vpin=0.7, whale_ratio_15m=-0.5), CFG)  # whales selling into a LONG
    assert against.block_reason == "rules_not_met"


def test_missing_input_never_counts_as_true():
    e = score(feats(LONG, vpin=None, whale_ratio_15m=0.0), CFG)  # one missing, one false
    assert (e.direction, e.score, e.block_reason) == (None, 0.0, "missing_input")
    assert set(e.notes) == {"missing:vpin", "regime:demo: whale_ratio_15m aligned = 0, not >= 0.2"}
    ne = parse_strategy(with_("regime.conditions.1", {"feature": "vpin", "op": "!=", "value": 0.3}))
    assert score(feats(LONG, vpin=None), ne).block_reason == "missing_input"  # NaN != 0.3 is not "true"
    heavy_missing = score(feats(LONG, vpin=0.7, cvd_divergence=None), CFG)
    assert (heavy_missing.tier, heavy_missing.notes) == ("standard", ("missing:cvd_divergence",))


def test_direction_from_a_sign_zero_or_missing_is_no_signal():
    flat = score(feats(LONG, vpin=0.7, cvd=((1_800_000, 0.0), (14_400_000, 5.0))), CFG)
    assert (flat.direction, flat.block_reason, flat.notes[0]) == (
        None,
        "no_direction",
        "regime:demo: cvd_fast is 0, no direction",
    )
    data = with_("regime.sign_of", "obi")
    data["regime"]["invert"] = True
    faded = score(feats(LONG, vpin=0.7, obi=-0.2, whale_ratio_15m=0.3), parse_strategy(data))
    assert faded.direction == LONG  # inverted: OBI leaning to the asks -> LONG
    missing = score(feats(LONG, vpin=0.7, obi=None), parse_strategy(data))
    assert (missing.block_reason, missing.notes[0]) == ("missing_input", "missing:obi")


def test_fixed_direction_and_derived_features():
    data = with_(
        "regime",
        {
            "name": "quiet",
            "direction": "SHORT",
            "conditions": [
                {"feature": "price_vwap_dev", "op": "<=", "value": -0.0003},
                {"feature": "liq_net_usd_5m", "op": ">", "value": 1000},
                {"feature": "atr_price_ratio", "op": ">=", "value": 0.004},
            ],
        },
    )
    cfg = parse_strategy(data)
    row = feats(SHORT, last_price=29_990.0, vwap_30m=30_005.0, liq_short_usd_5m=5000.0, liq_long_usd_5m=1000.0)
    e = score(row, cfg)
    assert (e.direction, e.tier) == (SHORT, "standard")
    missing = score(feats(SHORT, vwap_30m=None, liq_short_usd_5m=5000.0), cfg)
    assert (missing.block_reason, missing.notes) == ("missing_input", ("missing:price_vwap_dev",))


# -- one implementation: score == score_frames ----------------------------------------------------
def _random_rows(rng: np.random.Generator, n: int) -> list:
    rows = []
    for i in range(n):

        def maybe(value):
            return None if rng.random() < 0.1 else value

        s = LONG if rng.random() < 0.5 else SHORT
        fast = float(rng.choice([-1.0, 0.0, 1.0]) * rng.uniform(0, 100))
        rows.append(
            feats(
                s,
                time_ms=1_700_006_400_000 + 1000 * i,
                cvd=((1_800_000, fast), (14_400_000, rng.normal(0, 50))),
                vpin=maybe(float(rng.uniform(0, 1))),
                whale_ratio_15m=float(rng.uniform(-1, 1)),
                cvd_divergence=maybe(float(rng.choice([-1.0, 0.0, 1.0]))),
                obi=maybe(float(rng.uniform(-0.5, 0.5))),
                vwap_30m=maybe(30_000.0 + rng.normal(0, 30)),
                liq_cascade_long=maybe(float(rng.integers(0, 2))),
                liq_cascade_short=maybe(float(rng.integers(0, 2))),
                oi_change_5m=maybe(float(rng.normal(0, 0.003))),
            )
        )
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_row_score_equals_score_frames_on_generated_frames(seed):
    regimes = load_strategies(default_strategy_dir() / "regimes")
    cfgs = [CFG, *regimes, V53]  # a regime strategy beside a layered one in one call
    rows = _random_rows(np.random.default_rng(seed), 300)
    frame = FeatureFrame.from_features(rows)
    scored = score_frames(frame, cfgs)
    fired = 0
    for cfg, frame_scores in zip(cfgs, scored):
        for i, row in enumerate(rows):
            one = score(row, cfg)
            many = evaluation_at(frame, frame_scores, cfg, i)
            assert one == many, (cfg.name, i)
            fired += one.tier is not None
    assert fired > 0


def test_regime_strategies_leave_layered_scores_bit_identical():
    rows = _random_rows(np.random.default_rng(9), 200)
    frame = FeatureFrame.from_features(rows)
    alone = score_frames(frame, [V53])[0]
    beside = score_frames(frame, [CFG, V53])[1]
    for name in ("sign", "raw_score", "score", "tier", "gate", "block"):
        assert np.array_equal(getattr(alone, name), getattr(beside, name)), name
    assert alone.regime is None and all(np.array_equal(alone.layers[k], beside.layers[k]) for k in alone.layers)
    assert not math.isnan(float(alone.score.sum()))
