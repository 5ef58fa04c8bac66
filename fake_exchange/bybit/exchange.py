"""Lifecycle of one fake Bybit exchange: the Binance fake's machinery with Bybit's websocket in front.

Reused as they are: :class:`~fake_exchange.subscribed.SubscribedExchange` (start-up and connection
handling shared with the OKX fake) on :class:`~fake_exchange.exchange.FakeExchange` (addresses, status, fault
switches, drops, ``stop()``/``async with``), :class:`~fake_exchange.state.ExchangeState` and
:class:`~fake_exchange.replay.ReplayEngine` (frames replayed on the session's clock scaled
by ``speed``, the skip fault, ``finished``), :class:`~fake_exchange.faults.FaultSettings` and
the HTTP control API (``GET /_control/status``, ``POST /_control/faults``, ``POST /_control/start``).
What differs: the websocket speaks Bybit v5 (:mod:`.ws_server`) and the replayed state is Bybit's
(:class:`~.market.BybitMarket`, which answers subscriptions with snapshots). One market REST endpoint,
``GET /v5/market/instruments-info?category=linear[&symbol=][&limit=][&cursor=]`` (the lot steps the
watchlist's instrument rules download; paged by ``limit``, at most 1000, and ``nextPageCursor`` as
Bybit does), in Bybit's envelope; the producer itself needs none.

``await serve_bybit(session, speed=10.0, faults={...})`` returns a started exchange; its
``linear_url`` is what the producer connects to; ``run_bybit(...)`` is the blocking entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import orjson
from aiohttp import web

from ..config import FakeExchangeConfig
from ..rest_api import STATE_KEY
from ..subscribed import SubscribedExchange
from .market import BybitMarket
from .synthetic import BybitSession, BybitSyntheticSpec, generate_bybit_session
from .ws_server import BybitHandlers

MARKET_KEY: web.AppKey[BybitMarket] = web.AppKey("bybit_market", BybitMarket)


def _answer(
    request: web.Request, result: dict[str, Any], code: int = 0, msg: str = "OK", status: int = 200
) -> web.Response:
    return web.json_response(
        {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": request.app[STATE_KEY].now_ms()},
        status=status,
    )


async def instruments_info(request: web.Request) -> web.Response:
    """Linear perpetuals only (the fake has no spot, inverse or option); ``cursor`` is the last symbol
    of the previous page (opaque to a client, as Bybit's)."""
    fault = request.app[STATE_KEY].faults.rest_fault(request.remote or "")
    if fault is not None:
        return _answer(request, {}, 10016, fault.msg, fault.status)
    query = request.query
    if query.get("category") != "linear":
        return _answer(request, {}, 10001, "params error: Category is invalid")
    try:
        limit = min(1000, max(1, int(query.get("limit", "500"))))
    except ValueError:
        return _answer(request, {}, 10001, "params error: limit")
    rows = [r for r in request.app[MARKET_KEY].instruments() if query.get("symbol") in (None, r["symbol"])]
    after = query.get("cursor", "").removeprefix("next=")
    if after:
        rows = [r for r in rows if r["symbol"] > after]
    page = rows[:limit]
    cursor = f"next={page[-1]['symbol']}" if len(rows) > limit else ""
    return _answer(request, {"category": "linear", "list": page, "nextPageCursor": cursor})


class FakeBybitExchange(SubscribedExchange):
    """A running fake Bybit v5 linear exchange (websocket + control API)."""

    handlers_class = BybitHandlers

    def __init__(self, session: BybitSession, config: FakeExchangeConfig) -> None:
        super().__init__(config, session.recording)
        self.session = session
        self.market = BybitMarket(session)
        self.state.market = self.market  # type: ignore[assignment]  # the replay feeds it every frame

    def add_routes(self, app: web.Application) -> None:
        app[MARKET_KEY] = self.market
        app.router.add_get("/v5/market/instruments-info", instruments_info)

    @property
    def linear_url(self) -> str:
        return self.venue_url


async def serve_bybit(session: BybitSession | BybitSyntheticSpec | None = None, **config: Any) -> FakeBybitExchange:
    """Start a fake Bybit exchange (ports bound, replay armed); ``config`` are `FakeExchangeConfig` fields."""
    if not isinstance(session, BybitSession):
        session = generate_bybit_session(session)
    return await FakeBybitExchange(session, FakeExchangeConfig(session=session.recording, **config)).start()


async def _serve_until_signalled(spec: BybitSyntheticSpec, config: dict[str, Any]) -> None:
    exchange = await serve_bybit(spec, **config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        orjson.dumps(
            {"ws_url": exchange.linear_url, "control_url": exchange.rest_url, "source": exchange.recording.source}
        ).decode(),
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await exchange.stop()


def run_bybit(spec: BybitSyntheticSpec | None = None, **config: Any) -> None:
    """Blocking entry point: serve a synthetic session until SIGINT/SIGTERM (prints the URLs as JSON)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(spec or BybitSyntheticSpec(), config))
