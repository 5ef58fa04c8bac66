"""The watchlist's event-time merge across partitions: released in (time, topic, partition, offset)
order up to the watermark whatever the read interleaving, and positions that name exactly the input
not yet released."""

from __future__ import annotations

import random

from stream_apps.watchlist.merge import PartitionMerge

A, B, M = ("md.book", 0), ("md.book", 3), ("md.mark", 1)


def _read(merge: PartitionMerge, order: list[tuple[tuple[str, int], int, int]]) -> list:
    out = []
    for tp, offset, time_ms in order:
        merge.add(tp, offset, time_ms, f"{tp[0]}[{tp[1]}]@{offset}")
        out += merge.release()
    return out


def test_a_partition_not_at_its_end_holds_the_others_back_then_the_merge_is_in_time_order():
    merge = PartitionMerge()
    merge.assign({A: 0, B: 0})
    merge.add(A, 0, 100, "a0")
    merge.add(A, 1, 300, "a1")
    assert merge.release() == []  # nothing read from B yet: it may still hold older input
    merge.add(B, 0, 200, "b0")
    assert [r[3] for r in merge.release()] == ["a0"]  # before 200: B may deliver more at 200
    assert merge.positions() == {A: 1, B: 0}
    merge.at_end(B)
    assert [r[3] for r in merge.release()] == ["b0"]  # before 300: A is not at its end
    merge.at_end(A)
    assert [r[3] for r in merge.release()] == ["a1"]
    assert merge.positions() == {A: 2, B: 1} and merge.held() == 0


def test_lateness_holds_the_newest_inputs_even_when_every_partition_is_at_its_end():
    merge = PartitionMerge(lateness_ms=1_000)
    merge.assign({A: 10, B: None})
    merge.add(A, 10, 5_000, "a")
    merge.add(B, 7, 5_500, "b")
    merge.add(B, 8, None)  # a record without input (another indicator): only the position moves
    merge.at_end(A)
    merge.at_end(B)
    assert merge.release() == []
    assert merge.positions() == {A: 10, B: 7}
    merge.add(A, 11, 6_600, "a2")
    merge.at_end(A)
    assert [r[3] for r in merge.release()] == ["a", "b"]
    assert merge.positions() == {A: 11, B: 9}
    assert [r[3] for r in merge.release(force=True)] == []  # force ignores partitions behind, not lateness


def test_the_released_sequence_does_not_depend_on_how_the_reads_interleave():
    records = [
        (tp, off, t)
        for tp, times in ((A, [100, 250, 250, 900]), (B, [90, 250, 700]), (M, [95, 600]))
        for off, t in enumerate(times)
    ]
    expected = None
    rng = random.Random(7)
    for _ in range(50):
        queues = {tp: [r for r in records if r[0] == tp] for tp in (A, B, M)}
        order = []
        while any(queues.values()):
            tp = rng.choice([tp for tp, q in queues.items() if q])
            order.append(queues[tp].pop(0))
        merge = PartitionMerge()
        merge.assign({A: 0, B: 0, M: 0})
        got = _read(merge, order)
        for tp in (A, B, M):
            merge.at_end(tp)
        got += merge.release()
        assert [r[0] for r in got] == sorted(r[0] for r in got)
        expected = expected or got
        assert got == expected
    assert len(expected) == len(records)


def test_revoked_partitions_are_forgotten():
    merge = PartitionMerge()
    merge.assign({A: 0, B: 0})
    merge.add(A, 0, 100, "a")
    merge.revoke([B])
    merge.at_end(A)
    assert merge.partitions() == [A]
    assert [r[3] for r in merge.release()] == ["a"]


def test_inputs_far_ahead_of_the_newest_book_are_dropped_and_counted():
    from stream_apps.cross_venue.events import BookEvent, SpotEvent
    from stream_apps.watchlist.merge import AheadOfBooks

    ahead = AheadOfBooks(60_000)
    spot = SpotEvent("binance", "BTCUSDT", 0, 100.0)
    assert ahead.keep(10**12, spot)  # no book yet: nothing to be ahead of
    assert ahead.keep(1_000, BookEvent("binance", "BTCUSDT", 1_000, (), ()))
    assert ahead.keep(61_000, spot) and not ahead.keep(61_001, spot) and ahead.dropped == 1
    assert ahead.keep(500, BookEvent("okx", "BTC-USDT-SWAP", 500, (), ())) and ahead.newest_book == 1_000
