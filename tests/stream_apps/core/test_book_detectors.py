"""Book detectors (``stream_apps.core.detectors.book``): order-book walls and iceberg refills.

Hand-built snapshot sequences whose walls, pulled/filled counts and iceberg refills are worked out in
the comments (a wall filled vs pulled vs out of view, the window's edges, an empty side, snapshots
without levels); the same logs and state for any batching and across a JSON round trip; and in the
engine: every evaluation's values equal the detectors fed the symbol's inputs alone, for batches of
1, 7 and 1000 inputs and across a snapshot restore, off = no field, and a section without the new
parts keeping its config hash. (Equality of the Faust worker and the backtest runner on these
fields: ``test_detectors.test_the_stream_worker_and_the_backtest_give_the_same_detector_values``.)
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_apps.core.detectors import BOOK_FIELDS, DETECTOR_FIELDS, BookDetectors, BookParams
from stream_apps.core.engine import Engine
from stream_apps.core.events import BookUpdate, TradeBatch
from stream_apps.core.strategy import StrategyConfigError
from tests.stream_apps.core.test_detectors import DETECTORS, strategy
from tests.stream_apps.core.test_flow_detectors import HASH_BEFORE, STORE_KEY_BEFORE, run_engine
from tests.support.fuzz import FUZZ

T0 = 1_700_000_040_000  # a whole minute
U = 10**8
WALLS = BookParams(
    wall_multiple=3.0, wall_band_bps=50.0, wall_fill_ratio=0.5, wall_window_ms=60_000, wall_max_age_ms=10_000
)
ICEBERGS = BookParams(
    iceberg_min_refills=3,
    iceberg_band_bps=50.0,
    iceberg_window_ms=60_000,
    iceberg_trade_fraction=0.5,
    iceberg_refill_fraction=0.8,
)


def step(d: BookDetectors, t: int, bids=None, asks=None, trades=(), levels="given"):
    """Trades (time, price, qty, taker sell) before a snapshot at ``t`` with these levels."""
    if levels == "given":
        levels = (bids or [], asks or [])
    times, prices, qtys, sells = (np.array(c) for c in zip(*trades)) if trades else ([],) * 4
    return d.update(
        np.array([t]),
        [levels],
        np.asarray(times, dtype=np.int64),
        np.asarray(prices, dtype=np.float64),
        np.rint(np.asarray(qtys, dtype=np.float64) * U).astype(np.int64),
        np.asarray(sells, dtype=bool),
    )


def at(d: BookDetectors, *times: int) -> dict[str, list[float]]:
    return {k: v.tolist() for k, v in d.values_many(np.array(times, dtype=np.int64)).items()}


# B0: mid 100; a bid wall of 10 at 99.97 (3 bps, 999.7 USD) and an ask wall of 12 at 100.04 (4 bps,
# 1200.48 USD); every other level is 1 (~100 USD), so the median of the 8 levels is (100.01 + 100.02)
# / 2 and a wall needs 3 x that = 300.045 USD
B0 = ([(99.99, 1), (99.98, 1), (99.97, 10), (99.96, 1)], [(100.01, 1), (100.02, 1), (100.03, 1), (100.04, 12)])
PLAIN = ([(99.99, 1), (99.98, 1), (99.96, 1), (99.95, 1)], [(100.01, 1), (100.02, 1), (100.03, 1), (100.05, 1)])


def test_walls_nearest_distance_size_and_age_by_hand():
    d = BookDetectors(WALLS)
    log = step(d, T0, *B0)
    assert log.keys.tolist() == [T0]
    v = at(d, T0 + 5_000)
    assert v["wall_bid_distance_bps"] == [pytest.approx(3.0)] and v["wall_bid_usd"] == [pytest.approx(999.7)]
    assert v["wall_ask_distance_bps"] == [pytest.approx(4.0)] and v["wall_ask_usd"] == [pytest.approx(1200.48)]
    assert v["wall_bid_age_s"] == [5.0] and v["wall_ask_age_s"] == [5.0]
    assert [v[f"wall_{k}"] for k in ("pulled_bid", "pulled_ask", "filled_bid", "filled_ask")] == [[0.0]] * 4
    # the same walls 2 s later (sizes changed, still walls): they keep their start; a nearer bid wall
    # of 8 at 99.98 appears and becomes the nearest, aged from its own first snapshot
    step(d, T0 + 2_000, [(99.99, 1), (99.98, 8), (99.97, 9), (99.96, 1)], B0[1])
    v = at(d, T0 + 3_000)
    assert v["wall_bid_distance_bps"] == [pytest.approx(2.0)] and v["wall_bid_age_s"] == [1.0]
    assert v["wall_ask_age_s"] == [3.0]
    # walls read as missing once the latest snapshot is older than max_age (10 s)
    assert at(d, T0 + 12_000)["wall_ask_age_s"] == [12.0] and math.isnan(at(d, T0 + 12_001)["wall_ask_usd"][0])
    assert at(d, T0 + 12_001)["wall_pulled_bid"] == [0.0]  # counts do not go stale


def test_a_wall_traded_through_is_filled_one_gone_untouched_is_pulled_and_the_window_edges():
    d = BookDetectors(WALLS)
    step(d, T0, *B0)
    # taker sells of 3 + 3 at 99.97 reach the bid wall (6 >= 0.5 x its drop of 10): filled; a taker
    # buy of 1 at 100.04 is 1 < 0.5 x 12 and the ask wall is gone while 100.04 is still in view
    # (4 bps from the new mid 100, not beyond the deepest ask listed, 100.05): pulled
    step(
        d,
        T0 + 1_000,
        *PLAIN,
        trades=[(T0 + 200, 99.97, 3, True), (T0 + 300, 100.04, 1, False), (T0 + 1_000, 99.97, 3, True)],
    )  # a trade at the snapshot's ms: before it
    v = at(d, T0 + 2_000)
    assert (v["wall_filled_bid"], v["wall_pulled_bid"], v["wall_pulled_ask"], v["wall_filled_ask"]) == (
        [1.0],
        [0.0],
        [1.0],
        [0.0],
    )
    assert math.isnan(v["wall_bid_usd"][0]) and math.isnan(v["wall_ask_distance_bps"][0])  # no wall any more
    # counted in the snapshot's second (T0 + 1 s) over [t - 60 s, t): in up to t = T0 + 61 s, out after
    assert at(d, T0 + 1_000)["wall_filled_bid"] == [0.0]  # not before the snapshot
    edge = at(d, T0 + 61_000, T0 + 61_001, T0 + 62_000)
    assert edge["wall_filled_bid"] == [1.0, 0.0, 0.0] and edge["wall_pulled_ask"] == [1.0, 0.0, 0.0]


def test_a_wall_traded_less_than_the_fill_ratio_is_pulled_and_one_out_of_view_is_neither():
    d = BookDetectors(WALLS)
    step(d, T0, *B0)
    step(d, T0 + 1_000, *PLAIN, trades=[(T0 + 500, 99.96, 4.9, True)])  # through 99.97, 4.9 < 5: pulled
    assert at(d, T0 + 2_000)["wall_pulled_bid"] == [1.0] and at(d, T0 + 2_000)["wall_filled_bid"] == [0.0]
    # the market jumps to 101: the bid wall's 99.97 is 102 bps below the new mid (band 50): out of
    # view, not counted; the ask wall's 100.04 is now below the mid (the book crossed it): in view,
    # so without buys reaching it pulled, with buys of 7 >= 6 at or above it filled
    for trades, pulled, filled in (([], 1.0, 0.0), ([(T0 + 500, 100.5, 7, False)], 0.0, 1.0)):
        d = BookDetectors(WALLS)
        step(d, T0, *B0)
        step(d, T0 + 1_000, [(100.99, 1), (100.98, 1)], [(101.01, 1), (101.02, 1)], trades=trades)
        v = at(d, T0 + 2_000)
        assert (v["wall_pulled_bid"], v["wall_filled_bid"]) == ([0.0], [0.0])
        assert (v["wall_pulled_ask"], v["wall_filled_ask"]) == ([pulled], [filled])


def test_an_empty_side_and_snapshots_without_levels():
    d = BookDetectors(WALLS)
    assert all(math.isnan(v[0]) for v in at(d, T0).values())  # nothing before the first snapshot
    assert len(step(d, T0, levels=None)) == 0 and len(step(d, T0, [], [])) == 0  # no levels: skipped
    assert all(math.isnan(v[0]) for v in at(d, T0 + 1_000).values())
    # only bids: mid = best bid 99.99; median of the 4 bids (99.98 + 99.99) / 2, wall at 99.97 is
    # (99.99 - 99.97) / 99.99 bps away; the ask side has no wall
    step(d, T0 + 1_000, B0[0], [])
    v = at(d, T0 + 2_000)
    assert v["wall_bid_distance_bps"] == [pytest.approx(0.02 / 99.99 * 1e4)]
    assert math.isnan(v["wall_ask_distance_bps"][0]) and math.isnan(v["wall_ask_usd"][0])
    assert v["wall_pulled_ask"] == [0.0]
    # the ask wall of a full snapshot vanishing with the whole ask side is not judged: an empty side
    # shows nothing (a bid wall gone from a listed side still is)
    d = BookDetectors(WALLS)
    step(d, T0, *B0)
    step(d, T0 + 1_000, PLAIN[0], [])
    v = at(d, T0 + 2_000)
    assert (v["wall_pulled_ask"], v["wall_filled_ask"], v["wall_pulled_bid"]) == ([0.0], [0.0], [1.0])
    # a snapshot older than the one in use is ignored
    assert len(step(d, T0 + 500, *B0)) == 0 and repr(at(d, T0 + 2_000)) == repr(v)


# icebergs: the ask at 100.01 shows 2; a refill is taker buys of >= 1 (0.5 x 2) at exactly 100.01,
# then the next snapshot shows >= 1.6 (0.8 x 2) there again
BOOK = ([(99.99, 1)], [(100.01, 2), (100.02, 1)])


def refill(d: BookDetectors, t: int, qty: float = 1.5, back: float = 2, sell: bool = False, price: float = 100.01):
    """BOOK at t - 800 ms, a trade at t - 500 ms, the ask at 100.01 showing ``back`` at t."""
    step(d, t - 800, *BOOK)
    step(d, t, BOOK[0], [(100.01, back), (100.02, 1)], trades=[(t - 500, price, qty, sell)])


def test_iceberg_refills_and_the_recognition_window_edge_by_hand():
    d = BookDetectors(ICEBERGS)
    step(d, T0, *BOOK)
    refill(d, T0 + 10_000)  # r1
    refill(d, T0 + 40_000)  # r2
    assert at(d, T0 + 41_000)["iceberg_refills_ask"] == [0.0]  # 2 refills: not an iceberg yet
    refill(d, T0 + 70_000)  # r3: r1 is exactly 60 s before (not < 60 s): only r2 and r3 count, 2 < 3
    assert at(d, T0 + 71_000)["iceberg_refills_ask"] == [0.0]
    refill(d, T0 + 71_000)  # r4: r2 (31 s), r3 (1 s) and r4: an iceberg; r2, r3, r4 counted now
    v = at(d, T0 + 72_000)
    assert v["iceberg_refills_ask"] == [3.0] and v["iceberg_usd_ask"] == [pytest.approx(3 * 1.5 * 100.01)]
    assert v["iceberg_refills_bid"] == [0.0] and v["iceberg_usd_bid"] == [0.0]
    refill(d, T0 + 80_000)  # r5: still an iceberg, counted alone (r3, r4 were counted already)
    v = at(d, T0 + 81_000, T0 + 131_000, T0 + 132_000)
    assert v["iceberg_refills_ask"] == [4.0, 4.0, 1.0]  # over [t - 60 s, t): r2-r4's second leaves at 132 s
    assert v["iceberg_usd_ask"] == [pytest.approx(600.06), pytest.approx(600.06), pytest.approx(150.015)]
    assert all(math.isnan(x) for x in v["wall_bid_usd"])  # walls off


@pytest.mark.parametrize("kwargs", [{"qty": 0.9}, {"back": 1.5}, {"sell": True}, {"price": 100.015}])
def test_no_refill_without_enough_traded_or_shown_again_or_from_the_other_side(kwargs):
    d = BookDetectors(ICEBERGS)
    step(d, T0, *BOOK)
    for k in range(1, 5):
        refill(d, T0 + k * 5_000, **kwargs)
    assert at(d, T0 + 30_000)["iceberg_refills_ask"] == [0.0]
    control = BookDetectors(ICEBERGS)
    step(control, T0, *BOOK)
    for k in range(1, 5):
        refill(control, T0 + k * 5_000)
    assert at(control, T0 + 30_000)["iceberg_refills_ask"] == [4.0]


def test_bad_parameters_are_refused():
    for bad in (
        {},
        {"wall_multiple": 1.0},
        {"iceberg_min_refills": 1},
        {"wall_multiple": 2, "wall_window_ms": 1500},
        {"wall_multiple": 2, "wall_band_bps": 0},
        {"iceberg_min_refills": 3, "iceberg_refill_fraction": 0},
    ):
        with pytest.raises(ValueError):
            BookParams(**bad)


# ----------------------------------------------------------------------------------------------
# generated sessions: the same logs and state whatever the batching and across a round trip
# ----------------------------------------------------------------------------------------------
SESSION = 1_700_006_400_000
BOTH = BookParams(
    wall_multiple=4.0, wall_band_bps=30.0, wall_window_ms=60_000, iceberg_min_refills=3, iceberg_window_ms=60_000
)


def book_session(
    symbol: str = "BTCUSDT", seconds: int = 300, seed: int = 5, tick: float = 0.5, mid0: float = 30_000.0
) -> tuple[TradeBatch, list[BookUpdate]]:
    """A tick-grid market: 10 levels a side of 1-3 every second (now and then a wall of 25), taker
    buys at the best ask and sells at the best bid or, now and then, through several bids."""
    rng = np.random.default_rng(seed)
    mid = int(mid0 / tick)
    books, trades = [], []
    for s in range(seconds):
        t = SESSION + s * 1_000
        mid += int(rng.integers(-1, 2))
        bids = [[round((mid - n) * tick, 2), float(rng.integers(1, 4))] for n in range(1, 11)]
        asks = [[round((mid + n) * tick, 2), float(rng.integers(1, 4))] for n in range(1, 11)]
        if rng.random() < 0.4:
            (bids if rng.random() < 0.5 else asks)[int(rng.integers(0, 5))][1] = 25.0
        levels = ([{"price": p, "qty": q} for p, q in bids], [{"price": p, "qty": q} for p, q in asks])
        books.append(BookUpdate("binance", symbol, t + 500, 0.0, levels))
        deep = int(rng.integers(0, 6)) if rng.random() < 0.3 else 0
        trades.append((t + 100, asks[deep][0], float(rng.integers(1, 3)) + 10 * deep, False))
        deep = int(rng.integers(0, 6)) if rng.random() < 0.3 else 0
        trades.append((t + 300, bids[deep][0], float(rng.integers(1, 3)) + 10 * deep, True))
        trades.append((t + 500, bids[0][0], 0.5, True))  # at the snapshot's ms
    times, prices, qtys, sells = (np.array(c) for c in zip(*trades))
    batch = TradeBatch.from_arrays("binance", symbol, np.arange(1, len(times) + 1), times, prices, qtys, sells)
    return batch, books


TRADES, BOOKS = book_session()
INPUTS = sorted(
    [(int(TRADES.time_ms[i]), 0, i) for i in range(len(TRADES))] + [(b.time_ms, 1, k) for k, b in enumerate(BOOKS)]
)


def run_in_pieces(cuts, restore: bool = False, params: BookParams = BOTH, inputs=None):
    """Feed the session cut at ``cuts`` (trades and snapshots of a piece in one call); concatenated log."""
    INPUTS = inputs if inputs is not None else globals()["INPUTS"]
    d = BookDetectors(params)
    keys, values = [], []
    bounds = [0, *cuts, len(INPUTS)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        piece = INPUTS[lo:hi]
        index = np.array([i for _, kind, i in piece if kind == 0], dtype=np.int64)
        books = [BOOKS[i] for _, kind, i in piece if kind == 1]
        log = d.update(
            np.array([b.time_ms for b in books], dtype=np.int64),
            [b.levels for b in books],
            TRADES.time_ms[index],
            TRADES.price[index],
            np.rint(TRADES.qty[index] * U).astype(np.int64),
            TRADES.taker_sell[index],
        )
        keys.append(log.keys)
        values.append(log.values.reshape(-1, 7))
        if restore:
            d = BookDetectors.from_dict(json.loads(json.dumps(d.to_dict())))
    return d, np.concatenate(keys), np.concatenate(values)


WHOLE, WHOLE_KEYS, WHOLE_VALUES = run_in_pieces([])
READ_TIMES = np.arange(SESSION + 1_000, SESSION + 301_000, 1_000)


def test_the_generated_session_exercises_every_field():
    values = WHOLE.values_many(READ_TIMES, _at(WHOLE_KEYS, WHOLE_VALUES))
    for name in BOOK_FIELDS:
        assert np.nanmax(values[name]) > 0, name
    assert np.isnan(values["wall_bid_usd"]).mean() > 0.2  # and sides without a wall


def _at(keys, values):
    from stream_apps.core.detectors import DetectorLog

    return DetectorLog(keys, values).at(READ_TIMES, (math.nan,) * 7)


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_batches_of_1_7_and_1000_inputs_give_the_same_logs_and_state(size):
    d, keys, values = run_in_pieces(list(range(size, len(INPUTS), size)), restore=size == 7)
    np.testing.assert_array_equal(keys, WHOLE_KEYS)
    np.testing.assert_array_equal(values, WHOLE_VALUES)
    assert d.to_dict() == WHOLE.to_dict()


@settings(FUZZ, max_examples=15)
@given(cuts=st.lists(st.integers(1, len(INPUTS) - 1), max_size=10, unique=True).map(sorted), restore=st.booleans())
def test_any_batching_gives_the_same_logs_and_state(cuts, restore):
    d, keys, values = run_in_pieces(cuts, restore=restore)
    np.testing.assert_array_equal(keys, WHOLE_KEYS)
    np.testing.assert_array_equal(values, WHOLE_VALUES)
    assert d.to_dict() == WHOLE.to_dict()
    assert d.capacity_cells == BookDetectors(BOTH).capacity_cells  # memory fixed by the parameters


# ----------------------------------------------------------------------------------------------
# sampling: the first snapshot with levels of each interval
# ----------------------------------------------------------------------------------------------
def test_sampling_compares_the_first_snapshot_with_levels_of_each_interval():
    sampled, every = BookDetectors(replace(WALLS, sample_ms=1_000)), BookDetectors(WALLS)
    # B0's two walls, then PLAIN (no walls) 250 ms later, no levels at 1 s, B0 at 1.4 s, PLAIN at 1.999 s:
    # sampled, interval [T0, T0+1s) keeps T0 and [T0+1s, T0+2s) keeps 1.4 s (the 1 s one has no levels)
    books = [(T0, B0), (T0 + 250, PLAIN), (T0 + 1_000, None), (T0 + 1_400, B0), (T0 + 1_999, PLAIN)]
    for d in (sampled, every):
        log = d.update(np.array([t for t, _ in books]), [lv for _, lv in books], *(np.empty(0),) * 4)
        if d is sampled:
            assert log.keys.tolist() == [T0, T0 + 1_400]
    v = at(sampled, T0 + 1_500)
    assert v["wall_bid_age_s"] == [1.5] and v["wall_ask_age_s"] == [1.5]  # the walls stood throughout
    assert [v[f"wall_pulled_{s}"] for s in ("bid", "ask")] == [[0.0], [0.0]]
    # compared every 250 ms, the same book pulls both walls twice (gone while in view, nothing traded)
    assert [at(every, T0 + 2_500)[f"wall_pulled_{s}"] for s in ("bid", "ask")] == [[2.0], [2.0]]
    # an interval already sampled, or an older one, is not compared again, across a round trip too
    restored = BookDetectors.from_dict(json.loads(json.dumps(sampled.to_dict())))
    for d in (sampled, restored):
        assert d.update(np.array([T0 + 900, T0 + 1_800]), [PLAIN, PLAIN], *(np.empty(0),) * 4).keys.tolist() == []
        assert d.update(np.array([T0 + 2_000]), [PLAIN], *(np.empty(0),) * 4).keys.tolist() == [T0 + 2_000]
        assert at(d, T0 + 2_500)["wall_pulled_bid"] == [1.0]
    with pytest.raises(ValueError, match="sample_ms"):
        replace(WALLS, sample_ms=-1)


SAMPLED = replace(BOTH, sample_ms=2_000)  # the session has a snapshot a second at +500 ms: every other one


@settings(FUZZ, max_examples=10)
@given(cuts=st.lists(st.integers(1, len(INPUTS) - 1), max_size=10, unique=True).map(sorted), restore=st.booleans())
def test_sampling_equals_the_kept_snapshots_alone_whatever_the_batching(cuts, restore):
    kept = [(t, kind, i) for t, kind, i in INPUTS if kind == 0 or ((t - 500 - SESSION) // 1_000) % 2 == 0]
    expected, expected_keys, expected_values = run_in_pieces([], params=BOTH, inputs=kept)
    d, keys, values = run_in_pieces(cuts, restore=restore, params=SAMPLED)
    assert len(keys) == 150
    np.testing.assert_array_equal(keys, expected_keys)
    np.testing.assert_array_equal(values, expected_values)
    state, reference = d.to_dict(), expected.to_dict()
    assert {**state, "params": None, "sampled": None} == {**reference, "params": None, "sampled": None}


# ----------------------------------------------------------------------------------------------
# in the engine: ``walls`` and ``icebergs`` in the strategies' ``detectors`` section
# ----------------------------------------------------------------------------------------------
BOOK_SECTION = {"walls": {"multiple": 4, "band_bps": 30, "window": "1m"}, "icebergs": {"window": "1m"}}
SECTION = {**DETECTORS, **BOOK_SECTION}


def engine_items() -> list[tuple[str, object]]:
    """Two symbols' one-trade batches and snapshots, in time order (a snapshot after trades of its ms)."""
    items = []
    for seed, (symbol, mid) in enumerate((("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0))):
        trades, books = book_session(symbol, seconds=180, seed=seed, tick=0.5 if seed == 0 else 0.01, mid0=mid)
        items += [(int(trades.time_ms[i]), 0, ("trade", trades.take(slice(i, i + 1)))) for i in range(len(trades))]
        items += [(b.time_ms, 1, ("event", b)) for b in books]
    items.sort(key=lambda item: item[:2])
    return [item[2] for item in items]


ENGINE_ITEMS = engine_items()


@pytest.fixture(scope="module")
def reference():
    return run_engine(Engine([strategy(detectors=SECTION)]), ENGINE_ITEMS, 1000)


def test_engine_features_are_the_detectors_values_before_each_evaluation(reference):
    params = strategy(detectors=SECTION).detectors.book_params()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        rows = [f for f in reference.features if f["symbol"] == symbol]
        times = np.array([f["eval_time"] for f in rows])
        trades = TradeBatch.concat([p for kind, p in ENGINE_ITEMS if kind == "trade" and p.symbol == symbol])
        books = [p for kind, p in ENGINE_ITEMS if kind == "event" and p.symbol == symbol]
        alone = BookDetectors(params)
        log = alone.update(
            np.array([b.time_ms for b in books]),
            [b.levels for b in books],
            trades.time_ms,
            trades.price,
            np.rint(trades.qty * U).astype(np.int64),
            trades.taker_sell,
        )
        expected = alone.values_many(times, log.at(times, (math.nan,) * 7))
        got = {name: np.array([f["inputs"].get(name, np.nan) for f in rows]) for name in BOOK_FIELDS}
        for name in BOOK_FIELDS:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
            assert np.nanmax(got[name]) > 0, name


@pytest.mark.parametrize("batch_size", [1, 7])
def test_engine_output_does_not_depend_on_batching(reference, batch_size):
    out = run_engine(Engine([strategy(detectors=SECTION)]), ENGINE_ITEMS, batch_size)
    assert out.features == reference.features and out.signals == reference.signals


def test_a_restored_engine_resumes_the_book_detectors(reference):
    half = len(ENGINE_ITEMS) // 2
    first = Engine([strategy(detectors=SECTION)])
    out = run_engine(first, ENGINE_ITEMS[:half], 50)
    snapshot = json.loads(json.dumps(first.to_dict()))
    assert "orderbook" in snapshot["states"][0]
    out.extend(run_engine(Engine.from_dict(snapshot, [strategy(detectors=SECTION)]), ENGINE_ITEMS[half:], 50))
    assert out.features == reference.features
    changed = {**SECTION, "icebergs": {"window": "2m"}}
    restarted = Engine.from_dict(snapshot, [strategy(detectors=changed)]).states[("binance", "BTCUSDT")]
    assert restarted.orderbook.params.iceberg_window_ms == 120_000 and restarted.orderbook.book_time == -1
    dropped = Engine.from_dict(snapshot, [strategy(detectors=DETECTORS)]).states[("binance", "BTCUSDT")]
    assert dropped.orderbook is None and dropped.detectors.completed_buckets > 0


def test_book_detectors_off_change_nothing_and_on_change_only_their_own_fields(reference):
    off = run_engine(Engine([strategy(detectors=DETECTORS)]), ENGINE_ITEMS, 1000)
    assert not any(set(BOOK_FIELDS) & set(f["inputs"]) for f in off.features)
    strip = [{k: v for k, v in f["inputs"].items() if k not in BOOK_FIELDS} for f in reference.features]
    assert strip == [f["inputs"] for f in off.features]
    assert set(BOOK_FIELDS) <= set(DETECTOR_FIELDS)  # the research table drops them when off, like vpin
    walls_only = run_engine(
        Engine([strategy(detectors={**DETECTORS, "walls": BOOK_SECTION["walls"]})]), ENGINE_ITEMS[:1500], 1000
    )
    names = set().union(*(f["inputs"] for f in walls_only.features)) & set(BOOK_FIELDS)
    assert names and all(n.startswith("wall_") for n in names)


def test_a_section_without_walls_or_icebergs_keeps_its_hash_and_store_key():
    cfg = strategy(detectors=DETECTORS)
    assert cfg.config_hash == HASH_BEFORE and cfg.detectors.model_dump_json() == STORE_KEY_BEFORE
    assert cfg.detectors.book_params() is None
    assert strategy(detectors=SECTION).config_hash != HASH_BEFORE
    assert (
        strategy(detectors={**DETECTORS, "walls": {}}).config_hash
        == strategy(detectors={**DETECTORS, "walls": {"multiple": 5, "band_bps": 25, "window": "5m"}}).config_hash
    )
    p = strategy(detectors={**DETECTORS, "walls": {}}).detectors.book_params()
    assert (p.wall_multiple, p.wall_band_bps, p.wall_window_ms, p.iceberg_min_refills) == (5.0, 25.0, 300_000, None)
    assert p.sample_ms == 1_000 and "book_sample" not in cfg.detectors.model_dump()  # read by the book parts only
    for value, ms in ((0, 0), ("0s", 0), ("250ms", 250), ("2s", 2_000)):
        p = strategy(detectors={**DETECTORS, "icebergs": {}, "book_sample": value}).detectors.book_params()
        assert p.sample_ms == ms


@pytest.mark.parametrize(
    "part, match",
    [
        ({"walls": {"multiple": 1}}, "multiple"),
        ({"walls": {"window": "1500ms"}}, "walls.window"),
        ({"walls": {"band_bps": 0}}, "band_bps"),
        ({"icebergs": {"min_refills": 1}}, "min_refills"),
        ({"icebergs": {"window": 0}}, "icebergs.window"),
        ({"icebergs": {"refills": 3}}, "refills"),  # unknown key
        ({"walls": {}, "book_sample": -1}, "book_sample"),
        ({"walls": {}, "book_sample": False}, "book_sample"),
    ],
)
def test_bad_book_sections_are_refused_when_loaded(part, match):
    with pytest.raises(StrategyConfigError, match=match):
        strategy(detectors={**DETECTORS, **part})
