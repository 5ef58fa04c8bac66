"""1m/5m bars and Wilder ATR: hand cases, pandas and ``ta`` as independent references, percentile."""

from __future__ import annotations

import json
import os
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from ta.volatility import AverageTrueRange

from stream_apps.core.atr import WilderATR
from stream_apps.core.bars import Bar, BarBuilder
from stream_apps.core.events import TradeBatch
from stream_apps.core.symbol_state import SymbolState
from stream_apps.core.synthetic import synthetic_trades
from stream_apps.core.units import notional_to_units, qty_to_units

T0 = 1_700_000_040_000  # a minute boundary


def _build(builder: BarBuilder, batch: TradeBatch) -> list[Bar]:
    quote = notional_to_units(batch.price * batch.qty)
    return builder.update(batch.time_ms, batch.price, qty_to_units(batch.qty), ~batch.taker_sell, quote, batch.agg_id)


def test_one_minute_bar_by_hand():
    trades = TradeBatch.from_arrays(
        "binance",
        "BTCUSDT",
        agg_id=[10, 11, 12, 13, 14],
        time_ms=[T0 + 1_000, T0 + 20_000, T0 + 30_000, T0 + 59_999, T0 + 60_000],
        price=[100.0, 103.0, 99.0, 101.0, 105.0],
        qty=[1.0, 2.0, 3.0, 4.0, 1.0],
        taker_sell=[False, True, False, True, False],
    )
    builder = BarBuilder(60_000)
    closed = _build(builder, trades)
    assert len(closed) == 1  # the 5th trade opened the next minute and closed the first
    record = closed[0].to_record("binance", "BTCUSDT")
    assert record == {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "open_time": T0,
        "close_time": T0 + 60_000,
        "open": 100.0,
        "high": 103.0,
        "low": 99.0,
        "close": 101.0,
        "volume": 10.0,  # 1 + 2 + 3 + 4
        "buy_volume": 4.0,  # trades 1 and 3 were taker buys: 1 + 3
        "sell_volume": 6.0,  # 2 + 4
        "quote_volume": 100.0 + 206.0 + 297.0 + 404.0,  # 1007
        "vwap": 100.7,  # 1007 / 10
        "trade_count": 4,
        "first_agg_id": 10,
        "last_agg_id": 13,
    }
    assert builder.close_until(T0 + 119_999) == []
    assert [b.open_time for b in builder.close_until(T0 + 120_000)] == [T0 + 60_000]


def test_bars_match_a_pandas_resample_and_do_not_depend_on_batching():
    trades = synthetic_trades("ETHUSDT", duration_ms=3 * 3_600_000, rate_per_s=3, price0=2000.0, seed=4)
    whole = BarBuilder(60_000)
    bars = _build(whole, trades) + whole.close_until(10**15)
    pieces = BarBuilder(60_000)
    bars_pieces = []
    for chunk in np.array_split(np.arange(len(trades)), 97):
        bars_pieces += _build(pieces, trades.take(chunk))
    bars_pieces += pieces.close_until(10**15)
    assert bars == bars_pieces

    frame = pd.DataFrame(
        {"price": trades.price, "qty": trades.qty, "buy": np.where(trades.taker_sell, 0.0, trades.qty)},
        index=pd.to_datetime(trades.time_ms, unit="ms"),
    )
    ohlc = frame["price"].resample("1min").ohlc().dropna()
    volume = frame["qty"].resample("1min").sum().loc[ohlc.index]
    buys = frame["buy"].resample("1min").sum().loc[ohlc.index]
    assert len(bars) == len(ohlc)
    assert [b.open for b in bars] == ohlc["open"].tolist()
    assert [b.high for b in bars] == ohlc["high"].tolist()
    assert [b.low for b in bars] == ohlc["low"].tolist()
    assert [b.close for b in bars] == ohlc["close"].tolist()
    assert np.allclose([b.volume for b in bars], volume.to_numpy(), rtol=0, atol=1e-9)
    assert np.allclose([b.buy_units / 1e8 for b in bars], buys.to_numpy(), rtol=0, atol=1e-9)


