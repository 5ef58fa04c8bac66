"""The sign of slippage_r, pinned for LONG and SHORT entries and exits (stop, break-even stop, TP, timeout).

slippage_r is a cost: > 0 when a fill is worse than its reference, < 0 when better. References
(`execution.pnl`): the entry and market exits (timeout, flip) are measured against the trade they
filled on, so only the modelled `slippage_bps` shows (never negative); TP1/TP2/SL legs against their
level. A crossed level is sent at the trade that crosses it and filled at the NEXT trade, so a
level leg is favourable (negative) exactly when that next trade is beyond the level in our favour:
a TP filled further out than its level, a stop filled after the price came back above it (LONG).
That is why backtests with many TP exits can show a negative slippage total (the demo's
v52/v53): it is the fill model, not a sign error.

Setup (tests.support.execution): R = 2, qty = 100, r_usd = 200; LONG: entry 100, SL 98, TP1 102,
TP2 104; SHORT: the mirror around 100 (SL 102, TP1 98, TP2 96). Paper slippage 2 bps, so a LONG buys
at trade x 1.0002 and sells at trade x 0.9998 (a SHORT the other way round). Each expected number is
worked out in the comment next to it for the LONG; the SHORT path is the mirror (price -> 200 - price)
and its number is computed the same way (bps applies to the mirrored price, so it differs slightly).
"""

from __future__ import annotations

import pytest

from execution.config import ExecutorConfig, PaperFills
from tests.support.execution import T0, Harness

S = 1000
BPS = 0.0002
R = 2.0


def px(direction: str, price: float) -> float:
    """A LONG path's price, mirrored around the entry (100) for a SHORT."""
    return price if direction == "LONG" else 200.0 - price


def close_cost(direction: str, level: float, trade: float, fraction: float) -> float:
    """Hand model of one closing leg: filled at `trade` moved 2 bps against us, measured against `level`."""
    if direction == "LONG":  # sells: received less than the level = worse
        return fraction * (level - trade * (1 - BPS)) / R
    return fraction * (trade * (1 + BPS) - level) / R  # SHORT buys back: paid more than the level = worse


ENTRY = 100.0 * BPS / R  # 0.01 R either way: a buy at 100.02 or a sell at 99.98 against the trade at 100


