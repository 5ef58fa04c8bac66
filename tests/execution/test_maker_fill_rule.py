"""The maker-fill-ratio degradation rule on event time (``execution.maker_fill_rule``), pure: fed by the
executor's orders records, read by the router, restored from the orders topic, and its changes through
the service's SLO feed (log, metrics, audit queue) and a backtest's result. Hand-made records; the
executor-level runs (a session where the rule triggers, paper = backtest, restarts) are in
``test_event_clock.py``."""

from __future__ import annotations

from typing import Any

import pytest

from execution.degradation import NONE, DegradationFlags
from execution.maker_fill_rule import MakerFillRule
from execution.metrics import ExecutorMetrics
from execution.service_slo import DegradationAudit, SloFeed, merged, wall_clock_config
from execution.slo import SloMonitor

W = 300_000  # the SLO window; windows are aligned to multiples of it
HOUR = 12 * W
MARKET_ONLY = DegradationFlags(market_only=True, reason="maker_fill_ratio_low")


def maker_end(t: int, filled: float, qty: float = 4.0, state: str = "CANCELED", **kw: Any) -> dict[str, Any]:
    """An orders record of a maker (LIMIT) entry order that ended at event time ``t``."""
    return {
        "mode": "paper",
        "leg": "entry",
        "type": "LIMIT",
        "state": state,
        "qty": qty,
        "filled_qty": filled,
        "event_time": t,
    } | kw


def feed(rule: MakerFillRule, records: list[dict[str, Any]]) -> None:
    for record in records:
        rule.order_record(record)


def test_maker_entries_below_a_quarter_over_the_hour_route_market_from_the_window_end():
    rule = MakerFillRule()
    # 4 maker entries in the window [W, 2W): filled 1/4, 0, 0 and 2/4 -> mean (0.25 + 0.5) / 4 = 0.1875
    feed(rule, [maker_end(W + 10, 1.0), maker_end(W + 20, 0.0), maker_end(W + 30, 0.0, state="REJECTED")])
    feed(rule, [maker_end(W + 40, 2.0, state="EXPIRED")])
    # not samples: a market entry, a resting maker, an exit, another mode's record, a maker with no quantity
    feed(rule, [maker_end(W + 50, 0.0, type="MARKET"), maker_end(W + 60, 0.0, state="NEW")])
    feed(rule, [maker_end(W + 70, 0.0, leg="sl"), maker_end(W + 80, 0.0, qty=0.0)])
    assert rule.flags_at(2 * W - 1) == NONE  # the window has not closed: the rules look at closed windows
    assert rule.flags_at(2 * W) == MARKET_ONLY
    (change,) = rule.take_changes()
    assert (change.time_ms, change.rule, change.active, change.samples) == (2 * W, "maker_fill_ratio_low", True, 4)
    assert change.value == pytest.approx(0.1875)
    assert rule.take_changes() == []


def test_three_bad_makers_are_too_few_and_a_full_fill_counts_as_one():
    rule = MakerFillRule()
    feed(rule, [maker_end(W + 1, 0.0), maker_end(W + 2, 0.0), maker_end(W + 3, 0.0)])
    assert rule.flags_at(3 * W) == NONE  # 3 samples < 4: decides nothing
    feed(rule, [maker_end(3 * W + 1, 4.0, state="FILLED")])  # 4 in the hour: (0 + 0 + 0 + 1) / 4 = 0.25
    assert rule.flags_at(4 * W) == NONE  # not below 0.25
    feed(rule, [maker_end(4 * W + 1, 0.0)])  # 5: 1 / 5 = 0.2
    assert rule.flags_at(5 * W) == MARKET_ONLY


