"""Binance USD-M broker (testnet and live): signed REST orders, fills from the user-data stream.

Implements `execution.broker.Broker`:
- `submit` rounds to the symbol filters (qty down to the step; post-only buy price down, sell up), then
  `POST /fapi/v1/order` with `newClientOrderId` = the request's client order id, which the executor
  derives from (signal id, leg, attempt). It returns NEW (accepted) or REJECTED; fills and later
  states arrive through `poll` from the user-data stream (ORDER_TRADE_UPDATE), in exchange order.
  Post-only LIMIT = `timeInForce=GTX`; a GTX that would take is rejected by the exchange (-5022).
- Idempotency: the client order id is the only key. A duplicate (-4116: the order was sent before,
  e.g. by a process that died before recording the fill) or an answer we never got (5xx, timeout:
  unknown state) leads to `GET /fapi/v1/order?origClientOrderId=...` first; a found order is adopted
  (its fills fetched from `userTrades`, so trade ids match what the stream would have said) and never
  re-sent. Only a query that says "does not exist" allows sending again, with the same id, which the
  exchange would refuse as a duplicate anyway. A query that cannot be answered leaves the order in
  unknown state: the broker reports itself unhealthy (the risk guard blocks entries) and retries the
  query on every `poll`.
- `cancel` sends DELETE and waits (bounded) for the stream's terminal event so fills that raced the
  cancel are reported before CANCELED; without it the state comes from the REST answer + `userTrades`.
- Events are de-duplicated (executions by trade id, updates by (state, filled qty)), so REST answers,
  queries and the stream may all report the same thing.
- Restarts: `resume` follows an order a previous run sent (its intent is on the orders topic): it is
  looked up by client id and whatever the exchange knows (state, every fill) is reported; it is never
  sent again. Not found means the previous run died before sending it: REJECTED.
- Reachability (`healthy`, which the risk guard reads): the user-data stream must be connected, no
  order may be in unknown state, and the last REST answer must not have been a 5xx/timeout (or a
  failed reconciliation, `mark_unreachable`). While down, `poll` probes `GET /fapi/v1/time` every
  `probe_interval_s`, so recovery does not wait for the next order. After the stream reconnects,
  events sent meanwhile are lost: every open order is looked up by client id again.
Beyond the protocol: `amend` (PUT, price/qty of an open LIMIT), `place_stop` (reduce-only STOP_MARKET:
a stop the exchange holds even when the executor is down; the executor's own stop exit is a
reduce-only MARKET, so SL is always taker), `positions`/`open_orders` for the reconciler.

Errors are classified in `execution.binance_signing.classify`; -1021 (clock) is retried once after a
time resync, for every signed request (`SignedRestClient.signed`). Keys stay in the REST client;
nothing here logs them.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson
import structlog
from pydantic import SecretStr
from websockets.exceptions import WebSocketException
from websockets.sync.client import connect as ws_connect

from execution.binance_signing import BinanceApiError, ErrorKind, SignedRestClient
from execution.broker import (
    TERMINAL_STATES,
    BrokerEvent,
    Execution,
    OrderRequest,
    OrderUpdate,
)
from execution.domain import BookTop, TradeTick
from execution.exchange_filters import (
    FilterViolation,
    SymbolFilters,
    parse_exchange_info,
    plain,
)
from schemas.catalogue import market_key

log = structlog.get_logger("binance_broker")

LISTEN_KEY_KEEPALIVE_MS = 30 * 60_000
LISTEN_KEY_UNKNOWN = -1125  # "This listenKey does not exist." (expired: 60 min without a keepalive)


class AmendRejected(Exception):
    """The exchange refused a modify; the order is unchanged (message: code and reason)."""


@dataclass(slots=True)
class _Tracked:
    request: OrderRequest
    exchange_order_id: str | None = None
    state: str = "PENDING_NEW"
    filled: float = 0.0
    trade_ids: set[str] = field(default_factory=set)
    cancel_reason: str | None = None
    unknown: bool = False  # sent, answer lost, query not answered yet

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class UserDataStream:
    """The user-data websocket on a thread of its own: raw events into a queue, read by the broker.

    Why a thread with the blocking `websockets` client: the broker is called from the executor's thread
    and must see events without owning an event loop; the queue is the only thing shared.
    """

    def __init__(self, url: str, reconnect_s: float = 1.0) -> None:
        self.url = url
        self.reconnect_s = reconnect_s
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.connections = 0  # successful connects so far (a second one means events may have been missed)
        self._stop = threading.Event()
        self._ws = None
        self._thread = threading.Thread(target=self._run, name="binance-user-stream", daemon=True)

    def start(self, timeout_s: float = 5.0) -> None:
        self._thread.start()
        if not self.connected.wait(timeout_s):
            raise ConnectionError("user-data stream did not connect")

    def stop(self) -> None:
        self._stop.set()
        ws = self._ws
        if ws is not None:
            ws.close()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with ws_connect(self.url, open_timeout=5, close_timeout=1) as ws:
                    self._ws = ws
                    self.connections += 1
                    self.connected.set()
                    for raw in ws:
                        self.events.put(orjson.loads(raw))
            except (OSError, WebSocketException, orjson.JSONDecodeError) as exc:
                if not self._stop.is_set():
                    log.warning("user-data stream dropped", error=type(exc).__name__)
            finally:
                self._ws = None
                self.connected.clear()
            self._stop.wait(self.reconnect_s)


class BinanceBroker:
    """`Broker` for `--mode testnet|live` against Binance USD-M (or the fake exchange in tests)."""

    def __init__(
        self,
        mode: str,
        rest: SignedRestClient,
        filters: dict[str, SymbolFilters],
        *,
        stream: UserDataStream | None = None,
        exchange: str = "binance",
        settle_timeout_s: float = 2.0,
        probe_interval_s: float = 5.0,
        stream_check_after_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mode = mode
        self.rest = rest
        self.accepted_key_problems: list[str] = []  # live: risky permissions the operator accepted (safety.py)
        self.filters = filters
        self.stream = stream
        self.exchange = exchange
        self.settle_timeout_s = settle_timeout_s
        self.probe_interval_s = probe_interval_s
        self._next_probe = 0.0
        self._stream_connections = 0  # connects of the stream already accounted for
        self._monotonic = monotonic
        self._orders: dict[str, _Tracked] = {}
        self._buffer: list[BrokerEvent] = []
        self._last_price: dict[str, float] = {}
        self._rest_down = False
        self._listen_key: str | None = None
        self._listen_key_at = 0
        self._ws_base: str | None = None  # where a renewed listen key's stream is opened
        self._renew_stream = False  # the listen key expired: open a new one at the next poll
        self._next_renewal = 0.0  # monotonic time of the next attempt after a failed renewal
        self._stream_down_since: float | None = None
        self.stream_check_after_s = stream_check_after_s
        self.stream_renewals = 0
        self.account_positions: dict[str, float] = {}  # from ACCOUNT_UPDATE
        self.foreign_events = 0  # stream events of orders this broker does not track
        self.malformed_events = 0  # stream events that could not be read (see _handle)

    @classmethod
    def connect(
        cls, mode: str, rest_url: str, ws_url: str, api_key: SecretStr, api_secret: SecretStr, **kwargs: Any
    ) -> BinanceBroker:
        """Sync the clock, load the filters, open the user-data stream (`ws_url` + `/ws/<listenKey>`).

        Raises (`BinanceApiError`, `ConnectionError`) with nothing left running when any step fails."""
        rest = SignedRestClient(rest_url, api_key, api_secret, timeout_s=kwargs.pop("timeout_s", 5.0))
        stream_timeout_s = kwargs.pop("stream_timeout_s", 5.0)
        broker: BinanceBroker | None = None
        try:
            rest.sync_time()
            filters = parse_exchange_info(rest.request("GET", "/fapi/v1/exchangeInfo"))
            broker = cls(mode, rest, filters, **kwargs)
            broker._ws_base = ws_url.rstrip("/")
            broker._open_stream(stream_timeout_s)
        except BaseException:
            if broker is not None:
                broker.close()
            else:
                rest.close()
            raise
        return broker

    def _open_stream(self, timeout_s: float = 5.0) -> None:
        """A new listen key and its user-data stream (at start, and when the old key expired)."""
        self._listen_key = self.rest.keyed("POST", "/fapi/v1/listenKey")["listenKey"]
        self._listen_key_at = self.rest.now_ms()
        self.stream = UserDataStream(f"{self._ws_base}/ws/{self._listen_key}")
        try:
            self.stream.start(timeout_s)
        except ConnectionError:
            self.stream.stop()  # no thread left retrying in the background
            raise
        self._stream_connections = self.stream.connections
        self._stream_down_since = None

    def close(self) -> None:
        """Stop the user-data stream and drop the REST connection (idempotent)."""
        if self.stream is not None:
            self.stream.stop()
        self.rest.close()

    # ================================================================ Broker protocol
    @property
    def healthy(self) -> bool:
        stream_ok = self.stream is None or self.stream.connected.is_set()
        return stream_ok and not self._rest_down and not any(t.unknown for t in self._orders.values())

    def is_open(self, client_order_id: str) -> bool:
        tracked = self._orders.get(client_order_id)
        return tracked is not None and not tracked.terminal

    def on_trade(self, trade: TradeTick) -> list[BrokerEvent]:
        self._last_price[trade.symbol] = trade.price
        return []

    def on_book(self, book: BookTop) -> None:
        if book.mid is not None:
            self._last_price.setdefault(book.symbol, book.mid)

    def submit(self, request: OrderRequest, now_ms: int) -> list[BrokerEvent]:
        cid = request.client_order_id
        if cid in self._orders:
            return [OrderUpdate(cid, "REJECTED", 0.0, None, None, now_ms, "duplicate client_order_id")]
        try:
            params, sent = self._order_params(request)
        except FilterViolation as exc:
            return [OrderUpdate(cid, "REJECTED", 0.0, None, None, now_ms, f"filter {exc}")]
        self._place(sent, params, now_ms)
        return self._take()

    def cancel(self, client_order_id: str, now_ms: int, reason: str) -> list[BrokerEvent]:
        tracked = self._orders.get(client_order_id)
        if tracked is None or tracked.terminal:
            return self._take()
        tracked.cancel_reason = reason
        try:
            body = self.rest.signed(
                "DELETE", "/fapi/v1/order", {"symbol": tracked.request.symbol, "origClientOrderId": client_order_id}
            )
            self._rest_down = False
        except BinanceApiError as exc:
            self._note(exc)
            # gone already (filled, expired) or answer lost: the exchange's record decides
            self._recover(tracked, now_ms)
            return self._take()
        if not self._settle(client_order_id):
            self._adopt_body(tracked, body, now_ms)
        return self._take()

    def poll(self, now_ms: int) -> list[BrokerEvent]:
        self._drain()
        if self._rest_down:
            self._probe()
        if self.stream is not None and self.stream.connections > self._stream_connections:
            self._stream_connections = self.stream.connections
            missed = [t for t in self._orders.values() if not t.terminal]
            if missed:
                log.warning("user-data stream reconnected: looking up open orders by client id", orders=len(missed))
            for tracked in missed:
                tracked.unknown = True  # recovered just below
        self._keep_stream_alive(now_ms)
        for tracked in [t for t in self._orders.values() if t.unknown]:
            self._recover(tracked, now_ms)
        return self._take()

    def _keep_stream_alive(self, now_ms: int) -> None:
        """Extend the listen key every 30 min; replace it once it expired.

        Binance drops a key after 60 min without a keepalive (an outage longer than that, a suspended
        host) and says so with a ``listenKeyExpired`` event, or, if that was missed, with -1125 to the
        keepalive. The stream thread cannot reconnect with a dead key, so a stream down for
        ``stream_check_after_s`` triggers a keepalive at once instead of waiting out the 30 min. After
        a renewal every open order is looked up by client id: its events may have been missed."""
        if self._listen_key is None or self.stream is None:
            return
        if self.stream.connected.is_set():
            self._stream_down_since = None
        elif self._stream_down_since is None:
            self._stream_down_since = self._monotonic()
        stream_stuck = (
            self._stream_down_since is not None
            and self._monotonic() - self._stream_down_since >= self.stream_check_after_s
        )
        if not self._renew_stream and (stream_stuck or now_ms - self._listen_key_at >= LISTEN_KEY_KEEPALIVE_MS):
            try:
                self.rest.keyed("PUT", "/fapi/v1/listenKey")
                self._listen_key_at = now_ms
                if stream_stuck:
                    self._stream_down_since = self._monotonic()  # the key is fine: check again later
            except BinanceApiError as exc:
                self._note(exc)
                self._renew_stream = exc.code == LISTEN_KEY_UNKNOWN
        if not self._renew_stream or self._monotonic() < self._next_renewal:
            return
        log.warning("user-data listen key expired: opening a new one")
        self.stream.stop()
        try:
            self._open_stream()
        except (BinanceApiError, ConnectionError) as exc:
            if isinstance(exc, BinanceApiError):
                self._note(exc)
            log.warning("user-data stream not renewed yet", error=type(exc).__name__)
            self._next_renewal = self._monotonic() + self.probe_interval_s
            return
        self._renew_stream = False
        self.stream_renewals += 1
        for tracked in self._orders.values():
            if not tracked.terminal:
                tracked.unknown = True

    # ================================================================ beyond the protocol
    def resume(self, request: OrderRequest, now_ms: int) -> list[BrokerEvent]:
        """Follow an order a previous run sent: look it up by client id, report its state and every fill
        the exchange knows; never send it. Not found (the run died before sending): REJECTED."""
        tracked = self._orders.get(request.client_order_id)
        if tracked is None:
            tracked = self._orders[request.client_order_id] = _Tracked(request)
        if not tracked.terminal:
            self._recover(tracked, now_ms)
        return self._take()

    def mark_unreachable(self) -> None:
        """Someone else found the exchange unreachable (reconciliation): unhealthy until a probe answers."""
        self._rest_down = True

    def amend(self, client_order_id: str, now_ms: int, *, price: float, qty: float | None = None) -> list[BrokerEvent]:
        """Move an open LIMIT order (PUT /fapi/v1/order); AmendRejected when the exchange refuses."""
        tracked = self._orders.get(client_order_id)
        if tracked is None or tracked.terminal or tracked.request.type != "LIMIT":
            raise AmendRejected(f"{client_order_id} is not an open limit order")
        req = tracked.request
        f = self.filters[req.symbol]
        try:
            new_price = f.round_price(price, ("down" if req.side == "BUY" else "up") if req.post_only else "nearest")
            new_qty = f.round_qty(req.qty if qty is None else qty)
        except FilterViolation as exc:
            raise AmendRejected(f"filter {exc}") from None
        try:
            self.rest.signed(
                "PUT",
                "/fapi/v1/order",
                {
                    "symbol": req.symbol,
                    "origClientOrderId": client_order_id,
                    "side": req.side,
                    "quantity": plain(new_qty),
                    "price": plain(new_price),
                },
            )
            self._rest_down = False
        except BinanceApiError as exc:
            self._note(exc)
            raise AmendRejected(f"binance {exc.code}: {exc.msg}") from None
        tracked.request = OrderRequest(
            req.client_order_id,
            req.exchange,
            req.symbol,
            req.side,
            req.type,
            float(new_qty),
            float(new_price),
            req.post_only,
            req.reduce_only,
            req.not_before_ms,
        )
        self._drain()
        return self._take()

    def place_stop(
        self,
        client_order_id: str,
        symbol: str,
        side: str,
        qty: float,
        stop_price: float,
        now_ms: int,
        *,
        working_type: str = "MARK_PRICE",
    ) -> list[BrokerEvent]:
        """A reduce-only STOP_MARKET held by the exchange (fills as taker once the stop is touched)."""
        f = self.filters[symbol]
        try:
            q = f.round_qty(qty, market=True)
            # never move a stop towards the market: a sell stop rounds down, a buy stop up
            sp = f.round_price(stop_price, "down" if side == "SELL" else "up")
        except FilterViolation as exc:
            return [OrderUpdate(client_order_id, "REJECTED", 0.0, None, None, now_ms, f"filter {exc}")]
        request = OrderRequest(client_order_id, self.exchange, symbol, side, "MARKET", float(q), reduce_only=True)
        params = {
            "symbol": symbol,
            "side": side,
            "type": "STOP_MARKET",
            "quantity": plain(q),
            "stopPrice": plain(sp),
            "reduceOnly": True,
            "workingType": working_type,
            "newClientOrderId": client_order_id,
        }
        self._place(request, params, now_ms)
        return self._take()

    def query(self, symbol: str, client_order_id: str) -> dict[str, Any]:
        return self.rest.signed("GET", "/fapi/v1/order", {"symbol": symbol, "origClientOrderId": client_order_id})

    def positions(self) -> dict[str, float]:
        """Signed position amount per symbol on the exchange (non-zero only)."""
        rows = self.rest.signed("GET", "/fapi/v2/positionRisk")
        return {r["symbol"]: float(r["positionAmt"]) for r in rows if float(r["positionAmt"]) != 0}

    def open_orders(self) -> list[dict[str, Any]]:
        return self.rest.signed("GET", "/fapi/v1/openOrders")

    def track(self, request: OrderRequest, exchange_order_id: str) -> None:
        """Follow an order this process did not send (reconciliation adopts an orphan)."""
        self._orders.setdefault(request.client_order_id, _Tracked(request, exchange_order_id, "NEW"))

    # ================================================================ internals
    def _order_params(self, request: OrderRequest) -> tuple[dict[str, Any], OrderRequest]:
        f = self.filters.get(request.symbol)
        if f is None:
            raise FilterViolation("symbol", f"{request.symbol} not listed in exchangeInfo")
        market = request.type == "MARKET"
        qty = f.round_qty(request.qty, market=market)
        params: dict[str, Any] = {
            "symbol": request.symbol,
            "side": request.side,
            "type": request.type,
            "quantity": plain(qty),
            "newClientOrderId": request.client_order_id,
        }
        price: Decimal | None = None
        if request.type == "LIMIT":
            if request.price is None:
                raise FilterViolation("price", "limit order without a price")
            rounding = ("down" if request.side == "BUY" else "up") if request.post_only else "nearest"
            price = f.round_price(request.price, rounding)
            params.update(price=plain(price), timeInForce="GTX" if request.post_only else "GTC")
        if request.reduce_only:
            params["reduceOnly"] = True
        reference = (
            price
            if price is not None
            else (Decimal(str(self._last_price[request.symbol])) if request.symbol in self._last_price else None)
        )
        if reference is not None:
            f.check_notional(qty, reference, reduce_only=request.reduce_only)
        sent = OrderRequest(
            request.client_order_id,
            request.exchange,
            request.symbol,
            request.side,
            request.type,
            float(qty),
            float(price) if price is not None else None,
            request.post_only,
            request.reduce_only,
            request.not_before_ms,
        )
        return params, sent

    def _place(self, request: OrderRequest, params: dict[str, Any], now_ms: int, resends: int = 1) -> None:
        """Send one order; its events go to the buffer (the public caller returns them)."""
        cid = request.client_order_id
        tracked = _Tracked(request)
        self._orders[cid] = tracked  # before sending: stream events may overtake the REST answer
        try:
            body = self._post(params)
        except BinanceApiError as exc:
            self._note(exc)
            if exc.kind in (ErrorKind.DUPLICATE, ErrorKind.UNKNOWN_STATE):
                log.warning("order state unknown: querying by client id", client_order_id=cid, error=exc.kind.value)
                self._recover(tracked, now_ms, resend=params if resends > 0 else None, resends=resends - 1)
            else:
                tracked.state = "REJECTED"
                self._buffer.append(
                    OrderUpdate(cid, "REJECTED", 0.0, None, None, now_ms, f"binance {exc.code}: {exc.msg}")
                )
            return
        self._rest_down = False
        tracked.exchange_order_id = str(body["orderId"])
        self._update(tracked, "NEW", 0.0, None, now_ms)
        self._drain()

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.rest.signed("POST", "/fapi/v1/order", params)  # -1021: resynced and resent by the client

    def _recover(self, tracked: _Tracked, now_ms: int, resend: dict[str, Any] | None = None, resends: int = 0) -> None:
        """Find the order by client id and adopt its state; resend only when it provably does not exist."""
        req = tracked.request
        try:
            body = self.query(req.symbol, req.client_order_id)
        except BinanceApiError as exc:
            self._note(exc)
            if exc.kind is ErrorKind.NOT_FOUND and resend is not None:
                tracked.unknown = False
                del self._orders[req.client_order_id]
                self._place(req, resend, now_ms, resends)
                return
            if exc.kind is ErrorKind.NOT_FOUND:
                tracked.unknown = False
                self._update(
                    tracked,
                    "REJECTED" if tracked.state == "PENDING_NEW" else "EXPIRED",
                    tracked.filled,
                    None,
                    now_ms,
                    "not found at the exchange",
                )
                return
            tracked.unknown = True
            return
        tracked.unknown = False
        self._rest_down = False
        self._drain()
        self._adopt_body(tracked, body, now_ms)

    def _adopt_body(self, tracked: _Tracked, body: dict[str, Any], now_ms: int) -> None:
        """Bring our view of one order up to an exchange order body (fills from userTrades)."""
        tracked.exchange_order_id = str(body["orderId"])
        if tracked.state == "PENDING_NEW":
            self._update(tracked, "NEW", 0.0, None, int(body.get("time", now_ms)))
        executed = float(body.get("executedQty", 0))
        if executed > tracked.filled + 1e-12:
            rows = self.rest.signed(
                "GET", "/fapi/v1/userTrades", {"symbol": tracked.request.symbol, "orderId": body["orderId"]}
            )
            for row in sorted(rows, key=lambda r: r["id"]):
                self._execution(
                    tracked,
                    str(row["id"]),
                    float(row["price"]),
                    float(row["qty"]),
                    float(row["commission"]),
                    row["commissionAsset"],
                    bool(row["maker"]),
                    int(row["time"]),
                )
        status = body["status"]
        avg = float(body.get("avgPrice") or 0) or None
        self._update(tracked, status, executed, avg, int(body.get("updateTime", now_ms)))

    def _settle(self, cid: str) -> bool:
        """Read the stream until `cid` is terminal or the settle timeout passes; True if it settled."""
        deadline = self._monotonic() + self.settle_timeout_s
        tracked = self._orders[cid]
        while not tracked.terminal:
            if self.stream is None:
                return False
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                return False
            try:
                self._handle(self.stream.events.get(timeout=remaining))
            except queue.Empty:
                return False
        return True

    def _drain(self) -> None:
        if self.stream is None:
            return
        while True:
            try:
                self._handle(self.stream.events.get_nowait())
            except queue.Empty:
                return

    def _handle(self, event: Any) -> None:
        """One user-data stream event. A malformed one (not an object, a field missing or of the wrong
        type) must not end the executor's poll: it is counted and logged, and the order it names, if
        this broker tracks it, is looked up by client id on the next poll (its state is unknown now)."""
        try:
            self._apply_event(event)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            self.malformed_events += 1
            log.error("malformed user-data event ignored", error=f"{type(exc).__name__}: {exc}"[:200])
            o = event.get("o") if isinstance(event, dict) else None
            cid = o.get("c") if isinstance(o, dict) else None
            tracked = self._orders.get(cid) if isinstance(cid, str) else None
            if tracked is not None and not tracked.terminal:
                tracked.unknown = True

    def _apply_event(self, event: dict[str, Any]) -> None:
        kind = event.get("e")
        if kind == "listenKeyExpired":
            self._renew_stream = True
            return
        if kind == "ACCOUNT_UPDATE":
            for p in event.get("a", {}).get("P", []):
                self.account_positions[p["s"]] = float(p["pa"])
            return
        if kind != "ORDER_TRADE_UPDATE":
            return
        o = event["o"]
        tracked = self._orders.get(o["c"])
        if tracked is None:
            self.foreign_events += 1
            return
        tracked.exchange_order_id = str(o["i"])
        if o["x"] == "TRADE":
            self._execution(
                tracked,
                str(o["t"]),
                float(o["L"]),
                float(o["l"]),
                float(o.get("n") or 0),
                o.get("N") or "USDT",
                bool(o.get("m")),
                int(o["T"]),
            )
        if tracked.state == "PENDING_NEW" and o["X"] != "NEW":
            self._update(tracked, "NEW", 0.0, None, int(event["E"]))
        self._update(tracked, o["X"], float(o["z"]), float(o.get("ap") or 0) or None, int(event["E"]))

    def _execution(
        self,
        tracked: _Tracked,
        trade_id: str,
        price: float,
        qty: float,
        fee: float,
        fee_asset: str,
        maker: bool,
        time_ms: int,
    ) -> None:
        key = f"b:{tracked.request.symbol}:{trade_id}"
        if key in tracked.trade_ids:
            return
        tracked.trade_ids.add(key)
        self._buffer.append(
            Execution(
                tracked.request.client_order_id,
                tracked.exchange_order_id or "",
                key,
                tracked.request.side,
                price,
                qty,
                fee,
                fee_asset,
                "maker" if maker else "taker",
                price,
                time_ms,
            )
        )

    def _update(
        self,
        tracked: _Tracked,
        state: str,
        filled: float,
        avg: float | None,
        event_time: int,
        reason: str | None = None,
    ) -> None:
        if tracked.terminal or (state == tracked.state and abs(filled - tracked.filled) < 1e-12):
            return
        if state == "CANCELED":
            reason = reason or tracked.cancel_reason
        elif state == "EXPIRED":
            reason = reason or "expired"
        tracked.state, tracked.filled = state, filled
        self._buffer.append(
            OrderUpdate(
                tracked.request.client_order_id, state, filled, avg, tracked.exchange_order_id, event_time, reason
            )
        )

    def _note(self, exc: BinanceApiError) -> None:
        self._rest_down = exc.kind is ErrorKind.UNKNOWN_STATE

    def _probe(self) -> None:
        """While marked down: `GET /fapi/v1/time` at most every `probe_interval_s`; an answer clears it."""
        now = self._monotonic()
        if now < self._next_probe:
            return
        self._next_probe = now + self.probe_interval_s
        try:
            self.rest.request("GET", "/fapi/v1/time")
        except BinanceApiError:
            return
        self._rest_down = False
        log.info("exchange reachable again")

    def _take(self) -> list[BrokerEvent]:
        events, self._buffer = self._buffer, []
        return events

    def market_key(self, symbol: str) -> str:
        return market_key(self.exchange, symbol)
