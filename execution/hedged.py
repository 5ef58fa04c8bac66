"""Hedged pair paper execution: a watchlist entry is two legs with one pair id,
short the rich venue and long the cheap one, filled, held and closed against each venue's book.

This is the *instant* model: both legs fill at the same moment against the books of that moment, all
or nothing. ``execution.leg_fills.TimedPairs`` (``PairParams.legs`` set) is the same model with leg
timing: each leg travels to its venue, fills IOC on the book it meets, partly or not at all.

Pure and clock-injected like the rest of the execution core: no Kafka, no wall clock; every call takes
the time it happens at (``now_ms``, an event time) and the books of that moment, so a live service
and the backtest drive the same model (one execution model, two clocks): both through
``execution.watchlist_trader``, one model per coin (docs/concepts/execution.md, "Hedged pairs").

Entry (``HedgedPairs.open``):

- One pair per watchlist signal: ``pair_id(signal_id)``; the legs' client order ids are
  ``client_order_id(signal_id, "pair_short_entry" | "pair_long_entry" | "pair_short_exit" |
  "pair_long_exit")`` (``execution.client_ids``). The same signal applied again places nothing and
  returns ``duplicate``; a different signal for a pair key (coin + the two venues, either direction)
  that already has an open pair is rejected. Rejections are kept, so re-applying one is a duplicate too.
- Quantity: equal base quantity on both legs. Each leg's book is swept for the entry notional
  (``stream_apps.cross_venue.sweep``: the short leg sells into the bids, the long leg buys from the
  asks); the quantity is the smaller of the two coin amounts, rounded *down* to each venue's
  ``lot_step`` in turn (exact decimals, ``execution.exchange_filters``); a quantity that is not a
  multiple of every step after that (steps such as 0.002 and 0.003) is rejected, and so is zero.
  So neither leg takes more than the notional. ``lot_step`` and ``min_qty`` are in coins (the venue
  rules of ``execution.instrument_rules``); a leg's book is in its symbol's units, so for a symbol
  quoted per 1,000 coins (``1000PEPEUSDT``) they are divided by 1,000 for that leg.
- Fill: each leg takes exactly that quantity from its book (``sweep_qty``: the notional the walk
  needs, swept by the same ``sweep``), at the volume-weighted average price, taker fee of its venue.
  A leg fails, with the reason, when its venue has no book, the book is older than the venue's
  ``max_book_age_ms`` at ``now_ms`` (or later than ``now_ms``: no look-ahead), is for another symbol,
  cannot fill the quantity (depth, bad or disordered levels), the quantity is below the venue's
  ``min_qty`` or the fill below its ``min_notional_usd``, or the venue refused the order
  (``refusals``: a future broker's answer, or a test's). If one leg fills and the other fails, the
  filled leg is unwound at once against the other side of its own book at the same moment (its exit
  order) and the pair is ``failed`` with the reason and its realised cost (the unwound leg's net P&L:
  two fees and the round trip through its book).
  If the unwind cannot fill either the pair stays ``unwinding`` and every ``evaluate`` retries it.

Exits (``HedgedPairs.evaluate``, checked in this order, the first that holds closes the pair):

1. ``liquidation``: a leg's distance to its liquidation price is below ``min_liquidation_distance``
   (a fraction of the mark). Approximation: isolated margin on a linear USDT perpetual, initial margin
   = entry notional / ``leverage``, maintenance margin = ``maintenance_margin_rate`` × notional at the
   liquidation price, no fees, funding or unrealised P&L of the other leg in the margin, one margin
   tier: long ``entry (1 − 1/L) / (1 − mmr)``, short ``entry (1 + 1/L) / (1 + mmr)``. The mark is
   ``marks[venue]`` when given, otherwise the mid of the leg's fresh book; without either the leg is
   not checked at that call.
2. ``convergence``: the spread the pair can close at, ``log(buy-back VWAP on the short venue / sell
   VWAP on the long venue)`` for the pair's quantity, is at or below ``exit_spread`` (the entry
   spread is ``log(short entry VWAP / long entry VWAP)``, > 0 when it was entered in profit).
3. ``funding``: within ``funding_lead_ms`` before a venue's next funding time (``funding[venue]``,
   the cross-venue ``FundingEvent``), the pair would pay more than ``funding_exit_threshold`` ×
   notional at the settlements in that window (each leg: ``execution.pnl.funding_payment`` at the
   leg's mark), so it closes before paying.
4. ``max_holding``: open for ``max_holding_ms`` or more.

An exit closes both legs against their books at ``now_ms``; if either cannot fill then, neither is
sent (the pair stays hedged), the attempt is reported in ``blocked`` and the next call tries again.
``close`` closes a pair for any other reason (a kill switch, an operator).

Funding (``HedgedPairs.settle_funding``): at a venue's funding time T each leg on that venue and
symbol that was open at T (entered before T, not closed before T) pays ``qty × mark × rate``, longs
paying a positive rate and shorts a negative one (received otherwise: ``funding_payment``); once per
leg and funding time, so a settlement delivered twice is paid once.

P&L per leg and pair, in quote currency (USDT), costs positive when paid, as ``execution.pnl``:
``gross`` = the legs valued at the top of book of each fill (the touch), ``slippage`` = what the
sweep's VWAP cost beyond the touch, ``fees`` = the four taker fees (two per leg: entry and exit), and
``funding`` = funding paid on both legs, so ``net = gross − fees − slippage − funding``, which equals the
cash of the fills minus fees and funding. A leg that has not been closed adds no gross yet.

Records (``to_record`` on each): the pair position, every leg order (client id, venue, side, qty,
average price, fee, status), every funding payment, and ``blocked`` exits, as plain dicts for a future
topic or table. The whole state is plain data too (``to_dict`` / ``from_dict``, JSON-safe): a restored
model goes on exactly as the one it was taken from (tested). It keeps every pair it has seen, so a
signal stays a duplicate for as long as the state lives (pairs are few: hours apart per pair key).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from execution.client_ids import client_order_id, pair_id
from execution.exchange_filters import quantize_to, to_decimal
from execution.paper_broker import walk_levels
from execution.pnl import funding_payment
from stream_apps.core.exits import TAKER_FEE
from stream_apps.cross_venue.events import BookEvent, FundingEvent
from stream_apps.cross_venue.sweep import BUY, SELL, Sweep, sweep
from stream_apps.cross_venue.symbols import SymbolError, instrument

HOUR_MS = 3_600_000
ROLES = ("short", "long")  # short the rich venue, long the cheap one
_DIRECTION = {"short": "SHORT", "long": "LONG"}
_ENTRY_SIDE = {"short": "SELL", "long": "BUY"}
_EXIT_SIDE = {"short": "BUY", "long": "SELL"}


# -- parameters ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LegRules:
    """How legs are sent and hedged when they fill as they arrive (``execution.leg_fills``): IOC limits
    that keep the entry's net spread at or above ``min_entry_spread`` (a fraction, after four fees),
    ``retries`` more IOC orders for a leg that filled less than the other, each ``retry_step_bp``
    worse, then the excess of the other leg unwound."""

    min_entry_spread: float = 0.0
    retries: int = 1
    retry_step_bp: float = 5.0
    sequential: bool = False  # the thinner book's leg first, the hedge sent for what it filled

    def __post_init__(self) -> None:
        if not 0 <= self.retries <= 10 or not 0 <= self.retry_step_bp <= 1_000:
            raise ValueError("retries must be in [0, 10] and retry_step_bp in [0, 1000]")


@dataclass(frozen=True)
class VenueParams:
    """One venue's side of the model (per coin: the service passes the instrument's own lot step)."""

    taker_fee: float = TAKER_FEE
    lot_step: float | None = None  # coins (base units; ÷ the symbol's multiplier per leg); None: no rounding
    min_notional_usd: float = 0.0
    min_qty: float = 0.0  # coins; a smaller order is refused by the venue
    max_book_age_ms: int = 2_000
    maintenance_margin_rate: float = 0.005
    latency_ms: int = 0  # one way, send -> matching engine, and again for the answer (``execution.leg_fills``)
    liquidation_fee: float = 0.005  # of the notional at the liquidation price, charged by the venue

    def __post_init__(self) -> None:
        if not 0 <= self.taker_fee < 0.01:
            raise ValueError("taker_fee must be in [0, 0.01)")
        if self.lot_step is not None and not (self.lot_step > 0 and math.isfinite(self.lot_step)):
            raise ValueError("lot_step must be positive")
        if self.min_notional_usd < 0 or self.max_book_age_ms < 0 or not self.min_qty >= 0:
            raise ValueError("min_notional_usd, min_qty and max_book_age_ms must not be negative")
        if not 0 <= self.maintenance_margin_rate < 1:
            raise ValueError("maintenance_margin_rate must be in [0, 1)")
        if self.latency_ms < 0 or not 0 <= self.liquidation_fee < 0.1:
            raise ValueError("latency_ms must not be negative and liquidation_fee must be in [0, 0.1)")


@dataclass(frozen=True)
class PairParams:
    notional_usd: float = 10_000.0  # per leg, at entry
    venues: Mapping[str, VenueParams] = field(default_factory=dict)
    default_venue: VenueParams = VenueParams()
    leverage: float = 1.0
    exit_spread: float = 0.0  # convergence: close when the closable spread is at or below this (log)
    max_holding_ms: int = 7 * 24 * HOUR_MS  # the users' "force close after 7 days"
    funding_lead_ms: int = 10 * 60_000
    funding_exit_threshold: float = 0.0005  # of notional, paid at the settlements within the lead
    min_liquidation_distance: float = 0.1  # of the mark
    legs: LegRules | None = None  # None: both legs fill at once (this module); set: ``execution.leg_fills``

    def __post_init__(self) -> None:
        if not (self.notional_usd > 0 and math.isfinite(self.notional_usd)):
            raise ValueError("notional_usd must be positive")
        if not self.leverage >= 1:
            raise ValueError("leverage must be at least 1")
        if self.max_holding_ms <= 0 or self.funding_lead_ms < 0:
            raise ValueError("max_holding_ms must be positive and funding_lead_ms not negative")
        if not 0 <= self.min_liquidation_distance < 1:
            raise ValueError("min_liquidation_distance must be in [0, 1)")

    def venue(self, name: str) -> VenueParams:
        return self.venues.get(name, self.default_venue)


# -- pure helpers ----------------------------------------------------------------------------------
def sweep_qty(levels: Sequence[tuple[float, float]], qty: float, side: str) -> Sweep:
    """Take exactly ``qty`` coins from ``levels`` (best first): the notional the walk needs, swept by
    ``stream_apps.cross_venue.sweep.sweep`` so its checks, reasons and VWAP apply unchanged. Where the
    book cannot give the quantity (too little depth, a bad level anywhere in it) the sweep is asked for
    more than that and says why."""
    if not (qty > 0 and math.isfinite(qty)):
        raise ValueError(f"qty must be positive, not {qty!r}")
    valid = [(p, q) for p, q in levels if p > 0 and q > 0 and math.isfinite(p) and math.isfinite(q)]
    notional, left = walk_levels(levels, qty)
    if len(valid) < len(levels):
        # a bad level: ask for more than every good level holds, so the sweep reaches it and names it
        notional = math.fsum(p * q for p, q in valid) + qty * max((p for p, _ in valid), default=1.0)
    elif left > 0:
        notional += left * (levels[-1][0] if levels else 1.0)  # too little depth: the sweep says how much
    return sweep(levels, notional, side)


def round_to_steps(qty: float, steps: Sequence[float | Decimal | None]) -> float | None:
    """``qty`` rounded down to each step in turn; None when the result is not a multiple of all of them."""
    value = to_decimal(qty)
    for step in steps:
        if step:
            value = quantize_to(value, to_decimal(step), ROUND_FLOOR)
    if any(step and value % to_decimal(step) != 0 for step in steps):
        return None
    return float(value)


def liquidation_price(direction: str, entry: float, leverage: float, maintenance_margin_rate: float) -> float:
    """The approximate liquidation price of an isolated linear position (module docstring, exit 1)."""
    if direction == "LONG":
        return entry * (1 - 1 / leverage) / (1 - maintenance_margin_rate)
    if direction == "SHORT":
        return entry * (1 + 1 / leverage) / (1 + maintenance_margin_rate)
    raise ValueError(f"direction must be LONG or SHORT, got {direction!r}")


def liquidation_distance(direction: str, liquidation: float, mark: float) -> float:
    """How far the mark is from the liquidation price, as a fraction of the mark (< 0: beyond it)."""
    return (mark - liquidation) / mark if direction == "LONG" else (liquidation - mark) / mark


# -- records ---------------------------------------------------------------------------------------
class _Record:
    """A dataclass that is one row of a future topic or table: ``to_record`` gives it as a plain dict."""

    __slots__ = ()

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LegOrder(_Record):
    """One leg order and its paper outcome (``FILLED`` at ``avg_price``, or ``FAILED`` with ``reason``)."""

    client_order_id: str
    pair_id: str
    signal_id: str
    leg: str  # "short" | "long"
    action: str  # "entry" | "exit" | "unwind"
    venue: str
    symbol: str
    side: str  # "BUY" | "SELL"
    qty: float
    avg_price: float | None
    top_price: float | None  # the best price of the side taken, at that moment
    fee: float
    slippage_usd: float  # qty x how much worse the VWAP was than the touch (>= 0)
    status: str  # "FILLED" | "FAILED"
    reason: str | None
    time_ms: int
    book_time_ms: int | None
    # leg timing (``execution.leg_fills``); None / 0 in the instant model, where a fill is all or nothing
    filled_qty: float | None = None  # an IOC order may fill part of ``qty`` (status PARTIAL) or none
    ref_price: float | None = None  # the touch of the side taken when the order was sent (the signal's)
    limit_price: float | None = None  # the IOC limit; None: whatever the book holds
    sent_ms: int | None = None  # arrives at ``time_ms`` (sent + the venue's latency)
    attempt: int = 0
    latency_usd: float = 0.0  # filled x how much the touch moved against the order while it travelled
    liquidation_usd: float = 0.0  # the venue's penalty when the leg was liquidated

    @property
    def filled(self) -> bool:
        return self.status == "FILLED"

    @property
    def done_qty(self) -> float:
        """The quantity that traded."""
        if self.filled_qty is not None:
            return self.filled_qty
        return self.qty if self.filled else 0.0


@dataclass(frozen=True, slots=True)
class FundingPayment(_Record):
    pair_id: str
    leg: str
    venue: str
    symbol: str
    funding_time_ms: int
    rate: float
    mark_price: float
    qty: float
    paid: float  # quote currency; < 0 = received
    predicted_rate: float | None = None  # the first rate announced for this settlement: a forecast, never booked


@dataclass(frozen=True, slots=True)
class PairPnl:
    """Quote currency; costs positive when paid. ``net = gross - fees - slippage - funding``."""

    gross: float
    fees: float
    slippage: float
    funding: float
    leg_latency: float = 0.0  # what the legs' travel time cost (``execution.leg_fills``)
    liquidation: float = 0.0  # venue penalties of liquidated legs

    @property
    def net(self) -> float:
        return self.gross - self.fees - self.slippage - self.funding - self.leg_latency - self.liquidation


@dataclass(slots=True)
class PairLeg:
    role: str  # "short" | "long"
    venue: str
    symbol: str
    entry: LegOrder | None = None
    exit: LegOrder | None = None  # the filled exit or unwind
    funding: list[FundingPayment] = field(default_factory=list)

    @property
    def direction(self) -> str:
        return _DIRECTION[self.role]

    @property
    def is_open(self) -> bool:
        return self.entry is not None and self.entry.filled and self.exit is None

    def pnl(self) -> PairPnl:
        fills = [o for o in (self.entry, self.exit) if o is not None and o.filled]
        gross = 0.0
        if self.exit is not None and self.entry is not None:
            sign = 1 if self.role == "long" else -1
            gross = sign * self.entry.qty * (self.exit.top_price - self.entry.top_price)
        return PairPnl(
            gross,
            sum((o.fee for o in fills), 0.0),
            sum((o.slippage_usd for o in fills), 0.0),
            sum((p.paid for p in self.funding), 0.0),
        )


@dataclass(slots=True)
class PairPosition:
    pair_id: str
    signal_id: str
    pair_key: str
    coin: str
    notional_usd: float
    opened_ms: int
    legs: dict[str, PairLeg]
    qty: float = 0.0
    status: str = "opening"  # open | unwinding | failed | closed | rejected
    reason: str | None = None  # why it failed or was rejected
    close_reason: str | None = None  # liquidation | convergence | funding | max_holding | unwind | <close()>
    closed_ms: int | None = None
    entry_spread: float | None = None
    exit_spread: float | None = None
    settled: set[tuple[str, int]] = field(default_factory=set)  # (leg, funding time) already paid

    @property
    def active(self) -> bool:
        """Holds (or is filling) at least one leg: the pair key is taken."""
        return self.status in ("opening", "open", "unwinding", "closing")

    def pnl(self) -> PairPnl:
        parts = [leg.pnl() for leg in self.legs.values()]
        return PairPnl(
            *(
                sum((getattr(p, name) for p in parts), 0.0)
                for name in ("gross", "fees", "slippage", "funding", "leg_latency", "liquidation")
            )
        )

    def to_record(self) -> dict[str, Any]:
        pnl = self.pnl()
        short, long_ = self.legs["short"], self.legs["long"]
        record = {
            "pair_id": self.pair_id,
            "signal_id": self.signal_id,
            "pair_key": self.pair_key,
            "coin": self.coin,
            "short_venue": short.venue,
            "short_symbol": short.symbol,
            "long_venue": long_.venue,
            "long_symbol": long_.symbol,
            "notional_usd": self.notional_usd,
            "qty": self.qty,
            "status": self.status,
            "reason": self.reason,
            "close_reason": self.close_reason,
            "opened_ms": self.opened_ms,
            "closed_ms": self.closed_ms,
            "entry_spread": self.entry_spread,
            "exit_spread": self.exit_spread,
            "gross_usd": pnl.gross,
            "fees_usd": pnl.fees,
            "slippage_usd": pnl.slippage,
            "funding_usd": pnl.funding,
            "leg_latency_usd": pnl.leg_latency,
            "liquidation_usd": pnl.liquidation,
            "net_usd": pnl.net,
        }
        for role, leg in self.legs.items():
            leg_pnl = leg.pnl()
            record |= {
                f"{role}_gross_usd": leg_pnl.gross,
                f"{role}_fees_usd": leg_pnl.fees,
                f"{role}_slippage_usd": leg_pnl.slippage,
                f"{role}_funding_usd": leg_pnl.funding,
                f"{role}_leg_latency_usd": leg_pnl.leg_latency,
                f"{role}_liquidation_usd": leg_pnl.liquidation,
                f"{role}_net_usd": leg_pnl.net,
            }
        return record


@dataclass(frozen=True, slots=True)
class PairEntry:
    """What a watchlist signal asks for: sell ``short_symbol`` on ``short_venue`` (the rich one), buy
    ``long_symbol`` on ``long_venue``; ``notional_usd`` per leg (None: the params' notional)."""

    signal_id: str
    short_venue: str
    short_symbol: str
    long_venue: str
    long_symbol: str
    notional_usd: float | None = None


@dataclass(slots=True)
class PairEvents:
    """What one call did, in order: leg orders, funding payments, pair snapshots after each change,
    blocked exits; ``duplicate`` when the entry had been applied before (nothing placed)."""

    orders: list[LegOrder] = field(default_factory=list)
    funding: list[FundingPayment] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    duplicate: bool = False

    def extend(self, other: PairEvents) -> None:
        self.orders += other.orders
        self.funding += other.funding
        self.positions += other.positions
        self.blocked += other.blocked


def pair_key(coin: str, venue_a: str, venue_b: str) -> str:
    """At most one active pair per coin and pair of venues, whichever way round."""
    low, high = sorted((venue_a, venue_b))
    return f"{coin}:{low}/{high}"


# -- the model -------------------------------------------------------------------------------------
class HedgedPairs:
    """Every pair this model has seen (``pairs``, by pair id, in order) and which pair keys are taken."""

    def __init__(self, params: PairParams | None = None) -> None:
        self.params = params or PairParams()
        self.pairs: dict[str, PairPosition] = {}
        self.active_by_key: dict[str, str] = {}
        self.last_closed: dict[str, int] = {}  # pair key -> when its last pair closed or failed

    # -- state as plain data -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Every pair with its legs' orders and funding, JSON-safe, in order: what a restarted service
        (or a Faust table) restores so the same signals stay duplicates and open pairs go on."""
        return {"pairs": [_pair_to_dict(pair) for pair in self.pairs.values()]}

    @classmethod
    def from_dict(cls, params: PairParams, data: Mapping[str, Any]) -> HedgedPairs:
        model = cls(params)
        for item in data["pairs"]:
            pair = _pair_from_dict(item)
            model.pairs[pair.pair_id] = pair
            if pair.active:
                model.active_by_key[pair.pair_key] = pair.pair_id
            model._ended(pair)
        return model

    # -- entry -------------------------------------------------------------------------------------
    def _admit(
        self, entry: PairEntry, now_ms: int, books: Mapping[str, BookEvent], leg_type: type = PairLeg
    ) -> tuple[PairPosition | None, PairEvents, dict[str, str]]:
        """The pair for `entry` with its quantity, or None with the events that say why not (a
        duplicate, a rejection); and the legs whose book could not be swept at `now_ms`, with why."""
        pid = pair_id(entry.signal_id)
        if pid in self.pairs:
            return None, PairEvents(duplicate=True), {}
        notional = self.params.notional_usd if entry.notional_usd is None else entry.notional_usd
        legs = {
            "short": leg_type("short", entry.short_venue, entry.short_symbol),
            "long": leg_type("long", entry.long_venue, entry.long_symbol),
        }
        coin, problem = _coin_of(entry)
        pair = self.pairs[pid] = PairPosition(
            pid, entry.signal_id, pair_key(coin, entry.short_venue, entry.long_venue), coin, notional, now_ms, legs
        )
        events = PairEvents()
        if problem is None and not (notional > 0 and math.isfinite(notional)):
            problem = f"notional must be positive, not {notional!r}"
        if problem is None and pair.pair_key in self.active_by_key:
            problem = f"pair {pair.pair_key} already has an active pair {self.active_by_key[pair.pair_key]}"
        if problem is not None:
            pair.status, pair.reason = "rejected", problem
            events.positions.append(pair.to_record())
            return None, events, {}

        # the quantity: the smaller coin amount of the two notional sweeps, down to the lot steps
        reasons: dict[str, str] = {}
        amounts: list[float] = []
        for role, leg in legs.items():
            book, reason = self._book(leg, now_ms, books)
            if reason is None:
                side = SELL if role == "short" else BUY
                swept = sweep(book.bids if side == SELL else book.asks, notional, side)
                reason = swept.reason
                if reason is None:
                    amounts.append(swept.qty)
            if reason is not None:
                reasons[role] = reason
        if amounts:
            qty = round_to_steps(min(amounts), [self._lot_step(leg) for leg in legs.values()])
            if not qty:
                pair.status = "rejected"
                pair.reason = (
                    f"{min(amounts)!r} {coin} rounds to zero at the lot steps"
                    if qty == 0.0
                    else f"no quantity is a multiple of every lot step near {min(amounts)!r}"
                )
                events.positions.append(pair.to_record())
                return None, events, {}
            pair.qty = qty
        return pair, events, reasons

    def open(
        self, entry: PairEntry, now_ms: int, books: Mapping[str, BookEvent], refusals: Mapping[str, str] | None = None
    ) -> PairEvents:
        pair, events, reasons = self._admit(entry, now_ms, books)
        if pair is None:
            return events
        pid, legs = pair.pair_id, pair.legs
        for role, leg in legs.items():
            order = self._fill(pair, leg, "entry", now_ms, books, (refusals or {}).get(leg.venue), reasons.get(role))
            leg.entry = order
            events.orders.append(order)
        self.active_by_key[pair.pair_key] = pid
        filled = [leg for leg in legs.values() if leg.entry.filled]
        if len(filled) == 2:
            pair.status = "open"
            pair.entry_spread = math.log(legs["short"].entry.avg_price / legs["long"].entry.avg_price)
            events.positions.append(pair.to_record())
            return events
        failed = [leg for leg in legs.values() if not leg.entry.filled]
        pair.reason = "; ".join(f"{leg.role} leg {leg.venue} failed: {leg.entry.reason}" for leg in failed)
        if not filled:
            self._finish(pair, "failed", None, now_ms)
            events.positions.append(pair.to_record())
            return events
        pair.status = "unwinding"
        events.positions.append(pair.to_record())
        events.extend(self._unwind(pair, now_ms, books))
        return events

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
        """One settlement of `venue`'s `symbol` at `funding_time_ms` at the settled `rate` (see the module docstring);
        `predicted_rate`, the forecast announced earlier, is only recorded beside it."""
        events = PairEvents()
        for pair in self.pairs.values():
            changed = False
            for leg in pair.legs.values():
                if (leg.venue, leg.symbol) != (venue, symbol) or (leg.role, funding_time_ms) in pair.settled:
                    continue
                if not _open_at(leg, funding_time_ms):
                    continue
                paid = funding_payment(leg.direction, leg.entry.qty, mark_price, rate)
                payment = FundingPayment(
                    pair.pair_id,
                    leg.role,
                    venue,
                    symbol,
                    funding_time_ms,
                    rate,
                    mark_price,
                    leg.entry.qty,
                    paid,
                    predicted_rate,
                )
                pair.settled.add((leg.role, funding_time_ms))
                leg.funding.append(payment)
                events.funding.append(payment)
                changed = True
            if changed:
                events.positions.append(pair.to_record())
        return events

    def close_all(self, reason: str, now_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        """Close every open pair now (the end of a backtest)."""
        events = PairEvents()
        for pid, pair in list(self.pairs.items()):
            if pair.status == "open":
                events.extend(self.close(pid, reason, now_ms, books))
        return events

    def run_due(self, until_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        """Nothing travels in the instant model (``execution.leg_fills.TimedPairs`` has steps)."""
        return PairEvents()

    # -- exits -------------------------------------------------------------------------------------
    def evaluate(
        self,
        now_ms: int,
        books: Mapping[str, BookEvent],
        funding: Mapping[str, FundingEvent] | None = None,
        marks: Mapping[str, float] | None = None,
    ) -> PairEvents:
        """Check every active pair's exits at `now_ms` (and retry unwinds); close those that hold."""
        events = PairEvents()
        for pair in [p for p in self.pairs.values() if p.active]:
            if pair.status == "unwinding":
                events.extend(self._unwind(pair, now_ms, books))
                continue
            reason = self.exit_reason(pair, now_ms, books, funding or {}, marks or {})
            if reason is not None:
                events.extend(self.close(pair.pair_id, reason, now_ms, books))
        return events

    def exit_reason(
        self,
        pair: PairPosition,
        now_ms: int,
        books: Mapping[str, BookEvent],
        funding: Mapping[str, FundingEvent],
        marks: Mapping[str, float],
    ) -> str | None:
        p = self.params
        legs = pair.legs
        for leg in legs.values():
            mark = self._mark(leg, now_ms, books, marks)
            if mark is None:
                continue
            liq = liquidation_price(
                leg.direction, leg.entry.avg_price, p.leverage, p.venue(leg.venue).maintenance_margin_rate
            )
            if liquidation_distance(leg.direction, liq, mark) < p.min_liquidation_distance:
                return "liquidation"
        closable = self.closable_spread(pair, now_ms, books)
        if closable is not None and closable <= p.exit_spread:
            return "convergence"
        upcoming = 0.0
        for leg in legs.values():
            event = funding.get(leg.venue)
            if event is None or event.symbol != leg.symbol:
                continue
            if now_ms < event.next_funding_time_ms <= now_ms + p.funding_lead_ms:
                mark = self._mark(leg, now_ms, books, marks) or leg.entry.avg_price
                upcoming += funding_payment(leg.direction, leg.entry.qty, mark, event.funding_rate)
        if upcoming > p.funding_exit_threshold * pair.notional_usd:
            return "funding"
        if now_ms - pair.opened_ms >= p.max_holding_ms:
            return "max_holding"
        return None

    def closable_spread(self, pair: PairPosition, now_ms: int, books: Mapping[str, BookEvent]) -> float | None:
        """``log(buy-back VWAP on the short venue / sell VWAP on the long venue)`` for the pair's
        quantity now; None when either book cannot give it."""
        prices = {}
        for role, leg in pair.legs.items():
            book, reason = self._book(leg, now_ms, books)
            if reason is not None:
                return None
            swept = sweep_qty(book.asks if role == "short" else book.bids, pair.qty, BUY if role == "short" else SELL)
            if swept.vwap is None:
                return None
            prices[role] = swept.vwap
        return math.log(prices["short"] / prices["long"])

    def close(self, pid: str, reason: str, now_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        """Close both legs of open pair `pid` against their books now, or neither (then ``blocked``)."""
        pair = self.pairs[pid]
        events = PairEvents()
        if pair.status != "open":
            return events
        orders = {role: self._fill(pair, leg, "exit", now_ms, books) for role, leg in pair.legs.items()}
        failed = [f"{role} leg {o.venue}: {o.reason}" for role, o in orders.items() if not o.filled]
        if failed:
            events.blocked.append(
                {"pair_id": pid, "close_reason": reason, "time_ms": now_ms, "reason": "; ".join(failed)}
            )
            return events
        for role, order in orders.items():
            pair.legs[role].exit = order
            events.orders.append(order)
        pair.exit_spread = math.log(orders["short"].avg_price / orders["long"].avg_price)
        self._finish(pair, "closed", reason, now_ms)
        events.positions.append(pair.to_record())
        return events

    # -- internals ---------------------------------------------------------------------------------
    def _unwind(self, pair: PairPosition, now_ms: int, books: Mapping[str, BookEvent]) -> PairEvents:
        events = PairEvents()
        for leg in pair.legs.values():
            if not leg.is_open:
                continue
            order = self._fill(pair, leg, "unwind", now_ms, books)
            if not order.filled:
                events.blocked.append(
                    {
                        "pair_id": pair.pair_id,
                        "close_reason": "unwind",
                        "time_ms": now_ms,
                        "reason": f"{leg.role} leg {leg.venue}: {order.reason}",
                    }
                )
                return events
            leg.exit = order
            events.orders.append(order)
        self._finish(pair, "failed", "unwind", now_ms)
        events.positions.append(pair.to_record())
        return events

    def _finish(self, pair: PairPosition, status: str, close_reason: str | None, now_ms: int) -> None:
        pair.status, pair.close_reason, pair.closed_ms = status, close_reason, now_ms
        if self.active_by_key.get(pair.pair_key) == pair.pair_id:
            del self.active_by_key[pair.pair_key]
        self._ended(pair)

    def _ended(self, pair: PairPosition) -> None:
        if pair.status in ("closed", "failed") and pair.closed_ms is not None:
            self.last_closed[pair.pair_key] = max(self.last_closed.get(pair.pair_key, pair.closed_ms), pair.closed_ms)

    def _book(self, leg: PairLeg, now_ms: int, books: Mapping[str, BookEvent]) -> tuple[BookEvent | None, str | None]:
        book = books.get(leg.venue)
        if book is None:
            return None, f"no book for {leg.venue} {leg.symbol}"
        if book.symbol != leg.symbol:
            return None, f"the {leg.venue} book is for {book.symbol}, not {leg.symbol}"
        age = now_ms - book.time_ms
        if age < 0:
            return None, f"the {leg.venue} book is {-age} ms later than now"
        limit = self.params.venue(leg.venue).max_book_age_ms
        if age > limit:
            return None, f"stale book {leg.venue}: {age / 1000:.1f} s old, limit {limit / 1000:.1f} s"
        return book, None

    def _lot_step(self, leg: PairLeg) -> Decimal | None:
        """The venue's lot step (coins) in the units of the leg's book (÷ its symbol's multiplier)."""
        step = self.params.venue(leg.venue).lot_step
        return None if step is None else to_decimal(step) / instrument(leg.venue, leg.symbol).multiplier

    def _mark(
        self, leg: PairLeg, now_ms: int, books: Mapping[str, BookEvent], marks: Mapping[str, float]
    ) -> float | None:
        if leg.venue in marks:
            return marks[leg.venue]
        book, reason = self._book(leg, now_ms, books)
        if reason is not None or not book.bids or not book.asks:
            return None
        return (book.bids[0][0] + book.asks[0][0]) / 2

    def _fill(
        self,
        pair: PairPosition,
        leg: PairLeg,
        action: str,
        now_ms: int,
        books: Mapping[str, BookEvent],
        refused: str | None = None,
        known_failure: str | None = None,
    ) -> LegOrder:
        """One leg order of `pair.qty` against the leg's book now: FILLED at the sweep's VWAP or FAILED."""
        side = _ENTRY_SIDE[leg.role] if action == "entry" else _EXIT_SIDE[leg.role]
        code = f"pair_{leg.role}_{'entry' if action == 'entry' else 'exit'}"
        venue = self.params.venue(leg.venue)
        book, reason = (None, known_failure) if known_failure else self._book(leg, now_ms, books)
        vwap = top = None
        if reason is None and refused:
            reason = f"venue refused: {refused}"
        if reason is None:
            levels = book.asks if side == "BUY" else book.bids
            swept = sweep_qty(levels, pair.qty, BUY if side == "BUY" else SELL)
            reason = swept.reason
            if reason is None:
                vwap, top = swept.vwap, levels[0][0]
                coins = to_decimal(pair.qty) * instrument(leg.venue, leg.symbol).multiplier if venue.min_qty else None
                if coins is not None and coins < to_decimal(venue.min_qty):
                    reason = (
                        f"venue refused: {coins.normalize():f} {pair.coin} below the {leg.venue} minimum "
                        f"order size {venue.min_qty!r}"
                    )
                    vwap = top = None
                elif pair.qty * vwap < venue.min_notional_usd:
                    reason = f"venue refused: {pair.qty * vwap:,.2f} USD below the {leg.venue} minimum notional"
                    vwap = top = None
        if reason is not None:
            return LegOrder(
                client_order_id(pair.signal_id, code),
                pair.pair_id,
                pair.signal_id,
                leg.role,
                action,
                leg.venue,
                leg.symbol,
                side,
                pair.qty,
                None,
                None,
                0.0,
                0.0,
                "FAILED",
                reason,
                now_ms,
                book.time_ms if book is not None else None,
            )
        worse = vwap - top if side == "BUY" else top - vwap
        return LegOrder(
            client_order_id(pair.signal_id, code),
            pair.pair_id,
            pair.signal_id,
            leg.role,
            action,
            leg.venue,
            leg.symbol,
            side,
            pair.qty,
            vwap,
            top,
            venue.taker_fee * vwap * pair.qty,
            pair.qty * worse,
            "FILLED",
            None,
            now_ms,
            book.time_ms,
        )


_PAIR_FIELDS = (
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


def _pair_to_dict(pair: PairPosition) -> dict[str, Any]:
    out: dict[str, Any] = {name: getattr(pair, name) for name in _PAIR_FIELDS}
    out["settled"] = sorted([role, t] for role, t in pair.settled)
    out["legs"] = {
        role: {
            "venue": leg.venue,
            "symbol": leg.symbol,
            "entry": leg.entry.to_record() if leg.entry else None,
            "exit": leg.exit.to_record() if leg.exit else None,
            "funding": [p.to_record() for p in leg.funding],
        }
        for role, leg in pair.legs.items()
    }
    return out


def _pair_from_dict(data: Mapping[str, Any]) -> PairPosition:
    legs = {
        role: PairLeg(
            role,
            leg["venue"],
            leg["symbol"],
            LegOrder(**leg["entry"]) if leg["entry"] else None,
            LegOrder(**leg["exit"]) if leg["exit"] else None,
            [FundingPayment(**p) for p in leg["funding"]],
        )
        for role, leg in data["legs"].items()
    }
    pair = PairPosition(**{name: data[name] for name in _PAIR_FIELDS}, legs=legs)
    pair.settled = {(role, int(t)) for role, t in data["settled"]}
    return pair


def _open_at(leg: PairLeg, t: int) -> bool:
    """Held at time `t`: entered before it, not closed before it (a close at `t` still pays)."""
    if leg.entry is None or not leg.entry.filled or leg.entry.time_ms >= t:
        return False
    return leg.exit is None or leg.exit.time_ms >= t


def _coin_of(entry: PairEntry) -> tuple[str, str | None]:
    """The coin both legs trade, or the reason the entry cannot be a hedge."""
    try:
        short = instrument(entry.short_venue, entry.short_symbol)
        long_ = instrument(entry.long_venue, entry.long_symbol)
    except SymbolError as exc:
        return "?", str(exc)
    if entry.short_venue == entry.long_venue:
        return short.coin, f"both legs on {entry.short_venue}"
    if (short.coin, short.quote) != (long_.coin, long_.quote) or "spot" in (short.kind, long_.kind):
        return short.coin, (
            f"not one perpetual on two venues: {entry.short_symbol} on {entry.short_venue}, "
            f"{entry.long_symbol} on {entry.long_venue}"
        )
    if short.multiplier != long_.multiplier:
        return short.coin, (
            f"{entry.short_symbol} quotes {short.multiplier} coins, {entry.long_symbol} "
            f"{long_.multiplier}: equal quantities across contract sizes are not modelled yet"
        )
    return short.coin, None
