"""Watchlist signals: a ``kind: watchlist`` strategy applied to the xv.features records of one coin's
evaluation and the books of that moment. Pure and clock-injected (``now_ms`` is the evaluation's event
time; nothing reads a clock), so the live service and the backtest give the same signals.

Per evaluation on the strategy's grid (``now_ms % eval_interval == 0``), per ordered venue pair
(sell on the rich venue, buy on the cheap one) of the strategy's coins and venues:

1. triggers (``strategy.Triggers``) on the feature record: z-score of the swept spread against its
   1 h window, executable spread after four fees, funding difference on 8 h; every one set must hold.
   A pair whose trigger inputs are missing does not fire (counted by reason).
2. cooldown: a coin and pair of venues (either direction) that signalled within ``cooldown``, that
   holds a pair now (``held``), or whose last pair closed or failed within ``reentry_cooldown``
   (``closed``), does not fire again (counted). Candidates are taken best net
   spread first, so one direction per pair.
3. re-check at the moment of entry against the books themselves: both books at most ``max_book_age``
   old and ``max_leg_skew`` apart, each swept for the order notional (sell into the sell venue's bids,
   buy from the buy venue's asks), the executable spread after four fees again at or above
   ``min_net_spread_bp`` (a spread from stale or thin books is not tradable: the users' lesson).
4. the cap: with ``max_opens_per_minute``, a candidate that passed 3 is rejected while that many
   signals (each opens a pair) were given in the last 60 s of event time, over every coin.
5. the model, when the strategy names one: expected pnl and win probability at or above the minimums;
   a missing factor is imputed or makes the prediction missing with the reason (``model``).

A candidate that passes is a record with ``status="signal"``; one that fails 3, 4 or 5 a record with
``status="rejected"`` and the reason, so every decision can be reviewed. Ids are deterministic:
``xv:<name>:<version>:<config hash 12>:<coin>:<sell>><buy>:<eval time>``, so the leg orders' client ids
(``execution.client_ids``, derived from it) are the same on a re-run: idempotent.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stream_apps.cross_venue.events import BookEvent
from stream_apps.cross_venue.sweep import BUY, SELL, sweep
from stream_apps.cross_venue.symbols import SymbolError, instrument
from stream_apps.watchlist.model import PairModel
from stream_apps.watchlist.strategy import WatchlistStrategy

BP = 1e-4


def signal_id(strategy: WatchlistStrategy, coin: str, sell_venue: str, buy_venue: str, eval_time_ms: int) -> str:
    return f"xv:{strategy.version_hash}:{coin}:{sell_venue}>{buy_venue}:{eval_time_ms}"


def pair_of(coin: str, venue_a: str, venue_b: str) -> str:
    low, high = sorted((venue_a, venue_b))
    return f"{coin}:{low}/{high}"


def z_score(record: Mapping[str, Any], min_samples: int) -> tuple[float | None, str | None]:
    """``(spread_sweep − mean_1h) / std_1h`` with at least `min_samples` samples in the 1 h window."""
    s = record.get("spread_sweep")
    if s is None:
        return None, (record.get("missing") or {}).get("spread_sweep") or "spread_sweep missing"
    stats = record.get("stats") or {}
    n, mean, std = stats.get("sweep_1h_n") or 0, stats.get("sweep_1h_mean"), stats.get("sweep_1h_std")
    if n < min_samples or mean is None or not std:
        return None, f"1 h window has {int(n)} samples, needs {min_samples}"
    return (s - mean) / std, None


@dataclass(frozen=True)
class TriggerCheck:
    fired: bool
    z: float | None
    net_spread: float | None  # swept spread minus four fees (fraction)
    funding_8h: float | None
    reason: str | None  # why it did not fire


def check_triggers(strategy: WatchlistStrategy, record: Mapping[str, Any]) -> TriggerCheck:
    """The strategy's triggers on one xv.features record (see the module docstring, step 1)."""
    t = strategy.triggers
    z, z_why = z_score(record, t.min_window_samples)
    s = record.get("spread_sweep")
    net = None if s is None else s - strategy.four_fees(record["sell_venue"], record["buy_venue"])
    funding = record.get("funding_diff_8h")
    checks = []
    if t.min_z is not None:
        checks.append(("z", z, t.min_z, z_why))
    if t.min_net_spread_bp is not None:
        checks.append(
            (
                "net spread",
                net,
                t.min_net_spread_bp * BP,
                (record.get("missing") or {}).get("spread_sweep") or "spread_sweep missing",
            )
        )
    if t.min_funding_diff_8h is not None:
        checks.append(
            (
                "funding diff 8h",
                funding,
                t.min_funding_diff_8h,
                (record.get("missing") or {}).get("funding_diff_8h") or "funding_diff_8h missing",
            )
        )
    for name, value, limit, why in checks:
        if value is None:
            return TriggerCheck(False, z, net, funding, f"{name} missing: {why}")
        if value < limit:
            return TriggerCheck(False, z, net, funding, f"{name} {value:.6g} below {limit:.6g}")
    return TriggerCheck(True, z, net, funding, None)


