"""Rate-limit-aware REST client for Binance (USD-M futures, spot) and Coinbase public endpoints.

Binance meters REST by request weight per minute (`X-MBX-USED-WEIGHT-1M`); 429 means "slow down"
(with `Retry-After`) and ignoring it earns a 418 IP ban. So: back off on 429/418 for as long as the
server says, slow down pre-emptively when the used weight nears the limit, retry 5xx and network
errors with exponential backoff and jitter, and give up only after `give_up_after_s`, raising
`RestUnavailable` so the caller can decide (a gap fill publishes a gap event, a poller skips a tick).

A 429/418's Retry-After binds the origin (scheme, host, port), not the client that got it: Binance bans the
IP, so a producer's clients (gap fills and snapshots, the indicator poller, the warm start) share one
`RateLimitGate` and none of them sends to that origin inside the window (before, the poller kept sending
through a ban the gap-fill client had met, and a real ban grows with every such request). Other origins
(Coinbase, Binance spot) are not held back by it.

The gate also keeps each origin's weight budget (`WeightBudget`): a request's weight is spent
before it is sent, in the current UTC minute as Binance counts it, and a client waits for the next
minute when its share of the limit is used. The warm start's share (`WARM_START_SHARE`) leaves headroom
for the pollers, gap fills and book resyncs (`DEFAULT_SHARE`), so a start at any hour never earns a 429
(before, each client only paused at 80 % of the used weight its last answer reported: a burst of
requests in flight overshot it, and the clients did not know each other's spending).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from producers.metrics import ProducerMetrics

log = structlog.get_logger("producer.rest")

WEIGHT_LIMIT_1M = 2400
DEFAULT_SHARE = 0.9  # of the limit: pollers, gap fills, resyncs (10 % margin: clock skew, other users of the IP)
WARM_START_SHARE = 0.6  # the warm start: 30 % of the limit stays free for the live repairs meanwhile
_DEPTH_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
_WEIGHTS = {
    "/fapi/v1/aggTrades": 20,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/fundingRate": 1,
    "/api/v3/ticker/bookTicker": 2,
}


def binance_weight(url: str, params: dict[str, Any] | None = None) -> int:
    """The request weight Binance charges for a GET (USD-M futures, spot bookTicker): 0 for other origins'
    paths and for `/futures/data/*` (metered by a separate per-endpoint limit, not the weight)."""
    path = urlsplit(url).path
    params = params or {}
    if not path.startswith(("/fapi/", "/api/v3/")):
        return 0
    if path == "/fapi/v1/depth":
        return _DEPTH_WEIGHTS.get(int(params.get("limit", 500)), 10)
    if path in ("/fapi/v1/klines", "/fapi/v1/markPriceKlines", "/fapi/v1/indexPriceKlines"):
        limit = int(params.get("limit", 500))
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
    if path == "/fapi/v1/premiumIndex":
        return 1 if params.get("symbol") else 10
    return _WEIGHTS.get(path, 1)


class WeightBudget:
    """One origin's request weight in the current UTC minute (Binance meters per IP and minute).

    `spend(weight, share)` before a request: 0 when it fits in `share` of the limit (and it is counted),
    else the seconds to wait for the next minute. `observe` takes the `X-MBX-USED-WEIGHT-1M` an answer
    reports (what the exchange counted, other users of the IP included) when it is of the same minute.
    Hand-rolled: a fixed UTC-minute window is Binance's own rule, not a generic token bucket (aiolimiter's
    leaky bucket would let a minute's boundary pass twice the limit through in a minute of Binance's)."""

    def __init__(self, limit: int = WEIGHT_LIMIT_1M, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._minute = -1
        self.used = 0

    def _roll(self, now: float) -> None:
        minute = int(now // 60)
        if minute != self._minute:
            self._minute, self.used = minute, 0

    def spend(self, weight: int, share: float) -> float:
        now = self._clock()
        self._roll(now)
        if self.used + weight <= self.limit * share:
            self.used += weight
            return 0.0
        return 60.0 - now % 60.0 + 0.25  # the next minute, with a margin for the exchange's clock

    def observe(self, used: int, sent_at: float) -> None:
        """The used weight an answer reported, for a request sent at `sent_at` (wall clock)."""
        now = self._clock()
        self._roll(now)
        if int(sent_at // 60) == self._minute:
            self.used = max(self.used, used)


class RestUnavailable(Exception):
    """The endpoint did not answer usefully within the retry budget. ``reason``: ``network`` (no connection:
    DNS, refused, timeout), ``server`` (5xx, bad bodies) or ``rate-limited`` (a 429/418 window longer than
    the budget)."""

    def __init__(self, message: str, reason: str = "network") -> None:
        super().__init__(message)
        self.reason = reason


class RestRejected(Exception):
    """A 4xx other than 429/418: retrying will not help (bad symbol, bad parameter)."""


class RestRestricted(RestRejected):
    """HTTP 451 (Binance refuses restricted locations, the US among them) or 403 (a blocked client, the
    WAF): nothing this client can retry its way out of; the user has to run from elsewhere or offline."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class _OriginState:
    """What `RateLimitGate` knows of one origin."""

    until: float = 0.0  # monotonic time before which no request may be sent
    trusted: bool = False  # answered 200 since the last 429/418: requests may go concurrently
    probe: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request at a time while not trusted


