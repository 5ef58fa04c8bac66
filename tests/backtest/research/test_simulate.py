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
CFG = parse_strategy(
    {
        "name": "sim",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "weights": {"direction": 100, "crowding": 0, "environment": 0, "auxiliary": 0},
        "thresholds": {"entry": 50, "heavy": 60, "flip": 60},
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 10},
    }
)


def bars(points, seconds=3600) -> SecondBars:
    times, prices = (np.array(v) for v in zip(*points))
    c = second_bars(times.astype(np.int64), prices.astype(float), T // 1000, seconds)
    return SecondBars(
        T // 1000, c["bar_open"], c["bar_high"], c["bar_low"], c["bar_close"], c["bar_high_first"], c["bar_traded"]
    )


def signals(*rows) -> Signals:
    t, s, atr, flip = (np.array(v) for v in zip(*rows))
    n = len(t)
    return Signals(
        t.astype(np.int64), s.astype(np.int8), atr.astype(float), flip.astype(bool), np.ones(n), np.full(n, 70.0)
    )


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
    s = signals(
        (T + 1_000, 1, 1.0, False),  # opens LONG at 100
        (T + 20_000, 1, 1.0, False),  # same direction while open: not taken
        (T + 40_000, -1, 1.0, False),  # reverse but not a flip: not taken
        (T + 60_000, -1, 1.0, True),
    )  # flip: closes the LONG at 100.2 and opens a SHORT (open at the end)
    trades = simulate(s, CFG, b, "X")
    assert len(trades) == 1 and REASONS[trades.reason[0]] == "signal_flip"
    assert trades.exit_ms[0] == T + 60_000
    assert trades.pnl_r[0] == pytest.approx(expect("LONG", 100.0, "signal_flip", 100.2))


def test_a_position_closed_before_the_next_signal_frees_the_symbol():
    b = bars([(T + 1_500, 100.0), (T + 5_000, 98.0), (T + 20_500, 98.0), (T + 30_000, 96.0)])
    trades = simulate(signals((T + 1_000, 1, 1.0, False), (T + 20_000, -1, 1.0, False)), CFG, b, "X")
    assert [REASONS[r] for r in trades.reason] == ["sl", "tp"]


# ------------------------------------------------------------------------------------------------
# the screen against the executor's own position model (what `tapeflow backtest` runs)
# ------------------------------------------------------------------------------------------------
RELAXED = {
    "paper": {"slippage_bps": 0.0},
    "risk": {
        "max_signal_age_s": 1e9,
        "stale_market_data_s": 1e9,
        "daily_loss_limit_r": 1000,
        "max_consecutive_losses": 1000,
        "max_open_positions": 100,
    },
}
# the executor's own timeout stays at its default (240 min): the strategy's 10 minutes travel in its
# signals (``timeout_ms``, as the engine writes them) and the executor runs them, as the screen does
EXECUTOR = RELAXED
STRATEGY_TIMEOUT_MS = CFG.exits.timeout_min * 60_000
# A hand-built path where both models are exact: every level is crossed by a trade AT the level and
# the next trade (where the executor's market exit fills) is at the same price half a second later;
# signals, entries and timeouts fall on whole seconds. (seconds after T, price)
PATH = [
    (1.0, 100.0),
    (5.0, 101.0),
    (5.5, 101.0),
    (9.0, 102.0),
    (9.5, 102.0),  # LONG: TP1, then TP2 -> tp
    (20.0, 102.0),
    (25.0, 103.0),
    (25.5, 103.0),  # SHORT from 102: stop 103 -> sl
    (40.0, 100.0),
    (42.0, 101.0),
    (42.5, 101.0),
    (45.0, 100.0),
    (45.5, 100.0),  # LONG: TP1, back to entry -> sl_be
    (60.0, 100.0),
    (70.0, 100.2),
    (360.0, 100.5),
    (660.0, 100.4),
    (660.5, 100.4),  # LONG: 10 min -> timeout
    (700.0, 100.0),
    (710.0, 100.3),  # SHORT from 100 ...
    (720.0, 99.5),
    (720.5, 99.5),  # ... closed by a LONG flip, which opens at 99.5
    (730.0, 100.5),
    (730.5, 100.5),
    (740.0, 101.5),
    (740.5, 101.5),  # the LONG: TP1, TP2 -> tp
]
SIGNALS = [  # (seconds after T, sign, is_flip)
    (1, 1, False),
    (20, -1, False),
    (40, 1, False),
    (60, 1, False),
    (70, 1, False),  # the second LONG comes while the first is open: taken by neither model
    (700, -1, False),
    (720, 1, True),
]


def _executor_trades(config: dict = EXECUTOR, timeout_ms: int | None = STRATEGY_TIMEOUT_MS) -> list[dict]:
    """The executor with the paper broker, fed like the backtest runner feeds it: signals (carrying
    ``timeout_ms``) before the trades at their time, trades one by one, ``now`` = event time."""
    from execution.config import ExecutorConfig
    from tests.support.execution import Harness

    h = Harness(ExecutorConfig.model_validate(config), now=T)
    events = [(T + int(s * 1000), 0, k) for k, (s, _, _) in enumerate(SIGNALS)]
    events += [(T + int(s * 1000), 1, k) for k, (s, _) in enumerate(PATH)]
    for t, kind, k in sorted(events):
        if kind == 0:
            _, sign, flip = SIGNALS[k]
            price = next(p for s, p in PATH if T + int(s * 1000) >= t)
            h.signal(
                direction="LONG" if sign > 0 else "SHORT",
                price=price,
                risk=1.0,
                tp1_r=1.0,
                tp2_r=2.0,
                strategy="sim",
                eval_time=t,
                is_flip=flip,
                signal_id=f"sim:{t}",
                timeout_ms=timeout_ms,
            )
        else:
            h.trade(PATH[k][1], t)
    opened = {p["position_id"]: p for p in h.positions("opened")}
    return [
        {
            "entry_ms": opened[c["position_id"]]["event_time"],
            "entry_price": opened[c["position_id"]]["entry_price"],
            **c,
        }
        for c in h.positions("closed")
    ]


def test_the_screen_agrees_with_the_executors_position_model_where_both_are_exact():
    b = bars([(T + int(s * 1000), p) for s, p in PATH], seconds=800)
    research = simulate(signals(*[(T + s * 1000, sign, 1.0, flip) for s, sign, flip in SIGNALS]), CFG, b, "BTCUSDT")
    executed = _executor_trades()
    assert (
        [REASONS[r] for r in research.reason]
        == [e["exit_reason"] for e in executed]
        == ["tp", "sl", "sl_be", "timeout", "signal_flip", "tp"]
    )
    for k, e in enumerate(executed):
        # entries: the same trade's second (the executor's flip entry fills at the next trade, in that second)
        assert research.entry_ms[k] // 1000 == e["entry_ms"] // 1000
        assert research.sign[k] == (1 if e["direction"] == "LONG" else -1)
        assert b.open[research.entry_ms[k] // 1000 - T // 1000] == e["entry_price"]
        # level and market exits: the screen books the trigger second at the level (or the second's price),
        # the executor fills at the next trade, which this path puts at the same price in the same second
        assert research.exit_ms[k] // 1000 == e["event_time"] // 1000
        # P&L in R with fees: the engine's exit model equals the executor's fills and pnl code here
        assert research.pnl_r[k] == pytest.approx(e["pnl_r_net"], rel=1e-9, abs=1e-12), (k, e["exit_reason"])
        assert e["slippage_r"] == pytest.approx(0.0, abs=1e-12) and e["funding_r"] == 0.0


def test_the_executor_runs_the_strategys_timeout_its_own_setting_only_for_signals_without_one():
    timed_out = [e for e in _executor_trades() if e["exit_reason"] == "timeout"]
    # the LONG entered at 60 s closes on the first trade 10 minutes later (660 s), filled half a second on
    assert [(e["entry_ms"], e["event_time"], e["timeout_ms"]) for e in timed_out] == [
        (T + 60_000, T + 660_500, STRATEGY_TIMEOUT_MS)
    ]
    # signals from before they carried the timeout: the executor's 240 min, no timeout on this path
    reasons = [e["exit_reason"] for e in _executor_trades(timeout_ms=None)]
    assert "timeout" not in reasons and reasons[:3] == ["tp", "sl", "sl_be"]
    # ... or its per-strategy setting for them: set to the strategy's 10 minutes, the same trades
    per_strategy = RELAXED | {"timeout_min_by_strategy": {"sim": 10}}
    assert _executor_trades(per_strategy, timeout_ms=None) == _executor_trades()


def test_where_they_differ_it_is_the_documented_difference_a_level_exit_at_the_level_not_the_next_trade():
    # a gap through the stop: the screen books the stop at its level; the executor's market exit fills at
    # the next trade (98.0) and books the gap as slippage (gross stays -1R, fees on the real price)
    path = [(1.0, 100.0), (5.0, 98.5), (5.5, 98.0)]
    b = bars([(T + int(s * 1000), p) for s, p in path], seconds=10)
    research = simulate(signals((T + 1_000, 1, 1.0, False)), CFG, b, "BTCUSDT")
    from execution.config import ExecutorConfig
    from tests.support.execution import Harness

    h = Harness(ExecutorConfig.model_validate(EXECUTOR), now=T)
    h.signal(direction="LONG", price=100.0, risk=1.0, tp1_r=1.0, tp2_r=2.0, strategy="sim", eval_time=T + 1_000)
    for s, p in path:
        h.trade(p, T + int(s * 1000))
    closed = h.closed()
    assert REASONS[research.reason[0]] == closed["exit_reason"] == "sl"
    assert closed["exit_price"] == 98.0 and closed["slippage_r"] == pytest.approx(1.0)  # 99 -> 98 at R = 1
    assert research.pnl_r[0] == pytest.approx(expect("LONG", 100.0, "sl"))
    fee_gap = CostModel().stop_fee * (99.0 - 98.0)  # the fee on the real fill is a little lower
    assert research.pnl_r[0] == pytest.approx(closed["pnl_r_net"] + closed["slippage_r"] - fee_gap, abs=1e-12)