@dataclass(frozen=True)
class Recheck:
    spread: float | None  # log(sell VWAP / buy VWAP), per coin, for the order notional
    net_spread: float | None
    sell_vwap: float | None
    buy_vwap: float | None
    reason: str | None  # why the entry is not tradable now
    sweep_cost: float | None = None  # both legs' VWAP beyond their touch, a fraction of the price


def recheck(
    strategy: WatchlistStrategy, sell_venue: str, buy_venue: str, books: Mapping[str, BookEvent], now_ms: int
) -> Recheck:
    """The executable spread after fees for the order notional on the books at `now_ms` (step 3)."""
    prices: dict[str, float] = {}
    cost = 0.0
    times = []
    for venue, side in ((sell_venue, SELL), (buy_venue, BUY)):
        book = books.get(venue)
        if book is None:
            return Recheck(None, None, None, None, f"no book for {venue}")
        age = now_ms - book.time_ms
        if age < 0 or age > strategy.max_book_age:
            return Recheck(
                None,
                None,
                None,
                None,
                f"{venue} book {age / 1000:.1f} s old at entry, limit {strategy.max_book_age / 1000:.1f} s",
            )
        try:
            multiplier = instrument(venue, book.symbol).multiplier
        except SymbolError as error:
            return Recheck(None, None, None, None, str(error))
        swept = sweep(book.bids if side == SELL else book.asks, strategy.notional_usd, side)
        if swept.vwap is None:
            return Recheck(None, None, None, None, f"{venue}: {swept.reason}")
        prices[venue] = swept.vwap / multiplier
        touch = (book.bids if side == SELL else book.asks)[0][0]
        cost += (touch - swept.vwap) / touch if side == SELL else (swept.vwap - touch) / touch
        times.append(book.time_ms)
    spread = math.log(prices[sell_venue] / prices[buy_venue])
    net = spread - strategy.four_fees(sell_venue, buy_venue)
    skew = abs(times[0] - times[1])
    reason = None
    if skew > strategy.max_leg_skew:
        reason = f"books {skew} ms apart, limit {strategy.max_leg_skew} ms"
    elif strategy.triggers.min_net_spread_bp is not None and net < strategy.triggers.min_net_spread_bp * BP:
        reason = (
            f"executable spread after fees {net / BP:.2f} bp at entry, below {strategy.triggers.min_net_spread_bp:g} bp"
        )
    return Recheck(spread, net, prices[sell_venue], prices[buy_venue], reason, cost)


def expected_carry(
    strategy: WatchlistStrategy, sell_venue: str, buy_venue: str, funding_8h: float | None, sweep_cost: float | None
) -> dict[str, float | None]:
    """What the hedge is forecast to receive in funding per 8 h (``funding_8h`` x notional: from the
    venues' predicted rates, a forecast only) and the hours it needs to earn back four taker fees and
    both legs' entry sweeps, ``(four fees + sweep cost) / funding_8h x 8``; None when it receives
    nothing (or the inputs are missing)."""
    carry = None if funding_8h is None else funding_8h * strategy.notional_usd
    hours = None
    if funding_8h is not None and funding_8h > 0 and sweep_cost is not None:
        hours = (strategy.four_fees(sell_venue, buy_venue) + sweep_cost) / funding_8h * 8
    return {"expected_carry_8h_usd": carry, "entry_sweep_cost": sweep_cost, "break_even_hours": hours}


