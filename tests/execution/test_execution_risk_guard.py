"""Each risk-guard rule trips and recovers as specified; its state survives a restart via its records."""

from __future__ import annotations

import pytest

from execution.config import RiskLimits
from execution.risk_guard import DAY_MS, GLOBAL, RiskGuard, risk_key, utc_day
from tests.support.execution import SERDE, T0

MIN = 60_000
LIMITS = RiskLimits()  # -5R/day, 5 losses -> 60 min, 30 s stale, 12 positions


def entry(
    g: RiskGuard,
    now: int,
    *,
    age: float | None = 1000.0,
    venue: bool = True,
    output: bool = True,
    open_positions: int = 0,
    sole: bool = True,
):
    return g.check_entry(
        now_ms=now,
        scope="symbol:binance:BTCUSDT",
        market_data_age_ms=age,
        venue_up=venue,
        output_up=output,
        open_positions=open_positions,
        sole_writer=sole,
    )


def test_all_clear_allows():
    d = entry(RiskGuard.fresh(LIMITS, "paper", T0), T0)
    assert (d.decision, d.reason, d.allowed) == ("allow", "checks_passed", True)


def test_daily_loss_flattens_stops_and_resets_at_utc_midnight():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    assert [d.decision for d in g.record_close(-2.0, T0, T0)] == ["allow"]
    assert [d.decision for d in g.record_close(1.0, T0 + 1, T0 + 1)] == ["allow"]
    assert [d.decision for d in g.record_close(-3.9, T0 + 2, T0 + 2)] == ["allow"]  # -4.9: not yet
    [flat] = g.record_close(-0.1, T0 + 3, T0 + 3)  # -5.0 reaches the limit
    assert (flat.decision, flat.reason) == ("flatten", "daily_loss_limit")
    assert g.to_record(flat)["state"] == "halted" and g.to_record(flat)["daily_pnl_r"] == pytest.approx(-5.0)
    assert (flat.scope, g.to_record(flat)["daily_pnl_r"]) == ("daily_loss", pytest.approx(-5.0))
    assert g.record_close(-1.0, T0 + 4, T0 + 4)[0].decision != "flatten"  # the flatten itself does not re-trip
    g.record_close(3.0, T0 + 5, T0 + 5)  # a flattened winner brings the day back above -5R ...
    assert entry(g, T0 + 6).reason == "daily_loss_limit"  # ... but trading stays stopped for the day
    restored = RiskGuard.restore(LIMITS, "paper", [g.to_record(flat)], T0 + 7)
    assert entry(restored, T0 + 7).reason == "daily_loss_limit"  # and across a restart
    midnight = (utc_day(T0) + 1) * DAY_MS
    assert entry(g, midnight - 1).reason == "daily_loss_limit"  # all day, even hours later
    assert g.tick(midnight - 1) == []
    [resume] = g.tick(midnight)
    assert (resume.decision, resume.reason) == ("resume", "daily_loss_reset")
    assert g.state.daily_pnl_r == 0 and entry(g, midnight).allowed


def test_five_consecutive_losses_pause_sixty_minutes():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    for i in range(4):
        g.record_close(-0.2, T0 + i, T0 + i)
    g.record_close(0.3, T0 + 10, T0 + 10)  # a win breaks the streak
    assert g.state.consecutive_losses == 0
    for i in range(4):
        assert g.record_close(-0.1, T0 + 20 + i, T0 + 20 + i)[0].decision == "allow"
    [pause] = g.record_close(-0.05, T0 + 30, T0 + 30)
    assert (pause.decision, pause.reason) == ("pause", "consecutive_losses")
    rec = g.to_record(pause)
    assert rec["state"] == "paused" and rec["paused_until"] == T0 + 30 + 60 * MIN and rec["consecutive_losses"] == 5
    assert entry(g, T0 + 30 + 60 * MIN - 1).reason == "consecutive_losses"
    assert g.tick(T0 + 30 + 60 * MIN - 1) == []
    [resume] = g.tick(T0 + 30 + 60 * MIN)
    assert (resume.decision, resume.reason) == ("resume", "pause_over")
    assert g.state.consecutive_losses == 0 and entry(g, T0 + 30 + 60 * MIN).allowed


