"""Research fills on hand-built per-second bars: exits in the position manager's order, P&L by the
engine's exit model, flips, signals while a position is open."""

from __future__ import annotations

import numpy as np
import pytest

from backtest.research.simulate import REASONS, Signals, simulate
from backtest.research.store import SecondBars, second_bars
from stream_apps.core.exits import CostModel, plan_exits, pnl_r
from stream_apps.core.strategy import parse_strategy

T = 1_700_006_400_000
CFG = parse_strategy({
    "name": "sim", "version": "1", "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
    "weights": {"direction": 100, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 50, "heavy": 60, "flip": 60},
    "exits": {"sl_atr_mult": 1.0, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 10},
})


def bars(points, seconds=3600) -> SecondBars:
    times, prices = (np.array(v) for v in zip(*points))
    c = second_bars(times.astype(np.int64), prices.astype(float), T // 1000, seconds)
    return SecondBars(T // 1000, c["bar_open"], c["bar_high"], c["bar_low"], c["bar_close"], c["bar_high_first"],
                      c["bar_traded"])


def signals(*rows) -> Signals:
    t, s, atr, flip = (np.array(v) for v in zip(*rows))
    n = len(t)
    return Signals(t.astype(np.int64), s.astype(np.int8), atr.astype(float), flip.astype(bool), np.ones(n), np.full(n, 70.0))


def expect(direction, entry, reason, exit_price=None, tp1=False):
    plan = plan_exits(direction, entry, 1.0, CFG.exits)
    return pnl_r(plan, reason, exit_price, tp1, CostModel())


def test_second_bars_open_high_low_close_and_which_extreme_came_first():
    b = bars([(T + 100, 10.0), (T + 200, 12.0), (T + 300, 9.0), (T + 900, 11.0), (T + 1_500, 5.0)], 3)
    assert b.open[:2].tolist() == [10.0, 5.0] and b.high[0] == 12.0 and b.low[0] == 9.0 and b.close[0] == 11.0
    assert b.high_first[0] and b.traded.tolist() == [True, True, False]


def test_long_reaches_tp1_then_tp2():
    b = bars([(T + 1_500, 100.0), (T + 5_000, 101.0), (T + 9_000, 102.5)])
    trades = simulate(signals((T + 1_000, 1, 1.0, False)), CFG, b, "BTCUSDT")
    assert len(trades) == 1 and REASONS[trades.reason[0]] == "tp"
    assert trades.entry_ms[0] == T + 1_000 and trades.exit_ms[0] == T + 9_000
    assert trades.pnl_r[0] == pytest.approx(expect("LONG", 100.0, "tp", tp1=True))


def test_stop_first_then_break_even_after_tp1():
    b = bars([(T + 1_500, 100.0), (T + 3_000, 98.9), (T + 5_000, 102.5)])
    trades = simulate(signals((T + 1_000, 1, 1.0, False)), CFG, b, "BTCUSDT")
    assert REASONS[trades.reason[0]] == "sl" and trades.pnl_r[0] == pytest.approx(expect("LONG", 100.0, "sl"))
    b = bars([(T + 1_500, 100.0), (T + 3_000, 101.2), (T + 5_000, 99.5)])
    trades = simulate(signals((T + 1_000, 1, 1.0, False)), CFG, b, "BTCUSDT")
    assert REASONS[trades.reason[0]] == "sl_be"
    assert trades.pnl_r[0] == pytest.approx(expect("LONG", 100.0, "sl_be", tp1=True))


def test_within_one_second_the_extreme_that_came_first_decides():
    up_first = bars([(T + 1_500, 100.0), (T + 3_100, 101.5), (T + 3_900, 98.5)])
    assert REASONS[simulate(signals((T + 1_000, 1, 1.0, False)), CFG, up_first, "X").reason[0]] == "sl_be"
    down_first = bars([(T + 1_500, 100.0), (T + 3_100, 98.5), (T + 3_900, 101.5)])
    assert REASONS[simulate(signals((T + 1_000, 1, 1.0, False)), CFG, down_first, "X").reason[0]] == "sl"


def test_short_timeout_at_the_market():
    b = bars([(T + 1_500, 100.0), (T + 300_000, 99.5), (T + 601_000, 99.7), (T + 700_000, 95.0)])
    trades = simulate(signals((T + 1_000, -1, 1.0, False)), CFG, b, "X")
    assert REASONS[trades.reason[0]] == "timeout" and trades.exit_ms[0] == T + 601_000  # 10 min after entry
    assert trades.pnl_r[0] == pytest.approx(expect("SHORT", 100.0, "timeout", 99.7))


def test_flip_closes_the_open_position_and_other_signals_wait():
    b = bars([(T + 1_500, 100.0), (T + 20_500, 100.3), (T + 40_500, 100.1), (T + 60_500, 100.2)])
    s = signals((T + 1_000, 1, 1.0, False),  # opens LONG at 100
                (T + 20_000, 1, 1.0, False),  # same direction while open: not taken
                (T + 40_000, -1, 1.0, False),  # reverse but not a flip: not taken
                (T + 60_000, -1, 1.0, True))  # flip: closes the LONG at 100.2 and opens a SHORT (open at the end)
    trades = simulate(s, CFG, b, "X")
    assert len(trades) == 1 and REASONS[trades.reason[0]] == "signal_flip"
    assert trades.exit_ms[0] == T + 60_000
    assert trades.pnl_r[0] == pytest.approx(expect("LONG", 100.0, "signal_flip", 100.2))


def test_a_position_closed_before_the_next_signal_frees_the_symbol():
    b = bars([(T + 1_500, 100.0), (T + 5_000, 98.0), (T + 20_500, 98.0), (T + 30_000, 96.0)])
    trades = simulate(signals((T + 1_000, 1, 1.0, False), (T + 20_000, -1, 1.0, False)), CFG, b, "X")
    assert [REASONS[r] for r in trades.reason] == ["sl", "tp"]
