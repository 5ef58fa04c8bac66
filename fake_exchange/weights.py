"""Binance request weights and the per-minute counter behind ``X-MBX-USED-WEIGHT-1M``.

Producers are meant to be rate-limit aware, so the fake reports the weight used in the current UTC
minute exactly as Binance does and answers 429 once the limit is exceeded. Weights follow Binance's
documentation for the endpoints served here. The wall clock is injected.
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
    if path == "/fapi/v1/markPriceKlines":  # by limit, as Binance meters klines
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
