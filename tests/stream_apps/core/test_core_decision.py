"""Warm-up, cooldown (persisted), flips, exit plans and pnl_r by hand."""

from __future__ import annotations

import json

import pytest

from stream_apps.core.cooldown import CooldownBook
from stream_apps.core.decision import decide
from stream_apps.core.exits import CostModel, plan_exits, pnl_r
from stream_apps.core.scoring import LONG, SHORT, score
from stream_apps.core.strategy import Exits
from tests.support.scoring import V51, V53, T, feats

MIN = 60_000


def run(book, direction=LONG, t=T, cfg=V53, **overrides):
    f = feats(direction, time_ms=t, **overrides)
    return decide(score(f, cfg), f, cfg, book)


def test_signal_carries_an_exit_plan_in_r():
    decision = run(CooldownBook())
    e, plan = decision.evaluation, decision.plan
    assert e.fired and e.tier == "heavy" and not e.is_flip
    # v53: 1R = 2.0 x ATR 150 = 300; entry 30000
    assert (plan.entry, plan.risk_distance, plan.sl, plan.tp1, plan.tp2) == (
        30_000.0,
        300.0,
        29_700.0,
        30_225.0,
        30_450.0,
    )
    assert (plan.tp1_r, plan.tp2_r, plan.timeout_ms, plan.risk_multiplier) == (0.75, 1.5, 240 * MIN, 1.5)
    short = run(CooldownBook(), SHORT).plan
    assert (short.sl, short.tp1, short.tp2) == (30_300.0, 29_775.0, 29_550.0)


def test_no_signal_until_the_warmup_window_is_covered():
    book = CooldownBook()
    cold = run(book, coverage_start_ms=T - 23 * 3_600_000)
    assert (cold.evaluation.block_reason, cold.plan) == ("warmup", None)
    assert cold.evaluation.score == 100  # still scored, for the audit trail
    assert book.last_fired_ms == {}  # a blocked evaluation does not start a cooldown
    assert run(book, coverage_start_ms=T - 24 * 3_600_000).evaluation.fired
    assert run(CooldownBook(), coverage_start_ms=None).evaluation.block_reason == "warmup"


def test_cooldown_per_symbol_and_direction():
    book = CooldownBook()
    assert run(book, t=T).evaluation.fired
    assert run(book, t=T + 5 * MIN).evaluation.block_reason == "cooldown"
    assert run(book, t=T + 10 * MIN - 1).evaluation.block_reason == "cooldown"
    assert run(book, t=T + 10 * MIN).evaluation.fired  # 10 min later
    assert run(book, t=T + 11 * MIN, symbol="ETHUSDT", atr=200.0).evaluation.fired  # other symbol: own key
    assert run(book, SHORT, t=T + 11 * MIN).evaluation.fired  # other direction: own key


def test_cooldown_survives_a_restart_as_plain_data():
    book = CooldownBook()
    assert run(book, t=T).evaluation.fired
    restored = CooldownBook.from_dict(json.loads(json.dumps(book.to_dict())))
    assert run(restored, t=T + 2 * MIN).evaluation.block_reason == "cooldown"
    assert run(CooldownBook(), t=T + 2 * MIN).evaluation.fired  # what the old system did after a restart


def test_flip_is_a_reverse_signal_at_or_above_the_flip_threshold():
    book = CooldownBook()
    run(book, LONG, t=T)
    flip = run(book, SHORT, t=T + MIN)
    assert flip.evaluation.fired and flip.evaluation.is_flip  # v53 flip threshold 85, score 100
    # below the flip threshold (but above entry) a reverse signal is a plain signal
    book = CooldownBook()
    run(book, LONG, t=T)
    plain = run(book, SHORT, t=T + MIN, long_short_ratio=1.2, top_trader_long_share=0.5, oi_change=0.01)
    # direction 55 + LS 1.2 (> 1.0: 7 for SHORT) + top share 0.5 (5) + OI +1 % (10) + premium (5) = 82
    assert plain.evaluation.score == 55 + 7 + 5 + 10 + 5
    assert plain.evaluation.fired and not plain.evaluation.is_flip
    # the same direction again is never a flip, and a previous signal older than the timeout is not either
    book = CooldownBook()
    run(book, LONG, t=T)
    assert not run(book, LONG, t=T + 20 * MIN).evaluation.is_flip
    assert not run(book, SHORT, t=T + 20 * MIN + 241 * MIN).evaluation.is_flip


