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
import time
from collections.abc import Callable
from typing import Any

import structlog
from pydantic import SecretStr

from execution.binance_order_params import amend_params, order_params, stop_params
from execution.binance_orders import OrderLedger, TrackedOrder
from execution.binance_signing import BinanceApiError, ErrorKind, SignedRestClient
from execution.binance_user_stream import (  # noqa: F401 - the stream's names, importable from here as before
    LISTEN_KEY_KEEPALIVE_MS,
    LISTEN_KEY_UNKNOWN,
    UserDataSession,
    UserDataStream,
)
from execution.broker import BrokerEvent, OrderRequest, OrderUpdate
from execution.domain import BookTop, TradeTick
from execution.exchange_filters import FilterViolation, SymbolFilters, parse_exchange_info
from schemas.catalogue import market_key

log = structlog.get_logger("binance_broker")

_Tracked = TrackedOrder  # the name tests and older callers use


class AmendRejected(Exception):
    """The exchange refused a modify; the order is unchanged (message: code and reason)."""


class BinanceBroker:
    """`Broker` for `--mode testnet|live` against Binance USD-M (or the fake exchange in tests).

    Its parts: `OrderLedger` (tracked orders, de-duplicated events), `UserDataSession` (the listen key
    and the user-data stream), `binance_order_params` (rounding to the filters); this class sends the
    requests and decides what an answer, or its absence, means for an order."""

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
        self.exchange = exchange
        self.settle_timeout_s = settle_timeout_s
        self.probe_interval_s = probe_interval_s
        self._next_probe = 0.0
        self._monotonic = monotonic
        self._ledger = OrderLedger()
        self._orders = self._ledger.orders  # the same dict: client order id -> TrackedOrder
        self._last_price: dict[str, float] = {}
        self._rest_down = False
        self._session = UserDataSession(
            rest,
            stream=stream,
            retry_s=probe_interval_s,
            stream_check_after_s=stream_check_after_s,
            monotonic=monotonic,
            on_error=self._note,
        )
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
            broker._session.ws_base = ws_url.rstrip("/")
            broker._session.open(stream_timeout_s)
        except BaseException:
            if broker is not None:
                broker.close()
            else:
                rest.close()
            raise
        return broker

    @property
    def stream(self) -> UserDataStream | None:
        """The user-data stream now (a renewed listen key opens a new one)."""
        return self._session.stream

    @property
    def stream_renewals(self) -> int:
        return self._session.renewals

    def close(self) -> None:
        """Stop the user-data stream and drop the REST connection (idempotent)."""
        self._session.close()
        self.rest.close()

    # ================================================================ Broker protocol
    @property
    def healthy(self) -> bool:
        return self._session.connected and not self._rest_down and not self._ledger.unknown_orders()

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
            params, sent = order_params(request, self.filters, self._last_price.get(request.symbol))
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
        if self._session.reconnected():
            missed = self._ledger.open_orders()
            if missed:
                log.warning("user-data stream reconnected: looking up open orders by client id", orders=len(missed))
            for tracked in missed:
                tracked.unknown = True  # recovered just below
        if self._session.keep_alive(now_ms):  # a new listen key: events of the old one may be lost
            for tracked in self._ledger.open_orders():
                tracked.unknown = True
        for tracked in self._ledger.unknown_orders():
            self._recover(tracked, now_ms)
        return self._take()

    # ================================================================ beyond the protocol
    def resume(self, request: OrderRequest, now_ms: int) -> list[BrokerEvent]:
        """Follow an order a previous run sent: look it up by client id, report its state and every fill
        the exchange knows; never send it. Not found (the run died before sending): REJECTED."""
        tracked = self._orders.get(request.client_order_id)
        if tracked is None:
            tracked = self._orders[request.client_order_id] = TrackedOrder(request)
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
        try:
            params, amended = amend_params(tracked.request, self.filters[tracked.request.symbol], price, qty)
        except FilterViolation as exc:
            raise AmendRejected(f"filter {exc}") from None
        try:
            self.rest.signed("PUT", "/fapi/v1/order", params)
            self._rest_down = False
        except BinanceApiError as exc:
            self._note(exc)
            raise AmendRejected(f"binance {exc.code}: {exc.msg}") from None
        tracked.request = amended
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
            params, request = stop_params(
                client_order_id, self.exchange, f, symbol, side, qty, stop_price, working_type
            )
        except FilterViolation as exc:
            return [OrderUpdate(client_order_id, "REJECTED", 0.0, None, None, now_ms, f"filter {exc}")]
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
        self._orders.setdefault(request.client_order_id, TrackedOrder(request, exchange_order_id, "NEW"))

    # ================================================================ internals
    def _place(self, request: OrderRequest, params: dict[str, Any], now_ms: int, resends: int = 1) -> None:
        """Send one order; its events go to the buffer (the public caller returns them)."""
        cid = request.client_order_id
        tracked = TrackedOrder(request)
        self._orders[cid] = tracked  # before sending: stream events may overtake the REST answer
        try:
            body = self._post(params)
        except BinanceApiError as exc:
            self._note(exc)
            if exc.kind in (ErrorKind.DUPLICATE, ErrorKind.UNKNOWN_STATE):
                log.warning("order state unknown: querying by client id", client_order_id=cid, error=exc.kind.value)
                self._recover(tracked, now_ms, resend=params if resends > 0 else None, resends=resends - 1)
            else:
                self._ledger.reject(tracked, now_ms, f"binance {exc.code}: {exc.msg}")
            return
        self._rest_down = False
        tracked.exchange_order_id = str(body["orderId"])
        self._ledger.update(tracked, "NEW", 0.0, None, now_ms)
        self._drain()

    def _post(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.rest.signed("POST", "/fapi/v1/order", params)  # -1021: resynced and resent by the client

    def _recover(
        self, tracked: TrackedOrder, now_ms: int, resend: dict[str, Any] | None = None, resends: int = 0
    ) -> None:
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
                self._ledger.update(
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

    def _adopt_body(self, tracked: TrackedOrder, body: dict[str, Any], now_ms: int) -> None:
        """Bring our view of one order up to an exchange order body (fills from userTrades)."""
        tracked.exchange_order_id = str(body["orderId"])
        if tracked.state == "PENDING_NEW":
            self._ledger.update(tracked, "NEW", 0.0, None, int(body.get("time", now_ms)))
        executed = float(body.get("executedQty", 0))
        if executed > tracked.filled + 1e-12:
            rows = self.rest.signed(
                "GET", "/fapi/v1/userTrades", {"symbol": tracked.request.symbol, "orderId": body["orderId"]}
            )
            self._ledger.user_trades(tracked, rows)
        status = body["status"]
        avg = float(body.get("avgPrice") or 0) or None
        self._ledger.update(tracked, status, executed, avg, int(body.get("updateTime", now_ms)))

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
            self._session.expired = True
            return
        if kind == "ACCOUNT_UPDATE":
            for p in event.get("a", {}).get("P", []):
                self.account_positions[p["s"]] = float(p["pa"])
            return
        if kind == "ORDER_TRADE_UPDATE" and not self._ledger.order_trade_update(event):
            self.foreign_events += 1

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
        return self._ledger.take()

    def market_key(self, symbol: str) -> str:
        return market_key(self.exchange, symbol)
