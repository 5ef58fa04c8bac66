"""Engine: evaluation cadence, batching independence, restart, warm-up, late data, Avro-shaped output."""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter

import numpy as np
import pytest

from stream_apps.core.engine import Engine, EngineOutput, EngineParams
from stream_apps.core.events import (
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    MarkUpdate,
    TradeBatch,
)
from stream_apps.core.strategy import (
    default_strategy_dir,
    load_strategies,
    parse_strategy,
)
from stream_apps.core.synthetic import synthetic_trades
from tests.support.confidence_model import with_model
from tests.support.paths import REPO

T = 1_700_006_400_000  # a multiple of 15 s
MIN = 60_000
FAST = parse_strategy(
    {
        "name": "fast_test",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "warmup": "10m",
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
        "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
        "cooldown": "2m",
        "exits": {"sl_atr_mult": 1.5, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 60},
    }
)
SHIPPED = load_strategies(default_strategy_dir())
# fast_test with a confidence model (tests.support.confidence_model): its p_win and size_mult ride along in
# every batching, restart and schema check below
MODELLED = with_model(FAST, "fast_model")
STRATEGIES = [FAST, MODELLED, *SHIPPED]


def _stream(minutes=40, seed=1):
    """Time-ordered items: ('trade', TradeBatch of one trade) or ('event', MarketEvent)."""
    items = []
    for symbol, price, rate, s in (("BTCUSDT", 30_000.0, 2.0, seed), ("ETHUSDT", 2_000.0, 1.5, seed + 1)):
        trades = synthetic_trades(symbol, start_ms=T, duration_ms=minutes * MIN, rate_per_s=rate, price0=price, seed=s)
        items += [(int(trades.time_ms[i]), 0, ("trade", trades.take(slice(i, i + 1)))) for i in range(len(trades))]
        for k in range(minutes * 4):  # a book and mark update every 15 s, offset from the grid
            t = T + k * 15_000 + 7_300
            items.append((t, 1, ("event", BookUpdate("binance", symbol, t, float(np.sin(k / 5)) * 0.5))))
            items.append(
                (t, 1, ("event", MarkUpdate("binance", symbol, t, price, price, 0.0001 * np.cos(k), T + 8 * 3_600_000)))
            )
        for k in range(minutes // 5):
            t = T + k * 5 * MIN + 31_000
            items.append(
                (
                    t,
                    1,
                    (
                        "event",
                        IndicatorUpdate("binance", symbol, t, "open_interest_hist", 1e6 * (1 + 0.01 * k), t - 30_000),
                    ),
                )
            )
            items.append(
                (
                    t,
                    1,
                    (
                        "event",
                        IndicatorUpdate(
                            "binance", symbol, t, "long_short_account_ratio", 0.8 + 0.1 * (k % 5), t - 30_000
                        ),
                    ),
                )
            )
            items.append(
                (
                    t + 1,
                    1,
                    ("event", LiquidationEvent("binance", symbol, t + 1, "LONG" if k % 2 else "SHORT", 250_000.0)),
                )
            )
    items.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in items]


def _run(engine, stream, batch_size):
    out = EngineOutput()
    for start in range(0, len(stream), batch_size):
        chunk = stream[start : start + batch_size]
        trades = {}
        for kind, payload in chunk:
            if kind == "trade":
                trades.setdefault(payload.symbol, []).append(payload)
        events = [payload for kind, payload in chunk if kind == "event"]
        batches = [TradeBatch.concat(v) for v in trades.values()]
        now = max(p.time_ms if kind == "event" else int(p.time_ms[-1]) for kind, p in chunk)
        out.extend(engine.process(batches, events, now_ms=now))
    return out


@pytest.fixture(scope="module")
def stream():
    return _stream()


@pytest.fixture(scope="module")
def reference(stream):
    return _run(Engine(STRATEGIES), stream, 1000)


def test_reference_run_exercises_signals_gates_and_bars(reference):
    reasons = Counter(f["block_reason"] for f in reference.features)
    assert len(reference.signals) > 10
    assert reasons["warmup"] > 0 and reasons["gate"] == 0  # shipped strategies warm up for 24 h
    assert {s["strategy"] for s in reference.signals} == {"fast_test", "fast_model"}
    assert Counter(b["symbol"] for b in reference.bars) == {"BTCUSDT": 39, "ETHUSDT": 39}
    assert all(s["eval_time"] >= T + 10 * MIN for s in reference.signals)  # 10-min warm-up of fast_test
    # every signal carries its strategy's timeout (exits.timeout_min 60): the executor runs it
    assert {s["timeout_ms"] for s in reference.signals} == {FAST.exits.timeout_min * MIN} == {60 * MIN}


