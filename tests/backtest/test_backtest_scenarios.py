"""Hand-built scenarios through the backtest runner: every signal, trade, exit and pnl_r known by hand.

The market (one symbol, ETHUSDT, a taker BUY of 1 every 10 s from S) is built so the engine's one
signal is computable by hand, and the price path after it drives the executor through each exit:

- warm-up: prices cycle 100, 101, 102 (k mod 3), so both 5-minute bars have high 102, low 100 and the
  second opens after a close of 102: every true range is 2, Wilder ATR = 2 (seeded with the first TR);
- the strategy: direction layer only (weight 55 = its raw maximum, so points are raw), entry 40,
  warm-up 10 min, cooldown 60 min, 1R = 1.0 x ATR, TP1 1R, TP2 2R. All flow is buying, so fast (5 m)
  and mid (10 m) CVD are positive: resonance 30; no trade is above the P99 floor (ETH 100): +10;
  constant flow means zero CVD acceleration: +0. Score 40 = entry => a standard LONG.
- the first evaluation covered by 10 minutes of data is at S + 600 s (a multiple of 15 s): the signal.
  Price = the last trade before it (k = 59: 100 + 59 mod 3 = 102), ATR 2 => R = 2.
- the executor (defaults: 10,000 USDT x 2 % = 200 USDT per R, taker fee 0.05 %) with 2 bps slippage and
  market entries (``entry.kind: taker``, pinned: the hand computations are of one market entry):
  the market entry fills at the first trade at or after S + 600 s, at its price x 1.0002; qty = 200 / 2.
  Levels are re-anchored at that trade's price P: SL P - 2, TP1 P + 2, TP2 P + 4. A crossed level is
  sent at the trade that crosses it and filled at the next trade (x 0.9998 for sells).
"""

from __future__ import annotations

import pytest

from backtest.runner import BacktestRunner
from backtest.sources.records import RecordSource
from execution.config import EntryPolicy, ExecutorConfig, PaperFills
from stream_apps.core.strategy import StrategyConfig, parse_strategy

S = 1_704_067_200_000  # 2024-01-01 00:00 UTC
SEC = 1000
EX, SYM = "binance", "ETHUSDT"
SPEC = {
    "name": "hand",
    "version": "1",
    "windows": {"cvd_fast": "5m", "cvd_mid": "10m"},
    "warmup": "10m",
    "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
    "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
    "cooldown": "60m",
    "exits": {"sl_atr_mult": 1.0, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 240},
}
STRATEGY = parse_strategy(SPEC)
# the same strategy with its own 5-minute timeout (exits.timeout_min), which its signals carry
STRATEGY_5MIN = parse_strategy({**SPEC, "exits": {**SPEC["exits"], "timeout_min": 5}})
SLIP = 0.0002  # 2 bps
FEE = 0.0005
R_USD = 200.0
TAKER = EntryPolicy(kind="taker")
QTY = 100.0  # 200 USDT / R of 2


def trade(k: int, price: float) -> dict:
    t = S + 10 * SEC * k
    return {
        "exchange": EX,
        "symbol": SYM,
        "agg_id": 1000 + k,
        "price": price,
        "qty": 1.0,
        "first_trade_id": 5000 + k,
        "last_trade_id": 5000 + k,
        "event_time": t,
        "trade_time": t,
        "receive_time": t + 5,
        "taker_side": "BUY",
    }


def market(after: dict[int, float], until: int, default: float = 103.0) -> list[dict]:
    """Warm-up trades k = 0..59, then k = 60..until at `after[k]` (or the previous price)."""
    trades = [trade(k, 100.0 + k % 3) for k in range(60)]
    price = default
    for k in range(60, until + 1):
        price = after.get(k, price)
        trades.append(trade(k, price))
    return trades


def run(
    trades: list[dict],
    *,
    marks: list[dict] = (),
    config: ExecutorConfig | None = None,
    strategy: StrategyConfig = STRATEGY,
):
    config = config or ExecutorConfig(entry=TAKER, paper=PaperFills(slippage_bps=2.0))
    end = trades[-1]["trade_time"] + SEC
    source = RecordSource("hand", EX, [SYM], S, end, trades=trades, marks=list(marks))
    return BacktestRunner([strategy], config).run(source)


