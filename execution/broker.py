"""The broker interface the executor talks to, shared by the paper broker and exchange brokers.

Why a Protocol with plain values: the executor's decisions must not depend on where orders go (DESIGN
§5, "paper and live, one model"). A broker accepts `OrderRequest`s and reports what happened as
`OrderUpdate`s (state transitions, Binance order statuses) and `Execution`s (fills), in the order they
happened. The paper broker produces fills synchronously from the trade tape (`on_trade`); an exchange
broker would return [] there and report fills from its user-data stream through `poll`.

`Execution.market_price` is the price the fill executed against before modelled costs (paper: the
trade; live: the fill price itself). The position manager splits P&L into gross and slippage with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from execution.domain import BookTop, Side, TradeTick, TradingMode

OrderType = Literal["MARKET", "LIMIT"]
OrderState = Literal["PENDING_NEW", "NEW", "PARTIALLY_FILLED", "FILLED", "CANCELED", "REJECTED", "EXPIRED"]
TERMINAL_STATES = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
Liquidity = Literal["maker", "taker"]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    exchange: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    price: float | None = None  # limit price
    post_only: bool = False  # limit: refuse rather than take liquidity
    reduce_only: bool = False
    not_before_ms: int = 0  # paper: only trades at or after this time can fill it


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    client_order_id: str
    state: OrderState
    filled_qty: float
    avg_fill_price: float | None
    exchange_order_id: str | None
    event_time: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Execution:
    client_order_id: str
    exchange_order_id: str
    trade_id: str
    side: Side
    price: float
    qty: float
    fee: float  # quote currency, positive = paid
    fee_asset: str
    liquidity: Liquidity
    market_price: float
    event_time: int


BrokerEvent = OrderUpdate | Execution


@runtime_checkable
class Broker(Protocol):
    """Where orders go. Every method returns the events it caused, in order."""

    mode: TradingMode

    def submit(self, request: OrderRequest, now_ms: int) -> list[BrokerEvent]:
        """Send an order; returns NEW (accepted) or REJECTED, and for a paper order nothing more."""
        ...

    def cancel(self, client_order_id: str, now_ms: int, reason: str) -> list[BrokerEvent]:
        """Cancel an open order; returns CANCELED, or [] when it is no longer open."""
        ...

    def on_trade(self, trade: TradeTick) -> list[BrokerEvent]:
        """A market trade; the paper broker fills what it crosses."""
        ...

    def on_book(self, book: BookTop) -> None: ...

    def poll(self, now_ms: int) -> list[BrokerEvent]:
        """Events that arrived on their own (an exchange's user-data stream); paper: none."""
        ...

    def is_open(self, client_order_id: str) -> bool: ...

    @property
    def healthy(self) -> bool:
        """False when the venue is unreachable: the risk guard then blocks new entries."""
        ...
