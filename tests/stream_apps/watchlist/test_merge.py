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


# --- the lateness cap follows the books: an input far ahead of them does not lift it -------------------
BINANCE_BOOKS, OKX_BOOKS, FAR, NEAR = ("md.book", 0), ("md.book", 3), ("md.indicators", 1), ("md.indicators", 5)
WALL_CLOCK = 1_800_000_000_000  # a replayed session's indicators carry the wall clock, years after the books


def _book(venue: str, time_ms: int):
    from stream_apps.cross_venue.events import BookEvent

    return BookEvent(venue, "BTCUSDT", time_ms, ((100.0, 1.0),), ((100.1, 1.0),))


def _spot(time_ms: int):
    from stream_apps.cross_venue.events import SpotEvent

    return SpotEvent("okx", "BTCUSDT", time_ms, 100.05)


def _fed(merge: PartitionMerge, ahead, released) -> list:
    """What the service feeds the state from `released` (``WatchlistService._inputs``)."""
    return [(t, tp, off, e) for t, tp, off, e in released if ahead.keep(t, e)]


def _backtest_order(records) -> list:
    """The events the backtest over the same topics (``read_broker``) feeds: sorted by (time, topic,
    partition, offset), far-ahead inputs dropped, by the backtest's own function."""
    from backtest.watchlist.sources import _in_service_order
    from stream_apps.watchlist.merge import MAX_AHEAD_MS

    return _in_service_order([(t, tp[0], tp[1], off, e) for tp, off, t, e in records], MAX_AHEAD_MS)


def _events(fed) -> list:
    return [event for *_, event in fed]


def test_a_far_ahead_indicator_leaves_the_cap_on_the_books_a_venue_fetched_late_is_not_late():
    """Both venues read to their end with a wall-clock indicator among the inputs; then binance's next
    book is fetched before okx's older one, whose partition is still flagged at its end (stale). The cap
    from the books (newest book 4100 - lateness 1000) holds binance's 4100 back until okx's 3700 is in:
    with the indicator's time as the newest (the old rule) 4100 went out first and 3700 came late."""
    from stream_apps.watchlist.merge import AheadOfBooks

    merge, ahead = PartitionMerge(lateness_ms=1_000), AheadOfBooks(60_000)
    merge.assign({BINANCE_BOOKS: 0, OKX_BOOKS: 0, FAR: 0})
    records = [
        (BINANCE_BOOKS, 0, 1_100, _book("binance", 1_100)),
        (OKX_BOOKS, 0, 1_200, _book("okx", 1_200)),
        (FAR, 0, WALL_CLOCK, _spot(WALL_CLOCK)),
        (BINANCE_BOOKS, 1, 3_100, _book("binance", 3_100)),
        (OKX_BOOKS, 1, 3_200, _book("okx", 3_200)),
    ]
    fed = []
    for tp, offset, time_ms, event in records:
        merge.add(tp, offset, time_ms, event)
    for tp in (BINANCE_BOOKS, OKX_BOOKS, FAR):
        merge.at_end(tp)
    fed += _fed(merge, ahead, merge.release())
    # up to 3200 - 1000; the indicator goes by the end-of-partition rule (all at their end) and is dropped
    assert [(t, tp) for t, tp, _, _ in fed] == [(1_100, BINANCE_BOOKS), (1_200, OKX_BOOKS)]
    assert ahead.dropped == 1 and merge.positions()[FAR] == 1  # its partition is not held behind it
    later = [(BINANCE_BOOKS, 2, 4_100, _book("binance", 4_100)), (OKX_BOOKS, 2, 3_700, _book("okx", 3_700))]
    merge.add(*later[0][:3], later[0][3])
    merge.at_end(BINANCE_BOOKS)  # okx's partition still says "at its end": its 3700 is not fetched yet
    fed += _fed(merge, ahead, merge.release())
    assert [t for t, *_ in fed] == [1_100, 1_200, 3_100]  # up to 4100 - 1000: okx's 3200 waits too
    merge.add(*later[1][:3], later[1][3])
    merge.at_end(OKX_BOOKS)
    fed += _fed(merge, ahead, merge.release(force=True))  # force ignores partitions, never lateness
    assert [t for t, *_ in fed] == [1_100, 1_200, 3_100]
    merge.add(BINANCE_BOOKS, 3, 5_100, _book("binance", 5_100))
    merge.at_end(BINANCE_BOOKS)
    fed += _fed(merge, ahead, merge.release())
    assert _events(fed) == _backtest_order(records + later)  # the far-ahead indicator dropped in both
    assert [e.time_ms for e in _events(fed)] == [1_100, 1_200, 3_100, 3_200, 3_700, 4_100]


