"""VPIN, Kyle's lambda and Amihud (``stream_apps.core.detectors``) against the definitions.

The reference values are computed here from the definitions in batch form (pandas bars, rolling
windows, and VPIN's buckets read off the cumulative buy volume as a piecewise-linear function of the
cumulative volume), never with the detectors' own loop; the bucket edge cases are worked by hand.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_apps.core.detectors import BOOK_FIELDS, DETECTOR_FIELDS, DetectorParams, MicrostructureDetectors
from tests.support.fuzz import FUZZ  # hypothesis settings that write nothing outside the run's temp dirs

T0 = 1_700_000_040_000  # a whole minute
BAR = 60_000


def generated_trades(n: int, seed: int, *, minutes: int = 240) -> pd.DataFrame:
    """Distinct increasing times over ``minutes`` (some minutes empty), a random walk with a price
    impact of the aggressor flow, 3-decimal sizes."""
    rng = np.random.default_rng(seed)
    times = T0 + np.sort(rng.choice(minutes * BAR, size=n, replace=False))
    sell = rng.random(n) < 0.5
    qty = np.round(rng.lognormal(-1.0, 1.0, n), 3) + 0.001
    signed = np.where(sell, -qty, qty)
    price = np.round(100.0 + np.cumsum(0.02 * signed + rng.normal(0.0, 0.05, n)), 2)
    price = np.maximum(price, 1.0)
    return pd.DataFrame({"time": times, "price": price, "qty": qty, "sell": sell})


def run(params: DetectorParams, df: pd.DataFrame):
    """All trades at once, then the clock to the end of the last bar."""
    detectors = MicrostructureDetectors(params)
    log = detectors.update(df.time.to_numpy(), df.price.to_numpy(), df.qty.to_numpy(), df.sell.to_numpy())
    log.extend(detectors.advance_to((int(df.time.iloc[-1]) // params.bar_ms + 1) * params.bar_ms))
    return detectors, log


def bars_of(df: pd.DataFrame, bar_ms: int, units: np.ndarray) -> pd.DataFrame:
    """Time bars with trades: close, signed base volume, quote volume, VPIN volume units; the first
    bar only gives the reference close (its change is NaN)."""
    frame = df.assign(
        bar=df.time // bar_ms, signed=np.where(df.sell, -df.qty, df.qty), quote=df.price * df.qty, units=units
    )
    bars = frame.groupby("bar").agg(
        close=("price", "last"), signed=("signed", "sum"), quote=("quote", "sum"), units=("units", "sum")
    )
    bars["end"] = (bars.index + 1) * bar_ms
    bars["dp"] = bars.close.diff()
    bars["ret"] = bars.close / bars.close.shift(1) - 1.0
    return bars


def vpin_after(units: np.ndarray, buy_fraction: np.ndarray, bucket: int, n: int) -> np.ndarray:
    """VPIN after each volume item (NaN before n buckets): buckets read off the cumulative volume."""
    cum = np.concatenate(([0], np.cumsum(units)))
    cum_buy = np.concatenate(([0.0], np.cumsum(units * buy_fraction)))  # linear within an item
    full = int(cum[-1] // bucket)
    edges = np.arange(full + 1, dtype=np.float64) * bucket
    bought = np.diff(np.interp(edges, cum, cum_buy))
    imbalance = np.abs(2.0 * bought - bucket)  # |buy - sell| with buy + sell = bucket
    rolling = pd.Series(imbalance).rolling(n).sum().to_numpy() / (n * bucket)
    done = cum[1:] // bucket  # buckets completed after each item
    out = np.full(len(units), np.nan)
    ok = done >= n
    out[ok] = rolling[done[ok] - 1]
    return out


def test_kyle_lambda_and_amihud_equal_rolling_regressions_of_the_bars():
    df = generated_trades(6_000, seed=1)
    p = DetectorParams(kyle_window_bars=20, amihud_window_bars=15, vpin_classification="aggressor")
    detectors, log = run(p, df)
    bars = bars_of(df, p.bar_ms, np.zeros(len(df))).iloc[1:]  # bars with a change
    kyle = bars.signed.rolling(20).cov(bars.dp) / bars.signed.rolling(20).var()
    amihud = (bars.ret.abs() / bars.quote * 1e6).rolling(15).mean()
    got = log.at(bars.end.to_numpy(), (np.nan,) * 3)
    assert np.isnan(got[:19, 1]).all() and np.isnan(got[:14, 2]).all()
    np.testing.assert_allclose(got[:, 1], kyle.to_numpy(), rtol=1e-9, atol=0)
    np.testing.assert_allclose(got[:, 2], amihud.to_numpy(), rtol=1e-9, atol=0)
    assert np.isfinite(got[19:, 1]).all() and (got[14:, 2] > 0).all()
    # impact is built into the generated prices: the slope finds it (0.02 per unit)
    assert 0.01 < np.nanmedian(got[:, 1]) < 0.03


@pytest.mark.parametrize("mode", ["aggressor", "tick"])
@pytest.mark.parametrize("unit", ["base", "quote"])
def test_vpin_of_trade_classifications_equals_the_bucket_definition(mode, unit):
    df = generated_trades(5_000, seed=2)
    bucket = 25.0 if unit == "base" else 2_500.0
    p = DetectorParams(vpin_classification=mode, vpin_volume_unit=unit, vpin_bucket_volume=bucket, vpin_buckets=12)
    detectors, log = run(p, df)
    scale = 10**8 if unit == "base" else 10**6
    volume = df.qty if unit == "base" else df.price * df.qty
    units = np.rint(volume.to_numpy() * scale).astype(np.int64)
    if mode == "aggressor":
        fraction = np.where(df.sell, 0.0, 1.0)
    else:
        tick = np.sign(df.price.diff()).replace(0.0, np.nan).ffill().fillna(0.0).to_numpy()
        fraction = np.where(tick > 0, 1.0, np.where(tick < 0, 0.0, 0.5))
    expected = vpin_after(units, fraction, round(bucket * scale), 12)
    got = log.at(df.time.to_numpy() + 1, (np.nan,) * 3)[:, 0]
    assert np.isfinite(expected).sum() > 100
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    assert detectors.completed_buckets == units.sum() // round(bucket * scale)


def test_vpin_of_bulk_volume_classification_equals_the_bar_definition():
    df = generated_trades(8_000, seed=3, minutes=600)
    p = DetectorParams(
        vpin_classification="bvc", vpin_volume_unit="base", vpin_bucket_volume=40.0, vpin_buckets=10, bvc_sigma_bars=30
    )
    detectors, log = run(p, df)
    units = np.rint(df.qty.to_numpy() * 10**8).astype(np.int64)
    bars = bars_of(df, p.bar_ms, units).iloc[1:]
    sigma = bars.dp.rolling(30, min_periods=2).std().shift(1)  # the previous 30 changes, not its own
    classified = bars[sigma.notna()]
    z = classified.dp / sigma[sigma.notna()]
    fraction = np.array([NormalDist().cdf(v) for v in z])
    expected = vpin_after(classified.units.to_numpy(), fraction, 40 * 10**8, 10)
    got = log.at(classified.end.to_numpy(), (np.nan,) * 3)[:, 0]
    assert np.isfinite(expected).sum() > 50
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# VPIN buckets by hand: aggressor side, base volume, buckets of 10, n = 2
# ----------------------------------------------------------------------------------------------
def hand() -> MicrostructureDetectors:
    return MicrostructureDetectors(
        DetectorParams(
            vpin_classification="aggressor", vpin_volume_unit="base", vpin_bucket_volume=10.0, vpin_buckets=2
        )
    )


def feed(d: MicrostructureDetectors, t: int, qty: float, sell: bool):
    return d.update(np.array([t]), np.array([100.0]), np.array([qty]), np.array([sell]))


U = 10**8  # base units per coin


def test_a_trade_exactly_filling_a_bucket_closes_it_and_starts_an_empty_one():
    d = hand()
    feed(d, T0, 4.0, False)
    assert d.completed_buckets == 0 and d.bucket_fill == (4 * U, 4.0 * U, 0.0)
    log = feed(d, T0 + 1, 6.0, True)
    assert d.completed_buckets == 1
    assert d.bucket_fill == (0, 0.0, 0.0)
    assert d.bucket_imbalances().tolist() == [2.0 * U]
    assert len(log) == 1 and np.isnan(log.values[0, 0])  # fewer than n buckets: missing
    assert np.isnan(d.values[0])
    feed(d, T0 + 2, 10.0, False)  # the second bucket, exactly
    assert d.bucket_imbalances().tolist() == [2.0 * U, 10.0 * U]
    assert d.values[0] == pytest.approx((2 + 10) / (2 * 10))


def test_a_trade_spanning_three_buckets_is_split_across_them():
    d = hand()
    feed(d, T0, 3.0, False)
    log = feed(d, T0 + 5, 25.0, True)  # 7 close the first bucket, 10 the second, 8 start the third
    assert d.completed_buckets == 2
    assert d.bucket_imbalances().tolist() == [4.0 * U, 10.0 * U]  # |3 - 7|, |0 - 10|
    assert d.bucket_fill == (8 * U, 0.0, 8.0 * U)
    assert log.keys.tolist() == [T0 + 5]  # one change, at the trade
    assert log.values[0, 0] == pytest.approx((4 + 10) / 20)
    feed(d, T0 + 6, 2.0, False)  # closes the third: |2 - 8| = 6; the window is now buckets 2 and 3
    assert d.bucket_imbalances().tolist() == [10.0 * U, 6.0 * U]
    assert d.values[0] == pytest.approx((10 + 6) / 20)


def test_fewer_than_n_buckets_is_missing():
    d = MicrostructureDetectors(
        DetectorParams(
            vpin_classification="aggressor", vpin_volume_unit="base", vpin_bucket_volume=10.0, vpin_buckets=3
        )
    )
    feed(d, T0, 29.999, False)
    assert d.completed_buckets == 2 and np.isnan(d.values[0])
    feed(d, T0 + 1, 0.001, True)
    assert d.completed_buckets == 3 and d.values[0] == pytest.approx((10 + 10 + (9.999 - 0.001)) / 30)


def test_bvc_with_flat_history_takes_the_limit_of_phi():
    """sigma = 0 (the previous changes all equal): an up bar is wholly bought, a flat one half."""
    d = MicrostructureDetectors(
        DetectorParams(
            vpin_classification="bvc", vpin_volume_unit="base", vpin_bucket_volume=5.0, vpin_buckets=1, bvc_sigma_bars=2
        )
    )
    for minute, price in enumerate([100.0, 100.0, 100.0, 101.0, 101.0]):  # changes 0, 0, +1, 0
        d.update(np.array([T0 + minute * BAR]), np.array([price]), np.array([5.0]), np.array([True]))
    d.advance_to(T0 + 5 * BAR)
    # bar 1 and 2 (changes 0, 0): fewer than 2 previous changes, warm-up; bar 3 (+1, sigma 0): all
    # bought; bar 4 (0, sigma of [0, 1] > 0): Phi(0) = half
    assert d.completed_buckets == 2
    assert d.bucket_imbalances().tolist() == [0.0]
    assert d.values[0] == 0.0


def test_kyle_and_amihud_by_hand():
    """Three bars: changes +2 on signed volume +1 and -4 on -2: slope 2; returns 2/100 and 4/102."""
    d = MicrostructureDetectors(DetectorParams(kyle_window_bars=2, amihud_window_bars=2))
    times = np.array([T0, T0 + BAR, T0 + 2 * BAR])
    d.update(times, np.array([100.0, 102.0, 98.0]), np.array([1.0, 1.0, 2.0]), np.array([False, False, True]))
    assert np.isnan(d.values[1])  # the third bar is still open: one change so far
    log = d.advance_to(T0 + 3 * BAR)
    assert log.keys.tolist() == [T0 + 3 * BAR - 1]
    vpin, kyle, amihud = d.values
    assert kyle == pytest.approx(2.0)
    assert amihud == pytest.approx((0.02 / 102.0 + (4 / 102) / 196.0) / 2 * 1e6)
    assert np.isnan(vpin)


def test_memory_is_fixed_by_the_parameters():
    p = DetectorParams(vpin_volume_unit="base", vpin_bucket_volume=1.0)
    d = MicrostructureDetectors(p)
    cells = d.capacity_cells
    df = generated_trades(3_000, seed=4)
    d.update(df.time.to_numpy(), df.price.to_numpy(), df.qty.to_numpy(), df.sell.to_numpy())
    assert d.capacity_cells == cells
    assert d.completed_buckets > p.vpin_buckets  # the ring wrapped


@pytest.mark.parametrize(
    "bad",
    [
        dict(bar_ms=1500),
        dict(vpin_volume_unit="usd"),
        dict(vpin_classification="lee"),
        dict(vpin_bucket_volume=0.0),
        dict(vpin_buckets=0),
        dict(kyle_window_bars=1),
    ],
)
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        DetectorParams(**bad)


# ----------------------------------------------------------------------------------------------
# same input, same output, whatever the batching
# ----------------------------------------------------------------------------------------------
TRADES = generated_trades(2_000, seed=5, minutes=60)


@settings(FUZZ, max_examples=40)
@given(
    mode=st.sampled_from(["bvc", "aggressor", "tick"]),
    cuts=st.lists(st.integers(1, len(TRADES) - 1), max_size=12, unique=True).map(sorted),
    advance=st.booleans(),
    restore=st.booleans(),
)
def test_any_batching_gives_the_same_log_and_state(mode, cuts, advance, restore):
    p = DetectorParams(
        vpin_classification=mode,
        vpin_volume_unit="base",
        vpin_bucket_volume=3.0,
        vpin_buckets=5,
        bvc_sigma_bars=5,
        kyle_window_bars=4,
        amihud_window_bars=3,
    )
    whole, whole_log = run(p, TRADES)
    d = MicrostructureDetectors(p)
    keys, values = [], []
    for lo, hi in zip([0, *cuts], [*cuts, len(TRADES)]):
        part = TRADES.iloc[lo:hi]
        if advance:  # a clock reaching the next trade closes the bars before it early: same values
            log = d.advance_to(int(part.time.iloc[0]))
            keys.append(log.keys), values.append(log.values)
        log = d.update(part.time.to_numpy(), part.price.to_numpy(), part.qty.to_numpy(), part.sell.to_numpy())
        keys.append(log.keys), values.append(log.values)
        if restore:
            d = MicrostructureDetectors.from_dict(d.to_dict())
    log = d.advance_to((int(TRADES.time.iloc[-1]) // BAR + 1) * BAR)
    keys.append(log.keys), values.append(log.values)
    np.testing.assert_array_equal(np.concatenate(keys), whole_log.keys)
    np.testing.assert_array_equal(np.concatenate(values), whole_log.values)
    assert d.to_dict() == whole.to_dict()


# ----------------------------------------------------------------------------------------------
# in the engine: a strategy's ``detectors`` section turns them on; stream and backtest agree
# ----------------------------------------------------------------------------------------------
MIN = 60_000
SESSION_START = 1_700_006_400_000
DETECTORS = {
    "bar": "1m",
    "vpin": {
        "bucket_volume": {"default": 20_000, "symbols": {"BTCUSDT": 200_000}},
        "buckets": 8,
        "classification": "aggressor",
        "sigma_bars": 10,
    },
    "kyle_window_bars": 5,
    "amihud_window_bars": 4,
}


def strategy(name="detecting", detectors=None, **overrides):
    from stream_apps.core.strategy import parse_strategy

    data = {
        "name": name,
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "warmup": "10m",
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
        "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
        "cooldown": "2m",
        "exits": {"sl_atr_mult": 1.5, "tp1_r": 1.0, "tp2_r": 2.0, "timeout_min": 60},
        **overrides,
    }
    if detectors is not None:
        data["detectors"] = detectors
    return parse_strategy(data)


def engine_trades():
    from stream_apps.core.synthetic import synthetic_trades

    return [
        synthetic_trades(symbol, start_ms=SESSION_START, duration_ms=25 * MIN, rate_per_s=4.0, price0=price, seed=seed)
        for seed, (symbol, price) in enumerate((("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0)))
    ]


def process_in_batches(engine, streams, batch_ms):
    from stream_apps.core.engine import EngineOutput

    out = EngineOutput()
    for begin in range(SESSION_START, SESSION_START + 25 * MIN, batch_ms):
        parts = [
            s.take(slice(int(s.time_ms.searchsorted(begin)), int(s.time_ms.searchsorted(begin + batch_ms))))
            for s in streams
        ]
        out.extend(engine.process([p for p in parts if len(p)], now_ms=begin + batch_ms))
    return out


@pytest.mark.parametrize("classification", ["bvc", "tick"])
def test_engine_features_are_the_detectors_values_before_each_evaluation(classification):
    """Each feature record's vpin / kyle_lambda / amihud is what the detectors give from the
    symbol's trades before the evaluation time (bars closed by then), whatever the engine's batching."""
    from stream_apps.core.engine import Engine

    section = {**DETECTORS, "vpin": {**DETECTORS["vpin"], "classification": classification}}
    streams = engine_trades()
    outputs = [
        process_in_batches(Engine([strategy(detectors=section)]), streams, batch_ms) for batch_ms in (MIN, 7_000)
    ]
    assert outputs[0] == outputs[1]
    features = outputs[0].features
    assert {"vpin", "kyle_lambda", "amihud"} <= set(features[-1]["inputs"])
    for stream in streams:
        rows = [f for f in features if f["symbol"] == stream.symbol]
        times = np.array([f["eval_time"] for f in rows])
        alone = MicrostructureDetectors(strategy(detectors=section).detectors.params_for(stream.symbol))
        log = alone.update_batch(stream)
        log.extend(alone.advance_to(int(times[-1])))
        expected = log.at(times, (np.nan,) * 3)
        got = np.array([[f["inputs"].get(name, np.nan) for name in ("vpin", "kyle_lambda", "amihud")] for f in rows])
        np.testing.assert_array_equal(got, expected)
        assert np.isfinite(got).all(axis=1).sum() > len(rows) // 2


def test_detectors_off_change_nothing_and_on_change_only_their_own_fields():
    from stream_apps.core.engine import Engine

    streams = engine_trades()
    off = process_in_batches(Engine([strategy()]), streams, MIN)
    on = process_in_batches(Engine([strategy(detectors=DETECTORS)]), streams, MIN)
    assert not any({"vpin", "kyle_lambda", "amihud"} & set(f["inputs"]) for f in off.features)
    assert "detectors" not in strategy().model_dump()  # so the config hash of every older file is unchanged
    strip = [{k: v for k, v in f["inputs"].items() if k not in ("vpin", "kyle_lambda", "amihud")} for f in on.features]
    assert strip == [f["inputs"] for f in off.features]
    assert [(s["eval_time"], s["direction"], s["score"]) for s in on.signals] == [
        (s["eval_time"], s["direction"], s["score"]) for s in off.signals
    ]
    assert on.bars == off.bars


def test_a_restored_engine_resumes_its_detectors_and_restarts_them_when_the_section_changed():
    from stream_apps.core.engine import Engine

    streams = engine_trades()
    whole = process_in_batches(Engine([strategy(detectors=DETECTORS)]), streams, MIN).features
    first = Engine([strategy(detectors=DETECTORS)])
    half = [s.take(slice(0, int(s.time_ms.searchsorted(SESSION_START + 12 * MIN)))) for s in streams]
    rest = [s.take(slice(len(h), None)) for s, h in zip(streams, half)]
    out = first.process(half, now_ms=SESSION_START + 12 * MIN)
    snapshot = first.to_dict()
    resumed = Engine.from_dict(snapshot, [strategy(detectors=DETECTORS)])
    out.extend(resumed.process(rest, now_ms=SESSION_START + 25 * MIN))
    assert out.features == whole
    changed = {**DETECTORS, "kyle_window_bars": 6}
    restarted = Engine.from_dict(snapshot, [strategy(detectors=changed)])
    state = restarted.states[("binance", "BTCUSDT")]
    assert state.detectors.params.kyle_window_bars == 6 and state.detectors.completed_buckets == 0
    dropped = Engine.from_dict(snapshot, [strategy()])
    assert dropped.states[("binance", "BTCUSDT")].detectors is None


def test_strategies_with_different_detector_sections_are_refused():
    from stream_apps.core.engine import Engine
    from stream_apps.core.strategy import StrategyConfigError

    with pytest.raises(ValueError, match="same"):
        Engine([strategy(detectors=DETECTORS), strategy("other", detectors={**DETECTORS, "bar": "5m"})])
    Engine([strategy(detectors=DETECTORS), strategy("other", detectors=DETECTORS), strategy("plain")])
    with pytest.raises(StrategyConfigError, match="bar"):
        strategy(detectors={"bar": "1500ms"})
    with pytest.raises(StrategyConfigError, match="bucket_volume"):
        strategy(detectors={"vpin": {"bucket_volume": {"default": -1}}})
    with pytest.raises(StrategyConfigError, match="bucket_volume"):  # below one unit: refused when loaded
        strategy(detectors={"vpin": {"bucket_volume": {"symbols": {"XRPUSDT": 1e-9}}}})


def test_the_stream_worker_and_the_backtest_give_the_same_detector_values():
    """The Faust worker's processor (Avro records in random fetches) and the backtest runner (hour
    slices, replay-sized rings) over one generated session: equal values at every evaluation both made,
    the flow detectors' (divergence, OI spikes, liquidations) and the book detectors' (walls, icebergs:
    from the session's 10-level books) included."""
    import random

    from backtest.runner import BacktestRunner
    from backtest.sources.records import RecordSource
    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde
    from stream_apps.core.engine import EngineParams
    from stream_apps.faust_app.metrics import EngineAppMetrics
    from stream_apps.faust_app.outputs import OutputEncoder
    from stream_apps.faust_app.processor import EngineProcessor
    from stream_apps.faust_app.session import synthetic_session

    cfg = strategy(
        detectors={
            **DETECTORS,
            "divergence": {"window": "5m"},
            "oi_spike": {"window": 2},
            "liquidations": {"window": "5m", "cascade": {"min_count": 2}},
            "walls": {"multiple": 1.5, "window": "1m"},
            "icebergs": {},
        }
    )
    session = synthetic_session(duration_ms=25 * MIN, trades_per_s=4.0, seed=3)

    class Capturing(BacktestRunner):
        """The runner, keeping the feature records its engines produce."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.features = []

        def _count_coverage(self, tables):
            for table in tables:
                self.features += table.records()
            super()._count_coverage(tables)

    kinds = {
        "md.trades": "trades",
        "md.book": "books",
        "md.mark": "marks",
        "md.liquidations": "liquidations",
        "md.indicators": "indicators",
    }
    records = {kind: [r.value for r in session if r.topic == topic] for topic, kind in kinds.items()}
    runner = Capturing([cfg])
    runner.run(
        RecordSource("session", "binance", ["BTCUSDT", "ETHUSDT"], SESSION_START, SESSION_START + 25 * MIN, **records)
    )

    serde = AvroSerde(FileSchemaRegistry())
    processor = EngineProcessor(
        [cfg], EngineParams(), serde, OutputEncoder(serde), EngineAppMetrics(), lambda key: None, monotonic=lambda: 0.0
    )
    logs: dict = {}
    for r in session:
        log = logs.setdefault((r.topic, 0), [])
        log.append(
            type("Record", (), {"offset": len(log), "key": r.key.encode(), "value": serde.encode(r.topic, r.value)})()
        )
    rng, position, streamed = random.Random(1), dict.fromkeys(logs, 0), []
    done = lambda topic, partition: position[(topic, partition)] >= len(logs[(topic, partition)])  # noqa: E731
    while not all(done(*tp) for tp in logs):
        fetch = {}
        for tp in logs:
            n = rng.randint(0, 500)
            fetch[tp] = logs[tp][position[tp] : position[tp] + n]
            position[tp] += len(fetch[tp])
        for effects in (processor.on_records(fetch, done), processor.tick(done)):
            streamed += [serde.decode(o.value) for o in effects.outputs if o.topic == "features"]

    def values(features):
        return {(f["symbol"], f["eval_time"]): tuple(f["inputs"].get(n) for n in DETECTOR_FIELDS) for f in features}

    stream, backtest = values(streamed), values(runner.features)
    common = set(stream) & set(backtest)
    assert len(common) > 0.9 * max(len(stream), len(backtest))
    assert {k: stream[k] for k in common} == {k: backtest[k] for k in common}
    rows = np.array([[np.nan if v is None else v for v in row] for row in stream.values()])
    present = ~np.isnan(rows)
    book = np.isin(DETECTOR_FIELDS, BOOK_FIELDS)
    assert (present[:, ~book].mean(axis=0) > 0.5).sum() >= (~book).sum() - 1  # z: from the 4th OI point
    assert present.mean(axis=0).min() > 0.05  # the nearest walls: only while a side has one
    assert np.nanmax(rows[:, DETECTOR_FIELDS.index("wall_pulled_bid")]) > 0  # the random books pull walls
