"""The watchlist backtest: a recorded multi-venue session (books, funding, spot of two or three venues,
time-ordered) through the same cross-venue feature state as the live service
(``stream_apps.cross_venue.state``), the strategy's triggers and re-check (``stream_apps.watchlist.signals``)
and the hedged pair paper model (``execution.hedged``). Pure and in process: no broker, no database, no
clock; the same input gives the same signals and pairs however it is batched (tested).

At each evaluation of a coin (event time ``e``, every ``eval_interval_ms`` of the state), with the
coin's newest book per venue at ``e`` (exactly what the state's evaluation saw):

1. funding: every settlement time ``T <= e`` a venue announced (its newest funding event before ``T``)
   is settled once on the pairs open at ``T`` (``HedgedPairs.settle_funding``), at that rate and the
   mid of the venue's newest book as the mark;
2. exits: ``HedgedPairs.evaluate(e, books, funding)`` (liquidation, convergence, funding, max holding,
   and retried unwinds);
3. entries: on the strategy's grid, the xv.features records of the evaluation go through the strategy
   (``WatchlistSignals.evaluate``); each ``signal`` opens a pair (``HedgedPairs.open``) against the same
   books, so a leg that cannot fill is unwound as it would be live.

One ``HedgedPairs`` per coin: the model takes one book per venue, and a coin's pairs only need its own.
At the end, pairs still open are closed at the time of their coin's newest book (``end_of_session``)
when both books are fresh then (``close_at_end``), otherwise reported open with the blocked exit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from execution.hedged import HedgedPairs, PairEntry, PairEvents, PairParams, VenueParams
from stream_apps.cross_venue.events import BookEvent, CrossVenueEvent, FundingEvent, event_from_record
from stream_apps.cross_venue.state import CoinFeatures, CrossVenueParams, CrossVenueState
from stream_apps.cross_venue.symbols import SymbolError, instrument
from stream_apps.watchlist.model import PairModel
from stream_apps.watchlist.records import feature_records
from stream_apps.watchlist.signals import BP, WatchlistSignals
from stream_apps.watchlist.strategy import WatchlistStrategy


def cross_venue_params(strategy: WatchlistStrategy, **overrides: Any) -> CrossVenueParams:
    """The feature state for a strategy: its venues, swept for its order notional, its staleness."""
    values: dict[str, Any] = {"venues": tuple(strategy.venues), "sweep_notional_usd": strategy.notional_usd,
                              "max_staleness_ms": strategy.max_book_age}
    return CrossVenueParams(**(values | overrides))


def pair_params(strategy: WatchlistStrategy) -> PairParams:
    """The hedged pair model for a strategy: its notional, fees per venue, book age and exits."""
    venues = {v: VenueParams(taker_fee=strategy.fees.of(v), max_book_age_ms=strategy.max_book_age)
              for v in strategy.venues}
    x = strategy.exits
    return PairParams(notional_usd=strategy.notional_usd, venues=venues,
                      default_venue=VenueParams(taker_fee=strategy.fees.default, max_book_age_ms=strategy.max_book_age),
                      leverage=x.leverage, exit_spread=x.exit_spread_bp * BP, max_holding_ms=x.max_holding,
                      funding_lead_ms=x.funding_lead, funding_exit_threshold=x.funding_exit_threshold,
                      min_liquidation_distance=x.min_liquidation_distance)


@dataclass
class BacktestResult:
    signals: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    funding: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # the last record of every pair, in order
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "pairs": self.pairs, "signals": self.signals, "orders": self.orders,
                "funding": self.funding, "blocked": self.blocked}


class WatchlistBacktest:
    """Feed events (or ``(topic, record)`` pairs) in event-time order with ``feed``; ``advance_to`` a
    watermark when wanted; ``finish`` for the result."""

    def __init__(self, strategy: WatchlistStrategy, model: PairModel | None = None,
                 params: CrossVenueParams | None = None, close_at_end: bool = True) -> None:
        self.strategy = strategy
        self.params = params or cross_venue_params(strategy)
        if self.params.sweep_notional_usd != strategy.notional_usd:
            raise ValueError("the features must be swept for the strategy's notional_usd")
        if strategy.eval_interval % self.params.eval_interval_ms:
            raise ValueError("the strategy's eval_interval must be a multiple of the features' eval_interval_ms")
        self.state = CrossVenueState(self.params)
        self.signals = WatchlistSignals(strategy, model)
        self.pair_params = pair_params(strategy)
        self.close_at_end = close_at_end
        self.models: dict[str, HedgedPairs] = {}
        self.books: dict[str, dict[str, BookEvent]] = {}
        self.funding: dict[str, dict[str, FundingEvent]] = {}
        self.settled: set[tuple[str, str, int]] = set()  # (coin, venue, funding time)
        self.result = BacktestResult()
        self.evaluations = 0
        self._coins: dict[tuple[str, str], str | None] = {}

    # -- input -------------------------------------------------------------------------------------
    def feed(self, items: Iterable[CrossVenueEvent | tuple[str, Mapping[str, Any]]]) -> None:
        interval = self.params.eval_interval_ms
        for item in items:
            event = event_from_record(*item) if isinstance(item, tuple) else item
            if event is None:
                continue
            nxt = self.state.next_eval
            late = nxt is not None and event.time_ms <= nxt - interval
            for features in self.state.feed([event]):
                self._evaluate(features)
            if not late:
                self._remember(event)

    def advance_to(self, watermark_ms: int) -> None:
        for features in self.state.advance_to(watermark_ms):
            self._evaluate(features)

    def _remember(self, event: CrossVenueEvent) -> None:
        key = (event.exchange, event.symbol)
        coin = self._coins.get(key, "")
        if coin == "":
            try:
                inst = instrument(*key)
                ok = inst.kind == "perp" and inst.quote in self.params.quotes and event.exchange in self.params.venues
                coin = inst.coin if ok else None
            except SymbolError:
                coin = None
            self._coins[key] = coin
        if coin is None:
            return
        if isinstance(event, BookEvent):
            books = self.books.setdefault(coin, {})
            held = books.get(event.exchange)
            if held is None or (held.symbol == event.symbol and event.time_ms >= held.time_ms):
                books[event.exchange] = event
        elif isinstance(event, FundingEvent):
            funding = self.funding.setdefault(coin, {})
            held = funding.get(event.exchange)
            if held is not None and held.symbol == event.symbol and event.time_ms >= held.time_ms \
                    and held.next_funding_time_ms < event.next_funding_time_ms:
                self._settle(coin, held, event.time_ms)  # a settlement no evaluation reached yet
            if held is None or (held.symbol == event.symbol and event.time_ms >= held.time_ms):
                funding[event.exchange] = event

    # -- per evaluation ----------------------------------------------------------------------------
    def _model(self, coin: str) -> HedgedPairs:
        model = self.models.get(coin)
        if model is None:
            model = self.models[coin] = HedgedPairs(self.pair_params)
        return model

    def _collect(self, events: PairEvents) -> None:
        r = self.result
        r.orders += [o.to_record() for o in events.orders]
        r.funding += [p.to_record() for p in events.funding]
        r.blocked += events.blocked

    def _settle(self, coin: str, announced: FundingEvent, now_ms: int) -> None:
        t = announced.next_funding_time_ms
        key = (coin, announced.exchange, t)
        if t > now_ms or key in self.settled:
            return
        self.settled.add(key)
        book = self.books.get(coin, {}).get(announced.exchange)
        if book is None or not book.bids or not book.asks:
            return
        mark = (book.bids[0][0] + book.asks[0][0]) / 2
        self._collect(self._model(coin).settle_funding(announced.exchange, announced.symbol, t,
                                                       announced.funding_rate, mark))

    def _evaluate(self, features: CoinFeatures) -> None:
        e, coin = features.time_ms, features.coin
        self.evaluations += 1
        books = self.books.get(coin, {})
        model = self._model(coin)
        for announced in list(self.funding.get(coin, {}).values()):
            self._settle(coin, announced, e)
        self._collect(model.evaluate(e, books, self.funding.get(coin, {})))
        if e % self.strategy.eval_interval or not self.strategy.applies_to(coin):
            return
        records = feature_records(features, self.params.sweep_notional_usd)
        for signal in self.signals.evaluate(records, books, e, model.active_by_key):
            self.result.signals.append(signal)
            if signal["status"] != "signal":
                continue
            entry = PairEntry(signal["signal_id"], signal["sell_venue"], signal["sell_symbol"], signal["buy_venue"],
                              signal["buy_symbol"], self.strategy.notional_usd)
            self._collect(model.open(entry, e, books))

    # -- the end -----------------------------------------------------------------------------------
    def finish(self, end_ms: int | None = None) -> BacktestResult:
        """Evaluate through `end_ms` (default: every point the fed events reach), close what is open
        when ``close_at_end``, and summarise."""
        nxt = self.state.next_eval
        if end_ms is None and nxt is not None:
            newest = max((b.time_ms for books in self.books.values() for b in books.values()), default=nxt)
            end_ms = newest
        if end_ms is not None:
            self.advance_to(end_ms)
        for coin, model in self.models.items():
            books = self.books.get(coin, {})
            now = max((b.time_ms for b in books.values()), default=None)  # the session's last moment
            for pid, pair in list(model.pairs.items()):
                if self.close_at_end and pair.status == "open" and now is not None:
                    self._collect(model.close(pid, "end_of_session", now, books))
        self.result.pairs = [pair.to_record() for model in self.models.values() for pair in model.pairs.values()]
        self.result.pairs.sort(key=lambda p: (p["opened_ms"], p["pair_id"]))
        self.result.summary = summarise(self.result, self)
        return self.result


def summarise(result: BacktestResult, run: WatchlistBacktest | None = None) -> dict[str, Any]:
    """Counts and pnl (USDT, net of four fees, slippage and funding) by status and close reason."""
    pairs = result.pairs
    closed = [p for p in pairs if p["status"] == "closed"]
    failed = [p for p in pairs if p["status"] == "failed"]
    traded = closed + failed
    totals = {k: math.fsum(p[k] for p in traded) for k in ("gross_usd", "fees_usd", "slippage_usd", "funding_usd",
                                                           "net_usd")}
    by_reason: dict[str, dict[str, float]] = {}
    for p in traded:
        slot = by_reason.setdefault(p["close_reason"] or p["status"], {"pairs": 0, "net_usd": 0.0})
        slot["pairs"] += 1
        slot["net_usd"] += p["net_usd"]
    wins = [p for p in closed if p["net_usd"] > 0]
    summary: dict[str, Any] = {
        "signals": sum(s["status"] == "signal" for s in result.signals),
        "rejected": sum(s["status"] == "rejected" for s in result.signals),
        "pairs": len(pairs), "closed": len(closed), "failed": len(failed),
        "open": sum(p["status"] in ("open", "unwinding") for p in pairs),
        "refused": sum(p["status"] == "rejected" for p in pairs),
        **totals,
        "win_rate": len(wins) / len(closed) if closed else None,
        "mean_net_bp": (math.fsum(p["net_usd"] / p["notional_usd"] for p in closed) / len(closed) / 1e-4
                        if closed else None),
        "by_close_reason": dict(sorted(by_reason.items())),
        "blocked_exits": len(result.blocked), "funding_payments": len(result.funding),
    }
    if run is not None:
        summary["evaluations"] = run.evaluations
        summary["feature_counters"] = dict(run.state.counters)
        summary["signal_counters"] = dict(run.signals.counters)
    return summary


def run_backtest(strategy: WatchlistStrategy, events: Iterable[CrossVenueEvent | tuple[str, Mapping[str, Any]]],
                 model: PairModel | None = None, params: CrossVenueParams | None = None,
                 close_at_end: bool = True) -> BacktestResult:
    """A whole session in one call."""
    run = WatchlistBacktest(strategy, model, params, close_at_end)
    run.feed(events)
    return run.finish()
