"""One matching model for simulated orders: the paper broker's (paper mode and backtests) and the fake
exchange's (the live path's test venue). Pure, clock-free (the caller passes times), no I/O.

Why one module for both: a fill model tested in the paper broker but re-implemented in the fake
exchange would drift, and "paper = backtest = live path" would no longer mean the same fills
(NautilusTrader keeps one ``OrderMatchingEngine`` per instrument for the same reason). It lives in
``tapeflow_runtime`` because that is the lowest layer both ``execution`` and ``fake_exchange`` may
import (tests/test_layers.py: the fake exchange sits below execution). The engine is
generic over the number type: the paper broker matches in ``float``, the fake exchange in ``Decimal``
(its filters are exact); ``zero`` and each order's ``dust`` carry the type.

What it knows of the market is the newest book snapshot of the market (``on_book``: the levels as
md.book / the depth stream carry them, best first) and the trades (``on_trade``).

LIMIT orders (maker; the price is the order's own)
- Queue position at placement: the size resting at the order's price in the newest snapshot (0 when
  the price is inside the spread or a gap within the shown depth: nobody is ahead). A price beyond the
  shown depth, or no snapshot at all, leaves the queue unknown: then the order follows the trade-tape
  rule of the caller (``unknown_queue``: ``through`` = only a trade strictly beyond the price fills it,
  ``touch`` = a trade at the price does too), filling completely unless ``cap_unknown_by_trade``.
- A trade at the order's price whose taker is on the other side (a sell into our bid) first eats the
  queue ahead; what is left of its quantity fills the order. A trade at our price with a taker on our
  side is ignored (book and trade streams disagreeing; we do not count it in our favour).
- A trade strictly beyond the price means the whole level traded: the queue ahead is gone and the
  trade's quantity fills the order.
- Partial fills: a trade never fills more than its own quantity, shared by our orders in turn (one
  trade cannot fill two of our orders with the same contracts). The turn is an order's ``active_from``
  (its decision time), then its id: the order in which a caller happened to place two orders decided
  at the same moment (two positions exiting on one trade) must not decide who gets the level, or the
  streaming executor and the backtest, which may process them in different orders, would disagree.
- The level's size dropping (a newer snapshot) — the conservative rule: cancellations are assumed to
  come from behind us, so the queue ahead only shrinks to the level's new size when that is smaller
  (``min(ahead, size)``), and to 0 when the level vanished within the shown depth. A level growing
  never moves us back. A snapshot alone never fills an order, even one the book has crossed: trades do.
- Our own orders at one price do not queue behind each other (the snapshot does not show them).

MARKET orders (taker)
- Walk the levels of the other side of the newest snapshot when it is fresh (``max_book_age``): one
  fill per level at the level's price, up to the order's quantity. What our orders took from a
  snapshot stays taken until the next snapshot, so two orders (or one order twice) never take the
  same shown liquidity.
- Book thinner than the order: the order is partially filled and the rest keeps working; it walks the
  next snapshot at the next trade. If no fresh snapshot exists when it is due (none, or older than
  ``max_book_age``), the rest fills at the trade's price in full (the trade-tape rule): a market order
  always completes while trades print.

Why hand-written and not a library: the matching engines on PyPI (NautilusTrader's, hftbacktest)
own their event loop, order model and clock; ours must be driven by the executor's and the fake
exchange's own events and return plain fills.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

N = TypeVar("N", float, Decimal)
Side = Literal["BUY", "SELL"]
Liquidity = Literal["maker", "taker"]
QueueRule = Literal["through", "touch"]


@dataclass(slots=True)
class SimOrder(Generic[N]):
    """A working order in the matcher. ``queue_ahead`` is None when unknown (the tape rule applies)."""

    order_id: str
    side: Side
    type: Literal["LIMIT", "MARKET"]
    qty: N
    price: N | None
    active_from: int  # only trades at or after this time can fill it
    dust: N  # a remainder at or below this counts as filled (float rounding; Decimal: 0)
    filled: N
    queue_ahead: N | None = None

    @property
    def left(self) -> N:
        return self.qty - self.filled

    @property
    def done(self) -> bool:
        return self.qty - self.filled <= self.dust


@dataclass(frozen=True, slots=True)
class SimFill(Generic[N]):
    order_id: str
    price: N
    qty: N
    liquidity: Liquidity
    from_book: bool  # a market order's level of the book (False: at the trade price, the tape rule)


@dataclass(slots=True)
class _Snapshot(Generic[N]):
    bids: tuple[tuple[N, N], ...]
    asks: tuple[tuple[N, N], ...]
    time: int
    taken: dict[tuple[Side, N], N] | None = None  # (side of the book, price) -> ours; made on first use


@dataclass(slots=True)
class Matcher(Generic[N]):
    """The working orders and newest book of one market (module docstring)."""

    zero: N
    unknown_queue: QueueRule = "through"
    cap_unknown_by_trade: bool = False
    max_book_age: int | None = None  # ms; None: any snapshot is fresh
    orders: dict[str, SimOrder[N]] = field(default_factory=dict)  # insertion = placement order
    book: _Snapshot[N] | None = None

    # --- market data ------------------------------------------------------------------------------------
    def on_book(self, bids: tuple[tuple[N, N], ...], asks: tuple[tuple[N, N], ...], time: int) -> None:
        """A new snapshot: shrinks known queues (the conservative rule) and frees what we took."""
        self.book = _Snapshot(bids, asks, time)
        for order in self.orders.values():
            if order.type != "LIMIT" or order.queue_ahead is None or order.price is None:
                continue
            size = self._level_size(order.side, order.price)
            if size is not None and size < order.queue_ahead:
                order.queue_ahead = size

    def on_trade(self, price: N, qty: N, taker_side: Side | None, time: int) -> list[SimFill[N]]:
        """Fills a trade causes, in turn (`_turn`; a market order may give one fill per level).
        ``taker_side`` None (a venue that does not say): a trade at a limit's price counts either way."""
        fills: list[SimFill[N]] = []
        budget = qty  # what of the trade is left for our limit orders
        for order in sorted(self.orders.values(), key=_turn):
            if time < order.active_from:
                continue
            if order.type == "MARKET":
                fills += self.sweep(order.order_id, time, price)
                continue
            limit = order.price
            if limit is None:  # add_limit always sets it
                continue
            take = self._limit_take(order, limit, price, qty, taker_side, budget)
            if take > self.zero:
                budget = max(self.zero, budget - take)
                fills.append(self._apply(order, limit, take, "maker"))
        return fills

    # --- orders -----------------------------------------------------------------------------------------
    def add_limit(self, order_id: str, side: Side, price: N, qty: N, active_from: int, dust: N) -> SimOrder[N]:
        """A resting limit, its queue position taken from the newest snapshot (module docstring)."""
        order = SimOrder(order_id, side, "LIMIT", qty, price, active_from, dust, self.zero)
        order.queue_ahead = self._level_size(side, price)
        self.orders[order_id] = order
        return order

    def add_market(self, order_id: str, side: Side, qty: N, active_from: int, dust: N) -> SimOrder[N]:
        order = SimOrder(order_id, side, "MARKET", qty, None, active_from, dust, self.zero)
        self.orders[order_id] = order
        return order

    def cancel(self, order_id: str) -> SimOrder[N] | None:
        return self.orders.pop(order_id, None)

    def sweep(self, order_id: str, time: int, trade_price: N | None) -> list[SimFill[N]]:
        """Fill market order ``order_id`` now: walk the fresh snapshot's other side (what our orders have
        not taken); without a fresh snapshot, the rest at ``trade_price`` (None: wait)."""
        order = self.orders[order_id]
        book = self.book
        fills: list[SimFill[N]] = []
        levels = () if book is None else book.asks if order.side == "BUY" else book.bids
        if book is not None and levels and (self.max_book_age is None or 0 <= time - book.time <= self.max_book_age):
            side: Side = "SELL" if order.side == "BUY" else "BUY"  # the book side we take from
            if book.taken is None:
                book.taken = {}
            for level_price, size in levels:
                key = (side, level_price)
                free = size - book.taken.get(key, self.zero)
                if free <= self.zero:
                    continue
                take = min(free, order.left)
                book.taken[key] = book.taken.get(key, self.zero) + take
                fills.append(self._apply(order, level_price, take, "taker"))
                if order_id not in self.orders:
                    break
        elif trade_price is not None:
            fills.append(self._apply(order, trade_price, order.left, "taker", from_book=False))
        return fills

    # --- helpers ----------------------------------------------------------------------------------------
    def _level_size(self, side: Side, price: N) -> N | None:
        """The size resting at ``price`` on our side of the newest snapshot: 0 when the price is inside
        the spread or a gap within the shown depth, None beyond the shown depth or without a snapshot."""
        book = self.book
        if book is None:
            return None
        levels = book.bids if side == "BUY" else book.asks
        if not levels:
            return None
        sign = 1 if side == "BUY" else -1
        for level_price, size in levels:
            if level_price == price:
                return size
            if sign * (price - level_price) > 0:  # better than this level (and the ones after it)
                return self.zero
        return None  # beyond the last level shown

    def _limit_take(self, order: SimOrder[N], limit: N, price: N, qty: N, taker_side: Side | None, budget: N) -> N:
        """How much of limit ``order`` (at ``limit``) a trade fills (and the queue it eats), ``budget`` at most."""
        sign = 1 if order.side == "BUY" else -1
        beyond = sign * (limit - price)  # > 0: the trade printed through our price
        if order.queue_ahead is None:  # no queue known: the tape rule
            crossed = beyond > 0 or (beyond == 0 and self.unknown_queue == "touch")
            if not crossed:
                return self.zero
            return min(order.left, budget) if self.cap_unknown_by_trade else order.left
        if beyond > 0:
            order.queue_ahead = self.zero
            return min(order.left, budget)
        if beyond < 0 or taker_side == order.side:
            return self.zero
        through_queue = qty - order.queue_ahead
        order.queue_ahead = max(self.zero, order.queue_ahead - qty)
        return min(order.left, budget, through_queue) if through_queue > self.zero else self.zero

    def _apply(self, order: SimOrder[N], price: N, qty: N, liquidity: Liquidity, from_book: bool = True) -> SimFill[N]:
        if order.left - qty <= order.dust:
            qty = order.left  # the fill that completes it takes the dust too: fills sum to the order
        order.filled += qty
        if order.done:
            del self.orders[order.order_id]
        return SimFill(order.order_id, price, qty, liquidity, from_book and order.type == "MARKET")


def _turn(order: SimOrder[Any]) -> tuple[int, str]:
    """Which of our orders a trade serves first (module docstring: partial fills)."""
    return order.active_from, order.order_id
