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
WEIGHT_SLOWDOWN_FRACTION = 0.8


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
    released together at its end, would otherwise meet a ban with all of them (measured: 2 requests in
    the ban window once the catch-up joined the start-up burst); now it meets it with one."""

    def __init__(self) -> None:
        self._origins: dict[str, _OriginState] = {}

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
    def __init__(self, session: aiohttp.ClientSession, metrics: ProducerMetrics, *,
                 give_up_after_s: float = 60.0, max_backoff_s: float = 30.0, timeout_s: float = 10.0,
                 headers: Callable[[], dict[str, str]] | None = None, gate: RateLimitGate | None = None) -> None:
        """`headers`: extra headers per request (a replay names its clock to the fake exchange); `gate`: the
        rate-limit windows shared with the process's other clients (default: this client's own)."""
        self.session = session
        self.headers = headers
        self.metrics = metrics
        self.give_up_after_s = give_up_after_s
        self.max_backoff_s = max_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.gate = gate if gate is not None else RateLimitGate()
        self.used_weight = 0

    async def get_json(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, int]:
        """GET `url` and return (decoded JSON, receive time in epoch ms)."""
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
            async with self.gate.turn(url):
                if self.gate.blocked_until(url) > time.monotonic():
                    continue  # the request ahead in turn met a 429/418 (or the weight brake): wait it out
                try:
                    headers = self.headers() if self.headers is not None else None
                    async with self.session.get(url, params=params, timeout=self.timeout, headers=headers) as resp:
                        body = await resp.read()
                        received = int(time.time() * 1000)
                        self._track_weight(url, resp.headers)
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
                    reason = "server" if isinstance(exc, (orjson.JSONDecodeError, aiohttp.ClientResponseError)) \
                        else "network"
            attempt += 1
            delay = min(self.max_backoff_s, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)  # nosec B311 # retry jitter, not a secret
            if time.monotonic() + delay > deadline:
                raise RestUnavailable(f"{url}: {last_error}", reason)
            await asyncio.sleep(delay)

    def _track_weight(self, url: str, headers) -> None:
        used = headers.get("X-MBX-USED-WEIGHT-1M")
        if used is None:
            return
        try:
            self.used_weight = int(used)
        except ValueError:
            return
        if self.used_weight >= WEIGHT_LIMIT_1M * WEIGHT_SLOWDOWN_FRACTION:
            # pre-emptive: wait for the next minute window rather than earn a 429
            until_next_minute = 60.0 - (time.time() % 60.0) + 0.5
            self.gate.block(url, time.monotonic() + until_next_minute)
            log.info("REST weight near the limit, pausing", used_weight=self.used_weight,
                     pause_s=round(until_next_minute, 1))


def _retry_after(headers, default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default
