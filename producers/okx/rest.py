"""OKX v5 public REST: the few GETs the producer needs, with retries that back off.

OKX meters public endpoints per IP and endpoint (e.g. `market/books` 40 requests per 2 s) and answers
429 when exceeded; an answer's own `code` other than "0" is an error too. Network errors, 5xx and 429
are retried with exponential backoff and jitter (a 429 waits at least 2 s, OKX's window) until
`give_up_after_s`, then `OkxRestUnavailable`; a 4xx other than 429 is `OkxRestRejected` at once (a bad
instrument will not become good). Nothing here knows a venue but OKX; no Binance client is reused
(venues never import each other).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import orjson
import structlog

from producers.metrics import ProducerMetrics

log = structlog.get_logger("producer.okx.rest")

LIVE_REST = "https://www.okx.com"


class OkxRestUnavailable(Exception):
    """The endpoint did not answer usefully within the retry budget."""


class OkxRestRejected(Exception):
    """A 4xx other than 429, or an OKX error code: retrying will not help."""


class OkxRestClient:
    def __init__(
        self,
        base_url: str,
        metrics: ProducerMetrics | None = None,
        *,
        timeout_s: float = 10.0,
        give_up_after_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.give_up_after_s = give_up_after_s
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, path: str, params: dict[str, str]) -> Any:
        """The decoded JSON body of a successful GET (OKX `code` "0")."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        deadline = time.monotonic() + self.give_up_after_s
        attempt = 0
        while True:
            wait = 0.0
            try:
                async with self._session.get(self.base_url + path, params=params) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        data = orjson.loads(body)
                        if isinstance(data, dict) and str(data.get("code")) == "0":
                            return data
                        raise OkxRestRejected(
                            f"{path}: OKX code {data.get('code') if isinstance(data, dict) else '?'!r}"
                        )
                    if resp.status == 429:
                        wait = 2.0
                        if self.metrics is not None:
                            self.metrics.rest_backoffs.labels("429").inc()
                    elif 400 <= resp.status < 500:
                        raise OkxRestRejected(f"{path}: HTTP {resp.status}: {body[:200]!r}")
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                log.debug("okx rest attempt failed", path=path, error=type(exc).__name__)
            attempt += 1
            delay = max(wait, random.uniform(0, min(10.0, 0.25 * 2**attempt)))  # nosec B311 # retry jitter
            if time.monotonic() + delay > deadline:
                raise OkxRestUnavailable(f"{path}: no useful answer in {self.give_up_after_s:.0f} s")
            await asyncio.sleep(delay)
