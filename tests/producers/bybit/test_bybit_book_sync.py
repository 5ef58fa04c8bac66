"""Bybit order-book rules: snapshot resets, `u` chaining, u=1 restarts, breaks, crossed books never published."""

from __future__ import annotations

import pytest

from producers.base.book import DepthDiff, DepthSnapshot, order_book_imbalance
from producers.bybit.book_sync import BybitBookSync


def snapshot(u, bids=((100.0, 1.0), (99.0, 2.0)), asks=((101.0, 1.5), (102.0, 3.0)), ts=1000):
    return DepthDiff("BTCUSDT", u, u, None, ts, ts, ts + 5, tuple(bids), tuple(asks))


def delta(u, bids=(), asks=(), ts=2000):
    return DepthDiff("BTCUSDT", u, u, u - 1, ts, ts, ts + 5, tuple(bids), tuple(asks))


def live_book(u=500) -> BybitBookSync:
    book = BybitBookSync("BTCUSDT")
    assert book.needs_snapshot and not book.is_live
    result = book.on_diff(snapshot(u))
    assert result.resync_reason is None and book.is_live
    return book


def test_snapshot_makes_the_book_live_and_is_emitted_as_a_full_book():
    book = BybitBookSync("BTCUSDT")
    result = book.on_diff(snapshot(500))
    assert [d.prev_final_update_id for d in result.applied] == [None]
    assert book.best_bid() == (100.0, 1.0) and book.best_ask() == (101.0, 1.5)
    assert book.last_update_id == 500 and book.last_event_time == 1000 and not book.needs_snapshot


def test_deltas_before_any_snapshot_are_dropped():
    book = BybitBookSync("BTCUSDT")
    assert book.on_diff(delta(7, bids=[(100.0, 5.0)])).applied == []
    assert not book.is_live and book.bids == {}


def test_chained_deltas_apply_and_size_zero_deletes():
    book = live_book(500)
    r1 = book.on_diff(delta(501, bids=[(100.0, 0.0), (99.5, 4.0)]))
    r2 = book.on_diff(delta(502, asks=[(101.0, 0.5), (103.0, 1.0)]))
    assert [d.final_update_id for d in r1.applied + r2.applied] == [501, 502]
    assert [d.prev_final_update_id for d in r1.applied + r2.applied] == [500, 501]
    assert book.bids == {99.5: 4.0, 99.0: 2.0}
    assert book.asks == {101.0: 0.5, 102.0: 3.0, 103.0: 1.0}
    bids, asks = book.top(2)
    assert bids == [(99.5, 4.0), (99.0, 2.0)] and asks == [(101.0, 0.5), (102.0, 3.0)]
    # OBI by hand over these two levels: (6.0 - 3.5) / (6.0 + 3.5)
    assert order_book_imbalance(bids, asks, 10) == pytest.approx(2.5 / 9.5)


def test_gap_breaks_the_book_until_the_next_snapshot():
    book = live_book(500)
    result = book.on_diff(delta(502, bids=[(99.9, 1.0)]))  # 501 was lost
    assert result.applied == [] and result.resync_reason.startswith("gap")
    assert not book.is_live and book.needs_snapshot and book.bids == {} and book.resyncs == 1
    # deltas that arrive before the new snapshot are never applied, even ones that look chained
    assert book.on_diff(delta(503, bids=[(99.9, 1.0)])).applied == []
    result = book.on_diff(snapshot(510, bids=[(98.0, 1.0)], asks=[(99.0, 1.0)]))
    assert [d.final_update_id for d in result.applied] == [510] and book.is_live
    assert book.bids == {98.0: 1.0} and book.asks == {99.0: 1.0}
    assert book.on_diff(delta(511, asks=[(99.5, 2.0)])).applied[0].final_update_id == 511


def test_duplicate_and_old_deltas_are_ignored():
    book = live_book(500)
    book.on_diff(delta(501, bids=[(99.5, 4.0)]))
    assert book.on_diff(delta(501, bids=[(99.5, 9.0)])).applied == []
    assert book.on_diff(delta(480)).applied == []
    assert book.bids[99.5] == 4.0 and book.is_live and book.resyncs == 0


def test_u_equal_one_is_a_restart_snapshot_even_when_typed_delta():
    book = live_book(500)
    book.on_diff(delta(501, bids=[(99.5, 4.0)]))
    restart = DepthDiff("BTCUSDT", 1, 1, 0, 3000, 3000, 3005, ((50.0, 1.0),), ((51.0, 2.0),))
    result = book.on_diff(restart)
    # the whole book is replaced, and what is emitted is a full book (prev None), not a delta of 0
    assert [(d.final_update_id, d.prev_final_update_id) for d in result.applied] == [(1, None)]
    assert result.resync_reason is None and book.restarts == 1 and book.resyncs == 0
    assert book.bids == {50.0: 1.0} and book.asks == {51.0: 2.0}
    assert book.on_diff(delta(2, bids=[(50.5, 1.0)])).applied[0].final_update_id == 2


def test_crossed_delta_breaks_and_is_not_emitted():
    book = live_book(500)
    result = book.on_diff(delta(501, bids=[(101.5, 1.0)]))  # bid above the best ask 101.0
    assert result.applied == [] and result.resync_reason.startswith("crossed")
    assert not book.is_live and book.bids == {} and book.asks == {}


def test_crossed_snapshot_is_never_emitted():
    book = BybitBookSync("BTCUSDT")
    result = book.on_diff(snapshot(9, bids=[(101.0, 1.0)], asks=[(100.0, 1.0)]))
    assert result.applied == [] and result.resync_reason.startswith("crossed") and book.needs_snapshot


def test_invalidate_stops_vouching_without_counting_a_resync():
    book = live_book(500)
    book.invalidate()
    assert not book.is_live and book.needs_snapshot and book.resyncs == 0 and book.top(5) == ([], [])
    assert book.on_diff(delta(501)).applied == []


def test_rest_snapshot_installs_like_a_websocket_snapshot():
    book = BybitBookSync("BTCUSDT")
    result = book.on_snapshot(DepthSnapshot("BTCUSDT", 42, ((10.0, 1.0),), ((11.0, 1.0),), 7, 8))
    assert [(d.final_update_id, d.prev_final_update_id) for d in result.applied] == [(42, None)]
    assert book.is_live and book.on_diff(delta(43, bids=[(10.5, 1.0)])).applied
