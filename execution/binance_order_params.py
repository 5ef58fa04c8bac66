"""Binance USD-M order parameters from an `OrderRequest`, rounded to the symbol's filters.

Pure: the request and the filters in, the parameters to send (and the request as rounded) out; a
`FilterViolation` when the order cannot be sent as asked. Rounding never makes an order worse for us:
quantities go down to the step, a post-only buy price down and a sell price up (so it stays a maker),
a stop never moves towards the market.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from execution.broker import OrderRequest
from execution.exchange_filters import FilterViolation, PriceRounding, SymbolFilters, plain


def limit_rounding(request: OrderRequest) -> PriceRounding:
    """How a limit price is rounded to the tick: away from the market for post-only, else nearest."""
    return ("down" if request.side == "BUY" else "up") if request.post_only else "nearest"


def order_params(
    request: OrderRequest, filters: dict[str, SymbolFilters], last_price: float | None
) -> tuple[dict[str, Any], OrderRequest]:
    """`POST /fapi/v1/order` parameters and the request as sent (rounded). MIN_NOTIONAL is checked at
    the limit price, or for a market order at `last_price` when one is known."""
    f = filters.get(request.symbol)
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
        price = f.round_price(request.price, limit_rounding(request))
        params.update(price=plain(price), timeInForce="GTX" if request.post_only else "GTC")
    if request.reduce_only:
        params["reduceOnly"] = True
    reference = price if price is not None else (Decimal(str(last_price)) if last_price is not None else None)
    if reference is not None:
        f.check_notional(qty, reference, reduce_only=request.reduce_only)
    sent = replace(request, qty=float(qty), price=float(price) if price is not None else None)
    return params, sent


def amend_params(
    request: OrderRequest, f: SymbolFilters, price: float, qty: float | None
) -> tuple[dict[str, Any], OrderRequest]:
    """`PUT /fapi/v1/order` parameters moving the open limit order `request`, and the request as amended."""
    new_price = f.round_price(price, limit_rounding(request))
    new_qty = f.round_qty(request.qty if qty is None else qty)
    params = {
        "symbol": request.symbol,
        "origClientOrderId": request.client_order_id,
        "side": request.side,
        "quantity": plain(new_qty),
        "price": plain(new_price),
    }
    return params, replace(request, qty=float(new_qty), price=float(new_price))


def stop_params(
    client_order_id: str,
    exchange: str,
    f: SymbolFilters,
    symbol: str,
    side: str,
    qty: float,
    stop_price: float,
    working_type: str,
) -> tuple[dict[str, Any], OrderRequest]:
    """A reduce-only STOP_MARKET's parameters, and the MARKET request it is tracked as."""
    q = f.round_qty(qty, market=True)
    # never move a stop towards the market: a sell stop rounds down, a buy stop up
    sp = f.round_price(stop_price, "down" if side == "SELL" else "up")
    request = OrderRequest(client_order_id, exchange, symbol, side, "MARKET", float(q), reduce_only=True)  # type: ignore[arg-type]
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
    return params, request
