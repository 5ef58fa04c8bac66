"""Rollout states (stream_apps.core.rollout): the record form, the canary's symbols from a share, and
which revisions a running engine can switch to."""

from __future__ import annotations

import hashlib

import pytest

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.rollout import Canary, Revision, RolloutState, canary_symbols, parse_share, restart_reason
from stream_apps.core.strategy import StrategyConfigError, load_strategy
from tests.support.rollout import ROLLOUT_CANARY, V53_TEXT, v53_variant

SYMBOLS = [
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "BNBUSDT",
    "DOGEUSDT",
    "ADAUSDT",
    "LINKUSDT",
    "AVAXUSDT",
    "TONUSDT",
]


def test_a_state_round_trips_through_its_topic_schema():
    state = RolloutState.from_record(ROLLOUT_CANARY)
    assert state.canary == Canary(2, "b" * 64, "name: v53\ncooldown: 15m\n", ("BTCUSDT",))
    serde = AvroSerde(FileSchemaRegistry())
    assert RolloutState.from_record(serde.decode(serde.encode("config.rollouts", state.as_record()))) == state
    assert state.rev_for("BTCUSDT").rev == 2 and state.rev_for("ETHUSDT").rev == 1


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="unknown rollout action 'deploy'"):
        RolloutState("v53", 1, Revision(1, "a", ""), None, "deploy", "ops", "", 0)


@pytest.mark.parametrize(("share", "count"), [(10, 1), (0.5, 1), (20, 2), (25, 3), (50, 5), (100, 10)])
def test_a_share_takes_the_ceiling_of_its_symbols_ranked_by_hash(share, count):
    chosen = canary_symbols(SYMBOLS, share, "salt")
    assert len(chosen) == count
    # ranked by sha256("salt:SYMBOL"), computed here by hand over the sorted pool
    by_hash = sorted(SYMBOLS, key=lambda s: hashlib.sha256(f"salt:{s}".encode()).hexdigest())
    assert chosen == tuple(sorted(by_hash[:count]))
    assert canary_symbols(reversed(SYMBOLS), share, "salt") == chosen  # the order given does not matter


def test_different_candidates_usually_get_different_canaries():
    picks = {canary_symbols(SYMBOLS, 10, f"hash{i}") for i in range(20)}
    assert len(picks) > 3


@pytest.mark.parametrize(("text", "share"), [("10%", 10.0), ("2.5", 2.5), (" 100 % ", 100.0)])
def test_shares_parse(text, share):
    assert parse_share(text) == share


@pytest.mark.parametrize("text", ["0%", "150%", "ten", "-5", "nan"])
def test_bad_shares_are_refused(text):
    with pytest.raises(ValueError, match="--canary"):
        parse_share(text)


def test_a_revision_that_only_retunes_scoring_can_be_hot_switched(tmp_path):
    current = load_strategy("v53")
    retuned = load_strategy(v53_variant(tmp_path, "retuned", "cooldown: 10m", "cooldown: 15m"))
    assert retuned.config_hash != current.config_hash
    assert restart_reason(current, retuned) is None


def test_a_revision_with_other_windows_needs_a_restart(tmp_path):
    current = load_strategy("v53")
    windows = load_strategy(v53_variant(tmp_path, "windows", "cvd_fast: 30m", "cvd_fast: 20m"))
    why = restart_reason(current, windows)
    assert why is not None and why.startswith("windows.cvd_fast differ") and "restart" in why


def test_a_revision_of_another_strategy_is_not_a_switch():
    assert restart_reason(load_strategy("v53"), load_strategy("v51_baseline")) == (
        "the candidate is strategy 'v51_baseline', not 'v53'"
    )


def test_a_revision_parses_its_content():
    assert Revision(1, "x", V53_TEXT).config().config_hash == load_strategy("v53").config_hash
    with pytest.raises(StrategyConfigError, match="not valid YAML"):
        Revision(1, "x", "a: [").config()
