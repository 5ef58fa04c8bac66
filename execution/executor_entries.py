"""An executor's way from a signal to a position (`Executor.on_signal` and its entry orders' updates).

Intake, in order (every refusal is a risk.events decision in the signal's slot scope): the record
parses (`invalid_signal`), its id is new (`duplicate_signal`; it is remembered from here on) and young
enough (`stale_signal`); the slot holds no position or entry, or only an opposite one and the signal
`is_flip` (then that one is closed or cancelled, `signal_flip`; else `position_open`); the risk guard
allows it (fail closed); it can be sized (`sizing`). Then the entry order is sent, its client order id
derived from the signal id.

The entry order's updates: FILLED opens the position; a maker entry that timed out unfilled gets the
market fallback (within the slippage cap, the guard asked again); any other end drops the entry, and
opens the position of what part-filled. Routed entries (``entry.kind: routed``) are worked by
``execution.routed_entries`` instead: probe, maker wait, taker slices (``execution.routing``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from execution.broker import TERMINAL_STATES, OrderUpdate
from execution.client_ids import client_order_id, position_id
from execution.domain import BookTop, InvalidSignal, Signal
from execution.entries import PendingEntry, fallback_order, fallback_slippage_bps, first_entry_order
from execution.maker_fill_rule import MakerFillRule
from execution.position_manager import Position
from execution.records import position_record
from execution.risk_guard import RiskDecision, slot_scope
from execution.routed_entries import RoutedEntries
from execution.sizing import Size, SizingError, position_size, r_usd_for_tier
from schemas.catalogue import market_key

if TYPE_CHECKING:
    from execution.executor import Executor

log = structlog.get_logger("executor")

POSITIONS = "positions"


class EntryFlow:
    """Signal intake and entry orders of one executor (module docstring); acts on the executor's state."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self.routed = RoutedEntries(self)  # entry.kind routed
        self.router = self.routed.router  # its tables by strategy revision, the degradation flags in force
        # paper (the service and the backtest, on event time) routes by the maker rule on its own clock;
        # testnet/live by the service's wall-clock monitor (``execution.maker_fill_rule``)
        self.maker_rule: MakerFillRule | None = None
        if ex.mode == "paper":
            self.maker_rule = MakerFillRule()
            self.router.flags_at = self.maker_rule.flags_at

    def on_book(self, book: BookTop) -> None:
        self.routed.on_book(book)

    def on_clock(self, now_ms: int) -> None:
        """Maker entries whose wait is over are cancelled (their update sends what follows); routed
        entries take the step that is due (a held entry's probe, the next taker slice)."""
        ex = self.ex
        if self.maker_rule is not None:
            self.maker_rule.advance(now_ms)
        for entry in list(ex.entries.values()):
            if entry.maker_timed_out(ex.config.entry, now_ms):
                ex._route(ex.broker.cancel(entry.request.client_order_id, now_ms, "maker_timeout"), now_ms)
            elif entry.due_ms is not None:
                self.routed.on_clock(entry, now_ms)

    def order_recorded(self, record: Mapping[str, Any]) -> None:
        """Every orders record the executor emits: a maker entry that ended feeds the maker rule."""
        if self.maker_rule is not None:
            self.maker_rule.order_record(record)

    def restore_maker_rule(self, orders: Iterable[Mapping[str, Any]], now_ms: int) -> None:
        """After a restart: the maker rule from the orders records (``MakerFillRule.restore``)."""
        if self.maker_rule is not None:
            self.maker_rule.restore(orders, self.ex.mode, now_ms)

    # ------------------------------------------------------------------ intake
    def on_signal(self, record: Mapping[str, Any], now_ms: int) -> RiskDecision:
        """Decide on one signal; returns the decision (also emitted)."""
        ex = self.ex
        ex.changes += 1
        try:
            sig = Signal.from_record(record)
        except (InvalidSignal, KeyError, TypeError, ValueError) as exc:
            scope = slot_scope(str(record.get("strategy")), str(record.get("exchange")), str(record.get("symbol")))
            log.warning("invalid signal", signal_id=record.get("signal_id"), error=str(exc))
            return ex._decide(RiskDecision("block", scope, "invalid_signal", now_ms))
        scope = slot_scope(sig.strategy, sig.exchange, sig.symbol)
        if sig.signal_id in ex.seen_signals:
            return ex._decide(RiskDecision("block", scope, "duplicate_signal", now_ms))
        ex.seen_signals[sig.signal_id] = sig.eval_time
        if now_ms - sig.eval_time > ex.config.risk.max_signal_age_s * 1000:
            return ex._decide(RiskDecision("block", scope, "stale_signal", now_ms))
        flipping = self._clear_slot(sig, now_ms)
        if flipping is None:
            return ex._decide(RiskDecision("block", scope, "position_open", now_ms))
        decision = self._check_guard(sig, scope, now_ms, leaving=flipping)
        if not decision.allowed:
            return ex._decide(decision)
        try:
            size = position_size(r_usd_for_tier(ex.config, sig.tier, sig.risk_multiplier), sig.risk_distance)
        except SizingError as exc:
            log.warning("no size", signal_id=sig.signal_id, error=str(exc))
            return ex._decide(RiskDecision("block", scope, "sizing", now_ms))
        ex._decide(decision)
        self._enter(sig, size, now_ms)
        return decision

    def _clear_slot(self, sig: Signal, now_ms: int) -> int | None:
        """Make room in the signal's slot: None when its position or entry stays (same direction, or no
        flip); else the number of open positions the flip closes (their close is sent, an entry cancelled)."""
        ex = self.ex
        held = ex.positions.get(ex.slot_position.get(sig.slot, ""))
        entering = ex.entries.get(ex.slot_entry.get(sig.slot, ""))
        for other in (held, entering):
            if other is None:
                continue
            other_direction = other.direction if isinstance(other, Position) else other.signal.direction
            if other_direction == sig.direction or not sig.is_flip:
                return None
        flipping = 0
        if held is not None:
            ex._close(held, "signal_flip", now_ms)
            flipping += 1
        if entering is not None:
            ex._cancel_entry(entering, "signal_flip", now_ms)
        return flipping

    def _check_guard(self, sig: Signal, scope: str, now_ms: int, leaving: int) -> RiskDecision:
        """The risk guard on a new entry; `leaving`: positions or entries counted now that it replaces."""
        ex = self.ex
        return ex.guard.check_entry(
            now_ms=now_ms,
            scope=scope,
            market_data_age_ms=ex._data_age(sig.key, now_ms),
            venue_up=ex.venue_up,
            output_up=ex.sink.healthy,
            sole_writer=ex.owner_ok,
            open_positions=len(ex.positions) + len(ex.entries) - leaving,
        )

    def _enter(self, sig: Signal, size: Size, now_ms: int) -> None:
        ex = self.ex
        if ex.config.entry.kind == "routed":
            self.routed.start(sig, size, now_ms)
            return
        pid = position_id(sig.signal_id)
        request = first_entry_order(
            sig, client_order_id(sig.signal_id, "entry"), size.qty, ex.config.entry, ex.market.books.get(sig.key)
        )
        entry = PendingEntry(sig, pid, size, request, "entry", now_ms)
        ex.entries[pid] = entry
        ex.slot_entry[sig.slot] = pid
        ex._send(request, "entry", sig.signal_id, pid, sig.price, None, now_ms)

    # ------------------------------------------------------------------ entry orders
    def on_update(self, pid: str | None, ev: OrderUpdate, now_ms: int) -> None:
        """An update of the entry order of position `pid` (updates of an order it replaced are ignored)."""
        ex = self.ex
        entry = ex.entries.get(pid or "")
        if entry is None or entry.request.client_order_id != ev.client_order_id:
            return
        if entry.plan is not None:
            self.routed.on_update(entry, ev, now_ms)
            return
        if ev.state == "FILLED":
            ex._drop_entry(entry)
            self._open(entry)
            return
        if ev.state not in TERMINAL_STATES:
            return
        if entry.maker and ev.reason == "maker_timeout" and not entry.fills:
            self._fallback(entry, now_ms)
            return
        ex._drop_entry(entry)
        if entry.fills:  # ended part-filled (cancelled, expired): what we hold is a position to manage
            self._open(entry)

    def _open(self, entry: PendingEntry) -> None:
        """Open the position of an entry from its fills. r_usd is the risk actually taken: the sized 1R
        scaled by filled / sized quantity when they differ (lot-step rounding, a partial fill)."""
        ex = self.ex
        filled = sum(f.qty for f in entry.fills)
        r_usd = entry.size.r_usd
        if abs(filled - entry.size.qty) > 1e-12 * entry.size.qty:
            r_usd = entry.size.r_usd * filled / entry.size.qty
        sig = entry.signal
        pos = Position.open(
            position_id=entry.position_id,
            signal=sig,
            mode=ex.mode,
            fills=entry.fills,
            r_usd=r_usd,
            timeout_ms=ex.config.timeout_ms(sig.strategy, sig.timeout_ms),
            breakeven_offset_r=ex.config.breakeven_offset_r,
            management=ex.config.management_for(sig.strategy),
        )
        ex._register(pos)
        ex.sink.emit(POSITIONS, market_key(pos.exchange, pos.symbol), position_record(pos, "opened", pos.opened_at))

    def _fallback(self, entry: PendingEntry, now_ms: int) -> None:
        """Replace a maker entry that timed out unfilled by the market fallback, if the price has not run
        past the slippage cap and the guard still allows the entry; else drop it."""
        ex = self.ex
        sig = entry.signal
        scope = slot_scope(sig.strategy, sig.exchange, sig.symbol)
        market = ex.market.price(sig.key)
        if market is None or fallback_slippage_bps(sig, market) > ex.config.entry.fallback_slippage_cap_bps:
            ex._drop_entry(entry)
            ex._decide(RiskDecision("block", scope, "slippage_cap", now_ms))
            return
        decision = self._check_guard(sig, scope, now_ms, leaving=1)
        if not decision.allowed:
            ex._drop_entry(entry)
            ex._decide(decision)
            return
        request = fallback_order(
            entry, client_order_id(sig.signal_id, "entry_fallback"), ex.market.trade_time.get(sig.key, sig.eval_time)
        )
        entry.request, entry.leg, entry.submitted_ms = request, "entry_fallback", now_ms
        ex._send(request, "entry_fallback", sig.signal_id, entry.position_id, sig.price, None, now_ms)
