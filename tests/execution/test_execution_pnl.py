"""pnl_r of every exit path, hand-computed, through the executor and the paper broker.

Common setup unless a test says otherwise: LONG, entry on the next trade at 100, R = 2 (SL 98, TP1 102
with tp1_r = 1, TP2 104 with tp2_r = 2), standard tier so r_usd = 10,000 x 2 % = 200 and qty = 100,
taker fee 0.05 %, maker 0.02 %, no modelled slippage. Every expected number below is worked out in the
comment next to it from these inputs (fee in USDT / 200 = fee in R), and each test also checks that
net pnl_r equals the cash P&L of the fills divided by r_usd (an independent computation).
"""

from __future__ import annotations

import pytest

from execution.config import ExecutorConfig, PaperFills
from execution.pnl import gross_pnl_r, win_rate
from stream_apps.core.exits import CostModel, plan_exits
from stream_apps.core.exits import pnl_r as engine_pnl_r
from stream_apps.core.strategy import Exits
from tests.support.execution import T0, Harness, signal_record

S = 1000  # one second


def cash_net_r(h: Harness, r_usd: float = 200.0) -> float:
    """Independent check: signed cash flow of all fills minus all fees, over r_usd."""
    cash = 0.0
    for f in h.fills():
        cash += (-1 if f["side"] == "BUY" else 1) * f["price"] * f["qty"] - f["fee"]
    return cash / r_usd


def opened_long(config: ExecutorConfig | None = None) -> Harness:
    h = Harness(config)
    h.signal(eval_time=T0)
    h.trade(100.0, T0 + S)  # entry fill at 100: fee 0.0005 x 100 x 100 = 5 USDT = 0.025 R
    [opened] = h.positions("opened")
    assert (opened["entry_price"], opened["qty"], opened["r_usd"]) == (100.0, 100.0, 200.0)
    assert (opened["sl_price"], opened["tp1_price"], opened["tp2_price"]) == (98.0, 102.0, 104.0)
    assert opened["fees_r"] == pytest.approx(0.025)
    return h


def test_stop_loss_is_minus_one_r_and_the_gap_is_slippage():
    h = opened_long()
    h.trade(97.9, T0 + 2 * S)  # crosses SL 98 -> market sell on the next trade
    h.trade(97.8, T0 + 3 * S)  # fill 97.8: fee 0.0005 x 97.8 x 100 = 4.89 USDT = 0.02445 R
    c = h.closed()
    assert c["exit_reason"] == "sl" and c["exit_price"] == 97.8 and c["qty"] == 0
    assert c["pnl_r_gross"] == pytest.approx(-1.0)
    assert c["fees_r"] == pytest.approx(0.025 + 0.02445)
    assert c["slippage_r"] == pytest.approx(0.1)  # (98 - 97.8) / 2
    assert c["pnl_r_net"] == pytest.approx(-1.14945)  # -1 - 0.04945 - 0.1
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h))  # (-220 - 9.89) / 200


def test_tp1_then_tp2_books_half_at_each_level():
    h = opened_long()
    h.trade(102.0, T0 + 2 * S)  # TP1 crossed: sell half (50)
    h.trade(102.1, T0 + 3 * S)  # fill 102.1: fee 0.0005 x 102.1 x 50 = 2.5525 USDT; slippage -0.05 / 2 x 0.5 = -0.025 R
    [tp1] = h.positions("tp1")
    assert tp1["qty"] == 50 and tp1["sl_price"] == 100.0 and tp1["exit_price"] == 102.1  # stop to break-even
    h.trade(104.0, T0 + 4 * S)  # TP2 crossed: sell the rest
    h.trade(103.9, T0 + 5 * S)  # fill 103.9: fee 2.5975 USDT; slippage +0.1 / 2 x 0.5 = +0.025 R
    c = h.closed()
    assert c["exit_reason"] == "tp"
    assert c["pnl_r_gross"] == pytest.approx(1.5)  # 0.5 x 1 + 0.5 x 2
    assert c["fees_r"] == pytest.approx((5 + 2.5525 + 2.5975) / 200)  # 0.05075
    assert c["slippage_r"] == pytest.approx(0.0)
    assert c["pnl_r_net"] == pytest.approx(1.44925)
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h))


def test_break_even_after_tp1():
    h = opened_long()
    h.trade(102.0, T0 + 2 * S)
    h.trade(102.0, T0 + 3 * S)  # TP1 fill at 102: fee 2.55 USDT
    h.trade(100.5, T0 + 4 * S)  # above the break-even stop: nothing
    assert not h.positions("closed")
    h.trade(99.95, T0 + 5 * S)  # crosses the stop at entry (100)
    h.trade(99.9, T0 + 6 * S)  # fill 99.9: fee 2.4975 USDT; slippage 0.5 x 0.1 / 2 = 0.025 R
    c = h.closed()
    assert c["exit_reason"] == "sl_be"
    assert c["pnl_r_gross"] == pytest.approx(0.5)  # 0.5 x tp1_r
    assert c["fees_r"] == pytest.approx((5 + 2.55 + 2.4975) / 200)  # 0.0502375
    assert c["slippage_r"] == pytest.approx(0.025)
    assert c["pnl_r_net"] == pytest.approx(0.4247625)
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h))  # (100 - 5 - 10.0475) / 200