def test_real_recording_bars_and_cvd_match_exact_decimal_arithmetic(recording_dir):
    path = os.path.join(recording_dir, "ws_frames.txt")
    frames = []
    with open(path) as f:
        next(f)
        for line in f:
            payload = json.loads(line.split(": ", 1)[1])["data"]
            if payload.get("e") == "aggTrade" and payload["s"] == "SUSHIUSDT":
                frames.append(payload)
    assert len(frames) == 40
    batch = TradeBatch.from_arrays(
        "binance",
        "SUSHIUSDT",
        [f["a"] for f in frames],
        [f["T"] for f in frames],
        [float(f["p"]) for f in frames],
        [float(f["q"]) for f in frames],
        [f["m"] for f in frames],
    )
    state = SymbolState("binance", "SUSHIUSDT")
    bars = state.apply_trades(batch)
    assert (state.counters.accepted, state.counters.gaps, state.counters.duplicates) == (40, 0, 0)
    end = (frames[-1]["T"] // 1000 + 1) * 1000
    bars += state.advance_to(end + 60_000)
    features = state.snapshot(end + 60_000)
    exact_cvd = sum(Decimal(f["q"]) * (-1 if f["m"] else 1) for f in frames)
    assert Decimal(repr(features.cvd_at(300_000))) == exact_cvd
    exact_quote = sum(Decimal(f["p"]) * Decimal(f["q"]) for f in frames)
    assert sum(Decimal(repr(b.quote_units)) for b in bars) / Decimal(10**6) == exact_quote
    assert bars[0].first_agg_id == frames[0]["a"] and bars[-1].last_agg_id == frames[-1]["a"]


def _bar(i, high, low, close, open_=None):
    return Bar(
        i * 300_000, (i + 1) * 300_000, open_ if open_ is not None else close, high, low, close, 0, 0, 0, 0, 1, i, i
    )


def test_wilder_atr_by_hand():
    atr = WilderATR(period=14)
    # bar 1: no previous close, TR = H - L = 10 -> ATR seeded with it
    assert atr.update(_bar(0, 110, 100, 105)) == 10.0
    # bar 2: H-L = 4, |H - Cprev| = |112 - 105| = 7, |L - Cprev| = |108 - 105| = 3 -> TR 7
    # ATR = (10 * 13 + 7) / 14 = 137 / 14
    assert atr.update(_bar(1, 112, 108, 111)) == pytest.approx(137 / 14)
    # bar 3 gaps down: H-L = 2, |H - C| = |100 - 111| = 11, |L - C| = |98 - 111| = 13 -> TR 13
    # ATR = (137/14 * 13 + 13) / 14
    assert atr.update(_bar(2, 100, 98, 99)) == pytest.approx((137 / 14 * 13 + 13) / 14)
    assert atr.percentile() == 50.0  # fewer than 10 bars


def _five_minute_bars():
    trades = synthetic_trades("BTCUSDT", duration_ms=3 * 86_400_000, rate_per_s=1.0, volatility_bps=3.0, seed=21)
    builder = BarBuilder(300_000)
    return _build(builder, trades) + builder.close_until(10**15)


def test_atr_matches_ta_after_the_seed_difference_decays():
    """``ta`` seeds Wilder with the mean of the first 14 TRs at bar 13; we seed with the first TR.

    Both then run ATR_i = (ATR_{i-1} * 13 + TR_i) / 14, so for i >= 13 the difference is
    (ours_13 - ta_13) * (13/14)**(i - 13): checking that relation shows the recursion and the true
    ranges are the same, and after 300 bars the two agree to 1e-9.
    """
    bars = _five_minute_bars()
    assert len(bars) >= 800
    ours = WilderATR()
    values = [ours.update(bar) for bar in bars]
    frame = pd.DataFrame(
        {"high": [b.high for b in bars], "low": [b.low for b in bars], "close": [b.close for b in bars]}
    )
    reference = AverageTrueRange(frame["high"], frame["low"], frame["close"], window=14).average_true_range().to_numpy()
    true_ranges = (
        AverageTrueRange(frame["high"], frame["low"], frame["close"], window=1).average_true_range().to_numpy()
    )
    assert values[0] == true_ranges[0]  # seeded with the first TR
    gap = values[13] - reference[13]
    expected_gap = gap * (13 / 14) ** np.arange(len(bars) - 13)
    assert np.allclose(np.array(values[13:]) - reference[13:], expected_gap, rtol=1e-6, atol=1e-9)
    assert np.allclose(values[300:], reference[300:], rtol=1e-9, atol=0)


def test_atr_percentile_ranks_among_exactly_the_last_288_bars():
    atr = WilderATR(period=1)  # period 1 makes ATR equal to the TR, so the history is chosen by hand
    base = 1000.0

    def feed(true_range, i):
        # close = low = base, so TR = max(H - L, |H - C|, |L - C|) = true_range exactly
        return atr.update(_bar(i, base + true_range, base, base))

    feed(10_000.0, 0)  # far above everything that follows
    for i in range(1, 289):
        feed(float(i), i)  # 288 bars with ATR 1, 2, ..., 288
    # the 10,000 bar is the 289th most recent and no longer counts: 288 is the highest -> 100
    assert len(atr.history) == 288
    assert atr.percentile() == 100.0  # with the old bar it would have been 288/289 = 99.65
    feed(144.5, 289)  # history now 2..288 and 144.5: values <= 144.5 are 2..144 (143) plus itself
    assert atr.percentile() == pytest.approx(100.0 * 144 / 288)


def test_atr_percentile_is_50_below_10_bars_and_reading_is_pure():
    atr = WilderATR()
    for i in range(9):
        atr.update(_bar(i, 101 + i, 100, 100))
    assert atr.percentile() == 50.0
    atr.update(_bar(9, 120, 100, 100))
    first = atr.percentile()
    assert first == atr.percentile() == 100.0  # rising TRs: the newest ATR is the highest
    assert len(atr.history) == 10  # reading did not append anything
    assert WilderATR.from_dict(atr.to_dict()).percentile() == first