def test_it_clears_by_hysteresis_at_035_with_four_samples_and_after_an_hour_without_makers():
    rule = MakerFillRule()
    feed(rule, [maker_end(W + k, 0.0) for k in range(4)])
    assert rule.flags_at(2 * W) == MARKET_ONLY
    # between the thresholds: 4 more at 0.6 -> 8 in the hour, 2.4 / 8 = 0.3 (>= 0.25, < 0.35): held
    feed(rule, [maker_end(2 * W + k, 0.6 * 4) for k in range(4)])
    assert rule.flags_at(3 * W) == MARKET_ONLY
    # 4 full fills: 12 in the hour, (2.4 + 4) / 12 = 0.5333 >= 0.35 with >= 4 samples: cleared
    feed(rule, [maker_end(3 * W + k, 4.0, state="FILLED") for k in range(4)])
    assert rule.flags_at(4 * W) == NONE
    assert [(c.time_ms, c.active) for c in rule.take_changes()] == [(2 * W, True), (4 * W, False)]
    # set again (the hour before holds only these); market-only sends no maker: a whole hour after the
    # window that set it, with no maker order in it, clears it
    feed(rule, [maker_end(20 * W + k, 0.0) for k in range(4)])
    assert rule.flags_at(21 * W) == MARKET_ONLY
    assert rule.flags_at(21 * W + HOUR - 1) == MARKET_ONLY  # the bad window is still in the last hour
    rule.advance(21 * W + HOUR)  # a clock tick: windows 21..32 held no maker order
    assert rule.flags == NONE
    assert [(c.time_ms, c.active, c.samples) for c in rule.take_changes()] == [
        (21 * W, True, 4),
        (21 * W + HOUR, False, 0),
    ]


def test_a_restore_from_the_orders_records_equals_the_uninterrupted_rule():
    """The hysteresis remembers more than the hour: a rule set 2 h ago and held since by a ratio between
    the thresholds (0.3) is in force at the cut, which the last hour's samples alone would not say."""
    records = [maker_end(W + k, 0.0) for k in range(4)]  # set at 2W
    for w in range(2, 26):  # 2 h of windows, each 0.6 + 0 -> 0.3 over any hour: held
        records += [maker_end(w * W + 1, 0.6 * 4), maker_end(w * W + 2, 0.0)]
    cut = 26 * W + 5
    whole = MakerFillRule()
    feed(whole, records)
    assert whole.flags_at(cut) == MARKET_ONLY
    restored = MakerFillRule()
    # the topic's order is per partition: the restore replays in event-time order; records of another
    # mode and the other legs are not samples
    restored.restore([maker_end(W, 0.0, mode="live"), *reversed(records), maker_end(W, 0.0, leg="tp1")], "paper", cut)
    assert restored.flags == MARKET_ONLY
    assert restored.take_changes() == []  # audited by the run that made them
    fresh = MakerFillRule()
    fresh.restore([r for r in records if r["event_time"] >= cut - HOUR], "paper", cut)
    assert fresh.flags == NONE  # the last hour alone: 0.3 never crosses 0.25, so it is not set
    # after the cut both go on alike: 4 full fills clear it at the same window end
    after = [maker_end(27 * W + k, 4.0, state="FILLED") for k in range(4)]
    for rule in (whole, restored):
        rule.take_changes()
        feed(rule, after)
        assert rule.flags_at(28 * W) == NONE
    assert whole.take_changes() == restored.take_changes()


def test_the_paper_service_logs_counts_and_audits_the_event_time_rule_and_shows_both_sources():
    metrics = ExecutorMetrics()
    monitor = SloMonitor(0, wall_clock_config("paper"))
    assert [r.name for r in monitor.config.rules] == ["round_trip_slow"]  # the maker rule is the executor's
    assert [r.name for r in wall_clock_config("live").rules] == ["maker_fill_ratio_low", "round_trip_slow"]
    audit = DegradationAudit(None, "paper")
    recorded: list[Any] = []
    audit.record = recorded.append  # type: ignore[method-assign]  # the queue to the database thread
    slo = SloFeed(monitor, metrics, audit, "paper")
    rule = MakerFillRule()
    slo.follow(rule)
    feed(rule, [maker_end(W + k, 0.0) for k in range(4)])
    rule.advance(2 * W)  # the executor's clock tick on event time
    slo.tick(10, None)  # the service's wall-clock tick hands the change on
    assert [(c.rule, c.active, c.time_ms) for c in recorded] == [("maker_fill_ratio_low", True, 2 * W)]
    gauge = metrics.registry.get_sample_value
    assert gauge("tapeflow_executor_degradation_state", {"rule": "maker_fill_ratio_low"}) == 1
    assert gauge("tapeflow_executor_degradation_changes_total", {"rule": "maker_fill_ratio_low", "change": "set"}) == 1
    assert slo.flags() == MARKET_ONLY  # /health
    slo.tick(20, None)
    assert len(recorded) == 1  # handed on once


def test_flags_of_two_sources_merge():
    slow = DegradationFlags(no_twap_no_maker=True, reason="round_trip_slow")
    assert merged(NONE, MARKET_ONLY) == MARKET_ONLY and merged(slow, NONE) == slow
    assert merged(slow, MARKET_ONLY) == DegradationFlags(True, True, "maker_fill_ratio_low,round_trip_slow")
