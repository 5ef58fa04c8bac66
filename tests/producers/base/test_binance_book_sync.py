"""Order-book synchronisation against the real recording, and the state machine's edge cases."""

from __future__ import annotations

import orjson
import pytest

from fake_exchange.recording import load_recording
from producers.base.book import (
    DepthDiff,
    DepthSnapshot,
    OrderBookSync,
    order_book_imbalance,
)
from producers.binance.parse import parse_depth_diff, parse_depth_snapshot


def replay_books(recording_dir):
    """Replay frames in receive order, installing each REST snapshot when it was received."""
    rec = load_recording(recording_dir)
    snapshots = sorted((r for r in rec.rest.values() if r.path == "/fapi/v1/depth"), key=lambda r: r.receive_time)
    books = {s: OrderBookSync(s) for s in rec.symbols}
    after_u: dict[tuple[str, int], tuple[float, float]] = {}
    tickers: list[dict] = []
    pending = list(snapshots)
    for frame in rec.frames:
        while pending and pending[0].receive_time <= frame.receive_time:
            r = pending.pop(0)
            sym = dict(r.params)["symbol"]
            res = books[sym].on_snapshot(parse_depth_snapshot(orjson.loads(r.body), sym, int(r.receive_time * 1000)))
            assert res.resync_reason is None, res.resync_reason
            for d in res.applied:
                after_u[(sym, d.final_update_id)] = None  # filled below from live state when it was applied
        payload = frame.payload
        if frame.event == "depthUpdate":
            book = books[payload["s"]]
            res = book.on_diff(parse_depth_diff(payload, int(frame.receive_time * 1000)))
            assert res.resync_reason is None, res.resync_reason
            if res.applied:
                after_u[(payload["s"], book.last_update_id)] = (book.best_bid()[0], book.best_ask()[0])
        elif frame.event == "bookTicker":
            tickers.append(payload)
    return books, after_u, tickers


def test_recorded_book_matches_every_comparable_book_ticker(recording_dir):
    books, after_u, tickers = replay_books(recording_dir)
    compared = 0
    for t in tickers:
        state = after_u.get((t["s"], t["u"]))
        if state is None:
            continue
        assert state == (float(t["b"]), float(t["a"])), t
        compared += 1
    assert compared == 50  # the recording's README: 50 exactly comparable (bookTicker, diff) pairs
    assert all(b.is_live and b.resyncs == 0 for b in books.values())


def _diff(U, u, pu, bids=(), asks=()):
    return DepthDiff("BTCUSDT", U, u, pu, 0, 0, 0, tuple(bids), tuple(asks))


def _snap(last):
    return DepthSnapshot("BTCUSDT", last, ((100.0, 1.0), (99.0, 2.0)), ((101.0, 1.0), (102.0, 3.0)))


def test_buffered_diffs_older_than_snapshot_are_dropped_and_first_must_straddle():
    book = OrderBookSync("BTCUSDT")
    assert book.needs_snapshot
    book.on_diff(_diff(1, 5, 0, bids=[(100.0, 9.0)]))  # u < L: dropped
    book.on_diff(_diff(6, 12, 5, bids=[(100.0, 7.0)]))  # straddles L=10
    res = book.on_snapshot(_snap(10))
    assert [d.final_update_id for d in res.applied] == [12]
    assert book.is_live and book.best_bid() == (100.0, 7.0)
    res = book.on_diff(_diff(13, 15, 12, asks=[(101.0, 0.0)]))  # removes the best ask
    assert res.applied and book.best_ask() == (102.0, 3.0)


def test_snapshot_older_than_stream_forces_resync():
    book = OrderBookSync("BTCUSDT")
    book.on_diff(_diff(20, 25, 19))
    res = book.on_snapshot(_snap(10))  # events 11..19 are missing
    assert res.resync_reason and "older than first diff" in res.resync_reason
    assert book.needs_snapshot and not book.is_live


def test_broken_pu_chain_forces_resync_and_nothing_is_published_until_resynced():
    book = OrderBookSync("BTCUSDT")
    book.on_snapshot(_snap(10))
    assert book.on_diff(_diff(9, 11, 8)).applied
    res = book.on_diff(_diff(14, 16, 13))  # pu 13 != 11: a diff was lost
    assert res.resync_reason and not res.applied and book.needs_snapshot
    assert book.on_diff(_diff(17, 18, 16)).applied == []  # buffered, not published
    res = book.on_snapshot(_snap(16))
    # the diff that broke the chain (U=14, u=16) straddles L=16, so Binance's rule applies it first
    # (levels are absolute quantities, so re-applying what the snapshot already holds is harmless)
    assert [d.final_update_id for d in res.applied] == [16, 18] and book.is_live


def test_duplicate_diff_after_reconnect_is_ignored():
    book = OrderBookSync("BTCUSDT")
    book.on_snapshot(_snap(10))
    book.on_diff(_diff(9, 11, 8))
    assert book.on_diff(_diff(9, 11, 8)).applied == []
    assert book.is_live


def test_crossed_book_is_never_published():
    book = OrderBookSync("BTCUSDT")
    book.on_snapshot(_snap(10))
    res = book.on_diff(_diff(9, 11, 8, bids=[(101.5, 1.0)]))  # bid above best ask 101
    assert res.resync_reason and "crossed" in res.resync_reason and not res.applied


def test_top_levels_and_obi():
    book = OrderBookSync("BTCUSDT")
    book.on_snapshot(_snap(10))
    bids, asks = book.top(20)
    assert bids == [(100.0, 1.0), (99.0, 2.0)] and asks == [(101.0, 1.0), (102.0, 3.0)]
    # (3 − 4) / (3 + 4), by hand
    assert order_book_imbalance(bids, asks) == pytest.approx(-1 / 7)
    assert order_book_imbalance([], []) == 0.0
