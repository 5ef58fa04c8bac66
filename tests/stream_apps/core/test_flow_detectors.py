"""Flow detectors (``stream_apps.core.detectors.flow``): CVD–price divergence, OI spikes, liquidations.

Hand-built paths whose divergence flags, OI change z-scores, liquidation counts/USD and cascade flags
are worked out here in the comments; a batch recomputation of the divergence from its definition
(pandas bars) on generated trades; the same output for any batching and across a state round trip;
and in the engine: every evaluation's values equal a plain-Python reading of the raw inputs, for
batches of 1, 7 and 1000 inputs and across an engine snapshot, with the strategy section validated
and a section without the new parts keeping its config hash.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_apps.core.detectors import DETECTOR_FIELDS, FLOW_FIELDS, FlowDetectors, FlowParams
from stream_apps.core.detectors import flow_kernels as fk
from stream_apps.core.engine import Engine, EngineOutput
from stream_apps.core.events import IndicatorUpdate, LiquidationEvent, TradeBatch
from stream_apps.core.strategy import StrategyConfigError
from stream_apps.core.synthetic import synthetic_trades
from tests.stream_apps.core.test_detectors import DETECTORS, generated_trades, strategy
from tests.support.fuzz import FUZZ

T0 = 1_700_000_040_000  # a whole minute
BAR = 60_000
U = 10**8  # base quantity units per coin
NAN3 = (math.nan,) * 3


def trade(d: FlowDetectors, t: int, price: float, qty: float, sell: bool):
    return d.update(np.array([t]), np.array([price]), np.array([round(qty * U)]), np.array([sell]))


# ----------------------------------------------------------------------------------------------
# CVD–price divergence by hand: N = 2 bars of 1 minute
# ----------------------------------------------------------------------------------------------
def test_divergence_by_hand():
    d = FlowDetectors(FlowParams(divergence_bars=2))
    # bar 0: 100 (buy 2) then 101 (buy 1): price 100..101, cumulative CVD 2 then 3
    trade(d, T0, 100.0, 2.0, False)
    trade(d, T0 + 1_000, 101.0, 1.0, False)
    # bar 1: 100.5 (sell 1: CVD 2), 99.5 (buy 0.5: CVD 2.5): price 99.5..100.5, CVD 2..2.5
    log = trade(d, T0 + BAR, 100.5, 1.0, True)
    assert log.keys.tolist() == [T0 + BAR - 1] and np.isnan(log.values).all()  # bar 0: no reference bar
    trade(d, T0 + BAR + 30_000, 99.5, 0.5, False)
    # bar 3 (bar 2 has no trade): its first trade closes bar 1 against bar 0: a new low (99.5 < 100)
    # while CVD's low (2) is not below bar 0's (2): bullish, 1 - 99.5/100, CVD 2 - 2 = 0
    log = trade(d, T0 + 3 * BAR, 102.0, 1.0, True)  # CVD 1.5
    assert log.keys.tolist() == [T0 + 2 * BAR - 1]
    assert log.values.tolist() == [[1.0, pytest.approx(0.005), 0.0]]
    assert d.divergence == (1.0, pytest.approx(0.005), 0.0)
    # the clock closes bar 3 against bars [1, 2] (bar 0 is more than N bars back): a new high (102 >
    # 100.5) while CVD (1.5) stays below bar 1's high (2.5): bearish, 102/100.5 - 1, CVD 2.5 - 1.5 = 1
    assert len(d.advance_to(T0 + 4 * BAR - 1)) == 0  # the bar has not ended yet
    log = d.advance_to(T0 + 4 * BAR)
    assert log.keys.tolist() == [T0 + 4 * BAR - 1]
    assert log.values.tolist() == [[-1.0, pytest.approx(102 / 100.5 - 1), pytest.approx(1.0)]]
    # an evaluation at t sees the bars that ended by t
    seen = log.at(np.array([T0 + 4 * BAR - 1, T0 + 4 * BAR]), d.divergence)
    assert seen[1].tolist() == [-1.0, pytest.approx(102 / 100.5 - 1), pytest.approx(1.0)]
    # bar 6 alone: no bar in [4, 5] has trades: missing
    trade(d, T0 + 6 * BAR, 103.0, 1.0, False)
    log = d.advance_to(T0 + 7 * BAR)
    assert np.isnan(log.values).all() and all(np.isnan(d.divergence))


def test_divergence_is_zero_when_cvd_confirms_or_when_one_bar_breaks_both_ways():
    d = FlowDetectors(FlowParams(divergence_bars=2))
    log = trade(d, T0, 100.0, 1.0, False)  # bar 0: 100, CVD 1
    # bar 1: a new high (101) with a new CVD high (3): confirmed, no divergence
    log.extend(trade(d, T0 + BAR, 101.0, 2.0, False))
    # bar 2: 102 (sell: CVD 2), then 99 (buy: CVD 3): a new high while CVD's high (3) is not above
    # bars 0-1's (3), and a new low while CVD's low (2) is not below theirs (1): both at once -> 0
    log.extend(trade(d, T0 + 2 * BAR, 102.0, 1.0, True))
    log.extend(trade(d, T0 + 2 * BAR + 1, 99.0, 1.0, False))
    log.extend(trade(d, T0 + 3 * BAR, 100.0, 1.0, False))  # bar 3: inside bars 1-2's range -> 0
    log.extend(d.advance_to(T0 + 4 * BAR))
    assert log.keys.tolist() == [T0 + k * BAR - 1 for k in (1, 2, 3, 4)]
    assert np.isnan(log.values[0]).all()
    assert log.values[1:].tolist() == [[0.0, 0.0, 0.0]] * 3


def divergence_reference(df: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per bar with trades (end time), the divergence from the definition, in batch form."""
    units = np.rint(df.qty.to_numpy() * U).astype(np.int64)
    cum = np.cumsum(np.where(df.sell, -units, units))
    bars = (
        df.assign(bar=df.time // BAR, cum=cum)
        .groupby("bar")
        .agg(high=("price", "max"), low=("price", "min"), cvd_high=("cum", "max"), cvd_low=("cum", "min"))
    )
    rows = []
    for k, bar in bars.iterrows():
        ref = bars[(bars.index >= k - n) & (bars.index < k)]
        if ref.empty:
            rows.append((np.nan, np.nan, np.nan))
            continue
        bear = bar.high > ref.high.max() and bar.cvd_high <= ref.cvd_high.max()
        bull = bar.low < ref.low.min() and bar.cvd_low >= ref.cvd_low.min()
        if bear and not bull:
            rows.append((-1.0, bar.high / ref.high.max() - 1, (ref.cvd_high.max() - bar.cvd_high) / U))
        elif bull and not bear:
            rows.append((1.0, 1 - bar.low / ref.low.min(), (bar.cvd_low - ref.cvd_low.min()) / U))
        else:
            rows.append((0.0, 0.0, 0.0))
    return pd.DataFrame(rows, index=(bars.index + 1) * BAR, columns=["sign", "price", "cvd"])


def run_divergence(params: FlowParams, df: pd.DataFrame):
    d = FlowDetectors(params)
    log = d.update(
        df.time.to_numpy(), df.price.to_numpy(), np.rint(df.qty.to_numpy() * U).astype(np.int64), df.sell.to_numpy()
    )
    log.extend(d.advance_to((int(df.time.iloc[-1]) // BAR + 1) * BAR))
    return d, log


def test_divergence_equals_the_bar_definition_on_generated_trades():
    df = generated_trades(3_000, seed=7, minutes=180)
    expected = divergence_reference(df, 5)
    _, log = run_divergence(FlowParams(divergence_bars=5), df)
    got = log.at(expected.index.to_numpy(), NAN3)
    np.testing.assert_allclose(got, expected.to_numpy(), rtol=1e-12, atol=1e-12)
    assert {-1.0, 0.0, 1.0} <= set(got[:, 0][~np.isnan(got[:, 0])].tolist())


def test_a_huge_cumulative_cvd_is_rebased_without_changing_a_value():
    """Past ``CVD_REBASE`` the running sum moves back to 0 (int64 would wrap within weeks on coins
    traded by the billion); the values are those of a detector that started from 0."""
    df = generated_trades(800, seed=8, minutes=40)
    _, plain = run_divergence(FlowParams(divergence_bars=3), df)
    d = FlowDetectors(FlowParams(divergence_bars=3))
    d._d_ints[fk.D_CVD] = fk.CVD_REBASE - 3 * U  # the first bar closes beyond it
    log = d.update(
        df.time.to_numpy(), df.price.to_numpy(), np.rint(df.qty.to_numpy() * U).astype(np.int64), df.sell.to_numpy()
    )
    log.extend(d.advance_to((int(df.time.iloc[-1]) // BAR + 1) * BAR))
    assert abs(int(d._d_ints[fk.D_CVD])) < 10**4 * U  # rebased
    np.testing.assert_array_equal(log.keys, plain.keys)
    np.testing.assert_allclose(log.values, plain.values, rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# open-interest spikes by hand: 5-minute periods, z over the previous 3 changes
# ----------------------------------------------------------------------------------------------
P = 300_000
OI_START = (T0 // P + 1) * P  # a whole period


def oi(period: int, value: float, delay_ms: int = 30_000, kind: str = "open_interest_hist") -> IndicatorUpdate:
    """A point of period ``period`` (data time its start), received ``delay_ms`` after the period ends."""
    start = OI_START + period * P
    return IndicatorUpdate("binance", "BTCUSDT", start + P + delay_ms, kind, value, start)


def test_oi_change_and_spike_z_by_hand():
    d = FlowDetectors(FlowParams(oi_window=3, oi_max_age_ms=900_000))
    values = [1000.0, 1010.0, 1030.2, 1030.2, 1133.22]  # changes 1 %, 2 %, 0 %, 10 %
    changes = [values[i + 1] / values[i] - 1 for i in range(4)]
    log = d.apply_events(
        [
            oi(0, values[0]),
            oi(1, values[1]),
            oi(1, 5000.0, delay_ms=60_000),  # same period: ignored
            oi(2, values[2]),
            oi(3, values[3]),
        ]
    )
    assert log.keys == [oi(p, 0).time_ms for p in range(4)]
    assert all(math.isnan(v) for v in log.values[0])  # the first point: no change yet
    assert [v[0] for v in log.values[1:]] == pytest.approx(changes[:3])
    assert all(math.isnan(v[1]) for v in log.values)  # fewer than 3 changes before each
    log = d.apply_events([oi(4, values[4]), oi(2, 1.0, delay_ms=600_000)])  # an older period: ignored
    change, z, data_time = log.values[-1]
    assert len(log.keys) == 1 and change == pytest.approx(0.1)
    # previous changes 0.01, 0.02, 0.0: mean 0.01, sample deviation 0.01: z = (0.1 - 0.01) / 0.01 = 9
    assert z == pytest.approx(9.0) == (changes[3] - statistics.mean(changes[:3])) / statistics.stdev(changes[:3])
    assert data_time == OI_START + 4 * P
    # read at times: from after the receive time, until the data is older than max_age
    received = oi(4, 0).time_ms
    times = np.array([received, received + 1, OI_START + 4 * P + 900_000, OI_START + 4 * P + 900_001])
    got = d.values_many(times, oi=log.at(times))
    # at the receive time itself: the value before (the 0 % change, with only 2 changes before it: no z)
    assert got["oi_change_5m"][0] == 0.0 and np.isnan(got["oi_spike_z"][0])
    assert got["oi_change_5m"][1] == pytest.approx(0.1) and got["oi_spike_z"][1] == pytest.approx(9.0)
    assert got["oi_change_5m"][2] == pytest.approx(0.1)
    assert np.isnan(got["oi_change_5m"][3]) and np.isnan(got["oi_spike_z"][3])  # stale


def test_a_missing_period_breaks_the_oi_chain_and_equal_changes_give_no_z():
    d = FlowDetectors(FlowParams(oi_window=2))
    d.apply_events([oi(0, 100.0), oi(1, 101.0), oi(2, 102.01)])  # +1 %, +1 %
    log = d.apply_events([oi(3, 103.0301)])  # +1 % after two equal changes: deviation 0, no z
    assert log.values[-1][0] == pytest.approx(0.01) and math.isnan(log.values[-1][1])
    log = d.apply_events([oi(5, 110.0)])  # period 4 missing: no change across the gap
    assert all(math.isnan(v) for v in log.values[-1])
    log = d.apply_events([oi(6, 121.0)])  # +10 % against the last 2 changes (1 %, 1 %): still deviation 0
    assert log.values[-1][0] == pytest.approx(0.1) and math.isnan(log.values[-1][1])
    log = d.apply_events([oi(7, 121.0), oi(8, 0.0), oi(9, float("nan"), kind="open_interest")])
    # 0 % against (1 %, 10 %): z = (0 - 0.055) / stdev; a zero value and another kind are ignored
    assert len(log.keys) == 1
    assert log.values[-1][1] == pytest.approx((0.0 - 0.055) / statistics.stdev([0.01, 0.1]))


# ----------------------------------------------------------------------------------------------
# liquidations by hand: 60 s window, cascades of >= 3 liquidations or >= 100,000 USD within 10 s
# ----------------------------------------------------------------------------------------------
def liq(t: int, side: str, usd: float) -> LiquidationEvent:
    return LiquidationEvent("binance", "BTCUSDT", t, side, usd)


def test_liquidation_counts_usd_and_cascades_by_hand():
    d = FlowDetectors(
        FlowParams(liq_window_ms=60_000, cascade_window_ms=10_000, cascade_min_count=3, cascade_min_usd=100_000.0)
    )
    d.apply_events(
        [
            liq(T0 + 1_000, "LONG", 10_000.0),
            liq(T0 + 1_500, "LONG", 20_000.0),
            liq(T0 + 5_000, "SHORT", 50_000.0),
            liq(T0 + 8_000, "LONG", 30_000.0),
            liq(T0 + 9_000, "LONG", float("nan")),
            liq(T0 + 9_000, "BOTH", 1e6),  # invalid: ignored
            liq(T0 + 30_000, "SHORT", 120_000.0),
        ]
    )
    d.apply_events([liq(T0 + 2_000, "SHORT", 1_000.0)])  # late: lands in its own second
    times = np.array([T0 + 9_000, T0 + 12_000, T0 + 31_000, T0 + 61_000, T0 + 62_000])
    got = d.values_many(times)
    # at +9 s: longs 10k + 20k + 30k (3 of them, all within 10 s: a cascade by count); shorts 50k + 1k
    # at +12 s: the 10 s cascade window [+2 s, +12 s) holds one long: no cascade
    # at +31 s: the short of 120k at +30 s is a cascade by USD alone
    # at +61 s: the window [+1 s, +61 s) still holds the two longs of second +1; at +62 s they are out
    assert got["liq_long_count"].tolist() == [3, 3, 3, 3, 1]
    assert got["liq_long_usd"].tolist() == [60_000, 60_000, 60_000, 60_000, 30_000]
    assert got["liq_short_count"].tolist() == [2, 2, 3, 3, 3]  # the late one (second +2) is in at +62 s
    assert got["liq_short_usd"].tolist() == [51_000, 51_000, 171_000, 171_000, 171_000]
    assert got["liq_cascade_long"].tolist() == [1, 0, 0, 0, 0]
    assert got["liq_cascade_short"].tolist() == [0, 0, 1, 0, 0]
    # only one threshold set: the other does not count
    by_usd = FlowDetectors(FlowParams(liq_window_ms=60_000, cascade_window_ms=10_000, cascade_min_usd=60_000.0))
    by_usd.apply_events([liq(T0 + 1_000, "LONG", 10_000.0)] * 5 + [liq(T0 + 2_000, "SHORT", 60_000.0)])
    got = by_usd.values_many(np.array([T0 + 3_000]))
    assert (got["liq_cascade_long"][0], got["liq_cascade_short"][0]) == (0.0, 1.0)  # exactly the threshold


def test_parts_left_out_read_as_missing():
    d = FlowDetectors(FlowParams(oi_window=3))
    d.apply_events([liq(T0, "LONG", 1e6)])
    trade(d, T0, 100.0, 1.0, False)
    got = d.values_many(np.array([T0 + BAR]))
    assert set(got) == set(FLOW_FIELDS) and all(np.isnan(v).all() for v in got.values())


@pytest.mark.parametrize(
    "bad",
    [
        dict(divergence_bars=0),
        dict(oi_window=1),
        dict(oi_kind="funding"),
        dict(oi_period_ms=0),
        dict(liq_window_ms=1_500, cascade_min_count=1),
        dict(liq_window_ms=60_000),
        dict(liq_window_ms=60_000, cascade_min_usd=0.0),
        dict(bar_ms=1_500),
    ],
)
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        FlowParams(**bad)


# ----------------------------------------------------------------------------------------------
# same input, same output, whatever the batching and across a round trip of the state
# ----------------------------------------------------------------------------------------------
PARAMS = FlowParams(
    divergence_bars=3,
    oi_period_ms=60_000,
    oi_window=4,
    oi_max_age_ms=180_000,
    liq_window_ms=120_000,
    cascade_window_ms=20_000,
    cascade_min_count=3,
    cascade_min_usd=300_000.0,
)


def flow_inputs(minutes: int = 60, seed: int = 9) -> list[tuple[int, str, object]]:
    """Time-ordered (time, kind, payload): trades one by one, OI points every minute, liquidations."""
    rng = np.random.default_rng(seed)
    df = generated_trades(20 * minutes, seed=seed, minutes=minutes)
    items = [(int(r.time), "trade", (int(r.time), r.price, round(r.qty * U), bool(r.sell))) for r in df.itertuples()]
    value = 1e6
    for k in range(minutes):
        value *= 1 + rng.normal(0, 0.002) + (0.03 if k % 17 == 16 else 0.0)  # now and then a spike
        start = T0 + k * BAR
        items.append(
            (
                start + BAR + 20_000,
                "event",
                IndicatorUpdate("binance", "BTCUSDT", start + BAR + 20_000, "open_interest_hist", value, start),
            )
        )
    for t in np.sort(rng.integers(T0, T0 + minutes * BAR, 6 * minutes)).tolist():
        items.append((t, "event", liq(t, "LONG" if rng.random() < 0.5 else "SHORT", float(rng.lognormal(11, 1)))))
    items.sort(key=lambda item: (item[0], item[1] == "event"))
    return items


ITEMS = flow_inputs()


def feed(d: FlowDetectors, piece) -> tuple:
    """Apply a piece of ITEMS (its trades as one batch, then its events); return both logs."""
    trades = [p for _, kind, p in piece if kind == "trade"]
    events = [p for _, kind, p in piece if kind == "event"]
    times, prices, units, sells = (np.array(column) for column in zip(*trades)) if trades else ([],) * 4
    return d.update(
        np.asarray(times, dtype=np.int64),
        np.asarray(prices, dtype=np.float64),
        np.asarray(units, dtype=np.int64),
        np.asarray(sells, dtype=bool),
    ), d.apply_events(events)


def run_in_pieces(cuts, restore: bool = False, advance: bool = False):
    """Feed ITEMS cut at ``cuts`` (optionally the clock to each piece's first input, and a round trip
    of the state after each piece); return the detectors and the concatenated logs."""
    d = FlowDetectors(PARAMS)
    div_keys, div_values, oi_keys, oi_values = [], [], [], []
    bounds = [0, *cuts, len(ITEMS)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        piece = ITEMS[lo:hi]
        if advance and piece:  # a clock reaching the next input closes the bars before it early
            log = d.advance_to(piece[0][0])
            div_keys.append(log.keys), div_values.append(log.values)
        div, oi_log = feed(d, piece)
        div_keys.append(div.keys), div_values.append(div.values)
        oi_keys += oi_log.keys
        oi_values += oi_log.values
        if restore:
            d = FlowDetectors.from_dict(d.to_dict())
    log = d.advance_to(T0 + 70 * BAR)
    div_keys.append(log.keys), div_values.append(log.values)
    return d, (np.concatenate(div_keys), np.concatenate(div_values), oi_keys, oi_values)


WHOLE, WHOLE_LOGS = run_in_pieces([])


def assert_same_as_whole(d: FlowDetectors, logs) -> None:
    np.testing.assert_array_equal(logs[0], WHOLE_LOGS[0])
    np.testing.assert_array_equal(logs[1], WHOLE_LOGS[1])
    assert logs[2] == WHOLE_LOGS[2]
    np.testing.assert_array_equal(np.array(logs[3]), np.array(WHOLE_LOGS[3]))
    assert d.to_dict() == WHOLE.to_dict()
    times = np.arange(T0 + BAR, T0 + 62 * BAR, 15_000)
    for name, column in d.values_many(times).items():
        np.testing.assert_array_equal(column, WHOLE.values_many(times)[name])


def test_the_whole_run_exercises_every_value():
    assert len(WHOLE_LOGS[0]) > 50 and {-1.0, 0.0, 1.0} <= set(WHOLE_LOGS[1][:, 0][~np.isnan(WHOLE_LOGS[1][:, 0])])
    z = np.array(WHOLE_LOGS[3])[:, 1]
    assert np.isfinite(z).sum() > 40 and np.nanmax(z) > 5  # the injected spikes stand out
    cascades = WHOLE.values_many(np.arange(T0 + BAR, T0 + 62 * BAR, 1_000))
    assert 0 < cascades["liq_cascade_long"].sum() and 0 < cascades["liq_cascade_short"].sum()


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_batches_of_1_7_and_1000_inputs_give_the_same_logs_and_state(size):
    assert_same_as_whole(*run_in_pieces(list(range(size, len(ITEMS), size)), restore=size == 7))


@settings(FUZZ, max_examples=30)
@given(
    cuts=st.lists(st.integers(1, len(ITEMS) - 1), max_size=12, unique=True).map(sorted),
    advance=st.booleans(),
    restore=st.booleans(),
)
def test_any_batching_gives_the_same_logs_and_state(cuts, advance, restore):
    assert_same_as_whole(*run_in_pieces(cuts, restore=restore, advance=advance))


def test_the_state_round_trips_through_json():
    import json

    d, _ = run_in_pieces(list(range(500, len(ITEMS), 500)))
    assert FlowDetectors.from_dict(json.loads(json.dumps(d.to_dict()))).to_dict() == d.to_dict()
    assert d.capacity_cells == FlowDetectors(PARAMS).capacity_cells  # memory fixed by the parameters


# ----------------------------------------------------------------------------------------------
# in the engine: the strategies' ``detectors`` section turns them on
# ----------------------------------------------------------------------------------------------
MIN = 60_000
SESSION = 1_700_006_400_000
FLOW = {
    "divergence": {"window": "3m"},
    "oi_spike": {"period": "1m", "window": 4, "max_age": "3m"},
    "liquidations": {"window": "2m", "cascade": {"window": "20s", "min_count": 3, "min_usd": 300_000}},
}
SECTION = {**DETECTORS, **FLOW}
SYMBOLS = (("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0))


def engine_items(minutes: int = 15) -> list[tuple[str, object]]:
    """Time-ordered ('trade', one-trade batch) / ('event', OI point or liquidation) of two symbols."""
    rng = np.random.default_rng(4)
    items = []
    for seed, (symbol, price) in enumerate(SYMBOLS):
        trades = synthetic_trades(
            symbol, start_ms=SESSION, duration_ms=minutes * MIN, rate_per_s=0.5, price0=price, seed=seed
        )
        items += [(int(trades.time_ms[i]), 0, ("trade", trades.take(slice(i, i + 1)))) for i in range(len(trades))]
        value = 1e6
        for k in range(minutes):
            value *= 1 + rng.normal(0, 0.002) + (0.02 if k % 7 == 6 else 0.0)
            t = SESSION + (k + 1) * MIN + 17_000  # the minute's point, known 17 s after it ends
            items.append(
                (t, 1, ("event", IndicatorUpdate("binance", symbol, t, "open_interest_hist", value, SESSION + k * MIN)))
            )
        for t in np.sort(rng.integers(SESSION, SESSION + minutes * MIN, 8 * minutes)).tolist():
            side = "LONG" if rng.random() < 0.5 else "SHORT"
            items.append((t, 1, ("event", LiquidationEvent("binance", symbol, t, side, float(rng.lognormal(11, 1))))))
    items.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in items]


ENGINE_ITEMS = engine_items()


def run_engine(engine: Engine, items, batch_size: int) -> EngineOutput:
    """``items`` in chunks of ``batch_size``, the clock at each chunk's newest input."""
    out = EngineOutput()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        trades: dict[str, list[TradeBatch]] = {}
        for kind, payload in chunk:
            if kind == "trade":
                trades.setdefault(payload.symbol, []).append(payload)
        events = [payload for kind, payload in chunk if kind == "event"]
        now = max(int(p.time_ms[-1]) if kind == "trade" else p.time_ms for kind, p in chunk)
        out.extend(engine.process([TradeBatch.concat(v) for v in trades.values()], events, now_ms=now))
    return out


@pytest.fixture(scope="module")
def reference() -> EngineOutput:
    return run_engine(Engine([strategy(detectors=SECTION)]), ENGINE_ITEMS, 1000)


def flow_inputs_of(features: list[dict], symbol: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [f for f in features if f["symbol"] == symbol]
    return (
        np.array([f["eval_time"] for f in rows]),
        np.array([[f["inputs"].get(name, np.nan) for name in FLOW_FIELDS] for f in rows]),
    )


def test_engine_features_are_the_flow_values_before_each_evaluation(reference):
    """Divergence and OI as the detectors alone give them from the symbol's inputs before each
    evaluation; liquidation counts and USD summed here from the raw events, second by second."""
    params = strategy(detectors=SECTION).detectors.flow_params()
    for symbol, _ in SYMBOLS:
        times, got = flow_inputs_of(reference.features, symbol)
        trades = TradeBatch.concat([p for kind, p in ENGINE_ITEMS if kind == "trade" and p.symbol == symbol])
        events = [p for kind, p in ENGINE_ITEMS if kind == "event" and p.symbol == symbol]
        alone = FlowDetectors(params)
        div = alone.update(trades.time_ms, trades.price, np.rint(trades.qty * U).astype(np.int64), trades.taker_sell)
        div.extend(alone.advance_to(int(times[-1])))
        oi_log = alone.apply_events(events)
        expected = alone.values_many(times, div.at(times, NAN3), oi_log.at(times))
        for k, name in enumerate(FLOW_FIELDS[:5]):
            np.testing.assert_array_equal(got[:, k], expected[name], err_msg=name)
        liquidations = [e for e in events if isinstance(e, LiquidationEvent)]
        for t, row in zip(times.tolist(), got[:, 5:]):
            newest = (t - 1) // 1000
            window = [e for e in liquidations if newest - 120 < e.time_ms // 1000 <= newest]
            cascade = [e for e in window if e.time_ms // 1000 > newest - 20]
            counts = [sum(e.liquidated_side == side for e in window) for side in ("LONG", "SHORT")]
            micro = [sum(round(e.usd * 1e6) for e in window if e.liquidated_side == side) for side in ("LONG", "SHORT")]
            flags = [
                float(
                    sum(e.liquidated_side == side for e in cascade) >= 3
                    or sum(e.usd for e in cascade if e.liquidated_side == side) >= 300_000
                )
                for side in ("LONG", "SHORT")
            ]
            assert row.tolist() == [*counts, *(m / 1e6 for m in micro), *flags]  # USD summed in 1e-6 units
        finite = np.isfinite(got)
        assert finite[:, 0].mean() > 0.8 and finite[:, 4].sum() > 100 and np.nanmax(np.abs(got[:, 4])) > 3
        assert got[:, 9].sum() > 0 and got[:, 10].sum() > 0  # cascades happen both ways
        assert {-1.0, 1.0} <= set(got[:, 0].tolist())


@pytest.mark.parametrize("batch_size", [1, 7])
def test_engine_output_does_not_depend_on_batching(reference, batch_size):
    out = run_engine(Engine([strategy(detectors=SECTION)]), ENGINE_ITEMS, batch_size)
    assert out.features == reference.features
    assert out.signals == reference.signals and out.bars == reference.bars


def test_a_restored_engine_resumes_the_flow_detectors(reference):
    """A JSON round trip of the engine's state mid-stream gives the same records; a changed flow part
    restarts them, a section without flow parts drops them."""
    import json

    half = len(ENGINE_ITEMS) // 2
    first = Engine([strategy(detectors=SECTION)])
    out = run_engine(first, ENGINE_ITEMS[:half], 50)
    snapshot = json.loads(json.dumps(first.to_dict()))
    assert "flow" in snapshot["states"][0]
    resumed = Engine.from_dict(snapshot, [strategy(detectors=SECTION)])
    out.extend(run_engine(resumed, ENGINE_ITEMS[half:], 50))
    assert out.features == reference.features
    changed = {**SECTION, "oi_spike": {**FLOW["oi_spike"], "window": 5}}
    restarted = Engine.from_dict(snapshot, [strategy(detectors=changed)]).states[("binance", "BTCUSDT")]
    assert restarted.flow.params.oi_window == 5 and restarted.flow.oi_count == 0
    kept = Engine.from_dict(snapshot, [strategy(detectors=SECTION)]).states[("binance", "BTCUSDT")]
    assert kept.flow.oi_count > 0 and kept.detectors.completed_buckets > 0
    dropped = Engine.from_dict(snapshot, [strategy(detectors=DETECTORS)]).states[("binance", "BTCUSDT")]
    assert dropped.flow is None and dropped.detectors.completed_buckets > 0  # the other detectors stay


def test_flow_off_changes_nothing_and_on_changes_only_its_own_fields(reference):
    off = run_engine(Engine([strategy(detectors=DETECTORS)]), ENGINE_ITEMS, 1000)
    assert not any(set(FLOW_FIELDS) & set(f["inputs"]) for f in off.features)
    assert all(s.flow is None for s in Engine([strategy(detectors=DETECTORS)]).states.values())
    strip = [{k: v for k, v in f["inputs"].items() if k not in FLOW_FIELDS} for f in reference.features]
    assert strip == [f["inputs"] for f in off.features]
    assert [(s["eval_time"], s["direction"], s["score"]) for s in reference.signals] == [
        (s["eval_time"], s["direction"], s["score"]) for s in off.signals
    ]
    assert set(FLOW_FIELDS) <= set(DETECTOR_FIELDS)  # so the research table drops them when off, like vpin


def test_only_the_parts_present_are_on():
    liquidations_only = strategy(detectors={**DETECTORS, "liquidations": FLOW["liquidations"]})
    p = liquidations_only.detectors.flow_params()
    assert p.divergence_bars is None and p.oi_window is None and p.liq_window_ms == 120_000
    out = run_engine(Engine([liquidations_only]), ENGINE_ITEMS[:2_000], 1000)
    names = set().union(*(f["inputs"] for f in out.features)) & set(FLOW_FIELDS)
    assert names == {
        "liq_long_count",
        "liq_short_count",
        "liq_long_usd",
        "liq_short_usd",
        "liq_cascade_long",
        "liq_cascade_short",
    }


# the config hash and the research store key of the section without flow parts, as they were before
# the flow detectors existed (computed at commit c51a81a)
HASH_BEFORE = "f5ee28f49b9d338f466555a5204f5a49913387cce2f31de26d267b8a21ceb0a1"
STORE_KEY_BEFORE = (
    '{"bar":60000,"vpin":{"bucket_volume":{"default":20000.0,"symbols":{"BTCUSDT":200000.0}},'
    '"volume_unit":"quote","buckets":8,"classification":"aggressor","sigma_bars":10},'
    '"kyle_window_bars":5,"amihud_window_bars":4}'
)


def test_a_section_without_the_flow_parts_keeps_its_hash_and_store_key():
    cfg = strategy(detectors=DETECTORS)
    assert cfg.config_hash == HASH_BEFORE
    assert cfg.detectors.model_dump_json() == STORE_KEY_BEFORE  # backtest.research's StoreSpec.detectors
    assert cfg.detectors.flow_params() is None
    with_flow = strategy(detectors=SECTION)
    assert with_flow.config_hash != HASH_BEFORE and '"divergence"' in with_flow.detectors.model_dump_json()
    # defaults spelled out or left out: the same meaning, the same hash
    assert (
        strategy(detectors={**DETECTORS, "divergence": {}}).config_hash
        == strategy(detectors={**DETECTORS, "divergence": {"window": "30m"}}).config_hash
    )


@pytest.mark.parametrize(
    "part, match",
    [
        ({"divergence": {"window": "90s"}}, "divergence.window"),  # not whole 1-minute bars
        ({"divergence": {"window": 0}}, "divergence.window"),
        ({"oi_spike": {"window": 1}}, "window"),
        ({"oi_spike": {"period": "0s"}}, "period"),
        ({"oi_spike": {"kind": "funding_rate"}}, "kind"),
        ({"liquidations": {"window": "1500ms"}}, "liquidations.window"),
        ({"liquidations": {"cascade": {"window": "-10s"}}}, "cascade"),
        ({"liquidations": {"cascade": {"min_count": None, "min_usd": None}}}, "min_count or min_usd"),
        ({"liquidations": {"cascade": {"min_count": 0}}}, "min_count"),
        ({"liquidations": {"windows": "5m"}}, "windows"),  # unknown key
    ],
)
def test_bad_flow_sections_are_refused_when_loaded(part, match):
    with pytest.raises(StrategyConfigError, match=match):
        strategy(detectors={**DETECTORS, **part})
