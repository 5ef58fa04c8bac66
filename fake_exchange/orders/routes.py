"""The fake's order API on its aiohttp REST app: signed endpoints, user-data websocket, control switches.

Binance USD-M shapes: `POST/GET/DELETE/PUT /fapi/v1/order`, `GET /fapi/v1/openOrders`,
`GET /fapi/v2/positionRisk`, `GET /fapi/v2/balance`, `GET /fapi/v1/userTrades`, `POST/PUT
/fapi/v1/listenKey`, and the user-data stream at `ws://<rest host>/ws/<listenKey>` (served by the same
aiohttp app, so no second server). Signed endpoints verify `X-MBX-APIKEY`, the HMAC-SHA256 `signature`
of the query string (TEST_API_KEY / TEST_API_SECRET) and `timestamp` within `recvWindow` (-1021).

The account (`engine.AccountEngine`) follows the replay: a follower task feeds it every replayed
aggTrade, markPriceUpdate, bookTicker and depthUpdate, with the book's levels where the replay has
them, so a replay fills against the book as the paper broker does: a depth diff gives the book after
it (the replay's `DepthTimeline`, its best `BOOK_LEVELS` a side), a bookTicker its best level on each
side with its size, the last depth book's deeper levels kept behind it. Tests that need exact prices
post them instead (`POST /_control/orders/market`).

Control (`/_control/orders/...`, not signed):
- `POST market` `{"symbol", "price"?, "qty"?, "taker_side"?, "mark"?, "bid"?, "ask"?, "bids"?, "asks"?,
  "time"?}` a trade / mark / touch / book levels (`[[price, qty], ...]`, best first: the matcher queues
  limits behind them and walks them with market orders; a touch without levels forgets them);
- `POST faults` `{"fail_next": N, "mode": "error_before"|"error_after"|"timeout_after"|"slow", "delay_s"}`:
  the next N order requests (POST/DELETE/PUT /fapi/v1/order) answer 503 without acting (`error_before`),
  act and then answer 503 (`error_after`), act and answer 503 only after `delay_s` (`timeout_after`), or
  act and answer as usual, `delay_s` late (`slow`: a slow venue or link, the round-trip SLO's case);
- `POST orphan` `{"symbol", "position_amt", "entry_price"}` and/or `{"order": {...order params}}`: state
  the broker did not create;
- `POST config` `{"queue": "through"|"touch", "cap_by_trade_qty": bool, "api_restrictions": {...}}`
  (the last merged into what `GET /sapi/v1/account/apiRestrictions` answers: by default a key that can
  trade futures, cannot withdraw or transfer, and is IP-restricted);
- `GET state`: open orders, positions, placements per client id, requests seen, requests refused for
  their timestamp (-1021).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from .. import generated_bodies as gen
from ..rest_api import STATE_KEY, json_response
from ..state import ExchangeState
from .engine import AccountEngine, OrderError, SymbolRules

#: levels a side the follower passes to the matcher from a replayed depth book: what md.book carries
#: at most; the deeper ones never fill a simulated order of test size, and converting and handing over
#: the whole recorded book on every diff costs the follower for nothing
BOOK_LEVELS = 20
TEST_API_KEY = "fake-test-api-key-0123456789"
TEST_API_SECRET = "fake-test-api-secret-9876543210"  # nosec B105 # the fake exchange's published test key, not a credential


class OrderVenue:
    """The account engine plus what the HTTP side needs: listen keys, websockets, faults, counters."""

    def __init__(self, state: ExchangeState, api_key: str = TEST_API_KEY, api_secret: str = TEST_API_SECRET) -> None:
        self.state = state
        self.api_key, self.api_secret = api_key, api_secret
        self.engine = AccountEngine(rules_from_exchange_info(exchange_info_body(state)))
        self.listen_keys: set[str] = set()
        self.sockets: set[web.WebSocketResponse] = set()
        self.sent_events = 0
        self.fail_next = 0
        self.fail_mode = "error_before"
        self.delay_s = 2.0
        self.order_requests: list[tuple[str, str]] = []  # (method, client id) of every authenticated order request
        #: (method, path, code) of every signed request refused for its timestamp (-1021)
        self.refused: list[tuple[str, str, int]] = []
        self.replayed = 0
        #: the follower's newest depth book per symbol (its levels, Decimal), and per symbol the book
        #: frames replayed but not handed to the engine yet: [depth diff (frame index, time) or None,
        #: bookTicker after it (payload, time) or None] (see `_book_now`)
        self.depth: dict[str, tuple[tuple[tuple[Decimal, Decimal], ...], tuple[tuple[Decimal, Decimal], ...]]] = {}
        self._book_due: dict[str, list[Any]] = {}
        #: GET /sapi/v1/account/apiRestrictions (Binance's spot API, signed): the key's permissions
        self.api_restrictions: dict[str, Any] = {
            "ipRestrict": True,
            "createTime": 1_700_000_000_000,
            "enableReading": True,
            "enableFutures": True,
            "enableWithdrawals": False,
            "enableInternalTransfer": False,
            "permitsUniversalTransfer": False,
            "enableSpotAndMarginTrading": False,
            "enableMargin": False,
            "enableVanillaOptions": False,
            "enablePortfolioMarginTrading": False,
            "enableFixApiTrade": False,
            "enableFixReadOnly": False,
        }

    async def publish(self) -> None:
        """Send the engine's new user-data events to every connected stream, in order."""
        events = self.engine.events[self.sent_events :]
        self.sent_events = len(self.engine.events)
        for event in events:
            data = orjson.dumps(event).decode()
            for ws in list(self.sockets):
                try:
                    await ws.send_str(data)
                except (ConnectionError, RuntimeError):
                    self.sockets.discard(ws)

    def follow(self, state: ExchangeState) -> None:
        """Feed the frames replayed since the last call to the account."""
        frames = state.recording.frames[self.replayed : state.position]
        self.replayed = state.position
        for frame in frames:
            data = frame.payload
            if not isinstance(data, dict):
                continue
            symbol = str(data.get("s", "")).upper()
            if symbol not in self.engine.rules:
                continue
            event = data.get("e")
            now = int(data.get("E") or data.get("T") or state.now_ms())
            if event == "aggTrade":  # m: the buyer is the maker, so the taker sold
                taker = "SELL" if data.get("m") else "BUY"
                self.engine.on_trade(symbol, Decimal(str(data["p"])), Decimal(str(data["q"])), now, taker)
            elif event == "markPriceUpdate":
                self.engine.on_mark(symbol, Decimal(str(data["p"])), now)
            elif event in ("depthUpdate", "bookTicker"):
                if event == "depthUpdate":  # the book after it supersedes an earlier bookTicker
                    self._book_due[symbol] = [(frame.index, now), None]
                else:
                    self._book_due.setdefault(symbol, [None, None])[1] = (data, now)
                if self.engine.open_orders(symbol):  # every book may shrink a working order's queue
                    self._book_now(state, symbol)
        for symbol in list(self._book_due):  # the book an order placed before the next frames sees
            self._book_now(state, symbol)

    def _book_now(self, state: ExchangeState, symbol: str) -> None:
        """Hand the engine the symbol's book frames not handed over yet: the book after the newest depth
        diff, then a bookTicker that came after it. While the symbol has working orders every book frame
        is handed over as it is replayed (each may shrink a queue); without orders only the newest
        matter, so they are built once per follow (the replay may send hundreds of frames between two),
        before any order can be placed."""
        depth, ticker = self._book_due.pop(symbol, (None, None))
        timeline = state.timelines.get(symbol)
        book = timeline.snapshot_at(depth[0]) if depth is not None and timeline is not None else None
        if book is not None and depth is not None:  # the book after the diff at that frame
            bids, asks = _decimal_levels(book.bids[:BOOK_LEVELS]), _decimal_levels(book.asks[:BOOK_LEVELS])
            self.depth[symbol] = (bids, asks)
            best_bid, best_ask = bids[0][0] if bids else None, asks[0][0] if asks else None
            self.engine.on_book(symbol, best_bid, best_ask, depth[1], bids, asks)
        if ticker is not None:
            self._touch(symbol, *ticker)

    def _touch(self, symbol: str, data: dict[str, Any], now: int) -> None:
        """A bookTicker: the best bid and ask with their sizes (B, A), the last depth book's levels
        beyond them kept behind; without sizes only the touch (the engine forgets the levels)."""
        bid, ask = Decimal(str(data["b"])), Decimal(str(data["a"]))
        if data.get("B") is None or data.get("A") is None:
            self.engine.on_book(symbol, bid, ask, now)
            return
        deeper_bids, deeper_asks = self.depth.get(symbol, ((), ()))
        bids = ((bid, Decimal(str(data["B"]))), *(level for level in deeper_bids if level[0] < bid))
        asks = ((ask, Decimal(str(data["A"]))), *(level for level in deeper_asks if level[0] > ask))
        self.engine.on_book(symbol, bid, ask, now, bids, asks)


