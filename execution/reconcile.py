"""Reconciliation: the exchange's positions and open orders against the executor's state.

Why: the executor's state is what it published; the exchange's is what happened. They part when a
process dies between sending and recording, when someone trades by hand, or when a stream event is
lost. On start and every 5 minutes (`Reconciler.due`) the two are compared and every difference is
reported (`ReconcileReport.findings`, for risk.events and the log) and handled by policy:
- `adopt`: leave it on the exchange and remember it (reported once as adopted, then known); an
  adopted orphan order is followed by the broker so its fills are reported. An adopted position is
  remembered with its amount, so our own trades on the same symbol are compared on top of it (the
  exchange nets both into one position). If someone changes or closes it, that is reported once and
  the new amount is adopted (or the adoption ends);
- `flatten`: cancel orphan orders and close orphan positions with a reduce-only MARKET order whose
  client id is derived from (symbol, amount, run time), so a retried run cannot double the close.
Positions we hold that the exchange does not have (`missing_position`) and size differences are only
reported: closing or re-opening them is a trading decision, not a repair. Symbols with one of our
orders in flight (`in_flight`) are not compared this run: a fill the exchange already counts but our
stream has not delivered yet would look like an orphan, and flattening it would close our own trade.
After a failed run (exchange state unavailable, or a repair refused) the next one is due after
`retry_ms`, not a full interval: the executor blocks entries until a run succeeds.

`compare` is pure (amounts in, findings out); `Reconciler.run` does the I/O through the broker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from execution.binance_signing import BinanceApiError
from execution.broker import BrokerEvent, OrderRequest

log = structlog.get_logger("reconcile")

Policy = Literal["adopt", "flatten"]
FindingKind = Literal["orphan_position", "orphan_order", "missing_position", "size_mismatch"]
RECONCILE_INTERVAL_MS = 5 * 60_000
FAILED_OUTCOMES = frozenset({"flatten_rejected", "cancel_failed"})  # a repair that did not happen
QTY_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    symbol: str
    detail: str
    exchange_amount: float = 0.0  # signed position amount on the exchange (positions)
    our_amount: float = 0.0
    client_order_id: str | None = None  # orders
    action: str = "reported"

    @property
    def outcome(self) -> str:
        """The action as a short code without amounts or ids (`adopted`, `flatten_sent`, `cancel_failed`...),
        fit for a risk event's reason and a metrics label."""
        return "_".join(self.action.split(":", 1)[0].split()[:2])

    def with_action(self, action: str) -> Finding:
        return Finding(
            self.kind, self.symbol, self.detail, self.exchange_amount, self.our_amount, self.client_order_id, action
        )


@dataclass(slots=True)
class ReconcileReport:
    run_ms: int
    policy: Policy
    findings: list[Finding] = field(default_factory=list)
    events: list[BrokerEvent] = field(default_factory=list)  # broker events of the repair orders
    error: str | None = None

    @property
    def clean(self) -> bool:
        return not self.findings and self.error is None

    @property
    def ok(self) -> bool:
        """The exchange answered and every repair the policy asked for was sent (findings may remain)."""
        return self.error is None and not any(f.outcome in FAILED_OUTCOMES for f in self.findings)


def compare(
    exchange_positions: Mapping[str, float],
    exchange_orders: Iterable[Mapping[str, Any]],
    our_positions: Mapping[str, float],
    our_orders: Iterable[str],
    known: Iterable[str] = (),
    in_flight: Iterable[str] = (),
    adopted: Mapping[str, float] | None = None,
) -> list[Finding]:
    """Differences between the exchange and us. Amounts are signed (long > 0); `known` = adopted orders
    (`order:<client id>`) that are not reported again; `adopted` = adopted position amounts by symbol,
    expected on the exchange on top of ours; positions of `in_flight` symbols are not compared."""
    known = set(known)
    adopted = adopted or {}
    ours = set(our_orders)
    skip = set(in_flight)
    findings: list[Finding] = []
    for symbol in sorted((set(exchange_positions) | set(our_positions) | set(adopted)) - skip):
        theirs, mine = exchange_positions.get(symbol, 0.0), our_positions.get(symbol, 0.0)
        if abs(theirs - mine - adopted.get(symbol, 0.0)) <= QTY_EPS:
            continue
        if symbol in adopted:
            findings.append(
                Finding(
                    "size_mismatch",
                    symbol,
                    f"exchange {theirs} vs ours {mine} + adopted {adopted[symbol]}: the adopted position changed",
                    theirs,
                    mine,
                )
            )
        elif abs(mine) <= QTY_EPS:
            findings.append(
                Finding("orphan_position", symbol, f"exchange holds {theirs}, we hold nothing", theirs, mine)
            )
        elif abs(theirs) <= QTY_EPS:
            findings.append(
                Finding("missing_position", symbol, f"we hold {mine}, the exchange holds nothing", theirs, mine)
            )
        else:
            findings.append(Finding("size_mismatch", symbol, f"exchange {theirs} vs ours {mine}", theirs, mine))
    for order in exchange_orders:
        cid = order["clientOrderId"]
        if cid not in ours and f"order:{cid}" not in known:
            findings.append(
                Finding(
                    "orphan_order",
                    order["symbol"],
                    f"{order['side']} {order['type']} {order['origQty']} @ {order['price']} not ours",
                    client_order_id=cid,
                )
            )
    return findings


