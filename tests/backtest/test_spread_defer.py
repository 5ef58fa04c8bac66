"""The router's spread tracker counting deferred books (``SpreadTracker.defer``, the backtest's sparse
feed: touches or md.book records, compacted past its limit) leaves the same per-minute sums, float for float, as counting each book as it came (``add``), with
reads and direct adds between the deferred batches. Pure code, no broker."""

from __future__ import annotations

import random

from execution.routing import MINUTE_MS, SpreadTracker

T0 = 1_704_067_200_000
KEYS = ("binance:BTCUSDT", "binance:ETHUSDT")


def books(seed: int, n: int) -> list[tuple[str, int, float, float]]:
    """Books of two markets ~2 s apart over hours, with what ``add`` must skip: repeated and older event
    times, a zero bid, a gap of hours (minutes dropped at once)."""
    rng = random.Random(seed)
    t = {key: T0 for key in KEYS}
    out = []
    for _ in range(n):
        key = rng.choice(KEYS)
        step = rng.choice((2_000, 2_000, 1_000, 0, -3_000, 7_200_000 if rng.random() < 0.002 else 2_000))
        t[key] += step
        mid = 100.0 + rng.random()
        half = rng.choice((0.005, 0.01, 0.03))
        out.append((key, t[key], 0.0 if rng.random() < 0.01 else mid - half, mid + half))
    return out


def record(bid: float, ask: float) -> dict:
    return {"bids": [{"price": bid, "qty": 1.0}] if bid else [], "asks": [{"price": ask, "qty": 1.0}]}


def test_deferred_books_give_the_sums_of_books_counted_as_they_came():
    for seed in (1, 2, 3):
        given = books(seed, 20_000)
        eager, lazy = SpreadTracker(horizon_ms=3_600_000), SpreadTracker(horizon_ms=3_600_000)
        lazy.DEFER_LIMIT = 4_000  # compacted now and then (an hour of these books is ~2,400)
        rng = random.Random(seed)
        i = 0
        while i < len(given):
            n = rng.choice((1, 50, 3_000))
            batch = given[i : i + n]
            for book in batch:
                eager.add(*book)
            if rng.random() < 0.3:  # a book passed to the executor: counted at once, after the deferred
                lazy.add(*batch[0])
                lazy.defer(batch[1:])
            elif rng.random() < 0.5:
                lazy.defer(batch)
            else:  # as md.book records, read only if counted (an empty side: not counted)
                lazy.defer([(key, t, record(bid, ask), None) for key, t, bid, ask in batch])
            i += n
            if rng.random() < 0.2:  # a probe reads the mean between batches
                now = batch[-1][1]
                for key in KEYS:
                    assert lazy.mean(key, now, 3_600_000) == eager.mean(key, now, 3_600_000)
        assert lazy._minutes == eager._minutes and lazy._last == eager._last


def test_a_deferred_hour_keeps_only_the_minutes_the_newest_book_keeps():
    """By hand: books at minutes 0 (10 bps), 9 (30 bps), 10 (40 bps) and 70 (20 bps, two books): the
    horizon, 1 h before the newest book's minute (70) and the minute before it, drops minutes 0 and 9."""

    def book(minute: int, bps: float, second: int = 0) -> tuple[str, int, float, float]:
        half = bps / 2e4 * 100.0
        return KEYS[0], T0 + minute * MINUTE_MS + second * 1000, 100.0 - half, 100.0 + half

    tracker = SpreadTracker(horizon_ms=3_600_000)
    tracker.defer([book(0, 10), book(9, 30), book(10, 40), book(70, 20), book(70, 20, 5)])
    rows = [(row[0], round(row[1], 9), row[2]) for row in tracker._minutes[KEYS[0]]]
    assert rows == [(T0 + 10 * MINUTE_MS, 40.0, 1), (T0 + 70 * MINUTE_MS, 40.0, 2)]
    mean, count = tracker.mean(KEYS[0], T0 + 70 * MINUTE_MS + 5000, 3_600_000)  # minutes 10 and 70
    assert (round(mean, 9), count) == (round(80 / 3, 9), 3)