def test_a_break_even_net_loss_counts_as_a_loss():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    for i in range(5):
        g.record_close(0.0, T0 + i, T0 + i)
    assert g.paused(T0 + 5)


def test_stale_or_missing_market_data_blocks_entries():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    assert entry(g, T0, age=30_000).allowed
    assert entry(g, T0, age=30_001).reason == "stale_market_data"
    assert entry(g, T0, age=None).reason == "stale_market_data"  # never seen a trade: fail closed
    assert g.market_data("binance:BTCUSDT", "symbol:binance:BTCUSDT", 500, T0) is None  # first sight: no event
    went = g.market_data("binance:BTCUSDT", "symbol:binance:BTCUSDT", 31_000, T0 + 31_000)
    assert (went.decision, went.reason) == ("block", "stale_market_data")
    assert g.market_data("binance:BTCUSDT", "symbol:binance:BTCUSDT", 32_000, T0 + 32_000) is None
    back = g.market_data("binance:BTCUSDT", "symbol:binance:BTCUSDT", 100, T0 + 33_000)
    assert (back.decision, back.reason) == ("resume", "market_data_fresh")


def test_exchange_down_output_down_and_second_writer_block_entries():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    assert entry(g, T0, venue=False).reason == "exchange_down"
    assert entry(g, T0, output=False).reason == "output_unavailable"
    assert entry(g, T0, sole=False).reason == "not_sole_writer"
    assert g.venue(False, T0).reason == "exchange_down" and g.venue(False, T0 + 1) is None
    assert g.venue(True, T0 + 2).reason == "exchange_up"


def test_max_open_positions():
    g = RiskGuard.fresh(RiskLimits(max_open_positions=2), "paper", T0)
    assert entry(g, T0, open_positions=1).allowed
    assert entry(g, T0, open_positions=2).reason == "max_open_positions"


def test_kill_switch_blocks_until_switched_off():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    [halt] = g.set_kill_switch(True, False, T0)
    assert (halt.decision, halt.reason) == ("halt", "kill_switch") and g.to_record(halt)["state"] == "halted"
    assert entry(g, T0 + 1).reason == "kill_switch"
    assert g.set_kill_switch(True, False, T0 + 2) == []  # no change, no event
    assert g.set_kill_switch(True, True, T0 + 3)[0].decision == "flatten"  # an explicit flatten always acts
    [off] = g.set_kill_switch(False, False, T0 + 4)
    assert (off.decision, off.reason) == ("resume", "kill_switch_off") and entry(g, T0 + 5).allowed


def test_state_survives_a_restart_through_its_records_and_modes_stay_apart():
    g = RiskGuard.fresh(LIMITS, "paper", T0)
    records = []
    for i in range(5):
        for d in g.record_close(-0.5, T0 + i, T0 + i):
            records.append(g.to_record(d))
    for rec in records:
        SERDE.encode("risk.events", rec)
    assert records[-1]["decision"] == "pause"
    kill = {
        "scope": "kill_switch",
        "mode": "live",
        "decision": "halt",
        "state": "halted",
        "reason": "kill_switch",
        "daily_pnl_r": None,
        "consecutive_losses": None,
        "paused_until": None,
        "event_time": T0,
    }
    live_loss = {**records[0], "mode": "live", "daily_pnl_r": -4.0, "event_time": T0 + 100}
    restored = RiskGuard.restore(LIMITS, "paper", list(reversed(records)) + [kill, live_loss], T0 + 10)
    assert restored.state.daily_pnl_r == pytest.approx(-2.5) and restored.state.consecutive_losses == 5
    assert restored.paused(T0 + 10) and entry(restored, T0 + 10).reason == "consecutive_losses"
    assert not restored.state.kill_switch  # the live kill switch is not paper's
    live = RiskGuard.restore(LIMITS, "live", records + [kill, live_loss], T0 + 10)
    assert live.state.kill_switch and live.state.daily_pnl_r == -4.0
    # a new UTC day after the restart: yesterday's loss no longer counts
    tomorrow = RiskGuard.restore(LIMITS, "paper", records, T0 + DAY_MS)
    tomorrow.tick(T0 + DAY_MS)
    assert tomorrow.state.daily_pnl_r == 0
    assert risk_key("paper", GLOBAL) == "paper:global" != risk_key("live", GLOBAL)
