"""A generated multi-venue session for the watchlist backtest and the model fit (``--source
synthetic[:SEED]``): the same coins on two or three venues, time-ordered books, funding and spot, in
the cross-venue state's input types (``stream_apps.cross_venue.events``).

Shape: one mid per coin (a random walk); each venue quotes it with its own offset, an AR(1) process
(half-life ``half_life_s``) that now and then jumps (``jump_per_hour`` per venue, ±``jump_bp``), so
spreads open and converge again, which is what the watchlist trades. Books every 0.4-0.8 s per leg,
five levels a side of 2-12 k USD each (a 10 k USD sweep takes one to three levels), a touch half-spread
of 0.5 bp; funding per venue every minute with settlements on the venue's interval (8 h; OKX 4 h),
rates that differ by venue; the Binance spot price every 5 minutes. OKX symbols are ``BTC-USDT-SWAP``.

Deterministic: the same seed and arguments give the same session (one random stream per coin and
venue, so adding a coin does not change the others).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from stream_apps.cross_venue.events import BookEvent, CrossVenueEvent, FundingEvent, SpotEvent

HOUR_MS = 3_600_000
START_MS = 1_704_092_400_000  # 2024-01-01 07:00 UTC: an 8 h funding settlement (08:00) an hour in
MIDS = {"BTC": 42_000.0, "ETH": 2_300.0, "SOL": 100.0, "XRP": 0.6}
SYMBOLS = {"binance": "{c}USDT", "bybit": "{c}USDT", "okx": "{c}-USDT-SWAP"}
INTERVALS = {"binance": 8 * HOUR_MS, "bybit": 8 * HOUR_MS, "okx": 4 * HOUR_MS}
_BID_STEPS = tuple(1 - 0.5e-4 - k * 0.3e-4 for k in range(5))  # touch half-spread 0.5 bp, 0.3 bp a level
_ASK_STEPS = tuple(1 + 0.5e-4 + k * 0.3e-4 for k in range(5))


def _rng(seed: int, *parts: str) -> np.random.Generator:
    digest = hashlib.blake2b(":".join([str(seed), *parts]).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def symbol_of(venue: str, coin: str) -> str:
    return SYMBOLS[venue].format(c=coin)


def session(
    seed: int = 1,
    minutes: float = 60.0,
    coins: tuple[str, ...] = ("BTC", "ETH"),
    venues: tuple[str, ...] = ("binance", "bybit", "okx"),
    start_ms: int = START_MS,
    half_life_s: float = 240.0,
    jump_per_hour: float = 3.0,
    jump_bp: float = 25.0,
) -> list[CrossVenueEvent]:
    end = start_ms + int(minutes * 60_000)
    events: list[CrossVenueEvent] = []
    for coin in coins:
        base = MIDS.get(coin, 50.0)
        walk = _rng(seed, coin, "mid")
        seconds = int(minutes * 60) + 2
        mid = base * np.exp(np.cumsum(walk.normal(0, 1.5e-4, seconds)))  # per-second log returns
        for venue in venues:
            rng = _rng(seed, coin, venue)
            symbol = symbol_of(venue, coin)
            keep = math.exp(-math.log(2) / half_life_s)
            offset = rng.normal(0, 3e-4)
            bias = rng.normal(0, 1e-4)
            rate = float(rng.normal(1e-4, 1.5e-4))
            interval = INTERVALS.get(venue, 8 * HOUR_MS)
            t = start_ms + int(rng.integers(0, 400))
            last_second = -1
            next_funding_push = t
            next_spot = t
            while t < end:
                second = (t - start_ms) // 1000
                while last_second < second:  # the offset moves once per second
                    offset = bias + keep * (offset - bias) + rng.normal(0, 2e-5)
                    if rng.random() < jump_per_hour / 3600:
                        offset += rng.choice((-1, 1)) * jump_bp * 1e-4 * (0.5 + rng.random())
                    last_second += 1
                m = float(mid[second]) * math.exp(offset)
                qty = (rng.uniform(2_000, 12_000, 10) / m).tolist()
                bids = tuple(zip((m * f for f in _BID_STEPS), qty[:5]))
                asks = tuple(zip((m * f for f in _ASK_STEPS), qty[5:]))
                events.append(BookEvent(venue, symbol, t, bids, asks))
                if t >= next_funding_push:
                    rate += float(rng.normal(0, 1e-5))
                    events.append(
                        FundingEvent(
                            venue, symbol, t, rate, (t // interval + 1) * interval, interval if venue == "okx" else None
                        )
                    )
                    next_funding_push = t + 60_000
                if venue == "binance" and t >= next_spot:
                    events.append(SpotEvent(venue, symbol, t, float(mid[second]) * (1 - 2e-4)))
                    next_spot = t + 300_000
                t += int(rng.integers(400, 800))
    events.sort(key=lambda e: e.time_ms)  # stable: equal times keep their generation order
    return events
