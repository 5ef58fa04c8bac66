"""Binance request weights, the per-minute counter behind ``X-MBX-USED-WEIGHT-1M``, and its bans.

Producers are meant to be rate-limit aware, so the fake reports the weight used in the current UTC
minute exactly as Binance does, answers 429 (``Retry-After``: the seconds to the minute's end) once
the limit is exceeded, and bans a client that does not back off (:class:`WeightLimiter`): a request
inside a 429's Retry-After earns a 418 ban, 2 minutes for the first and doubling for each repeat up to
3 days ("IP bans are tracked and scale in duration for repeat offenders, from 2 minutes to 3 days");
every request inside a ban is answered 418 with the ban's remaining seconds and counted. Weights follow
Binance's documentation for the endpoints served here. The clocks are injected.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

_DEPTH_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
_FIXED = {
    "/fapi/v1/aggTrades": 20,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/time": 1,
    "/fapi/v1/ping": 1,
    "/fapi/v1/openInterest": 1,
    "/fapi/v1/fundingRate": 1,
    "/api/v3/ticker/bookTicker": 2,
}


def is_binance_path(path: str) -> bool:
    return path.startswith(("/fapi/", "/futures/data/", "/api/v3/"))


def request_weight(path: str, params: Mapping[str, str]) -> int:
    if path == "/fapi/v1/depth":
        try:
            return _DEPTH_WEIGHTS.get(int(params.get("limit", "500")), 10)
        except ValueError:
            return 10
    if path == "/fapi/v1/premiumIndex":
        return 1 if params.get("symbol") else 10
    if path.startswith("/futures/data/"):
        return 0
    if path in ("/fapi/v1/markPriceKlines", "/fapi/v1/klines"):  # by limit, as Binance meters klines
        try:
            limit = int(params.get("limit", "500"))
        except ValueError:
            return 5
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    return _FIXED.get(path, 1)


class MinuteWeightCounter:
    """Weight used in the current minute; resets when the minute changes.

    A replaying client that names its clock (``X-Tapeflow-As-Of``) is metered per minute of *that* clock,
    kept apart from the wall-clock count: a replay at 60x or ``max`` makes a recorded minute's requests in
    a second, and metering them by the wall clock would answer 429 to what the real exchange allowed
    when it happened (and make the answers depend on the replay's speed)."""

    def __init__(self, wall_clock: Callable[[], float] = time.time) -> None:
        self._clock = wall_clock
        self._minute = -1
        self._used = 0
        self._as_of_minute = -1
        self._as_of_used = 0

    def add(self, weight: int, as_of_ms: int | None = None) -> int:
        if as_of_ms is not None:
            minute = as_of_ms // 60_000
            if minute != self._as_of_minute:
                self._as_of_minute, self._as_of_used = minute, 0
            self._as_of_used += weight
            return self._as_of_used
        minute = int(self._clock() // 60)
        if minute != self._minute:
            self._minute, self._used = minute, 0
        self._used += weight
        return self._used

    def seconds_to_reset(self) -> int:
        return max(1, 60 - int(self._clock() % 60))


BAN_FIRST_S = 120
BAN_MAX_S = 3 * 86_400


class WeightLimiter:
    """The weight limit as Binance applies it to one IP: 429 over the limit, 418 bans for not backing off.

    ``admit`` meters a request and says how it is answered: ``(used, status, retry_after_s)`` with
    status 200 (serve it), 429 or 418. Counts every 429/418 answered (``http_429``, ``http_418``),
    requests that arrived inside a ban (``requests_in_ban``) and the weight used per wall-clock minute
    (``by_minute``: the benchmark's "never above the limit"; requests metered by a replay's as-of clock
    are kept apart, as in :class:`MinuteWeightCounter`)."""

    def __init__(self, limit: int, wall_clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = wall_clock
        self.counter = MinuteWeightCounter(wall_clock)
        self._limited_until = 0.0  # the last 429's Retry-After (wall clock)
        self._ban_until = 0.0
        self.bans = 0
        self.http_429 = 0
        self.http_418 = 0
        self.requests_in_ban = 0
        self.by_minute: dict[int, int] = {}  # UTC minute (epoch // 60) -> weight used, last 180 minutes

    def admit(self, weight: int, as_of_ms: int | None = None) -> tuple[int, int, int]:
        now = self._clock()
        if now < self._ban_until:
            self.requests_in_ban += 1
            self.http_418 += 1
            return self.counter.add(0, as_of_ms), 418, max(1, int(self._ban_until - now + 0.999))
        used = self.counter.add(weight, as_of_ms)
        if as_of_ms is None:
            minute = int(now // 60)
            self.by_minute[minute] = used
            if len(self.by_minute) > 180:
                del self.by_minute[min(self.by_minute)]
        if used <= self.limit:
            return used, 200, 0
        if now < self._limited_until:  # did not back off after a 429: banned, longer for each repeat
            ban = min(BAN_MAX_S, BAN_FIRST_S * 2**self.bans)
            self.bans += 1
            self._ban_until = now + ban
            self.http_418 += 1
            return used, 418, ban
        retry = self.counter.seconds_to_reset()
        self._limited_until = now + retry
        self.http_429 += 1
        return used, 429, retry

    @property
    def max_per_minute(self) -> int:
        return max(self.by_minute.values(), default=0)

    def ban_remaining_s(self) -> float:
        return max(0.0, self._ban_until - self._clock())
