"""Binance USD-M (plus spot bookTicker and Coinbase ticker) REST endpoints on aiohttp.

Recorded bodies are served verbatim where the session has them (exchangeInfo, the depth snapshot
while it is current); everything else comes from the replay state (:mod:`.depth_book`,
:mod:`.agg_trades`) or is generated (:mod:`.generated_bodies`). Bad input gets Binance's error body
(``{"code":-1121,"msg":"Invalid symbol."}``, HTTP 400); every Binance answer carries
``X-MBX-USED-WEIGHT-1M``; the fault switches can replace any answer with 418/429/5xx.

``X-Tapeflow-As-Of: <epoch ms>`` (a fake-only header; Binance ignores unknown headers) answers as of
that event time instead of the replay position: "now", the prices behind generated bodies and the
depth snapshot. A replaying producer sends its own clock (the newest event time it has processed), so
what it gets back depends only on the recording and the frames it has read, never on how far ahead
the replay runs at ``max`` speed; that is what makes a replay's output identical at every speed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from . import generated_bodies as gen
from .market_state import MarketView
from .state import ExchangeState
from .weights import WeightLimiter, is_binance_path, request_weight

DEPTH_LIMITS = (5, 10, 20, 50, 100, 500, 1000)
AGG_TRADES_MAX = 1000
HOUR_MS = 3_600_000
STATE_KEY = web.AppKey("fake_exchange_state", ExchangeState)
WEIGHTS_KEY = web.AppKey("fake_exchange_weights", WeightLimiter)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AS_OF_HEADER = "X-Tapeflow-As-Of"


def as_of(request: web.Request) -> int | None:
    raw = request.headers.get(AS_OF_HEADER)
    try:
        return int(raw) if raw else None
    except ValueError:
        raise BinanceError(-1100, f"Illegal characters found in header '{AS_OF_HEADER}'.") from None


def now_ms(request: web.Request) -> int:
    """ "Now" for this request: the client's as-of time, else the fake's clock."""
    moment = as_of(request)
    return moment if moment is not None else request.app[STATE_KEY].now_ms()


def market(request: web.Request) -> MarketView:
    """Prices as of this request's as-of time, else as far as the replay has got."""
    view = request.app[STATE_KEY].market
    moment = as_of(request)
    return view if moment is None else view.at(moment)


class BinanceError(Exception):
    """An input error answered with Binance's ``{"code", "msg"}`` body."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def error_body(code: int, msg: str) -> dict[str, Any]:
    return {"code": code, "msg": msg}


# -- parameter helpers --------------------------------------------------------------------------
def int_param(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        msg = f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        raise BinanceError(-1100, msg) from None


def required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def symbol_param(request: web.Request) -> str:
    symbol = required(request, "symbol")
    if symbol not in request.app[STATE_KEY].symbols:
        raise BinanceError(-1121, "Invalid symbol.")
    return symbol


def invalid(name: str) -> BinanceError:
    return BinanceError(-1130, f"Data sent for parameter '{name}' is not valid.")


def period_param(request: web.Request) -> int:
    period = required(request, "period")
    if period not in gen.PERIODS_MS:
        raise invalid("period")
    return gen.PERIODS_MS[period]


def series_stamps(request: web.Request, period_ms: int) -> list[int]:
    limit = int_param(request, "limit", 30) or 30
    if not 1 <= limit <= 500:
        raise invalid("limit")
    return gen.period_stamps(
        period_ms, now_ms(request), int_param(request, "startTime"), int_param(request, "endTime"), limit
    )


# -- middleware ---------------------------------------------------------------------------------
@web.middleware
async def exchange_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Faults, weight accounting and Binance error bodies around every non-control endpoint."""
    if request.path.startswith("/_control"):
        return await handler(request)
    state = request.app[STATE_KEY]
    state.rest_requests += 1
    headers: dict[str, str] = {}
    limited: tuple[int, int] | None = None  # (status, retry after) of the weight limit
    binance = is_binance_path(request.path)
    if binance:
        try:
            moment = as_of(request)
        except BinanceError as exc:
            return json_response(error_body(exc.code, exc.msg), exc.status)
        limiter = request.app[WEIGHTS_KEY]
        used, status, retry = limiter.admit(request_weight(request.path, request.query), moment)
        headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        if status != 200:
            limited = (status, retry)
    fault = state.faults.rest_fault(request.remote or "127.0.0.1")
    if fault is not None:
        if fault.retry_after_s is not None:
            headers["Retry-After"] = str(fault.retry_after_s)
        if binance and fault.status in (418, 429):
            limiter = request.app[WEIGHTS_KEY]
            limiter.http_418 += fault.status == 418
            limiter.http_429 += fault.status == 429
        return json_response(error_body(fault.code, fault.msg), fault.status, headers)
    if limited is not None:
        status, retry = limited
        headers["Retry-After"] = str(retry)
        limit = request.app[WEIGHTS_KEY].limit
        if status == 418:
            until = int((state.wall_clock() + retry) * 1000)
            msg = (
                f"Way too many requests; IP({request.remote}) banned until {until}. Please use the websocket "
                "for live updates to avoid bans."
            )
        else:
            msg = (
                f"Too many requests; current limit of IP({request.remote}) is {limit} requests per minute. "
                "Please use the websocket for live updates to avoid polling the API."
            )
        return json_response(error_body(-1003, msg), status, headers)
    try:
        response = await handler(request)
    except BinanceError as exc:
        response = json_response(error_body(exc.code, exc.msg), exc.status)
    response.headers.update(headers)
    return response


