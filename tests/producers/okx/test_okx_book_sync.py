"""The OKX book's seqId/prevSeqId rules (producers/okx/book_sync.py), one documented case each.

Books are given as small hand-written levels; what is checked is what OKX's "Sequence ID" section
says must happen: updates chain by prevSeqId whatever the step, heartbeats change nothing, a sequence
reset is followed, a broken chain stops the book until a REST snapshot, and the REST snapshot is
spliced into the buffered updates (older dropped, the straddling one applied, a too-old snapshot
refused).
"""

from __future__ import annotations

from producers.base.book import DepthDiff, DepthSnapshot
from producers.okx.book_sync import OkxBookSync


def snapshot(seq, bids=((100.0, 1.0),), asks=((101.0, 1.0),)):
    return DepthDiff("BTCUSDT", seq, seq, None, seq, seq, 0, tuple(bids), tuple(asks))


def update(prev, seq, bids=(), asks=()):
    return DepthDiff("BTCUSDT", seq, seq, prev, seq, seq, 0, tuple(bids), tuple(asks))


def rest(seq, bids=((100.0, 1.0),), asks=((101.0, 1.0),)):
    return DepthSnapshot("BTCUSDT", seq, tuple(bids), tuple(asks), event_time=seq)


def test_documented_sequence_snapshot_update_heartbeat_reset_update():
    # OKX's own example: snapshot 10; update 10->15; no-change 15->15; reset 15->3; update 3->5
    book = OkxBookSync("BTCUSDT")
    assert book.on_diff(snapshot(10)).applied
    assert book.on_diff(update(10, 15, bids=[(100.5, 2.0)])).applied
    assert book.on_diff(update(15, 15)).applied == [] and book.heartbeats == 1
    assert book.on_diff(update(15, 3, asks=[(101.0, 0.0), (102.0, 4.0)])).applied
    assert book.on_diff(update(3, 5, bids=[(100.0, 0.0)])).applied
    assert book.is_live and book.sequence_resets == 1 and book.resyncs == 0
    assert book.top(5) == ([(100.5, 2.0)], [(102.0, 4.0)])


def test_a_repeated_update_is_dropped_and_a_broken_chain_waits_for_rest():
    book = OkxBookSync("BTCUSDT")
    book.on_diff(snapshot(10))
    book.on_diff(update(10, 14, bids=[(100.2, 1.0)]))
    assert book.on_diff(update(10, 14, bids=[(100.2, 9.0)])).applied == []  # the same push again
    result = book.on_diff(update(20, 25))  # 14..20 never arrived
    assert result.resync_reason == "prevSeqId=20 != last seqId=14"
    assert not book.is_live and book.needs_snapshot and book.top(5) == ([], [])
    assert book.on_diff(update(25, 30, bids=[(100.3, 1.0)])).applied == []  # buffered, not published


def test_rest_snapshot_is_spliced_into_the_buffered_updates():
    book = OkxBookSync("BTCUSDT")
    book.on_diff(snapshot(10))
    book.on_diff(update(40, 50))  # break: 10..40 lost
    for prev, seq, bid in ((50, 60, 100.1), (60, 70, 100.2), (70, 80, 100.3)):
        book.on_diff(update(prev, seq, bids=[(bid, 1.0)]))
    # REST book at seqId 65 (between two pushes): 50->60 is in it, 60->70 straddles it, 70->80 chains on
    result = book.on_rest_snapshot(rest(65, bids=[(100.1, 1.0), (100.0, 1.0)]))
    assert result.resync_reason is None and book.is_live and not book.needs_snapshot
    assert [(d.prev_final_update_id, d.final_update_id) for d in result.applied] == [(None, 65), (60, 70), (70, 80)]
    assert book.top(5)[0] == [(100.3, 1.0), (100.2, 1.0), (100.1, 1.0), (100.0, 1.0)]
    assert book.on_diff(update(80, 81, bids=[(100.4, 1.0)])).applied  # the chain goes on from the last update


def test_a_rest_snapshot_older_than_the_stream_is_refused_and_a_newer_one_accepted():
    book = OkxBookSync("BTCUSDT")
    book.on_diff(snapshot(10))
    book.on_diff(update(40, 50))
    book.on_diff(update(50, 60))
    old = book.on_rest_snapshot(rest(30))  # older than the first buffered update's prevSeqId
    assert old.resync_reason == "snapshot seqId=30 older than the next update's prevSeqId=40"
    assert book.needs_snapshot and not book.is_live
    book.on_diff(update(60, 70))
    newer = book.on_rest_snapshot(rest(45))  # every buffered update was kept for this one: 40->50 straddles it
    assert newer.resync_reason is None and book.is_live and book.last_update_id == 70
    assert [(d.prev_final_update_id, d.final_update_id) for d in newer.applied] == [
        (None, 45),
        (40, 50),
        (50, 60),
        (60, 70),
    ]


def test_a_new_connection_snapshot_replaces_everything_and_a_late_rest_answer_is_ignored():
    book = OkxBookSync("BTCUSDT")
    book.on_diff(snapshot(10))
    book.on_diff(update(12, 13))  # break
    assert book.on_diff(snapshot(99, bids=[(99.0, 3.0)])).applied and book.is_live
    assert book.on_rest_snapshot(rest(50)).applied == [] and book.top(1)[0] == [(99.0, 3.0)]
    book.invalidate()  # connection lost: not a resync, no REST needed, the next subscription brings a snapshot
    assert not book.is_live and not book.needs_snapshot and book.on_diff(update(99, 100)).applied == []


def test_a_crossed_book_is_a_break():
    book = OkxBookSync("BTCUSDT")
    book.on_diff(snapshot(10))
    assert book.on_diff(update(10, 11, bids=[(101.5, 1.0)])).resync_reason.startswith("crossed book")
    assert book.needs_snapshot
