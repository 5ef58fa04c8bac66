"""The execution SLO monitor (execution.slo): windows, breach streaks and the degradation rules, on a
scripted clock with hand-computed values (nearest-rank p95: the ceil(0.95 n)-th smallest sample)."""

from __future__ import annotations

import pytest

from execution.degradation import NONE, DegradationFlags
from execution.slo import FlagSchedule, SloMonitor, is_gate_error, is_insufficient_balance, p95

W = 300_000  # the default 5-minute window


def _order(cid: str, state: str, *, type_: str = "MARKET", qty: float = 1.0, filled: float = 0.0, reason=None):
    return {
        "client_order_id": cid,
        "state": state,
        "leg": "entry",
        "type": type_,
        "qty": qty,
        "filled_qty": filled,
        "reason": reason,
    }


def test_nearest_rank_p95():
    assert p95([]) is None
    assert p95([7.0]) == 7.0
    assert p95([100, 200, 600, 700]) == 700  # ceil(3.8) = 4th smallest
    assert p95(list(range(1, 21))) == 19  # ceil(19.0) = 19th of 1..20
    assert p95(list(range(1, 22))) == 20  # ceil(19.95) = 20th of 1..21


def test_round_trip_rule_triggers_above_500_ms_and_clears_at_400_with_hysteresis():
    m = SloMonitor(0)
    for ms in (100, 200, 600, 700):  # p95 700 > 500 over 4 >= 3 samples
        m.round_trip(ms, 10_000)
    assert m.advance(W - 1) == [] and m.flags == NONE  # the window is still open
    (change,) = m.advance(W)
    assert (change.time_ms, change.rule, change.active, change.value, change.threshold, change.samples) == (
        W,
        "round_trip_slow",
        True,
        700,
        500.0,
        4,
    )
    assert m.flags == DegradationFlags(no_twap_no_maker=True, reason="round_trip_slow")
    assert change.flags == m.flags
    for ms in (450, 420, 430):  # p95 450: under the trigger but above the clear threshold: stays
        m.round_trip(ms, W + 1)
    assert m.advance(2 * W) == [] and m.flags.no_twap_no_maker
    for ms in (100, 390, 300):  # p95 390 <= 400: clears at the end of the third window
        m.round_trip(ms, 2 * W + 5)
    (change,) = m.advance(3 * W)
    assert (change.time_ms, change.active, change.value, change.threshold) == (3 * W, False, 390, 400.0)
    assert m.flags == NONE and not change.flags.degraded


def test_too_few_round_trips_decide_nothing():
    m = SloMonitor(0)
    m.round_trip(900, 1)
    m.round_trip(950, 2)  # two samples < min_samples 3
    assert m.advance(W) == [] and m.flags == NONE
    assert m.last is not None and m.last.values["order_round_trip_p95_ms"] == 950
    assert m.breached_windows["order_round_trip_p95_ms"] == 1  # the objective is breached all the same


def test_maker_fill_ratio_below_a_quarter_over_the_hour_sends_market_orders_until_an_empty_hour():
    m = SloMonitor(0)
    for ratio in (0.0, 0.0, 0.5, 0.0):  # mean 0.125 < 0.25 over 4 orders
        m.maker_order(ratio, 1_000)
    (change,) = m.advance(W)
    assert (change.rule, change.active, change.value, change.samples) == ("maker_fill_ratio_low", True, 0.125, 4)
    assert m.flags == DegradationFlags(market_only=True, reason="maker_fill_ratio_low")
    # market-only sends no maker order: the bad window stays in the hour (12 windows) until it leaves it
    assert m.advance(13 * W - 1) == [] and m.flags.market_only
    (change,) = m.advance(13 * W)  # windows 1..12 hold no maker order
    assert (change.time_ms, change.active, change.value, change.samples) == (13 * W, False, None, 0)
    assert m.flags == NONE


def test_maker_rule_hysteresis_holds_between_the_thresholds_and_clears_at_035():
    m = SloMonitor(0)
    for ratio in (0.2, 0.2, 0.2, 0.2):
        m.maker_order(ratio, 5)
    assert [c.active for c in m.advance(W)] == [True]
    for ratio in (0.4, 0.4, 0.4, 0.4):  # hour: 8 orders, mean (0.8 + 1.6) / 8 = 0.3: between 0.25 and 0.35
        m.maker_order(ratio, W + 5)
    assert m.advance(2 * W) == [] and m.flags.market_only
    for ratio in (0.6, 0.6, 0.6, 0.6):  # 12 orders, (0.8 + 1.6 + 2.4) / 12 = 0.4 >= 0.35
        m.maker_order(ratio, 2 * W + 5)
    (change,) = m.advance(3 * W)
    assert change.active is False and change.value == pytest.approx(0.4) and change.threshold == 0.35