def fee_r(*notionals: float) -> float:
    return FEE * sum(notionals) / R_USD


def check_signal(result, strategy: StrategyConfig = STRATEGY) -> None:
    assert result.signals == 1
    (t,) = result.trades
    assert t.signal_id == f"hand:{strategy.config_hash}:{EX}:{SYM}:{S + 600 * SEC}:LONG"
    assert (t.direction, t.tier, t.score) == ("LONG", "standard", 40.0)
    assert t.entry_time == S + 600 * SEC
    assert t.r_usd == R_USD


def test_tp1_then_break_even_stop_with_a_funding_payment():
    funding_time = S + 800 * SEC
    marks = [
        {
            "exchange": EX,
            "symbol": SYM,
            "mark_price": 103.0,
            "index_price": 103.0,
            "funding_rate": 0.0001,
            "next_funding_time": funding_time,
            "event_time": S + 700 * SEC,
            "receive_time": S + 700 * SEC,
        }
    ]
    # k=60 (600 s) 102: entry; 103 until k=90 (900 s) 104.5 crosses TP1 (104); k=91 fills the half;
    # k=92 (920 s) 101.5 crosses the break-even stop (102); k=93 fills the rest
    result = run(market({60: 102.0, 61: 103.0, 90: 104.5, 91: 104.5, 92: 101.5, 93: 101.5}, 93), marks=marks)
    check_signal(result)
    (t,) = result.trades
    entry_fill, tp1_fill, stop_fill = 102.0 * (1 + SLIP), 104.5 * (1 - SLIP), 101.5 * (1 - SLIP)
    assert (t.entry_price, t.sl_price, t.tp1_price, t.tp2_price) == pytest.approx((102.0, 100.0, 104.0, 106.0))
    assert (t.exit_reason, t.tp1_hit, t.exit_time) == ("sl_be", True, S + 930 * SEC)
    assert t.exit_price == pytest.approx(stop_fill)
    assert t.pnl_r_gross == pytest.approx(0.5 * 1.0)  # TP1's half at 1R, the rest at break-even
    assert t.fees_r == pytest.approx(fee_r(QTY * entry_fill, 50 * tp1_fill, 50 * stop_fill))
    # entry: paid 2 bps over the trade; TP1 and the stop: measured against their levels (104, 102)
    slippage = (entry_fill - 102.0) / 2 + 0.5 * (104.0 - tp1_fill) / 2 + 0.5 * (102.0 - stop_fill) / 2
    assert t.slippage_r == pytest.approx(slippage)
    funding = QTY * 103.0 * 0.0001 / R_USD  # open at the funding time: qty x mark x rate, a long pays
    assert t.funding_r == pytest.approx(funding)
    assert t.pnl_r_net == pytest.approx(0.5 - t.fees_r - slippage - funding)
    cash = (
        50 * tp1_fill
        + 50 * stop_fill
        - QTY * entry_fill
        - FEE * (QTY * entry_fill + 50 * tp1_fill + 50 * stop_fill)
        - QTY * 103.0 * 0.0001
    )
    assert t.pnl_r_net == pytest.approx(cash / R_USD)


def test_stop_loss():
    # k=70 (700 s) 99.5 crosses the stop (100); k=71 fills it
    result = run(market({60: 102.0, 61: 103.0, 70: 99.5}, 71))
    check_signal(result)
    (t,) = result.trades
    entry_fill, stop_fill = 102.0 * (1 + SLIP), 99.5 * (1 - SLIP)
    assert (t.exit_reason, t.tp1_hit, t.exit_time, t.funding_r) == ("sl", False, S + 710 * SEC, 0.0)
    assert t.pnl_r_gross == -1.0
    assert t.fees_r == pytest.approx(fee_r(QTY * entry_fill, QTY * stop_fill))
    assert t.slippage_r == pytest.approx((entry_fill - 102.0) / 2 + (100.0 - stop_fill) / 2)
    assert t.pnl_r_net == pytest.approx(
        (QTY * stop_fill - QTY * entry_fill - FEE * QTY * (entry_fill + stop_fill)) / R_USD
    )


