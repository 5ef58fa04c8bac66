"""Report metrics against values computed by hand on small cases (see backtest/metrics.py for definitions)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from backtest import metrics
from tests.support.backtest_runs import DAY, HOUR, T0, make_trade


def _t(
    net: float,
    gross: float,
    fees: float,
    slip: float,
    funding: float,
    *,
    r_usd: float = 200.0,
    exit_time: int = T0 + HOUR,
    **kw,
) -> object:
    base = make_trade(entry_time=exit_time - HOUR, duration_ms=HOUR, fees=False, **kw)
    return replace(
        base,
        pnl_r_net=net,
        pnl_r_gross=gross,
        fees_r=fees,
        slippage_r=slip,
        funding_r=funding,
        r_usd=r_usd,
        position_id=f"p{exit_time}",
    )


# A: +1.5 gross, 0.2 fees, 0.1 slippage          -> +1.2 net, 1R = 200 USDT
# B: -1 gross, 0.15 fees, 0.05 slippage, 0.1 funding -> -1.3 net, 1R = 300 USDT (heavy)
# C: +0.5 gross, 0.2 fees, 0.05 slippage, -0.05 funding (received) -> +0.3 net
# D: +0.5 gross, 0.25 fees, 0.25 slippage        ->  0.0 net (break-even: neither win nor loss)
FOUR = [
    _t(1.2, 1.5, 0.2, 0.1, 0.0, exit_time=T0 + 1 * HOUR),
    _t(-1.3, -1.0, 0.15, 0.05, 0.1, r_usd=300.0, exit_time=T0 + 2 * HOUR),
    _t(0.3, 0.5, 0.2, 0.05, -0.05, exit_time=T0 + 3 * HOUR),
    _t(0.0, 0.5, 0.25, 0.25, 0.0, exit_time=T0 + 4 * HOUR),
]


def test_summary_of_four_hand_computed_trades():
    s = metrics.summarise(reversed(FOUR))  # input order does not matter: trades are ordered by exit time
    assert (s.trades, s.wins, s.losses, s.breakeven) == (4, 2, 1, 1)
    assert s.win_rate == 0.5
    assert s.gross_r == pytest.approx(1.5) and s.fees_r == pytest.approx(0.8)
    assert s.slippage_r == pytest.approx(0.45) and s.funding_r == pytest.approx(0.05)
    assert s.net_r == pytest.approx(0.2)
    # USDT: each trade's R times its own 1R (B is 300 USDT)
    assert s.gross_usd == pytest.approx(200.0) and s.fees_usd == pytest.approx(175.0)
    assert s.slippage_usd == pytest.approx(95.0) and s.funding_usd == pytest.approx(20.0)
    assert s.net_usd == pytest.approx(-90.0)
    assert s.profit_factor == pytest.approx(1.5 / 1.3)
    assert s.expectancy_r == pytest.approx(0.05)
    assert s.avg_win_r == pytest.approx(0.75) and s.avg_loss_r == pytest.approx(-1.3)
    # equity 1.2, -0.1, 0.2, 0.2: the fall from 1.2 to -0.1
    assert s.max_drawdown_r == pytest.approx(1.3)


def test_summary_of_no_trades_is_zero_with_undefined_ratios():
    s = metrics.summarise([])
    assert (s.trades, s.net_r, s.max_drawdown_r) == (0, 0.0, 0.0)
    assert s.win_rate is None and s.profit_factor is None and s.expectancy_r is None
    assert s.avg_win_r is None and s.avg_loss_r is None


def test_profit_factor():
    assert metrics.profit_factor([2.0, -1.0, 1.0, -0.5, 0.0]) == pytest.approx(2.0)
    assert metrics.profit_factor([1.0, 0.5]) is None  # no loss: undefined, not infinite
    assert metrics.profit_factor([-1.0]) == 0.0
    assert metrics.profit_factor([]) is None


def test_equity_drawdown_and_max_drawdown():
    assert metrics.equity_curve([1.0, -2.0, 0.5]) == [1.0, -1.0, -0.5]
    assert metrics.drawdowns([1.0, -1.0, -0.5]) == [0.0, -2.0, -1.5]
    assert metrics.max_drawdown([1.0, -2.0, 0.5]) == 2.0
    # the peak starts at 0: losing from the first trade is a drawdown too
    assert metrics.max_drawdown([-1.0, -1.0, 3.0, -0.5]) == 2.0
    assert metrics.max_drawdown([0.5, 1.0]) == 0.0
    assert metrics.max_drawdown([]) == 0.0


def test_daily_series_includes_days_without_trades_and_ends_before_to():
    trades = [
        _t(1.0, 1.0, 0, 0, 0, exit_time=T0 + 5 * HOUR),
        _t(-0.5, -0.5, 0, 0, 0, exit_time=T0 + 2 * DAY + HOUR),
        _t(0.25, 0.25, 0, 0, 0, exit_time=T0 + 2 * DAY + 9 * HOUR),
    ]
    day0 = T0 // DAY
    # [T0, T0 + 3 days) is three UTC days; to_ms at midnight does not open a fourth
    assert metrics.daily_net_r(trades, T0, T0 + 3 * DAY) == [(day0, 1.0), (day0 + 1, 0.0), (day0 + 2, -0.25)]
    assert metrics.daily_net_r([], T0 + HOUR, T0 + 2 * HOUR) == [(day0, 0.0)]
    # a trade closing after the range widens it instead of vanishing
    assert metrics.daily_net_r(trades, T0, T0 + DAY) == [(day0, 1.0), (day0 + 1, 0.0), (day0 + 2, -0.25)]
    assert metrics.day_label(day0) == "2024-03-01"


def test_sharpe_per_day_and_annualised():
    # daily 1, 0, -0.25: mean 0.25; squared deviations 0.5625 + 0.0625 + 0.25 = 0.875; sample variance 0.4375
    s = metrics.sharpe([1.0, 0.0, -0.25])
    assert s.days == 3 and s.mean_r == pytest.approx(0.25) and s.std_r == pytest.approx(0.6614378)
    assert s.per_day == pytest.approx(0.3779645)
    assert s.annualised == pytest.approx(0.3779645 * math.sqrt(365))
    assert metrics.sharpe([0.5, 0.5]).per_day is None  # constant series: undefined
    assert metrics.sharpe([0.5]).per_day is None and metrics.sharpe([]).annualised is None


def test_hour_and_score_band_keys():
    assert metrics.utc_hour(make_trade(entry_time=T0 + 23 * HOUR + 59 * 60_000)) == "23"
    assert metrics.utc_hour(make_trade(entry_time=T0 + DAY + 30 * 60_000)) == "00"
    assert metrics.score_band(make_trade(score=74.9)) == "70–75"
    assert metrics.score_band(make_trade(score=75.0)) == "75–80"
    assert metrics.score_band(make_trade(score=89.99)) == "85–90"
    assert metrics.score_band(make_trade(score=100.0)) == "100–105"


def test_breakdowns_keep_strategies_apart_and_sort_bands_numerically():
    trades = [
        make_trade(strategy="a", score=100.0, exit_reason="tp", entry_time=T0),
        make_trade(strategy="a", score=95.5, exit_reason="sl", entry_time=T0 + HOUR),
        make_trade(strategy="a", score=96.0, exit_reason="sl", entry_time=T0 + 2 * HOUR),
        make_trade(strategy="b", score=80.0, exit_reason="sl", entry_time=T0),
    ]
    rows = metrics.breakdown(trades, "score_band")
    assert [(s, k, summ.trades) for s, k, summ in rows] == [("a", "95–100", 2), ("a", "100–105", 1), ("b", "80–85", 1)]
    by_reason = {(s, k): summ for s, k, summ in metrics.breakdown(trades, "exit_reason")}
    assert set(by_reason) == {("a", "tp"), ("a", "sl"), ("b", "sl")}
    assert by_reason[("a", "sl")].trades == 2 and by_reason[("a", "sl")].gross_r == -2.0
    assert by_reason[("a", "tp")].gross_r == 1.5  # 0.5 x 1 + 0.5 x 2


def test_cell_formatting_never_prints_negative_zero():
    from backtest.report import fmt

    assert fmt.value(-0.0, "cost_r") == "0.000" and fmt.value(-1e-17, "r") == "+0.000"
    assert fmt.value(-0.004, "usd") == "0.00" and fmt.value(-1234.5, "usd") == "-1,234.50"
    assert fmt.value(None, "ratio") == "—" and fmt.value(0.4321, "pct") == "43.2%"
    assert fmt.value("2024-03-01T02:29:59.942Z", "time") == "2024-03-01 02:29:59"