def flatten_client_id(symbol: str, amount: float, run_ms: int) -> str:
    digest = hashlib.blake2b(f"{symbol}:{amount}:{run_ms}".encode(), digest_size=9).hexdigest()
    return f"tfrc{digest}"


class Reconciler:
    """Runs `compare` against a `BinanceBroker` and applies the orphan policy."""

    def __init__(
        self,
        broker: Any,
        policy: Policy = "flatten",
        interval_ms: int = RECONCILE_INTERVAL_MS,
        exchange: str = "binance",
        retry_ms: int | None = None,
    ) -> None:
        if policy not in ("adopt", "flatten"):
            raise ValueError(f"policy must be adopt or flatten, got {policy!r}")
        self.broker = broker
        self.policy = policy
        self.interval_ms = interval_ms
        self.retry_ms = interval_ms if retry_ms is None else retry_ms
        self.exchange = exchange
        self.known: set[str] = set()  # adopted orders: `order:<client id>`
        self.adopted: dict[str, float] = {}  # adopted position amount by symbol (signed)
        self.last_run_ms: int | None = None
        self.last_failed = False

    def due(self, now_ms: int) -> bool:
        wait = self.retry_ms if self.last_failed else self.interval_ms
        return self.last_run_ms is None or now_ms - self.last_run_ms >= wait

    def run(
        self,
        our_positions: Mapping[str, float],
        our_orders: Iterable[str],
        now_ms: int,
        *,
        in_flight: Iterable[str] = (),
        submit: Callable[[OrderRequest, int], list[BrokerEvent]] | None = None,
    ) -> ReconcileReport:
        """Compare and repair. `submit` sends a flatten order (default `broker.submit`; the executor passes
        one that records the intent on the orders topic first)."""
        self.last_run_ms = now_ms
        report = ReconcileReport(now_ms, self.policy)
        try:
            positions = self.broker.positions()
            orders = self.broker.open_orders()
        except BinanceApiError as exc:
            report.error = f"exchange state unavailable: {exc}"
            self.last_failed = True
            log.error("reconciliation failed", error=report.error)
            return report
        self.last_failed = False
        submit = submit or self.broker.submit
        for finding in compare(positions, orders, our_positions, our_orders, self.known, in_flight, self.adopted):
            report.findings.append(self._apply(finding, orders, report, now_ms, submit))
        self.last_failed = not report.ok
        for f in report.findings:
            log.warning("reconciliation finding", kind=f.kind, symbol=f.symbol, detail=f.detail, action=f.action)
        return report

    def _apply(
        self,
        finding: Finding,
        orders: list[Mapping[str, Any]],
        report: ReconcileReport,
        now_ms: int,
        submit: Callable[[OrderRequest, int], list[BrokerEvent]],
    ) -> Finding:
        if finding.kind == "orphan_order":
            order = next(o for o in orders if o["clientOrderId"] == finding.client_order_id)
            if self.policy == "adopt":
                self.known.add(f"order:{finding.client_order_id}")
                self.broker.track(
                    OrderRequest(
                        order["clientOrderId"],
                        self.exchange,
                        order["symbol"],
                        order["side"],
                        "LIMIT" if order["type"] == "LIMIT" else "MARKET",
                        float(order["origQty"]),
                        float(order["price"]) or None,
                        reduce_only=bool(order.get("reduceOnly")),
                    ),
                    str(order["orderId"]),
                )
                return finding.with_action("adopted")
            try:
                self.broker.rest.signed(
                    "DELETE", "/fapi/v1/order", {"symbol": order["symbol"], "origClientOrderId": order["clientOrderId"]}
                )
            except BinanceApiError as exc:
                return finding.with_action(f"cancel failed: {exc}")
            return finding.with_action("cancelled")
        if finding.kind == "size_mismatch" and finding.symbol in self.adopted:
            # changed or closed by whoever owns it: follow the exchange from now on
            rest = finding.exchange_amount - finding.our_amount
            if abs(rest) <= QTY_EPS:
                del self.adopted[finding.symbol]
                return finding.with_action("adoption ended")
            self.adopted[finding.symbol] = rest
            return finding.with_action("adopted")  # the new amount: exchange minus ours, in the detail
        if finding.kind == "orphan_position":
            if self.policy == "adopt":
                self.adopted[finding.symbol] = finding.exchange_amount
                return finding.with_action("adopted")
            amount = finding.exchange_amount
            cid = flatten_client_id(finding.symbol, amount, now_ms)
            request = OrderRequest(
                cid,
                self.exchange,
                finding.symbol,
                "SELL" if amount > 0 else "BUY",
                "MARKET",
                abs(amount),
                reduce_only=True,
            )
            events = submit(request, now_ms)
            report.events.extend(events)
            rejected = [e for e in events if getattr(e, "state", None) == "REJECTED"]
            return finding.with_action(f"flatten rejected: {rejected[0].reason}" if rejected else f"flatten sent {cid}")
        return finding
