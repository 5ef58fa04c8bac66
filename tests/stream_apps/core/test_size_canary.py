"""A canary by size (``tapeflow strategy promote FILE --canary-size PCT``): from the switch point both
revisions evaluate every symbol, the active revision's signals at (100 - PCT) % of the size and the
candidate's at PCT %, each with its config_rev; the candidate decides with its own cooldown book and its
signals hold their own position slot. Pure: the engine core on the core tests' synthetic stream, and the
executor's sizing and slot functions on its signals."""

from __future__ import annotations

import pytest

from execution.domain import Signal
from execution.sizing import signal_multiplier
from stream_apps.core.engine import Engine
from stream_apps.core.engine_rollout import Switch
from stream_apps.core.rollout import CANARY_LEG_SUFFIX, Canary, RolloutState, parse_share, size_shares
from tests.stream_apps.core.test_core_engine import FAST, _run, _stream
from tests.stream_apps.core.test_engine_rollout import REV1, REV2, _as_rev2

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def _size_canary(pct: float) -> Canary:
    return Canary(2, REV2.config_hash, REV2.content, SYMBOLS, pct)


@pytest.fixture(scope="module")
def stream():
    return _stream()


@pytest.fixture(scope="module")
def before(stream):
    return _run(Engine([FAST.at_rev(1)]), stream, 700)


def _canaried(stream, restart: bool = False):
    split = len(stream) // 2
    engine = Engine([FAST.at_rev(1)])
    out = _run(engine, stream[:split], 700)
    point = engine.switch_point()
    engine.schedule_switch(Switch("fast_test", 1, point, REV1, _size_canary(10)))
    if restart:
        engine = Engine.from_dict(engine.to_dict(), [FAST.at_rev(1)])
    out.extend(_run(engine, stream[split:], 700))
    return out, point


def _with_share(signal: dict, share: float) -> dict:
    return {**signal, "factors": {**signal["factors"], "size_share": share}}


def test_both_revisions_evaluate_every_symbol_at_their_share_from_the_switch(stream, before):
    out, point = _canaried(stream)
    # REV2 decides as REV1 (only its version differs): after the point each evaluation is made twice,
    # the active revision's first, and each signal comes twice, 90 % and 10 % of its size
    features, signals = [], []
    for f in before.features:
        features += [f, _as_rev2(f, "evaluation_id")] if f["eval_time"] >= point else [f]
    for s in before.signals:
        if s["eval_time"] < point:
            signals.append(s)
            continue
        candidate = _as_rev2(_with_share(s, 0.1), "signal_id")
        signals += [_with_share(s, 0.9), {**candidate, "signal_id": candidate["signal_id"] + CANARY_LEG_SUFFIX}]
    assert any(s["eval_time"] >= point for s in before.signals)  # the check has signals after the switch
    assert out.features == features
    assert out.signals == signals
    assert {s["symbol"] for s in out.signals if s["config_rev"] == 2} == set(SYMBOLS) & {
        s["symbol"] for s in before.signals if s["eval_time"] >= point
    }


def test_a_restart_continues_the_size_canary_and_the_candidates_cooldown(stream):
    live, point = _canaried(stream)
    restarted, again = _canaried(stream, restart=True)
    assert again == point and restarted == live
    engine = Engine([FAST.at_rev(1)])
    engine.schedule_switch(Switch("fast_test", 1, point, REV1, _size_canary(10)))
    _run(engine, stream, 700)
    books = engine.to_dict()["books"]
    assert set(books) == {"fast_test", "fast_test" + CANARY_LEG_SUFFIX}
    assert Engine.from_dict(engine.to_dict(), [FAST.at_rev(1)]).to_dict()["books"] == books


def test_the_executor_sizes_each_leg_by_its_share_in_its_own_slot(stream):
    out, point = _canaried(stream)
    after = [s for s in out.signals if s["eval_time"] >= point]
    active, candidate = after[0], after[1]
    assert (active["config_rev"], candidate["config_rev"]) == (1, 2)
    # the shares multiply the engine's size_mult (tier x model band) and add up to it
    total = active["size_mult"]
    assert signal_multiplier(active) == pytest.approx(0.9 * total)
    assert signal_multiplier(candidate) == pytest.approx(0.1 * total)
    assert signal_multiplier(active) + signal_multiplier(candidate) == pytest.approx(total)
    a, c = Signal.from_record(active), Signal.from_record(candidate)
    assert a.slot == ("fast_test", a.exchange, a.symbol)
    assert c.slot == ("fast_test" + CANARY_LEG_SUFFIX, c.exchange, c.symbol)
    # outside a canary by size nothing changes
    plain = next(s for s in out.signals if s["eval_time"] < point)
    assert "size_share" not in plain["factors"] and signal_multiplier(plain) == plain["size_mult"]


