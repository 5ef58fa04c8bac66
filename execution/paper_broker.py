"""Paper broker: fills orders against the stored book and the live trade tape, with stated fees and
slippage. Two fill models (`PaperFills.fills`), one broker for paper mode and backtests.

`book`: `tapeflow_runtime.matching` (the same matching code as the fake exchange) decides what
fills, how much and at which price; this broker turns its fills into events, fees and slippage.
- LIMIT: queues behind the size resting at its price in the newest md.book snapshot when it is
  placed; trades at its price (sellers hitting our bid, buyers lifting our ask) eat that queue, then
  fill it; a trade strictly beyond its price fills it; never more than the trade's quantity, so
  fills are partial when a trade is smaller than what is left. A snapshot showing a smaller level
  shrinks the queue ahead to that size (cancellations assumed behind us: the conservative rule).
  No snapshot at placement (or a price beyond the shown depth): the `limit_queue` rule below, in full.
  Maker fee, no slippage.
- MARKET: on the first trade of its symbol at or after `not_before_ms`, walks the other side of the
  newest snapshot if it is at most `book_max_age_ms` older than that trade: each level at its price,
  one `Execution` per level at its price moved against us by `slippage_bps`. Book thinner than
  the order: PARTIALLY_FILLED, and the rest walks the next snapshot at a later trade (what our orders
  took from a snapshot stays taken until the next one); no fresh snapshot then: the rest fills at that
  trade's price moved by `slippage_bps` (the `tape` rule). Taker fee.
`tape` (the model before the book one; `book` is the default):
- MARKET: fills completely at the first trade of its symbol processed after submission whose trade
  time is not before `not_before_ms` (the signal's evaluation time or the exit's trigger trade, so
  the trade that caused a decision never fills it: the order reaches the market after it). The fill
  price is that trade's price moved against us by `slippage_bps`, and with `slippage_model: book`
  and a fresh md.book snapshot also by the cost of crossing it (`book_impact`); taker fee.
- LIMIT: fills completely at its own price (maker fee, no slippage) on the first such trade that
  crosses it: `through` = strictly beyond the price (we queue behind everyone at our level),
  `touch` = at the price or beyond.
- No partial fills, no latency beyond "next trade", no market impact beyond `slippage_bps`.
Both: a post-only limit that would take liquidity on arrival (buy at or above the best ask, sell at
or below the best bid; last trade price when no book) is rejected. Order ids are deterministic (`P` +
client order id; trade ids `p:<agg_id>:<client order id>`, `:<n>` added for a walk's n-th level), so a
re-processed trade yields the same fill keys and sinks stay idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from execution.broker import BrokerEvent, Execution, OrderRequest, OrderUpdate
from execution.config import Fees, PaperFills
from execution.domain import BookTop, TradeTick, market_key, quote_asset
from tapeflow_runtime.matching import Matcher, SimFill

DUST = 1e-9  # book model: a remainder below this fraction of the order counts as filled (float sums)


@dataclass(slots=True)
class _Resting:
    request: OrderRequest
    exchange_order_id: str
    filled: float = 0.0  # book model: cumulative quantity and notional of the fills so far
    notional: float = 0.0


class PaperBroker:
    """In-process broker for `--mode paper`; implements `execution.broker.Broker`."""

    mode = "paper"

    def __init__(self, fees: Fees, fills: PaperFills) -> None:
        self.fees = fees
        self.fills = fills
        self._open: dict[str, dict[str, _Resting]] = {}  # market key -> client id -> order (insertion order)
        self._index: dict[str, str] = {}  # client id -> market key
        self._books: dict[str, BookTop] = {}
        self._last_price: dict[str, float] = {}
        self.book_fills = fills.fills == "book"
        self._matchers: dict[str, Matcher[float]] = {}  # book model: per market key

    @property
    def healthy(self) -> bool:
        return True  # nothing to reach

    def is_open(self, client_order_id: str) -> bool:
        return client_order_id in self._index

    def open_orders(self) -> list[OrderRequest]:
        return [r.request for book in self._open.values() for r in book.values()]

    # --- orders ---------------------------------------------------------------------------------------
    def submit(self, request: OrderRequest, now_ms: int, reentry: bool = False) -> list[BrokerEvent]:
        """``reentry``: an order a restart cut short, accepted once already (``resubmit``): a post-only
        limit was checked when it was sent and has rested since; a book that has moved onto its price
        by now fills it, as it would have filled the uninterrupted run's (refusing it would leave its
        entry waiting on an order that is nowhere)."""
        eid = "P" + request.client_order_id

        def reject(reason: str) -> list[BrokerEvent]:
            return [OrderUpdate(request.client_order_id, "REJECTED", 0.0, None, eid, now_ms, reason)]

        if request.client_order_id in self._index:
            return reject("duplicate client_order_id")
        if not request.qty > 0:
            return reject("qty must be positive")
        if request.type == "LIMIT":
            if request.price is None or not request.price > 0:
                return reject("limit order needs a positive price")
            if request.post_only and not reentry and self._would_take(request):
                return reject("post_only_would_take")
        elif request.type != "MARKET":
            return reject(f"order type {request.type} not supported by the paper broker")
        key = market_key(request.exchange, request.symbol)
        self._open.setdefault(key, {})[request.client_order_id] = _Resting(request, eid)
        self._index[request.client_order_id] = key
        if self.book_fills:
            matcher = self._matcher(key)
            cid, side, dust = request.client_order_id, request.side, request.qty * DUST
            if request.type == "LIMIT" and request.price is not None:
                matcher.add_limit(cid, side, request.price, request.qty, request.not_before_ms, dust)
            else:
                matcher.add_market(cid, side, request.qty, request.not_before_ms, dust)
        return [OrderUpdate(request.client_order_id, "NEW", 0.0, None, eid, now_ms)]

    def resubmit(
        self,
        request: OrderRequest,
        filled_qty: float,
        avg_fill_price: float,
        now_ms: int,
        notional: float | None = None,
    ) -> None:
        """Re-enter an order a restart cut short after it had filled `filled_qty` at `avg_fill_price`
        (as its orders record says; `execution.executor_restore`): only the rest can fill, and its
        updates report the whole order's filled quantity and average price, as an uninterrupted run's
        would. `notional`: what its fills summed to one by one (their records), so the later average
        price is bit-identical to the uninterrupted run's (else `filled_qty` x `avg_fill_price`).
        Silent: the order's NEW was published by the run that sent it."""
        self.submit(request, now_ms, reentry=True)
        cid = request.client_order_id
        key = self._index.get(cid)
        if key is None:  # refused (cannot be: the request was accepted once)
            return
        resting = self._open[key][cid]
        resting.filled, resting.notional = filled_qty, filled_qty * avg_fill_price if notional is None else notional
        sim = self._matchers[key].orders.get(cid) if self.book_fills else None
        if sim is not None:
            sim.filled = filled_qty

    def cancel(self, client_order_id: str, now_ms: int, reason: str) -> list[BrokerEvent]:
        key = self._index.pop(client_order_id, None)
        if key is None:
            return []
        resting = self._open[key].pop(client_order_id)
        matcher = self._matchers.get(key)
        if matcher is not None:
            matcher.cancel(client_order_id)
        # what filled before the cancel stays reported (the order's record is what a restore reads back)
        filled = resting.filled
        avg = resting.notional / filled if filled > 0 else None
        return [OrderUpdate(client_order_id, "CANCELED", filled, avg, resting.exchange_order_id, now_ms, reason)]

    def poll(self, now_ms: int) -> list[BrokerEvent]:
        return []

    # --- market data ------------------------------------------------------------------------------------
    def on_book(self, book: BookTop) -> None:
        self._books[book.key] = book
        if self.book_fills:
            self._matcher(book.key).on_book(book.bids, book.asks, book.event_time)

    def on_trade(self, trade: TradeTick) -> list[BrokerEvent]:
        key = trade.key
        self._last_price[key] = trade.price
        resting = self._open.get(key)
        if not resting:
            return []
        if self.book_fills:
            return self._book_trade(trade, resting)
        events: list[BrokerEvent] = []
        for cid in list(resting):
            order = resting[cid]
            req = order.request
            if trade.trade_time < req.not_before_ms:
                continue
            if req.type == "MARKET":
                events += self._fill(order, trade, self.market_fill_price(req, trade), "taker", self.fees.taker)
            elif self._crosses(req, trade.price):
                events += self._fill(order, trade, req.price, "maker", self.fees.maker)
        return events

    def market_fill_price(self, req: OrderRequest, trade: TradeTick) -> float:
        """The trade price moved against the order by the modelled slippage (see the module docstring)."""
        slip = self.fills.slippage_bps / 10_000
        impact = 0.0
        if self.fills.slippage_model == "book":
            book = self._books.get(trade.key)
            if book is not None and 0 <= trade.trade_time - book.event_time <= self.fills.book_max_age_ms:
                impact = book_impact(book, req.side, req.qty)
        if req.side == "BUY":
            return trade.price * (1 + slip) + impact
        return trade.price * (1 - slip) - impact

    # --- book model -------------------------------------------------------------------------------------
    def _matcher(self, key: str) -> Matcher[float]:
        matcher = self._matchers.get(key)
        if matcher is None:
            matcher = self._matchers[key] = Matcher(
                0.0, self.fills.limit_queue, cap_unknown_by_trade=False, max_book_age=self.fills.book_max_age_ms
            )
        return matcher

    def _book_trade(self, trade: TradeTick, resting: dict[str, _Resting]) -> list[BrokerEvent]:
        """The matcher's fills of one trade as events: per order its Executions (one per level a market
        order walked), then PARTIALLY_FILLED or FILLED with the cumulative quantity and average price."""
        sim = self._matcher(trade.key).on_trade(trade.price, trade.qty, trade.taker_side, trade.trade_time)
        if not sim:
            return []
        by_order: dict[str, list[SimFill[float]]] = {}
        for fill in sim:
            by_order.setdefault(fill.order_id, []).append(fill)
        events: list[BrokerEvent] = []
        for cid, fills in by_order.items():
            events += self._book_fills(resting[cid], trade, fills)
        return events

    def _book_fills(self, order: _Resting, trade: TradeTick, fills: list[SimFill[float]]) -> list[BrokerEvent]:
        """Executions of one order on one trade: `p:<agg_id>:<cid>`, then `...:<n>` for the n-th level."""
        req, cid, eid, t = order.request, order.request.client_order_id, order.exchange_order_id, trade.trade_time
        slip = self.fills.slippage_bps / 10_000 if req.side == "BUY" else -self.fills.slippage_bps / 10_000
        events: list[BrokerEvent] = []
        for n, fill in enumerate(fills):
            if req.type == "MARKET":
                price, liquidity, rate, market_price = fill.price * (1 + slip), "taker", self.fees.taker, trade.price
            else:
                price, liquidity, rate, market_price = fill.price, "maker", self.fees.maker, fill.price
            order.filled += fill.qty
            order.notional += fill.qty * price
            trade_id = f"p:{trade.agg_id}:{cid}" + (f":{n}" if n else "")
            events.append(
                Execution(
                    cid,
                    eid,
                    trade_id,
                    req.side,
                    price,
                    fill.qty,
                    rate * price * fill.qty,
                    quote_asset(req.symbol),
                    liquidity,
                    market_price,
                    t,
                )  # fmt: skip
            )
        done = cid not in self._matchers[trade.key].orders
        if done:
            del self._open[trade.key][cid]
            del self._index[cid]
            order.filled = req.qty  # FILLED reports the order's quantity (the fills' float sum may be off by an ulp)
        state = "FILLED" if done else "PARTIALLY_FILLED"
        return events + [OrderUpdate(cid, state, order.filled, order.notional / order.filled, eid, t)]

    # --- helpers ----------------------------------------------------------------------------------------
    def _crosses(self, req: OrderRequest, price: float) -> bool:
        if self.fills.limit_queue == "through":
            return price < req.price if req.side == "BUY" else price > req.price
        return price <= req.price if req.side == "BUY" else price >= req.price

    def _would_take(self, req: OrderRequest) -> bool:
        key = market_key(req.exchange, req.symbol)
        book = self._books.get(key)
        if req.side == "BUY":
            opposite = book.best_ask if book else self._last_price.get(key)
            return opposite is not None and req.price >= opposite
        opposite = book.best_bid if book else self._last_price.get(key)
        return opposite is not None and req.price <= opposite

    def _fill(self, order: _Resting, trade: TradeTick, price: float, liquidity: str, rate: float) -> list[BrokerEvent]:
        """The whole order, or what is left of one re-entered part-filled after a restart (`resubmit`)."""
        req = order.request
        del self._open[trade.key][req.client_order_id]
        del self._index[req.client_order_id]
        qty = req.qty - order.filled
        avg = price if not order.filled else (order.notional + qty * price) / req.qty
        fee = rate * price * qty
        # the price before modelled costs: the trade for a market order, the limit itself for a maker fill
        market_price = trade.price if req.type == "MARKET" else price
        execution = Execution(
            req.client_order_id,
            order.exchange_order_id,
            f"p:{trade.agg_id}:{req.client_order_id}",
            req.side,
            price,
            qty,
            fee,
            quote_asset(req.symbol),
            liquidity,
            market_price,
            trade.trade_time,
        )
        update = OrderUpdate(req.client_order_id, "FILLED", req.qty, avg, order.exchange_order_id, trade.trade_time)
        return [execution, update]


def book_impact(book: BookTop, side: str, qty: float) -> float:
    """What crossing `book` with a market order of `qty` costs per unit beyond the mid (>= 0): the
    VWAP of walking the other side's levels minus the mid (buy) or the mid minus it (sell); a quantity
    beyond the levels shown takes the last level's price. 0 without both sides."""
    levels = book.asks if side == "BUY" else book.bids
    if book.best_bid is None or book.best_ask is None or not levels or qty <= 0:
        return 0.0
    mid = (book.best_bid + book.best_ask) / 2
    cost, left = walk_levels(levels, qty)
    if left > 0:
        cost += left * levels[-1][0]
    vwap = cost / qty
    return max(0.0, vwap - mid if side == "BUY" else mid - vwap)


def walk_levels(levels: Iterable[tuple[float, float]], qty: float) -> tuple[float, float]:
    """Take `qty` from `levels` (price, qty; best first): the cost of what was taken and the quantity
    the levels could not give (0 when they held enough). No checks: the callers decide what a short
    book means (`book_impact` takes the rest at the last level, `execution.hedged` fails the order)."""
    left, cost = qty, 0.0
    for price, size in levels:
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= 0:
            break
    return cost, left