def test_the_model_strategy_sizes_and_vetoes_by_p_win(reference):
    """fast_model is fast_test plus the model: where fast_test fires, fast_model has a p_win and either
    fires with size_mult = tier multiplier x the band of its p_win, or is vetoed (model_skip) when p_win is
    at most 0.4; without a model a signal has no p_win and its size_mult is its tier's multiplier."""
    plain = [s for s in reference.signals if s["strategy"] == "fast_test"]
    modelled = [s for s in reference.signals if s["strategy"] == "fast_model"]
    assert all(s["p_win"] is None and s["size_mult"] == s["factors"]["risk_multiplier"] for s in plain)
    tiers = FAST.sizing.tier_multipliers
    for s in modelled:
        band = 1.2 if s["p_win"] > 0.85 else 1.0 if s["p_win"] > 0.6 else 0.5
        assert s["p_win"] > 0.4 and s["size_mult"] == min(getattr(tiers, s["tier"]) * band, 1.8)
    assert {s["size_mult"] for s in modelled} >= {0.5, 1.0, 1.2}  # the session's signals reach every band
    features = [f for f in reference.features if f["strategy"] == "fast_model"]
    skipped = [f for f in features if f["block_reason"] == "model_skip"]
    assert skipped and all(f["p_win"] <= 0.4 for f in skipped)
    asked = {None, "model_skip"}  # where the model decided
    assert all((f["p_win"] is not None) == (f["block_reason"] in asked) for f in features)
    # the first signal fast_test emits at a time where fast_model's model said skip, as fast_model did not
    first_skip = {(f["symbol"], f["eval_time"]) for f in skipped}
    assert any((s["symbol"], s["eval_time"]) in first_skip for s in plain)


@pytest.mark.parametrize("batch_size", [1, 7])
def test_output_does_not_depend_on_batching(stream, reference, batch_size):
    out = _run(Engine(STRATEGIES), stream, batch_size)
    assert out.bars == reference.bars
    assert out.features == reference.features
    assert out.signals == reference.signals


def test_cadence_every_closed_second_with_trades_and_every_15s():
    engine = Engine([FAST])
    times = [T + 200, T + 700, T + 3_500, T + 17_000]
    batch = TradeBatch.from_arrays(
        "binance",
        "BTCUSDT",
        [1, 2, 3, 4],
        times,
        [100.0, 101.0, 102.0, 103.0],
        [1.0, 2.0, 4.0, 8.0],
        [False, False, True, False],
    )
    out = engine.process([batch], now_ms=T + 40_000)
    assert [f["eval_time"] for f in out.features] == [T + 1_000, T + 4_000, T + 15_000, T + 18_000, T + 30_000]
    cvd = [f["inputs"]["cvd_5m"] for f in out.features]
    assert cvd == [1.0 + 2.0, 3.0 - 4.0, -1.0, -1.0 + 8.0, 7.0]  # each sees only trades before its time
    assert [f["inputs"]["last_price"] for f in out.features] == [101.0, 102.0, 102.0, 103.0, 103.0]
    assert out.features[0]["block_reason"] == "warmup"
    assert engine.process(now_ms=T + 44_999).features == []
    assert [f["eval_time"] for f in engine.process(now_ms=T + 45_000).features] == [T + 45_000]


def test_eval_interval_is_a_parameter_and_lateness_delays_evaluation():
    engine = Engine([FAST], EngineParams(eval_interval_ms=5_000, allowed_lateness_ms=2_000))
    first = TradeBatch.from_arrays("binance", "BTCUSDT", [1], [T + 100], [100.0], [1.0], [False])
    assert engine.process([first], now_ms=T + 2_000).features == []  # clock = T: nothing closed yet
    late_but_allowed = TradeBatch.from_arrays("binance", "BTCUSDT", [2], [T + 900], [100.0], [1.0], [True])
    out = engine.process([late_but_allowed], now_ms=T + 11_000)  # clock T + 9 s
    assert [f["eval_time"] for f in out.features] == [T + 1_000, T + 5_000]
    assert out.features[0]["inputs"]["cvd_5m"] == 0.0  # both trades were in time for second 0


