"""The engine's revisions: every evaluation and signal carries the registered revision of the config
that made it (config_rev), and a revision switch scheduled at ``switch_point`` changes exactly the
evaluations at or after that point (the canary's symbols only), the same whether the input comes in
one call or many, after a restart from the engine's plain-data state, or on a replay that schedules
the recorded switch up front."""

from __future__ import annotations

import pytest
import yaml

from stream_apps.core.engine import Engine
from stream_apps.core.engine_rollout import Switch, SwitchRefused
from stream_apps.core.rollout import Canary, Revision
from stream_apps.core.strategy import parse_strategy
from tests.stream_apps.core.test_core_engine import FAST, SHIPPED, _run, _stream

FAST_DATA = FAST.model_dump(mode="json")


def _revision(rev: int, **changes) -> Revision:
    content = yaml.safe_dump({**FAST_DATA, **changes}, sort_keys=False)
    return Revision(rev, parse_strategy(yaml.safe_load(content)).config_hash, content)


REV1 = _revision(1)
REV2 = _revision(2, version="2")  # another hash, the same decisions


@pytest.fixture(scope="module")
def stream():
    return _stream()


@pytest.fixture(scope="module")
def before(stream):
    """The run on revision 1 throughout."""
    return _run(Engine([FAST.at_rev(1)]), stream, 700)


def test_records_carry_their_strategys_revision(stream):
    out = _run(Engine([FAST.at_rev(5), *SHIPPED]), stream[: len(stream) // 2], 1000)
    revs = {(f["strategy"], f["config_rev"]) for f in out.features}
    assert revs == {("fast_test", 5)} | {(cfg.name, 0) for cfg in SHIPPED}
    assert out.signals and {s["config_rev"] for s in out.signals} == {5}


def _switched(stream, split: int, batch: int, restart: bool = False):
    engine = Engine([FAST.at_rev(1)])
    out = _run(engine, stream[:split], batch)
    point = engine.switch_point()
    evaluated = max(f["eval_time"] for f in out.features)
    assert point > evaluated and point % engine.params.eval_interval_ms == 0  # nothing in flight switches
    engine.schedule_switch(Switch("fast_test", 1, point, REV1, Canary(2, REV2.config_hash, REV2.content, ("ETHUSDT",))))
    if restart:
        engine = Engine.from_dict(engine.to_dict(), [FAST.at_rev(1)])
    out.extend(_run(engine, stream[split:], batch))
    return out, point


def _as_rev2(record: dict, id_field: str) -> dict:
    return {
        **record,
        "config_rev": 2,
        "config_hash": REV2.config_hash,
        "strategy_version": "2",
        id_field: record[id_field].replace(REV1.config_hash, REV2.config_hash),
    }


def test_a_canary_switch_changes_only_its_symbols_from_the_switch_point(stream, before):
    out, point = _switched(stream, len(stream) // 2, 700)
    assert REV1.config_hash == FAST.config_hash  # the engine started on revision 1's content

    def expected(records: list[dict], id_field: str) -> list[dict]:
        return [_as_rev2(r, id_field) if r["symbol"] == "ETHUSDT" and r["eval_time"] >= point else r for r in records]

    assert out.features == expected(before.features, "evaluation_id")
    assert out.signals == expected(before.signals, "signal_id")
    eth = [f for f in out.features if f["symbol"] == "ETHUSDT"]
    assert {f["config_rev"] for f in eth if f["eval_time"] < point} == {1}
    assert {f["config_rev"] for f in eth if f["eval_time"] >= point} == {2}
    assert {f["config_rev"] for f in out.features if f["symbol"] == "BTCUSDT"} == {1}


def test_restart_and_replay_reproduce_the_switch(stream):
    split = len(stream) // 2
    live, point = _switched(stream, split, 700)
    restarted, again = _switched(stream, split, 700, restart=True)
    assert again == point and restarted == live
    # a replay schedules the recorded switch before any input and is fed in other batches
    replay = Engine([FAST.at_rev(1)])
    replay.schedule_switch(Switch("fast_test", 1, point, REV1, Canary(2, REV2.config_hash, REV2.content, ("ETHUSDT",))))
    assert _run(replay, stream, 333) == live


def test_an_active_switch_with_other_decisions_keeps_everything_before_it(stream, before):
    slower = _revision(3, cooldown="9m")
    engine = Engine([FAST.at_rev(1)])
    out = _run(engine, stream[: len(stream) // 2], 700)
    point = engine.switch_point()
    engine.schedule_switch(Switch("fast_test", 4, point, slower, None))
    out.extend(_run(engine, stream[len(stream) // 2 :], 700))
    assert [f for f in out.features if f["eval_time"] < point] == [f for f in before.features if f["eval_time"] < point]
    after = [f for f in out.features if f["eval_time"] >= point]
    assert after and {(f["config_rev"], f["config_hash"]) for f in after} == {(3, slower.config_hash)}
    # an old state re-read from the topic is ignored
    engine.schedule_switch(Switch("fast_test", 3, point, REV1, None))
    assert engine.revisions.pending == []


def test_a_switch_that_needs_a_restart_is_refused():
    engine = Engine([FAST.at_rev(1)])
    windows = _revision(2, windows={"cvd_fast": "10m", "cvd_mid": "30m"})
    with pytest.raises(SwitchRefused, match="a restart is needed: windows.cvd_fast differ"):
        engine.schedule_switch(Switch("fast_test", 1, 0, windows, None))
    with pytest.raises(SwitchRefused, match="not a strategy this engine runs"):
        engine.schedule_switch(Switch("v53", 1, 0, REV1, None))
    forged = Revision(2, "f" * 64, REV2.content)
    with pytest.raises(SwitchRefused, match="hashes to"):
        engine.schedule_switch(Switch("fast_test", 1, 0, forged, None))