VENUE_KEY = web.AppKey("fake_exchange_orders", OrderVenue)


def exchange_info_body(state: ExchangeState) -> dict[str, Any]:
    recorded = state.recording.exchange_info
    if recorded is not None:
        return orjson.loads(recorded)
    return gen.exchange_info(list(state.recording.symbols), state.market.price_decimals, state.now_ms())


def rules_from_exchange_info(body: dict[str, Any]) -> dict[str, SymbolRules]:
    rules = {}
    for info in body.get("symbols", []):
        f = {x["filterType"]: x for x in info.get("filters", [])}
        rules[info["symbol"]] = SymbolRules(
            Decimal(f.get("PRICE_FILTER", {}).get("tickSize", "0.01")),
            Decimal(f.get("LOT_SIZE", {}).get("stepSize", "0.001")),
            Decimal(str(f.get("MIN_NOTIONAL", {}).get("notional", "0"))),
        )
    return rules


# -- authentication -------------------------------------------------------------------------------
def authenticate(request: web.Request, *, signed: bool = True) -> dict[str, str]:
    venue = request.app[VENUE_KEY]
    key = request.headers.get("X-MBX-APIKEY")
    if not key:
        raise OrderError(-2014, "API-key format invalid.", 401)
    if not hmac.compare_digest(key, venue.api_key):
        raise OrderError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    params = dict(request.query)
    if not signed:
        return params
    query, sep, signature = request.query_string.rpartition("&signature=")
    expected = hmac.new(venue.api_secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    if not sep or not hmac.compare_digest(signature, expected):
        raise OrderError(-1022, "Signature for this request is not valid.")
    try:
        ts, window = int(params["timestamp"]), int(params.get("recvWindow", "5000"))
    except (KeyError, ValueError):
        raise OrderError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") from None
    now = venue.state.now_ms()
    if ts > now + 1000 or now - ts > window:
        venue.refused.append((request.method, request.path, -1021))
        raise OrderError(-1021, "Timestamp for this request is outside of the recvWindow.")
    params.pop("signature", None)
    return params


def guarded(handler):
    async def wrapper(request: web.Request) -> web.StreamResponse:
        venue = request.app[VENUE_KEY]
        try:
            response = await handler(request)
        except OrderError as exc:
            response = json_response({"code": exc.code, "msg": exc.msg}, exc.status)
        await venue.publish()
        return response

    return wrapper


async def _order_fault(venue: OrderVenue, act) -> web.Response:
    """Apply the `fail_next` switch around an order action (`act` returns the success body)."""
    if venue.fail_next <= 0:
        return json_response(act())
    venue.fail_next -= 1
    if venue.fail_mode == "slow":
        body = act()
        await venue.publish()
        await asyncio.sleep(venue.delay_s)
        return json_response(body)
    if venue.fail_mode == "error_before":
        return json_response({"code": -1001, "msg": "Internal error; unable to process your request."}, 503)
    act()
    await venue.publish()
    if venue.fail_mode == "timeout_after":
        await asyncio.sleep(venue.delay_s)
    return json_response({"code": -1001, "msg": "Internal error; unable to process your request."}, 503)


# -- endpoints ------------------------------------------------------------------------------------
@guarded
async def new_order(request: web.Request) -> web.Response:
    p = authenticate(request)
    venue = request.app[VENUE_KEY]
    venue.order_requests.append(("POST", p.get("newClientOrderId", "")))
    return await _order_fault(venue, lambda: venue.engine.place(p, venue.state.now_ms()).body())


@guarded
async def query_order(request: web.Request) -> web.Response:
    p = authenticate(request)
    order = request.app[VENUE_KEY].engine.find(p.get("symbol", ""), p.get("orderId"), p.get("origClientOrderId"))
    return json_response(order.body())


@guarded
async def cancel_order(request: web.Request) -> web.Response:
    p = authenticate(request)
    venue = request.app[VENUE_KEY]
    venue.order_requests.append(("DELETE", p.get("origClientOrderId", "")))
    return await _order_fault(
        venue,
        lambda: venue.engine.cancel(
            p.get("symbol", ""), p.get("orderId"), p.get("origClientOrderId"), venue.state.now_ms()
        ).body(),
    )


@guarded
async def modify_order(request: web.Request) -> web.Response:
    p = authenticate(request)
    venue = request.app[VENUE_KEY]
    venue.order_requests.append(("PUT", p.get("origClientOrderId", "")))
    return await _order_fault(venue, lambda: venue.engine.modify(p, venue.state.now_ms()).body())


@guarded
async def open_orders(request: web.Request) -> web.Response:
    p = authenticate(request)
    return json_response([o.body() for o in request.app[VENUE_KEY].engine.open_orders(p.get("symbol"))])


@guarded
async def position_risk(request: web.Request) -> web.Response:
    p = authenticate(request)
    return json_response(request.app[VENUE_KEY].engine.position_rows(p.get("symbol")))


@guarded
async def balance(request: web.Request) -> web.Response:
    authenticate(request)
    b = str(request.app[VENUE_KEY].engine.balance)
    return json_response(
        [
            {
                "accountAlias": "fake",
                "asset": "USDT",
                "balance": b,
                "crossWalletBalance": b,
                "availableBalance": b,
                "maxWithdrawAmount": b,
                "marginAvailable": True,
                "updateTime": 0,
            }
        ]
    )


@guarded
async def user_trades(request: web.Request) -> web.Response:
    p = authenticate(request)
    engine = request.app[VENUE_KEY].engine
    rows = [
        t
        for t in engine.trades
        if t["symbol"] == p.get("symbol") and (not p.get("orderId") or str(t["orderId"]) == p["orderId"])
    ]
    return json_response(rows)


@guarded
async def listen_key(request: web.Request) -> web.Response:
    authenticate(request, signed=False)
    venue = request.app[VENUE_KEY]
    if request.method == "POST":
        key = secrets.token_hex(16)
        venue.listen_keys.add(key)
        return json_response({"listenKey": key})
    if not venue.listen_keys:  # keepalive of an expired key, as Binance answers it
        return json_response({"code": -1125, "msg": "This listenKey does not exist."}, 400)
    return json_response({})


async def user_stream(request: web.Request) -> web.StreamResponse:
    venue = request.app[VENUE_KEY]
    if request.match_info["listen_key"] not in venue.listen_keys:
        return json_response({"code": -1125, "msg": "This listenKey does not exist."}, 400)
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    venue.sent_events = len(venue.engine.events)  # a new stream sees events from now on, as on Binance
    venue.sockets.add(ws)
    try:
        async for msg in ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
    finally:
        venue.sockets.discard(ws)
    return ws


# -- control ----------------------------------------------------------------------------------------
async def _json(request: web.Request) -> dict[str, Any]:
    body = orjson.loads(await request.read() or b"{}")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


async def control_market(request: web.Request) -> web.Response:
    venue = request.app[VENUE_KEY]
    body = await _json(request)
    symbol, now = body["symbol"], int(body.get("time", venue.state.now_ms()))
    if "bid" in body or "ask" in body or "bids" in body or "asks" in body:
        bids, asks = _levels(body.get("bids")), _levels(body.get("asks"))
        bid = _maybe(body.get("bid")) if "bid" in body else (bids[0][0] if bids else None)
        ask = _maybe(body.get("ask")) if "ask" in body else (asks[0][0] if asks else None)
        venue.engine.on_book(symbol, bid, ask, now, bids, asks)
    if "mark" in body:
        venue.engine.on_mark(symbol, Decimal(str(body["mark"])), now)
    if "price" in body:
        venue.engine.on_trade(symbol, Decimal(str(body["price"])), _maybe(body.get("qty")), now, body.get("taker_side"))
    await venue.publish()
    return json_response({"ok": True})


async def control_faults(request: web.Request) -> web.Response:
    venue = request.app[VENUE_KEY]
    body = await _json(request)
    venue.fail_next = int(body.get("fail_next", venue.fail_next))
    venue.fail_mode = body.get("mode", venue.fail_mode)
    venue.delay_s = float(body.get("delay_s", venue.delay_s))
    return json_response({"fail_next": venue.fail_next, "mode": venue.fail_mode})


async def control_orphan(request: web.Request) -> web.Response:
    venue = request.app[VENUE_KEY]
    body = await _json(request)
    now = venue.state.now_ms()
    result: dict[str, Any] = {}
    if "position_amt" in body:
        venue.engine.inject_position(
            body["symbol"], Decimal(str(body["position_amt"])), Decimal(str(body.get("entry_price", "0"))), now
        )
    if "order" in body:
        try:
            result["order"] = venue.engine.place({k: str(v) for k, v in body["order"].items()}, now).body()
        except OrderError as exc:
            return json_response({"code": exc.code, "msg": exc.msg}, 400)
    await venue.publish()
    return json_response(result)


async def control_expire_listen_keys(request: web.Request) -> web.Response:
    """Expire every listen key and close its streams, with Binance's ``listenKeyExpired`` event first
    unless ``{"silent": true}`` (an expiry the client never hears about)."""
    venue = request.app[VENUE_KEY]
    body = await _json(request)
    now = venue.state.now_ms()
    for ws in list(venue.sockets):
        if not body.get("silent"):
            await ws.send_str(orjson.dumps({"e": "listenKeyExpired", "E": now}).decode())
        await ws.close()
    venue.sockets.clear()
    expired = len(venue.listen_keys)
    venue.listen_keys.clear()
    return json_response({"expired": expired})


async def control_config(request: web.Request) -> web.Response:
    venue = request.app[VENUE_KEY]
    engine = venue.engine
    body = await _json(request)
    engine.queue = body.get("queue", engine.queue)
    engine.cap_by_trade_qty = bool(body.get("cap_by_trade_qty", engine.cap_by_trade_qty))
    venue.api_restrictions.update(body.get("api_restrictions", {}))
    return json_response(
        {"queue": engine.queue, "cap_by_trade_qty": engine.cap_by_trade_qty, "api_restrictions": venue.api_restrictions}
    )


@guarded
async def api_restrictions(request: web.Request) -> web.Response:
    authenticate(request)
    return json_response(request.app[VENUE_KEY].api_restrictions)


async def control_state(request: web.Request) -> web.Response:
    venue = request.app[VENUE_KEY]
    engine = venue.engine
    return json_response(
        {
            "open_orders": [o.body() for o in engine.open_orders(None)],
            "orders": [o.body() for o in engine.orders.values()],
            "positions": {s: {"amount": str(p.amount), "entry": str(p.entry)} for s, p in engine.positions.items()},
            "placements": engine.placements,
            "order_requests": venue.order_requests,
            "refused": venue.refused,
            "streams": len(venue.sockets),
        }
    )


def _maybe(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _decimal_levels(levels: Any) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((Decimal(price), Decimal(qty)) for price, qty in levels)


def _levels(value: Any) -> tuple[tuple[Decimal, Decimal], ...] | None:
    """`[[price, qty], ...]` as Decimal pairs; None when not sent."""
    if value is None:
        return None
    return tuple((Decimal(str(price)), Decimal(str(qty))) for price, qty in value)


async def _follow_replay(app: web.Application):
    venue = app[VENUE_KEY]

    async def loop() -> None:
        while True:
            if venue.replayed < venue.state.position:
                venue.follow(venue.state)
                await venue.publish()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(loop(), name="fake-exchange-orders-follower")
    yield
    task.cancel()
    for ws in list(venue.sockets):
        await ws.close()


def add_order_routes(app: web.Application) -> OrderVenue:
    """Mount the order API on the fake's REST app (needs `STATE_KEY` set); returns the venue."""
    venue = OrderVenue(app[STATE_KEY])
    app[VENUE_KEY] = venue
    r = app.router
    r.add_post("/fapi/v1/order", new_order)
    r.add_get("/fapi/v1/order", query_order)
    r.add_delete("/fapi/v1/order", cancel_order)
    r.add_put("/fapi/v1/order", modify_order)
    r.add_get("/fapi/v1/openOrders", open_orders)
    r.add_get("/fapi/v2/positionRisk", position_risk)
    r.add_get("/fapi/v2/balance", balance)
    r.add_get("/fapi/v1/userTrades", user_trades)
    r.add_post("/fapi/v1/listenKey", listen_key)
    r.add_get("/sapi/v1/account/apiRestrictions", api_restrictions)
    r.add_put("/fapi/v1/listenKey", listen_key)
    r.add_get("/ws/{listen_key}", user_stream)
    r.add_post("/_control/orders/market", control_market)
    r.add_post("/_control/orders/faults", control_faults)
    r.add_post("/_control/orders/orphan", control_orphan)
    r.add_post("/_control/orders/config", control_config)
    r.add_post("/_control/orders/expire_listen_keys", control_expire_listen_keys)
    r.add_get("/_control/orders/state", control_state)
    app.cleanup_ctx.append(_follow_replay)
    return venue
