"""An executor's side of reconciliation with the exchange (`Executor.reconcile`): what it holds per
symbol, the repair orders sent like its own, and every finding published to risk.events (scope
`reconcile:<exchange>:<symbol>`, reason `<finding>:<outcome>`). A failed run blocks new entries (the
executor's `reconcile_ok`) until one succeeds; the comparison and its policy are `execution.reconcile`'s.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from execution.broker import OrderRequest
from execution.domain import direction_sign
from execution.reconcile import Reconciler, ReconcileReport
from execution.risk_guard import RiskDecision

if TYPE_CHECKING:
    from execution.executor import Executor

RECONCILE_FLATTEN = "reconcile_flatten"
# risk.events decision per reconciliation outcome (reason: `<finding kind>:<outcome>`)
_OUTCOME_DECISION = {
    "adopted": "allow",
    "adoption_ended": "allow",
    "reported": "allow",
    "flatten_sent": "flatten",
    "cancelled": "flatten",
    "flatten_rejected": "block",
    "cancel_failed": "block",
}


def held_quantities(ex: Executor, exchange: str) -> dict[str, float]:
    """Our signed quantity per symbol of `exchange`: open positions plus what pending entries already
    filled (the exchange nets them: one-way mode)."""
    ours: dict[str, float] = defaultdict(float)
    for pos in ex.positions.values():
        if pos.exchange == exchange:
            ours[pos.symbol] += direction_sign(pos.direction) * pos.qty_open
    for entry in ex.entries.values():
        sig = entry.signal
        if sig.exchange == exchange and entry.fills:
            ours[sig.symbol] += direction_sign(sig.direction) * sum(f.qty for f in entry.fills)
    return dict(ours)


def reconcile(ex: Executor, reconciler: Reconciler, now_ms: int) -> ReconcileReport:
    """Run `reconciler` against `ex`'s state and publish what it found (`Executor.reconcile`)."""
    ex._route(ex.broker.poll(now_ms), now_ms)
    exchange = reconciler.exchange
    in_flight = {info.request.symbol for info in ex.orders.values() if info.request.exchange == exchange}

    def repair(req: OrderRequest, at_ms: int) -> list:
        """A reconciliation order, sent like ours: intent on the orders topic first, then its events."""
        return ex._send(req, "exit", None, None, None, RECONCILE_FLATTEN, at_ms)

    report = reconciler.run(held_quantities(ex, exchange), set(ex.orders), now_ms, in_flight=in_flight, submit=repair)
    if report.error is not None:
        mark = getattr(ex.broker, "mark_unreachable", None)
        if mark is not None:
            mark()
        if ex.reconcile_ok:  # published when it starts failing; retries only log (execution.reconcile)
            ex._decide(RiskDecision("block", f"reconcile:{exchange}", "reconcile_failed", now_ms))
    for f in report.findings:
        scope = f"reconcile:{exchange}:{f.symbol}" + (f":{f.client_order_id}" if f.client_order_id else "")
        ex._decide(RiskDecision(_OUTCOME_DECISION.get(f.outcome, "block"), scope, f"{f.kind}:{f.outcome}", now_ms))
    if report.ok and not ex.reconcile_ok:
        ex._decide(RiskDecision("resume", f"reconcile:{exchange}", "reconcile_ok", now_ms))
    ex.reconcile_ok = report.ok
    return report