def test_late_trades_are_counted_and_ignored():
    engine = Engine([FAST])
    engine.process(
        [
            TradeBatch.from_arrays(
                "binance", "BTCUSDT", [1, 2], [T + 100, T + 5_000], [1.0, 1.0], [1.0, 1.0], [False, False]
            )
        ]
    )
    out = engine.process(
        [TradeBatch.from_arrays("binance", "BTCUSDT", [3], [T + 900], [1.0], [50.0], [False])], now_ms=T + 6_000
    )
    assert engine.states[("binance", "BTCUSDT")].counters.late == 1
    assert [f["inputs"]["cvd_5m"] for f in out.features] == [2.0]  # at T+6 s: the late 50 is not there


def _split_after(stream, time_ms):
    for i, (kind, payload) in enumerate(stream):
        t = payload.time_ms if kind == "event" else int(payload.time_ms[0])
        if t >= time_ms:
            return i
    raise AssertionError("stream too short")


def test_restart_resumes_exactly_and_keeps_cooldown(stream, reference):
    first_signal = reference.signals[0]
    cut = _split_after(stream, first_signal["eval_time"] + 20_000)  # restart while its cooldown runs
    first = Engine(STRATEGIES)
    out = _run(first, stream[:cut], 500)
    snapshot = json.loads(json.dumps(first.to_dict()))  # plain data, as a Faust table would hold it
    resumed = Engine.from_dict(snapshot, STRATEGIES)
    out.extend(_run(resumed, stream[cut:], 500))
    assert out.bars == reference.bars
    assert out.features == reference.features
    assert out.signals == reference.signals

    # the persisted cooldown is what held signals back after the restart: without it they fire
    window = (snapshot["sealed_ms"], first_signal["eval_time"] + FAST.cooldown)
    held_back = [
        f["eval_time"]
        for f in reference.features
        if f["strategy"] == "fast_test"
        and f["symbol"] == first_signal["symbol"]
        and f["direction"] == first_signal["direction"]
        and f["block_reason"] == "cooldown"
        and window[0] < f["eval_time"] < window[1]
    ]
    assert held_back
    amnesiac = Engine.from_dict({**snapshot, "books": {}}, STRATEGIES)
    fired = [
        s["eval_time"]
        for s in _run(amnesiac, stream[cut:], 500).signals
        if s["symbol"] == first_signal["symbol"] and s["strategy"] == "fast_test"
    ]
    assert fired and fired[0] == held_back[0]


def test_restart_with_a_cooldown_running_blocks_the_same_signal():
    engine = Engine([FAST])
    trades = synthetic_trades("BTCUSDT", start_ms=T, duration_ms=30 * MIN, rate_per_s=2, seed=5)
    out = engine.process([trades], now_ms=T + 30 * MIN)
    assert out.signals
    last = out.signals[-1]
    restored = Engine.from_dict(json.loads(json.dumps(engine.to_dict())), [FAST])
    assert restored.books["fast_test"].in_cooldown(
        "binance", "BTCUSDT", last["direction"], last["eval_time"] + MIN, FAST.cooldown
    )
    assert (
        not Engine([FAST])
        .books["fast_test"]
        .in_cooldown("binance", "BTCUSDT", last["direction"], last["eval_time"] + MIN, FAST.cooldown)
    )


def test_no_signal_before_warm_up_and_not_after_a_gap():
    engine = Engine([FAST])
    trades = synthetic_trades("BTCUSDT", start_ms=T, duration_ms=25 * MIN, rate_per_s=2, seed=5)
    out = engine.process([trades], now_ms=T + 25 * MIN)
    assert {f["block_reason"] for f in out.features if f["eval_time"] < T + 10 * MIN} == {"warmup"}
    assert out.signals and min(s["eval_time"] for s in out.signals) >= T + 10 * MIN
    # agg ids jump: the data no longer covers the past, so warm-up starts again
    gap_start = int(trades.agg_id[-1]) + 100
    more = synthetic_trades(
        "BTCUSDT", start_ms=T + 25 * MIN, duration_ms=5 * MIN, rate_per_s=2, seed=6, first_agg_id=gap_start
    )
    after = engine.process([more], now_ms=T + 30 * MIN)
    assert engine.states[("binance", "BTCUSDT")].counters.gaps == 1
    assert after.features and {f["block_reason"] for f in after.features} == {"warmup"}


