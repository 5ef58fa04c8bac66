"""Strategy files: shipped configs, validation messages, and a config_hash that only tracks meaning."""

from __future__ import annotations

import copy
import hashlib
import json

import pytest
import yaml

from stream_apps.core.strategy import (
    StrategyConfigError,
    default_strategy_dir,
    load_strategies,
    load_strategy,
    parse_strategy,
)

BASE = {
    "name": "demo",
    "version": "1",
    "windows": {"cvd_fast": "30m", "cvd_mid": "4h"},
    "weights": {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 5},
    "thresholds": {"entry": 75, "heavy": 85, "flip": 85},
    "exits": {"sl_atr_mult": 2.0, "tp1_r": 0.75, "tp2_r": 1.5, "timeout_min": 240},
}


def test_shipped_strategies_follow_design():
    configs = {c.name: c for c in load_strategies(default_strategy_dir())}
    assert sorted(configs) == ["v51_baseline", "v52_8signals", "v53"]
    v51, v52, v53 = configs["v51_baseline"], configs["v52_8signals"], configs["v53"]
    assert (v51.weights.direction, v52.weights.direction, v53.weights.direction) == (45, 40, 55)
    assert (v51.weights.crowding, v52.weights.crowding, v53.weights.crowding) == (20, 25, 25)
    assert v51.weights.confirmation == v52.weights.confirmation == 15 and v53.weights.confirmation == 0
    assert (v52.weights.funding, v52.weights.liquidation) == (5, 5)
    for c in configs.values():
        assert (c.thresholds.entry, c.thresholds.heavy) == (75, 85)
        assert c.cooldown == 600_000 and c.warmup == 86_400_000
        assert (c.windows.cvd_fast, c.windows.cvd_mid) == (1_800_000, 14_400_000)
        assert (c.sizing.risk_pct, c.sizing.tier_multipliers.standard, c.sizing.tier_multipliers.heavy) == (
            2.0,
            1.0,
            1.5,
        )
    gates = v53.gates
    assert [gates.min_atr_price.value_for(s) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")] == [
        0.002,
        0.003,
        0.004,
        0.006,
    ]
    assert [gates.obi_against.value_for(s) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")] == [
        0.30,
        0.35,
        0.40,
        0.45,
    ]
    assert [gates.spot_perp_divergence.value_for(s) for s in ("BTCUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT")] == [
        0.003,
        0.005,
        0.006,
        0.008,
    ]
    assert gates.whale_against.value_for("BTCUSDT") == 0.5 and gates.whale_against.value_for("ETHUSDT") is None
    assert v51.gates.min_atr_price is None and v52.gates.obi_against is None


def test_config_hash_is_sha256_of_the_canonical_validated_json():
    config = parse_strategy(BASE)
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    assert config.config_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert len(config.config_hash) == 64


def test_config_hash_ignores_key_order_whitespace_format_and_spelling(tmp_path):
    reordered = dict(reversed(list(copy.deepcopy(BASE).items())))
    reordered["windows"] = {"cvd_mid": 14_400_000, "cvd_fast": "30m"}  # same durations, other spelling
    reordered["thresholds"] = {"flip": 85.0, "heavy": 85, "entry": 75}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    (tmp_path / "b.json").write_text(json.dumps(reordered, indent=7))
    (tmp_path / "c.yml").write_text("# comment\n" + yaml.safe_dump(reordered, default_flow_style=True, width=20))
    hashes = {load_strategy(tmp_path / f).config_hash for f in ("a.yaml", "b.json", "c.yml")}
    assert len(hashes) == 1


def test_config_hash_changes_with_any_value():
    changed = copy.deepcopy(BASE)
    changed["exits"]["tp2_r"] = 1.6
    defaults_spelled_out = copy.deepcopy(BASE)
    defaults_spelled_out["cooldown"] = "10m"  # the default: same meaning, same hash
    assert parse_strategy(changed).config_hash != parse_strategy(BASE).config_hash
    assert parse_strategy(defaults_spelled_out).config_hash == parse_strategy(BASE).config_hash


def _error(mutate) -> str:
    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(StrategyConfigError) as info:
        parse_strategy(data, "demo.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d["windows"].update(cvd_slow="1h"), "windows.cvd_slow: Extra inputs are not permitted"),
        (lambda d: d.update(colour="red"), "colour: Extra inputs are not permitted"),
        (lambda d: d["thresholds"].update(heavy=70), "thresholds: heavy (70.0) must be >= entry (75.0)"),
        (lambda d: d["thresholds"].update(flip=60), "thresholds: flip (60.0) must be >= entry"),
        (lambda d: d["exits"].update(tp2_r=0.5), "exits: tp2_r (0.5) must be greater than tp1_r (0.75)"),
        (lambda d: d["exits"].update(sl_atr_mult=0), "exits.sl_atr_mult: Input should be greater than 0"),
        (lambda d: d["windows"].update(cvd_fast="30x"), "windows.cvd_fast: invalid duration '30x'"),
        (lambda d: d["windows"].update(cvd_fast="4h"), "cvd_fast must be at most 1h"),
        (lambda d: d["windows"].update(cvd_fast="4h", cvd_mid="2h"), "windows"),
        (lambda d: d["windows"].update(cvd_fast="20m", cvd_mid="15m"), "cvd_fast must be shorter than cvd_mid"),
        (
            lambda d: d["thresholds"].update(entry=101, heavy=101, flip=101),
            "thresholds.entry (101.0) can never be reached",
        ),
        (lambda d: d["weights"].update(direction="lots"), "weights.direction: Input should be a valid number"),
        (lambda d: d["weights"].pop("crowding"), "weights.crowding: Field required"),
        (lambda d: d.update(name="Bad Name"), "name: String should match pattern"),
        (lambda d: d.update(gates={"obi_against": {"symbols": {"BTCUSDT": "x"}}}), "gates.obi_against.symbols.BTCUSDT"),
        (lambda d: d.update(rules={"top_trader_low": 0.6}), "rules: top_trader_low must be below top_trader_high"),
    ],
)
def test_invalid_strategies_are_rejected_with_field_and_reason(mutate, expected):
    message = _error(mutate)
    assert message.startswith("demo.yaml: ")
    assert expected in message


def test_file_level_errors(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(StrategyConfigError, match="broken.yaml: not valid YAML"):
        load_strategy(tmp_path / "broken.yaml")
    with pytest.raises(StrategyConfigError, match="list.json: a strategy file must contain a mapping"):
        load_strategy(tmp_path / "list.json")
    with pytest.raises(StrategyConfigError, match="unknown strategy file type"):
        load_strategy(tmp_path / "notes.txt")
    with pytest.raises(StrategyConfigError, match="cannot read"):
        load_strategy(tmp_path / "missing.yaml")


def test_duplicate_names_in_a_directory_are_rejected(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "b.json").write_text(json.dumps(BASE))
    with pytest.raises(StrategyConfigError, match="'demo' is defined twice"):
        load_strategies(tmp_path)
