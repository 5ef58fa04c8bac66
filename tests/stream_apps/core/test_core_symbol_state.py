"""SymbolState indicators by hand, bad input, warm-up coverage, bounded memory, plain-data round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_apps.core.events import (
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    MarkUpdate,
    TradeBatch,
)
from stream_apps.core.symbol_state import SymbolState
from stream_apps.core.synthetic import synthetic_trades

T = 1_700_006_400_000  # 2023-11-15 00:00:00 UTC: hour, minute and second boundary
S, M, H = 1_000, 60_000, 3_600_000


def _state(symbol="BTCUSDT", trades=(), first_id=1):
    """trades: (time_ms, price, qty, taker_sell) in time order."""
    state = SymbolState("binance", symbol)
    if trades:
        times, prices, qtys, sells = zip(*trades)
        ids = range(first_id, first_id + len(trades))
        state.apply_trades(TradeBatch.from_arrays("binance", symbol, ids, times, prices, qtys, sells))
    return state


def _snap(state, now=T, **kw):
    state.advance_to(now)
    return state.snapshot(now, **kw)


def test_cvd_windows_by_hand():
    state = _state(
        trades=[
            (T - 25 * H, 100.0, 100.0, False),  # older than 24 h: in no window
            (T - 20 * H, 100.0, 6.0, False),
            (T - 3 * H, 100.0, 5.0, True),
            (T - 50 * M, 100.0, 4.0, False),
            (T - 20 * M, 100.0, 3.0, True),
            (T - 10 * M, 100.0, 2.0, False),
            (T - 4 * M, 100.0, 0.5, True),
            (T - 10 * S, 100.0, 1.0, False),
        ]
    )
    f = _snap(state)
    assert f.cvd_at(5 * M) == 1.0 - 0.5  # 0.5
    assert f.cvd_at(15 * M) == 0.5 + 2.0  # 2.5
    assert f.cvd_at(30 * M) == 2.5 - 3.0  # -0.5
    assert f.cvd_at(1 * H) == -0.5 + 4.0  # 3.5
    assert f.cvd_at(4 * H) == 3.5 - 5.0  # -1.5
    assert f.cvd_at(24 * H) == -1.5 + 6.0  # 4.5


def test_window_edges_are_exact_on_second_boundaries():
    state = _state(
        trades=[(T - 5 * M - 1, 100.0, 7.0, False), (T - 5 * M, 100.0, 1.0, False), (T - 1, 100.0, 2.0, True)]
    )
    f = _snap(state)
    assert f.cvd_at(5 * M) == 1.0 - 2.0  # [T-5m, T): the trade 1 ms earlier is out
    assert f.cvd_at(15 * M) == 7.0 + 1.0 - 2.0


def test_vwap_30m_by_hand():
    state = _state(
        trades=[(T - 31 * M, 1000.0, 5.0, False), (T - 20 * M, 100.0, 1.0, False), (T - 1 * M, 110.0, 3.0, True)]
    )
    f = _snap(state)
    assert f.vwap_30m == pytest.approx((100.0 * 1 + 110.0 * 3) / 4)  # 107.5; the 31-min trade is out
    assert f.volume_30m == 4.0
    assert f.last_price == 110.0


def test_whale_flow_15m_by_hand():
    state = _state(
        trades=[
            (T - 16 * M, 50_000.0, 10.0, False),  # $500k buy, older than 15 min
            (T - 10 * M, 50_000.0, 3.0, False),  # $150k taker buy: whale
            (T - 9 * M, 50_000.0, 1.0, True),  # $50k sell: below $100k
            (T - 1 * M, 50_000.0, 2.5, True),  # $125k taker sell: whale
        ]
    )
    f = _snap(state)
    assert (f.whale_buy_usd_15m, f.whale_sell_usd_15m) == (150_000.0, 125_000.0)
    assert f.whale_ratio_15m == pytest.approx((150_000 - 125_000) / 275_000)  # 0.0909
    assert _snap(_state(trades=[(T - M, 100.0, 1.0, False)])).whale_ratio_15m == 0.0


def test_cvd_slope_and_acceleration_per_15s_step_by_hand():
    state = _state(
        trades=[
            (T - 310 * S, 100.0, 7.0, False),
            (T - 40 * S, 100.0, 2.0, False),
            (T - 20 * S, 100.0, 3.0, False),
            (T - 5 * S, 100.0, 1.0, True),
        ]
    )
    f = _snap(state, slope_windows_ms=(5 * M,))
    # CVD5m(T) = 2 + 3 - 1 = 4; CVD5m(T-15s) over [T-315s, T-15s) = 7 + 2 + 3 = 12;
    # CVD5m(T-30s) over [T-330s, T-30s) = 7 + 2 = 9
    assert f.slope_at(5 * M) == 4 - 12  # -8
    assert f.accel_at(5 * M) == (4 - 12) - (12 - 9)  # -11
    # a pure read: the same snapshot again gives the same slope (the old engine zeroed it)
    assert state.snapshot(T, slope_windows_ms=(5 * M,)) == f


def test_market_records_latest_values_and_staleness():
    state = _state(trades=[(T - 1000, 100.0, 1.0, False)])
    state.apply_book(BookUpdate("binance", "BTCUSDT", T - 2 * S, 0.25))
    state.apply_mark(MarkUpdate("binance", "BTCUSDT", T - 5 * S, 100.1, 100.0, 0.0004, T + H))
    state.apply_mark(MarkUpdate("binance", "BTCUSDT", T - 9 * S, 99.0, 99.0, 0.9, T + H))  # older: ignored
    for kind, value in (
        ("coinbase_premium", 0.0007),
        ("spot_perp_divergence", -0.004),
        ("long_short_account_ratio", 1.8),
    ):
        state.apply_indicator(IndicatorUpdate("binance", "BTCUSDT", T - 60 * S, kind, value, T - 5 * M))
    state.apply_indicator(
        IndicatorUpdate(
            "binance", "BTCUSDT", T - 60 * S, "top_trader_position_ratio", 1.5, T - 5 * M, {"long_account": 0.62}
        )
    )
    f = _snap(state)
    assert (f.obi, f.funding_rate, f.mark_price) == (0.25, 0.0004, 100.1)
    assert state.counters.stale_records == 1
    assert (f.coinbase_premium, f.spot_perp_divergence, f.long_short_ratio) == (0.0007, -0.004, 1.8)
    assert f.top_trader_long_share == 0.62
    later = _snap(state, T + 61 * S)
    assert later.obi is None and later.funding_rate is None  # book older than 10 s, mark than 60 s
    assert later.coinbase_premium == 0.0007  # REST indicators stay valid for 15 min
    assert _snap(state, T + 11 * M).coinbase_premium is None


def test_top_trader_share_derived_from_the_ratio_when_the_shares_are_missing():
    state = _state(trades=[(T - 1000, 100.0, 1.0, False)])
    state.apply_indicator(IndicatorUpdate("binance", "BTCUSDT", T - S, "top_trader_position_ratio", 1.5, T - M))
    assert _snap(state).top_trader_long_share == pytest.approx(1.5 / 2.5)  # 0.6


def test_open_interest_change_is_between_data_points_not_ticks():
    state = _state(trades=[(T - 1000, 100.0, 1.0, False)])

    def oi(value, t):
        return IndicatorUpdate("binance", "BTCUSDT", t + 30 * S, "open_interest_hist", value, t)

    state.apply_indicator(oi(1000.0, T - 10 * M))
    assert _snap(state).oi_change is None  # one data point: no change yet
    state.apply_indicator(oi(1030.0, T - 5 * M))
    assert _snap(state).oi_change == pytest.approx(0.03)  # (1030 - 1000) / 1000
    # every later tick still sees the change of the latest data point (the old engine went to 0)
    assert _snap(state, T + 60 * S).oi_change == pytest.approx(0.03)
    state.apply_indicator(oi(1031.0, T - 5 * M))  # the same data point polled again: corrected value
    assert _snap(state, T + 61 * S).oi_change == pytest.approx(0.031)
    state.apply_indicator(oi(900.0, T - 20 * M))  # older data point: ignored
    assert _snap(state, T + 62 * S).open_interest == 1031.0


def test_liquidations_by_liquidated_side_over_5_minutes():
    state = _state(trades=[(T - 1000, 100.0, 1.0, False)])
    state.apply_liquidation(LiquidationEvent("binance", "BTCUSDT", T - 6 * M, "LONG", 1_000_000.0))  # too old
    state.apply_liquidation(LiquidationEvent("binance", "BTCUSDT", T - 4 * M, "SHORT", 100_000.0))
    state.apply_liquidation(LiquidationEvent("binance", "BTCUSDT", T - 60 * S, "LONG", 300_000.0))
    state.apply_liquidation(LiquidationEvent("binance", "BTCUSDT", T - 30 * S, "LONG", float("nan")))
    f = _snap(state)
    assert (f.liq_long_usd_5m, f.liq_short_usd_5m) == (300_000.0, 100_000.0)
    assert state.counters.rejected == 1


def test_bad_trades_are_counted_and_never_crash():
    state = SymbolState("binance", "ETHUSDT")
    batch = TradeBatch.from_arrays(
        "binance",
        "ETHUSDT",
        agg_id=[1, 2, 3, 4, 5, 6, 2, 7, 10, 11, 12],
        time_ms=[
            T - 9000,
            T - 8000,
            T - 8000,
            T - 8000,
            T - 8000,
            T - 8000,
            T - 7000,
            T - 7000,
            T - 5000,
            T - 6500,
            T - 4000,
        ],
        price=[100.0, np.nan, 100.0, -1.0, 100.0, np.inf, 100.0, 100.0, 100.0, 100.0, 100.0],
        qty=[1.0, 1.0, 0.0, 1.0, 1e-12, 1.0, 50.0, 2.0, 3.0, 4.0, 5.0],
        taker_sell=[False] * 11,
    )
    state.apply_trades(batch)
    c = state.counters
    assert c.rejected == 5  # NaN price, zero qty, negative price, qty rounding to 0 units, inf price
    assert c.duplicates == 1  # id 2 again
    assert c.gaps == 1  # 7 -> 10
    assert c.late == 1  # id 11 at T-6.5 s arrived after a trade at T-5 s (a closed second)
    assert c.accepted == 4  # ids 1, 7, 10, 12
    f = _snap(state)
    assert f.cvd_at(5 * M) == 1.0 + 2.0 + 3.0 + 5.0
    assert f.coverage_start_ms == T - 5000  # the gap restarted coverage at id 10
    state.advance_to(T + S)
    state.apply_trades(TradeBatch.from_arrays("binance", "ETHUSDT", [13], [T + 500], [100.0], [1.0], [False]))
    assert state.counters.late == 2  # T + 0.5 s is before the advance_to(T + 1 s) seal
    empty = TradeBatch.empty("binance", "ETHUSDT")
    assert state.apply_trades(empty) == []


def test_warm_only_when_data_covers_the_window_not_after_a_timer():
    state = _state(trades=[(T - 2 * H, 100.0, 1.0, False), (T - H, 100.0, 1.0, False)])
    assert state.is_warm(T, H) and state.is_warm(T, 2 * H)
    assert not state.is_warm(T, 24 * H)
    assert not state.is_warm(T + 20 * H, 24 * H)  # time passing alone does not fill the window
    assert state.is_warm(T + 22 * H, 24 * H)  # data from T-2h now covers the last 24 h
    state.advance_to(T)
    state.apply_trades(TradeBatch.from_arrays("binance", "BTCUSDT", [5], [T + S], [100.0], [1.0], [False]))
    assert state.counters.gaps == 1  # ids 3 and 4 are missing
    assert not state.is_warm(T + 2 * S, H)  # coverage restarted at the gap
    assert SymbolState("binance", "BTCUSDT").is_warm(T, 1) is False


def test_snapshot_rules():
    state = _state(trades=[(T - 1000, 100.0, 1.0, False)])
    with pytest.raises(ValueError, match="advance_to"):
        state.snapshot(T + 10 * M)
    with pytest.raises(ValueError, match="last applied trade"):
        state.snapshot(T - 1000)
    state.advance_to(T)
    with pytest.raises(ValueError, match="slope window"):
        state.snapshot(T, slope_windows_ms=(4 * H,))


def test_plain_data_round_trip_gives_the_same_snapshot():
    state = SymbolState("binance", "BTCUSDT")
    trades = synthetic_trades("BTCUSDT", start_ms=T - 3 * H, duration_ms=3 * H, rate_per_s=5, seed=2)
    state.apply_trades(trades)
    state.apply_liquidation(LiquidationEvent("binance", "BTCUSDT", T - M, "SHORT", 250_000.0))
    state.apply_indicator(IndicatorUpdate("binance", "BTCUSDT", T - M, "open_interest_hist", 5.0, T - 10 * M))
    state.apply_indicator(IndicatorUpdate("binance", "BTCUSDT", T - M, "open_interest_hist", 6.0, T - 5 * M))
    state.apply_book(BookUpdate("binance", "BTCUSDT", T - S, -0.2))
    state.advance_to(T)
    text = json.dumps(state.to_dict())  # plain data: JSON-serialisable as is
    restored = SymbolState.from_dict(json.loads(text))
    assert restored.snapshot(T) == state.snapshot(T)
    assert restored.to_dict() == state.to_dict()
    more = synthetic_trades(
        "BTCUSDT", start_ms=T, duration_ms=H, rate_per_s=5, seed=3, first_agg_id=int(trades.agg_id[-1]) + 1
    )
    assert restored.apply_trades(more) == state.apply_trades(more)
    restored.advance_to(T + H)
    state.advance_to(T + H)
    assert restored.snapshot(T + H) == state.snapshot(T + H)


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_state_does_not_depend_on_batching(batch_size):
    trades = synthetic_trades("BTCUSDT", start_ms=T, duration_ms=20 * M, rate_per_s=3, seed=9)
    reference = SymbolState("binance", "BTCUSDT")
    reference_bars = reference.apply_trades(trades)
    state = SymbolState("binance", "BTCUSDT")
    bars = []
    for start in range(0, len(trades), batch_size):
        bars += state.apply_trades(trades.take(slice(start, start + batch_size)))
    assert bars == reference_bars
    assert state.to_dict() == reference.to_dict()


def test_memory_is_bounded_after_24h_of_trades_at_a_high_rate():
    state = SymbolState("binance", "BTCUSDT")
    cells = state.capacity_cells()
    total = 0
    last_id = 0
    for hour in range(26):
        chunk = synthetic_trades(
            "BTCUSDT", start_ms=T + hour * H, duration_ms=H, rate_per_s=60, seed=hour, first_agg_id=last_id + 1
        )
        last_id = int(chunk.agg_id[-1])
        total += len(chunk)
        state.apply_trades(chunk)
    assert total > 5_000_000
    assert state.counters.accepted == total and state.counters.gaps == 0
    assert state.capacity_cells() == cells  # nothing grew with the number of trades
    p = state.params
    data = state.to_dict()
    assert len(data["seconds"]["buckets"]) <= p.second_buckets
    assert len(data["minutes"]["buckets"]) <= p.minute_buckets
    assert len(data["qty_hist"]["hours"]) <= p.qty_window_hours + 1
    assert len(data["atr"]["history"]) == p.atr_history
    assert state.seconds.live_buckets() <= p.second_buckets
    now = T + 26 * H
    state.advance_to(now)
    assert state.snapshot(now).qty_samples > 0


@pytest.mark.parametrize("defect", ["none", "gap", "duplicate", "time_back", "bad_price", "zero_qty", "late"])
def test_clean_prefix_is_the_longest_prefix_apply_trades_takes_cleanly(defect):
    """The engine cuts its segments at the first trade the clean path would not take."""
    state = SymbolState("binance", "BTCUSDT")
    state.apply_trades(synthetic_trades("BTCUSDT", start_ms=T, duration_ms=60_000, rate_per_s=5.0, seed=2))
    nxt = synthetic_trades(
        "BTCUSDT", start_ms=T + 61_000, duration_ms=60_000, rate_per_s=5.0, seed=3, first_agg_id=state.last_agg_id + 1
    )
    ids, times, prices, qtys = nxt.agg_id.copy(), nxt.time_ms.copy(), nxt.price.copy(), nxt.qty.copy()
    k = 150
    if defect == "gap":
        ids[k:] += 5
    elif defect == "duplicate":
        ids[k:] -= 1
    elif defect == "time_back":
        times[k] = times[k - 1] - 10
    elif defect == "bad_price":
        prices[k] = -1.0
    elif defect == "zero_qty":
        qtys[k] = 0.0
    elif defect == "late":
        times[0] = T - 5_000
    batch = TradeBatch.from_arrays("binance", "BTCUSDT", ids, times, prices, qtys, nxt.taker_sell)
    longest = max(m for m in range(len(batch) + 1) if state.is_clean(batch.take(slice(0, m))))
    assert state.clean_prefix(batch) == longest
    assert longest == {"none": len(batch), "late": 0}.get(defect, k)


@pytest.mark.parametrize("seed", range(6))
def test_liquidations_applied_at_once_leave_what_one_at_a_time_leaves(seed):
    """``MarketRecords.apply_liquidations`` on a segment's events at once (the engine's path) against
    ``apply_liquidation`` on each in turn (a batch of one, where the ring's newest bucket comes from
    the calls before): the same ring and the same counters, with invalid events, events out of order,
    older than the ring, and a batch longer than the ring (early events overwritten by later ones)."""
    rng = np.random.default_rng(seed)
    one, batch = _state(), _state()
    for market in (one.market, batch.market):  # a ring that already holds something
        market.apply_liquidation(LiquidationEvent("binance", "BTCUSDT", T, "SHORT", 5_000.0))
    n_buckets = one.market.liquidations.n_buckets
    span = 3 * n_buckets * S
    times = np.sort(T + rng.integers(-n_buckets * S, span, 80))
    times[rng.integers(0, 80, 10)] -= rng.integers(0, 2 * n_buckets * S, 10)  # some out of order
    for k in (41, 57, 73):  # and some older than the ring already is when they come
        times[k] = times[k - 1] - (n_buckets + 5 + k) * S
    events = []
    for k, t in enumerate(times.tolist()):
        side = ("LONG", "SHORT", "BOTH")[int(rng.integers(0, 3))] if k % 7 else "LONG"
        usd = (
            (float("nan"), -5.0, float(rng.uniform(1e3, 1e6)))[int(rng.integers(0, 3))]
            if k % 5 == 0
            else float(rng.uniform(1e3, 1e6))
        )
        events.append(LiquidationEvent("binance", "BTCUSDT", int(t), side, usd))
    for event in events:
        one.market.apply_liquidation(event)
    batch.market.apply_liquidations(events)
    ring_a, ring_b = one.market.liquidations, batch.market.liquidations
    assert ring_a.head == ring_b.head
    assert np.array_equal(ring_a._values, ring_b._values)
    assert one.counters.rejected == batch.counters.rejected > 0
    assert one.counters.liquidations_dropped == batch.counters.liquidations_dropped > 0
