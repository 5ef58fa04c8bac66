"""One open position as a state machine driven by trade ticks and by the fills of its own exit orders.

Why this shape: the old system had two processes (signal engine for flips, paper monitor for TP/SL)
updating the same `paper_trades` row, and they raced (P0-4); a flip after TP1 also forgot the banked
half. Here a position is a plain object owned by exactly one executor, which feeds it every trade of
its symbol and every fill of its orders in sequence, so there is one writer and no locking.

Lifecycle (levels in R around the entry, 1R = the signal's risk distance):

    open --TP1 crossed--> [tp1 order] --filled--> tp1 (half closed, stop -> entry + be_offset R)
    open --SL crossed--> [sl order] --filled--> closed "sl"
    tp1 --stop crossed--> closed "sl_be";  tp1 --TP2 crossed--> closed "tp"
    open|tp1 --age >= timeout (trade time)--> closed "timeout"
    open|tp1 --close(reason)--> closed "signal_flip" | "risk_flatten" | "kill_switch"

Managed positions (`execution.management`, per strategy, off by default) replace TP1 by the ROE
ladder: add-ons (the average entry, stop and target recomputed), a trailing stop and a partial
take-profit reported as the `tp1` event; their P&L is cash-based (`_managed_update`).

Exits are evaluated on every trade tick against the levels; a crossed level becomes a market order
(`ExitIntent`) that the broker fills at a later trade. While an exit order is in flight no other exit
is evaluated; a close requested meanwhile runs once it completes. A rejected exit is re-armed and the
next tick evaluates again (with a new client order id). Levels are anchored at the entry's market
price (the signal's R multiples applied to where the position really opened), using the engine's
`ExitPlan`. P&L: `execution.pnl`.

Funding: the executor calls `pay_funding` at every funding settlement of the symbol (the first trade
or mark record at or after the funding time); a position opened before that time and not yet closed
pays (or receives) qty_open x mark price x rate, accumulated in R as `funding_r` and carried on every
position event. After an executor restart, funding paid since the position's last event is not
known (the events are the state; see `restore`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from execution.broker import Execution, OrderUpdate
from execution.domain import Signal, direction_sign, slot_of
from execution.management import AddOnIntent, Ladder, Management, roe_price, tighter, trail_steps_done
from execution.pnl import (
    MARKET_REASONS,
    TP1_FRACTION,
    PnlBreakdown,
    fee_r,
    funding_payment,
    gross_pnl_r,
    price_move_r,
    slippage_r,
)
from stream_apps.core.exits import ExitPlan, plan_exits
from stream_apps.core.strategy import Exits

ExitLeg = Literal["tp1", "tp2", "sl", "exit"]
Phase = Literal["open", "tp1", "closed"]


@dataclass(frozen=True, slots=True)
class ExitIntent:
    """A crossed level or a requested close: send a reduce-only market order for `qty`."""

    leg: ExitLeg
    reason: str  # "tp1" for the partial, else the exit reason of the close
    qty: float
    reference: float | None  # the level for tp1/tp2/sl legs; None for market exits
    trigger_time: int
    order_reason: str | None = None  # the order's reason when it is not `reason` (a managed partial: partial_tp)


@dataclass(slots=True)
class _PendingExit:
    intent: ExitIntent | AddOnIntent
    client_order_id: str
    filled_qty: float = 0.0
    notional: float = 0.0  # sum of qty x fill price
    market_notional: float = 0.0  # sum of qty x market price
    fees_r: float = 0.0
    slippage_r: float = 0.0


def plan_from_signal(signal: Signal, entry: float, timeout_ms: int) -> ExitPlan:
    """The signal's SL/TP1/TP2 (in R) re-anchored at the actual entry price.

    `plan_exits` computes R as sl_atr_mult x atr; passing atr = R and sl_atr_mult = 1 keeps R exact.
    """
    exits = Exits(sl_atr_mult=1.0, tp1_r=signal.tp1_r, tp2_r=signal.tp2_r, timeout_min=max(1, timeout_ms // 60_000))
    plan = plan_exits(signal.direction, entry, signal.risk_distance, exits)
    return replace(plan, atr=signal.atr, timeout_ms=timeout_ms)


@dataclass(slots=True)
class Position:
    position_id: str
    signal_id: str
    strategy: str
    strategy_version: str
    config_hash: str
    exchange: str
    symbol: str
    mode: str
    tier: str
    plan: ExitPlan
    qty_initial: float
    r_usd: float
    opened_at: int
    breakeven_offset_r: float = 0.0
    qty_open: float = 0.0
    stop: float = 0.0
    phase: Phase = "open"
    fees_r: float = 0.0
    slippage_r: float = 0.0
    funding_r: float = 0.0  # > 0 = paid
    last_event_time: int = 0
    tp1_done: bool = False
    exit_reason: str | None = None
    exit_price: float | None = None  # average fill price of the last exit leg
    result: PnlBreakdown | None = None
    pending: _PendingExit | None = None
    deferred_close: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    config_rev: int = 0  # the signal's strategy revision, on every event and order of the position
    ladder: Ladder | None = None  # position management (`execution.management`); None: TP1/TP2 as before
    entry_value: float = 0.0  # managed: sum of qty x market price of the entry and add-on fills
    qty_entered: float = 0.0  # managed: the quantity of those fills
    entry_fees: float = 0.0  # managed: commission paid on them (quote currency)
    exit_value: float = 0.0  # managed: sum of qty x reference (level, or market price) of the exit fills

    # --- construction ---------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        *,
        position_id: str,
        signal: Signal,
        mode: str,
        fills: list[Execution],
        r_usd: float,
        timeout_ms: int,
        breakeven_offset_r: float = 0.0,
        management: Management | None = None,
    ) -> Position:
        """A position from its entry fills; levels anchored at their (qty-weighted) market price.
        `management` enabled: the position is managed by ROE (`execution.management`)."""
        qty = sum(f.qty for f in fills)
        if not fills or qty <= 0:
            raise ValueError("a position needs at least one entry fill")
        anchor = sum(f.qty * f.market_price for f in fills) / qty
        plan = plan_from_signal(signal, anchor, timeout_ms)
        pos = cls(
            position_id,
            signal.signal_id,
            signal.strategy,
            signal.strategy_version,
            signal.config_hash,
            signal.exchange,
            signal.symbol,
            mode,
            signal.tier,
            plan,
            qty,
            r_usd,
            opened_at=max(f.event_time for f in fills),
            breakeven_offset_r=breakeven_offset_r,
            qty_open=qty,
            stop=plan.sl,
            config_rev=signal.config_rev,
        )
        pos.last_event_time = pos.opened_at
        if management is not None and management.enabled:
            pos.ladder = Ladder(management, qty)
            pos.entry_value, pos.qty_entered = anchor * qty, qty
            pos.entry_fees = sum(f.fee for f in fills)
            pos.plan = replace(plan, tp1=_partial_level(pos.ladder, plan.direction, anchor, plan.tp1))
        for f in fills:
            pos.fees_r += fee_r(f.fee, r_usd)
            pos.slippage_r += slippage_r(
                plan.direction,
                opening=True,
                reference=f.market_price,
                price=f.price,
                fraction=f.qty / qty,
                risk_distance=plan.risk_distance,
            )
        return pos

    @classmethod
    def restore(
        cls,
        opened: Mapping[str, Any],
        tp1: Mapping[str, Any] | None,
        *,
        timeout_ms: int,
        breakeven_offset_r: float = 0.0,
    ) -> Position:
        """Rebuild an open position from its `opened` (and `tp1`) events on the positions topic.

        R is recovered as r_usd / initial qty (r_usd is by construction qty x R), the R multiples of
        the levels from the prices; after TP1 the break-even offset is the one the stop was moved by,
        before it the configured one. ``timeout_ms`` is the caller's: the executor passes the one the
        opened event carries (the signal's), or its own setting for events from before they carried it.
        """
        qty0 = float(opened["qty"])
        r_usd = float(opened["r_usd"])
        R = r_usd / qty0
        direction = opened["direction"]
        sign = direction_sign(direction)
        entry = float(opened["entry_price"])
        tp1_r = sign * (float(opened["tp1_price"]) - entry) / R
        tp2_r = sign * (float(opened["tp2_price"]) - entry) / R
        sl_r = -sign * (float(opened["sl_price"]) - entry) / R
        plan = ExitPlan(
            direction=direction,
            entry=entry,
            atr=0.0,
            risk_distance=R,
            sl=float(opened["sl_price"]),
            tp1=float(opened["tp1_price"]),
            tp2=float(opened["tp2_price"]),
            tp1_r=tp1_r,
            tp2_r=tp2_r,
            timeout_ms=timeout_ms,
            risk_multiplier=1.0,
            sl_r=sl_r,
        )
        last = tp1 or opened
        pos = cls(
            opened["position_id"],
            opened["signal_id"],
            opened["strategy"],
            opened["strategy_version"],
            opened["config_hash"],
            opened["exchange"],
            opened["symbol"],
            opened["mode"],
            opened["tier"],
            plan,
            qty0,
            r_usd,
            opened_at=int(opened["event_time"]),
            qty_open=float(last["qty"]),
            stop=float(last["sl_price"]),
            fees_r=float(last["fees_r"]),
            slippage_r=float(last["slippage_r"]),
            funding_r=float(last.get("funding_r") or 0.0),
            last_event_time=int(last["event_time"]),
            breakeven_offset_r=breakeven_offset_r,
            config_rev=int(opened.get("config_rev") or 0),
        )
        if tp1 is not None:
            pos.phase = "tp1"
            pos.tp1_done = True
            pos.breakeven_offset_r = sign * (pos.stop - entry) / R
        return pos

    # --- queries ------------------------------------------------------------------------------------------
    @property
    def direction(self) -> str:
        return self.plan.direction

    @property
    def entry(self) -> float:
        return self.plan.entry

    @property
    def closed(self) -> bool:
        return self.phase == "closed"

    @property
    def slot(self) -> tuple[str, str, str]:
        return slot_of(self.strategy, self.exchange, self.symbol, self.signal_id)

    @property
    def pending_client_order_id(self) -> str | None:
        return self.pending.client_order_id if self.pending else None

    def next_attempt(self, leg: str) -> int:
        return self.attempts.get(leg, 0)

    # --- inputs -------------------------------------------------------------------------------------------
    def pay_funding(self, funding_time: int, mark_price: float, rate: float) -> float:
        """Settle one funding time: the quote currency paid (< 0 received); 0 unless the position was
        open at `funding_time` (opened before it, not closed)."""
        if self.phase == "closed" or self.opened_at >= funding_time or self.qty_open <= 0:
            return 0.0
        paid = funding_payment(self.direction, self.qty_open, mark_price, rate)
        self.funding_r += paid / self.r_usd
        return paid

    def quiet_band(self) -> tuple[float, float, float]:
        """``(low, high, until)``: ``on_trade(price, t)`` returns None for every ``low < price < high``
        and ``t < until`` (stop and the phase's take-profit not crossed, timeout not reached; no
        limits when closed or with an exit in flight). A caller feeding many trades may pass only
        those outside it, plus the newest one (the backtest runner's sparse feed)."""
        if self.phase == "closed" or self.pending is not None:
            return -math.inf, math.inf, math.inf
        target = self.plan.tp1 if self.phase == "open" else self.plan.tp2
        sign = direction_sign(self.direction)
        if self.ladder is not None:  # managed: the target, or the ladder's next step if nearer
            target = self.plan.tp2
            step = self.ladder.next_trigger(self.direction, self.entry)
            if step is not None and sign * (step - target) < 0:
                target = step
        until = self.opened_at + self.plan.timeout_ms
        if sign > 0:
            return self.stop, target, until
        return target, self.stop, until

    def on_trade(self, price: float, trade_time: int) -> ExitIntent | AddOnIntent | None:
        """Evaluate SL, TP1, TP2 and timeout on one trade (managed: the ladder instead of TP1); returns
        the order to send, if any."""
        if self.phase == "closed" or self.pending is not None or trade_time < self.last_event_time:
            return None
        if self.ladder is not None:
            return _managed_trade(self, self.ladder, price, trade_time)
        sign = direction_sign(self.direction)
        if sign * (price - self.stop) <= 0:
            return ExitIntent("sl", "sl_be" if self.phase == "tp1" else "sl", self.qty_open, self.stop, trade_time)
        if self.phase == "open" and sign * (price - self.plan.tp1) >= 0:
            return ExitIntent("tp1", "tp1", self.qty_initial * TP1_FRACTION, self.plan.tp1, trade_time)
        if self.phase == "tp1" and sign * (price - self.plan.tp2) >= 0:
            return ExitIntent("tp2", "tp", self.qty_open, self.plan.tp2, trade_time)
        if trade_time - self.opened_at >= self.plan.timeout_ms:
            return ExitIntent("exit", "timeout", self.qty_open, None, trade_time)
        return None

    def request_close(self, reason: str, now_ms: int) -> ExitIntent | None:
        """Close the rest at market for `reason` (signal_flip, risk_flatten, kill_switch)."""
        if reason not in MARKET_REASONS:
            raise ValueError(f"{reason!r} is not a market exit reason")
        if self.phase == "closed":
            return None
        if self.pending is not None:
            if self.pending.intent.leg == "tp1" or isinstance(self.pending.intent, AddOnIntent):
                self.deferred_close = self.deferred_close or reason  # after the half is out, close the rest
            return None
        return ExitIntent("exit", reason, self.qty_open, None, now_ms)

    def exit_sent(self, intent: ExitIntent, client_order_id: str) -> None:
        self.pending = _PendingExit(intent, client_order_id)

    def on_execution(self, ex: Execution) -> None:
        p = self.pending
        if p is None or ex.client_order_id != p.client_order_id:
            raise ValueError(f"{ex.client_order_id} is not the pending exit of {self.position_id}")
        adding = isinstance(p.intent, AddOnIntent)
        level = None if isinstance(p.intent, AddOnIntent) else p.intent.reference
        reference = level if level is not None else ex.market_price
        p.filled_qty += ex.qty
        p.notional += ex.qty * ex.price
        p.market_notional += ex.qty * ex.market_price
        p.fees_r += fee_r(ex.fee, self.r_usd)
        p.slippage_r += slippage_r(
            self.direction,
            opening=adding,
            reference=reference,
            price=ex.price,
            fraction=ex.qty / self.qty_initial,
            # R of the first entry: managed positions re-size R on add-ons, costs stay in the signal's R
            risk_distance=self.plan.risk_distance if self.ladder is None else self.r_usd / self.qty_initial,
        )

    def on_order_update(self, update: OrderUpdate) -> tuple[list[str], ExitIntent | None]:
        """Apply a state change of the pending exit order.

        Returns the position events it caused ("tp1" or "closed") and an exit to send next (a close
        deferred behind TP1), if any. Exits are assumed to fill completely (the paper broker does); an
        exit that dies part-filled keeps its costs, reduces the open quantity and is re-armed.
        """
        p = self.pending
        if p is None or update.client_order_id != p.client_order_id:
            return [], None
        if update.state not in ("FILLED", "CANCELED", "REJECTED", "EXPIRED"):
            return [], None
        if self.ladder is not None:
            return _managed_update(self, self.ladder, p, update)
        self.pending = None
        self.fees_r += p.fees_r
        self.slippage_r += p.slippage_r
        self.qty_open -= p.filled_qty
        if p.filled_qty:
            self.last_event_time = max(self.last_event_time, update.event_time)
            self.exit_price = p.notional / p.filled_qty
        if update.state != "FILLED":
            self.attempts[p.intent.leg] = self.attempts.get(p.intent.leg, 0) + 1
            return [], None
        sign = direction_sign(self.direction)
        if p.intent.leg == "tp1":
            self.phase = "tp1"
            self.tp1_done = True
            self.stop = self.entry + sign * self.breakeven_offset_r * self.plan.risk_distance
            follow = None
            if self.deferred_close:
                follow = ExitIntent("exit", self.deferred_close, self.qty_open, None, update.event_time)
                self.deferred_close = None
            return ["tp1"], follow
        self.qty_open = 0.0
        move = None
        if p.intent.reason in MARKET_REASONS:
            move = price_move_r(self.direction, self.entry, p.market_notional / p.filled_qty, self.plan.risk_distance)
        gross = gross_pnl_r(
            p.intent.reason,
            self.plan.tp1_r,
            self.plan.tp2_r,
            tp1_hit=self.tp1_done,
            exit_move_r=move,
            sl_r=self.plan.sl_r,
            breakeven_offset_r=self.breakeven_offset_r,
        )
        self.phase = "closed"
        self.exit_reason = p.intent.reason
        self.result = PnlBreakdown(gross, self.fees_r, self.slippage_r, self.funding_r)
        return ["closed"], None

    # --- management (`execution.management`) ----------------------------------------------------------
    def add_on_sent(self, intent: AddOnIntent, client_order_id: str) -> None:
        self.pending = _PendingExit(intent, client_order_id)

    def add_on_refused(self) -> None:
        """The guard refused the next add-on: it is skipped for good."""
        if self.ladder is not None:
            self.ladder.add_ons_done += 1


def _managed_trade(pos: Position, ladder: Ladder, price: float, trade_time: int) -> ExitIntent | AddOnIntent | None:
    """Stop, target, timeout, then the ladder: trailing (no order), an add-on, the partial take-profit."""
    sign = direction_sign(pos.direction)
    if sign * (price - pos.stop) <= 0:
        return ExitIntent("sl", "sl_be" if ladder.trailed else "sl", pos.qty_open, pos.stop, trade_time)
    if sign * (price - pos.plan.tp2) >= 0:
        return ExitIntent("tp2", "tp", pos.qty_open, pos.plan.tp2, trade_time)
    if trade_time - pos.opened_at >= pos.plan.timeout_ms:
        return ExitIntent("exit", "timeout", pos.qty_open, None, trade_time)
    fees_open = pos.entry_fees * pos.qty_open / pos.qty_entered  # entry fees of what is open
    pos.stop = ladder.trail(pos.direction, pos.entry, pos.qty_open, fees_open, price, pos.stop)
    add = ladder.add_on(pos.direction, pos.entry, price, trade_time)
    if add is not None:
        return add
    if not ladder.partial_due(pos.direction, pos.entry, price):
        return None
    level = pos.plan.tp1  # the partial take-profit's price at the current average entry
    if ladder.first_qty < pos.qty_open * (1 - 1e-9):
        return ExitIntent("tp1", "tp1", ladder.first_qty, level, trade_time, order_reason="partial_tp")
    return ExitIntent("tp1", "tp", pos.qty_open, level, trade_time, order_reason="partial_tp")


def _managed_update(
    pos: Position, ladder: Ladder, p: _PendingExit, update: OrderUpdate
) -> tuple[list[str], ExitIntent | None]:
    """`on_order_update` of a managed position: costs in, then the add-on, partial or close applied.
    P&L is cash-based: gross = direction x (exit value - entry value) / r_usd, each fill valued at
    its reference (entries and market exits: the market price; stop, target, partial: the level)."""
    pos.pending = None
    pos.fees_r += p.fees_r
    pos.slippage_r += p.slippage_r
    if p.filled_qty:
        pos.last_event_time = max(pos.last_event_time, update.event_time)
    follow = None
    if pos.deferred_close and (isinstance(p.intent, AddOnIntent) or update.state == "FILLED"):
        follow = pos.deferred_close
    intent = p.intent
    if isinstance(intent, AddOnIntent):
        ladder.add_ons_done = max(ladder.add_ons_done, intent.index)  # made, or skipped if nothing filled
        if p.filled_qty:
            pos.qty_open += p.filled_qty
            pos.entry_value += p.market_notional
            pos.qty_entered += p.filled_qty
            pos.entry_fees += p.fees_r * pos.r_usd
            _reprice(pos, ladder)
        return [], _follow(pos, follow, update.event_time)
    pos.qty_open -= p.filled_qty
    pos.exit_value += p.filled_qty * intent.reference if intent.reference is not None else p.market_notional
    if p.filled_qty:
        pos.exit_price = p.notional / p.filled_qty
    if update.state != "FILLED":
        pos.attempts[intent.leg] = pos.attempts.get(intent.leg, 0) + 1
        return [], None
    if intent.leg == "tp1" and pos.qty_open > 1e-9 * pos.qty_entered:
        ladder.partial_done, pos.phase, pos.tp1_done = True, "tp1", True
        return ["tp1"], _follow(pos, follow, update.event_time)
    pos.qty_open = 0.0
    gross = direction_sign(pos.direction) * (pos.exit_value - pos.entry_value) / pos.r_usd
    pos.phase = "closed"
    pos.exit_reason = intent.reason
    pos.result = PnlBreakdown(gross, pos.fees_r, pos.slippage_r, pos.funding_r)
    return ["closed"], None


def _follow(pos: Position, reason: str | None, event_time: int) -> ExitIntent | None:
    """The close deferred behind the order that just ended, if any."""
    if reason is None:
        return None
    pos.deferred_close = None
    return ExitIntent("exit", reason, pos.qty_open, None, event_time)


def _reprice(pos: Position, ladder: Ladder, qty: float | None = None) -> None:
    """After an add-on: the average entry, R' = r_usd / open quantity (`qty`), stop (only tighter) and
    target from the signal's R multiples around the average, the partial take-profit's price."""
    avg = pos.entry_value / pos.qty_entered
    r_new = pos.r_usd / (qty if qty is not None else pos.qty_open)
    sign = direction_sign(pos.direction)
    stop = avg - sign * pos.plan.sl_r * r_new
    pos.stop = tighter(pos.direction, pos.stop, stop)
    pos.plan = replace(
        pos.plan,
        entry=avg,
        risk_distance=r_new,
        sl=stop,
        tp1=_partial_level(ladder, pos.direction, avg, pos.plan.tp1),
        tp2=avg + sign * pos.plan.tp2_r * r_new,
    )


def _partial_level(ladder: Ladder, direction: str, avg: float, default: float) -> float:
    """The price of the partial take-profit at average entry `avg` (`default` when there is none)."""
    roe_at = ladder.config.partial_take_profit_roe
    return default if roe_at is None else roe_price(direction, avg, roe_at, ladder.config.leverage)


def resume_management(
    pos: Position,
    management: Management,
    add_ons: Mapping[int, tuple[float, float]],
    opened_fees_r: float,
) -> None:
    """Make a position restored from its events (`Position.restore`) managed again. `add_ons` maps each
    add-on that ended (1-based index) to its (filled qty, average fill price), from the orders topic;
    `opened_fees_r` is the `opened` event's fees_r (the first entry's fees). The average entry, stop and
    target are recomputed as after the add-ons (assumed made before the partial, as the default ladder
    orders them); the add-ons' fees are estimated at the first entry's fee rate; the partial is done
    when the `tp1` event was seen (valued at its level, the event's tp1_price); the trailing steps done
    are those the restored stop is at or beyond. Not recovered: a stop trailed after the position's
    last event (the next trade at that ROE trails it again)."""
    qty0 = pos.qty_initial
    pos.ladder = ladder = Ladder(management, qty0, add_ons_done=max(add_ons, default=0))
    first_fees = opened_fees_r * pos.r_usd
    rate = first_fees / (qty0 * pos.entry)
    pos.entry_value, pos.qty_entered, pos.entry_fees = qty0 * pos.entry, qty0, first_fees
    for qty, price in add_ons.values():
        pos.entry_value += qty * price
        pos.qty_entered += qty
        pos.entry_fees += rate * qty * price
    stop = pos.stop
    _reprice(pos, ladder, pos.qty_entered)
    if pos.tp1_done:  # the partial: what was entered less what is open, valued at its level
        ladder.partial_done = True
        pos.exit_value = (pos.qty_entered - pos.qty_open) * pos.plan.tp1
    else:  # the last event is `opened`: the add-ons came after it, so did their fees
        pos.qty_open = pos.qty_entered
        pos.fees_r += (pos.entry_fees - first_fees) / pos.r_usd
    fees_open = pos.entry_fees * pos.qty_open / pos.qty_entered
    ladder.trail_steps = trail_steps_done(management, pos.direction, pos.entry, pos.qty_open, fees_open, stop)
