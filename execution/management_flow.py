"""An executor's open positions: exits and position management on trades, the orders they send and
their updates (`Executor.on_trade_tick`, `_close`, `_flatten`, the exit/add-on branch of `_route`).

Per trade of a symbol every open position of it is asked what to do (`Position.on_trade`): an exit
(`ExitIntent`: a crossed stop or target, the timeout, a partial take-profit) becomes a reduce-only
market order; an add-on of a managed position (`execution.management.AddOnIntent`) is first put to
the risk guard (`RiskGuard.check_add_on`: the entry rules and the exposure cap) and, if allowed, sent
as a market order whose client order id derives from the signal id (`client_ids`, leg `add_on_<n>`);
a refused add-on is skipped for good and the refusal published on risk.events in the slot's scope.
Kept apart from `execution.executor` so that class stays one job (routing and shared state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from execution.broker import OrderRequest, OrderUpdate
from execution.client_ids import client_order_id
from execution.domain import entry_side, exit_side
from execution.management import AddOnIntent
from execution.position_manager import ExitIntent, Position
from execution.records import position_record
from execution.risk_guard import RiskDecision, slot_scope
from schemas.catalogue import market_key

if TYPE_CHECKING:
    from execution.executor import Executor

POSITIONS = "positions"


class PositionFlow:
    """Exits and management of one executor's open positions (module docstring)."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex

    def on_trade(self, key: str, price: float, trade_time: int, now_ms: int) -> None:
        """Every open position of market `key` evaluates one trade; what it decides is sent."""
        ex = self.ex
        for pid in list(ex.by_market.get(key, ())):
            pos = ex.positions.get(pid)
            if pos is None:
                continue
            stop = pos.stop
            intent = pos.on_trade(price, trade_time)
            if pos.stop != stop:  # trailed: the quiet band a caller may have cached moved
                ex.changes += 1
            if isinstance(intent, AddOnIntent):
                self.send_add_on(pos, intent, price, now_ms)
            elif intent is not None:
                self.send_exit(pos, intent, now_ms)

    def send_exit(self, pos: Position, intent: ExitIntent, now_ms: int) -> None:
        cid = client_order_id(pos.signal_id, intent.leg, pos.next_attempt(intent.leg))
        req = OrderRequest(
            cid,
            pos.exchange,
            pos.symbol,
            exit_side(pos.direction),
            "MARKET",
            intent.qty,
            reduce_only=True,
            not_before_ms=intent.trigger_time,
        )
        pos.exit_sent(intent, cid)
        reason = intent.order_reason or intent.reason
        self.ex._send(req, intent.leg, pos.signal_id, pos.position_id, intent.reference, reason, now_ms)

    def send_add_on(self, pos: Position, intent: AddOnIntent, price: float, now_ms: int) -> None:
        """Put an add-on to the guard; send it if allowed, else skip it (the refusal on risk.events)."""
        ex = self.ex
        decision = self.check_add_on(pos, intent.qty * price, now_ms)
        if not decision.allowed:
            pos.add_on_refused()
            ex._decide(decision)
            return
        cid = client_order_id(pos.signal_id, intent.leg, pos.next_attempt(intent.leg))
        req = OrderRequest(
            cid,
            pos.exchange,
            pos.symbol,
            entry_side(pos.direction),
            "MARKET",
            intent.qty,
            not_before_ms=intent.trigger_time,
        )
        pos.add_on_sent(intent, cid)
        ex._send(req, intent.leg, pos.signal_id, pos.position_id, None, intent.reason, now_ms)

    def check_add_on(self, pos: Position, added_notional: float, now_ms: int) -> RiskDecision:
        """The guard on an add-on of `added_notional` to `pos`: the entry rules (no new position is
        opened, so not the count) and the cap on the open notional of every position after it."""
        ex = self.ex
        exposure = added_notional
        for other in ex.positions.values():
            last = ex.market.last_price.get(market_key(other.exchange, other.symbol), other.entry)
            exposure += other.qty_open * last
        return ex.guard.check_add_on(
            now_ms=now_ms,
            scope=slot_scope(pos.strategy, pos.exchange, pos.symbol),
            market_data_age_ms=ex._data_age(market_key(pos.exchange, pos.symbol), now_ms),
            venue_up=ex.venue_up,
            output_up=ex.sink.healthy,
            sole_writer=ex.owner_ok,
            exposure_usd=exposure,
        )

    def close(self, pos: Position, reason: str, now_ms: int) -> None:
        """Close at market; the order can fill from the newest trade time of the symbol on."""
        market_time = self.ex.market.trade_time.get(market_key(pos.exchange, pos.symbol), pos.last_event_time)
        intent = pos.request_close(reason, market_time)
        if intent is not None:
            self.send_exit(pos, intent, now_ms)

    def on_update(self, position_id: str | None, ev: OrderUpdate, now_ms: int) -> None:
        """A state change of an exit or add-on order: position events, the guard on a close, a follow-up."""
        ex = self.ex
        pos = ex.positions.get(position_id or "")
        if pos is None:
            return
        kinds, follow = pos.on_order_update(ev)
        key = market_key(pos.exchange, pos.symbol)
        for kind in kinds:
            ex.sink.emit(POSITIONS, key, position_record(pos, kind, ev.event_time))
        if pos.closed:
            ex._unregister(pos)
            net_r = pos.result.net_r if pos.result is not None else 0.0  # every close sets the result
            weight = pos.r_usd / ex.config.base_r_usd
            for decision in ex.guard.record_close(net_r * weight, ev.event_time, now_ms):
                ex._decide(decision)
                if decision.decision == "flatten" and decision.reason == "daily_loss_limit":
                    ex._flatten("risk_flatten", now_ms)
        elif follow is not None:
            self.send_exit(pos, follow, now_ms)
