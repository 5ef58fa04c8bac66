"""Market alerts (tapeflow_notify.market_alerts) on hand-built feature records, in process.

Each rule fires at its threshold and not below; a held condition alerts once; it re-arms after a
record shows it cleared; the cooldown per symbol and kind holds a new episode back (and lets it out
once over if it still holds); missing, NaN or odd fields never alert and never raise; the notes go
through the rate-limited dispatcher; the thresholds setting is parsed and checked.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from tapeflow_notify.dispatch import Dispatcher
from tapeflow_notify.market_alerts import AlertRules, MarketAlerts
from tapeflow_notify.messages import note_for
from tapeflow_notify.metrics import NotifyMetrics
from tapeflow_notify.service import NotifyService
from tapeflow_runtime.settings import Settings

T0 = 1_700_000_000_000
S = 1000


def rec(inputs: dict, t: int = T0, symbol: str = "BTCUSDT", strategy: str = "v53") -> dict:
    return {
        "evaluation_id": f"{strategy}:h:binance:{symbol}:{t}",
        "strategy": strategy,
        "strategy_version": "1",
        "config_hash": "h",
        "exchange": "binance",
        "symbol": symbol,
        "eval_time": t,
        "inputs": inputs,
        "layer_scores": {},
        "score": 0.0,
        "direction": None,
        "gate": None,
        "block_reason": "below_entry",
    }


def kinds(alerts: MarketAlerts, inputs: dict, t: int = T0, **kw) -> list[str]:
    return [n.kind for n in alerts.notes_for(rec(inputs, t, **kw))]


FIRING = {
    "oi_spike": {"oi_spike_z": 3.0, "oi_change_5m": 0.021},
    "divergence": {"cvd_divergence": -1.0, "cvd_divergence_price": 0.001, "cvd_divergence_cvd": 12.5},
    "liquidation_cascade": {
        "liq_cascade_long": 1.0,
        "liq_cascade_short": 0.0,
        "liq_long_usd": 2.5e6,
        "liq_short_usd": 0.0,
        "liq_long_count": 40.0,
        "liq_short_count": 0.0,
    },
    "wall_pulled": {"wall_pulled_bid": 1.0, "wall_pulled_ask": 0.0},
}
CLEAR = {
    "oi_spike": {"oi_spike_z": 0.5},
    "divergence": {"cvd_divergence": 0.0, "cvd_divergence_price": 0.0},
    "liquidation_cascade": {"liq_cascade_long": 0.0, "liq_cascade_short": 0.0},
    "wall_pulled": {"wall_pulled_bid": 0.0, "wall_pulled_ask": 0.0},
}


@pytest.mark.parametrize("kind", list(FIRING))
def test_each_rule_fires_with_its_text(kind):
    notes = MarketAlerts().notes_for(rec(FIRING[kind]))
    assert [n.kind for n in notes] == [kind]
    note = notes[0]
    assert "BTCUSDT (binance)" in note.text
    assert note.record["symbol"] == "BTCUSDT" and note.record["eval_time"] == T0 and note.record["kind"] == kind
    assert set(note.record["inputs"]) <= set(FIRING[kind])


def test_texts():
    a = MarketAlerts()
    assert (
        a.notes_for(rec(FIRING["oi_spike"]))[0].text
        == "oi spike BTCUSDT (binance): open interest up, z +3.00, OI +2.10% in 5 min"
    )
    assert (
        a.notes_for(rec(FIRING["divergence"]))[0].text
        == "divergence BTCUSDT (binance): bearish: price 0.10% above its high, CVD not (CVD 12.5 short of it)"
    )
    assert "longs liquidated: 40, 2,500,000 USD (at least" in a.notes_for(rec(FIRING["liquidation_cascade"]))[0].text
    assert a.notes_for(rec(FIRING["wall_pulled"]))[0].text == "wall pulled BTCUSDT (binance): wall pulled: 1 bid"


@pytest.mark.parametrize(
    "inputs,fires",
    [
        ({"oi_spike_z": 3.0}, True),
        ({"oi_spike_z": -3.0}, True),
        ({"oi_spike_z": 2.999}, False),
        ({"oi_spike_z": -2.999}, False),
        ({"cvd_divergence": 1.0, "cvd_divergence_price": 0.001}, True),
        ({"cvd_divergence": -1.0, "cvd_divergence_price": 0.000999}, False),
        ({"cvd_divergence": 0.0, "cvd_divergence_price": 0.5}, False),
        ({"liq_cascade_short": 1.0, "liq_short_usd": 0.0}, True),
        ({"liq_cascade_short": 0.0, "liq_short_usd": 9e9}, False),
        ({"wall_pulled_bid": 0.0, "wall_pulled_ask": 1.0}, True),
        ({"wall_pulled_bid": 0.0, "wall_pulled_ask": 0.0}, False),
    ],
)
def test_default_thresholds_fire_at_and_not_below(inputs, fires):
    assert bool(kinds(MarketAlerts(), inputs)) is fires


def test_configured_thresholds_fire_at_and_not_below():
    rules = AlertRules.from_mapping(
        {"oi_spike_z": 4, "divergence_price": 0.005, "liquidation_usd": 1e6, "wall_pulled": 2}
    )
    cases = [
        ({"oi_spike_z": 4.0}, True),
        ({"oi_spike_z": 3.99}, False),
        ({"cvd_divergence": 1.0, "cvd_divergence_price": 0.005}, True),
        ({"cvd_divergence": 1.0, "cvd_divergence_price": 0.0049}, False),
        ({"liq_cascade_long": 1.0, "liq_long_usd": 1e6}, True),
        ({"liq_cascade_long": 1.0, "liq_long_usd": 999_999.0}, False),
        ({"liq_cascade_long": 1.0}, False),  # the USD threshold needs the USD
        ({"wall_pulled_bid": 1.0, "wall_pulled_ask": 1.0}, True),
        ({"wall_pulled_bid": 1.0}, False),
    ]
    for inputs, fires in cases:
        assert bool(kinds(MarketAlerts(rules), inputs)) is fires, inputs


def test_a_held_condition_alerts_once_even_once_per_strategy():
    a = MarketAlerts()
    assert kinds(a, FIRING["oi_spike"], T0) == ["oi_spike"]
    assert kinds(a, FIRING["oi_spike"], T0, strategy="other") == []  # the same tick for another strategy
    for i in range(1, 2000):  # held for half an hour, well past the cooldown
        assert kinds(a, {"oi_spike_z": 3.0 + i / 1000}, T0 + i * S) == []


def test_rearms_after_clearing_once_the_cooldown_is_over():
    a = MarketAlerts(AlertRules(cooldown_s=60))
    assert kinds(a, FIRING["wall_pulled"], T0) == ["wall_pulled"]
    assert kinds(a, CLEAR["wall_pulled"], T0 + 10 * S) == []
    assert kinds(a, FIRING["wall_pulled"], T0 + 59 * S) == []  # a new episode inside the cooldown: held back
    assert kinds(a, FIRING["wall_pulled"], T0 + 60 * S) == ["wall_pulled"]  # still true when it ends: alerts
    assert kinds(a, FIRING["wall_pulled"], T0 + 200 * S) == []  # and that episode is held
    assert kinds(a, CLEAR["wall_pulled"], T0 + 201 * S) == []
    assert kinds(a, FIRING["wall_pulled"], T0 + 202 * S) == ["wall_pulled"]  # cleared and past cooldown


def test_cooldown_suppresses_an_episode_that_clears_within_it():
    a = MarketAlerts()  # 300 s
    assert kinds(a, FIRING["divergence"], T0) == ["divergence"]
    for k in range(1, 5):  # flapping: on/off every 30 s, all inside the cooldown
        assert kinds(a, CLEAR["divergence"], T0 + (60 * k - 30) * S) == []
        assert kinds(a, FIRING["divergence"], T0 + 60 * k * S) == []
    assert kinds(a, CLEAR["divergence"], T0 + 270 * S) == []
    assert kinds(a, FIRING["divergence"], T0 + 299 * S) == []
    assert kinds(a, FIRING["divergence"], T0 + 300 * S) == ["divergence"]


def test_state_is_per_symbol_and_kind():
    a = MarketAlerts()
    both = {**FIRING["oi_spike"], **FIRING["wall_pulled"]}
    assert kinds(a, both) == ["oi_spike", "wall_pulled"]
    assert kinds(a, both, symbol="ETHUSDT") == ["oi_spike", "wall_pulled"]
    assert kinds(a, {**both, **FIRING["liquidation_cascade"]}, T0 + S) == ["liquidation_cascade"]
    assert kinds(a, {**CLEAR["oi_spike"], **FIRING["wall_pulled"]}, T0 + 400 * S) == []
    assert kinds(a, both, T0 + 401 * S) == ["oi_spike"]  # only the one that cleared re-armed


def test_missing_fields_neither_alert_nor_clear():
    a = MarketAlerts(AlertRules(cooldown_s=0))
    assert kinds(a, FIRING["oi_spike"], T0) == ["oi_spike"]
    assert kinds(a, {}, T0 + S) == []  # detector value not available: the episode is still open
    assert kinds(a, {"oi_change_5m": 0.5, "oi_spike_z": math.nan}, T0 + 2 * S) == []
    assert kinds(a, FIRING["oi_spike"], T0 + 3 * S) == []
    assert kinds(a, CLEAR["oi_spike"], T0 + 4 * S) == []
    assert kinds(a, FIRING["oi_spike"], T0 + 5 * S) == ["oi_spike"]


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"cvd_divergence": 1.0},
        {"cvd_divergence_price": 0.5},
        {"liq_long_usd": 1e9, "liq_long_count": 99.0},
        {"oi_change_5m": 9.0},
        {"wall_filled_bid": 5.0},
        {"oi_spike_z": "huge"},
        {"oi_spike_z": None},
        {"oi_spike_z": True},
        {"cvd_divergence": math.nan, "cvd_divergence_price": 1.0},
        {"wall_pulled_bid": math.nan},
        {"oi_spike_z": math.inf * 0},
    ],
)
def test_missing_or_odd_fields_never_alert_nor_raise(inputs):
    assert kinds(MarketAlerts(), inputs) == []


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"symbol": "BTCUSDT"},
        {"symbol": "BTCUSDT", "eval_time": T0, "inputs": None},
        {"symbol": "BTCUSDT", "eval_time": "x", "inputs": {"oi_spike_z": 9.0}},
        {"symbol": None, "eval_time": T0, "inputs": {"oi_spike_z": 9.0}},
    ],
)
def test_malformed_records_never_alert_nor_raise(record):
    assert MarketAlerts().notes_for(record) == []


def test_same_records_same_alerts():
    records = [
        rec({**FIRING["oi_spike"], "oi_spike_z": z}, T0 + i * 30 * S, symbol=sym)
        for i, (z, sym) in enumerate(
            [(3.5, "BTCUSDT"), (0.1, "BTCUSDT"), (4.0, "ETHUSDT"), (3.2, "BTCUSDT"), (0.0, "ETHUSDT"), (5.0, "BTCUSDT")]
            * 5
        )
    ]

    def run() -> list:
        a = MarketAlerts(AlertRules(cooldown_s=100))
        return [(n.kind, n.text, n.record["eval_time"]) for r in records for n in a.notes_for(r)]

    assert run() == run() and len(run()) > 2


class Sink:
    """Stands in for a channel: the dispatcher only needs its name before anything is sent."""

    name = "sink"


def test_alerts_go_through_the_rate_limited_dispatcher():
    async def main():
        now = [0.0]
        sink = Sink()
        d = Dispatcher([sink], 2, NotifyMetrics(), clock=lambda: now[0])
        a = MarketAlerts()
        for i, sym in enumerate(["AUSDT", "BUSDT", "CUSDT", "DUSDT"]):
            for note in a.notes_for(rec(FIRING["oi_spike"], T0 + i, symbol=sym)):
                d.submit(note)
        sender = d.senders[0]
        assert sender.queue.qsize() == 2 and dict(sender.held) == {"oi_spike": 2}
        now[0] = 30.0  # one token back: the summary goes out
        sender.tick()
        assert not sender.held
        return [sender.queue.get_nowait() for _ in range(3)]

    notes = asyncio.run(main())
    assert [n.kind for n in notes] == ["oi_spike", "oi_spike", "summary"]
    assert "2 oi_spikes" in notes[2].text


def test_thresholds_setting(monkeypatch):
    monkeypatch.setenv("TAPEFLOW_NOTIFY_ALERT_THRESHOLDS", "oi_spike_z=4.5, cooldown_s=600")
    monkeypatch.setenv("TAPEFLOW_NOTIFY_EVENTS", "signals,features")
    s = Settings()
    assert s.notify_events == ["signals", "features"]
    rules = AlertRules.from_mapping(s.notify_alert_thresholds)
    assert rules == AlertRules(oi_spike_z=4.5, cooldown_s=600.0)
    monkeypatch.delenv("TAPEFLOW_NOTIFY_EVENTS")
    assert "features" not in Settings().notify_events  # the default: no market alerts
    with pytest.raises(ValueError, match="unknown alert threshold"):
        AlertRules.from_mapping({"oi_spike": 3})
    with pytest.raises(ValueError, match=">= 0"):
        AlertRules.from_mapping({"wall_pulled": -1})
    monkeypatch.setenv("TAPEFLOW_NOTIFY_ALERT_THRESHOLDS", "oi_spike_z")
    with pytest.raises(ValueError, match="name=value"):
        Settings()


def test_the_service_routes_features_to_the_alerts():
    """NotifyService.handle on stand-ins (no broker): a `features` record goes to the market alerts, the
    other topics to note_for as before."""

    class Msg:
        def __init__(self, topic, record):
            self._topic, self._record = topic, record

        def error(self):
            return None

        def topic(self):
            return self._topic

        def partition(self):
            return 0

        def timestamp(self):
            return (1, T0)

        def value(self):
            return self._record

        def offset(self):
            return 0

    submitted = []
    fake = SimpleNamespace(
        names={"t.features": "features", "t.risk.events": "risk.events"},
        metrics=NotifyMetrics(),
        serde=SimpleNamespace(decode=lambda v: v),
        alerts=MarketAlerts(),
        dispatcher=SimpleNamespace(submit=submitted.append),
    )
    risk = {
        "scope": "global",
        "mode": "paper",
        "decision": "halt",
        "state": "halted",
        "reason": "kill_switch",
        "daily_pnl_r": None,
        "consecutive_losses": 0,
        "paused_until": None,
        "event_time": T0,
    }
    NotifyService.handle(
        fake,
        [
            Msg("t.features", rec({**FIRING["oi_spike"], **FIRING["wall_pulled"]})),
            Msg("t.features", rec(FIRING["oi_spike"], T0 + S)),
            Msg("t.risk.events", risk),
            Msg("t.other", risk),
        ],
    )
    assert [n.kind for n in submitted] == ["oi_spike", "wall_pulled", "risk"]
    assert submitted[2] == note_for("risk.events", risk)
