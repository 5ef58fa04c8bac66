"""One watchlist strategy trading hedged pairs, pure: the core that the live watchlist service and
the watchlist backtest both drive (one engine, one execution model, two clocks).

Fed the cross-venue inputs (``stream_apps.cross_venue.events``: books, funding, spot) in event-time
order, it keeps its own ``CrossVenueState`` (swept for the strategy's notional, its staleness), the
strategy's decisions (``stream_apps.watchlist.signals``) and one ``HedgedPairs`` paper model per
coin (``execution.hedged``). At each evaluation of a coin (event time ``e``, every
``eval_interval_ms``), with the coin's newest book per venue at ``e`` (exactly what the state's
evaluation saw):

1. funding: every settlement time ``T <= e`` a venue announced (its newest funding event before ``T``)
   is settled once on the pairs open at ``T`` (``HedgedPairs.settle_funding``), at that rate and the
   mid of the venue's newest book as the mark. Predicted and settled are kept apart: the rate the
   venue published last before ``T`` (its current interval's rate, which is what it settles: the
   producers' md.mark at each funding time) is booked; the first rate announced for ``T`` (a
   forecast, possibly hours old) is recorded beside it as ``predicted_rate`` and never booked. Each
   venue's own times are used, so an interval that changes (1, 4 or 8 h) is followed;
2. exits: ``HedgedPairs.evaluate(e, books, funding)`` (liquidation, convergence, funding, max holding,
   and retried unwinds);
3. entries: on the strategy's grid, the xv.features records of the evaluation go through the strategy
   (``WatchlistSignals.evaluate``); each ``signal`` opens a pair (``HedgedPairs.open``) against the same
   books, so a leg that cannot fill is unwound as it would be live.

Leg timing (the strategy's ``legs:``, or ``leg_latency_ms`` for a what-if run): the model per coin is
``execution.leg_fills.TimedPairs``, whose leg orders travel. Before an input replaces a coin's books
(and at ``advance_to``), every step due before it runs against the books as they were
(``TimedPairs.run_due``), so a leg meets the newest book at or before its arrival, live and in the
backtest alike; steps due by an evaluation run before its exits and entries. Without it the instant
model (``execution.hedged.HedgedPairs``) fills both legs at the evaluation's books.

What it did is queued as records (``take()``), in the order it happened, each ``(kind, coin,
record)``: ``signal`` (a signal or a rejection, xv.signals), ``order`` (a leg order and its paper
outcome, xv.orders), ``funding`` (a payment, xv.funding), ``pair`` (a snapshot of a pair after each
change with its ``seq`` 1, 2, ... and the ``event_time`` of the change, xv.pairs) and ``blocked`` (an
exit a stale book blocked; no topic). ``TOPICS`` maps the kinds to their topics. Every id in them
comes from the input (signal ids from the strategy, coin, venues and evaluation time; pair ids and
client order ids from the signal id), so the same input gives the same records however it is
batched and whatever restarts came between (``to_dict``/``from_dict`` carry the whole state).

Venue rules (``rules``, an ``execution.instrument_rules.InstrumentRules``, optional): each coin's
``HedgedPairs`` gets, per venue, the lot step, minimum order size and minimum notional of that coin's
listing on the venue (``coin_pair_params``), so pairs trade quantities the venues accept. Without
rules every quantity is unrounded, as before; with rules, a venue that lists no rule for a coin (or
two listings of it) trades that coin unrounded too, and each such (coin, venue) is counted once in
``counters["no_instrument_rules"]`` and listed in ``missing_rules``, never silently. The rules are not
part of ``fingerprint()``: a refreshed rules file (a new listing, a changed step) must not drop the
state and its open pairs on the next restart; a restored trader applies its rules to the pairs it
opens from then on (an open pair keeps the quantity it was opened with).

Operator commands (``command``, the records of ``xv.commands`` with status ``requested``: the web UI's
desk asks them, ``execution.watchlist_commands``): a command names its strategy, and only that
strategy's trader acts, once per ``command_id`` (kept in the state: a command read twice, after a
retry or a restart, is counted as ``command_duplicate`` and does nothing). It acts at the trader's
clock, the event time of the newest input it has been fed ("the newest book time it has seen"), on
the coin's books as they are then, through the same code as the strategy's own decisions. A command
stamped with a time its inputs have not reached yet (``shown_time``: the evaluation whose spread the
desk showed; a service catching up after a restart is behind the desk) waits, in the state, for the
first input at or after that time, so it never acts on books older than the ones the operator saw:

- ``open``: a signal on xv.signals (status ``signal``, reason ``manual``, signal id
  ``xv:<strategy>:manual:<command_id>``: the pair id and the legs' client order ids derive from it as
  for any signal) with the entry re-checked on the books (``signals.recheck``: the executable spread,
  VWAPs, sweep cost; the strategy's triggers, cooldowns and opens-per-minute limit are the operator's to
  overrule), then ``HedgedPairs.open`` (or ``TimedPairs.open``: the legs travel) exactly as for a
  strategy's signal. Refused when the spread the desk showed (``shown_time``) is more than
  ``MAX_COMMAND_AGE_MS`` older than the clock, or a venue is not the strategy's;
- ``close``: ``HedgedPairs.close(pair_id, "manual", ...)``, the exit rules' own path, with close reason
  ``manual``. Refused when the coin's model has no such pair or the pair is not open; a close a stale
  book blocks leaves the pair open and is refused with the reason.

Every command gets one answer (kind ``command``, topic xv.commands: status ``done`` or ``rejected``, the
time it acted at, what it did or why not). Pure like the rest: the answer depends only on the inputs
fed before the command, so a trader restored from a checkpoint taken before the command gives the same
records (the watchlist service checkpoints right after each command, so a restart never reads one it
applied again). The watchlist backtest replays the strategy, not its operator: it feeds no commands.

Why its own feature state rather than the watchlist service's: the strategy's features are swept
for its own order notional and judged by its own book age, which need not be the service's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from execution.hedged import HedgedPairs, LegRules, PairEntry, PairEvents, PairParams, VenueParams
from execution.instrument_rules import InstrumentRule, InstrumentRules
from execution.leg_fills import AT, model_from_dict, pair_model
from execution.watchlist_desk import MAX_COMMAND_AGE_MS as MAX_COMMAND_AGE_MS
from execution.watchlist_desk import CommandDesk
from execution.watchlist_desk import manual_signal_id as manual_signal_id
from stream_apps.cross_venue.events import BookEvent, CrossVenueEvent, FundingEvent, event_from_record
from stream_apps.cross_venue.state import CoinFeatures, CrossVenueParams, CrossVenueState
from stream_apps.watchlist.model import PairModel
from stream_apps.watchlist.records import feature_records
from stream_apps.watchlist.signals import BP, WatchlistSignals
from stream_apps.watchlist.strategy import Legs, WatchlistStrategy

#: record kind -> the topic it is published to (``blocked`` exits are counted, not published)
TOPICS: Mapping[str, str] = {
    "signal": "xv.signals",
    "order": "xv.orders",
    "funding": "xv.funding",
    "pair": "xv.pairs",
    "command": "xv.commands",
}
STATE_VERSION = 1
COMMANDS_TOPIC = "xv.commands"


def cross_venue_params(strategy: WatchlistStrategy, **overrides: Any) -> CrossVenueParams:
    """The feature state for a strategy: its venues, swept for its order notional, its staleness."""
    values: dict[str, Any] = {
        "venues": tuple(strategy.venues),
        "sweep_notional_usd": strategy.notional_usd,
        "max_staleness_ms": strategy.max_book_age,
    }
    return CrossVenueParams(**(values | overrides))


def pair_params(strategy: WatchlistStrategy, leg_latency_ms: int | None = None) -> PairParams:
    """The hedged pair model for a strategy: its notional, fees per venue, book age and exits; its
    ``legs`` (leg timing, ``execution.leg_fills``) when it has them or `leg_latency_ms` is given (then
    every venue's latency is that: a what-if run), otherwise the instant model."""
    legs = strategy.legs
    if legs is None and leg_latency_ms is not None:
        legs = Legs()
    timing: dict[str, Any] = {}
    rules = None
    if legs is not None:
        entry_bp = legs.min_entry_spread_bp
        if entry_bp is None:
            entry_bp = strategy.triggers.min_net_spread_bp or 0.0
        rules = LegRules(
            min_entry_spread=entry_bp * BP,
            retries=legs.retries,
            retry_step_bp=legs.retry_step_bp,
            sequential=legs.sequential,
        )
        timing = {"liquidation_fee": legs.liquidation_fee}

    def venue(name: str | None, fee: float) -> VenueParams:
        if rules is None:
            return VenueParams(taker_fee=fee, max_book_age_ms=strategy.max_book_age)
        latency = (
            leg_latency_ms
            if leg_latency_ms is not None
            else (legs.latency(name) if name is not None else legs.default_latency_ms)
        )
        return VenueParams(taker_fee=fee, max_book_age_ms=strategy.max_book_age, latency_ms=latency, **timing)

    venues = {v: venue(v, strategy.fees.of(v)) for v in strategy.venues}
    x = strategy.exits
    return PairParams(
        notional_usd=strategy.notional_usd,
        venues=venues,
        default_venue=venue(None, strategy.fees.default),
        leverage=x.leverage,
        exit_spread=x.exit_spread_bp * BP,
        max_holding_ms=x.max_holding,
        funding_lead_ms=x.funding_lead,
        funding_exit_threshold=x.funding_exit_threshold,
        min_liquidation_distance=x.min_liquidation_distance,
        legs=rules,
    )


def coin_pair_params(
    strategy: WatchlistStrategy,
    coin: str,
    rules: InstrumentRules,
    quotes: Iterable[str] = ("USDT",),
    leg_latency_ms: int | None = None,
) -> tuple[PairParams, list[str]]:
    """``pair_params(strategy)`` with each venue's lot step, minimum order size and minimum notional
    of `coin`'s listing there (``InstrumentRules.for_coin``, in coins), and the venues without one."""
    base = pair_params(strategy, leg_latency_ms)
    venues: dict[str, VenueParams] = {}
    missing = []
    for venue in strategy.venues:
        params = base.venue(venue)
        rule: InstrumentRule | None = rules.for_coin(venue, coin, tuple(quotes))
        if rule is None:
            missing.append(venue)
        else:
            params = replace(params, **rule.hedged_params())
        venues[venue] = params
    return replace(base, venues=venues), missing


def _event_to_dict(event: BookEvent | FundingEvent) -> dict[str, Any]:
    if isinstance(event, BookEvent):
        return {
            "kind": "book",
            "exchange": event.exchange,
            "symbol": event.symbol,
            "time_ms": event.time_ms,
            "bids": [list(level) for level in event.bids],
            "asks": [list(level) for level in event.asks],
        }
    return {
        "kind": "funding",
        "exchange": event.exchange,
        "symbol": event.symbol,
        "time_ms": event.time_ms,
        "funding_rate": event.funding_rate,
        "next_funding_time_ms": event.next_funding_time_ms,
        "interval_ms": event.interval_ms,
    }


def _event_from_dict(data: Mapping[str, Any]) -> BookEvent | FundingEvent:
    if data["kind"] == "book":
        return BookEvent(
            data["exchange"],
            data["symbol"],
            data["time_ms"],
            tuple(tuple(lv) for lv in data["bids"]),
            tuple(tuple(lv) for lv in data["asks"]),
        )
    return FundingEvent(
        data["exchange"],
        data["symbol"],
        data["time_ms"],
        data["funding_rate"],
        data["next_funding_time_ms"],
        data["interval_ms"],
    )


class WatchlistTrader:
    """Feed events (or ``(topic, record)`` pairs) in event-time order with ``feed``; ``advance_to`` a
    watermark when wanted; ``take`` the records of what happened since the last ``take``."""

    topics: Mapping[str, str] = TOPICS

    def __init__(
        self,
        strategy: WatchlistStrategy,
        model: PairModel | None = None,
        params: CrossVenueParams | None = None,
        rules: InstrumentRules | None = None,
        leg_latency_ms: int | None = None,
    ) -> None:
        self.strategy = strategy
        self.rules = rules
        self.leg_latency_ms = leg_latency_ms
        self.model = model
        self.params = params or cross_venue_params(strategy)
        if self.params.sweep_notional_usd != strategy.notional_usd:
            raise ValueError("the features must be swept for the strategy's notional_usd")
        if strategy.eval_interval % self.params.eval_interval_ms:
            raise ValueError("the strategy's eval_interval must be a multiple of the features' eval_interval_ms")
        self.state = CrossVenueState(self.params)
        self.signals = WatchlistSignals(strategy, model)
        self.pair_params = pair_params(strategy, leg_latency_ms)
        self.models: dict[str, HedgedPairs] = {}
        self.books: dict[str, dict[str, BookEvent]] = {}
        self.funding: dict[str, dict[str, FundingEvent]] = {}
        self.settled: set[tuple[str, str, int]] = set()  # (coin, venue, funding time)
        self.forecast: dict[tuple[str, str, int], float] = {}  # (coin, venue, funding time) -> first rate announced
        self.pair_seq: dict[str, int] = {}  # pair id -> snapshots emitted
        self.evaluations = 0
        self.counters = {"signal": 0, "order": 0, "funding": 0, "pair": 0, "blocked": 0, "command": 0}
        self.clock: int | None = None  # event time of the newest input fed (where commands act)
        self.desk = CommandDesk(self)  # the operator's commands (xv.commands)
        if rules is not None:
            self.counters["no_instrument_rules"] = 0  # (coin, venue) pairs traded unrounded: no rule
        self.coin_params: dict[str, PairParams] = {}
        self.missing_rules: set[tuple[str, str]] = set()  # (coin, venue) without a rule
        self.outbox: list[tuple[str, str, dict[str, Any]]] = []
        self._coins: dict[tuple[str, str], str | None] = {}

    @property
    def commands(self) -> set[str]:
        """Command ids acted on or refused: a command acts once."""
        return self.desk.seen

    @property
    def pending(self) -> list[dict[str, Any]]:
        """Commands waiting for the clock to reach their shown_time."""
        return self.desk.pending

    @property
    def name(self) -> str:
        return f"{self.strategy.name}:{self.strategy.version}:{self.strategy.config_hash[:12]}"

    def fingerprint(self) -> str:
        """What the state depends on: restored only under the same strategy, model and parameters."""
        model = None if self.model is None else self.strategy.model
        what: tuple = (self.strategy.config_hash, model, self.params, STATE_VERSION)
        if self.leg_latency_ms is not None:  # a what-if latency; without one the fingerprint is what it was
            what += (self.leg_latency_ms,)
        return hashlib.sha256(repr(what).encode()).hexdigest()[:16]

    # -- input -------------------------------------------------------------------------------------
    def feed(self, items: Iterable[CrossVenueEvent | tuple[str, Mapping[str, Any]]]) -> None:
        interval = self.params.eval_interval_ms
        for item in items:
            if isinstance(item, tuple) and item[0] == COMMANDS_TOPIC:
                self.command(item[1])
                continue
            event = event_from_record(*item) if isinstance(item, tuple) else item
            if event is None:
                continue
            if self.clock is None or event.time_ms > self.clock:
                self.clock = event.time_ms
            nxt = self.state.next_eval
            late = nxt is not None and event.time_ms <= nxt - interval
            for features in self.state.feed([event]):
                self._evaluate(features)
            if not late:
                self._run_due(event.time_ms - 1)  # legs in flight meet the books as they are before this one
                self._remember(event)
            if self.desk.pending:
                self.desk.release()

    def advance_to(self, watermark_ms: int) -> None:
        for features in self.state.advance_to(watermark_ms):
            self._evaluate(features)
        self._run_due(watermark_ms)

    def _run_due(self, until_ms: int) -> None:
        """Leg orders (``execution.leg_fills``) that arrive or answer by `until_ms`, per coin."""
        for coin, model in self.models.items():
            if getattr(model, "pending", None):
                self._collect(coin, until_ms, model.run_due(until_ms, self.books.get(coin, {})))

    def take(self) -> list[tuple[str, str, dict[str, Any]]]:
        """The records queued since the last call, in order: ``(kind, coin, record)``."""
        out, self.outbox = self.outbox, []
        return out

    def _remember(self, event: CrossVenueEvent) -> None:
        key = (event.exchange, event.symbol)
        coin = self._coins.get(key, "")
        if coin == "":
            inst, _ = self.params.watched(*key)  # the features' rule: same coins, same legs
            coin = self._coins[key] = inst.coin if inst is not None else None
        if coin is None:
            return
        if isinstance(event, BookEvent):
            books = self.books.setdefault(coin, {})
            held = books.get(event.exchange)
            if held is None or (held.symbol == event.symbol and event.time_ms >= held.time_ms):
                books[event.exchange] = event
        elif isinstance(event, FundingEvent):
            if not math.isfinite(event.funding_rate):  # a null/NaN rate (KuCoin's predicted rate) is no rate
                self.counters["unusable_funding"] = self.counters.get("unusable_funding", 0) + 1
                return
            funding = self.funding.setdefault(coin, {})
            held = funding.get(event.exchange)
            if (
                held is not None
                and held.symbol == event.symbol
                and event.time_ms >= held.time_ms
                and held.next_funding_time_ms < event.next_funding_time_ms
            ):
                self._settle(coin, held, event.time_ms)  # a settlement no evaluation reached yet
            if held is None or (held.symbol == event.symbol and event.time_ms >= held.time_ms):
                funding[event.exchange] = event
                self.forecast.setdefault((coin, event.exchange, event.next_funding_time_ms), event.funding_rate)

    # -- per evaluation ----------------------------------------------------------------------------
    def _model(self, coin: str) -> HedgedPairs:
        model = self.models.get(coin)
        if model is None:
            model = self.models[coin] = pair_model(self._coin_params(coin, count=True))
        return model

    def _coin_params(self, coin: str, count: bool = False) -> PairParams:
        """The hedged model's parameters for `coin`: the strategy's, with the coin's venue rules."""
        if self.rules is None:
            return self.pair_params
        params = self.coin_params.get(coin)
        if params is None:
            params, missing = coin_pair_params(self.strategy, coin, self.rules, self.params.quotes, self.leg_latency_ms)
            self.coin_params[coin] = params
            fresh = {(coin, venue) for venue in missing} - self.missing_rules
            self.missing_rules |= fresh
            if count:
                self.counters["no_instrument_rules"] += len(fresh)
        return params

    def _emit(self, kind: str, coin: str, record: dict[str, Any]) -> None:
        self.counters[kind] += 1
        self.outbox.append((kind, coin, record))

    def _collect(self, coin: str, now_ms: int, events: PairEvents) -> None:
        for order in events.orders:
            self._emit("order", coin, order.to_record() | {"coin": coin})
        for payment in events.funding:
            self._emit("funding", coin, payment.to_record() | {"coin": coin})
        for snapshot in events.positions:
            pid = snapshot["pair_id"]
            seq = self.pair_seq[pid] = self.pair_seq.get(pid, 0) + 1
            at = snapshot.pop(AT, now_ms)  # a leg step's own time (execution.leg_fills)
            self._emit("pair", coin, snapshot | {"seq": seq, "event_time": at})
        for blocked in events.blocked:
            self._emit("blocked", coin, dict(blocked))

    def _settle(self, coin: str, announced: FundingEvent, now_ms: int) -> None:
        t = announced.next_funding_time_ms
        key = (coin, announced.exchange, t)
        if t > now_ms or key in self.settled:
            return
        self.settled.add(key)
        predicted = self.forecast.pop(key, None)
        book = self.books.get(coin, {}).get(announced.exchange)
        if book is None or not book.bids or not book.asks:
            return
        mark = (book.bids[0][0] + book.asks[0][0]) / 2
        self._collect(
            coin,
            now_ms,
            self._model(coin).settle_funding(
                announced.exchange, announced.symbol, t, announced.funding_rate, mark, predicted
            ),
        )

    def _evaluate(self, features: CoinFeatures) -> None:
        e, coin = features.time_ms, features.coin
        self.evaluations += 1
        books = self.books.get(coin, {})
        model = self._model(coin)
        for announced in list(self.funding.get(coin, {}).values()):
            self._settle(coin, announced, e)
        self._collect(coin, e, model.evaluate(e, books, self.funding.get(coin, {})))
        if e % self.strategy.eval_interval or not self.strategy.applies_to(coin):
            return
        records = feature_records(features, self.params.sweep_notional_usd)
        for signal in self.signals.evaluate(records, books, e, model.active_by_key, model.last_closed):
            self._emit("signal", coin, signal)
            if signal["status"] != "signal":
                continue
            entry = PairEntry(
                signal["signal_id"],
                signal["sell_venue"],
                signal["sell_symbol"],
                signal["buy_venue"],
                signal["buy_symbol"],
                self.strategy.notional_usd,
            )
            self._collect(coin, e, model.open(entry, e, books))

    # -- operator commands (xv.commands) -------------------------------------------------------------
    def command(self, record: Mapping[str, Any]) -> None:
        """Apply one command of the desk (see the module docstring and ``execution.watchlist_desk``): a
        request for another strategy, or an answer, is not for this trader; a command seen before does
        nothing."""
        self.desk.receive(record)

    def close_open_pairs(self, reason: str = "end_of_session") -> None:
        """Close every open pair at its coin's newest book time (the end of a backtest)."""
        for coin, model in self.models.items():
            books = self.books.get(coin, {})
            now = max((b.time_ms for b in books.values()), default=None)  # the session's last moment
            if now is None:
                continue
            self._collect(coin, now, model.close_all(reason, now, books))

    # -- state as plain data -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-safe (the queued records are not in it: ``take`` them first)."""
        return {
            "version": STATE_VERSION,
            "state": self.state.to_dict(),
            "signals": self.signals.to_dict(),
            "models": {coin: model.to_dict() for coin, model in self.models.items()},
            "books": {coin: {v: _event_to_dict(b) for v, b in books.items()} for coin, books in self.books.items()},
            "funding": {coin: {v: _event_to_dict(f) for v, f in fs.items()} for coin, fs in self.funding.items()},
            "settled": sorted([list(k) for k in self.settled]),
            "pair_seq": dict(self.pair_seq),
            "forecast": sorted([*k, v] for k, v in self.forecast.items()),
            "evaluations": self.evaluations,
            "counters": dict(self.counters),
            "clock": self.clock,
            "commands": sorted(self.desk.seen),
            "pending_commands": [dict(r) for r in self.desk.pending],
        }

    def load_dict(self, data: Mapping[str, Any]) -> None:
        """Continue exactly where the trader that wrote `data` (with the same strategy) stopped."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"watchlist trader state version {data.get('version')!r}, expected {STATE_VERSION}")
        self.state = CrossVenueState.from_dict(self.params, data["state"])
        self.signals = WatchlistSignals.from_dict(self.strategy, self.model, data["signals"])
        self.models = {coin: model_from_dict(self._coin_params(coin), m) for coin, m in data["models"].items()}
        self.books = {
            coin: {v: _event_from_dict(b) for v, b in books.items()}  # type: ignore[misc]
            for coin, books in data["books"].items()
        }
        self.funding = {
            coin: {v: _event_from_dict(f) for v, f in fs.items()}  # type: ignore[misc]
            for coin, fs in data["funding"].items()
        }
        self.settled = {(c, v, int(t)) for c, v, t in data["settled"]}
        self.forecast = {(c, v, int(t)): rate for c, v, t, rate in data.get("forecast", [])}
        self.pair_seq = dict(data["pair_seq"])
        self.evaluations = data["evaluations"]
        self.counters.update(data["counters"])
        self.clock = data.get("clock")
        self.desk.seen = set(data.get("commands", []))
        self.desk.pending = [dict(r) for r in data.get("pending_commands", [])]
        self.outbox = []

    @classmethod
    def from_dict(
        cls,
        strategy: WatchlistStrategy,
        model: PairModel | None,
        data: Mapping[str, Any],
        params: CrossVenueParams | None = None,
        rules: InstrumentRules | None = None,
        leg_latency_ms: int | None = None,
    ) -> WatchlistTrader:
        trader = cls(strategy, model, params, rules=rules, leg_latency_ms=leg_latency_ms)
        trader.load_dict(data)
        return trader
