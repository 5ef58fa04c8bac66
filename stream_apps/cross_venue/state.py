"""Cross-venue features per coin: the state fed book, funding and spot events in event-time order,
evaluated on a fixed grid of event times.

Evaluation (``CrossVenueState``):

- Points are the multiples of ``eval_interval_ms``. The evaluation at ``e`` sees every event with
  time ``<= e`` and none later. It runs when an event later than ``e`` arrives (inputs come in
  event-time order, so nothing at or before ``e`` can follow) or when ``advance_to(w)`` with
  ``w >= e`` says so (a watermark: nothing at or before ``w`` will follow). So the output depends
  on the events and the watermarks' positions only, never on how the events were batched.
- A coin is evaluated at ``e`` when at least one of its legs has a book fresh at ``e``; points where
  no coin has one are skipped (a silence of hours costs nothing and writes nothing).
- An event at or before the last point already evaluated (or skipped) is late: counted
  (``counters["late"]``) and ignored. An event older than its leg's newest of the same kind is
  counted (``counters["stale"]``) and dropped; at equal times the later one wins.
- Legs are the perpetuals quoted in ``quotes`` (USDT); a spot symbol, another quote, or a second
  perpetual of the same coin on a venue (the first one seen is the leg) is counted
  (``counters["other_market"]``) and ignored. A venue not in ``venues`` is counted too.
- Keyed by coin: a coin's features depend on its own events only, so one state per coin (a Faust
  table keyed by coin) gives the same features as one state for all coins, for input in event-time
  order (tested); only what counts as late under disorder can differ.

Alignment: each leg (coin, venue) keeps its latest book with its event time. A feature at ``e`` uses
a leg's book only if ``e - book_time <= max_staleness_ms`` (per venue if configured); otherwise it is
None with a reason, ``"stale leg okx: 3.2 s old"``, never a zero or the old value. Funding and spot
prices have their own maximum ages. Each pair also reports ``leg_skew_ms``, how far apart in event
time its two books were taken.

Features (signs and units):

- per venue: best bid and ask, the sweep prices (VWAP of selling / buying ``sweep_notional_usd`` into
  the book: ``sweep.sweep``), all per one coin (a ``1000PEPEUSDT`` price divided by 1,000); funding
  rate, interval and next funding time; spot–perp ``basis = log(perp mid / spot)`` (> 0: the perp is
  rich), when the venue's spot price is known.
- per ordered pair (sell venue A, buy venue B), i.e. both directions of every pair of venues:
  ``spread_top = log(bid_A / ask_B)`` and ``spread_sweep = log(sweep_bid_A / sweep_ask_B)``: what
  selling on A and buying on B captures now (> 0: an entry would be in profit before fees, at the
  touch or for the whole notional). ``funding_diff = rate_A - rate_B``: what the hedge (short A, long
  B) receives per interval (positive rates are paid by longs to shorts); ``funding_diff_8h`` puts both
  rates on 8 h when both intervals are known (venues settle every 1, 4 or 8 h).
- rolling statistics of both spreads (``rolling.RollingWindow``): a least-squares slope over
  ``slope_window_ms`` (3 min, sampled every evaluation), and per window in ``windows`` (1 h sampled
  every 5 s, 12 h every minute by default) mean, σ, min, max, mean-crossings per hour and drift ratio
  ``|net change| / sum of |changes|``. A window takes the spread at its evaluation points on its own
  grid (``e % sample_ms == 0``); a point where the spread is missing adds nothing.

State as plain data: ``to_dict`` / ``from_dict`` (JSON-safe, running sums included), so a Faust
table keyed by coin can snapshot it and a restored state continues bit for bit (tested).

Funding interval: from the event when the venue sends it (OKX's ``funding_rate`` indicator);
otherwise learned when a venue's next funding time moves on from T1 to T2 (interval T2 - T1), and
missing with a reason until then.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

from stream_apps.cross_venue.events import BookEvent, CrossVenueEvent, FundingEvent, SpotEvent
from stream_apps.cross_venue.rolling import RollingWindow, WindowStats
from stream_apps.cross_venue.sweep import BUY, SELL, Sweep, sweep
from stream_apps.cross_venue.symbols import Instrument, SymbolError, instrument

HOUR_MS = 3_600_000
EIGHT_HOURS_MS = 8 * HOUR_MS


@dataclass(frozen=True)
class CrossVenueParams:
    """What the features are computed over; every duration in event-time milliseconds."""

    venues: tuple[str, ...] = ("binance", "bybit", "okx")
    quotes: tuple[str, ...] = ("USDT",)  # a USDC perp against a USDT one would carry the USDC/USDT basis
    sweep_notional_usd: float = 10_000.0
    max_staleness_ms: int = 2_000  # books are sampled every 250 ms: 2 s is 8 samples missed
    staleness_by_venue: Mapping[str, int] = field(default_factory=dict)  # overrides per venue
    funding_max_age_ms: int = 300_000
    spot_max_age_ms: int = 600_000  # the Binance poller asks for spot every 300 s
    eval_interval_ms: int = 1_000
    slope_window_ms: int = 180_000
    windows: tuple[tuple[str, int, int], ...] = (("1h", HOUR_MS, 5_000), ("12h", 12 * HOUR_MS, 60_000))

    def __post_init__(self) -> None:
        if len(self.venues) < 2 or len(set(self.venues)) != len(self.venues):
            raise ValueError("venues: at least two, each once")
        if not (self.sweep_notional_usd > 0 and math.isfinite(self.sweep_notional_usd)):
            raise ValueError("sweep_notional_usd must be positive")
        if self.eval_interval_ms <= 0 or self.slope_window_ms < self.eval_interval_ms:
            raise ValueError("need eval_interval_ms > 0 and slope_window_ms >= eval_interval_ms")
        for name, window_ms, sample_ms in self.windows:
            if sample_ms % self.eval_interval_ms or window_ms < sample_ms:
                raise ValueError(f"window {name}: sample_ms must be a multiple of eval_interval_ms and <= window_ms")
        for value in (
            self.max_staleness_ms,
            self.funding_max_age_ms,
            self.spot_max_age_ms,
            *self.staleness_by_venue.values(),
        ):
            if value < 0:
                raise ValueError("maximum ages must not be negative")

    def staleness(self, venue: str) -> int:
        return self.staleness_by_venue.get(venue, self.max_staleness_ms)

    def watched(self, exchange: str, symbol: str) -> tuple[Instrument | None, str]:
        """The perpetual the watchlist follows for ``exchange``'s ``symbol``, or None and why not
        (``unknown_venue``, ``bad_symbol``, ``other_market``: a spot market or another quote). The one
        rule of the features (``CrossVenueState``) and the trader (``execution.watchlist_trader``)."""
        if exchange not in self.venues:
            return None, "unknown_venue"
        try:
            inst = instrument(exchange, symbol)
        except SymbolError:
            return None, "bad_symbol"
        if inst.kind != "perp" or inst.quote not in self.quotes:
            return None, "other_market"
        return inst, ""


# -- outputs ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VenueFeatures:
    venue: str
    symbol: str | None
    book_time_ms: int | None
    book_age_ms: int | None
    bid: float | None
    ask: float | None
    sweep_bid: float | None  # VWAP of selling the notional into the bids, per coin
    sweep_ask: float | None  # VWAP of buying the notional from the asks, per coin
    funding_rate: float | None
    funding_interval_ms: int | None
    next_funding_time_ms: int | None
    basis: float | None  # log(perp mid / spot)
    reasons: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SeriesFeatures:
    """One spread series now and over its windows."""

    value: float | None
    slope_per_min: float | None  # least squares over slope_window_ms
    windows: tuple[tuple[str, WindowStats], ...]
    slope_reason: str | None = None  # why slope_per_min is None


@dataclass(frozen=True, slots=True)
class PairFeatures:
    sell_venue: str
    buy_venue: str
    leg_skew_ms: int | None
    top: SeriesFeatures  # spread_top = log(bid_sell / ask_buy)
    sweep: SeriesFeatures  # spread_sweep = log(sweep_bid_sell / sweep_ask_buy)
    funding_diff: float | None  # rate_sell - rate_buy, per interval
    funding_diff_8h: float | None
    reasons: tuple[tuple[str, str], ...] = ()

    @property
    def spread_top(self) -> float | None:
        return self.top.value

    @property
    def spread_sweep(self) -> float | None:
        return self.sweep.value

    def reason(self, name: str) -> str | None:
        return dict(self.reasons).get(name)


@dataclass(frozen=True, slots=True)
class CoinFeatures:
    coin: str
    time_ms: int
    venues: tuple[VenueFeatures, ...]
    pairs: tuple[PairFeatures, ...]

    def venue(self, name: str) -> VenueFeatures:
        return next(v for v in self.venues if v.venue == name)

    def pair(self, sell_venue: str, buy_venue: str) -> PairFeatures:
        return next(p for p in self.pairs if p.sell_venue == sell_venue and p.buy_venue == buy_venue)

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per ordered pair (what a sink row or an Avro record would hold)."""
        out = []
        for p in self.pairs:
            row: dict[str, Any] = {
                "coin": self.coin,
                "eval_time": self.time_ms,
                "sell_venue": p.sell_venue,
                "buy_venue": p.buy_venue,
                "leg_skew_ms": p.leg_skew_ms,
                "funding_diff": p.funding_diff,
                "funding_diff_8h": p.funding_diff_8h,
            }
            for kind, series in (("top", p.top), ("sweep", p.sweep)):
                row[f"spread_{kind}"] = series.value
                row[f"{kind}_slope_per_min"] = series.slope_per_min
                for name, w in series.windows:
                    for stat in ("n", "mean", "std", "min", "max", "crossings_per_hour", "drift_ratio"):
                        row[f"{kind}_{name}_{stat}"] = getattr(w, stat)
            for side, v in (("sell", self.venue(p.sell_venue)), ("buy", self.venue(p.buy_venue))):
                row[f"{side}_symbol"] = v.symbol
                row[f"{side}_book_age_ms"] = v.book_age_ms
                row[f"{side}_funding_rate"] = v.funding_rate
                row[f"{side}_next_funding_time"] = v.next_funding_time_ms
                row[f"{side}_basis"] = v.basis
            row["missing"] = dict(p.reasons)
            out.append(row)
        return out


