"""Routed entries (``entry.kind: routed``): the executor's side of ``execution.routing``.

The router decides (bucket, probe, maker wait, theta, slices, jitter); this drives one pending entry
through it with the executor's orders: hold while the probe says wait, then the post-only limit at the
touch for the bucket's maker wait, then (below theta) the taker slices, one market order at a time,
each sent once the previous one filled and the jittered interval passed. Every order carries the
plan in its reason (``route <bucket> n=<notional> maker|taker k/n [probe and degradation notes]``),
which the routing TCA (``review.routing_tca``) reads back to put each order in its bucket.

Ids: the limit is the signal's ``entry`` order, slice k (0-based) its ``entry_fallback`` order with
attempt k, so every order of an entry is derived from the signal id and never sent twice. The entry's
state lives in the executor's memory; after a restart it is rebuilt from its orders' records, the plan
from their reasons and the strategy revision's routing table (``execution.routed_restore``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import structlog

from execution.broker import TERMINAL_STATES, OrderRequest, OrderUpdate
from execution.client_ids import client_order_id, position_id
from execution.domain import BookTop, Signal, entry_side
from execution.entries import PendingEntry, fallback_slippage_bps
from execution.risk_guard import RiskDecision, slot_scope
from execution.routing import RoutePlan, Router
from execution.sizing import Size

if TYPE_CHECKING:
    from execution.executor_entries import EntryFlow

log = structlog.get_logger("executor")


class RoutedEntries:
    """Routed entries of one executor (module docstring); acts on the executor through its entry flow."""

    def __init__(self, flow: EntryFlow) -> None:
        self.flow = flow
        self.ex = flow.ex
        self.router = Router(flow.ex.config.routing)
        self.enabled = flow.ex.config.entry.kind == "routed"

    def on_book(self, book: BookTop) -> None:
        if self.enabled:
            self.router.on_book(book)

    def start(self, sig: Signal, size: Size, now_ms: int) -> None:
        """Register the entry (no order yet) and take its first step."""
        ex = self.ex
        held = OrderRequest(
            client_order_id(sig.signal_id, "entry"),
            sig.exchange,
            sig.symbol,
            entry_side(sig.direction),
            "MARKET",
            size.qty,
            not_before_ms=sig.eval_time,
        )
        entry = PendingEntry(sig, position_id(sig.signal_id), size, held, "entry", now_ms, due_ms=now_ms)
        ex.entries[entry.position_id] = entry
        ex.slot_entry[sig.slot] = entry.position_id
        self._probe(entry, now_ms)

    def on_clock(self, entry: PendingEntry, now_ms: int) -> None:
        """A step that is due: a held entry probes again, a taker slice goes out."""
        if entry.due_ms is None or now_ms < entry.due_ms:
            return
        if entry.plan is None:
            self._probe(entry, now_ms)
        else:
            self._send_slice(entry, entry.plan, now_ms)

    def _probe(self, entry: PendingEntry, now_ms: int) -> None:
        ex, sig = self.ex, entry.signal
        got = self.router.plan(
            sig.config_hash,
            entry.request.side,
            entry.size.qty * sig.price,
            ex.market.books.get(sig.key),
            now_ms,
            entry.waits,
        )
        if not isinstance(got, RoutePlan):  # the probe holds the entry
            entry.waits += 1
            entry.due_ms = now_ms + self.router.table_for(sig.config_hash).probe.wait_ms
            log.info("entry held by the liquidity probe", signal_id=sig.signal_id, reason=got.reason)
            return
        if entry.waits:
            got = _with_note(got, f"held={entry.waits}")
        entry.plan, entry.due_ms = got, None
        book = ex.market.books.get(sig.key)
        if got.maker_wait_ms <= 0 or book is None:
            self._send_slice(entry, got, now_ms)
            return
        price = book.best_bid if entry.request.side == "BUY" else book.best_ask
        request = OrderRequest(
            entry.request.client_order_id,
            sig.exchange,
            sig.symbol,
            entry.request.side,
            "LIMIT",
            entry.size.qty,
            price=price,
            post_only=True,
            not_before_ms=sig.eval_time,
        )
        entry.request, entry.submitted_ms = request, now_ms
        ex._send(request, "entry", sig.signal_id, entry.position_id, sig.price, got.reason("maker"), now_ms)

    def _send_slice(self, entry: PendingEntry, plan: RoutePlan, now_ms: int) -> None:
        """The next taker slice: an equal share of what is left over the slices left (the last: all of it)."""
        ex, sig = self.ex, entry.signal
        k = entry.slices_sent
        left = entry.size.qty - entry.filled_qty
        qty = left if k >= plan.slices - 1 else left / (plan.slices - k)
        first_order = k == 0 and entry.request.type == "MARKET"  # no maker phase before it
        not_before = sig.eval_time if first_order else ex.market.trade_time.get(sig.key, sig.eval_time)
        request = OrderRequest(
            client_order_id(sig.signal_id, "entry_fallback", k),
            sig.exchange,
            sig.symbol,
            entry.request.side,
            "MARKET",
            qty,
            not_before_ms=not_before,
        )
        entry.request, entry.leg, entry.submitted_ms, entry.due_ms = request, "entry_fallback", now_ms, None
        entry.slices_sent = k + 1
        reason = plan.reason("taker", k + 1)
        ex._send(request, "entry_fallback", sig.signal_id, entry.position_id, sig.price, reason, now_ms)

    def on_update(self, entry: PendingEntry, ev: OrderUpdate, now_ms: int) -> None:
        """An update of the entry's current order (``EntryFlow.on_update`` checked that it is)."""
        plan = entry.plan
        if ev.state not in TERMINAL_STATES or plan is None:
            return
        if entry.request.type == "LIMIT":  # the maker phase ended
            if (
                ev.reason == "maker_timeout"
                and ev.state != "FILLED"
                and plan.go_taker(entry.filled_qty, entry.size.qty)
            ):
                self.to_taker(entry, plan, now_ms)
            else:
                self.finish(entry)
            return
        left = entry.size.qty - entry.filled_qty
        if ev.state == "FILLED" and entry.slices_sent < plan.slices and left > 1e-9 * entry.size.qty:
            entry.due_ms = now_ms + plan.delay_ms(entry.signal, entry.slices_sent)
            return
        self.finish(entry)

    def to_taker(self, entry: PendingEntry, plan: RoutePlan, now_ms: int) -> None:
        """Below theta after the wait: the slices, if the price has not run past the slippage cap and the
        guard still allows the entry (as ``maker_first``'s fallback); else keep what filled."""
        ex, sig = self.ex, entry.signal
        scope = slot_scope(sig.strategy, sig.exchange, sig.symbol)
        market = ex.market.price(sig.key)
        if market is None or fallback_slippage_bps(sig, market) > ex.config.entry.fallback_slippage_cap_bps:
            self.finish(entry)
            ex._decide(RiskDecision("block", scope, "slippage_cap", now_ms))
            return
        decision = self.flow._check_guard(sig, scope, now_ms, leaving=1)
        if not decision.allowed:
            self.finish(entry)
            ex._decide(decision)
            return
        self._send_slice(entry, plan, now_ms)

    def finish(self, entry: PendingEntry) -> None:
        """The entry is done: its position opens with what filled (nothing filled: no position)."""
        self.ex._drop_entry(entry)
        if entry.fills:
            self.flow._open(entry)


def _with_note(plan: RoutePlan, note: str) -> RoutePlan:
    return replace(plan, note=f"{plan.note} {note}".strip())