def test_both_rules_together_and_a_restored_rule():
    m = SloMonitor(0, active=["maker_fill_ratio_low", "not_a_rule"])
    assert m.flags == DegradationFlags(market_only=True, reason="maker_fill_ratio_low")
    for ms in (600, 600, 600):
        m.round_trip(ms, 1)
    m.maker_order(0.0, 1)  # one order < 4: the restored rule holds
    (change,) = m.advance(W)
    assert change.rule == "round_trip_slow"
    assert m.flags == DegradationFlags(True, True, "maker_fill_ratio_low,round_trip_slow")


def test_breach_streaks_count_consecutive_windows_and_a_window_without_samples_ends_them():
    m = SloMonitor(0)
    for k in range(3):  # 2 of 10 signals refused for stale data: 0.2 > 0.05
        for i in range(10):
            m.gate(is_gate_error(i >= 2, "checks_passed" if i >= 2 else "stale_market_data"), k * W + i)
    m.advance(3 * W)
    assert m.breached_windows["gate_error_rate"] == 3
    assert m.last is not None and m.last.values["gate_error_rate"] == pytest.approx(0.2)
    assert "gate_error_rate" in m.last.breached
    m.advance(4 * W)  # nothing in the fourth window
    assert m.breached_windows["gate_error_rate"] == 0
    m.gate(is_gate_error(False, "max_open_positions"), 4 * W)  # policy, not an error: 0 <= 0.05
    m.advance(5 * W)
    assert m.breached_windows["gate_error_rate"] == 0 and m.last.values["gate_error_rate"] == 0.0


def test_websocket_availability_and_stream_lag():
    m = SloMonitor(0)
    for i in range(1000):
        m.websocket(i != 7, i)  # one sample down in 1000: 0.999 >= 0.995
    for ms in range(1, 101):
        m.stream_lag(float(ms) * 30, 5)  # 30..3000 ms: p95 = 95th = 2850 > 2000
    m.advance(W)
    assert m.last.values["websocket_availability"] == pytest.approx(0.999)
    assert m.last.values["stream_lag_p95_ms"] == 2850.0
    assert m.last.breached == frozenset({"stream_lag_p95_ms"})


def test_order_records_give_round_trips_answers_and_maker_fill_ratios():
    m = SloMonitor(0)
    m.order_record(_order("a", "PENDING_NEW"), 1_000)
    m.sending(1_040)  # the barrier committed the intent: the order leaves now
    m.order_record(_order("a", "NEW"), 1_160)  # 120 ms
    m.order_record(_order("a", "FILLED", filled=1.0), 1_500)  # not a second answer
    m.order_record(_order("b", "PENDING_NEW"), 2_000)
    m.order_record(_order("b", "REJECTED", reason="binance -2019: Margin is insufficient."), 2_300)  # 300 ms
    m.order_record(_order("c", "PENDING_NEW", type_="LIMIT", qty=4.0), 3_000)
    m.order_record(_order("c", "NEW", type_="LIMIT", qty=4.0), 3_000)  # 0 ms (paper)
    m.order_record(_order("c", "CANCELED", type_="LIMIT", qty=4.0, filled=1.0, reason="maker_timeout"), 4_500)
    m.order_record(_order("d", "NEW"), 5_000)  # restored, never sent by this run: no round trip
    m.advance(W)
    values, samples = m.last.values, m.last.samples
    assert samples["order_round_trip_p95_ms"] == 3 and values["order_round_trip_p95_ms"] == 300.0
    assert values["insufficient_balance_rate"] == pytest.approx(1 / 3)
    assert samples["maker_fill_ratio"] == 1 and values["maker_fill_ratio"] == 0.25
    assert is_insufficient_balance("REJECTED", "binance -2018: Balance is insufficient.")
    assert not is_insufficient_balance("REJECTED", "filter LOT_SIZE")
    assert not is_insufficient_balance("CANCELED", "insufficient")


def test_a_long_gap_closes_the_windows_in_between():
    m = SloMonitor(7 * W + 123)  # the first window is [7W, 8W)
    for ms in (600, 700, 800):
        m.round_trip(ms, 7 * W + 200)
    (change,) = m.advance(1000 * W + 5)  # set at the end of the window it was measured in
    assert change.time_ms == 8 * W and change.active
    assert m.last.start_ms == 999 * W and m.breached_windows["order_round_trip_p95_ms"] == 0


def test_a_scripted_schedule_for_the_backtest():
    slow = DegradationFlags(no_twap_no_maker=True, reason="scripted")
    schedule = FlagSchedule([(2_000, NONE), (1_000, slow)])
    assert schedule(999) == NONE
    assert schedule(1_000) == slow and schedule(1_999) == slow
    assert schedule(2_000) == NONE
