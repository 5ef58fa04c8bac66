"""The watchlist backtest: a recorded multi-venue session (books, funding, spot of two or three venues,
time-ordered) through the live watchlist trader (``execution.watchlist_trader``: the same cross-venue
feature state, the strategy's triggers and re-check and the hedged pair paper model as the live
service runs), with what it did collected into a ``BacktestResult``. Pure and in process: no
broker, no database, no clock; the same input gives the same signals and pairs however it is batched
(tested), and the same as the live service on the same topics (tested through the broker).

At the end, pairs still open are closed at the time of their coin's newest book (``end_of_session``)
when both books are fresh then (``close_at_end``), otherwise reported open with the blocked exit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from execution.instrument_rules import InstrumentRules
from execution.watchlist_trader import WatchlistTrader, cross_venue_params, pair_params
from stream_apps.cross_venue.events import CrossVenueEvent
from stream_apps.cross_venue.state import CrossVenueParams
from stream_apps.watchlist.model import PairModel
from stream_apps.watchlist.strategy import WatchlistStrategy

#: the parts of a pair's pnl: net = gross - fees - slippage (the sweep) - funding - leg_latency - liquidation
PNL_PARTS = ("gross_usd", "fees_usd", "slippage_usd", "funding_usd", "leg_latency_usd", "liquidation_usd", "net_usd")

__all__ = [
    "PNL_PARTS",
    "BacktestResult",
    "WatchlistBacktest",
    "cross_venue_params",
    "pair_params",
    "run_backtest",
    "summarise",
]


@dataclass
class BacktestResult:
    signals: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    funding: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)  # the last record of every pair, in order
    summary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "pairs": self.pairs,
            "signals": self.signals,
            "orders": self.orders,
            "funding": self.funding,
            "blocked": self.blocked,
        }


class WatchlistBacktest(WatchlistTrader):
    """The live trader (``execution.watchlist_trader``) with its records collected into a
    ``BacktestResult``: feed events (or ``(topic, record)`` pairs) in event-time order with ``feed``;
    ``advance_to`` a watermark when wanted; ``finish`` for the result."""

    def __init__(
        self,
        strategy: WatchlistStrategy,
        model: PairModel | None = None,
        params: CrossVenueParams | None = None,
        close_at_end: bool = True,
        rules: InstrumentRules | None = None,
        leg_latency_ms: int | None = None,
    ) -> None:
        super().__init__(strategy, model, params, rules, leg_latency_ms)
        self.close_at_end = close_at_end
        self.result = BacktestResult()
        self._lists = {
            "signal": self.result.signals,
            "order": self.result.orders,
            "funding": self.result.funding,
            "blocked": self.result.blocked,
        }

    def _emit(self, kind: str, coin: str, record: dict[str, Any]) -> None:
        self.counters[kind] += 1
        target = self._lists.get(kind)
        if target is not None:  # pair snapshots: the last of each pair is read from the models at the end
            target.append(record)

    def finish(self, end_ms: int | None = None) -> BacktestResult:
        """Evaluate through `end_ms` (default: every point the fed events reach), close what is open
        when ``close_at_end``, and summarise."""
        nxt = self.state.next_eval
        if end_ms is None and nxt is not None:
            newest = max((b.time_ms for books in self.books.values() for b in books.values()), default=nxt)
            end_ms = newest
        if end_ms is not None:
            self.advance_to(end_ms)
        if self.close_at_end:
            self.close_open_pairs("end_of_session")
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
    totals = {k: math.fsum(p[k] for p in traded) for k in PNL_PARTS}
    by_reason: dict[str, dict[str, float]] = {}
    for p in traded:
        slot = by_reason.setdefault(p["close_reason"] or p["status"], {"pairs": 0, "net_usd": 0.0})
        slot["pairs"] += 1
        slot["net_usd"] += p["net_usd"]
    wins = [p for p in closed if p["net_usd"] > 0]
    summary: dict[str, Any] = {
        "signals": sum(s["status"] == "signal" for s in result.signals),
        "rejected": sum(s["status"] == "rejected" for s in result.signals),
        "pairs": len(pairs),
        "closed": len(closed),
        "failed": len(failed),
        "open": sum(p["status"] in ("opening", "open", "unwinding", "closing") for p in pairs),
        "refused": sum(p["status"] == "rejected" for p in pairs),
        **totals,
        "win_rate": len(wins) / len(closed) if closed else None,
        "mean_net_bp": (
            math.fsum(p["net_usd"] / p["notional_usd"] for p in closed) / len(closed) / 1e-4 if closed else None
        ),
        "by_close_reason": dict(sorted(by_reason.items())),
        "by_pair": by_pair(traded),
        "blocked_exits": len(result.blocked),
        "funding_payments": len(result.funding),
    }
    if run is not None:
        summary["evaluations"] = run.evaluations
        summary["feature_counters"] = dict(run.state.counters)
        summary["signal_counters"] = dict(run.signals.counters)
        if run.rules is not None:  # traded at the venues' lot steps; these (coin, venue) were not
            summary["no_instrument_rules"] = sorted(f"{coin}:{venue}" for coin, venue in run.missing_rules)
    return summary


def by_pair(pairs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per pair key (coin and the two venues): pairs traded and each part of their pnl."""
    out: dict[str, dict[str, float]] = {}
    for p in pairs:
        slot = out.setdefault(p["pair_key"], {"pairs": 0, **dict.fromkeys(PNL_PARTS, 0.0)})
        slot["pairs"] += 1
        for k in PNL_PARTS:
            slot[k] += p[k]
    return dict(sorted(out.items()))


def run_backtest(
    strategy: WatchlistStrategy,
    events: Iterable[CrossVenueEvent | tuple[str, Mapping[str, Any]]],
    model: PairModel | None = None,
    params: CrossVenueParams | None = None,
    close_at_end: bool = True,
    rules: InstrumentRules | None = None,
    leg_latency_ms: int | None = None,
) -> BacktestResult:
    """A whole session in one call (`rules`: the venues' lot steps and minimums, or None: unrounded;
    `leg_latency_ms`: every venue's leg latency, ``execution.leg_fills``, for a what-if run)."""
    run = WatchlistBacktest(strategy, model, params, close_at_end, rules, leg_latency_ms)
    run.feed(events)
    return run.finish()