# -- state -----------------------------------------------------------------------------------------
class _Leg:
    """What one venue's perpetual of a coin last said."""

    __slots__ = (
        "symbol",
        "multiplier",
        "quote",
        "book_time",
        "bid",
        "ask",
        "sweep_bid",
        "sweep_ask",
        "book_reason",
        "funding_time",
        "funding_rate",
        "next_funding",
        "interval_ms",
        "interval_time",
        "spot_time",
        "spot_price",
    )

    def __init__(self, symbol: str, multiplier: int, quote: str) -> None:
        self.symbol = symbol  # the first name it was seen under (BTCUSDT and BTC-USDT-SWAP are one leg)
        self.multiplier = multiplier
        self.quote = quote
        self.book_time: int | None = None
        self.bid: float | None = None
        self.ask: float | None = None
        self.sweep_bid: Sweep | None = None
        self.sweep_ask: Sweep | None = None
        self.book_reason: str | None = None
        self.funding_time: int | None = None
        self.funding_rate = 0.0
        self.next_funding: int | None = None
        self.interval_ms: int | None = None
        self.interval_time: int | None = None  # time of the event the interval came from
        self.spot_time: int | None = None
        self.spot_price = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in self.__slots__}
        for name in ("sweep_bid", "sweep_ask"):
            s = out[name]
            out[name] = None if s is None else [s.notional, s.vwap, s.qty, s.levels, s.worst_price, s.reason]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Leg:
        leg = cls(data["symbol"], data["multiplier"], data["quote"])
        for name in cls.__slots__:
            value = data[name]
            if name in ("sweep_bid", "sweep_ask") and value is not None:
                value = Sweep(*value)
            setattr(leg, name, value)
        return leg


