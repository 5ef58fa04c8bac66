"""Log-linear size histogram: error bound against numpy, hourly expiry, floors, large-trade marking."""

from __future__ import annotations

import numpy as np
import pytest

from stream_apps.core.events import TradeBatch
from stream_apps.core.quantiles import (
    N_BINS,
    RELATIVE_ERROR,
    HourlyQuantileWindow,
    bin_index,
    bin_value,
    quantile_from_counts,
)
from stream_apps.core.symbol_state import SymbolState

T0 = 1_700_002_800_000  # 2023-11-14 23:00:00 UTC, an hour boundary


def test_every_value_is_within_the_relative_error_of_its_bucket_midpoint():
    rng = np.random.default_rng(1)
    values = np.exp(rng.uniform(np.log(1e-7), np.log(1e10), 100_000))
    midpoints = np.array([bin_value(i) for i in bin_index(values)])
    assert np.max(np.abs(midpoints - values) / values) <= RELATIVE_ERROR
    assert RELATIVE_ERROR == 1 / 128  # under 1 %


def test_bucket_edges_by_hand():
    # 1.0 = 1.0 * 2**0: first of 64 slices of its octave, midpoint 1 + 0.5/64 = 1.0078125
    assert bin_value(bin_index(np.array([1.0]))[0]) == 1.0078125
    # 0.75 = 1.5 * 2**-1: slice (1.5 - 1) * 64 = 32, midpoint (1 + 32.5/64) / 2 = 0.75390625
    assert bin_value(bin_index(np.array([0.75]))[0]) == 0.75390625
    # neighbours 1/64 of an octave apart fall in consecutive buckets
    assert bin_index(np.array([1.0, 1.0 + 1 / 64]))[1] - bin_index(np.array([1.0]))[0] == 1
    # out of range values clamp to the end buckets instead of failing
    assert bin_index(np.array([1e-30, 1e30])).tolist() == [0, N_BINS - 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_quantile_estimate_is_within_one_percent_of_numpy(seed, q):
    rng = np.random.default_rng(seed)
    sizes = np.round(rng.lognormal(-2.0, 1.8, 50_000), 3) + 0.001
    counts = np.bincount(bin_index(sizes), minlength=N_BINS)
    estimate, n = quantile_from_counts(counts, q)
    exact = np.percentile(sizes, q * 100, method="lower")
    assert n == len(sizes)
    assert abs(estimate - exact) <= RELATIVE_ERROR * exact
    # and against numpy's default (linear) quantile, allowing for its interpolation
    high = np.percentile(sizes, q * 100, method="higher")
    assert exact * (1 - RELATIVE_ERROR) <= estimate <= high * (1 + RELATIVE_ERROR)


def test_empty_histogram_has_no_quantile():
    assert quantile_from_counts(np.zeros(N_BINS, dtype=np.int64), 0.99) == (None, 0)


def test_hourly_window_keeps_current_hour_plus_24_whole_hours():
    window = HourlyQuantileWindow(24)
    window.add(100, bin_index(np.array([1.0] * 10)))
    window.add(110, bin_index(np.array([2.0] * 5)))
    assert window.counts_at(124).sum() == 15  # hours 100..124
    assert window.counts_at(125).sum() == 5  # hour 100 left the window
    window.add(125, bin_index(np.array([3.0])))  # reuses hour 100's slot (125 % 25 == 0)
    assert window.counts_at(125).sum() == 6
    restored = HourlyQuantileWindow.from_dict(window.to_dict())
    assert np.array_equal(restored.counts_at(125), window.counts_at(125))


def _trades(symbol, times, qtys, first_id=1):
    n = len(times)
    return TradeBatch.from_arrays(
        "binance", symbol, np.arange(first_id, first_id + n), times, [100.0] * n, qtys, [False] * n
    )


def test_floors_apply_below_100_samples_btc_5_10_others_50_100():
    btc, eth = SymbolState("binance", "BTCUSDT"), SymbolState("binance", "ETHUSDT")
    for state in (btc, eth):
        state.apply_trades(_trades(state.symbol, [T0 + i for i in range(99)], [0.5] * 99))
        state.advance_to(T0 + 60_000)
    assert (btc.snapshot(T0 + 60_000).p95_qty, btc.snapshot(T0 + 60_000).p99_qty) == (5.0, 10.0)
    assert (eth.snapshot(T0 + 60_000).p95_qty, eth.snapshot(T0 + 60_000).p99_qty) == (50.0, 100.0)


def test_quantiles_above_the_floor_after_100_samples():
    state = SymbolState("binance", "BTCUSDT")
    # 100 trades of sizes 1..100: lower-method P95 is the value of rank floor(99*0.95)=94 -> 95.0,
    # P99 rank floor(99*0.99)=98 -> 99.0; both reported within 1 %
    sizes = [float(i) for i in range(1, 101)]
    state.apply_trades(_trades("BTCUSDT", [T0 + i for i in range(100)], sizes))
    state.advance_to(T0 + 60_000)
    features = state.snapshot(T0 + 60_000)
    assert features.qty_samples == 100
    assert features.p95_qty == pytest.approx(95.0, rel=RELATIVE_ERROR)
    assert features.p99_qty == pytest.approx(99.0, rel=RELATIVE_ERROR)


def test_large_trades_use_the_p99_frozen_at_the_start_of_the_minute():
    state = SymbolState("binance", "BTCUSDT")
    # minute 0: 200 trades of 1.0 -> P99 of minute 1 = max(~1.01, floor 10) = 10
    state.apply_trades(_trades("BTCUSDT", [T0 + i for i in range(200)], [1.0] * 200))
    # minute 1: a 10.0 trade is not above P99 (10), an 11.0 trade is (strictly above)
    t1 = T0 + 60_000
    state.apply_trades(_trades("BTCUSDT", [t1, t1 + 1, t1 + 2], [10.0, 11.0, 500.0], first_id=201))
    state.advance_to(t1 + 1000)
    features = state.snapshot(t1 + 1000)
    assert features.large_buy_qty_15m == 11.0 + 500.0
    # the 500 trade did not raise the threshold used in its own minute
    assert state.p99 == 10.0
