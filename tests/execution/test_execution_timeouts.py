"""Strategy-owned timeouts: a signal carries its strategy's exits.timeout_min as `timeout_ms` and the
executor runs the position with it; the executor's `timeout_min` / `timeout_min_by_strategy` only
stand in for signals without one (written before signals carried it), and a restart keeps the
timeout a position was opened with.

Setup unless a test says otherwise: LONG, R = 2 (SL 98, TP1 102, TP2 104), entry filled by the trade at
T0 + 1 s at 100; the price then stays at 100.5, between the stop and TP1, so only a timeout closes it.
A timeout is evaluated on trade time: the first trade at or after entry + timeout sends the market
exit, the next trade fills it.
"""

from __future__ import annotations

import io

import pytest
from fastavro import parse_schema, schemaless_writer

from execution.config import ExecutorConfig
from execution.domain import InvalidSignal, Signal
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from schemas.avsc import strip_logical_types
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde, frame_header
from tests.support.execution import T0, Harness, signal_record, trade_record

S = 1000
MIN = 60 * S
ENTRY = T0 + S  # the entry fill's trade time: the position's age counts from here


def open_long(config: ExecutorConfig, **signal) -> Harness:
    h = Harness(config)
    assert h.signal(eval_time=T0, **signal).allowed
    h.trade(100.0, ENTRY)
    [opened] = h.positions("opened")
    assert opened["entry_price"] == 100.0 and opened["event_time"] == ENTRY
    return h


def drift(h: Harness, until: int, step: int = MIN) -> None:
    """Trades at 100.5 (no level touched) every `step` from one step after the entry up to `until`."""
    for t in range(ENTRY + step, until + 1, step):
        h.trade(100.5, t)


def test_the_signals_timeout_closes_the_position_not_the_executors():
    h = open_long(ExecutorConfig(timeout_min=240), timeout_ms=5 * MIN)
    assert h.positions("opened")[0]["timeout_ms"] == 5 * MIN
    h.trade(100.5, ENTRY + 5 * MIN - 1)  # 1 ms short of 5 minutes: still open
    assert not h.positions("closed")
    h.trade(100.5, ENTRY + 5 * MIN)  # 5 minutes: timeout, market sell on the next trade
    h.trade(100.5, ENTRY + 5 * MIN + S)
    c = h.closed()
    assert (c["exit_reason"], c["event_time"], c["exit_price"]) == ("timeout", ENTRY + 5 * MIN + S, 100.5)
    assert c["pnl_r_gross"] == pytest.approx(0.25)  # (100.5 - 100) / 2
    assert c["timeout_ms"] == 5 * MIN


def test_the_signals_timeout_wins_over_a_per_strategy_setting_too():
    h = open_long(ExecutorConfig(timeout_min=240, timeout_min_by_strategy={"v53": 1}), timeout_ms=5 * MIN)
    drift(h, ENTRY + 4 * MIN)  # past the setting's 1 minute: still open
    assert not h.positions("closed")
    drift(h, ENTRY + 5 * MIN + S, step=S)  # 1-second trades from entry on: closes at 5 min, fills 1 s later
    assert (h.closed()["exit_reason"], h.closed()["event_time"]) == ("timeout", ENTRY + 5 * MIN + S)


@pytest.mark.parametrize(
    "config, minutes",
    [
        (ExecutorConfig(timeout_min=7), 7),
        (ExecutorConfig(timeout_min=240, timeout_min_by_strategy={"v53": 3}), 3),
    ],
)
@pytest.mark.parametrize("form", ["null", "absent"])
def test_a_signal_without_a_timeout_runs_the_executors_setting(config, minutes, form):
    rec = signal_record(eval_time=T0)
    if form == "absent":  # a record from a producer that does not know the field at all
        del rec["timeout_ms"]
    h = Harness(config)
    assert h.signal_rec(rec).allowed
    h.trade(100.0, ENTRY)
    assert h.positions("opened")[0]["timeout_ms"] == minutes * MIN
    drift(h, ENTRY + minutes * MIN - S, step=S)
    assert not h.positions("closed")
    h.trade(100.5, ENTRY + minutes * MIN)
    h.trade(100.5, ENTRY + minutes * MIN + S)
    assert (h.closed()["exit_reason"], h.closed()["event_time"]) == ("timeout", ENTRY + minutes * MIN + S)


