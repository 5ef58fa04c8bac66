"""How a timed pair's leg orders travel and fill: the steps in event time, each leg's fill where it
arrives, and the model's state as plain data.

``LegTravel`` is the half of ``execution.leg_fills.TimedPairs`` that does not decide anything: an order
sent at ``t`` (``_send``) meets its venue's book at ``t + latency`` (``_arrive``: an IOC walk, whole
lots, its costs attributed) and its answer is back at ``t + 2 latency`` (``_answer``); once every leg
in flight of a pair has answered, the subclass decides what follows (``_answered``). The fill model
and the attribution are described in ``execution.leg_fills``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Self, cast

from execution.client_ids import client_order_id
from execution.hedged import (
    _ENTRY_SIDE,
    _EXIT_SIDE,
    _PAIR_FIELDS,
    FundingPayment,
    HedgedPairs,
    LegOrder,
    PairEvents,
    PairParams,
    PairPnl,
    PairPosition,
    round_to_steps,
)
from stream_apps.cross_venue.events import BookEvent

_EPS = 1e-12
AT = "_at"  # a pair snapshot's own time when a step made it (the caller pops it: ``WatchlistTrader._collect``)


@dataclass(frozen=True, slots=True)
class IocFill:
    qty: float  # filled
    notional: float
    touch: float | None  # the best price of the side, as met

    @property
    def vwap(self) -> float | None:
        return self.notional / self.qty if self.qty > 0 else None


def ioc_fill(levels: Any, qty: float, side: str, limit: float | None = None) -> IocFill:
    """Walk `levels` (best first) for up to `qty`, taking only prices at or inside `limit` (BUY: at or
    below, SELL: at or above); a bad level (not positive, not finite) ends the walk, as on a venue
    whose book stops there. Hand-written: ``paper_broker.walk_levels`` has no limit."""
    filled = notional = 0.0
    touch = None
    for price, size in levels:
        if not (price > 0 and size > 0 and math.isfinite(price) and math.isfinite(size)):
            break
        if touch is None:
            touch = price
        if limit is not None and (price > limit if side == "BUY" else price < limit):
            break
        take = min(size, qty - filled)
        filled += take
        notional += take * price
        if filled >= qty - _EPS:
            break
    return IocFill(filled, notional, touch)


def same_qty(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=_EPS)


def arrival_fill(
    book: BookEvent, side: str, qty: float, limit: float | None, lot_step: Decimal | None
) -> tuple[IocFill, str | None]:
    """An IOC's fill against the book it meets, in whole lots, and why it filled nothing (None: it filled)."""
    levels = book.bids if side == "SELL" else book.asks
    fill = ioc_fill(levels, qty, side, limit)
    filled = round_to_steps(fill.qty, [lot_step]) or 0.0
    if filled < fill.qty - _EPS:  # whole lots only: walk again for the rounded quantity
        fill = ioc_fill(levels, filled, side, limit) if filled else IocFill(0.0, 0.0, fill.touch)
    if fill.qty <= _EPS:
        return fill, (
            f"IOC filled nothing: no level inside the limit {limit!r}"
            if fill.touch is not None
            else "IOC filled nothing: the book side is empty"
        )
    return fill, None


def fill_costs(
    filled_qty: float, side: str, vwap: float, top: float, ref: float, taker_fee: float
) -> tuple[float, float, float]:
    """(fee, slippage, latency) of a fill, USDT, costs positive: slippage is the VWAP against the touch
    met on arrival, latency the touch met against ``ref`` (the touch when the order was sent)."""
    sign = 1 if side == "BUY" else -1  # a cost when a buy pays more / a sale gets less
    return taker_fee * vwap * filled_qty, filled_qty * sign * (vwap - top), filled_qty * sign * (top - ref)


