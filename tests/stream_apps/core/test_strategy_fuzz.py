"""Strategy files at their edge (stream_apps/core/strategy.py `load_strategy`).

Why: a strategy file is written by hand; the engine and `tapeflow backtest` catch only
`StrategyConfigError` (the backtest prints it after "bad strategy file: ") and anything else is a
traceback. Its message is what the user has to fix the file from, so it must name the file and fit
on one line. So: any bytes in a .yaml/.yml/.json file, and the shipped strategy with fields replaced
by odd values, load to a config or raise a one-line `StrategyConfigError` naming the file; the
shipped strategy survives a YAML and a JSON round trip unchanged (same config hash).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from stream_apps.core.strategy import StrategyConfigError, default_strategy_dir, load_strategy
from tests.support.fuzz import FUZZ, json_values, one_line

SHIPPED = yaml.safe_load((default_strategy_dir() / "v51_baseline.yaml").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("strategy-fuzz")


def load(folder: Path, suffix: str, content: bytes):
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(content)
    try:
        return load_strategy(path)
    except StrategyConfigError as exc:
        assert str(path) in one_line(exc), exc
        return None


@FUZZ
@given(
    suffix=st.sampled_from([".yaml", ".yml", ".json"]),
    content=st.one_of(
        st.binary(max_size=80),
        st.text(max_size=80).map(str.encode),
        st.builds(lambda v: yaml.safe_dump(v).encode(), json_values),
    ),
)
# found by this property: bytes that are not UTF-8 escaped as UnicodeDecodeError (only OSError was caught)
@example(suffix=".yaml", content=b"name: \xff\n")
# found by this property: YAML's own messages span lines ("while parsing ...\n  in ..., line 1")
@example(suffix=".yaml", content=b"a: [b\n")
@example(suffix=".json", content=b"{\n")
@example(suffix=".yaml", content=b"[" * 2000)  # nesting deeper than the parser's recursion
def test_any_file_loads_or_is_a_one_line_strategy_config_error(folder, suffix, content):
    load(folder, suffix, content)


def _paths(value, prefix=()) -> list[tuple]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _paths(v, (*prefix, k))] + [prefix]
    return [prefix]


def _replace(value, path, new):
    if not path:
        return new
    return {**value, path[0]: _replace(value[path[0]], path[1:], new)}


odd = st.one_of(
    json_values,
    st.sampled_from(
        [
            "30m",
            "0s",
            "-5m",
            "25h",
            "",
            "nan",
            ".inf",
            -1,
            0,
            1e308,
            True,
            "99999999999999999999d",
            [1, 0.5, 2],
            {"BTCUSDT": "x"},
        ]
    ),
)


@FUZZ
@given(path=st.sampled_from(_paths(SHIPPED)), new=odd, key=st.text(max_size=6))
@example(path=("windows",), new={"cvd_fast": "30m", "cvd_mid": "4h", "a\nb": 1}, key="")  # an unknown key with a
def test_the_shipped_strategy_with_an_odd_field_loads_or_is_an_error(folder, path, new, key):  # line break
    """Each field (or whole section) replaced by an odd value; `key` adds an unknown top-level field."""
    data = _replace(SHIPPED, path, new) if path else new
    if key and isinstance(data, dict):
        data = {**data, key: 1}
    load(folder, ".yaml", yaml.safe_dump(data, allow_unicode=True).encode())


def test_the_shipped_strategies_round_trip_through_yaml_and_json(folder):
    for shipped in sorted(default_strategy_dir().glob("*.yaml")):
        config = load_strategy(shipped)
        data = config.model_dump(mode="json")
        assert load(folder, ".json", json.dumps(data).encode()).config_hash == config.config_hash
        assert load(folder, ".yml", yaml.safe_dump(data).encode()).config_hash == config.config_hash
