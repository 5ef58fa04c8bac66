"""Routed entries rebuilt after a restart (``entry.kind: routed``; ``execution.executor_restore`` calls it).

A routed entry lives in the executor's memory (``execution.routed_entries``): its plan, the taker
slices sent, what filled. Its orders' records hold all of it: every order's reason is the plan
(``RoutePlan.reason``: bucket, notional, role, slice k of n, the probe's and degradation's notes), the
strategy revision's routing table (``Router.table_for(config_hash)``: the table is part of the
revision's hash) gives the wait, interval, jitter and theta, each order's id says which order of the
entry it is (the maker: the signal's ``entry`` id, taker slice k: its ``entry_fallback`` id with
attempt k), its newest record what it filled, its PENDING_NEW record when it was sent. So an entry
whose position has not opened is rebuilt as it was:

- its maker order resting: the wait still counts from the limit's send time (``maker_timed_out``),
  then theta decides as without the restart;
- a slice in flight: followed, and the slices after it go out with the next attempt numbers (an id
  is never sent twice: the next slice is the one after the newest slice on record);
- between slices (slice k filled, k+1 waiting for its jittered interval; no order in flight): slice
  k+1 is due at the fill's time + its deterministic delay (the first clock tick when that is past);
  an entry cancelled between slices (a flip, the kill switch) opened its position then
  (``Executor._cancel_entry``), so it is not taken for one;
- done but not opened (a crash between the last fill and the ``opened`` event): opened now. A maker
  that ended with no slice after it is done: its taker phase was refused (slippage cap, guard: a
  decision on record) or not needed.

Its position opens, once the entry is done, with the fills of all its orders (those before the
restart from their fills records, one by one in their order: ``OrderFills``, as
``StateRestore._paper_submit`` puts back a part fill), so the entry's filled quantity, the next
slice's quantity and the position are bit-identical to an uninterrupted run's.

Per mode, as for other unfinished orders (``execution.executor_restore``): paper with a committed cut
re-enters the order in flight in the new paper book; exchange modes follow it (``broker.resume``); paper
without a committed cut does not continue an entry: its order in flight is cancelled (``executor_restart``)
and the position opens with what the entry filled (nothing: no position). A restored entry sends a new
order (the next slice, the taker phase) only while its signal is young enough to be accepted
(``risk.max_signal_age_s``); an older one keeps what filled, and in exchange modes its resting maker is
cancelled (``executor_restart``). Entries with no order in flight whose newest record is older than the
executor's signal memory (2 x ``max_signal_age_s``) are history and left alone (reconciliation's job in
exchange modes). Without its signal (lookup failed) an entry is left to the generic handling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from execution.broker import TERMINAL_STATES, Execution, OrderRequest, OrderUpdate
from execution.client_ids import client_order_id
from execution.config import Fees
from execution.domain import quote_asset
from execution.entries import EntryLeg, PendingEntry
from execution.paper_broker import DUST
from execution.routing import RouteReason, parse_route, rebuild_plan

if TYPE_CHECKING:
    from execution.executor import Executor
    from execution.executor_restore import StateRestore

MAKER = -1  # the index of an entry's maker order; taker slice k is k (from 0)


def request_of(cid: str, rec: Mapping[str, Any]) -> OrderRequest:
    """The order request an orders record describes, not before its event time."""
    return OrderRequest(
        cid,
        rec["exchange"],
        rec["symbol"],
        rec["side"],
        rec["type"],
        float(rec["qty"]),
        price=rec.get("price"),
        reduce_only=bool(rec.get("reduce_only")),
        not_before_ms=int(rec["event_time"]),
    )


def restore_mid(ex: Any, cid: str, rec: Mapping[str, Any], parts: list[Execution]) -> None:
    """The mid the order was sent against and the market quantity and notional of what it filled (its
    fills ``parts``, ``OrderFills.of``): the order's later records (its fills, its end) repeat them, so a
    restarted executor writes them as an uninterrupted one would."""
    info = ex.orders[cid]
    if rec.get("mid_at_send") is not None and rec.get("mid_source"):
        info.mid_at_send = (float(rec["mid_at_send"]), str(rec["mid_source"]))
    if parts:
        info.market_qty, _, info.market_notional = replayed_sums(parts)


def restored_fill(req: OrderRequest, rec: Mapping[str, Any], fees: Fees) -> Execution | None:
    """What an order had filled by its record (filled quantity, average price) as one execution at that
    price, with the fee its liquidity pays there; None when it filled nothing. Never published (the
    part's own fills were); its market price is the record's average market price (the fill price in
    records written before orders carried it)."""
    filled, avg = float(rec.get("filled_qty") or 0.0), rec.get("avg_fill_price")
    if not filled > 0 or avg is None:
        return None
    price = float(avg)
    market = rec.get("avg_market_price")
    maker = req.type == "LIMIT"
    return Execution(
        req.client_order_id,
        rec.get("exchange_order_id") or "",
        f"restored:{req.client_order_id}",
        req.side,
        price,
        filled,
        (fees.maker if maker else fees.taker) * price * filled,
        quote_asset(req.symbol),
        "maker" if maker else "taker",
        price if market is None else float(market),
        int(rec["event_time"]),
    )


def execution_of(rec: Mapping[str, Any], avg_market: float | None) -> Execution:
    """One fills record as the execution it recorded. Its market price: the record's (``market_price``);
    in records written before fills carried it, the fill price for a maker fill (what it always is) and
    the order's average market price for a taker fill (``avg_fill_market``, else the fill price)."""
    price, market = float(rec["price"]), rec.get("market_price")
    if market is None:
        market = price if rec["liquidity"] == "maker" or avg_market is None else avg_market
    return Execution(
        rec["client_order_id"],
        rec["exchange_order_id"],
        rec["trade_id"],
        rec["side"],
        price,
        float(rec["qty"]),
        float(rec["fee"]),
        rec["fee_asset"],
        rec["liquidity"],
        float(market),
        int(rec["event_time"]),
    )


class OrderFills:
    """The fills of the orders a restore puts back, one by one in the order they were published (the fills
    topic; a repeated trade id once), so that what they are replayed into (an entry's fills, a position,
    the paper book's cumulative notional, the order's market notional) sums them as the uninterrupted run
    did, bit for bit. One execution per order at its record's average price (``restored_fill``) would
    sum the same quantities in another order (2.666666666666666 against ...667 for a slice's rest).

    An order's fills are used only when they add up to what its newest orders record says it filled (the
    record is the order's state: fills without their order's update, or missing from a partial read, are
    not trusted); else, and for orders without fills on record, the record's one execution."""

    def __init__(self, records: Iterable[Mapping[str, Any]], mode: str, wanted: set[str], fees: Fees) -> None:
        self.fees = fees
        self.by_order: dict[str, list[Mapping[str, Any]]] = {}
        seen: set[tuple[str, str]] = set()
        for rec in records:
            cid = rec["client_order_id"]
            if rec["mode"] != mode or cid not in wanted or (cid, rec["trade_id"]) in seen:
                continue
            seen.add((cid, rec["trade_id"]))
            self.by_order.setdefault(cid, []).append(rec)

    def of(self, req: OrderRequest, rec: Mapping[str, Any]) -> list[Execution]:
        """What the order ``req`` (its newest record ``rec``) had filled, as executions in their order."""
        filled = float(rec.get("filled_qty") or 0.0)
        if not filled > 0:
            return []
        found = self.by_order.get(req.client_order_id, [])
        total = sum(float(f["qty"]) for f in found)
        # FILLED reports the order's quantity: the fills' sum may be short of it by the paper book's dust
        if found and abs(total - filled) <= 2 * DUST * max(filled, req.qty):
            market = rec.get("avg_market_price")
            return [execution_of(f, None if market is None else float(market)) for f in found]
        part = restored_fill(req, rec, self.fees)
        return [] if part is None else [part]


def replayed_sums(fills: list[Execution]) -> tuple[float, float, float]:
    """Quantity, notional and market notional of ``fills`` summed one by one from zero, as the paper book
    (``PaperBroker``: an order's filled and notional) and the executor (``_OrderInfo``: its market
    quantity and notional) add them up."""
    qty = notional = market = 0.0
    for f in fills:
        qty += f.qty
        notional += f.qty * f.price
        market += f.qty * f.market_price
    return qty, notional, market


@dataclass(slots=True)
class RoutedRecords:
    """The orders of one routed entry, by index (``MAKER``, then slice k): newest record, send time, reason."""

    signal_id: str
    position_id: str
    orders: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    sent_ms: dict[int, int] = field(default_factory=dict)
    reasons: dict[int, RouteReason] = field(default_factory=dict)

    @property
    def last(self) -> int:
        """The entry's newest order (one order of an entry is in flight at a time, in index order)."""
        return max(self.orders)

    @property
    def unfinished(self) -> bool:
        return self.orders[self.last]["state"] not in TERMINAL_STATES

    @property
    def newest_ms(self) -> int:
        return max(int(rec["event_time"]) for rec in self.orders.values())


def _order_index(cid: str, signal_id: str, found: RouteReason) -> int | None:
    """Which order of its entry ``cid`` is, checked against the id it must have; None: not a routed entry's."""
    if found.role == "maker":
        return MAKER if cid == client_order_id(signal_id, "entry") else None
    k = (found.slice_no or 0) - 1
    return k if 0 <= k < 1000 and cid == client_order_id(signal_id, "entry_fallback", k) else None


def collect_routed(
    last_order: Mapping[str, Mapping[str, Any]],
    reasons: Mapping[str, str | None],
    sent_ms: Mapping[str, int],
    positioned: set[str],
    horizon_ms: int,
) -> dict[str, RoutedRecords]:
    """Routed entries whose position has not opened, by signal id: those with an order in flight and
    those whose newest record is at or after ``horizon_ms`` (module docstring)."""
    out: dict[str, RoutedRecords] = {}
    for cid, rec in last_order.items():
        sid, pid = rec.get("signal_id"), rec.get("position_id")
        if rec["leg"] != "entry" or not sid or not pid or pid in positioned:
            continue
        found = parse_route(reasons.get(cid))
        index = None if found is None else _order_index(cid, sid, found)
        if found is None or index is None:
            continue
        entry = out.setdefault(sid, RoutedRecords(sid, pid))
        entry.orders[index], entry.reasons[index] = rec, found
        entry.sent_ms[index] = sent_ms.get(cid, int(rec["event_time"]))
    return {sid: e for sid, e in out.items() if e.unfinished or e.newest_ms >= horizon_ms}


class RoutedRestore:
    """The routed entries of one restore (module docstring); ``run`` returns the ids of the orders in
    flight it took care of (the generic restore handles the others)."""

    def __init__(self, st: StateRestore, last_order: Mapping[str, Mapping[str, Any]]) -> None:
        self.st = st
        self.ex: Executor = st.ex
        max_age_ms = int(self.ex.config.risk.max_signal_age_s * 1000)
        self.max_age_ms = max_age_ms
        self.entries = collect_routed(
            last_order, st.intent_reason, st.sent_ms, st.positioned, st.now_ms - 2 * max_age_ms
        )

    @property
    def signal_ids(self) -> set[str]:
        return set(self.entries)

    def run(self) -> set[str]:
        handled = set()
        for records in self.entries.values():
            entry = self._rebuild(records)
            if entry is None:
                continue
            if records.unfinished:
                handled.add(entry.request.client_order_id)
                self._in_flight(entry, records)
            else:
                self._between(entry, records)
        return handled

    def _rebuild(self, records: RoutedRecords) -> PendingEntry | None:
        """The entry as it was after its newest order was sent (not registered), with the fills of its
        other orders; None without its signal."""
        st = self.st
        built = st.signal_size(client_order_id(records.signal_id, "entry"), st.found.get(records.signal_id))
        if built is None:
            return None
        sig, size = built
        last = records.last
        rec = records.orders[last]
        plan = rebuild_plan(
            self.ex.entry_flow.router.table_for(sig.config_hash), records.reasons[last], MAKER in records.orders
        )
        fills = []  # those of the order in flight come back with it (re-entered, followed, cancelled)
        for index, order in sorted(records.orders.items()):
            if index != last or not records.unfinished:
                fills += st.fills.of(request_of(order["client_order_id"], order), order)
        req = request_of(rec["client_order_id"], rec)
        if last == MAKER:
            req = replace(req, post_only=True)  # the maker order was sent post-only at the touch
        leg: EntryLeg = "entry" if last == MAKER else "entry_fallback"
        return PendingEntry(
            sig, records.position_id, size, req, leg, records.sent_ms[last], fills, plan=plan, slices_sent=last + 1
        )

    def _register(self, entry: PendingEntry) -> None:
        ex = self.ex
        ex.changes += 1
        ex.entries[entry.position_id] = entry
        ex.slot_entry[entry.signal.slot] = entry.position_id

    def _young(self, entry: PendingEntry) -> bool:
        return self.st.now_ms - entry.signal.eval_time <= self.max_age_ms

    def _in_flight(self, entry: PendingEntry, records: RoutedRecords) -> None:
        """The entry's newest order had not ended: re-entered (paper, committed cut), followed
        (exchange modes) or cancelled with the position opened from what filled (paper otherwise)."""
        st, ex, now = self.st, self.ex, self.st.now_ms
        rec = records.orders[records.last]
        req, sid, pid = entry.request, entry.signal.signal_id, entry.position_id
        if st.resume is None and not st.reenter:
            filled, avg = float(rec.get("filled_qty") or 0.0), rec.get("avg_fill_price")
            end = OrderUpdate(req.client_order_id, "CANCELED", filled, avg, rec.get("exchange_order_id"), now)
            ex._emit_order(req, entry.leg, sid, pid, "CANCELED", now, end, "executor_restart")
            entry.fills += st.fills.of(req, rec)
            if entry.fills:
                ex.entry_flow._open(entry)
            st.cancelled += 1
            return
        self._register(entry)
        st.resumed += 1
        if st.resume is None:  # paper, committed cut: back in the new paper book (the rest of it)
            entry.request = req = replace(req, not_before_ms=entry.signal.eval_time if entry.leg == "entry" else 0)
            ex._track(req, entry.leg, sid, pid, entry.signal.price, None)
            st._paper_submit(req, rec, int(rec["event_time"]), entry.fills.append)
            return
        ex._track(req, entry.leg, sid, pid, entry.signal.price, st.intent_reason.get(req.client_order_id))
        restore_mid(ex, req.client_order_id, rec, st.fills.of(req, rec))
        ex._route(st.resume(req, now), now)  # its state and every fill the exchange knows
        if ex.entries.get(pid) is entry and entry.maker and ex.broker.is_open(req.client_order_id):
            if not self._young(entry):  # resting for a signal too old to be taken now
                ex._route(ex.broker.cancel(req.client_order_id, now, "executor_restart"), now)

    def _between(self, entry: PendingEntry, records: RoutedRecords) -> None:
        """No order in flight: the next step if one was due and the entry may continue (paper with a
        committed cut, exchange modes; its signal young enough), else the position opens with what filled."""
        st, ex = self.st, self.ex
        rec, plan = records.orders[records.last], entry.plan
        if plan is None:  # never: _rebuild always sets it
            return
        qty, filled = entry.size.qty, entry.filled_qty
        go_on = (st.resume is not None or st.reenter) and self._young(entry)
        # a maker that ended with no slice after it is done: its taker phase was refused (slippage cap,
        # guard) or not needed (theta); resuming it would undo a decision on record
        sliced = records.last != MAKER and rec["state"] == "FILLED" and entry.slices_sent < plan.slices
        if sliced and qty - filled > 1e-9 * qty and go_on:
            self._register(entry)
            entry.due_ms = int(rec["event_time"]) + plan.delay_ms(entry.signal, entry.slices_sent)
            return
        if entry.fills:
            ex.entry_flow._open(entry)
