"""Lifecycle of one fake OKX exchange: the Binance fake's machinery with OKX's websocket and REST in front.

Reused as they are: :class:`~fake_exchange.subscribed.SubscribedExchange` (start-up and connection
handling shared with the Bybit fake) on :class:`~fake_exchange.exchange.FakeExchange` (addresses, status, fault switches,
drops, ``stop()``/``async with``), :class:`~fake_exchange.state.ExchangeState` and
:class:`~fake_exchange.replay.ReplayEngine` (frames replayed on the session's clock scaled by
``speed``, the skip fault, ``finished``), :class:`~fake_exchange.faults.FaultSettings` and the HTTP
control API. What differs: the websocket speaks OKX v5 (:mod:`.ws_server`), the replayed state is
OKX's (:class:`~.market.OkxMarket`), and the REST side serves the public GETs the producer uses:

- ``/api/v5/public/instruments?instType=SWAP`` (contract values),
- ``/api/v5/market/books?instId=&sz=`` (the book now, with its ``seqId``),
- ``/api/v5/market/history-trades?instId=&type=1&after=&limit=`` (the fills so far, newest first),
- ``/api/v5/public/funding-rate?instId=`` and ``/api/v5/public/mark-price?instType=SWAP[&instId=]``,

answered in OKX's envelope ``{"code":"0","msg":"","data":[...]}`` (``code`` "51001" for an unknown
instrument, as OKX does) and failing with 503 while a ``rest_fail_for_s`` fault lasts.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..config import FakeExchangeConfig
from ..rest_api import STATE_KEY
from ..subscribed import SubscribedExchange
from .market import OkxMarket
from .synthetic import OkxSession, OkxSyntheticSpec, generate_okx_session
from .ws_server import OkxHandlers

MARKET_KEY: web.AppKey[OkxMarket] = web.AppKey("okx_market", OkxMarket)


def _ok(data: list) -> web.Response:
    return web.json_response({"code": "0", "msg": "", "data": data})


def _error(code: str, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "data": []})


def _failing(request: web.Request) -> web.Response | None:
    fault = request.app[STATE_KEY].faults.rest_fault(request.remote or "")
    if fault is None:
        return None
    return web.json_response({"code": "50001", "msg": fault.msg, "data": []}, status=fault.status)


async def instruments(request: web.Request) -> web.Response:
    if (failing := _failing(request)) is not None:
        return failing
    if request.query.get("instType") != "SWAP":
        return _ok([])  # the fake lists only its swaps
    rows = request.app[MARKET_KEY].instruments()
    inst_id = request.query.get("instId")
    return _ok([r for r in rows if inst_id in (None, r["instId"])])


async def books(request: web.Request) -> web.Response:
    if (failing := _failing(request)) is not None:
        return failing
    try:
        depth = min(400, max(1, int(request.query.get("sz", "1"))))
    except ValueError:
        return _error("51000", "Parameter sz error")
    row = request.app[MARKET_KEY].book_row(request.query.get("instId", ""), depth)
    return _error("51001", "Instrument ID does not exist") if row is None else _ok([row])


async def history_trades(request: web.Request) -> web.Response:
    """Pagination by trade id only (``type=1``, ``after``): what a gap fill asks for."""
    if (failing := _failing(request)) is not None:
        return failing
    query = request.query
    try:
        after = int(query["after"]) if "after" in query else None
        limit = min(100, max(1, int(query.get("limit", "100"))))
    except ValueError:
        return _error("51000", "Parameter after or limit error")
    if query.get("type") != "1":
        return _error("51000", "Parameter type error: the fake pages by trade id only (type=1)")
    rows = request.app[MARKET_KEY].history_trades(query.get("instId", ""), after, limit)
    return _error("51001", "Instrument ID does not exist") if rows is None else _ok(rows)


async def funding_rate(request: web.Request) -> web.Response:
    if (failing := _failing(request)) is not None:
        return failing
    st = request.app[MARKET_KEY].by_inst.get(request.query.get("instId", ""))
    if st is None or st.inst_id != request.query.get("instId"):
        return _error("51001", "Instrument ID does not exist")
    return _ok([dict(st.funding)])


async def mark_price(request: web.Request) -> web.Response:
    if (failing := _failing(request)) is not None:
        return failing
    inst_id = request.query.get("instId")
    market = request.app[MARKET_KEY]
    return _ok([dict(st.mark) for st in market.by_symbol.values() if inst_id in (None, st.inst_id) and st.mark])


class FakeOkxExchange(SubscribedExchange):
    """A running fake OKX v5 exchange (public websocket + public REST + control API)."""

    handlers_class = OkxHandlers

    def __init__(self, session: OkxSession, config: FakeExchangeConfig) -> None:
        super().__init__(config, session.recording)
        self.session = session
        self.market = OkxMarket(session)
        self.state.market = self.market  # type: ignore[assignment]  # the replay feeds it every frame

    @property
    def public_url(self) -> str:
        return self.venue_url

    def add_routes(self, app: web.Application) -> None:
        app[MARKET_KEY] = self.market
        app.router.add_get("/api/v5/public/instruments", instruments)
        app.router.add_get("/api/v5/market/books", books)
        app.router.add_get("/api/v5/market/history-trades", history_trades)
        app.router.add_get("/api/v5/public/funding-rate", funding_rate)
        app.router.add_get("/api/v5/public/mark-price", mark_price)


async def serve_okx(session: OkxSession | OkxSyntheticSpec | None = None, **config: Any) -> FakeOkxExchange:
    """Start a fake OKX exchange (ports bound, replay armed); ``config`` are `FakeExchangeConfig` fields."""
    if not isinstance(session, OkxSession):
        session = generate_okx_session(session)
    return await FakeOkxExchange(session, FakeExchangeConfig(session=session.recording, **config)).start()