def test_take_profit_after_tp1():
    # TP1 crossed at k=90, filled k=91; TP2 (106) crossed at k=92 (106.5), filled k=93
    result = run(market({60: 102.0, 61: 103.0, 90: 104.5, 92: 106.5}, 93))
    check_signal(result)
    (t,) = result.trades
    entry_fill, tp1_fill, tp2_fill = 102.0 * (1 + SLIP), 104.5 * (1 - SLIP), 106.5 * (1 - SLIP)
    assert (t.exit_reason, t.tp1_hit, t.exit_time) == ("tp", True, S + 930 * SEC)
    assert t.pnl_r_gross == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)
    assert t.fees_r == pytest.approx(fee_r(QTY * entry_fill, 50 * tp1_fill, 50 * tp2_fill))
    assert t.pnl_r_net == pytest.approx(
        (50 * tp1_fill + 50 * tp2_fill - QTY * entry_fill - FEE * (QTY * entry_fill + 50 * tp1_fill + 50 * tp2_fill))
        / R_USD
    )


def test_timeout_closes_at_market_after_the_strategys_timeout():
    config = ExecutorConfig(
        entry=TAKER, paper=PaperFills(slippage_bps=2.0), timeout_min=240
    )  # the default: not what runs
    # opened at 600 s; the first trade 300 s later (k=90, 900 s) times it out; k=91 fills at 103
    result = run(market({60: 102.0, 61: 103.0}, 91), config=config, strategy=STRATEGY_5MIN)
    check_signal(result, STRATEGY_5MIN)
    (t,) = result.trades
    entry_fill, exit_fill = 102.0 * (1 + SLIP), 103.0 * (1 - SLIP)
    assert (t.exit_reason, t.tp1_hit, t.exit_time) == ("timeout", False, S + 910 * SEC)
    assert t.pnl_r_gross == pytest.approx((103.0 - 102.0) / 2)  # (exit market price - entry) / R
    assert t.slippage_r == pytest.approx((entry_fill - 102.0) / 2 + (103.0 - exit_fill) / 2)
    assert t.pnl_r_net == pytest.approx(
        (QTY * exit_fill - QTY * entry_fill - FEE * QTY * (entry_fill + exit_fill)) / R_USD
    )


def test_the_executors_timeout_setting_does_not_override_the_strategys():
    config = ExecutorConfig(
        entry=TAKER, paper=PaperFills(slippage_bps=2.0), timeout_min=5
    )  # a default for signals without one
    first = f"hand:{STRATEGY.config_hash}:{EX}:{SYM}:{S + 600 * SEC}:LONG"
    # the strategy's 240 minutes run: still open 2 hours after the entry at 600 s (later signals of the
    # slot, one per 60-minute cooldown, are refused: position_open)
    result = run(market({60: 102.0, 61: 103.0}, 60 + 720), config=config)
    assert result.trades == []
    [still_open] = result.params["open_positions_at_end"]
    assert (still_open["signal_id"], still_open["entry_time"]) == (first, S + 600 * SEC)
    # 240 minutes after the entry (k = 60 + 1440) it times out; k = 1501 fills at 103
    result = run(market({60: 102.0, 61: 103.0}, 60 + 1441), config=config)
    (t,) = result.trades
    assert (t.signal_id, t.entry_time) == (first, S + 600 * SEC)
    assert (t.exit_reason, t.exit_time) == ("timeout", S + (600 + 240 * 60 + 10) * SEC)
    assert t.exit_price == pytest.approx(103.0 * (1 - SLIP))


def test_slicing_does_not_change_the_result():
    trades = market({60: 102.0, 61: 103.0, 90: 104.5, 92: 106.5}, 93)
    end = trades[-1]["trade_time"] + SEC
    results = []
    for slice_ms in (1_000, 7_000, 60_000, 3_600_000):
        source = RecordSource("hand", EX, [SYM], S, end, trades=trades, slice_ms=slice_ms)
        results.append(BacktestRunner([STRATEGY], ExecutorConfig(entry=TAKER)).run(source).trades)
    assert all(r == results[0] for r in results) and len(results[0]) == 1