class _Series:
    """A spread series: its slope window and its statistics windows."""

    __slots__ = ("slope", "windows")

    def __init__(self, params: CrossVenueParams) -> None:
        self.slope = RollingWindow(params.slope_window_ms, params.eval_interval_ms)
        self.windows = [
            (name, sample_ms, RollingWindow(window_ms, sample_ms)) for name, window_ms, sample_ms in params.windows
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"slope": self.slope.to_dict(), "windows": [w.to_dict() for _, _, w in self.windows]}

    @classmethod
    def from_dict(cls, params: CrossVenueParams, data: Mapping[str, Any]) -> _Series:
        series = cls(params)
        if len(data["windows"]) != len(series.windows):
            raise ValueError("the snapshot's windows are not the parameters' windows")
        series.slope = RollingWindow.from_dict(data["slope"])
        series.windows = [
            (name, sample_ms, RollingWindow.from_dict(w))
            for (name, sample_ms, _), w in zip(series.windows, data["windows"])
        ]
        return series

    def evaluate(self, t: int, value: float | None) -> SeriesFeatures:
        if value is not None:
            self.slope.add(t, value)
            for _, sample_ms, window in self.windows:
                if t % sample_ms == 0:
                    window.add(t, value)
        slope = self.slope.stats(t, "slope window")
        windows = tuple((name, w.stats(t, name)) for name, _, w in self.windows)
        return SeriesFeatures(value, slope.slope_per_min, windows, dict(slope.reasons).get("slope_per_min"))


