"""Download the venues' instrument rules (``execution.instrument_rules``) from their public REST.

One GET per venue (Bybit pages through ``nextPageCursor``, 1000 rows a page), with aiohttp like the
producers' REST clients; base URLs are overridable (the fake exchange serves all three endpoints).
Network errors, 5xx and 429 are retried a few times with a doubling wait; anything else, or a body
the parser refuses, is an ``InstrumentRulesError`` naming the venue: a partial table would trade
the venue left out unrounded, so the caller decides (``tapeflow watchlist rules`` fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import orjson

from execution.instrument_rules import (
    VENUES,
    InstrumentRule,
    InstrumentRules,
    InstrumentRulesError,
    bybit_next_cursor,
    parse_binance,
    parse_bybit,
    parse_okx,
)

LIVE_URLS: Mapping[str, str] = {
    "binance": "https://fapi.binance.com",
    "bybit": "https://api.bybit.com",
    "okx": "https://www.okx.com",
}
PATHS: Mapping[str, str] = {
    "binance": "/fapi/v1/exchangeInfo",
    "bybit": "/v5/market/instruments-info",
    "okx": "/api/v5/public/instruments",
}
MAX_PAGES = 50


async def _get(
    session: aiohttp.ClientSession, venue: str, url: str, params: Mapping[str, str], attempts: int, backoff_s: float
) -> Any:
    """One public GET with a few retries (429 and 5xx, network errors) and doubling backoff.
    Hand-written: a one-shot fetch of three unauthenticated endpoints a few times a day; the producers'
    REST clients carry Binance's weight accounting and ban windows, which these calls never approach,
    and no retry library is among the dependencies."""
    why = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(backoff_s * 2 ** (attempt - 1))
        try:
            async with session.get(url, params=dict(params)) as resp:
                body = await resp.read()
                if resp.status == 200:
                    return orjson.loads(body)
                why = f"HTTP {resp.status}: {body[:200]!r}"
                if resp.status != 429 and resp.status < 500:
                    break
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            why = f"{type(exc).__name__}: {exc}"
    raise InstrumentRulesError(f"{venue}: GET {url} failed: {why}")


async def fetch_venue(
    session: aiohttp.ClientSession,
    venue: str,
    base_url: str,
    *,
    attempts: int = 3,
    backoff_s: float = 0.5,
    page_size: int = 1000,
) -> list[InstrumentRule]:
    """The rules of one venue's perpetuals, from its instruments endpoint at `base_url`."""
    url = base_url.rstrip("/") + PATHS[venue]
    if venue == "binance":
        return parse_binance(await _get(session, venue, url, {}, attempts, backoff_s))
    if venue == "okx":
        return parse_okx(await _get(session, venue, url, {"instType": "SWAP"}, attempts, backoff_s))
    if venue == "bybit":
        rules: list[InstrumentRule] = []
        cursor = ""
        for _ in range(MAX_PAGES):
            params = {"category": "linear", "limit": str(page_size)} | ({"cursor": cursor} if cursor else {})
            body = await _get(session, venue, url, params, attempts, backoff_s)
            rules += parse_bybit(body)
            cursor = bybit_next_cursor(body)
            if not cursor:
                return rules
        raise InstrumentRulesError(f"bybit: more than {MAX_PAGES} pages of instruments")
    raise InstrumentRulesError(f"no instruments endpoint known for venue {venue!r} (known: {', '.join(VENUES)})")


async def fetch_rules(
    venues: Iterable[str] = VENUES,
    base_urls: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 20.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
    page_size: int = 1000,
) -> InstrumentRules:
    """Every venue's rules (in `venues`' order, concurrently); `base_urls` override ``LIVE_URLS``."""
    urls = dict(LIVE_URLS) | dict(base_urls or {})
    names = list(venues)
    unknown = [v for v in names if v not in PATHS]
    if unknown:
        raise InstrumentRulesError(
            f"no instruments endpoint known for {', '.join(unknown)} (known: {', '.join(VENUES)})"
        )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        found = await asyncio.gather(
            *(
                fetch_venue(session, v, urls[v], attempts=attempts, backoff_s=backoff_s, page_size=page_size)
                for v in names
            )
        )
    return InstrumentRules(rule for rules in found for rule in rules)


def fetch_rules_blocking(
    venues: Iterable[str] = VENUES, base_urls: Mapping[str, str] | None = None, **kw: Any
) -> InstrumentRules:
    """``fetch_rules`` for a caller without an event loop (the CLI)."""
    return asyncio.run(fetch_rules(venues, base_urls, **kw))