@dataclass(slots=True)
class TimedLeg:
    """One leg as a list of orders (entries, retries, unwinds, exits); its position is what filled."""

    role: str
    venue: str
    symbol: str
    orders: list[LegOrder] = field(default_factory=list)
    funding: list[FundingPayment] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return "SHORT" if self.role == "short" else "LONG"

    def _adds(self, order: LegOrder) -> bool:
        return order.side == _ENTRY_SIDE[self.role]

    def position(self, before_ms: int | None = None) -> float:
        """The quantity held (after every fill, or only the fills before `before_ms`)."""
        held = 0.0
        for o in self.orders:
            if before_ms is None or o.time_ms < before_ms:
                held += o.done_qty if self._adds(o) else -o.done_qty
        return 0.0 if abs(held) < 1e-9 * max(1.0, abs(held)) else held

    @property
    def entered(self) -> float:
        return math.fsum(o.done_qty for o in self.orders if self._adds(o))

    def avg_price(self, adds: bool) -> float | None:
        fills = [o for o in self.orders if self._adds(o) == adds and o.done_qty > 0]
        qty = math.fsum(o.done_qty for o in fills)
        return (
            math.fsum(o.done_qty * cast(float, o.avg_price) for o in fills) / qty if qty > 0 else None
        )  # filled: priced

    @property
    def entry(self) -> LegOrder | None:
        """The first entry order (what the instant model calls the leg's entry)."""
        return next((o for o in self.orders if self._adds(o)), None)

    @property
    def is_open(self) -> bool:
        return self.position() > 0

    def pnl(self) -> PairPnl:
        fills = [o for o in self.orders if o.done_qty > 0]
        adds = [o for o in fills if self._adds(o)]
        takes = [o for o in fills if not self._adds(o)]
        q_in, q_out = math.fsum(o.done_qty for o in adds), math.fsum(o.done_qty for o in takes)
        gross = 0.0
        closed = min(q_in, q_out)
        if closed > 0:
            ref_in = math.fsum(o.done_qty * cast(float, o.ref_price) for o in adds) / q_in  # filled: a touch was met
            ref_out = math.fsum(o.done_qty * cast(float, o.ref_price) for o in takes) / q_out
            gross = (1 if self.role == "long" else -1) * closed * (ref_out - ref_in)
        return PairPnl(
            gross,
            math.fsum(o.fee for o in fills),
            math.fsum(o.slippage_usd for o in fills),
            math.fsum(p.paid for p in self.funding),
            math.fsum(o.latency_usd for o in fills),
            math.fsum(o.liquidation_usd for o in fills),
        )


