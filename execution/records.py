"""Executor results as the plain dicts of the Avro schemas (order_event, fill, position_event).

Kept apart from the decision logic so the schema mapping is in one place and every record can be
checked with `AvroSerde(..., strict=True)` in tests. Keys: every record is keyed `exchange:symbol`,
like the inputs, so a symbol's orders, fills and positions stay in order in one partition.
"""

from __future__ import annotations

from typing import Any

from execution.broker import Execution, OrderRequest, OrderUpdate
from execution.position_manager import Position

# legs recorded as `entry` (the OrderLeg enum): the market fallback of a maker entry and the add-ons of
# a managed position (they add to it; the order's reason, add_on_1/add_on_2, tells them apart)
ENTRY_LEGS = ("entry_fallback", "add_on_1", "add_on_2")


def order_record(
    req: OrderRequest,
    *,
    mode: str,
    leg: str,
    state: str,
    event_time: int,
    signal_id: str | None,
    position_id: str | None,
    update: OrderUpdate | None = None,
    reason: str | None = None,
    mid_at_send: tuple[float, str] | None = None,
    config_rev: int | None = None,
    avg_market_price: float | None = None,
) -> dict[str, Any]:
    """One OrderEvent: the request as sent plus the state it is in after `update` (if any);
    `mid_at_send` is the (price, source) the executor knew when it sent the order; `config_rev` the
    strategy revision of the signal or position the order serves (None for orders of neither);
    `avg_market_price` the average market price of its fills so far (`Execution.market_price`)."""
    return {
        "client_order_id": req.client_order_id,
        "signal_id": signal_id,
        "position_id": position_id,
        "exchange_order_id": update.exchange_order_id if update else None,
        "exchange": req.exchange,
        "symbol": req.symbol,
        "mode": mode,
        "leg": "entry" if leg in ENTRY_LEGS else leg,
        "side": req.side,
        "type": req.type,
        "price": req.price,
        "stop_price": None,
        "qty": req.qty,
        "filled_qty": update.filled_qty if update else 0.0,
        "avg_fill_price": update.avg_fill_price if update else None,
        "avg_market_price": avg_market_price,
        "reduce_only": req.reduce_only,
        "state": state,
        "reason": reason if reason is not None else (update.reason if update else None),
        "event_time": event_time,
        "mid_at_send": mid_at_send[0] if mid_at_send else None,
        "mid_source": mid_at_send[1] if mid_at_send else None,
        "config_rev": config_rev,
    }


def fill_record(
    ex: Execution, *, exchange: str, symbol: str, mode: str, reference_price: float | None
) -> dict[str, Any]:
    return {
        "exchange": exchange,
        "symbol": symbol,
        "mode": mode,
        "client_order_id": ex.client_order_id,
        "exchange_order_id": ex.exchange_order_id,
        "trade_id": ex.trade_id,
        "side": ex.side,
        "price": ex.price,
        "qty": ex.qty,
        "fee": ex.fee,
        "fee_asset": ex.fee_asset,
        "liquidity": ex.liquidity,
        "reference_price": reference_price,
        "market_price": ex.market_price,
        "event_time": ex.event_time,
    }


def position_record(pos: Position, kind: str, event_time: int) -> dict[str, Any]:
    """A PositionEvent (`opened`, `tp1` or `closed`) with the position's state after it."""
    closed = kind == "closed"
    return {
        "position_id": pos.position_id,
        "signal_id": pos.signal_id,
        "strategy": pos.strategy,
        "strategy_version": pos.strategy_version,
        "config_hash": pos.config_hash,
        "exchange": pos.exchange,
        "symbol": pos.symbol,
        "mode": pos.mode,
        "event": kind,
        "direction": pos.direction,
        "tier": pos.tier,
        "entry_price": pos.entry,
        "qty": pos.qty_open,
        "r_usd": pos.r_usd,
        "sl_price": pos.stop,
        "tp1_price": pos.plan.tp1,
        "tp2_price": pos.plan.tp2,
        "exit_price": pos.exit_price if kind != "opened" else None,
        "exit_reason": pos.exit_reason if closed else None,
        "pnl_r_gross": pos.result.gross_r if closed and pos.result else None,
        "pnl_r_net": pos.result.net_r if closed and pos.result else None,
        "fees_r": pos.fees_r,
        "slippage_r": pos.slippage_r,
        "funding_r": pos.funding_r,
        "event_time": event_time,
        "timeout_ms": pos.plan.timeout_ms,  # what a restarted executor restores the position with
        "config_rev": pos.config_rev,
    }