class WatchlistSignals:
    """One strategy's signal state: the cooldowns (plain data: ``to_dict``/``from_dict``) and counters."""

    def __init__(self, strategy: WatchlistStrategy, model: PairModel | None = None) -> None:
        if strategy.model is not None and model is None:
            raise ValueError(f"strategy {strategy.name} needs its model ({strategy.model.file})")
        self.strategy = strategy
        self.model = model
        self.last_signal: dict[str, int] = {}  # pair_of(...) -> eval time of its last signal
        self.recent: list[int] = []  # eval times of the signals of the last minute (max_opens_per_minute)
        self.counters: dict[str, int] = {
            "evaluated": 0,
            "not_fired": 0,
            "trigger_missing": 0,
            "cooldown": 0,
            "held": 0,
            "reentry_cooldown": 0,
            "signal": 0,
            "rejected": 0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"last_signal": dict(self.last_signal), "recent": list(self.recent), "counters": dict(self.counters)}

    @classmethod
    def from_dict(
        cls, strategy: WatchlistStrategy, model: PairModel | None, data: Mapping[str, Any]
    ) -> WatchlistSignals:
        state = cls(strategy, model)
        state.last_signal = dict(data["last_signal"])
        state.recent = list(data.get("recent", []))
        state.counters.update(data["counters"])
        return state

    def evaluate(
        self,
        records: Iterable[Mapping[str, Any]],
        books: Mapping[str, BookEvent],
        now_ms: int,
        held: Container[str] = (),
        closed: Mapping[str, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Signal records of one coin's evaluation at `now_ms` (its xv.features records and the coin's
        book per venue at that moment), in a deterministic order. `held`: the pair keys
        (``pair_of``, the hedged model's ``active_by_key``) that already hold a pair: not signalled
        again while they do (counted as ``held``). `closed`: pair key -> when its last pair closed
        or failed (the model's ``last_closed``): not signalled again within ``reentry_cooldown``."""
        s = self.strategy
        if now_ms % s.eval_interval:
            return []
        candidates = []
        for record in records:
            if (
                record["eval_time"] != now_ms
                or not s.applies_to(record["coin"])
                or record["sell_venue"] not in s.venues
                or record["buy_venue"] not in s.venues
            ):
                continue
            self.counters["evaluated"] += 1
            check = check_triggers(s, record)
            if not check.fired:
                self.counters["trigger_missing" if "missing" in (check.reason or "") else "not_fired"] += 1
                continue
            candidates.append((record, check))
        candidates.sort(
            key=lambda c: (
                -(c[1].net_spread if c[1].net_spread is not None else -math.inf),
                c[0]["sell_venue"],
                c[0]["buy_venue"],
            )
        )
        out = []
        for record, check in candidates:
            key = pair_of(record["coin"], record["sell_venue"], record["buy_venue"])
            if key in held:
                self.counters["held"] += 1
                continue
            last = self.last_signal.get(key)
            if last is not None and now_ms - last < s.cooldown:
                self.counters["cooldown"] += 1
                continue
            ended = (closed or {}).get(key)
            if ended is not None and now_ms - ended < s.reentry_cooldown:
                self.counters["reentry_cooldown"] += 1
                continue
            out.append(self._decide(record, check, books, now_ms, key))
        return out

    def _decide(
        self, record: Mapping[str, Any], check: TriggerCheck, books: Mapping[str, BookEvent], now_ms: int, key: str
    ) -> dict[str, Any]:
        s = self.strategy
        sell, buy, coin = record["sell_venue"], record["buy_venue"], record["coin"]
        entry = recheck(s, sell, buy, books, now_ms)
        reason = None if entry.reason is None else f"recheck: {entry.reason}"
        prediction = None
        if reason is None and self.model is not None and s.model is not None:
            prediction = self.model.predict(record, s.model.missing, s.model.max_imputed)
            if prediction.reason is not None:
                reason = f"model: {prediction.reason}"
            elif s.model.min_expected_pnl_bp is not None and prediction.expected_pnl < s.model.min_expected_pnl_bp * BP:
                reason = (
                    f"model: expected pnl {prediction.expected_pnl / BP:.2f} bp below "
                    f"{s.model.min_expected_pnl_bp:g} bp"
                )
            elif s.model.min_win_prob is not None and prediction.win_prob < s.model.min_win_prob:
                reason = f"model: win probability {prediction.win_prob:.3f} below {s.model.min_win_prob:g}"
        if reason is None and s.max_opens_per_minute is not None:
            self.recent = [t for t in self.recent if now_ms - t < 60_000]
            if len(self.recent) >= s.max_opens_per_minute:
                reason = (
                    f"limit: {len(self.recent)} pairs opened in the last minute, max_opens_per_minute "
                    f"{s.max_opens_per_minute}"
                )
        status = "signal" if reason is None else "rejected"
        self.counters[status] += 1
        if status == "signal":
            self.last_signal[key] = now_ms
            if s.max_opens_per_minute is not None:
                self.recent.append(now_ms)
        return {
            "signal_id": signal_id(s, coin, sell, buy, now_ms),
            "strategy": s.name,
            "strategy_version": s.version,
            "config_hash": s.config_hash,
            "coin": coin,
            "eval_time": now_ms,
            "sell_venue": sell,
            "buy_venue": buy,
            "sell_symbol": record.get("sell_symbol"),
            "buy_symbol": record.get("buy_symbol"),
            "notional_usd": s.notional_usd,
            "status": status,
            "reason": reason,
            "z_1h": check.z,
            "spread_sweep": record.get("spread_sweep"),
            "net_spread": check.net_spread,
            "funding_diff_8h": check.funding_8h,
            "entry_spread": entry.spread,
            "entry_net_spread": entry.net_spread,
            "entry_sell_vwap": entry.sell_vwap,
            "entry_buy_vwap": entry.buy_vwap,
            "expected_pnl": prediction.expected_pnl if prediction else None,
            "win_prob": prediction.win_prob if prediction else None,
            "imputed": dict(prediction.imputed) if prediction else {},
            "feature_id": record.get("feature_id"),
            **expected_carry(s, sell, buy, check.funding_8h, entry.sweep_cost),
        }