def opened(direction: str, timeout_min: int = 240) -> Harness:
    h = Harness(ExecutorConfig(paper=PaperFills(slippage_bps=2.0), timeout_min=timeout_min))
    h.signal(direction=direction, eval_time=T0)
    h.trade(100.0, T0 + S)
    [o] = h.positions("opened")
    assert o["slippage_r"] == pytest.approx(ENTRY) and o["slippage_r"] > 0  # an entry is never favourable
    return h


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_stop_filled_through_its_level_costs(direction):
    h = opened(direction)
    h.trade(px(direction, 97.9), T0 + 2 * S)  # crosses the stop (98 / 102)
    h.trade(px(direction, 97.8), T0 + 3 * S)  # LONG: sell @ 97.8 x 0.9998 = 97.78044, (98 - 97.78044) / 2 = 0.10978
    c = h.closed()
    assert c["exit_reason"] == "sl"
    assert c["slippage_r"] == pytest.approx(
        ENTRY + close_cost(direction, px(direction, 98.0), px(direction, 97.8), 1.0)
    )
    assert c["slippage_r"] > ENTRY  # worse than the stop: a cost
    if direction == "LONG":
        assert c["slippage_r"] == pytest.approx(0.01 + 0.10978)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_stop_filled_after_the_price_came_back_is_price_improvement(direction):
    h = opened(direction)
    h.trade(px(direction, 97.9), T0 + 2 * S)  # crosses the stop
    h.trade(px(direction, 98.5), T0 + 3 * S)  # LONG: sell @ 98.5 x 0.9998 = 98.4803, (98 - 98.4803) / 2 = -0.24015
    c = h.closed()
    assert c["exit_reason"] == "sl"
    assert c["pnl_r_gross"] == -1.0  # the level's result; the better fill is in slippage
    assert c["slippage_r"] == pytest.approx(
        ENTRY + close_cost(direction, px(direction, 98.0), px(direction, 98.5), 1.0)
    )
    assert c["slippage_r"] < 0
    if direction == "LONG":
        assert c["slippage_r"] == pytest.approx(0.01 - 0.24015)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_take_profits_filled_beyond_their_levels_are_price_improvement(direction):
    h = opened(direction)
    h.trade(px(direction, 102.0), T0 + 2 * S)  # TP1 crossed
    h.trade(
        px(direction, 102.6), T0 + 3 * S
    )  # LONG: 50 @ 102.6 x 0.9998 = 102.57948: 0.5 x (102 - 102.57948) / 2 = -0.14487
    h.trade(px(direction, 104.0), T0 + 4 * S)  # TP2 crossed
    h.trade(
        px(direction, 104.4), T0 + 5 * S
    )  # LONG: 50 @ 104.4 x 0.9998 = 104.37912: 0.5 x (104 - 104.37912) / 2 = -0.09478
    c = h.closed()
    assert c["exit_reason"] == "tp"
    assert c["pnl_r_gross"] == pytest.approx(1.5)
    expected = (
        ENTRY
        + close_cost(direction, px(direction, 102.0), px(direction, 102.6), 0.5)
        + close_cost(direction, px(direction, 104.0), px(direction, 104.4), 0.5)
    )
    assert c["slippage_r"] == pytest.approx(expected)
    assert c["slippage_r"] < 0
    if direction == "LONG":
        assert c["slippage_r"] == pytest.approx(0.01 - 0.14487 - 0.09478)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_take_profits_filled_short_of_their_levels_cost(direction):
    h = opened(direction)
    h.trade(px(direction, 102.0), T0 + 2 * S)
    h.trade(px(direction, 101.9), T0 + 3 * S)  # LONG: 50 @ 101.87962: 0.5 x (102 - 101.87962) / 2 = 0.030095
    h.trade(px(direction, 104.0), T0 + 4 * S)
    h.trade(px(direction, 103.9), T0 + 5 * S)  # LONG: 50 @ 103.87922: 0.5 x (104 - 103.87922) / 2 = 0.030195
    c = h.closed()
    assert c["exit_reason"] == "tp"
    expected = (
        ENTRY
        + close_cost(direction, px(direction, 102.0), px(direction, 101.9), 0.5)
        + close_cost(direction, px(direction, 104.0), px(direction, 103.9), 0.5)
    )
    assert c["slippage_r"] == pytest.approx(expected)
    assert c["slippage_r"] > ENTRY
    if direction == "LONG":
        assert c["slippage_r"] == pytest.approx(0.01 + 0.030095 + 0.030195)


@pytest.mark.parametrize("direction", ["LONG", "SHORT"])
def test_break_even_stop_after_tp1_improved_by_a_bounce(direction):
    h = opened(direction)
    h.trade(px(direction, 102.0), T0 + 2 * S)
    h.trade(px(direction, 102.0), T0 + 3 * S)  # LONG: 50 @ 101.9796: 0.5 x 0.0204 / 2 = 0.0051
    h.trade(px(direction, 99.95), T0 + 4 * S)  # crosses the break-even stop (100)
    h.trade(px(direction, 100.3), T0 + 5 * S)  # LONG: 50 @ 100.27994: 0.5 x (100 - 100.27994) / 2 = -0.069985
    c = h.closed()
    assert c["exit_reason"] == "sl_be"
    expected = (
        ENTRY
        + close_cost(direction, px(direction, 102.0), px(direction, 102.0), 0.5)
        + close_cost(direction, 100.0, px(direction, 100.3), 0.5)
    )
    assert c["slippage_r"] == pytest.approx(expected)
    assert c["slippage_r"] < 0
    if direction == "LONG":
        assert c["slippage_r"] == pytest.approx(0.01 + 0.0051 - 0.069985)


@pytest.mark.parametrize(("direction", "fill"), [("LONG", 101.0), ("LONG", 99.0), ("SHORT", 99.0), ("SHORT", 101.0)])
def test_timeout_pays_only_the_modelled_slippage_whatever_the_move(direction, fill):
    h = opened(direction, timeout_min=1)
    h.trade(100.6, T0 + 61 * S)  # 60 s after the entry: timeout, market order
    h.trade(fill, T0 + 62 * S)  # the move from 100.6 to the fill is gross P&L, not slippage
    c = h.closed()
    assert c["exit_reason"] == "timeout"
    sign = 1 if direction == "LONG" else -1
    assert c["pnl_r_gross"] == pytest.approx(sign * (fill - 100.0) / R)
    assert c["slippage_r"] == pytest.approx(ENTRY + fill * BPS / R)  # LONG @ 101: 0.01 + 101 x 0.0002 / 2 = 0.0201
    assert c["slippage_r"] > 0