# -- Binance USD-M ------------------------------------------------------------------------------
async def depth(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    limit = int_param(request, "limit", 500)
    if limit not in DEPTH_LIMITS:
        raise invalid("limit")
    state = request.app[STATE_KEY]
    snapshot = state.depth_snapshot(symbol, as_of(request))
    if snapshot is None:
        now = now_ms(request)
        return json_response({"lastUpdateId": 0, "E": now, "T": now, "bids": [], "asks": []})
    return json_response(snapshot.to_body(limit))


async def agg_trades(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    limit = min(int_param(request, "limit", 500) or 500, AGG_TRADES_MAX)
    if limit < 1:
        raise invalid("limit")
    start, end = int_param(request, "startTime"), int_param(request, "endTime")
    if start is not None and end is not None and end - start > HOUR_MS:
        raise BinanceError(-1127, "More than 1 hours between startTime and endTime.")
    state = request.app[STATE_KEY]
    from_id = int_param(request, "fromId")
    rows: list[dict[str, Any]] = []
    history = state.history
    if (
        history is not None
        and symbol in history.symbols
        and (
            (from_id is not None and from_id <= history.last_id(symbol))
            or (from_id is None and start is not None and start < history.end_ms)
        )
    ):
        rows = history.agg_trades(symbol, from_id=from_id, start_time=start, end_time=end, limit=limit)
        if len(rows) == limit or (end is not None and end < history.end_ms):
            return json_response(rows)
        from_id = rows[-1]["a"] + 1 if rows else from_id
    rows += state.agg_trades.query(
        symbol,
        from_id=from_id,
        start_time=start,
        end_time=end,
        limit=limit - len(rows),
        visible_before=state.agg_trades_visible_before(),
    )
    return json_response(rows)


async def exchange_info(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    recorded = state.recording.exchange_info
    if recorded is not None:
        return json_response(recorded)
    symbols = list(state.recording.symbols)
    return json_response(gen.exchange_info(symbols, state.market.price_decimals, now_ms(request)))


async def server_time(request: web.Request) -> web.Response:
    return json_response({"serverTime": now_ms(request)})


async def ping(request: web.Request) -> web.Response:
    return json_response({})


async def premium_index(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    now, view = now_ms(request), market(request)

    def one(symbol: str) -> dict[str, Any]:
        return gen.premium_index(symbol, view.price(symbol), view.mark.get(symbol), now)

    if request.query.get("symbol"):
        return json_response(one(symbol_param(request)))
    return json_response([one(s) for s in state.recording.symbols])


async def open_interest(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    return json_response(gen.open_interest(symbol, market(request).price(symbol), now_ms(request)))


async def funding_rate(request: web.Request) -> web.Response:
    symbol = symbol_param(request)
    limit = int_param(request, "limit", 100) or 100
    if not 1 <= limit <= 1000:
        raise invalid("limit")
    stamps = gen.period_stamps(
        gen.FUNDING_INTERVAL_MS, now_ms(request), int_param(request, "startTime"), int_param(request, "endTime"), limit
    )
    return json_response(
        [row for ts in stamps for row in gen.funding_rate_history(symbol, price_at(request, symbol, ts), [ts])]
    )


def price_at(request: web.Request, symbol: str, ts: int) -> float:
    """The reference price at ``ts``: a history row's value depends on its own time, never on when it is
    asked for (a warm start's history equals what a live poller got at the time)."""
    return request.app[STATE_KEY].market.at(ts).price(symbol)


async def open_interest_hist(request: web.Request) -> web.Response:
    symbol, period = symbol_param(request), period_param(request)
    rows = [
        row
        for ts in series_stamps(request, period)
        for row in gen.open_interest_hist(symbol, price_at(request, symbol, ts), [ts])
    ]
    return json_response(rows)


def ratio_handler(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        symbol, period = symbol_param(request), period_param(request)
        return json_response(gen.long_short_ratio(symbol, kind, series_stamps(request, period)))

    return handler


async def taker_ratio(request: web.Request) -> web.Response:
    symbol, period = symbol_param(request), period_param(request)
    rows = [
        row
        for ts in series_stamps(request, period)
        for row in gen.taker_long_short_ratio(symbol, price_at(request, symbol, ts), [ts])
    ]
    return json_response(rows)


KLINE_INTERVALS_MS = {"1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000}


async def mark_price_klines(request: web.Request) -> web.Response:
    """``/fapi/v1/markPriceKlines``: OHLC of the session's mark price per interval (the warm start's
    mark history); an interval without a mark update repeats the previous close."""
    symbol = symbol_param(request)
    interval = KLINE_INTERVALS_MS.get(required(request, "interval"))
    if interval is None:
        raise invalid("interval")
    limit = int_param(request, "limit", 500) or 500
    if not 1 <= limit <= 1500:
        raise invalid("limit")
    state = request.app[STATE_KEY]
    stamps = gen.period_stamps(
        interval, now_ms(request), int_param(request, "startTime"), int_param(request, "endTime"), limit
    )
    times, prices = state.market.mark_series(symbol)
    return json_response(gen.klines(stamps, interval, times, prices, state.market.price(symbol)))


async def klines(request: web.Request) -> web.Response:
    """``/fapi/v1/klines`` at ``1m`` (what a warm start reads for the minutes it does not page trade by
    trade: OHLC, volume, trade count and taker-buy volume): the real profile's history, then the minutes
    of the session's own trades."""
    symbol = symbol_param(request)
    if required(request, "interval") != "1m":
        raise invalid("interval")
    limit = int_param(request, "limit", 500) or 500
    if not 1 <= limit <= 1500:
        raise invalid("limit")
    state = request.app[STATE_KEY]
    start, end = int_param(request, "startTime"), int_param(request, "endTime")
    now = now_ms(request)
    end = now if end is None else min(end, now)
    rows: list[list] = []
    history = state.history
    if history is not None and symbol in history.symbols:
        rows = history.klines(symbol, start, end, limit)
    next_open = rows[-1][0] + 60_000 if rows else (start if start is not None else end - limit * 60_000)
    if len(rows) < limit:
        rows += gen.trade_klines(
            state.agg_trades.all(symbol), -(-next_open // 60_000) * 60_000, end, now, limit - len(rows)
        )
    return json_response(rows)


# -- Binance spot and Coinbase ------------------------------------------------------------------
async def spot_book_ticker(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    now, view = now_ms(request), market(request)

    def one(symbol: str) -> dict[str, Any]:
        return gen.spot_book_ticker(symbol, view.price(symbol), view.decimals(symbol), now)

    if request.query.get("symbol"):
        return json_response(one(symbol_param(request)))
    return json_response([one(s) for s in state.recording.symbols])


async def coinbase_ticker(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    product = request.match_info["product_id"]
    base, _, quote = product.partition("-")
    symbol = next((f"{base}{q}" for q in ("USDT", "USDC", "BUSD") if f"{base}{q}" in state.symbols), None)
    if quote not in ("USD", "USDT", "USDC") or symbol is None:
        return json_response({"message": "NotFound"}, 404)
    view = market(request)
    return json_response(gen.coinbase_ticker(product, view.price(symbol), view.decimals(symbol), now_ms(request)))


def add_market_routes(app: web.Application) -> None:
    app.router.add_get("/fapi/v1/depth", depth)
    app.router.add_get("/fapi/v1/aggTrades", agg_trades)
    app.router.add_get("/fapi/v1/exchangeInfo", exchange_info)
    app.router.add_get("/fapi/v1/time", server_time)
    app.router.add_get("/fapi/v1/ping", ping)
    app.router.add_get("/fapi/v1/premiumIndex", premium_index)
    app.router.add_get("/fapi/v1/openInterest", open_interest)
    app.router.add_get("/fapi/v1/fundingRate", funding_rate)
    app.router.add_get("/fapi/v1/markPriceKlines", mark_price_klines)
    app.router.add_get("/fapi/v1/klines", klines)
    app.router.add_get("/futures/data/openInterestHist", open_interest_hist)
    app.router.add_get("/futures/data/globalLongShortAccountRatio", ratio_handler("global-account"))
    app.router.add_get("/futures/data/topLongShortPositionRatio", ratio_handler("top-position"))
    app.router.add_get("/futures/data/topLongShortAccountRatio", ratio_handler("top-account"))
    app.router.add_get("/futures/data/takerlongshortRatio", taker_ratio)
    app.router.add_get("/api/v3/ticker/bookTicker", spot_book_ticker)
    app.router.add_get("/products/{product_id}/ticker", coinbase_ticker)