def test_v51_flips_at_75():
    book = CooldownBook()
    run(book, LONG, t=T, cfg=V51)
    reverse = run(book, SHORT, t=T + MIN, cfg=V51, long_short_ratio=1.2, top_trader_long_share=0.5, oi_change=0.01)
    assert 75 <= reverse.evaluation.score < 85 and reverse.evaluation.is_flip


def test_without_atr_no_exits_can_be_placed():
    decision = run(CooldownBook(), cfg=V51, atr=None)  # v51 has no volatility gate
    assert (decision.evaluation.block_reason, decision.plan) == ("missing_atr", None)


EXITS = Exits(sl_atr_mult=2.0, tp1_r=0.75, tp2_r=1.5, timeout_min=240)
NO_COSTS = CostModel(entry_fee=0.0, tp_fee=0.0, stop_fee=0.0)


def test_gross_pnl_r_by_exit_reason():
    plan = plan_exits(LONG, 100.0, 1.0, EXITS)  # R = 2.0; SL 98, TP1 101.5, TP2 103
    assert pnl_r(plan, "sl", costs=NO_COSTS) == -1.0
    assert pnl_r(plan, "sl_be", costs=NO_COSTS) == 0.5 * 0.75
    assert pnl_r(plan, "tp", costs=NO_COSTS) == 0.5 * 0.75 + 0.5 * 1.5
    assert pnl_r(plan, "timeout", exit_price=101.0, costs=NO_COSTS) == 0.5  # (101 - 100) / 2
    assert pnl_r(plan, "signal_flip", exit_price=99.0, costs=NO_COSTS) == -0.5
    # after TP1 the banked half counts (the old flip ignored it): 0.375 + 0.5 x (-0.5)
    assert pnl_r(plan, "signal_flip", exit_price=99.0, tp1_hit=True, costs=NO_COSTS) == 0.375 - 0.25
    short = plan_exits(SHORT, 100.0, 1.0, EXITS)
    assert pnl_r(short, "timeout", exit_price=99.0, costs=NO_COSTS) == 0.5
    with pytest.raises(ValueError):
        pnl_r(plan, "sl", tp1_hit=True)
    with pytest.raises(ValueError):
        pnl_r(plan, "timeout")


def test_fees_and_slippage_in_r():
    plan = plan_exits(LONG, 100.0, 1.0, EXITS)  # R = 2
    taker = CostModel()  # 0.05 % per side
    # SL: entry fee 0.0005 x 100 + exit fee 0.0005 x 98 = 0.099 price units = 0.0495 R
    assert pnl_r(plan, "sl", costs=taker) == pytest.approx(-1.0 - 0.0495)
    # TP with maker take-profits: 0.0005 x 100 + 0.0002 x (0.5 x 101.5 + 0.5 x 103) = 0.07045 -> 0.035225 R
    maker_tp = CostModel(tp_fee=0.0002)
    assert pnl_r(plan, "tp", costs=maker_tp) == pytest.approx(1.125 - 0.035225)
    # 2 bps slippage per fill on a timeout at 100: 0.0002 x (100 + 100) = 0.04 -> 0.02 R
    assert pnl_r(plan, "timeout", exit_price=100.0, costs=CostModel(0, 0, 0, 2.0)) == pytest.approx(-0.02)


def test_exit_plan_rejects_impossible_inputs():
    with pytest.raises(ValueError):
        plan_exits(LONG, 100.0, 0.0, EXITS)
    with pytest.raises(ValueError):
        plan_exits("UP", 100.0, 1.0, EXITS)
