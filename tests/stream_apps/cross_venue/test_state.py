"""The cross-venue state: spreads against hand-computed books, stale legs, funding, basis, the rolling
windows' wiring, and the same output however the input is batched."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_apps.cross_venue.events import BookEvent, FundingEvent, SpotEvent
from stream_apps.cross_venue.state import CrossVenueParams, CrossVenueState
from tests.support.fuzz import FUZZ  # hypothesis settings that write nothing outside the run's temp dirs

HOUR = 3_600_000


def book(exchange, symbol, t, bids, asks):
    return BookEvent(exchange, symbol, t, tuple(bids), tuple(asks))


def last(outputs, coin="BTC"):
    return [o for o in outputs if o.coin == coin][-1]


BINANCE = book("binance", "BTCUSDT", 1_000, [(101.0, 1.0), (100.5, 2.0)], [(101.2, 1.0), (101.4, 3.0)])
OKX = book("okx", "BTC-USDT-SWAP", 1_500, [(100.8, 2.0), (100.7, 1.0)], [(100.9, 1.0), (101.0, 2.0)])


def test_spreads_at_the_touch_and_swept_both_ways_against_hand_computed_books():
    state = CrossVenueState(CrossVenueParams(sweep_notional_usd=150.0))
    out = state.feed([BINANCE, OKX]) + state.advance_to(2_000)
    assert [o.time_ms for o in out] == [1_000, 2_000]  # 1,000 saw binance only; 2,000 sees both
    f = last(out)
    # sell on binance, buy on okx: 101.0 bid against 100.9 ask
    ab = f.pair("binance", "okx")
    assert ab.spread_top == pytest.approx(math.log(101.0 / 100.9), rel=1e-12)
    # 150 USD into binance's bids: 1 coin at 101 (101 USD), 49 USD at 100.5;
    # from okx's asks: 1 coin at 100.9, then 49.1 USD at 101.0
    sell_vwap = Fraction(150) / (1 + Fraction(49) / Fraction("100.5"))
    buy_vwap = Fraction(150) / (1 + Fraction("49.1") / 101)
    assert ab.spread_sweep == pytest.approx(math.log(sell_vwap / buy_vwap), rel=1e-9)
    assert ab.leg_skew_ms == 500 and ab.reason("spread_top") is None
    # the other way: sell on okx (100.8 holds 201.6 USD: the whole 150 at 100.8), buy on binance
    # (1 coin at 101.2, then 48.8 USD at 101.4)
    ba = f.pair("okx", "binance")
    assert ba.spread_top == pytest.approx(math.log(100.8 / 101.2), rel=1e-12)
    buy_vwap = Fraction(150) / (1 + Fraction("48.8") / Fraction("101.4"))
    assert ba.spread_sweep == pytest.approx(math.log(Fraction("100.8") / buy_vwap), rel=1e-9)
    assert f.venue("binance").sweep_bid == pytest.approx(float(sell_vwap), rel=1e-12)
    # bybit sent nothing: its pairs say so instead of a number
    assert f.pair("bybit", "okx").spread_top is None
    assert f.pair("okx", "bybit").reason("spread_top") == "no data from bybit yet"


def test_a_notional_the_book_cannot_fill_leaves_the_touch_spread_and_says_why():
    state = CrossVenueState(CrossVenueParams(sweep_notional_usd=250.0))  # binance bids hold 302 USD, okx asks 302.9
    f = last(state.feed([BINANCE, OKX]) + state.advance_to(2_000))
    assert f.pair("binance", "okx").spread_sweep is not None
    deep = CrossVenueState(CrossVenueParams(sweep_notional_usd=400.0))
    f = last(deep.feed([BINANCE, OKX]) + deep.advance_to(2_000))
    p = f.pair("binance", "okx")
    assert p.spread_top == pytest.approx(math.log(101.0 / 100.9)) and p.spread_sweep is None
    assert p.reason("spread_sweep") == (
        "binance: insufficient depth: bids hold 302 USD of 400 in 2 levels; "
        "okx: insufficient depth: asks hold 303 USD of 400 in 2 levels"
    )


def test_a_stale_leg_makes_the_pair_missing_with_its_age_never_zero():
    params = CrossVenueParams(
        max_staleness_ms=2_000, eval_interval_ms=100, slope_window_ms=1_000, windows=(("1m", 60_000, 1_000),)
    )
    state = CrossVenueState(params)
    okx = book("okx", "BTC-USDT-SWAP", 0, OKX.bids, OKX.asks)
    binance = book("binance", "BTCUSDT", 3_200, BINANCE.bids, BINANCE.asks)
    out = state.feed([okx, binance]) + state.advance_to(3_200)
    by_time = {o.time_ms: o for o in out}
    # okx alone until 2,000 (its book is fresh for 2 s, the limit included), then nothing is fresh
    assert sorted(by_time) == list(range(0, 2_001, 100)) + [3_200]
    edge = by_time[2_000]
    assert edge.venue("okx").bid == 100.8 and edge.venue("okx").book_age_ms == 2_000
    f = by_time[3_200]
    for sell, buy in (("binance", "okx"), ("okx", "binance")):
        p = f.pair(sell, buy)
        assert p.spread_top is None and p.spread_sweep is None
        assert p.reason("spread_top") == p.reason("spread_sweep") == "stale leg okx: 3.2 s old"
        assert p.leg_skew_ms == 3_200
    assert f.venue("okx").bid is None and f.venue("okx").book_age_ms == 3_200
    assert f.venue("binance").bid == 101.0
    # the windows got no sample from the stale pair: still only the samples taken while both were fresh (none)
    assert dict(f.pair("binance", "okx").top.windows)["1m"].n == 0


def test_an_evaluation_sees_events_up_to_its_time_and_late_or_older_events_are_counted():
    params = CrossVenueParams(eval_interval_ms=1_000)
    state = CrossVenueState(params)
    b2 = book("binance", "BTCUSDT", 2_000, [(102.0, 1.0)], [(102.2, 1.0)])
    b2500 = book("binance", "BTCUSDT", 2_500, [(103.0, 1.0)], [(103.2, 1.0)])
    out = state.feed([BINANCE, b2, b2500])
    assert [o.time_ms for o in out] == [1_000, 2_000] and out[-1].venue("binance").bid == 102.0
    state.feed([book("binance", "BTCUSDT", 1_999, [(1.0, 1.0)], [(2.0, 1.0)])])  # before 2,000: late
    state.feed([book("okx", "BTC-USDT-SWAP", 2_000, OKX.bids, OKX.asks)])  # at the evaluated point: late
    state.feed([book("binance", "BTCUSDT", 2_400, [(1.0, 1.0)], [(2.0, 1.0)])])  # not late, older than 2,500: stale
    state.feed(
        [
            book("binance", "ETHUSDT", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),
            book("kraken", "BTCUSDT", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),
            book("okx", "BTCUSDT_240329", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),
            book("okx", "BTC-USDT", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),  # spot, not a perpetual
            book("binance", "BTCUSDC", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),  # not the configured quote
            book("bybit", "BTCUSDT", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),
            book("bybit", "BTCPERP", 2_500, [(1.0, 1.0)], [(2.0, 1.0)]),
        ]
    )  # no known quote
    assert state.counters == {"late": 2, "stale": 1, "unknown_venue": 1, "bad_symbol": 2, "other_market": 2}
    f = last(state.advance_to(3_000))
    assert f.time_ms == 3_000 and f.venue("binance").bid == 103.0 and f.venue("okx").symbol is None
    assert f.venue("bybit").symbol == "BTCUSDT"
    assert [o.coin for o in state.advance_to(3_000)] == []  # nothing twice


def test_funding_per_venue_interval_learned_from_the_exchange_and_the_difference_per_pair():
    params = CrossVenueParams(funding_max_age_ms=60_000)
    state = CrossVenueState(params)
    # the OKX producer publishes under tapeflow's symbol (okx:BTCUSDT), as here
    books = [book(v, "BTCUSDT", 1_000, BINANCE.bids, BINANCE.asks) for v in ("binance", "bybit", "okx")]
    events = [
        *books,
        FundingEvent("binance", "BTCUSDT", 1_000, 0.0001, 8 * HOUR),
        FundingEvent("bybit", "BTCUSDT", 1_000, 0.0002, 4 * HOUR, interval_ms=4 * HOUR),
    ]
    f = last(state.feed(events) + state.advance_to(1_000))
    p = f.pair("binance", "bybit")
    assert p.funding_diff == pytest.approx(0.0001 - 0.0002)
    assert p.funding_diff_8h is None and p.reason("funding_diff_8h") == "funding interval of binance not known yet"
    assert f.pair("okx", "binance").reason("funding_diff") == "no funding from okx yet"
    assert f.venue("bybit").funding_interval_ms == 4 * HOUR and f.venue("bybit").next_funding_time_ms == 4 * HOUR
    # binance's next funding time moves on from 8 h to 16 h: its interval is 8 h
    books2 = [book(b.exchange, b.symbol, 2_000, b.bids, b.asks) for b in books]
    f = last(
        state.feed([FundingEvent("binance", "BTCUSDT", 2_000, 0.0003, 16 * HOUR), *books2]) + state.advance_to(2_000)
    )
    p = f.pair("binance", "bybit")
    # per 8 h: binance 0.0003 (8 h interval), bybit 0.0002 every 4 h = 0.0004
    assert p.funding_diff == pytest.approx(0.0001) and p.funding_diff_8h == pytest.approx(0.0003 - 0.0004)
    assert f.pair("bybit", "binance").funding_diff_8h == pytest.approx(0.0004 - 0.0003)
    # okx: the rate from md.mark, the interval from an md.indicators record timed a little earlier
    state.feed(
        [
            FundingEvent("okx", "BTCUSDT", 2_500, 0.0001, 8 * HOUR),
            book("okx", "BTCUSDT", 2_600, BINANCE.bids, BINANCE.asks),
        ]
    )
    state.feed([FundingEvent("okx", "BTCUSDT", 2_550, 0.0001, 8 * HOUR, interval_ms=8 * HOUR)])
    assert state.counters["stale"] == 0  # not older than the newest rate: applied, interval and all
    state.feed(
        [
            FundingEvent("okx", "BTCUSDT", 2_700, 0.0005, 8 * HOUR),
            FundingEvent("okx", "BTCUSDT", 2_650, 0.0009, 8 * HOUR, interval_ms=4 * HOUR),
        ]
    )
    assert state.counters["stale"] == 1  # the older rate is dropped, its stated interval is kept
    f = last(state.advance_to(3_000))
    assert (f.venue("okx").funding_rate, f.venue("okx").funding_interval_ms) == (0.0005, 4 * HOUR)
    assert state.counters["other_market"] == 0 and state.counters["late"] == 0
    # OKX's own name for the swap is the same leg; a second PEPE perp quoted per coin is not
    state.feed(
        [
            FundingEvent("okx", "BTC-USDT-SWAP", 3_500, 0.0006, 8 * HOUR),
            book("binance", "PEPEUSDT", 3_500, [(1e-5, 1.0)], [(2e-5, 1.0)]),
            book("binance", "1000PEPEUSDT", 3_500, [(1e-2, 1.0)], [(2e-2, 1.0)]),
        ]
    )
    assert state.counters["other_market"] == 1 and state.counters["late"] == 0
    assert last(state.advance_to(4_000)).venue("okx").funding_rate == 0.0006
    # a minute later without funding news both are too old to use
    late_books = [book(b.exchange, b.symbol, 63_000, b.bids, b.asks) for b in books]
    f = last(state.feed(late_books) + state.advance_to(63_000))
    assert f.pair("binance", "bybit").funding_diff is None
    assert f.pair("binance", "bybit").reason("funding_diff") == (
        "stale funding binance: 61.0 s old; stale funding bybit: 62.0 s old"
    )


def test_spot_perp_basis_per_venue_and_coins_quoted_per_thousand():
    state = CrossVenueState(CrossVenueParams())
    events = [
        BINANCE,
        SpotEvent("binance", "BTCUSDT", 1_000, 100.0),
        book("binance", "1000PEPEUSDT", 1_000, [(0.0123, 1e6)], [(0.0124, 1e6)]),
        book("okx", "PEPE-USDT-SWAP", 1_000, [(0.0000121, 1e9)], [(0.0000122, 1e9)]),
        OKX,
    ]
    out = state.feed(events) + state.advance_to(2_000)
    btc = last(out)
    assert btc.venue("binance").basis == pytest.approx(math.log((101.0 + 101.2) / 2 / 100.0), rel=1e-12)
    assert dict(btc.venue("okx").reasons)["basis"] == "no spot price for okx"
    assert dict(btc.venue("bybit").reasons)["basis"] == "no data from bybit yet"
    pepe = last(out, "PEPE")
    assert pepe.venue("binance").bid == pytest.approx(0.0000123, rel=1e-12)
    assert pepe.pair("binance", "okx").spread_top == pytest.approx(math.log(0.0000123 / 0.0000122), rel=1e-9)
    # 10,000 USD: 1e6 x 1000 PEPE at 0.0123 is 12,300 USD, so the sweep stays on the touch
    assert pepe.pair("binance", "okx").spread_sweep == pytest.approx(math.log(0.0000123 / 0.0000122), rel=1e-9)


# -- generated sessions -----------------------------------------------------------------------------
VENUES = {"binance": "{c}USDT", "bybit": "{c}USDT", "okx": "{c}-USDT-SWAP"}


def session(seed: int, seconds: int, coins=("BTC", "ETH")) -> list:
    """Books every ~0.5-1.5 s per leg (okx silent for a while, to make stale legs), funding and spot."""
    rng = np.random.default_rng(seed)
    events = []
    for ci, coin in enumerate(coins):
        mid = 100.0 * (ci + 1)
        for venue, pattern in VENUES.items():
            symbol = pattern.format(c=coin)
            t = int(rng.integers(0, 1_000))
            offset = rng.normal(0, 5e-4)
            while t < seconds * 1_000:
                if not (venue == "okx" and seconds * 300 < t < seconds * 450):
                    m = mid * math.exp(offset + 3e-4 * math.sin(t / 20_000) + rng.normal(0, 2e-4))
                    half = m * 1e-4
                    depth = int(rng.integers(1, 5))
                    events.append(
                        book(
                            venue,
                            symbol,
                            t,
                            [
                                (round(m - half - k * m * 1e-4, 6), float(rng.integers(1, 40)) / 10)
                                for k in range(depth)
                            ],
                            [
                                (round(m + half + k * m * 1e-4, 6), float(rng.integers(1, 40)) / 10)
                                for k in range(depth)
                            ],
                        )
                    )
                if rng.random() < 0.05:
                    events.append(
                        FundingEvent(venue, symbol, t, float(rng.normal(1e-4, 1e-4)), (t // (8 * HOUR) + 1) * 8 * HOUR)
                    )
                if venue == "binance" and rng.random() < 0.02:
                    events.append(SpotEvent(venue, symbol, t, mid * (1 + float(rng.normal(0, 1e-3)))))
                t += int(rng.integers(500, 1_500))
    events.sort(key=lambda e: e.time_ms)  # stable: equal times keep their order
    return events


SMALL = CrossVenueParams(
    sweep_notional_usd=200.0,
    eval_interval_ms=1_000,
    slope_window_ms=20_000,
    windows=(("1m", 60_000, 5_000), ("3m", 180_000, 10_000)),
)


def test_rolling_features_are_the_statistics_of_the_spreads_emitted():
    events = session(11, 600)
    state = CrossVenueState(SMALL)
    out = [o for o in state.feed(events) + state.advance_to(events[-1].time_ms) if o.coin == "BTC"]
    times = np.array([o.time_ms for o in out])
    top = np.array([np.nan if (v := o.pair("bybit", "okx").spread_top) is None else v for o in out])
    assert np.isnan(top).sum() > 20 and (~np.isnan(top)).sum() > 300  # okx's silence left stale points
    checked = 0
    for i in range(0, len(out), 7):
        o = out[i]
        p = o.pair("bybit", "okx")
        for name, window_ms, sample_ms in SMALL.windows:
            mask = (times > o.time_ms - window_ms) & (times <= o.time_ms) & (times % sample_ms == 0) & ~np.isnan(top)
            w = dict(p.top.windows)[name]
            assert w.n == mask.sum()
            if w.n >= 2:
                v = top[mask]
                assert w.mean == pytest.approx(v.mean(), rel=1e-9, abs=1e-15)
                assert w.std == pytest.approx(v.std(ddof=1), rel=1e-7, abs=1e-15)
                assert (w.min, w.max) == (v.min(), v.max())
                assert w.drift_ratio == pytest.approx(abs(v[-1] - v[0]) / np.abs(np.diff(v)).sum(), rel=1e-9)
                checked += 1
        mask = (times > o.time_ms - SMALL.slope_window_ms) & (times <= o.time_ms) & ~np.isnan(top)
        if mask.sum() >= 2:
            slope = np.polyfit((times[mask] - times[mask][0]) / 60_000, top[mask], 1)[0]
            assert p.top.slope_per_min == pytest.approx(slope, rel=1e-6, abs=1e-12)
    assert checked > 100


def run(events, cuts, watermarks):
    state = CrossVenueState(SMALL)
    out, start = [], 0
    for cut in [*cuts, len(events)]:
        out += state.feed(events[start:cut])
        if watermarks and cut < len(events):
            out += state.advance_to(events[cut].time_ms - 1)  # a true watermark: nothing older follows
        start = cut
    return out + state.advance_to(events[-1].time_ms), state.counters


EVENTS = session(5, 150)
WHOLE = run(EVENTS, [], False)


@settings(FUZZ, max_examples=15)
@given(st.lists(st.integers(0, len(EVENTS)), max_size=40).map(lambda c: sorted(set(c))), st.booleans())
def test_the_same_events_give_the_same_features_however_they_are_batched(cuts, watermarks):
    assert len(WHOLE[0]) > 250 and WHOLE[1]["late"] == 0
    assert run(EVENTS, cuts, watermarks) == WHOLE


def test_one_state_per_coin_gives_the_features_of_one_state_for_all_coins():
    """What a Faust table keyed by coin will do: each coin's state sees only that coin's events."""
    events = session(9, 90, coins=("BTC", "ETH", "SOL"))
    together = CrossVenueState(SMALL)
    everything = together.feed(events) + together.advance_to(events[-1].time_ms)
    for coin in ("BTC", "ETH", "SOL"):
        own = [e for e in events if e.symbol.startswith(coin)]
        alone = CrossVenueState(SMALL)
        mine = alone.feed(own) + alone.advance_to(events[-1].time_ms)
        assert mine == [o for o in everything if o.coin == coin] and len(mine) > 60


def test_flat_records_carry_every_feature_and_the_reasons():
    state = CrossVenueState(CrossVenueParams(sweep_notional_usd=150.0))
    f = last(state.feed([BINANCE, OKX]) + state.advance_to(2_000))
    rows = {(r["sell_venue"], r["buy_venue"]): r for r in f.to_records()}
    assert len(rows) == 6
    row = rows[("binance", "okx")]
    assert row["spread_top"] == f.pair("binance", "okx").spread_top and row["eval_time"] == 2_000
    assert row["sell_symbol"] == "BTCUSDT" and row["buy_symbol"] == "BTC-USDT-SWAP"
    assert row["top_1h_n"] == 0 and row["top_12h_mean"] is None and row["sweep_1h_std"] is None
    assert row["sell_book_age_ms"] == 1_000 and row["buy_book_age_ms"] == 500
    # the first sample of the slope window is at 2,000 (1,000 saw one leg): one sample, no slope yet
    assert row["top_slope_per_min"] is None and f.pair("binance", "okx").top.slope_reason == "slope window has 1 sample"
    assert row["missing"]["funding_diff"] == "no funding from binance yet; no funding from okx yet"
    assert rows[("bybit", "okx")]["missing"]["spread_top"] == "no data from bybit yet"


def test_a_state_restored_from_its_plain_data_continues_bit_for_bit():
    """What the Faust table will do: snapshot (through JSON, as a changelog would carry it), restore, go on."""
    events = session(13, 240)  # windows of 1 and 3 minutes filled, expired and rebuilt before the cuts
    whole = CrossVenueState(SMALL)
    expected = whole.feed(events) + whole.advance_to(events[-1].time_ms)
    for cut in (len(events) // 3, 2 * len(events) // 3):
        first = CrossVenueState(SMALL)
        out = first.feed(events[:cut])
        restored = CrossVenueState.from_dict(SMALL, json.loads(json.dumps(first.to_dict())))
        out += restored.feed(events[cut:]) + restored.advance_to(events[-1].time_ms)
        assert out == expected
        assert restored.counters == whole.counters


def test_a_venue_can_have_its_own_staleness_limit():
    params = CrossVenueParams(max_staleness_ms=2_000, staleness_by_venue={"okx": 5_000})
    state = CrossVenueState(params)
    okx = book("okx", "BTC-USDT-SWAP", 0, OKX.bids, OKX.asks)
    binance = book("binance", "BTCUSDT", 3_000, BINANCE.bids, BINANCE.asks)
    out = state.feed([okx, binance]) + state.advance_to(5_000)
    at = {o.time_ms: o for o in out}
    assert at[3_000].pair("binance", "okx").spread_top == pytest.approx(math.log(101.0 / 100.9))
    assert at[5_000].pair("okx", "binance").spread_top is not None  # okx 5.0 s old: the limit, still used
    # binance keeps the default 2 s: at 6,000 both legs are past their limits
    state.feed([book("bybit", "BTCUSDT", 6_000, BINANCE.bids, BINANCE.asks)])
    f = last(state.advance_to(6_000))
    assert f.pair("binance", "okx").reason("spread_top") == "stale leg binance: 3.0 s old; stale leg okx: 6.0 s old"
