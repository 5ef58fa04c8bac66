"""Transaction cost analysis of one closed trade: what each order's fills paid against the mid the
executor knew when it sent the order, who provided the liquidity, and how much of the gross the
costs took.

Definitions (per order, over its fills):
- ``vwap`` = sum(qty x price) / sum(qty);
- ``slip_bps = (vwap - mid_at_send) / mid_at_send x 1e4``, signed by side: > 0 is worse for us (a buy
  paid more than the mid, a sell received less);
- ``maker_share`` = maker quantity / all filled quantity of the trade;
- ``cost_share = (fees + funding) / |gross|`` in R (None for a gross of exactly 0).

The mid at send comes from the order record (``mid_source`` says whether it was the book's mid or
the last trade price); for orders written before orders carried it the loader supplies the last
stored trade price at send and marks it ``trades_table``. Pure: rows in, numbers out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OrderSent:
    """One order of the trade as sent (its PENDING_NEW record)."""

    client_order_id: str
    leg: str  # entry | tp1 | tp2 | sl | exit
    side: str  # BUY | SELL
    sent_time: int
    mid_at_send: float | None
    mid_source: str | None  # book | last_trade | trades_table


@dataclass(frozen=True, slots=True)
class Fill:
    client_order_id: str
    price: float
    qty: float
    fee: float
    liquidity: str  # maker | taker
    event_time: int


@dataclass(frozen=True, slots=True)
class OrderCost:
    client_order_id: str
    leg: str
    side: str
    qty: float
    vwap: float
    mid_at_send: float | None
    mid_source: str | None
    slip_bps: float | None  # None without a mid at send
    fees: float  # quote currency
    maker_qty: float


@dataclass(frozen=True, slots=True)
class Tca:
    orders: tuple[OrderCost, ...]
    maker_share: float | None  # None without fills
    fees_quote: float
    cost_share: float | None
    entry_slip_bps: float | None  # quantity-weighted over the entry orders
    exit_slip_bps: float | None  # quantity-weighted over the exit orders

    def as_dict(self) -> dict[str, object]:
        return {
            "orders": [
                {
                    "client_order_id": o.client_order_id,
                    "leg": o.leg,
                    "side": o.side,
                    "qty": o.qty,
                    "vwap": o.vwap,
                    "mid_at_send": o.mid_at_send,
                    "mid_source": o.mid_source,
                    "slip_bps": o.slip_bps,
                    "fees": o.fees,
                    "maker_qty": o.maker_qty,
                }
                for o in self.orders
            ],
            "maker_share": self.maker_share,
            "fees_quote": self.fees_quote,
            "cost_share": self.cost_share,
            "entry_slip_bps": self.entry_slip_bps,
            "exit_slip_bps": self.exit_slip_bps,
        }


def slip_bps(side: str, vwap: float, mid: float) -> float:
    """(vwap - mid) / mid x 1e4, positive when the fill was worse than the mid for `side`."""
    sign = 1.0 if side == "BUY" else -1.0
    return sign * (vwap - mid) / mid * 1e4


def cost_share(gross_r: float, fees_r: float, funding_r: float) -> float | None:
    """(fees + funding) / |gross|; None when the gross is exactly 0 (every cost is then all of it)."""
    return (fees_r + funding_r) / abs(gross_r) if gross_r else None


def _weighted(costs: Iterable[OrderCost]) -> float | None:
    rows = [(c.qty, c.slip_bps) for c in costs if c.slip_bps is not None and c.qty > 0]
    total = sum(q for q, _ in rows)
    return sum(q * s for q, s in rows) / total if total else None


def tca(orders: Sequence[OrderSent], fills: Sequence[Fill], *, gross_r: float, fees_r: float, funding_r: float) -> Tca:
    """The trade's costs per order (orders without fills are left out) and in total."""
    costs: list[OrderCost] = []
    for order in orders:
        own = [f for f in fills if f.client_order_id == order.client_order_id]
        qty = sum(f.qty for f in own)
        if qty <= 0:
            continue
        vwap = sum(f.qty * f.price for f in own) / qty
        mid = order.mid_at_send
        costs.append(
            OrderCost(
                order.client_order_id,
                order.leg,
                order.side,
                qty,
                vwap,
                mid,
                order.mid_source if mid is not None else None,
                slip_bps(order.side, vwap, mid) if mid else None,
                sum(f.fee for f in own),
                sum(f.qty for f in own if f.liquidity == "maker"),
            )
        )
    filled = sum(c.qty for c in costs)
    return Tca(
        tuple(costs),
        sum(c.maker_qty for c in costs) / filled if filled else None,
        sum(c.fees for c in costs),
        cost_share(gross_r, fees_r, funding_r),
        _weighted(c for c in costs if c.leg == "entry"),
        _weighted(c for c in costs if c.leg != "entry"),
    )
