"""Cross-venue feature cost per book update at 20 coins x 3 venues.

The rate it must sustain: each venue publishes ``md.book`` per symbol every ``book_interval_ms``
(250 ms by default in every producer: 4 books/s, 20 coins x 3 venues = 240 updates/s); with
``book_interval_ms=0`` a book follows every verified diff, which is Binance's ``depth@100ms``
(10/s per symbol, 200/s for 20 coins) and about the same on Bybit and OKX: ~600 updates/s. The
ratio is taken to that upper rate, 600/s.

What is timed: ``CrossVenueState.feed`` of md.book records (20 levels a side, converted with
``book_event_from_record``, as the stream app will), md.mark-like funding events (1/s per leg, as
Binance's markPrice@1s), a spot price every 300 s per Binance leg, and every evaluation those
complete: every coin each second (default parameters: 6 ordered pairs, top and swept spread, 3-min
slope, 1 h and 12 h windows). The generated records are made outside the timed part, one second
of event time at a time. Cost per update = all of that / book updates. Reading the levels and the
two sweeps are also timed alone, in Python and as a numba kernel (which needs numpy arrays built
from the record): the only numeric loop, so the only place numba could pay.

With ``--strategy FILE`` (a watchlist strategy) the same events also go through the live watchlist
trader (``execution.watchlist_trader``: its own feature state swept for the strategy's notional, the
decisions and the hedged pair model per coin), timed apart: what the watchlist service adds per
strategy it trades.

Run: ``.venv/bin/python -m benchmarks.bench_cross_venue [--minutes 15] [--coins 20] [--strategy FILE]``.
The clock is read only here.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np
import psutil

from stream_apps.cross_venue.events import FundingEvent, SpotEvent, book_event_from_record
from stream_apps.cross_venue.state import CrossVenueParams, CrossVenueState
from stream_apps.cross_venue.sweep import BUY, SELL, level_pairs, sweep

LIVE_RATE = 600.0  # updates/s: 20 coins x 3 venues at depth@100ms (see the docstring)
DEFAULT_RATE = 240.0  # updates/s at the producers' default book_interval_ms=250
START = 1_764_000_000_000
VENUES = (("binance", "{c}USDT"), ("bybit", "{c}USDT"), ("okx", "{c}-USDT-SWAP"))
HOUR = 3_600_000


def coins(n: int) -> list[str]:
    return [f"C{k:02d}" for k in range(n)]


class Market:
    """A deterministic random walk per coin, each venue a small offset from it."""

    def __init__(self, n_coins: int, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.coins = coins(n_coins)
        self.mid = {c: 10.0 * (k + 1) for k, c in enumerate(self.coins)}
        self.offset = {(c, v): self.rng.gauss(0, 3e-4) for c in self.coins for v, _ in VENUES}

    def book(self, coin: str, venue: str, pattern: str, t: int) -> dict:
        rng = self.rng
        m = self.mid[coin] * math.exp(self.offset[(coin, venue)] + rng.gauss(0, 1e-4))
        tick = m * 1e-5
        bid0, ask0 = m - tick * rng.randint(1, 3), m + tick * rng.randint(1, 3)
        # ~20 levels of 500-5,000 USD: a 10,000 USD sweep walks a few of them
        return {
            "exchange": venue,
            "symbol": pattern.format(c=coin),
            "last_update_id": t,
            "event_time": t,
            "receive_time": t + 5,
            "bids": [{"price": bid0 - k * tick, "qty": rng.uniform(500, 5_000) / m} for k in range(20)],
            "asks": [{"price": ask0 + k * tick, "qty": rng.uniform(500, 5_000) / m} for k in range(20)],
            "obi_10": 0.0,
        }

    def second(self, t0: int, per_leg: int) -> list:
        """One second of events: `per_leg` books per leg at jittered times, one funding per leg."""
        out = []
        for c in self.coins:
            self.mid[c] *= math.exp(self.rng.gauss(0, 2e-4))
            for venue, pattern in VENUES:
                for k in range(per_leg):
                    t = t0 + k * 1_000 // per_leg + self.rng.randrange(1_000 // per_leg)
                    out.append((t, 0, self.book(c, venue, pattern, t)))
                symbol = pattern.format(c=c)
                out.append(
                    (
                        t0 + self.rng.randrange(1_000),
                        1,
                        FundingEvent(venue, symbol, 0, 1e-4, (t0 // (8 * HOUR) + 1) * 8 * HOUR, 8 * HOUR),
                    )
                )
                if venue == "binance" and (t0 // 1_000) % 300 == 0:
                    out.append((t0, 2, SpotEvent(venue, symbol, t0, self.mid[c])))
        out.sort(key=lambda x: (x[0], x[1]))
        return out


def run(n_coins: int, minutes: int, per_leg: int, trader=None) -> dict:
    market = Market(n_coins)
    state = CrossVenueState(CrossVenueParams())
    traded = 0.0
    records = 0
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    books = others = evaluations = 0
    timed = 0.0
    for s in range(minutes * 60):
        t0 = START + s * 1_000
        second = market.second(t0, per_leg)
        started = time.perf_counter()
        events = []
        for t, kind, item in second:
            if kind == 0:
                events.append(book_event_from_record(item))
            elif kind == 1:
                events.append(
                    FundingEvent(
                        item.exchange, item.symbol, t, item.funding_rate, item.next_funding_time_ms, item.interval_ms
                    )
                )
            else:
                events.append(item)
        evaluations += len(state.feed(events))
        timed += time.perf_counter() - started
        if trader is not None:
            started = time.perf_counter()
            trader.feed(events)
            records += len(trader.take())
            traded += time.perf_counter() - started
        books += sum(1 for _, kind, _ in second if kind == 0)
        others += sum(1 for _, kind, _ in second if kind != 0)
    rss = proc.memory_info().rss
    assert state.counters["late"] == 0 and state.counters["stale"] == 0, state.counters
    return {
        "books": books,
        "others": others,
        "evaluations": evaluations,
        "seconds": timed,
        "rss_growth_mib": (rss - rss0) / 2**20,
        "trader_seconds": traded,
        "trader_records": records,
    }


def _numba_sweep():
    import numba  # only here: the core does not use it

    @numba.njit
    def walk(prices, qtys, notional):
        filled = qty = 0.0
        for i in range(len(prices)):
            level = prices[i] * qtys[i]
            if filled + level >= notional:
                return notional / (qty + (notional - filled) / prices[i])
            filled += level
            qty += qtys[i]
        return np.nan

    walk(np.ones(2), np.ones(2), 1.0)  # compile outside the timing
    return walk


def sweep_cost(n: int = 20_000) -> tuple[float, float]:
    """µs per update for reading both sides of a record and sweeping them: the Python walk on tuples
    (what the core does) and a numba kernel on numpy arrays (what compiling it would need)."""
    market = Market(1)
    records = [market.book("C00", "binance", "{c}USDT", k) for k in range(200)]
    started = time.perf_counter()
    for k in range(n):
        r = records[k % len(records)]
        sweep(level_pairs(r["bids"]), 10_000.0, SELL)
        sweep(level_pairs(r["asks"]), 10_000.0, BUY)
    python = (time.perf_counter() - started) / n * 1e6
    walk = _numba_sweep()
    started = time.perf_counter()
    for k in range(n):
        r = records[k % len(records)]
        bids, asks = np.array(level_pairs(r["bids"])), np.array(level_pairs(r["asks"]))
        walk(bids[:, 0], bids[:, 1], 10_000.0)
        walk(asks[:, 0], asks[:, 1], 10_000.0)
    compiled = (time.perf_counter() - started) / n * 1e6
    return python, compiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coins", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=15, help="event time simulated")
    parser.add_argument("--books-per-second", type=int, default=10, help="per coin and venue (10 = depth@100ms)")
    parser.add_argument("--strategy", help="a watchlist strategy file: also time its live trader on the same events")
    args = parser.parse_args()
    trader = None
    if args.strategy:
        from execution.watchlist_trader import WatchlistTrader
        from stream_apps.watchlist.strategy import load_watchlist_strategy

        trader = WatchlistTrader(load_watchlist_strategy(args.strategy))
    r = run(args.coins, args.minutes, args.books_per_second, trader)
    per_update_us = r["seconds"] / r["books"] * 1e6
    rate = r["books"] / r["seconds"]
    print(f"{args.coins} coins x 3 venues, {args.minutes} min of event time, {args.books_per_second} books/s per leg")
    print(f"  book updates {r['books']:,}, funding/spot events {r['others']:,}, coin evaluations {r['evaluations']:,}")
    print(f"  time in feed (conversion + state + evaluations): {r['seconds']:.2f} s")
    print(f"  {rate:,.0f} book updates/s, {per_update_us:.1f} us per update (everything included)")
    print(
        f"  ratio to the live rate {LIVE_RATE:.0f}/s (depth@100ms): {rate / LIVE_RATE:.1f}x; "
        f"to {DEFAULT_RATE:.0f}/s (book_interval_ms=250): {rate / DEFAULT_RATE:.1f}x"
    )
    print(f"  one core busy at the live rate: {LIVE_RATE / rate * 100:.1f} %")
    print(f"  RSS growth over the run: {r['rss_growth_mib']:.1f} MiB")
    if trader is not None:
        both = r["seconds"] + r["trader_seconds"]
        print(
            f"  the trader of {trader.name}: {r['trader_seconds']:.2f} s, "
            f"{r['trader_seconds'] / r['books'] * 1e6:.1f} us per update ({r['trader_records']:,} records: "
            f"{dict(trader.counters)}); features + trader {r['books'] / both:,.0f} updates/s, "
            f"{r['books'] / both / LIVE_RATE:.1f}x the live rate"
        )
    python, compiled = sweep_cost()
    print(
        f"  levels read + both sweeps alone (20 levels, 10,000 USD): {python:.2f} us per update in Python, "
        f"{compiled:.2f} us with numba (arrays built from the record)"
    )


if __name__ == "__main__":
    main()