def test_break_even_plus_offset():
    h = opened_long(ExecutorConfig(breakeven_offset_r=0.1))
    h.trade(102.0, T0 + 2 * S)
    h.trade(102.0, T0 + 3 * S)
    [tp1] = h.positions("tp1")
    assert tp1["sl_price"] == pytest.approx(100.2)  # entry + 0.1 R
    h.trade(100.3, T0 + 4 * S)
    assert not h.positions("closed")
    h.trade(100.2, T0 + 5 * S)  # at the stop
    h.trade(100.2, T0 + 6 * S)  # fill 100.2: fee 0.0005 x 100.2 x 50 = 2.505 USDT
    c = h.closed()
    assert c["exit_reason"] == "sl_be"
    assert c["pnl_r_gross"] == pytest.approx(0.55)  # 0.5 x 1 + 0.5 x 0.1
    assert c["pnl_r_net"] == pytest.approx(0.55 - (5 + 2.55 + 2.505) / 200)
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h))


def test_timeout_closes_at_market_signed_move():
    h = opened_long(ExecutorConfig(timeout_min=1))
    h.trade(100.6, T0 + 60 * S)  # 59 s after the entry fill: still open
    assert not h.positions("closed")
    h.trade(100.6, T0 + 61 * S)  # 60 s: timeout, market sell on the next trade
    h.trade(100.5, T0 + 62 * S)  # fill 100.5: fee 0.0005 x 100.5 x 100 = 5.025 USDT
    c = h.closed()
    assert c["exit_reason"] == "timeout"
    assert c["pnl_r_gross"] == pytest.approx(0.25)  # (100.5 - 100) / 2
    assert c["slippage_r"] == pytest.approx(0.0)
    assert c["pnl_r_net"] == pytest.approx(0.25 - (5 + 5.025) / 200)  # 0.199875
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h))


def test_timeout_per_strategy_override():
    h = opened_long(ExecutorConfig(timeout_min=240, timeout_min_by_strategy={"v53": 2}))
    h.trade(100.0, T0 + 100 * S)
    assert not h.positions("closed")
    h.trade(100.0, T0 + 121 * S)  # 120 s after the entry fill
    h.trade(100.0, T0 + 122 * S)
    assert h.closed()["exit_reason"] == "timeout"


def test_signal_flip_closes_short_and_opens_long():
    h = Harness()
    h.signal(direction="SHORT", eval_time=T0)  # SHORT 100, R 2: SL 102, TP1 98, TP2 96
    h.trade(100.0, T0 + S)  # sell 100 @ 100: fee 5 USDT
    h.signal(direction="LONG", eval_time=T0 + 2 * S, is_flip=True, price=99.2)
    h.trade(99.0, T0 + 3 * S)  # buy back 100 @ 99 (fee 4.95) and open the LONG @ 99 (fee 4.95)
    closed = h.positions("closed")
    assert len(closed) == 1
    c = closed[0]
    assert c["direction"] == "SHORT" and c["exit_reason"] == "signal_flip"
    assert c["pnl_r_gross"] == pytest.approx(0.5)  # -(99 - 100) / 2
    assert c["pnl_r_net"] == pytest.approx(0.5 - (5 + 4.95) / 200)  # 0.45025
    opened = h.positions("opened")
    assert [o["direction"] for o in opened] == ["SHORT", "LONG"]
    assert opened[1]["entry_price"] == 99.0 and opened[1]["sl_price"] == 97.0  # re-anchored at the fill
    # the close was filled before the new entry (one position per strategy x symbol at any time)
    sides = [(f["side"], f["client_order_id"][-2:]) for f in h.fills()]
    assert sides == [("SELL", "en"), ("BUY", "ex"), ("BUY", "en")]


def test_flip_after_tp1_keeps_the_banked_half():
    h = Harness()
    h.signal(direction="SHORT", eval_time=T0)
    h.trade(100.0, T0 + S)
    h.trade(98.0, T0 + 2 * S)  # TP1 98 crossed
    h.trade(98.0, T0 + 3 * S)  # buy 50 @ 98: fee 0.0005 x 98 x 50 = 2.45 USDT
    h.signal(direction="LONG", eval_time=T0 + 4 * S, is_flip=True, price=99.0)
    h.trade(99.0, T0 + 5 * S)  # buy the other 50 @ 99: fee 2.475 USDT
    c = h.positions("closed")[0]
    assert c["exit_reason"] == "signal_flip"
    assert c["pnl_r_gross"] == pytest.approx(0.75)  # 0.5 x 1 + 0.5 x (-(99 - 100) / 2)
    assert c["pnl_r_net"] == pytest.approx(0.75 - (5 + 2.45 + 2.475) / 200)