def test_implausible_times_are_rejected_and_do_not_move_the_clock():
    engine = Engine([FAST])
    good = TradeBatch.from_arrays(
        "binance", "BTCUSDT", [1, 2, 3], [T + 100, 32_503_680_000_000, T + 200], [1.0] * 3, [1.0] * 3, [False] * 3
    )
    out = engine.process([good], [BookUpdate("binance", "BTCUSDT", -5, 0.1)], now_ms=T + 1_000)
    future = TradeBatch.from_arrays("binance", "BTCUSDT", [4], [T + 3_600_000], [1.0], [1.0], [False])
    out.extend(engine.process([future], now_ms=T + 2_000))  # an hour ahead of the caller's clock
    assert engine.states[("binance", "BTCUSDT")].counters.rejected == 3  # year 3000, negative, future
    assert engine.clock_ms == T + 2_000
    assert [f["eval_time"] for f in out.features] == [T + 1_000]
    # id 2 never reaches the state, which therefore sees a hole in the ids (missing data: conservative)
    assert engine.states[("binance", "BTCUSDT")].counters.gaps == 1


SCHEMA_DIR = str(REPO / "schemas" / "avro")


@pytest.mark.parametrize(
    "kind, schema_file", [("bars", "bar.avsc"), ("features", "feature_evaluation.avsc"), ("signals", "signal.avsc")]
)
def test_records_match_the_avro_schemas(reference, kind, schema_file):
    import fastavro

    path = os.path.join(SCHEMA_DIR, schema_file)
    with open(path) as f:
        raw = json.load(f)
    schema = fastavro.parse_schema(raw)
    records = getattr(reference, kind)
    assert records
    field_names = [f["name"] for f in raw["fields"]]
    for record in records[:500]:
        assert list(record) == field_names
        fastavro.validation.validate(record, schema, raise_errors=True)


def test_periodic_evaluations_stop_an_idle_limit_after_the_newest_input():
    """A silence longer than ``idle_eval_limit_ms`` (a feed outage, or sources disagreeing on the
    year) is skipped, not evaluated every 15 s: hand-counted points for a 2-minute limit."""
    engine = Engine([FAST], EngineParams(idle_eval_limit_ms=2 * MIN))
    first = TradeBatch.from_arrays("binance", "BTCUSDT", [1], [T + 200], [100.0], [1.0], [False])
    years_later = T + 5 * 365 * 86_400_000
    second = TradeBatch.from_arrays("binance", "BTCUSDT", [2], [years_later + 200], [101.0], [1.0], [False])
    out = engine.process([first], now_ms=T + 1_000)
    out.extend(engine.process([second], now_ms=years_later + 40_000))
    # T+1 s (closed second), then every 15 s while the trade at T+0.2 s is at most 2 min old
    # (T+15 s .. T+120 s: 8 points), then the next trade's closed second and T' + 15/30 s
    expected = (
        [T + 1_000]
        + [T + k * 15_000 for k in range(1, 9)]
        + [years_later + 1_000, years_later + 15_000, years_later + 30_000]
    )
    assert [f["eval_time"] for f in out.features] == expected


