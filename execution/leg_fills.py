"""Hedged pairs as they really fill: each leg travels to its venue, fills IOC against the
book it meets there, partly or not at all, and the model hedges exactly what filled.

``TimedPairs`` is ``execution.hedged.HedgedPairs`` with leg timing (``PairParams.legs`` set); the
watchlist trader (``execution.watchlist_trader``) builds one per coin for the live paper service and
for ``tapeflow watchlist backtest`` alike. Pure and clock-injected: every step happens at an event
time and against the books of that time; the caller hands over the newest book per venue and calls
``run_due(t, books)`` before a book later than ``t`` replaces them (so the books it passes are the
books as they were at every step up to ``t``). Same input, same steps.

The fill model, step by step (times in event time; ``L(v)`` is venue ``v``'s one-way latency,
``VenueParams.latency_ms``):

1. **Signal** at ``e``: the quantity is sized on the books of ``e`` exactly as the instant model does
   (both notional sweeps, the smaller coin amount, down to the lot steps). Each leg gets an IOC limit:
   the worst price at which the pair still clears ``LegRules.min_entry_spread`` after four fees when
   the other leg trades at its VWAP of ``e`` (short: ``long VWAP x exp(min + four fees)``, long:
   ``short VWAP x exp(-(min + four fees))``). That limit is the entry's re-check at arrival: a leg
   that meets a book that moved takes only the levels still inside it. Both legs are sent at ``e``.
   With ``LegRules.sequential`` only the leg on the thinner book (the fewer coins inside its limit)
   is sent at ``e``; when its answer is back (``e + 2 L(lead)``) the hedge is sent for exactly what
   it filled, its limit re-derived from the lead's actual VWAP (nothing filled: ``failed``, no hedge).
   The re-check then happens at the hedge's arrival against the real first fill; the price is one
   more round trip.
2. **Arrival** at ``e + L(v)``: the leg walks the book of that moment from the touch, taking levels at
   or inside its limit, up to its quantity, rounded down to the venue's lot step: ``FILLED``,
   ``PARTIAL`` or ``FAILED`` (nothing filled, with the reason: the limit, no/stale book, refused).
3. **Answer** at ``e + 2 L(v)``: the fill is known. When both legs have answered: equal fills open
   the pair at that quantity (zero: the pair ``failed`` with nothing to unwind); otherwise the leg that
   filled less is sent again for the difference, ``LegRules.retries`` times, each limit
   ``retry_step_bp`` worse than the one before; when the retries are spent the excess of the other leg
   is unwound (an IOC without limit against its own book) and the pair opens at the hedged quantity
   once the excess is gone (or ``failed``, ``close_reason="unwind"``, when nothing was hedged). An
   unwind that cannot fill all of it is sent again at the next ``evaluate`` (status ``unwinding``).
4. **Exits** (``evaluate``: the instant model's rules, in its order) send both legs' closing orders
   (IOC without limit, for each leg's whole position) at the decision time, each filling on arrival;
   what one could not fill is sent again at the next ``evaluate`` (status ``closing``). An exit is not
   sent when a book is stale at the decision (``blocked``, as in the instant model).
5. **Liquidation and ADL** (``evaluate(..., adl=...)``): a leg whose mark reaches its liquidation price
   (``hedged.liquidation_price``) is closed by the venue at that price at once (no latency) with the
   venue's penalty (``VenueParams.liquidation_fee`` x notional at that price, ``liquidation_usd``); a
   leg the venue reports auto-deleveraged is closed at its mark without penalty. The other leg is then
   unwound by rule (step 4), ``close_reason`` ``liquidated`` or ``adl``.

Attribution per fill (all USDT, costs positive): ``slippage_usd`` = filled x (VWAP vs the touch met on
arrival), ``latency_usd`` = filled x (the touch met on arrival vs ``ref_price``, the touch when the
order was sent; for entry retries the signal's), fees at the venue's taker fee. A leg's ``gross`` is
its closed quantity valued at the ``ref_price`` of its entries and exits, so ``net = gross - fees -
slippage - leg_latency - funding - liquidation`` equals the cash of the fills once the leg is flat.
At zero latency ``ref_price`` is the touch met and ``leg_latency`` is 0.

Client order ids: ``client_order_id(signal_id, "pair_<leg>_entry" | "pair_<leg>_exit", attempt)``,
attempt 0, 1, 2 ... per leg and code in the order sent (retries are entries, unwinds exits).

Not modelled: queue position and hidden liquidity (an IOC takes the displayed levels only), the
market impact of our own fills on the next book, rate limits and order rejects beyond ``refusals``,
latency jitter (each venue has one fixed latency), partial liquidation and margin tiers, the
insurance fund; an ADL needs the venue's report (no recorded stream carries it yet).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from execution.client_ids import client_order_id
from execution.exchange_filters import to_decimal
from execution.hedged import (
    _ENTRY_SIDE,
    _EXIT_SIDE,
    FundingPayment,
    HedgedPairs,
    LegOrder,
    PairEntry,
    PairEvents,
    PairParams,
    PairPnl,
    PairPosition,
    liquidation_price,
    round_to_steps,
)
from execution.pnl import funding_payment
from stream_apps.cross_venue.events import BookEvent, FundingEvent
from stream_apps.cross_venue.symbols import instrument

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


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=_EPS)


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
        return math.fsum(o.done_qty * o.avg_price for o in fills) / qty if qty > 0 else None

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
            ref_in = math.fsum(o.done_qty * o.ref_price for o in adds) / q_in
            ref_out = math.fsum(o.done_qty * o.ref_price for o in takes) / q_out
            gross = (1 if self.role == "long" else -1) * closed * (ref_out - ref_in)
        return PairPnl(
            gross,
            math.fsum(o.fee for o in fills),
            math.fsum(o.slippage_usd for o in fills),
            math.fsum(p.paid for p in self.funding),
            math.fsum(o.latency_usd for o in fills),
            math.fsum(o.liquidation_usd for o in fills),
        )


class TimedPairs(HedgedPairs):
    """``HedgedPairs`` whose legs fill as they arrive (module docstring). ``pending``: the steps not
    yet due, plain data; ``flow``: per pair in flight, the entry's limits and counts, plain data."""

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
            item = {name: getattr(pair, name) for name in _FIELDS}
            item["settled"] = sorted([role, t] for role, t in pair.settled)
            item["legs"] = {
                role: {
                    "venue": leg.venue,
                    "symbol": leg.symbol,
                    "orders": [o.to_record() for o in leg.orders],
                    "funding": [p.to_record() for p in leg.funding],
                }
                for role, leg in pair.legs.items()
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
    def from_dict(cls, params: PairParams, data: Mapping[str, Any]) -> TimedPairs:
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
            pair = PairPosition(**{name: item[name] for name in _FIELDS}, legs=legs)  # type: ignore[arg-type]
            pair.settled = {(role, int(t)) for role, t in item["settled"]}
            model.pairs[pair.pair_id] = pair
            if pair.active:
                model.active_by_key[pair.pair_key] = pair.pair_id
            model._ended(pair)
        model.pending = [dict(s) for s in data["pending"]]
        model.flow = {pid: _json_flow(f) for pid, f in data["flow"].items()}
        model.seq = data["seq"]
        return model

    # -- entry -------------------------------------------------------------------------------------
    def open(
        self, entry: PairEntry, now_ms: int, books: Mapping[str, BookEvent], refusals: Mapping[str, str] | None = None
    ) -> PairEvents:
        pair, events, reasons = self._admit(entry, now_ms, books, TimedLeg)
        if pair is None:
            return events
        if reasons:  # a leg cannot be sized at the signal: nothing is sent
            pair.reason = "; ".join(f"{role} leg {pair.legs[role].venue}: {why}" for role, why in reasons.items())
            self._finish(pair, "failed", None, now_ms)
            events.positions.append(pair.to_record())
            return events
        problem = self._minimums(pair, books)
        if problem is not None:
            pair.status, pair.reason = "rejected", problem
            events.positions.append(pair.to_record())
            return events
        p, rules = self.params, self.params.legs
        vwaps, refs = {}, {}
        for role, leg in pair.legs.items():
            book = books[leg.venue]
            levels = book.bids if role == "short" else book.asks
            fill = ioc_fill(levels, pair.qty, _ENTRY_SIDE[role])
            vwaps[role], refs[role] = fill.vwap, fill.touch
        need = rules.min_entry_spread + 2 * (
            p.venue(pair.legs["short"].venue).taker_fee + p.venue(pair.legs["long"].venue).taker_fee
        )
        limits = {"short": vwaps["long"] * math.exp(need), "long": vwaps["short"] * math.exp(-need)}
        self.active_by_key[pair.pair_key] = pair.pair_id
        flow = self.flow[pair.pair_id] = {
            "target": pair.qty,
            "limits": limits,
            "refs": refs,
            "retries": {"short": 0, "long": 0},
            "out": {},
            "attempts": {},
            "refusals": dict(refusals or {}),
            "exit": None,
            "need": need,
        }
        pair.qty = 0.0  # the hedged quantity: set when both legs have answered
        events.positions.append(pair.to_record())
        if rules.sequential:  # the leg on the thinner book (inside its limit) first; ties: the short leg
            depth = {
                role: ioc_fill(
                    books[leg.venue].bids if role == "short" else books[leg.venue].asks,
                    math.inf,
                    _ENTRY_SIDE[role],
                    limits[role],
                ).qty
                for role, leg in pair.legs.items()
            }
            flow["lead"] = "long" if depth["long"] < depth["short"] else "short"
            self._send(pair, flow["lead"], "entry", flow["target"], limits[flow["lead"]], refs[flow["lead"]], now_ms)
        else:
            for role in ("short", "long"):
                self._send(pair, role, "entry", flow["target"], limits[role], refs[role], now_ms)
        events.extend(self.run_due(now_ms, books))
        return events

    def _send_hedge(self, pair: PairPosition, flow: dict[str, Any], now: int) -> PairEvents:
        """Sequential legs: the lead has answered; the hedge goes for exactly what it filled, its limit
        re-derived from the lead's actual VWAP (the entry's re-check, made where the hedge arrives)."""
        lead = flow.pop("lead")
        hedge = "long" if lead == "short" else "short"
        filled = pair.legs[lead].entered
        if filled <= _EPS:
            pair.reason = (
                f"{lead} leg {pair.legs[lead].venue}: {pair.legs[lead].orders[-1].reason}; the hedge was not sent"
            )
            self._finish(pair, "failed", None, now)
            return PairEvents(positions=[pair.to_record()])
        price = pair.legs[lead].avg_price(True)
        flow["limits"][hedge] = price * math.exp(-flow["need"] if hedge == "long" else flow["need"])
        self._send(pair, hedge, "entry", filled, flow["limits"][hedge], flow["refs"][hedge], now)
        return PairEvents()

    def _minimums(self, pair: PairPosition, books: Mapping[str, BookEvent]) -> str | None:
        """Why the venues would refuse the entry orders (minimum size, minimum notional), or None."""
        for leg in pair.legs.values():
            venue = self.params.venue(leg.venue)
            coins = to_decimal(pair.qty) * instrument(leg.venue, leg.symbol).multiplier
            if venue.min_qty and coins < to_decimal(venue.min_qty):
                return f"{coins.normalize():f} {pair.coin} below the {leg.venue} minimum order size {venue.min_qty!r}"
            book = books[leg.venue]
            top = (book.bids if leg.role == "short" else book.asks)[0][0]
            if pair.qty * top < venue.min_notional_usd:
                return f"{pair.qty * top:,.2f} USD below the {leg.venue} minimum notional"
        return None

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
        leg: TimedLeg = pair.legs[step["role"]]  # type: ignore[assignment]
        now, action, qty, limit = step["t"], step["action"], step["qty"], step["limit"]
        venue = self.params.venue(leg.venue)
        side = _ENTRY_SIDE[leg.role] if action == "entry" else _EXIT_SIDE[leg.role]
        code = f"pair_{leg.role}_{'entry' if action == 'entry' else 'exit'}"
        book, reason = self._book(leg, now, books)
        refused = self.flow.get(pair.pair_id, {}).get("refusals", {}).get(leg.venue) if action == "entry" else None
        if reason is None and refused:
            reason = f"venue refused: {refused}"
        fill = IocFill(0.0, 0.0, None)
        if reason is None:
            fill = ioc_fill(book.bids if side == "SELL" else book.asks, qty, side, limit)
            filled = round_to_steps(fill.qty, [self._lot_step(leg)]) or 0.0
            if filled < fill.qty - _EPS:  # whole lots only: walk again for the rounded quantity
                fill = (
                    ioc_fill(book.bids if side == "SELL" else book.asks, filled, side, limit)
                    if filled
                    else IocFill(0.0, 0.0, fill.touch)
                )
            if fill.qty <= _EPS:
                reason = (
                    f"IOC filled nothing: no level inside the limit {limit!r}"
                    if fill.touch is not None
                    else "IOC filled nothing: the book side is empty"
                )
        filled_qty = fill.qty if reason is None else 0.0
        status = "FAILED" if filled_qty <= _EPS else ("FILLED" if _same(filled_qty, qty) else "PARTIAL")
        vwap, top = fill.vwap if filled_qty else None, fill.touch if filled_qty else None
        ref = step["ref"] if step["ref"] is not None else top
        fee = slip = lat = 0.0
        if filled_qty:
            sign = 1 if side == "BUY" else -1  # a cost when a buy pays more / a sale gets less
            slip = filled_qty * sign * (vwap - top)
            lat = filled_qty * sign * (top - ref)
            fee = venue.taker_fee * vwap * filled_qty
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
        pair = self.pairs[step["pid"]]
        now = step["t"]
        if pair.status == "opening":
            if "lead" in flow:
                return self._send_hedge(pair, flow, now)
            return self._after_entry(pair, flow, now, books)
        return self._after_exit(pair, now)

    def _after_entry(
        self, pair: PairPosition, flow: dict[str, Any], now: int, books: Mapping[str, BookEvent]
    ) -> PairEvents:
        events = PairEvents()
        got = {role: leg.entered for role, leg in pair.legs.items()}
        if _same(got["short"], got["long"]):
            if got["short"] <= _EPS:
                pair.reason = "; ".join(
                    f"{role} leg {pair.legs[role].venue}: {pair.legs[role].orders[-1].reason}"
                    for role in ("short", "long")
                )
                self._finish(pair, "failed", None, now)
            else:
                self._opened(pair, got["short"])
            events.positions.append(pair.to_record())
            return events
        short_of = min(got, key=got.get)
        done = flow["retries"][short_of]
        rules = self.params.legs
        if done < rules.retries:
            flow["retries"][short_of] = done + 1
            worse = 1 + (done + 1) * rules.retry_step_bp * 1e-4
            limit = flow["limits"][short_of] * (worse if short_of == "long" else 1 / worse)
            self._send(
                pair, short_of, "entry", got[max(got, key=got.get)] - got[short_of], limit, flow["refs"][short_of], now
            )
            return events
        hedged = got[short_of]
        pair.qty = hedged
        pair.status = "unwinding"
        pair.reason = (
            f"{short_of} leg filled {hedged!r} of {flow['target']!r} after {done} retries: "
            f"the excess of the other leg is unwound"
        )
        events.positions.append(pair.to_record())
        events.extend(self._unwind_excess(pair, now, books))
        return events

    def _opened(self, pair: PairPosition, qty: float) -> None:
        pair.qty = qty
        pair.status = "open"
        pair.entry_spread = math.log(pair.legs["short"].avg_price(True) / pair.legs["long"].avg_price(True))

    def _excess(self, pair: PairPosition) -> tuple[str, float] | None:
        held = {role: leg.position() for role, leg in pair.legs.items()}
        big = max(held, key=held.get)
        extra = held[big] - held["long" if big == "short" else "short"]
        return None if extra <= _EPS or _same(held["short"], held["long"]) else (big, extra)

    def _unwind_excess(self, pair: PairPosition, now: int, books: Mapping[str, BookEvent]) -> PairEvents:
        excess = self._excess(pair)
        if excess is None:
            return self._settled_entry(pair, now)
        role, qty = excess
        leg = pair.legs[role]
        book, reason = self._book(leg, now, books)
        ref = None
        if reason is None:
            levels = book.asks if _EXIT_SIDE[role] == "BUY" else book.bids
            ref = levels[0][0] if levels else None
        self._send(pair, role, "unwind", qty, None, ref, now)
        return self.run_due(now, books)

    def _settled_entry(self, pair: PairPosition, now: int) -> PairEvents:
        """The excess is gone: the pair holds its hedged quantity, or nothing."""
        if pair.qty > _EPS:
            self._opened(pair, pair.qty)
        else:
            self._finish(pair, "failed", "unwind", now)
        return PairEvents(positions=[pair.to_record()])

    def _after_exit(self, pair: PairPosition, now: int) -> PairEvents:
        if pair.status == "unwinding":
            return self._settled_entry(pair, now) if self._excess(pair) is None else PairEvents()
        if any(leg.is_open for leg in pair.legs.values()):
            return PairEvents()  # what is left is sent again at the next evaluate
        flow = self.flow[pair.pair_id]
        shorts, longs = pair.legs["short"].avg_price(False), pair.legs["long"].avg_price(False)
        pair.exit_spread = math.log(shorts / longs) if shorts and longs else None
        self._finish(pair, "closed", flow["exit"], now)
        return PairEvents(positions=[pair.to_record()])

    def _finish(self, pair: PairPosition, status: str, close_reason: str | None, now_ms: int) -> None:
        super()._finish(pair, status, close_reason, now_ms)
        self.flow.pop(pair.pair_id, None)

    # -- funding -----------------------------------------------------------------------------------
    def settle_funding(
        self,
        venue: str,
        symbol: str,
        funding_time_ms: int,
        rate: float,
        mark_price: float,
        predicted_rate: float | None = None,
    ) -> PairEvents:
        """As ``HedgedPairs.settle_funding``, on the quantity each leg held at the funding time."""
        events = PairEvents()
        for pair in self.pairs.values():
            changed = False
            for leg in pair.legs.values():
                if (leg.venue, leg.symbol) != (venue, symbol) or (leg.role, funding_time_ms) in pair.settled:
                    continue
                held = leg.position(funding_time_ms)  # filled before T (a close at T still pays)
                if held <= _EPS:
                    continue
                paid = funding_payment(leg.direction, held, mark_price, rate)
                payment = FundingPayment(
                    pair.pair_id, leg.role, venue, symbol, funding_time_ms, rate, mark_price, held, paid, predicted_rate
                )
                pair.settled.add((leg.role, funding_time_ms))
                leg.funding.append(payment)
                events.funding.append(payment)
                changed = True
            if changed:
                events.positions.append(pair.to_record())
        return events

    # -- exits -------------------------------------------------------------------------------------
    def evaluate(
        self,
        now_ms: int,
        books: Mapping[str, BookEvent],
        funding: Mapping[str, FundingEvent] | None = None,
        marks: Mapping[str, float] | None = None,
        adl: Mapping[str, bool] | None = None,
    ) -> PairEvents:
        """Steps due by `now_ms` first; then per active pair: liquidation/ADL of a leg, a resend of what
        an unwind or a close left, or the instant model's exits (sent, filling on arrival)."""
        events = self.run_due(now_ms, books)
        marks, adl = marks or {}, adl or {}
        for pair in [p for p in self.pairs.values() if p.status in ("open", "unwinding", "closing")]:
            flow = self.flow.get(pair.pair_id)
            if flow is None or flow["out"]:
                continue  # an order is travelling
            forced = self._forced(pair, now_ms, books, marks, adl)
            if forced is not None:
                events.extend(forced)
            elif pair.status == "unwinding":
                events.extend(self._unwind_excess(pair, now_ms, books))
            elif pair.status == "closing":
                events.extend(self._send_exits(pair, now_ms, books))
            else:
                reason = self.exit_reason(pair, now_ms, books, funding or {}, marks)
                if reason is not None:
                    events.extend(self.close(pair.pair_id, reason, now_ms, books))
        return events

    def _forced(
        self,
        pair: PairPosition,
        now: int,
        books: Mapping[str, BookEvent],
        marks: Mapping[str, float],
        adl: Mapping[str, bool],
    ) -> PairEvents | None:
        """A leg liquidated (its mark at or beyond its liquidation price) or auto-deleveraged: closed by
        the venue now; the other leg is then closed by rule."""
        for leg in pair.legs.values():
            held = leg.position()
            if held <= _EPS:
                continue
            mark = self._mark(leg, now, books, marks)
            venue = self.params.venue(leg.venue)
            entry = leg.avg_price(True)
            liq = liquidation_price(leg.direction, entry, self.params.leverage, venue.maintenance_margin_rate)
            if adl.get(leg.venue):
                if mark is None:
                    continue
                price, why, penalty = mark, "adl", 0.0
            elif mark is not None and (mark <= liq if leg.direction == "LONG" else mark >= liq):
                price, why = liq, "liquidated"
                penalty = venue.liquidation_fee * held * liq
            else:
                continue
            side = _EXIT_SIDE[leg.role]
            flow = self.flow.setdefault(pair.pair_id, {"out": {}, "attempts": {}, "refusals": {}, "exit": None})
            code = f"pair_{leg.role}_exit"
            attempt = flow["attempts"].get(code, 0)
            flow["attempts"][code] = attempt + 1
            order = LegOrder(
                client_order_id(pair.signal_id, code, attempt),
                pair.pair_id,
                pair.signal_id,
                leg.role,
                why,
                leg.venue,
                leg.symbol,
                side,
                held,
                price,
                price,
                0.0,
                0.0,
                "FILLED",
                f"{why} at {price!r} (mark {mark!r})",
                now,
                None,
                held,
                price,
                None,
                now,
                attempt,
                0.0,
                penalty,
            )
            leg.orders.append(order)
            flow["exit"] = why
            pair.status = "closing"
            events = PairEvents(orders=[order])
            events.extend(self._send_exits(pair, now, books))
            return events
        return None

    def close(self, pid: str, reason: str, now_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        """Send both legs' closing orders now (they fill on arrival), or neither when a book is stale."""
        pair = self.pairs[pid]
        if pair.status != "open":
            return PairEvents()
        failed = [
            f"{role} leg {leg.venue}: {why}"
            for role, leg in pair.legs.items()
            if (why := self._book(leg, now_ms, books)[1]) is not None
        ]
        if failed:
            return PairEvents(
                blocked=[{"pair_id": pid, "close_reason": reason, "time_ms": now_ms, "reason": "; ".join(failed)}]
            )
        flow = self.flow.setdefault(pid, {"out": {}, "attempts": {}, "refusals": {}, "exit": None})
        flow["exit"] = reason
        pair.status = "closing"
        events = PairEvents(positions=[pair.to_record()])
        events.extend(self._send_exits(pair, now_ms, books))
        return events

    def _send_exits(self, pair: PairPosition, now: int, books: Mapping[str, BookEvent]) -> PairEvents:
        for role, leg in pair.legs.items():
            held = leg.position()
            if held <= _EPS:
                continue
            book, reason = self._book(leg, now, books)
            ref = None
            if reason is None:
                levels = book.asks if _EXIT_SIDE[role] == "BUY" else book.bids
                ref = levels[0][0] if levels else None
            self._send(pair, role, "exit", held, None, ref, now)
        events = self.run_due(now, books)
        if pair.status == "closing" and not self.flow.get(pair.pair_id, {}).get("out"):
            events.extend(self._after_exit(pair, now))
        return events

    def close_all(self, reason: str, now_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        """The end of a backtest: legs in flight arrive (at the last books), then every pair that
        holds legs is closed, an unfinished close or unwind sent again, until nothing is left to do
        or a round changes nothing (a book that cannot fill: the pair stays as it is)."""
        events = PairEvents()
        now = now_ms
        for _ in range(10):
            if self.pending:
                now = max(now, max(s["t"] for s in self.pending))
                events.extend(self.run_due(now, books))
            before = len(events.orders)
            for pid, pair in list(self.pairs.items()):
                flow = self.flow.get(pid)
                if flow is not None and flow["out"]:
                    continue
                if pair.status == "open":
                    events.extend(self.close(pid, reason, now, books))
                elif pair.status == "closing":
                    events.extend(self._send_exits(pair, now, books))
                elif pair.status == "unwinding":
                    events.extend(self._unwind_excess(pair, now, books))
            if not self.pending and len(events.orders) == before:
                break
        return events

    def exit_reason(
        self,
        pair: PairPosition,
        now_ms: int,
        books: Mapping[str, BookEvent],
        funding: Mapping[str, FundingEvent],
        marks: Mapping[str, float],
    ) -> str | None:
        view = _EntryView(pair)
        return super().exit_reason(view, now_ms, books, funding, marks)  # type: ignore[arg-type]


class _EntryView:
    """A timed pair as the instant model's ``exit_reason`` reads it: legs with one ``entry`` at their
    average entry price and held quantity."""

    def __init__(self, pair: PairPosition) -> None:
        self._pair = pair
        self.legs = {role: _LegView(leg) for role, leg in pair.legs.items()}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pair, name)


class _LegView:
    def __init__(self, leg: TimedLeg) -> None:
        self.role, self.venue, self.symbol, self.direction = leg.role, leg.venue, leg.symbol, leg.direction
        self.entry = _Entry(leg.avg_price(True) or 0.0, leg.position())


@dataclass(frozen=True)
class _Entry:
    avg_price: float
    qty: float


_FIELDS = (
    "pair_id",
    "signal_id",
    "pair_key",
    "coin",
    "notional_usd",
    "opened_ms",
    "qty",
    "status",
    "reason",
    "close_reason",
    "closed_ms",
    "entry_spread",
    "exit_spread",
)


def _json_flow(flow: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in flow.items()}


def pair_model(params: PairParams) -> HedgedPairs:
    """The model the parameters ask for: legs that fill as they arrive (``params.legs``) or at once."""
    return TimedPairs(params) if params.legs is not None else HedgedPairs(params)


def model_from_dict(params: PairParams, data: Mapping[str, Any]) -> HedgedPairs:
    if params.legs is not None:
        if not data.get("timed"):
            raise ValueError("the saved pairs were traded without leg timing; the parameters now have it")
        return TimedPairs.from_dict(params, data)
    if data.get("timed"):
        raise ValueError("the saved pairs were traded with leg timing; the parameters now have none")
    return HedgedPairs.from_dict(params, data)
