"""Rate-limit-aware REST client for Binance (USD-M futures, spot) and Coinbase public endpoints.

Binance meters REST by request weight per minute (`X-MBX-USED-WEIGHT-1M`); 429 means "slow down"
(with `Retry-After`) and ignoring it earns a 418 IP ban. So: back off on 429/418 for as long as the
server says, slow down pre-emptively when the used weight nears the limit, retry 5xx and network
errors with exponential backoff and jitter, and give up only after `give_up_after_s`, raising
`RestUnavailable` so the caller can decide (a gap fill publishes a gap event, a poller skips a tick).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import structlog

from producers.metrics import ProducerMetrics

log = structlog.get_logger("producer.rest")

WEIGHT_LIMIT_1M = 2400
WEIGHT_SLOWDOWN_FRACTION = 0.8


class RestUnavailable(Exception):
    """The endpoint did not answer usefully within the retry budget."""


class RestRejected(Exception):
    """A 4xx other than 429/418: retrying will not help (bad symbol, bad parameter)."""


class RestClient:
    def __init__(self, session: aiohttp.ClientSession, metrics: ProducerMetrics, *,
                 give_up_after_s: float = 60.0, max_backoff_s: float = 30.0, timeout_s: float = 10.0,
                 headers: Callable[[], dict[str, str]] | None = None) -> None:
        """`headers`: extra headers per request (a replay names its clock to the fake exchange)."""
        self.session = session
        self.headers = headers
        self.metrics = metrics
        self.give_up_after_s = give_up_after_s
        self.max_backoff_s = max_backoff_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._blocked_until = 0.0  # monotonic time before which no request may be sent (429/418)
        self.used_weight = 0

    async def get_json(self, url: str, params: dict[str, Any] | None = None) -> tuple[Any, int]:
        """GET `url` and return (decoded JSON, receive time in epoch ms)."""
        deadline = time.monotonic() + self.give_up_after_s
        attempt = 0
        last_error = "no attempt"
        while True:
            wait = self._blocked_until - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait > deadline:
                    raise RestUnavailable(f"{url}: rate limited for {wait:.0f}s more ({last_error})")
                await asyncio.sleep(wait)
            try:
                headers = self.headers() if self.headers is not None else None
                async with self.session.get(url, params=params, timeout=self.timeout, headers=headers) as resp:
                    body = await resp.read()
                    received = int(time.time() * 1000)
                    self._track_weight(resp.headers)
                    if resp.status == 200:
                        return orjson.loads(body), received
                    last_error = f"HTTP {resp.status}: {body[:200].decode(errors='replace')}"
                    if resp.status in (429, 418):
                        self.metrics.rest_backoffs.labels(str(resp.status)).inc()
                        retry_after = _retry_after(resp.headers, default=60.0 if resp.status == 418 else 5.0)
                        self._blocked_until = time.monotonic() + retry_after
                        log.warning("rate limited", url=url, status=resp.status, retry_after_s=retry_after)
                        continue
                    if 400 <= resp.status < 500:
                        raise RestRejected(f"{url} {params or ''}: {last_error}")
                    self.metrics.rest_backoffs.labels(str(resp.status)).inc()
            except (TimeoutError, aiohttp.ClientError, orjson.JSONDecodeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            attempt += 1
            delay = min(self.max_backoff_s, 0.25 * 2 ** attempt) * random.uniform(0.5, 1.0)  # nosec B311 # retry jitter, not a secret
            if time.monotonic() + delay > deadline:
                raise RestUnavailable(f"{url}: {last_error}")
            await asyncio.sleep(delay)

    def _track_weight(self, headers) -> None:
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
            self._blocked_until = max(self._blocked_until, time.monotonic() + until_next_minute)
            log.info("REST weight near the limit, pausing", used_weight=self.used_weight,
                     pause_s=round(until_next_minute, 1))


def _retry_after(headers, default: float) -> float:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default
