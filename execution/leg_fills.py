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
from dataclasses import dataclass
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
    PairPosition,
    VenueParams,
    liquidation_price,
)
from execution.leg_travel import (  # noqa: F401 - the fill model's names, importable from here as before
    _EPS,
    AT,
    IocFill,
    LegTravel,
    TimedLeg,
    ioc_fill,
    same_qty,
)
from execution.pnl import funding_payment
from stream_apps.cross_venue.events import BookEvent, FundingEvent
from stream_apps.cross_venue.symbols import instrument


class TimedPairs(LegTravel):
    """``HedgedPairs`` whose legs fill as they arrive (module docstring): the entries, hedges, unwinds,
    exits and forced closes it decides; how its orders travel and fill is ``LegTravel``'s."""

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
        limits, refs, need = self._entry_limits(pair, books)
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
        if self.params.legs.sequential:
            flow["lead"] = self._thinner_leg(pair, books, limits)
            self._send(pair, flow["lead"], "entry", flow["target"], limits[flow["lead"]], refs[flow["lead"]], now_ms)
        else:
            for role in ("short", "long"):
                self._send(pair, role, "entry", flow["target"], limits[role], refs[role], now_ms)
        events.extend(self.run_due(now_ms, books))
        return events

    def _entry_limits(
        self, pair: PairPosition, books: Mapping[str, BookEvent]
    ) -> tuple[dict[str, float], dict[str, float | None], float]:
        """Each leg's IOC limit, the worst price at which the pair still clears the minimum entry spread
        after four fees when the other leg trades at its VWAP of the signal; each leg's touch (its
        ``ref_price``); and that spread (``need``)."""
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
        return limits, refs, need

    @staticmethod
    def _thinner_leg(pair: PairPosition, books: Mapping[str, BookEvent], limits: Mapping[str, float]) -> str:
        """Sequential legs: the leg on the thinner book (the fewer coins inside its limit) leads; ties: the
        short leg."""
        depth = {
            role: ioc_fill(
                books[leg.venue].bids if role == "short" else books[leg.venue].asks,
                math.inf,
                _ENTRY_SIDE[role],
                limits[role],
            ).qty
            for role, leg in pair.legs.items()
        }
        return "long" if depth["long"] < depth["short"] else "short"

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

    def _answered(
        self, pair: PairPosition, flow: dict[str, Any], now: int, books: Mapping[str, BookEvent]
    ) -> PairEvents:
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
        if same_qty(got["short"], got["long"]):
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
        return None if extra <= _EPS or same_qty(held["short"], held["long"]) else (big, extra)

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
            closed = venue_close(
                leg.direction, held, leg.avg_price(True), mark, venue, self.params.leverage, bool(adl.get(leg.venue))
            )
            if closed is None:
                continue
            price, why, penalty = closed
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


def venue_close(
    direction: str,
    held: float,
    entry: float,
    mark: float | None,
    venue: VenueParams,
    leverage: float,
    adl_reported: bool,
) -> tuple[float, str, float] | None:
    """How the venue closes a leg holding `held` now, if it does: ``(price, why, penalty)``, an ADL at
    the mark without penalty, or a liquidation (the mark at or beyond the liquidation price) at the
    liquidation price with the venue's fee on that notional; None when the leg stays."""
    liq = liquidation_price(direction, entry, leverage, venue.maintenance_margin_rate)
    if adl_reported:
        return None if mark is None else (mark, "adl", 0.0)
    if mark is not None and (mark <= liq if direction == "LONG" else mark >= liq):
        return liq, "liquidated", venue.liquidation_fee * held * liq
    return None


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
