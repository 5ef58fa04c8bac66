"""Counterfactual exits replayed through the executor's own exit and paper-fill code: the replay at x1
reproduces the trade the executor made, and a moved stop gives what a hand computation says.

Numbers: 1R = 200 USDT (10,000 x 2 %), risk distance 2.0 => qty 100; taker fee 0.05 % per fill.
"""

from __future__ import annotations

import math

import pytest

from execution.config import ExecutorConfig, PaperFills
from review.autopsy import build_autopsy, infer_model
from review.counterfactual import counterfactuals, replay
from tests.review.planted import FUNDING_T, S, facts_of, paper_trade
from tests.support.execution import T0

TIMEOUT = 15 * 60 * S
# LONG at 100, stop 98, TP1 102, TP2 104; every trade is one second after the one before
PATH = [100.0, 99.5, 98.9, 98.8, 101.0, 102.1, 102.4, 103.0, 104.5, 104.3]


def _tp_trade(config: ExecutorConfig | None = None):
    steps = [("trade", p, T0 + (i + 1) * S) for i, p in enumerate(PATH)]
    steps += [("trade", 103.0, T0 + 11 * S + k * 60 * S) for k in range(17)]  # on past the timeout
    return paper_trade(steps, config=config, price=100.0, risk=2.0, tp1_r=1.0, tp2_r=2.0, timeout_ms=TIMEOUT)


def test_the_replay_as_traded_reproduces_the_executors_exit_reason_and_pnl():
    planted = _tp_trade(ExecutorConfig(paper=PaperFills(slippage_bps=2.0)))
    closed = planted.closed()
    assert closed["exit_reason"] == "tp"
    facts = facts_of(planted)
    model = infer_model(facts)
    assert model.slippage_bps == pytest.approx(2.0, abs=1e-9)  # measured from the paper fills
    cf = counterfactuals(facts.opened, facts.path, facts.marks, model)
    base = cf.baseline
    assert base.exit_reason == "tp" and base.exit_time == closed["event_time"]
    assert base.exit_price == pytest.approx(closed["exit_price"], rel=1e-12)
    assert base.net_r == pytest.approx(closed["pnl_r_net"], abs=1e-9)
    assert base.gross_r == pytest.approx(closed["pnl_r_gross"], abs=1e-9)
    for s in cf.scenarios:  # scale 1 is the reference of every delta
        assert s.delta_net_r == pytest.approx(s.outcome.net_r - base.net_r)
    assert build_autopsy(facts).replay_matches


def test_a_tighter_stop_is_hit_where_the_hand_computation_says():
    facts = facts_of(_tp_trade())
    model = infer_model(facts)
    out = replay(facts.opened, facts.path, facts.marks, model, actual_r_usd=200.0, knob="sl", scale=0.5)
    # stop at 99: triggered by 98.9 (t+3 s), filled at the next trade, 98.8, no modelled slippage
    entry_fee, exit_fee = 0.0005 * 100.0 * 100, 0.0005 * 98.8 * 100
    cash = (98.8 - 100.0) * 100 - entry_fee - exit_fee
    assert (out.exit_reason, out.exit_time, out.exit_price) == ("sl", T0 + 4 * S, 98.8)
    assert out.gross_r == pytest.approx(-0.5)
    assert out.slippage_r == pytest.approx((99.0 - 98.8) / 2.0)  # past the level, in R
    assert out.net_r == pytest.approx(cash / 200.0)
    assert out.roi_pct == pytest.approx(100 * cash / (100 * 100.0))


def test_wider_targets_run_the_path_on_to_the_timeout_and_size_scales_the_cash():
    facts = facts_of(_tp_trade())
    model = infer_model(facts)
    cf = counterfactuals(facts.opened, facts.path, facts.marks, model)
    by = {(s.knob, s.scale): s.outcome for s in cf.scenarios}
    # TP x1.5: TP1 at 103 (hit by 103.0 at t+8 s, filled at 104.5), TP2 at 106 never: the timeout closes the
    # half left at the first trade at or after entry + 15 min, filled at the trade after it
    wide = by[("tp", 1.5)]
    assert wide.exit_reason == "timeout" and wide.tp1_hit
    entry_time = facts.opened["event_time"]
    first_late = min(int(t) for t in facts.path.times if t >= entry_time + TIMEOUT)
    assert wide.exit_time == min(int(t) for t in facts.path.times if t > first_late)
    half_cash = 50 * (104.5 - 100.0) + 50 * (103.0 - 100.0)
    fees = 0.0005 * (100.0 * 100 + 104.5 * 50 + 103.0 * 50)
    assert wide.net_r == pytest.approx((half_cash - fees) / 200.0)
    # size x0.5: the same exits, half the cash
    assert by[("size", 0.5)].net_r == pytest.approx(cf.baseline.net_r * 0.5)
    assert by[("size", 0.5)].roi_pct == pytest.approx(cf.baseline.roi_pct)
    assert not any(math.isnan(o.net_r) for o in by.values())


def test_funding_paid_over_a_settlement_is_replayed():
    steps = [("mark", 100.0, 0.0001, FUNDING_T - 120 * S), ("mark", 101.0, 0.0003, FUNDING_T - S)]
    steps += [("trade", 100.0 + 0.01 * i, FUNDING_T - 50 * S + i * 10 * S) for i in range(30)]
    steps += [("mark", 101.0, 0.0002, FUNDING_T + 2 * S)]
    planted = paper_trade(steps, eval_time=FUNDING_T - 60 * S, price=100.0, risk=2.0, timeout_ms=4 * 60 * S)
    closed = planted.closed()
    assert closed["exit_reason"] == "timeout" and closed["funding_r"] == pytest.approx(100 * 101.0 * 0.0003 / 200)
    facts = facts_of(planted)
    cf = counterfactuals(facts.opened, facts.path, facts.marks, infer_model(facts))
    assert cf.baseline.funding_r == pytest.approx(closed["funding_r"], abs=1e-12)
    assert cf.baseline.net_r == pytest.approx(closed["pnl_r_net"], abs=1e-9)
