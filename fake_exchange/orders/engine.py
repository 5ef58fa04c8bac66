"""In-memory Binance USD-M account for the fake exchange: orders, fills, positions (one-way mode).

Why a model and not canned answers: the broker's hard cases (partial fills, a post-only order that
would cross, a reduce-only stop, an order accepted but answered with a 5xx, a duplicate client id
after a restart) only show up against something with state. Pure: no I/O, the caller passes the
time; `events` collects the user-data payloads (ORDER_TRADE_UPDATE, ACCOUNT_UPDATE) in order.

Matching model: `tapeflow_runtime.matching.Matcher`, the paper broker's (one matching engine for paper,
backtest and this venue), in Decimal, one per symbol:
- the market is the last trade price, the best bid/ask, the book's levels when the caller reports
  them (`on_book(..., bids=, asks=)`; a bid/ask without levels forgets the levels) and the mark price;
- LIMIT rests; with levels known when it is placed it queues behind the size at its price, trades at
  its price (taker on the other side; a trade without a taker side counts) eat that queue and then
  fill it, a trade beyond its price fills it, at most the trade's quantity (partial fills); without
  levels it fills at its own price (maker) when a trade crosses it (`through`: strictly beyond,
  `touch`: at or beyond), with `cap_by_trade_qty` at most the crossing trade's quantity;
- GTX (post-only) is refused (-5022) when it would cross the touch on arrival (last price without a
  book); a marketable GTC LIMIT fills at once as taker at the opposite touch (or the last price);
- MARKET walks the levels at once (taker, one fill per level); the rest of an order larger than the
  levels shown walks the next levels at a later trade, or fills at that trade's price when the levels
  are older than `max_book_age_ms`; without levels it fills completely at the last trade price;
- STOP_MARKET triggers when the working price (CONTRACT_PRICE = last trade, MARK_PRICE = mark) reaches
  the stop (SELL: at or below, BUY: at or above) and then fills like MARKET at that price;
- reduce-only orders may only shrink the position (-2022 otherwise; capped at the position on fill).
Filters are checked independently of `execution.exchange_filters` (-1111 precision, -4164 notional).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from tapeflow_runtime.matching import Matcher, Side, SimFill

D0 = Decimal(0)
UNKNOWN_SIZE = Decimal("Infinity")  # a trade posted without a quantity


class OrderError(Exception):
    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


@dataclass
class SymbolRules:
    tick: Decimal
    step: Decimal
    min_notional: Decimal


@dataclass
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    tif: str
    qty: Decimal
    price: Decimal
    stop_price: Decimal
    reduce_only: bool
    working_type: str
    time: int
    status: str = "NEW"
    filled: Decimal = D0
    quote: Decimal = D0  # sum of price x qty of the fills
    update_time: int = 0

    @property
    def avg_price(self) -> Decimal:
        return self.quote / self.filled if self.filled else D0

    def body(self) -> dict[str, Any]:
        return {
            "orderId": self.order_id,
            "symbol": self.symbol,
            "status": self.status,
            "clientOrderId": self.client_id,
            "price": str(self.price),
            "avgPrice": str(self.avg_price),
            "origQty": str(self.qty),
            "executedQty": str(self.filled),
            "cumQuote": str(self.quote),
            "timeInForce": self.tif,
            "type": self.type,
            "origType": self.type,
            "reduceOnly": self.reduce_only,
            "side": self.side,
            "positionSide": "BOTH",
            "stopPrice": str(self.stop_price),
            "workingType": self.working_type,
            "time": self.time,
            "updateTime": self.update_time or self.time,
        }


@dataclass
class Position:
    amount: Decimal = D0  # signed
    entry: Decimal = D0


@dataclass
class Market:
    last: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    mark: Decimal | None = None


@dataclass
class AccountEngine:
    rules: dict[str, SymbolRules]
    maker_fee: Decimal = Decimal("0.0002")
    taker_fee: Decimal = Decimal("0.0004")
    queue: Literal["through", "touch"] = "through"
    cap_by_trade_qty: bool = True
    max_book_age_ms: int = 5_000  # the paper broker's default (PaperFills.book_max_age_ms)
    matchers: dict[str, Matcher[Decimal]] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    by_client: dict[tuple[str, str], int] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)
    markets: dict[str, Market] = field(default_factory=dict)
    trades: list[dict[str, Any]] = field(default_factory=list)  # userTrades rows
    events: list[dict[str, Any]] = field(default_factory=list)
    placements: dict[str, int] = field(default_factory=dict)  # accepted POSTs per client id
    balance: Decimal = Decimal(10000)
    _next_order: int = 8_000_000_001
    _next_trade: int = 500_000_001

    # --- orders -----------------------------------------------------------------------------------------
    def place(self, p: dict[str, str], now: int) -> Order:
        symbol = p.get("symbol", "")
        rules = self.rules.get(symbol)
        if rules is None:
            raise OrderError(-1121, "Invalid symbol.")
        side, typ = p.get("side", ""), p.get("type", "")
        if side not in ("BUY", "SELL"):
            raise OrderError(-1117, "Invalid side.")
        if typ not in ("LIMIT", "MARKET", "STOP_MARKET"):
            raise OrderError(-1116, "Invalid orderType.")
        cid = p.get("newClientOrderId") or f"fake{self._next_order}"
        if (symbol, cid) in self.by_client:
            raise OrderError(-4116, "ClientOrderId is duplicated.")
        qty = _dec(p, "quantity")
        price = _dec(p, "price") if typ == "LIMIT" else D0
        stop = _dec(p, "stopPrice") if typ == "STOP_MARKET" else D0
        if qty <= 0 or (typ == "LIMIT" and price <= 0) or (typ == "STOP_MARKET" and stop <= 0):
            raise OrderError(-1102, "Mandatory parameter was not sent, was empty/null, or malformed.")
        if qty % rules.step or (price and price % rules.tick) or (stop and stop % rules.tick):
            raise OrderError(-1111, "Precision is over the maximum defined for this asset.")
        reduce_only = p.get("reduceOnly", "false") == "true"
        market = self.markets.setdefault(symbol, Market())
        ref = price or stop or market.last
        if not reduce_only and ref is not None and qty * ref < rules.min_notional:
            raise OrderError(
                -4164, f"Order's notional must be no smaller than {rules.min_notional} (unless you choose reduce only)."
            )
        if reduce_only and not self._reduces(symbol, side):
            raise OrderError(-2022, "ReduceOnly Order is rejected.")
        tif = p.get("timeInForce", "GTC")
        if typ == "LIMIT" and tif == "GTX" and self._crosses_touch(market, side, price):
            raise OrderError(
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be "
                "rejected. The order will not be recorded in the order history",
            )
        if typ == "MARKET" and market.last is None:
            raise OrderError(-2010, "No market price to fill a MARKET order.")
        order = Order(
            self._next_order,
            cid,
            symbol,
            side,
            typ,
            tif,
            qty,
            price,
            stop,
            reduce_only,
            p.get("workingType", "CONTRACT_PRICE"),
            now,
        )
        self._next_order += 1
        self.orders[order.order_id] = order
        self.by_client[(symbol, cid)] = order.order_id
        self.placements[cid] = self.placements.get(cid, 0) + 1
        self._order_event(order, "NEW", now)
        matcher = self._matcher(symbol)
        if typ == "MARKET":
            matcher.add_market(str(order.order_id), _side(side), qty, now, D0)
            self._apply(matcher.sweep(str(order.order_id), now, market.last), now)
        elif typ == "LIMIT" and tif != "GTX" and self._crosses_touch(market, side, price):
            touch = (market.ask if side == "BUY" else market.bid) or market.last
            self._fill(order, order.qty, touch, False, now)
        elif typ == "LIMIT":
            matcher.add_limit(str(order.order_id), _side(side), price, qty, now, D0)
        return order

    def find(self, symbol: str, order_id: str | None, client_id: str | None) -> Order:
        oid = int(order_id) if order_id else self.by_client.get((symbol, client_id or ""))
        order = self.orders.get(oid) if oid is not None else None
        if order is None or order.symbol != symbol:
            raise OrderError(-2013, "Order does not exist.")
        return order

    def cancel(self, symbol: str, order_id: str | None, client_id: str | None, now: int) -> Order:
        try:
            order = self.find(symbol, order_id, client_id)
        except OrderError:
            raise OrderError(-2011, "Unknown order sent.") from None
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise OrderError(-2011, "Unknown order sent.")
        order.status = "CANCELED"
        self._matcher(symbol).cancel(str(order.order_id))
        self._order_event(order, "CANCELED", now)
        return order

    def modify(self, p: dict[str, str], now: int) -> Order:
        try:
            order = self.find(p.get("symbol", ""), p.get("orderId"), p.get("origClientOrderId"))
        except OrderError:
            raise OrderError(-2011, "Unknown order sent.") from None
        if order.type != "LIMIT" or order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise OrderError(-2011, "Unknown order sent.")
        qty, price = _dec(p, "quantity"), _dec(p, "price")
        rules = self.rules[order.symbol]
        if qty % rules.step or price % rules.tick:
            raise OrderError(-1111, "Precision is over the maximum defined for this asset.")
        if qty <= order.filled:
            raise OrderError(-4005, "Quantity greater than max quantity.")
        if order.tif == "GTX" and self._crosses_touch(self.markets[order.symbol], order.side, price):
            raise OrderError(
                -5022, "Due to the order could not be executed as maker, the Post Only order will be rejected."
            )
        order.qty, order.price = qty, price
        matcher = self._matcher(order.symbol)  # a new price or size: back of the queue, as placed now
        matcher.cancel(str(order.order_id))
        matcher.add_limit(str(order.order_id), _side(order.side), price, qty, now, D0).filled = order.filled
        self._order_event(order, "AMENDMENT", now)
        return order

    def open_orders(self, symbol: str | None) -> list[Order]:
        return [
            o
            for o in self.orders.values()
            if o.status in ("NEW", "PARTIALLY_FILLED") and (symbol is None or o.symbol == symbol)
        ]

    # --- market -----------------------------------------------------------------------------------------
    def on_trade(
        self, symbol: str, price: Decimal, qty: Decimal | None, now: int, taker_side: str | None = None
    ) -> None:
        """A trade: LIMIT and what is left of MARKET orders match it (`tapeflow_runtime.matching`), then stops.
        Without `taker_side` a trade at a limit's price counts against its queue whatever its side."""
        market = self.markets.setdefault(symbol, Market())
        market.last = price
        matcher = self._matcher(symbol)
        if matcher.orders:
            size = UNKNOWN_SIZE if qty is None else qty
            self._apply(matcher.on_trade(price, size, _side(taker_side) if taker_side else None, now), now)
        for order in list(self.open_orders(symbol)):
            if order.type == "STOP_MARKET" and order.working_type != "MARK_PRICE":
                self._maybe_trigger(order, price, now)

    def on_mark(self, symbol: str, price: Decimal, now: int) -> None:
        self.markets.setdefault(symbol, Market()).mark = price
        for order in list(self.open_orders(symbol)):
            if order.type == "STOP_MARKET" and order.working_type == "MARK_PRICE":
                self._maybe_trigger(order, price, now)

    def on_book(
        self,
        symbol: str,
        bid: Decimal | None,
        ask: Decimal | None,
        now: int = 0,
        bids: tuple[tuple[Decimal, Decimal], ...] | None = None,
        asks: tuple[tuple[Decimal, Decimal], ...] | None = None,
    ) -> None:
        """The touch, and the book's levels (best first) when known: the matcher queues and walks them."""
        market = self.markets.setdefault(symbol, Market())
        market.bid, market.ask = bid, ask
        matcher = self._matcher(symbol)
        if bids is None and asks is None:
            matcher.book = None  # the levels are no longer known
        else:
            matcher.on_book(bids or (), asks or (), now)

    # --- injected state (reconciliation tests) ----------------------------------------------------------
    def inject_position(self, symbol: str, amount: Decimal, entry: Decimal, now: int) -> None:
        self.positions[symbol] = Position(amount, entry)
        self._account_event(symbol, now)

    # --- internals --------------------------------------------------------------------------------------
    def _reduces(self, symbol: str, side: str) -> bool:
        amount = self.positions.get(symbol, Position()).amount
        return (amount > 0 and side == "SELL") or (amount < 0 and side == "BUY")

    @staticmethod
    def _crosses_touch(market: Market, side: str, price: Decimal) -> bool:
        opposite = (market.ask if side == "BUY" else market.bid) or market.last
        if opposite is None:
            return False
        return price >= opposite if side == "BUY" else price <= opposite

    def _matcher(self, symbol: str) -> Matcher[Decimal]:
        """The symbol's matcher, with the switches as they are now (`POST config` may change them)."""
        matcher = self.matchers.get(symbol)
        if matcher is None:
            matcher = self.matchers[symbol] = Matcher(D0)
        matcher.unknown_queue, matcher.cap_unknown_by_trade = self.queue, self.cap_by_trade_qty
        matcher.max_book_age = self.max_book_age_ms
        return matcher

    def _apply(self, fills: list[SimFill[Decimal]], now: int) -> None:
        """The matcher's fills on the account (a reduce-only order may end EXPIRED: the matcher forgets it)."""
        for fill in fills:
            order = self.orders[int(fill.order_id)]
            if order.status not in ("NEW", "PARTIALLY_FILLED"):
                continue
            self._fill(order, fill.qty, fill.price, fill.liquidity == "maker", now)
            if order.status not in ("NEW", "PARTIALLY_FILLED"):
                self._matcher(order.symbol).cancel(fill.order_id)

    def _maybe_trigger(self, order: Order, price: Decimal, now: int) -> None:
        hit = price <= order.stop_price if order.side == "SELL" else price >= order.stop_price
        if hit:
            self._fill(order, order.qty, price, False, now)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, maker: bool, now: int) -> None:
        pos = self.positions.setdefault(order.symbol, Position())
        if order.reduce_only:
            qty = min(qty, abs(pos.amount)) if self._reduces(order.symbol, order.side) else D0
            if qty <= 0:
                order.status = "EXPIRED"
                self._order_event(order, "EXPIRED", now)
                return
        signed = qty if order.side == "BUY" else -qty
        realized = D0
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            total = pos.amount + signed
            pos.entry = (pos.entry * abs(pos.amount) + price * qty) / abs(total)
            pos.amount = total
        else:
            closing = min(qty, abs(pos.amount))
            realized = (price - pos.entry) * closing * (1 if pos.amount > 0 else -1)
            pos.amount += signed
            if pos.amount == 0:
                pos.entry = D0
            elif (pos.amount > 0) == (signed > 0):  # flipped through zero
                pos.entry = price
        fee = (self.maker_fee if maker else self.taker_fee) * price * qty
        self.balance += realized - fee
        order.filled += qty
        order.quote += price * qty
        order.status = (
            "FILLED" if order.filled >= order.qty or order.reduce_only and pos.amount == 0 else "PARTIALLY_FILLED"
        )
        trade_id = self._next_trade
        self._next_trade += 1
        self.trades.append(
            {
                "symbol": order.symbol,
                "id": trade_id,
                "orderId": order.order_id,
                "side": order.side,
                "price": str(price),
                "qty": str(qty),
                "realizedPnl": str(realized),
                "quoteQty": str(price * qty),
                "commission": str(fee),
                "commissionAsset": "USDT",
                "time": now,
                "positionSide": "BOTH",
                "buyer": order.side == "BUY",
                "maker": maker,
            }
        )
        self._order_event(
            order,
            "TRADE",
            now,
            last_qty=qty,
            last_price=price,
            fee=fee,
            maker=maker,
            trade_id=trade_id,
            realized=realized,
        )
        self._account_event(order.symbol, now)

    def _order_event(
        self,
        order: Order,
        execution: str,
        now: int,
        *,
        last_qty: Decimal = D0,
        last_price: Decimal = D0,
        fee: Decimal = D0,
        maker: bool = False,
        trade_id: int = 0,
        realized: Decimal = D0,
    ) -> None:
        order.update_time = now
        self.events.append(
            {
                "e": "ORDER_TRADE_UPDATE",
                "E": now,
                "T": now,
                "o": {
                    "s": order.symbol,
                    "c": order.client_id,
                    "S": order.side,
                    "o": order.type,
                    "f": order.tif,
                    "q": str(order.qty),
                    "p": str(order.price),
                    "ap": str(order.avg_price),
                    "sp": str(order.stop_price),
                    "x": execution,
                    "X": order.status,
                    "i": order.order_id,
                    "l": str(last_qty),
                    "z": str(order.filled),
                    "L": str(last_price),
                    "N": "USDT",
                    "n": str(fee),
                    "T": now,
                    "t": trade_id,
                    "m": maker,
                    "R": order.reduce_only,
                    "wt": order.working_type,
                    "ot": order.type,
                    "ps": "BOTH",
                    "rp": str(realized),
                },
            }
        )

    def _account_event(self, symbol: str, now: int) -> None:
        pos = self.positions.get(symbol, Position())
        self.events.append(
            {
                "e": "ACCOUNT_UPDATE",
                "E": now,
                "T": now,
                "a": {
                    "m": "ORDER",
                    "B": [{"a": "USDT", "wb": str(self.balance), "cw": str(self.balance), "bc": "0"}],
                    "P": [
                        {
                            "s": symbol,
                            "pa": str(pos.amount),
                            "ep": str(pos.entry),
                            "up": "0",
                            "mt": "cross",
                            "iw": "0",
                            "ps": "BOTH",
                        }
                    ],
                },
            }
        )

    def position_rows(self, symbol: str | None) -> list[dict[str, Any]]:
        rows = []
        for sym in sorted(self.rules):
            if symbol is not None and sym != symbol:
                continue
            pos = self.positions.get(sym, Position())
            market = self.markets.get(sym, Market())
            mark = market.mark or market.last or pos.entry
            rows.append(
                {
                    "symbol": sym,
                    "positionAmt": str(pos.amount),
                    "entryPrice": str(pos.entry),
                    "markPrice": str(mark),
                    "unRealizedProfit": str((mark - pos.entry) * pos.amount),
                    "liquidationPrice": "0",
                    "leverage": "20",
                    "marginType": "cross",
                    "positionSide": "BOTH",
                    "notional": str(mark * pos.amount),
                    "updateTime": 0,
                }
            )
        return rows


def _dec(p: dict[str, str], name: str) -> Decimal:
    raw = p.get(name)
    if raw in (None, ""):
        raise OrderError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    try:
        return Decimal(raw)
    except ArithmeticError:
        raise OrderError(-1100, f"Illegal characters found in parameter '{name}'.") from None


def _side(side: str) -> Side:
    return "BUY" if side == "BUY" else "SELL"