class RateLimitGate:
    """Per origin, the monotonic time before which no request may be sent (429/418, used weight), and
    whether the origin is known to answer: until one of its requests has been answered 200 (at start,
    and again after each 429/418) requests to it go one at a time (`turn`).

    Why one at a time: a request already in flight when another meets a 418 arrives inside the ban, and
    Binance lengthens a ban with every such request. A start-up burst (each symbol's catch-up from the
    checkpoint, the depth snapshots, the first indicator poll) or the requests a window held back, all
    released together at its end, would otherwise meet a ban with all of them; now it meets it with one."""

    def __init__(self, weight_limit: int = WEIGHT_LIMIT_1M) -> None:
        self._origins: dict[str, _OriginState] = {}
        self._budgets: dict[str, WeightBudget] = {}
        self.weight_limit = weight_limit

    def budget(self, url: str) -> WeightBudget:
        """The origin's weight budget, shared by every client of this gate."""
        key = origin(url)
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = WeightBudget(self.weight_limit)
        return budget

    def _at(self, url: str) -> _OriginState:
        key = origin(url)
        state = self._origins.get(key)
        if state is None:
            state = self._origins[key] = _OriginState()
        return state

    def blocked_until(self, url: str) -> float:
        state = self._origins.get(origin(url))
        return state.until if state is not None else 0.0

    def block(self, url: str, until: float) -> None:
        state = self._at(url)
        state.until = max(state.until, until)
        state.trusted = False

    def answered(self, url: str) -> None:
        """A 200 from the origin: requests to it may go concurrently again."""
        self._at(url).trusted = True

    @contextlib.asynccontextmanager
    async def turn(self, url: str):
        """Hold this around a request: exclusive per origin until the origin is trusted."""
        state = self._at(url)
        if state.trusted:
            yield
            return
        async with state.probe:
            yield


class RestClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: ProducerMetrics,
        *,
        give_up_after_s: float = 60.0,
        max_backoff_s: float = 30.0,
        timeout_s: float = 10.0,
        headers: Callable[[], dict[str, str]] | None = None,
        gate: RateLimitGate | None = None,
        share: float = DEFAULT_SHARE,
    ) -> None:
        """`headers`: extra headers per request (a replay names its clock to the fake exchange, which meters
        it by that clock: no wall-clock budget then); `gate`: the rate-limit windows and weight budgets
        shared with the process's other clients (default: this client's own); `share`: the fraction of
        the weight limit this client may fill in a minute."""
        self.session = session
        self.headers = headers
        self.metrics = metrics
        self.give_up_after_s = give_up_after_s
        self.max_backoff_s = max_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.gate = gate if gate is not None else RateLimitGate()
        self.share = share
        self.used_weight = 0

    async def get_json(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, int]:
        """GET `url` and return (decoded JSON, receive time in Unix ms)."""
        deadline = time.monotonic() + self.give_up_after_s
        attempt = 0
        last_error = "no attempt"
        reason = "network"
        while True:
            # another client may extend the window while this one waits: look again after each wait
            while (wait := self.gate.blocked_until(url) - time.monotonic()) > 0:
                if time.monotonic() + wait > deadline:
                    raise RestUnavailable(f"{url}: rate limited for {wait:.0f}s more ({last_error})", "rate-limited")
                await asyncio.sleep(wait)
            weight = binance_weight(url, params) if self.headers is None else 0
            if weight and (wait := self.gate.budget(url).spend(weight, self.share)) > 0:
                if time.monotonic() + wait > deadline:
                    raise RestUnavailable(f"{url}: weight budget spent for {wait:.0f}s more", "rate-limited")
                log.info(
                    "REST weight budget spent, waiting for the next minute",
                    url=origin(url),
                    used_weight=self.gate.budget(url).used,
                    share=self.share,
                    wait_s=round(wait, 1),
                )
                await asyncio.sleep(wait)
                continue
            async with self.gate.turn(url):
                if self.gate.blocked_until(url) > time.monotonic():
                    continue  # the request ahead in turn met a 429/418: wait it out
                sent_at = time.time()
                try:
                    headers = self.headers() if self.headers is not None else None
                    async with self.session.get(url, params=params, timeout=self.timeout, headers=headers) as resp:
                        body = await resp.read()
                        received = int(time.time() * 1000)
                        self._track_weight(url, resp.headers, sent_at)
                        if resp.status == 200:
                            self.gate.answered(url)
                            return orjson.loads(body), received
                        last_error = f"HTTP {resp.status}: {body[:200].decode(errors='replace')}"
                        reason = "server"
                        if resp.status in (451, 403):
                            raise RestRestricted(f"{url}: {last_error}", resp.status)
                        if resp.status in (429, 418):
                            self.metrics.rest_backoffs.labels(str(resp.status)).inc()
                            retry_after = _retry_after(resp.headers, default=60.0 if resp.status == 418 else 5.0)
                            self.gate.block(url, time.monotonic() + retry_after)
                            log.warning("rate limited", url=url, status=resp.status, retry_after_s=retry_after)
                            continue
                        if 400 <= resp.status < 500:
                            raise RestRejected(f"{url} {params or ''}: {last_error}")
                        self.metrics.rest_backoffs.labels(str(resp.status)).inc()
                except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                    reason = (
                        "server"
                        if isinstance(exc, (orjson.JSONDecodeError, aiohttp.ClientResponseError))
                        else "network"
                    )
            attempt += 1
            delay = min(self.max_backoff_s, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)  # nosec B311 # retry jitter, not a secret
            if time.monotonic() + delay > deadline:
                raise RestUnavailable(f"{url}: {last_error}", reason)
            await asyncio.sleep(delay)

    def _track_weight(self, url: str, headers, sent_at: float) -> None:
        used = headers.get("X-MBX-USED-WEIGHT-1M")
        if used is None:
            return
        try:
            self.used_weight = int(used)
        except ValueError:
            return
        if self.headers is None:  # (a replay is metered by its own clock: see __init__)
            self.gate.budget(url).observe(self.used_weight, sent_at)


def _retry_after(headers, default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default