def test_modelled_slippage_is_charged_on_both_sides():
    h = Harness(ExecutorConfig(paper=PaperFills(slippage_bps=2.0), timeout_min=1))
    h.signal(eval_time=T0)
    h.trade(100.0, T0 + S)  # buy @ 100 x 1.0002 = 100.02: fee 5.001 USDT, slippage 0.02 / 2 = 0.01 R
    [opened] = h.positions("opened")
    assert opened["entry_price"] == 100.0  # levels anchor on the market price, costs go to slippage_r
    assert opened["slippage_r"] == pytest.approx(0.01)
    h.trade(101.0, T0 + 61 * S)  # timeout
    h.trade(101.0, T0 + 62 * S)  # sell @ 101 x 0.9998 = 100.9798: fee 5.04899 USDT, slippage 0.0202 / 2 = 0.0101 R
    c = h.closed()
    assert c["pnl_r_gross"] == pytest.approx(0.5)
    assert c["fees_r"] == pytest.approx((5.001 + 5.04899) / 200)
    assert c["slippage_r"] == pytest.approx(0.0201)
    assert c["pnl_r_net"] == pytest.approx(0.42965005)
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h))  # (95.98 - 10.04999) / 200


def test_heavy_tier_risks_one_and_a_half_r_in_money_but_the_same_r():
    h = Harness()
    h.signal(tier="heavy")
    h.trade(100.0, T0 + S)  # r_usd 300, qty 150: fee 0.0005 x 100 x 150 = 7.5 USDT = 0.025 R
    [opened] = h.positions("opened")
    assert opened["r_usd"] == 300.0 and opened["qty"] == 150.0
    h.trade(98.0, T0 + 2 * S)
    h.trade(98.0, T0 + 3 * S)  # fee 0.0005 x 98 x 150 = 7.35 USDT = 0.0245 R
    c = h.closed()
    assert c["pnl_r_gross"] == pytest.approx(-1.0)
    assert c["pnl_r_net"] == pytest.approx(-1.0495)
    assert c["pnl_r_net"] == pytest.approx(cash_net_r(h, r_usd=300.0))


def test_the_strategy_tier_multiplier_in_the_signal_sets_the_size():
    h = Harness()
    rec = signal_record(tier="heavy")
    rec["factors"]["risk_multiplier"] = 2.0  # this strategy sizes heavy signals at 2R
    h.signal_rec(rec)
    h.trade(100.0, T0 + S)
    [opened] = h.positions("opened")
    assert opened["r_usd"] == 400.0 and opened["qty"] == 200.0


def test_short_stop_loss_mirrors_long():
    h = Harness()
    h.signal(direction="SHORT")
    h.trade(100.0, T0 + S)
    h.trade(101.99, T0 + 2 * S)  # below SL 102: nothing
    assert not h.positions("closed")
    h.trade(102.0, T0 + 3 * S)
    h.trade(102.0, T0 + 4 * S)  # buy @ 102: fee 5.1 USDT
    c = h.closed()
    assert c["exit_reason"] == "sl" and c["pnl_r_gross"] == pytest.approx(-1.0)
    assert c["pnl_r_net"] == pytest.approx(-1 - (5 + 5.1) / 200)


def test_fills_exactly_at_levels_agree_with_the_engine_pnl():
    """Independent implementation: stream_apps.core.exits.pnl_r (level fills, taker fees)."""
    plan = plan_exits("LONG", 100.0, 2.0 / 1.5, Exits(sl_atr_mult=1.5, tp1_r=1.0, tp2_r=2.0, timeout_min=240))
    for path, reason, tp1_hit in ((["sl"], "sl", False), (["tp1", "sl"], "sl_be", True), (["tp1", "tp2"], "tp", True)):
        h = Harness()
        h.signal()
        h.trade(100.0, T0 + S)
        t = T0 + 2 * S
        for leg in path:
            level = {"sl": 98.0 if leg == path[0] else 100.0, "tp1": 102.0, "tp2": 104.0}[leg]
            h.trade(level, t)
            h.trade(level, t + S)
            t += 2 * S
        c = h.closed()
        assert c["exit_reason"] == reason
        assert c["pnl_r_net"] == pytest.approx(
            engine_pnl_r(plan, reason, tp1_hit=tp1_hit, costs=CostModel()), abs=1e-12
        )


def test_gross_table_and_win_rate():
    assert gross_pnl_r("sl", 0.75, 1.5, tp1_hit=False) == -1.0
    assert gross_pnl_r("sl_be", 0.75, 1.5, tp1_hit=True) == 0.375
    assert gross_pnl_r("tp", 0.75, 1.5, tp1_hit=True) == 1.125
    assert gross_pnl_r("timeout", 0.75, 1.5, tp1_hit=False, exit_move_r=-0.4) == -0.4
    assert gross_pnl_r("signal_flip", 0.75, 1.5, tp1_hit=True, exit_move_r=-0.4) == pytest.approx(0.175)
    with pytest.raises(ValueError):
        gross_pnl_r("sl", 1, 2, tp1_hit=True)  # after TP1 a stop is sl_be
    with pytest.raises(ValueError):
        gross_pnl_r("timeout", 1, 2, tp1_hit=False)  # needs the exit
    # a break-even trade that lost its fees is not a win, whatever its exit reason
    assert win_rate([0.4247625, -0.05, 1.2, -1.1]) == 0.5
    assert win_rate([]) is None
