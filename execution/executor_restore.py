"""An executor's state rebuilt after a restart from its own output topics (`Executor.restore`).

From the records of every mode (only the executor's own are used): the risk guard from risk.events,
the signals already handled from orders and positions, open positions from positions (with their
first take-profit when it was hit; a managed position also its add-ons, from their orders:
`position_manager.resume_management`). Each order the previous run left unfinished then gets one of:

- exchange modes: looked up by client id (`broker.resume`), never sent again; an entry's signal is read
  back so a late-found fill opens its position with its exit plan, and an entry still resting is
  cancelled (its signal is old by now);
- paper, committed cut (the transactional service): re-entered in the new paper book as it was,
  entries included, so the next trade delivered fills it as it would have without the restart;
- paper otherwise: an exit is re-entered in the new paper book, an entry is dropped (CANCELED,
  `executor_restart`);
- paper, an order re-entered after it had filled in part (book fills: `PaperFills.fills`): only the
  rest can fill (`PaperBroker.resubmit`), so the order never fills more than its quantity, and what
  it had filled is put back on its exit or entry as its fills records say, one by one in their order
  at their prices, fees and market prices (`routed_restore.OrderFills`: the same sums in the same
  order as the uninterrupted run, bit for bit; the paper book's notional too); when its fills records
  do not add up to its orders record (none were passed, or older records), as one execution at the
  record's average fill and market prices (equal to about 12 digits);
- exchange modes without `resume`: CANCELED, left to reconciliation;
- a routed entry (`entry.kind: routed`) whose position has not opened, with an order in flight or
  between two of its orders: rebuilt with its plan (from its orders' reasons and the strategy
  revision's routing table) and worked on per the mode, its position opened with every fill, also
  in paper without a committed cut (`execution.routed_restore`).

A kill switch restored in its flatten state flattens at once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import structlog

from execution.broker import TERMINAL_STATES, Execution, OrderRequest
from execution.client_ids import client_order_id, position_id
from execution.domain import InvalidSignal, Signal
from execution.entries import EntryLeg, PendingEntry
from execution.position_manager import ExitIntent, ExitLeg, Position, resume_management
from execution.risk_guard import KILL_SWITCH, RiskGuard
from execution.routed_restore import OrderFills, RoutedRestore, replayed_sums, request_of, restore_mid
from execution.sizing import Size, SizingError, position_size, r_usd_for_tier

if TYPE_CHECKING:
    from execution.executor import Executor

log = structlog.get_logger("executor")

SignalLookup = Callable[[set[str]], Mapping[str, Mapping[str, Any]]]


def _entry_leg(cid: str, signal_id: str | None) -> EntryLeg:
    """Which entry order of its signal `cid` is: the first or the market fallback."""
    return "entry_fallback" if signal_id and cid == client_order_id(signal_id, "entry_fallback") else "entry"


def _sent_exit(pos: Position, leg: str, reason: str | None, req: OrderRequest) -> tuple[str, float | None]:
    """Put an unfinished exit order back on its position; returns its (exit reason, reference price).
    The leg names the reason where it can; a close carries it on its intent (else it was a timeout)."""
    reason = {"tp1": "tp1", "tp2": "tp", "sl": "sl_be" if pos.tp1_done else "sl"}.get(leg) or reason or "timeout"
    reference = {"tp1": pos.plan.tp1, "tp2": pos.plan.tp2, "sl": pos.stop}.get(leg)
    intent = ExitIntent(cast(ExitLeg, leg), reason, req.qty, reference, req.not_before_ms)
    pos.exit_sent(intent, req.client_order_id)
    return reason, reference


class StateRestore:
    """One restore of `ex` (module docstring); `run` returns its summary counts."""

    def __init__(self, ex: Executor, now_ms: int, signals: SignalLookup | None, committed_cut: bool) -> None:
        self.ex = ex
        self.now_ms = now_ms
        self.signals = signals
        self.paper = ex.mode == "paper"
        self.reenter = committed_cut and self.paper
        self.resume = None if self.paper else getattr(ex.broker, "resume", None)
        self.intent_reason: dict[str, str | None] = {}  # exit orders carry their exit reason on the intent
        self.sent_ms: dict[str, int] = {}  # when each order was sent (its PENDING_NEW record)
        self.positioned: set[str] = set()  # positions with any event (opened: their entry is done)
        self.found: dict[str, Mapping[str, Any]] = {}  # signal records of unfinished entries, by id
        self.resumed = self.cancelled = 0
        self.fills = OrderFills((), ex.mode, set(), ex.config.fees)  # run() reads them
        # add-ons of managed positions that ended: position id -> {index: (filled qty, avg fill price)}
        self.add_ons: dict[str, dict[int, tuple[float, float]]] = defaultdict(dict)

    def run(
        self,
        positions: Iterable[Mapping[str, Any]],
        orders: Iterable[Mapping[str, Any]],
        risk: Iterable[Mapping[str, Any]],
        fills: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, int]:
        ex = self.ex
        ex.changes += 1
        ex.guard = RiskGuard.restore(ex.config.risk, ex.mode, risk, self.now_ms)
        last_order = self._read_orders(orders)
        self._restore_positions(positions)
        unfinished = {cid: rec for cid, rec in last_order.items() if rec["state"] not in TERMINAL_STATES}
        # the fills of what may be put back: unfinished orders and the entries of positions not opened
        wanted = set(unfinished) | {
            cid
            for cid, rec in last_order.items()
            if rec["leg"] == "entry" and rec.get("position_id") not in self.positioned
        }
        self.fills = OrderFills(fills, ex.mode, wanted, ex.config.fees)
        routed = RoutedRestore(self, last_order)
        self._read_signals(unfinished, routed.signal_ids)
        handled = routed.run()  # routed entries with their plan (execution.routed_restore)
        for cid, rec in unfinished.items():
            if cid not in handled:
                self._restore_order(cid, rec)
        if ex.guard.state.kill_switch_flatten:
            ex._flatten(KILL_SWITCH, self.now_ms)
        return {"positions": len(ex.positions), "orders_resumed": self.resumed, "orders_cancelled": self.cancelled}

    def _read_orders(self, orders: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        """The newest record of each of our orders; notes exit reasons and the signals entered."""
        last_order: dict[str, Mapping[str, Any]] = {}
        for rec in orders:
            if rec["mode"] != self.ex.mode:
                continue
            last_order[rec["client_order_id"]] = rec
            if rec["state"] == "PENDING_NEW":
                self.intent_reason[rec["client_order_id"]] = rec.get("reason")
                self.sent_ms[rec["client_order_id"]] = int(rec["event_time"])
            if rec["leg"] == "entry" and rec.get("signal_id"):
                self.ex.seen_signals.setdefault(rec["signal_id"], int(rec["event_time"]))
        for cid, rec in last_order.items():
            sid, pid = rec.get("signal_id"), rec.get("position_id")
            if rec["leg"] != "entry" or not sid or not pid or rec["state"] not in TERMINAL_STATES:
                continue
            for index in (1, 2):
                if cid == client_order_id(sid, f"add_on_{index}"):
                    self.add_ons[pid][index] = (float(rec["filled_qty"] or 0.0), float(rec["avg_fill_price"] or 0.0))
        return last_order

    def _restore_positions(self, positions: Iterable[Mapping[str, Any]]) -> None:
        """Register every position opened and not closed; every position's signal counts as handled."""
        ex = self.ex
        events: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        for rec in positions:
            if rec["mode"] == ex.mode:
                events[rec["position_id"]][rec["event"]] = rec
                self.positioned.add(rec["position_id"])
                ex.seen_signals.setdefault(rec["signal_id"], int(rec["event_time"]))
        for evs in events.values():
            if "closed" in evs or "opened" not in evs:
                continue
            opened = evs["opened"]
            # the timeout it was opened with (events from before positions carried it: the setting)
            timeout_ms = opened.get("timeout_ms") or ex.config.timeout_ms(opened["strategy"])
            pos = Position.restore(
                opened, evs.get("tp1"), timeout_ms=int(timeout_ms), breakeven_offset_r=ex.config.breakeven_offset_r
            )
            management = ex.config.management_for(pos.strategy)
            if management.enabled:  # the ladder's state from the events and the add-on orders
                resume_management(pos, management, self.add_ons.get(pos.position_id, {}), float(opened["fees_r"]))
            ex._register(pos)

    def _read_signals(self, unfinished: Mapping[str, Mapping[str, Any]], routed: set[str]) -> None:
        """The signals of unfinished entries, when something will rebuild those entries, and of the
        routed entries to rebuild (every mode: at least their position opens with what filled)."""
        wanted = {rec["signal_id"] for rec in unfinished.values() if rec["leg"] == "entry" and rec.get("signal_id")}
        if not (self.resume is not None or self.reenter):
            wanted = set()
        wanted |= routed
        if wanted and self.signals is not None:
            self.found = dict(self.signals(wanted))

    def _restore_order(self, cid: str, rec: Mapping[str, Any]) -> None:
        ex = self.ex
        req = request_of(cid, rec)
        pos = ex.positions.get(rec.get("position_id") or "")
        if self.resume is not None:
            self._resume_order(req, rec, pos, self.resume)
            self.resumed += 1
            return
        if self.reenter and rec["leg"] == "entry" and self._reenter_entry(req, rec):
            self.resumed += 1
            return
        if self.reenter and pos is not None:
            req = replace(req, not_before_ms=0)
        if rec["leg"] == "entry" or pos is None or not self.paper:
            # an entry cut short by the restart is dropped (its signal is old by now); exits of
            # other modes are the reconciler's job
            ex._emit_order(
                req,
                rec["leg"],
                rec.get("signal_id"),
                rec.get("position_id"),
                "CANCELED",
                self.now_ms,
                None,
                "executor_restart",
            )
            self.cancelled += 1
            return
        reason, reference = _sent_exit(pos, rec["leg"], self.intent_reason.get(cid), req)
        ex._track(req, rec["leg"], pos.signal_id, pos.position_id, reference, reason)
        # the paper book died with the old process: re-enter it silently (what is left of it)
        self._paper_submit(req, rec, self.now_ms, pos.on_execution)
        self.resumed += 1

    def _paper_submit(
        self, req: OrderRequest, rec: Mapping[str, Any], now_ms: int, on_part: Callable[[Execution], None]
    ) -> None:
        """Re-enter an unfinished order (tracked) in the new paper book; one that had filled in part only
        for the rest, its fills given to `on_part` one by one first (module docstring)."""
        parts = self.fills.of(req, rec)  # never published again: they were
        restore_mid(self.ex, req.client_order_id, rec, parts)
        for part in parts:
            on_part(part)
        filled = float(rec.get("filled_qty") or 0.0) if parts else 0.0
        resubmit = getattr(self.ex.broker, "resubmit", None)
        if resubmit is not None:  # re-entered as accepted once (a resting post-only limit is not re-checked)
            notional = replayed_sums(parts)[1]  # as the book summed it: its later average price is the same
            resubmit(req, filled, notional / filled if filled > 0 else 0.0, now_ms, notional=notional)
        else:  # a paper broker without it: at least never more than the order
            self.ex.broker.submit(replace(req, qty=req.qty - filled), now_ms)

    def _resume_order(
        self, req: OrderRequest, rec: Mapping[str, Any], pos: Position | None, resume: Callable[..., list]
    ) -> None:
        """Exchange modes after a restart: follow an order the previous run sent (`resume`: the broker's
        lookup by client id); never send it again."""
        ex, now_ms = self.ex, self.now_ms
        cid, leg = req.client_order_id, rec["leg"]
        sid, pid = rec.get("signal_id"), rec.get("position_id")
        reason = self.intent_reason.get(cid)
        entry: PendingEntry | None = None
        reference: float | None = None
        if leg == "entry":
            leg = _entry_leg(cid, sid)
            entry = self._restored_entry(req, leg, self.found.get(sid or ""), pid)
            reference = entry.signal.price if entry is not None else None
        elif pos is not None:
            reason, reference = _sent_exit(pos, leg, reason, req)
        ex._track(req, leg, sid, pid, reference, reason)
        restore_mid(ex, cid, rec, self.fills.of(req, rec))
        ex._route(resume(req, now_ms), now_ms)
        if leg.startswith("entry") and ex.broker.is_open(cid):  # resting for a signal that is old by now
            if entry is not None:
                ex._cancel_entry(entry, "executor_restart", now_ms)
            else:
                ex._route(ex.broker.cancel(cid, now_ms, "executor_restart"), now_ms)

    def _reenter_entry(self, req: OrderRequest, rec: Mapping[str, Any]) -> bool:
        """Paper, committed cut: put an unfinished entry back in the paper book silently (its intent
        and NEW state are already published); False when its signal cannot be read (then it is cancelled)."""
        cid, sid = req.client_order_id, rec.get("signal_id")
        leg = _entry_leg(cid, sid)
        entry = self._restored_entry(req, leg, self.found.get(sid or ""), rec.get("position_id"))
        if entry is None:
            return False
        req = replace(req, not_before_ms=entry.signal.eval_time if leg == "entry" else 0)
        entry.request = req
        self.ex._track(req, leg, sid, entry.position_id, entry.signal.price, None)
        self._paper_submit(req, rec, int(rec["event_time"]), entry.fills.append)
        return True

    def _restored_entry(
        self, req: OrderRequest, leg: EntryLeg, signal: Mapping[str, Any] | None, pid: str | None
    ) -> PendingEntry | None:
        """The pending entry of an unfinished entry order, if its signal can still be read."""
        built = self.signal_size(req.client_order_id, signal)
        if built is None:
            return None
        ex = self.ex
        sig, size = built
        entry = PendingEntry(sig, pid or position_id(sig.signal_id), size, req, leg, req.not_before_ms)
        ex.changes += 1
        ex.entries[entry.position_id] = entry
        ex.slot_entry[sig.slot] = entry.position_id
        return entry

    def signal_size(self, cid: str, signal: Mapping[str, Any] | None) -> tuple[Signal, Size] | None:
        """The signal of an unfinished entry and the size it was entered with; None when it cannot be read."""
        if signal is None:
            log.warning(
                "signal of an unfinished entry not found: a fill will be left to reconciliation", client_order_id=cid
            )
            return None
        try:
            sig = Signal.from_record(signal)
            size = position_size(r_usd_for_tier(self.ex.config, sig.tier, sig.risk_multiplier), sig.risk_distance)
        except (InvalidSignal, SizingError, KeyError, TypeError, ValueError) as exc:
            log.warning("unfinished entry cannot be rebuilt", client_order_id=cid, error=str(exc))
            return None
        return sig, size