class LegTravel(HedgedPairs):
    """``HedgedPairs`` with leg orders that travel. ``pending``: the steps not yet due, plain data;
    ``flow``: per pair in flight, the entry's limits and counts, plain data; ``seq``: steps scheduled
    so far (equal times keep the order they were scheduled in)."""

    def __init__(self, params: PairParams | None = None) -> None:
        super().__init__(params)
        if self.params.legs is None:
            raise ValueError("TimedPairs needs PairParams.legs")
        self.pending: list[dict[str, Any]] = []
        self.flow: dict[str, dict[str, Any]] = {}
        self.seq = 0

    # -- state as plain data -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        pairs = []
        for pair in self.pairs.values():
            item = {name: getattr(pair, name) for name in _PAIR_FIELDS}
            item["settled"] = sorted([role, t] for role, t in pair.settled)
            item["legs"] = {
                role: {
                    "venue": leg.venue,
                    "symbol": leg.symbol,
                    "orders": [o.to_record() for o in leg.orders],
                    "funding": [p.to_record() for p in leg.funding],
                }
                for role, leg in cast(dict[str, TimedLeg], pair.legs).items()
            }
            pairs.append(item)
        return {
            "timed": True,
            "pairs": pairs,
            "pending": [dict(s) for s in self.pending],
            "flow": {pid: dict(f) for pid, f in self.flow.items()},
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, params: PairParams, data: Mapping[str, Any]) -> Self:
        model = cls(params)
        for item in data["pairs"]:
            legs = {
                role: TimedLeg(
                    role,
                    leg["venue"],
                    leg["symbol"],
                    [LegOrder(**o) for o in leg["orders"]],
                    [FundingPayment(**p) for p in leg["funding"]],
                )
                for role, leg in item["legs"].items()
            }
            pair = PairPosition(**{name: item[name] for name in _PAIR_FIELDS}, legs=legs)  # type: ignore[arg-type]
            pair.settled = {(role, int(t)) for role, t in item["settled"]}
            model.pairs[pair.pair_id] = pair
            if pair.active:
                model.active_by_key[pair.pair_key] = pair.pair_id
            model._ended(pair)
        model.pending = [dict(s) for s in data["pending"]]
        model.flow = {pid: _json_flow(f) for pid, f in data["flow"].items()}
        model.seq = data["seq"]
        return model

    # -- steps -------------------------------------------------------------------------------------
    def _send(
        self,
        pair: PairPosition,
        role: str,
        action: str,
        qty: float,
        limit: float | None,
        ref: float | None,
        now_ms: int,
    ) -> None:
        """An order leaves now; it meets its venue's book at now + latency."""
        flow = self.flow[pair.pair_id]
        code = f"pair_{role}_{'entry' if action == 'entry' else 'exit'}"
        attempt = flow["attempts"].get(code, 0)
        flow["attempts"][code] = attempt + 1
        flow["out"][role] = True
        latency = self.params.venue(pair.legs[role].venue).latency_ms
        self._push(
            {
                "t": now_ms + latency,
                "kind": "arrive",
                "pid": pair.pair_id,
                "role": role,
                "action": action,
                "qty": qty,
                "limit": limit,
                "ref": ref,
                "sent": now_ms,
                "attempt": attempt,
            }
        )

    def _push(self, step: dict[str, Any]) -> None:
        self.seq += 1
        self.pending.append(step | {"seq": self.seq})
        self.pending.sort(key=lambda s: (s["t"], s["seq"]))

    def run_due(self, until_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        """Every step due at or before `until_ms`, in time order, each at its own time against `books`
        (the newest book per venue: the caller's promise is that none is later than the step)."""
        events = PairEvents()
        while self.pending and self.pending[0]["t"] <= until_ms:
            step = self.pending.pop(0)
            done = self._arrive(step, books) if step["kind"] == "arrive" else self._answer(step, books)
            for snapshot in done.positions:  # when the change happened (``AT``), for the pair's event time
                snapshot.setdefault(AT, step["t"])
            events.extend(done)
        return events

    def _arrive(self, step: Mapping[str, Any], books: Mapping[str, BookEvent]) -> PairEvents:
        pair = self.pairs[step["pid"]]
        leg = cast(TimedLeg, pair.legs[step["role"]])
        now, action, qty, limit = step["t"], step["action"], step["qty"], step["limit"]
        venue = self.params.venue(leg.venue)
        side = _ENTRY_SIDE[leg.role] if action == "entry" else _EXIT_SIDE[leg.role]
        code = f"pair_{leg.role}_{'entry' if action == 'entry' else 'exit'}"
        book, reason = self._book(leg, now, books)  # type: ignore[arg-type]  # a TimedLeg reads as a PairLeg
        refused = self.flow.get(pair.pair_id, {}).get("refusals", {}).get(leg.venue) if action == "entry" else None
        if reason is None and refused:
            reason = f"venue refused: {refused}"
        fill = IocFill(0.0, 0.0, None)
        if reason is None:
            assert book is not None  # no reason: a book fit to trade on
            fill, reason = arrival_fill(book, side, qty, limit, self._lot_step(leg))  # type: ignore[arg-type]
        filled_qty = fill.qty if reason is None else 0.0
        status = "FAILED" if filled_qty <= _EPS else ("FILLED" if same_qty(filled_qty, qty) else "PARTIAL")
        vwap, top = fill.vwap if filled_qty else None, fill.touch if filled_qty else None
        ref = step["ref"] if step["ref"] is not None else top
        fee = slip = lat = 0.0
        if filled_qty:
            assert vwap is not None and top is not None and ref is not None  # something filled: prices met
            fee, slip, lat = fill_costs(filled_qty, side, vwap, top, ref, venue.taker_fee)
        order = LegOrder(
            client_order_id(pair.signal_id, code, step["attempt"]),
            pair.pair_id,
            pair.signal_id,
            leg.role,
            action,
            leg.venue,
            leg.symbol,
            side,
            qty,
            vwap,
            top,
            fee,
            slip,
            status,
            reason,
            now,
            book.time_ms if book is not None else None,
            filled_qty,
            ref,
            limit,
            step["sent"],
            step["attempt"],
            lat,
        )
        leg.orders.append(order)
        events = PairEvents(orders=[order])
        self._push(
            {"t": now + venue.latency_ms, "kind": "answer", "pid": pair.pair_id, "role": leg.role, "action": action}
        )
        return events

    def _answer(self, step: Mapping[str, Any], books: Mapping[str, BookEvent]) -> PairEvents:
        flow = self.flow.get(step["pid"])
        if flow is None:
            return PairEvents()
        flow["out"].pop(step["role"], None)
        if flow["out"]:
            return PairEvents()  # the other leg has not answered yet
        return self._answered(self.pairs[step["pid"]], flow, step["t"], books)

    def _answered(
        self, pair: PairPosition, flow: dict[str, Any], now: int, books: Mapping[str, BookEvent]
    ) -> PairEvents:
        """Every leg in flight of `pair` has answered at `now`: what the pair does next (the subclass)."""
        raise NotImplementedError


def _json_flow(flow: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in flow.items()}