def test_shares_records_and_limits():
    assert size_shares(10) == (pytest.approx(0.9), pytest.approx(0.1))
    assert sum(size_shares(37.5)) == pytest.approx(1.0)
    state = RolloutState("fast_test", 3, REV1, _size_canary(25), "canary", "t", "", 0)
    assert RolloutState.from_record(state.as_record()) == state
    assert state.rev_for("ETHUSDT") == REV1  # both trade: the symbol's sole revision stays the active one
    old = {**state.as_record(), "canary": {k: v for k, v in _size_canary(25).as_record().items() if k != "size_pct"}}
    assert RolloutState.from_record(old).canary.size_pct is None  # a state from before canaries by size
    for bad in (0, 100, 150):
        with pytest.raises(ValueError):
            _size_canary(bad)
    assert parse_share("10%", "--canary-size", whole=False) == 10
    with pytest.raises(ValueError, match="--canary-size"):
        parse_share("100%", "--canary-size", whole=False)


def test_the_executor_opens_both_legs_of_one_trade_at_their_shares():
    """Through the executor and the paper broker: the active revision's and the candidate's signals of one
    trade both open, in their own slots, risking 90 % and 10 % of 1R; a second active signal on the
    symbol is held back by the active revision's position, not by the candidate's."""
    from tests.support.execution import T0, Harness, signal_record

    h = Harness()
    base = signal_record(eval_time=T0)
    active = {**base, "factors": {**base["factors"], "size_share": 0.9}, "size_mult": 1.0, "config_rev": 1}
    candidate = {
        **active,
        "signal_id": base["signal_id"].replace("abc123", "def456") + CANARY_LEG_SUFFIX,
        "config_hash": "def456",
        "factors": {**base["factors"], "size_share": 0.1},
        "config_rev": 2,
    }
    assert h.signal_rec(active).allowed and h.signal_rec(candidate).allowed
    h.trade(100.0, T0 + 500)
    opened = {p["config_rev"]: p for p in h.positions("opened")}
    r_usd = h.config.base_r_usd  # 1R of a signal with size_mult 1
    assert opened[1]["r_usd"] == pytest.approx(0.9 * r_usd) and opened[2]["r_usd"] == pytest.approx(0.1 * r_usd)
    assert opened[1]["qty"] + opened[2]["qty"] == pytest.approx(r_usd / 2.0)  # one trade's size, split
    later = {**active, "signal_id": active["signal_id"].replace(str(T0), str(T0 + 60_000)), "eval_time": T0 + 60_000}
    assert h.signal_rec(later).reason == "position_open"
    # a restarted executor rebuilds each position from its opened event, in the same slot
    from execution.position_manager import Position

    for rev, name in ((1, "v53"), (2, "v53" + CANARY_LEG_SUFFIX)):  # the harness's strategy is v53
        restored = Position.restore(opened[rev], None, timeout_ms=3_600_000)
        assert restored.slot == (name, opened[rev]["exchange"], opened[rev]["symbol"])


def test_the_two_legs_are_the_active_run_and_a_switch_to_the_candidate_side_by_side(stream, before):
    """A candidate that decides otherwise (a 9-minute cooldown, a higher entry): its leg is what a plain
    switch to it at the same point gives (its cooldown book starts as the active one's at the switch),
    and the active leg is the run that never switched, each at its share."""
    from tests.stream_apps.core.test_engine_rollout import _revision

    other = _revision(2, cooldown="9m", version="2")
    split = len(stream) // 2

    def run(canary: Canary | None, active) -> tuple:
        engine = Engine([FAST.at_rev(1)])
        out = _run(engine, stream[:split], 700)
        point = engine.switch_point()
        engine.schedule_switch(Switch("fast_test", 1, point, active, canary))
        out.extend(_run(engine, stream[split:], 700))
        return out, point

    canaried, point = run(Canary(2, other.config_hash, other.content, SYMBOLS, 25), REV1)
    switched, again = run(None, other)
    assert again == point
    legs = {rev: [s for s in canaried.signals if s["config_rev"] == rev and s["eval_time"] >= point] for rev in (1, 2)}
    assert legs[1] == [_with_share(s, 0.75) for s in before.signals if s["eval_time"] >= point]
    candidate = [s for s in switched.signals if s["eval_time"] >= point]
    assert candidate and len(candidate) < len(legs[1])  # the slower candidate signals less often
    assert legs[2] == [{**_with_share(s, 0.25), "signal_id": s["signal_id"] + CANARY_LEG_SUFFIX} for s in candidate]