def test_idle_limit_keeps_output_independent_of_batching():
    stream = _stream(minutes=12, seed=4)
    gap = 3 * 3_600_000  # the second half arrives 3 h later: longer than the 1 h default limit
    shifted = []
    for kind, payload in stream[len(stream) // 2 :]:
        if kind == "trade":
            payload = TradeBatch.from_arrays(
                payload.exchange,
                payload.symbol,
                payload.agg_id,
                payload.time_ms + gap,
                payload.price,
                payload.qty,
                payload.taker_sell,
            )
        else:
            payload = dataclasses.replace(payload, time_ms=payload.time_ms + gap)
        shifted.append((kind, payload))
    gapped = stream[: len(stream) // 2] + shifted
    whole = _run(Engine([FAST]), gapped, len(gapped))
    assert _run(Engine([FAST]), gapped, 1).features == whole.features
    times = sorted({f["eval_time"] for f in whole.features})
    silences = [b - a for a, b in zip(times, times[1:])]
    assert max(silences) > gap - 3_600_000  # the silence was skipped, not evaluated through


def test_a_rest_input_stamped_ahead_of_trades_in_flight_does_not_make_them_late():
    """Open interest stamped "now" by the REST server arrives before the websocket delivers the last
    few hundred ms of trades; it moves the clock only to its time minus ``event_clock_delay_ms``."""

    def trade(agg_id, at, qty):
        return TradeBatch.from_arrays("binance", "BTCUSDT", [agg_id], [at], [100.0], [qty], [False])

    engine = Engine([FAST])
    assert engine.process([trade(1, T + 200, 1.0)]).features == []
    oi = IndicatorUpdate("binance", "BTCUSDT", T + 1_300, "open_interest", 1e6, T + 1_300)
    assert engine.process(events=[oi]).features == []  # clock T + 300 ms: second 0 still open
    assert engine.process([trade(2, T + 900, 2.0)]).features == []
    out = engine.process([trade(3, T + 1_100, 4.0)])
    assert [f["eval_time"] for f in out.features] == [T + 1_000]
    assert out.features[0]["inputs"]["cvd_5m"] == 3.0  # both trades of second 0, none late
    assert engine.states[("binance", "BTCUSDT")].counters.late == 0
    # with no delay the same input order makes the second trade late
    strict = Engine([FAST], EngineParams(event_clock_delay_ms=0))
    strict.process([trade(1, T + 200, 1.0)])
    strict.process(events=[oi])
    strict.process([trade(2, T + 900, 2.0)])
    assert strict.states[("binance", "BTCUSDT")].counters.late == 1


def test_a_late_trade_is_counted_and_does_not_restart_the_warm_up():
    """Dropped as late, its agg id still continues the sequence: the next on-time trade is not a gap."""

    def trade(agg_id, at):
        return TradeBatch.from_arrays("binance", "BTCUSDT", [agg_id], [at], [100.0], [1.0], [False])

    engine = Engine([FAST])
    engine.process([trade(i, T + i * 100) for i in range(1, 11)])  # ids 1..10 up to T + 1 s
    engine.process(events=[MarkUpdate("binance", "BTCUSDT", T + 4_000, 100.0, 100.0, 0.0, T + 8 * 3_600_000)])
    assert engine.sealed_ms == T + 2_000  # the mark moved the clock to T + 3 s: seconds 0 and 1 evaluated
    engine.process([trade(11, T + 1_500)])  # late: second 1 was evaluated already
    engine.process([trade(12, T + 3_100), trade(13, T + 4_200)])
    state = engine.states[("binance", "BTCUSDT")]
    assert (state.counters.late, state.counters.gaps, state.counters.accepted) == (1, 0, 11)  # 13 is pending
    assert state.coverage_start_ms == T + 100  # warm-up coverage kept from the first trade
    # a real hole is still a gap
    engine.process([trade(15, T + 5_300), trade(16, T + 6_500)])
    assert state.counters.gaps == 1 and state.coverage_start_ms == T + 5_300


def test_an_input_arriving_first_does_not_seal_the_seconds_before_it():
    """A worker's first fetch may hold only a liquidation 13 s into the session (its topic was read
    first). Nothing has been evaluated yet, so the trades before it are not late: the output equals
    the same input given in time order. (Sealing at the first input made 34 trades late.)"""
    trades = synthetic_trades("BTCUSDT", start_ms=T, duration_ms=2 * MIN, rate_per_s=3.0, price0=30_000.0, seed=5)
    liquidation = LiquidationEvent("binance", "BTCUSDT", T + 13_420, "LONG", 150_000.0)
    params = EngineParams(allowed_lateness_ms=30_000)
    in_order = Engine([FAST], params).process([trades], [liquidation])
    engine = Engine([FAST], params)
    first = engine.process(events=[liquidation])
    rest = engine.process([trades])
    assert engine.states[("binance", "BTCUSDT")].counters.late == 0
    assert first.features == [] and rest.features == in_order.features and rest.bars == in_order.bars
    assert in_order.features[0]["eval_time"] == T + 1_000  # the first second of trades is evaluated