def test_a_signal_written_with_the_schema_before_the_field_falls_back_to_the_setting():
    """A signal still in the topic from before signals carried `timeout_ms` (schema version 1)."""
    registry = FileSchemaRegistry()
    v1 = registry.versions("signals-value")[0]
    assert "timeout_ms" not in {f["name"] for f in v1["schema"]["fields"]}
    old = {k: v for k, v in signal_record(eval_time=T0).items() if k != "timeout_ms"}
    buf = io.BytesIO()
    schemaless_writer(buf, parse_schema(strip_logical_types(v1["schema"])), old)
    decoded = AvroSerde(registry).decode(frame_header(v1["id"]) + buf.getvalue(), topic="signals")
    # every field added since version 1 reads as its default (null, or config_rev 0)
    assert decoded == {**old, "timeout_ms": None, "config_rev": 0, "p_win": None, "size_mult": None}
    assert Signal.from_record(decoded).timeout_ms is None
    h = Harness(ExecutorConfig(timeout_min=2))
    assert h.signal_rec(decoded).allowed
    h.trade(100.0, ENTRY)
    drift(h, ENTRY + 2 * MIN + S, step=S)
    assert (h.closed()["exit_reason"], h.closed()["event_time"]) == ("timeout", ENTRY + 2 * MIN + S)


@pytest.mark.parametrize("timeout_ms", [0, -60_000])
def test_a_non_positive_timeout_is_an_invalid_signal(timeout_ms):
    with pytest.raises(InvalidSignal, match="timeout_ms must be positive"):
        Signal.from_record(signal_record(timeout_ms=timeout_ms))
    h = Harness()
    assert h.signal(timeout_ms=timeout_ms).reason == "invalid_signal"


def restarted(h: Harness, config: ExecutorConfig, now: int, *, drop_timeout: bool = False) -> tuple[Executor, ListSink]:
    """A new executor restored from what `h`'s executor published (optionally with position events
    as written before they carried `timeout_ms`)."""
    records = list(h.sink.records)
    positions = [r for t, _, r in records if t == "positions"]
    if drop_timeout:
        positions = [{k: v for k, v in r.items() if k != "timeout_ms"} for r in positions]
    sink = ListSink()
    ex = Executor(config, "paper", PaperBroker(config.fees, config.paper), sink, now)
    summary = ex.restore(
        positions, [r for t, _, r in records if t == "orders"], [r for t, _, r in records if t == "risk.events"], now
    )
    assert summary["positions"] == 1
    return ex, sink


def test_a_restart_keeps_the_timeout_the_position_was_opened_with():
    h = open_long(ExecutorConfig(timeout_min=240), timeout_ms=5 * MIN)
    drift(h, ENTRY + 2 * MIN)
    # the new process even has another default: the position keeps its signal's 5 minutes
    config = ExecutorConfig(timeout_min=60)
    ex, sink = restarted(h, config, ENTRY + 3 * MIN)
    [pos] = ex.positions.values()
    assert pos.plan.timeout_ms == 5 * MIN and pos.opened_at == ENTRY
    for k, t in enumerate((ENTRY + 4 * MIN, ENTRY + 5 * MIN - 1, ENTRY + 5 * MIN, ENTRY + 5 * MIN + S)):
        ex.on_trade(trade_record(100.5, t, agg_id=90_000 + k), t)
        if t < ENTRY + 5 * MIN:
            assert not [p for p in sink.of("positions") if p["event"] == "closed"]
    [closed] = [p for p in sink.of("positions") if p["event"] == "closed"]
    assert (closed["exit_reason"], closed["event_time"], closed["timeout_ms"]) == (
        "timeout",
        ENTRY + 5 * MIN + S,
        5 * MIN,
    )


def test_a_restart_from_events_without_the_timeout_applies_the_setting():
    h = open_long(ExecutorConfig(timeout_min=240), timeout_ms=5 * MIN)
    ex, _ = restarted(
        h, ExecutorConfig(timeout_min=30, timeout_min_by_strategy={"v53": 45}), ENTRY + MIN, drop_timeout=True
    )
    [pos] = ex.positions.values()
    assert pos.plan.timeout_ms == 45 * MIN