class _Coin:
    __slots__ = ("coin", "legs", "series", "active_until")

    def __init__(self, coin: str) -> None:
        self.coin = coin
        self.legs: dict[str, _Leg] = {}
        self.series: dict[tuple[str, str, str], _Series] = {}
        self.active_until = -1  # the last time at which some leg's book is still fresh

    def to_dict(self) -> dict[str, Any]:
        return {
            "coin": self.coin,
            "active_until": self.active_until,
            "legs": {venue: leg.to_dict() for venue, leg in self.legs.items()},
            "series": [[*key, s.to_dict()] for key, s in self.series.items()],
        }

    @classmethod
    def from_dict(cls, params: CrossVenueParams, data: Mapping[str, Any]) -> _Coin:
        coin = cls(data["coin"])
        coin.active_until = data["active_until"]
        coin.legs = {venue: _Leg.from_dict(leg) for venue, leg in data["legs"].items()}
        coin.series = {(a, b, kind): _Series.from_dict(params, s) for a, b, kind, s in data["series"]}
        return coin


def _age(seconds_ms: int) -> str:
    return f"{seconds_ms / 1000:.1f} s old"


class CrossVenueState:
    """Every coin's legs and spread series; fed events in event-time order, emits ``CoinFeatures``.

    ``feed(events)`` returns the evaluations the events completed; ``advance_to(watermark)`` those up
    to a watermark. Plain Python and numpy, no clock and no I/O: the Faust app (not yet written) and a
    backtest drive it the same way.
    """

    def __init__(self, params: CrossVenueParams | None = None) -> None:
        self.params = params or CrossVenueParams()
        self._pairs = tuple(permutations(self.params.venues, 2))
        self.coins: dict[str, _Coin] = {}
        # cache of params.watched: symbols are few, events many
        self._instruments: dict[tuple[str, str], tuple[Instrument | None, str]] = {}
        self.next_eval: int | None = None  # the first grid point not yet evaluated or skipped
        self.counters = {"late": 0, "stale": 0, "unknown_venue": 0, "bad_symbol": 0, "other_market": 0}

    # -- plain data ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-safe plain data (the parameters are not in it: restore with the same)."""
        return {
            "next_eval": self.next_eval,
            "counters": dict(self.counters),
            "coins": [coin.to_dict() for coin in self.coins.values()],
        }

    @classmethod
    def from_dict(cls, params: CrossVenueParams, data: Mapping[str, Any]) -> CrossVenueState:
        """A state that continues exactly where the one that wrote `data` stopped."""
        state = cls(params)
        state.next_eval = data["next_eval"]
        state.counters.update(data["counters"])
        for coin in data["coins"]:
            state.coins[coin["coin"]] = _Coin.from_dict(params, coin)
        return state

    # -- input -------------------------------------------------------------------------------------
    def feed(self, events: Iterable[CrossVenueEvent]) -> list[CoinFeatures]:
        out: list[CoinFeatures] = []
        interval = self.params.eval_interval_ms
        for event in events:
            t = event.time_ms
            if self.next_eval is None:
                self.next_eval = -(-t // interval) * interval
            elif t <= self.next_eval - interval:
                self.counters["late"] += 1
                continue
            elif t > self.next_eval:
                self._evaluate_through(t - 1, out)
            self._apply(event)
        return out

    def advance_to(self, watermark_ms: int) -> list[CoinFeatures]:
        """Evaluate every point ``<= watermark_ms``: the caller promises no event at or before it follows."""
        out: list[CoinFeatures] = []
        if self.next_eval is not None and watermark_ms >= self.next_eval:
            self._evaluate_through(watermark_ms, out)
        return out

    def _leg(self, event: CrossVenueEvent) -> _Leg | None:
        key = (event.exchange, event.symbol)
        found = self._instruments.get(key)
        if found is None:
            found = self._instruments[key] = self.params.watched(*key)
        inst, why = found
        if inst is None:
            self.counters[why] += 1
            return None
        coin = self.coins.get(inst.coin)
        if coin is None:
            coin = self.coins[inst.coin] = _Coin(inst.coin)
        leg = coin.legs.get(event.exchange)
        if leg is None:
            leg = coin.legs[event.exchange] = _Leg(event.symbol, inst.multiplier, inst.quote)
        elif leg.symbol != event.symbol and (leg.multiplier, leg.quote) != (inst.multiplier, inst.quote):
            # a second perpetual of the coin on one venue (PEPEUSDT beside 1000PEPEUSDT, or another
            # quote): the first one seen stays the leg, so the leg never flips between two books.
            # Two names of one market (okx BTCUSDT, BTC-USDT-SWAP) are the same leg.
            self.counters["other_market"] += 1
            return None
        if isinstance(event, BookEvent):
            coin.active_until = max(coin.active_until, event.time_ms + self.params.staleness(event.exchange))
        return leg

    def _apply(self, event: CrossVenueEvent) -> None:
        leg = self._leg(event)
        if leg is None:
            return
        t = event.time_ms
        if isinstance(event, BookEvent):
            if leg.book_time is not None and t < leg.book_time:
                self.counters["stale"] += 1
                return
            self._apply_book(leg, event)
        elif isinstance(event, FundingEvent):
            # a stated interval is kept even from a record older than the newest rate: OKX states it
            # on md.indicators, while md.mark carries its rate too
            if event.interval_ms and (leg.interval_time is None or t >= leg.interval_time):
                leg.interval_ms, leg.interval_time = event.interval_ms, t
            if leg.funding_time is not None and t < leg.funding_time:
                self.counters["stale"] += 1
                return
            if not event.interval_ms and leg.next_funding is not None and event.next_funding_time_ms > leg.next_funding:
                leg.interval_ms, leg.interval_time = event.next_funding_time_ms - leg.next_funding, t
            leg.funding_time, leg.funding_rate, leg.next_funding = t, event.funding_rate, event.next_funding_time_ms
        elif isinstance(event, SpotEvent):
            if leg.spot_time is not None and t < leg.spot_time:
                self.counters["stale"] += 1
                return
            leg.spot_time, leg.spot_price = t, event.price
        else:
            raise TypeError(f"not a cross-venue event: {type(event).__name__}")

    def _apply_book(self, leg: _Leg, event: BookEvent) -> None:
        m = leg.multiplier
        notional = self.params.sweep_notional_usd
        leg.book_time = event.time_ms
        leg.bid = event.bids[0][0] / m if event.bids else None
        leg.ask = event.asks[0][0] / m if event.asks else None
        leg.sweep_bid = sweep(event.bids, notional, SELL)
        leg.sweep_ask = sweep(event.asks, notional, BUY)
        reasons = [f"{side} empty" for side, levels in (("bids", event.bids), ("asks", event.asks)) if not levels]
        if leg.bid is not None and leg.ask is not None and leg.bid >= leg.ask:
            reasons.append(f"crossed book: bid {leg.bid!r} >= ask {leg.ask!r}")
            leg.bid = leg.ask = None
        leg.book_reason = "; ".join(reasons) or None

    # -- evaluation --------------------------------------------------------------------------------
    def _evaluate_through(self, limit: int, out: list[CoinFeatures]) -> None:
        interval = self.params.eval_interval_ms
        e = self.next_eval
        assert e is not None
        ordered = sorted(self.coins)
        while e <= limit:
            active = [self.coins[c] for c in ordered if self.coins[c].active_until >= e]
            if not active:  # nothing is fresh until a new book arrives, i.e. after `limit`
                e = -(-(limit + 1) // interval) * interval
                break
            out.extend(self._evaluate_coin(coin, e) for coin in active)
            e += interval
        self.next_eval = e

    def _venue(self, coin: _Coin, venue: str, t: int) -> tuple[VenueFeatures, str | None]:
        """The venue's features at t and, when its book cannot be used, why (None when it can)."""
        leg = coin.legs.get(venue)
        if leg is None:
            why = f"no data from {venue} yet"
            return VenueFeatures(
                venue,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                (("book", why), ("funding", why), ("basis", why)),
            ), why
        reasons: list[tuple[str, str]] = []
        book_why = None
        age = None
        if leg.book_time is None:
            book_why = f"no book from {venue} yet"
        else:
            age = t - leg.book_time
            if age > self.params.staleness(venue):
                book_why = f"stale leg {venue}: {_age(age)}"
            elif leg.book_reason is not None:
                book_why = f"{venue} book: {leg.book_reason}"
        fresh = book_why is None
        if book_why:
            reasons.append(("book", book_why))
        m = leg.multiplier
        sweep_bid = sweep_ask = None
        if fresh:
            assert leg.sweep_bid is not None and leg.sweep_ask is not None
            for name, s in (("sweep_bid", leg.sweep_bid), ("sweep_ask", leg.sweep_ask)):
                if s.vwap is None:
                    reasons.append((name, f"{venue}: {s.reason}"))
            sweep_bid = leg.sweep_bid.vwap / m if leg.sweep_bid.vwap is not None else None
            sweep_ask = leg.sweep_ask.vwap / m if leg.sweep_ask.vwap is not None else None
        funding_rate = interval = next_funding = None
        if leg.funding_time is None:
            reasons.append(("funding", f"no funding from {venue} yet"))
        elif t - leg.funding_time > self.params.funding_max_age_ms:
            reasons.append(("funding", f"stale funding {venue}: {_age(t - leg.funding_time)}"))
        else:
            funding_rate, next_funding, interval = leg.funding_rate, leg.next_funding, leg.interval_ms
            if interval is None:
                reasons.append(("funding_interval", f"funding interval of {venue} not known yet"))
        basis = None
        if leg.spot_time is None:
            reasons.append(("basis", f"no spot price for {venue}"))
        elif t - leg.spot_time > self.params.spot_max_age_ms:
            reasons.append(("basis", f"stale spot {venue}: {_age(t - leg.spot_time)}"))
        elif not fresh or leg.bid is None or leg.ask is None:
            reasons.append(("basis", book_why or f"{venue} book has no touch"))
        else:
            basis = math.log((leg.bid + leg.ask) / 2 / leg.spot_price)
        features = VenueFeatures(
            venue,
            leg.symbol,
            leg.book_time,
            age,
            leg.bid if fresh else None,
            leg.ask if fresh else None,
            sweep_bid,
            sweep_ask,
            funding_rate,
            interval,
            next_funding,
            basis,
            tuple(reasons),
        )
        return features, book_why

    def _evaluate_coin(self, coin: _Coin, t: int) -> CoinFeatures:
        venues: dict[str, VenueFeatures] = {}
        why: dict[str, str | None] = {}
        for name in self.params.venues:
            venues[name], why[name] = self._venue(coin, name, t)
        pairs = []
        for a, b in self._pairs:
            va, vb = venues[a], venues[b]
            reasons: list[tuple[str, str]] = []
            stale = "; ".join(w for w in (why[a], why[b]) if w)
            top = swept = None
            if stale:
                reasons += [("spread_top", stale), ("spread_sweep", stale)]
            else:
                assert va.bid is not None and vb.ask is not None
                top = math.log(va.bid / vb.ask)
                if va.sweep_bid is None or vb.sweep_ask is None:
                    # the sell leg's bids and the buy leg's asks: the sides this direction sweeps
                    reasons.append(
                        (
                            "spread_sweep",
                            "; ".join(
                                [r for n, r in va.reasons if n == "sweep_bid"]
                                + [r for n, r in vb.reasons if n == "sweep_ask"]
                            ),
                        )
                    )
                else:
                    swept = math.log(va.sweep_bid / vb.sweep_ask)
            skew = (
                abs(va.book_time_ms - vb.book_time_ms)
                if va.book_time_ms is not None and vb.book_time_ms is not None
                else None
            )
            fdiff = fdiff8 = None
            if va.funding_rate is None or vb.funding_rate is None:
                reasons.append(
                    (
                        "funding_diff",
                        "; ".join(r for v in (va, vb) for n, r in v.reasons if n == "funding") or "no funding",
                    )
                )
            else:
                fdiff = va.funding_rate - vb.funding_rate
                if va.funding_interval_ms and vb.funding_interval_ms:
                    fdiff8 = (
                        va.funding_rate / va.funding_interval_ms - vb.funding_rate / vb.funding_interval_ms
                    ) * EIGHT_HOURS_MS
                else:
                    reasons.append(
                        (
                            "funding_diff_8h",
                            "; ".join(r for v in (va, vb) for n, r in v.reasons if n == "funding_interval"),
                        )
                    )
            series = coin.series
            top_s = series.get((a, b, "top"))
            if top_s is None:
                top_s = series[(a, b, "top")] = _Series(self.params)
                series[(a, b, "sweep")] = _Series(self.params)
            pairs.append(
                PairFeatures(
                    a,
                    b,
                    skew,
                    top_s.evaluate(t, top),
                    series[(a, b, "sweep")].evaluate(t, swept),
                    fdiff,
                    fdiff8,
                    tuple(reasons),
                )
            )
        return CoinFeatures(coin.coin, t, tuple(venues[v] for v in self.params.venues), tuple(pairs))
