"""Entry orders of one signal: taker, or maker-first with a taker fallback (the V5.4 execution FSM).

    taker:        [MARKET] --filled--> position opened
    maker_first:  [post-only LIMIT at the touch] --filled--> position opened
                     |--timeout--> cancel --mid within the slippage cap of the signal price--> [MARKET]
                                          \\--beyond the cap--> no trade (reason slippage_cap)
    routed:       [probe: held while the spread is wide] -> [post-only LIMIT, the bucket's maker wait]
                     --filled share >= theta--> position opened (with what filled)
                     \\--below theta--> [MARKET slice 1] --filled, interval +/- jitter--> ... [slice n] -> opened
                  (``execution.routing`` decides; ``execution.routed_entries`` drives it)

Why separate from the position manager: until the entry fills there is no position, no R anchor and
nothing to exit; keeping the two state machines apart keeps each one small. The executor owns one
`PendingEntry` per signal being entered and turns its decisions into broker orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from execution.broker import Execution, OrderRequest
from execution.config import EntryPolicy
from execution.domain import BookTop, Signal, entry_side
from execution.routing import RoutePlan
from execution.sizing import Size

EntryLeg = Literal["entry", "entry_fallback"]


@dataclass(slots=True)
class PendingEntry:
    signal: Signal
    position_id: str
    size: Size
    request: OrderRequest
    leg: EntryLeg
    submitted_ms: int  # executor clock when the current order was sent
    fills: list[Execution] = field(default_factory=list)
    # routed entries only: the plan (None while the probe holds the entry, and for the other kinds),
    # when the next step is due (a held entry's next probe, the next taker slice; None: none due), the
    # taker slices sent so far and the probe's holds so far
    plan: RoutePlan | None = None
    due_ms: int | None = None
    slices_sent: int = 0
    waits: int = 0

    @property
    def maker(self) -> bool:
        """The current order is the resting limit (not a held entry's order not sent yet)."""
        return self.request.type == "LIMIT" and self.due_ms is None

    @property
    def filled_qty(self) -> float:
        return sum(f.qty for f in self.fills)

    def maker_timed_out(self, policy: EntryPolicy, now_ms: int) -> bool:
        wait = self.plan.maker_wait_ms if self.plan is not None else policy.maker_timeout_ms
        return self.maker and now_ms - self.submitted_ms >= wait


def first_entry_order(
    signal: Signal, client_order_id: str, qty: float, policy: EntryPolicy, book: BookTop | None
) -> OrderRequest:
    """The first entry order: a post-only limit at our side of the touch when maker-first and a book is
    known, else a market order. Either fills only on trades at or after the signal's evaluation."""
    side = entry_side(signal.direction)
    if policy.kind == "maker_first" and book is not None:
        price = book.best_bid if side == "BUY" else book.best_ask
        if price is not None:
            return OrderRequest(
                client_order_id,
                signal.exchange,
                signal.symbol,
                side,
                "LIMIT",
                qty,
                price=price,
                post_only=True,
                not_before_ms=signal.eval_time,
            )
    return OrderRequest(
        client_order_id, signal.exchange, signal.symbol, side, "MARKET", qty, not_before_ms=signal.eval_time
    )


def fallback_slippage_bps(signal: Signal, market_price: float) -> float:
    """How far the market moved from the signal price, in basis points (unsigned)."""
    return abs(market_price - signal.price) / signal.price * 10_000


def fallback_order(entry: PendingEntry, client_order_id: str, not_before_ms: int) -> OrderRequest:
    sig = entry.signal
    return OrderRequest(
        client_order_id,
        sig.exchange,
        sig.symbol,
        entry_side(sig.direction),
        "MARKET",
        entry.size.qty,
        not_before_ms=not_before_ms,
    )