def test_before_any_book_the_cap_follows_every_input_and_nothing_is_ahead_until_a_book_went_out():
    merge = PartitionMerge(lateness_ms=500, max_ahead_ms=1_000)
    merge.assign({NEAR: 0, FAR: 0, OKX_BOOKS: 0})
    merge.add(NEAR, 0, 1_000, _spot(1_000))
    merge.add(FAR, 0, 9_000, _spot(9_000))
    for tp in (NEAR, FAR, OKX_BOOKS):
        merge.at_end(tp)
    assert merge.newest_book() is None and merge.watermark() == 8_500
    assert [t for t, *_ in merge.release()] == [1_000]  # 9000 waits for lateness like any input
    merge.add(OKX_BOOKS, 0, 2_000, _book("okx", 2_000))
    merge.at_end(OKX_BOOKS)
    # the books' clock now: 2000 - 500; 9000 is far ahead of it, but no book has gone out yet, and
    # ``AheadOfBooks`` keeps everything until one has: it waits
    assert merge.watermark() == 1_500 and merge.release() == []
    merge.add(OKX_BOOKS, 1, 3_000, _book("okx", 3_000))
    merge.at_end(OKX_BOOKS)
    assert [t for t, *_ in merge.release()] == [2_000, 9_000]  # 9000 > 3000 + 1000: the ends let it go
    assert merge.released_book == 2_000 and merge.positions() == {NEAR: 1, FAR: 1, OKX_BOOKS: 1}
    # restarted from a checkpoint whose state was fed books up to 2000: the cap follows them at once
    restarted = PartitionMerge(lateness_ms=500, max_ahead_ms=1_000, released_book=2_000)
    restarted.assign({NEAR: 1, FAR: 1, OKX_BOOKS: 2})
    restarted.add(NEAR, 1, 2_600, _spot(2_600))
    restarted.add(FAR, 1, 9_500, _spot(9_500))
    for tp in (NEAR, FAR, OKX_BOOKS):
        restarted.at_end(tp)
    assert [t for t, *_ in restarted.release()] == [9_500]  # 2600 waits for a book past 3100


def test_a_live_stream_fetched_in_any_order_feeds_the_state_what_the_backtest_feeds_it():
    """Books of two venues reach the broker up to 600 ms after their event time (okx) or at once
    (binance), a near indicator at its receive time, a replay's wall-clock indicator in another
    partition; every 300 ms what arrived is appended, and the consumer reads the partitions in a
    random order and chunks, releasing after each read. Whatever the order, what the state is fed is
    a prefix of the backtest's sequence over all the records (lateness 1000 > 600 + 300)."""
    from stream_apps.cross_venue.events import BookEvent
    from stream_apps.watchlist.merge import AheadOfBooks

    rng = random.Random(11)
    arrivals, okx_at = [], 0  # (arrival, tp, time, event); a venue's books reach the broker in order
    for k in range(60):
        t = 1_000 + k * 250
        okx_at = max(okx_at, t + 30 + rng.randrange(570))
        arrivals.append((t, BINANCE_BOOKS, t, _book("binance", t)))
        arrivals.append((okx_at, OKX_BOOKS, t + 30, _book("okx", t + 30)))
        if k % 4 == 0:
            arrivals.append((t + 10, NEAR, t + 10, _spot(t + 10)))
            arrivals.append((t + 10, FAR, WALL_CLOCK + t, _spot(WALL_CLOCK + t)))
    for trial in range(30):
        merge, ahead = PartitionMerge(lateness_ms=1_000), AheadOfBooks(60_000)
        parts = {tp: [] for tp in (BINANCE_BOOKS, OKX_BOOKS, NEAR, FAR)}
        read = dict.fromkeys(parts, 0)
        merge.assign(dict.fromkeys(parts, 0))
        fed, records = [], []
        for now in range(1_000, 17_000, 300):
            for arrival, tp, t, event in sorted(arrivals, key=lambda a: a[0]):
                if now - 300 < arrival <= now:
                    records.append((tp, len(parts[tp]), t, event))
                    parts[tp].append((t, event))
            for tp in rng.sample(list(parts), len(parts)):  # every partition to its end, in any order
                while True:
                    for _ in range(rng.randint(1, 3)):
                        if read[tp] < len(parts[tp]):
                            merge.add(tp, read[tp], *parts[tp][read[tp]])
                            read[tp] += 1
                    if read[tp] == len(parts[tp]):
                        merge.at_end(tp)  # the partition EOF (stale once more arrives)
                    fed += _fed(merge, ahead, merge.release())
                    if read[tp] == len(parts[tp]):
                        break
        want, got = _backtest_order(records), _events(fed)
        assert got == want[: len(got)], trial
        assert got[-1].time_ms >= max(e.time_ms for e in want if isinstance(e, BookEvent)) - 1_300  # none stuck
        assert ahead.dropped == len([r for r in records if r[0] == FAR])
