"""Bucket ring and fixed-point sums: exact windows, exact return to zero, batch independence."""

from __future__ import annotations

import numpy as np

from stream_apps.core.events import TradeBatch
from stream_apps.core.ring import BucketRing
from stream_apps.core.symbol_state import SymbolState
from stream_apps.core.units import QTY_SCALE, qty_to_units


def test_qty_units_are_exact_for_exchange_steps():
    # 0.001 * 1e8 = 100000.00000000001 in floats; rounding gives the exact integer
    assert qty_to_units(np.array([0.001, 0.1, 1.5, 123.456]))[...].tolist() == [
        100_000,
        10_000_000,
        150_000_000,
        12_345_600_000,
    ]


def test_window_sum_by_hand():
    ring = BucketRing(1000, 5, ("a", "b"))
    ring.add(np.array([10, 10, 11, 13]), np.array([[1, 2], [3, 4], [5, 6], [7, 8]]))
    # bucket 10 = (1+3, 2+4) = (4, 6); 11 = (5, 6); 13 = (7, 8)
    assert ring.window_sum(10, 13).tolist() == [4 + 5 + 7, 6 + 6 + 8]
    assert ring.window_sum(11, 12).tolist() == [5, 6]
    assert ring.dense(10, 13).tolist() == [[4, 6], [5, 6], [0, 0], [7, 8]]
    # bucket 15 reuses bucket 10's slot (15 % 5 == 0): 10 is gone, 11..13 remain
    ring.add(np.array([15]), np.array([[100, 0]]))
    assert ring.window_sum(0, 100).tolist() == [5 + 7 + 100, 6 + 8]
    assert ring.window_sum(10, 10).tolist() == [0, 0]


def test_rows_older_than_the_ring_are_dropped_and_counted():
    ring = BucketRing(1000, 5, ("a",))
    ring.add(np.array([20]), np.array([[1]]))
    dropped = ring.add(np.array([15, 16, 19]), np.array([[10], [20], [30]]))
    assert dropped == 1  # bucket 15 <= 20 - 5 is outside the ring; 16 and 19 are kept
    assert ring.window_sum(0, 30).tolist() == [1 + 20 + 30]


def test_unsorted_rows_give_the_same_ring_as_sorted_rows():
    rng = np.random.default_rng(3)
    ids = rng.integers(100, 140, 500)
    rows = rng.integers(-1000, 1000, (500, 3))
    a, b = BucketRing(1000, 64, "xyz"), BucketRing(1000, 64, "xyz")
    a.add(ids, rows)
    order = np.argsort(ids, kind="stable")
    for chunk in np.array_split(order, 17):
        b.add(ids[chunk], rows[chunk])
    assert a.to_dict() == b.to_dict()
    assert BucketRing.from_dict(a.to_dict()).to_dict() == a.to_dict()


def test_long_add_and_expire_sequence_returns_exactly_to_zero():
    """Two days of trades through a 1-h window, then one empty hour: every sum is exactly 0.

    The same quantities added to and removed from a float running sum (what the old TradeWindow did)
    do not come back to 0, which is why the engine sums integers.
    """
    rng = np.random.default_rng(11)
    n = 200_000
    qty = np.round(rng.lognormal(-3.0, 1.5, n), 3) + 0.001
    float_sum = 0.0
    for q in qty:
        float_sum += q
    for q in qty:
        float_sum -= q
    assert float_sum != 0.0  # the drift the old system had to "recompute every 10,000 trims"

    ring = BucketRing(1000, 3600, ("qty",))
    seconds = np.sort(rng.integers(0, 2 * 86_400, n))
    for chunk in np.array_split(np.arange(n), 50):
        ring.add(seconds[chunk], qty_to_units(qty[chunk]).reshape(-1, 1))
    end = int(seconds[-1])
    assert ring.window_sum(end - 3599, end)[0] > 0
    ring.add(np.array([end + 3600]), np.array([[0]]))  # one hour later, nothing traded
    assert ring.window_sum(end + 1, end + 3600).tolist() == [0]
    assert ring.window_sum(0, end + 3600).tolist() == [0]


def test_cvd_of_every_window_is_exactly_zero_after_the_market_goes_quiet():
    state = SymbolState("binance", "ETHUSDT")
    rng = np.random.default_rng(5)
    n = 50_000
    start = 1_700_000_000_000
    times = start + np.sort(rng.integers(0, 3 * 3_600_000, n))
    qty = np.round(rng.lognormal(0, 1, n), 3) + 0.001
    batch = TradeBatch.from_arrays(
        "binance", "ETHUSDT", np.arange(n), times, np.full(n, 2000.0), qty, rng.random(n) < 0.5
    )
    state.apply_trades(batch)
    busy = (int(times[-1]) // 1000 + 1) * 1000
    state.advance_to(busy)
    assert state.snapshot(busy).cvd_at(3_600_000) != 0.0
    quiet = busy + 25 * 3_600_000  # 25 h later every window has expired
    state.advance_to(quiet)
    features = state.snapshot(quiet)
    assert all(value == 0.0 for _, value in features.cvd)
    assert features.volume_30m == 0.0 and features.vwap_30m is None


def test_integer_cvd_equals_the_exact_decimal_sum():
    # 0.1 + 0.2 - 0.3 is 5.55e-17 in floats; in units it is exactly 0
    state = SymbolState("binance", "ETHUSDT")
    t0 = 1_700_000_000_000
    state.apply_trades(
        TradeBatch.from_arrays(
            "binance", "ETHUSDT", [1, 2, 3], [t0, t0 + 1, t0 + 2], [1.0] * 3, [0.1, 0.2, 0.3], [False, False, True]
        )
    )
    state.advance_to(t0 + 1000)
    assert state.snapshot(t0 + 1000).cvd_at(300_000) == 0.0
    assert (0.1 + 0.2) - 0.3 != 0.0
    assert int(state.seconds.window_sum(0, 10**12)[0]) == 30_000_000 == round(0.3 * QTY_SCALE)
