"""The orders a Binance broker follows, and the events they produce, each reported once.

`OrderLedger` keeps one `TrackedOrder` per client order id and a buffer of `BrokerEvent`s the broker's
public call returns (`take`). The same fill or state may be learnt from the REST answer, a query, the
user-data stream and `userTrades`, in any order: executions are de-duplicated by trade id, updates by
(state, filled qty), and nothing is reported for an order after its terminal state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from execution.broker import (
    TERMINAL_STATES,
    BrokerEvent,
    Execution,
    OrderRequest,
    OrderState,
    OrderUpdate,
)


@dataclass(slots=True)
class TrackedOrder:
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


class OrderLedger:
    """Tracked orders by client order id, and the events not yet handed to the caller."""

    def __init__(self) -> None:
        self.orders: dict[str, TrackedOrder] = {}
        self._buffer: list[BrokerEvent] = []

    def take(self) -> list[BrokerEvent]:
        """The events buffered since the last call, in the order they happened."""
        events, self._buffer = self._buffer, []
        return events

    def reject(self, tracked: TrackedOrder, now_ms: int, reason: str) -> None:
        """An order the exchange refused outright, before it had an exchange order id."""
        tracked.state = "REJECTED"
        self._buffer.append(OrderUpdate(tracked.request.client_order_id, "REJECTED", 0.0, None, None, now_ms, reason))

    def open_orders(self) -> list[TrackedOrder]:
        return [t for t in self.orders.values() if not t.terminal]

    def unknown_orders(self) -> list[TrackedOrder]:
        return [t for t in self.orders.values() if t.unknown]

    def execution(
        self,
        tracked: TrackedOrder,
        trade_id: str,
        price: float,
        qty: float,
        fee: float,
        fee_asset: str,
        maker: bool,
        time_ms: int,
    ) -> None:
        """One fill, reported once per trade id."""
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

    def update(
        self,
        tracked: TrackedOrder,
        state: str,
        filled: float,
        avg: float | None,
        event_time: int,
        reason: str | None = None,
    ) -> None:
        """A state change, reported unless it is the one already known or the order has ended."""
        if tracked.terminal or (state == tracked.state and abs(filled - tracked.filled) < 1e-12):
            return
        if state == "CANCELED":
            reason = reason or tracked.cancel_reason
        elif state == "EXPIRED":
            reason = reason or "expired"
        tracked.state, tracked.filled = state, filled
        self._buffer.append(
            OrderUpdate(
                tracked.request.client_order_id,
                cast(OrderState, state),
                filled,
                avg,
                tracked.exchange_order_id,
                event_time,
                reason,
            )
        )

    def user_trades(self, tracked: TrackedOrder, rows: list[dict[str, Any]]) -> None:
        """The fills of a `GET /fapi/v1/userTrades` answer, oldest first (trade ids as the stream's)."""
        for row in sorted(rows, key=lambda r: r["id"]):
            self.execution(
                tracked,
                str(row["id"]),
                float(row["price"]),
                float(row["qty"]),
                float(row["commission"]),
                row["commissionAsset"],
                bool(row["maker"]),
                int(row["time"]),
            )

    def order_trade_update(self, event: dict[str, Any]) -> bool:
        """An ORDER_TRADE_UPDATE event; False when it names an order not tracked here. Raises
        KeyError/TypeError/ValueError/AttributeError on a malformed one (the broker counts it), after
        applying whatever came before the bad field."""
        o = event["o"]
        tracked = self.orders.get(o["c"])
        if tracked is None:
            return False
        tracked.exchange_order_id = str(o["i"])
        if o["x"] == "TRADE":
            self.execution(
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
            self.update(tracked, "NEW", 0.0, None, int(event["E"]))
        self.update(tracked, o["X"], float(o["z"]), float(o.get("ap") or 0) or None, int(event["E"]))
        return True
