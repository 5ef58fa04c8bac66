"""Deterministic synthetic Binance USD-M sessions of any length.

The real recording is 30 seconds long; tests of reconnects, gap filling and long-running behaviour
need more. Given a seed, :func:`generate_session` produces the same :class:`Recording` every time:

- ``<sym>@aggTrade``: consecutive agg ids, consecutive first/last trade ids, price at the touch
  (``m`` = buyer is maker => taker sold at the best bid);
- ``<sym>@depth@100ms``: diffs whose ``pu`` equals the previous ``u``; update ids are drawn from one
  counter shared by all symbols, so ``U`` jumps past ``pu + 1`` as on the real exchange; the book
  never crosses; the initial book is the depth snapshot base (see :mod:`.depth_book`);
- ``<sym>@bookTicker`` after every diff, carrying the diff's ``u`` and the resulting best levels
  (the same exact-check hook the real recording offers);
- ``<sym>@markPrice@1s`` and ``!forceOrder@arr``.

Prices live on an integer tick grid and are formatted from integers, so no float noise leaks into the
strings. All randomness comes from one ``random.Random(seed)``; nothing reads the clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, Field

from .depth_book import BookSnapshot
from .recording import RecordedFrame, Recording, build_recording

DEFAULT_PRICES = {"BTCUSDT": 30000.0, "ETHUSDT": 2000.0, "SOLUSDT": 100.0, "XRPUSDT": 0.5}
QTY_DECIMALS = 3
FUNDING_INTERVAL_MS = 8 * 3600 * 1000


class SyntheticSpec(BaseModel):
    """Parameters of a synthetic session (validated; usable from config files and the CLI)."""

    seed: int = 0
    symbols: tuple[str, ...] = ("BTCUSDT",)
    duration_s: float = Field(default=30.0, gt=0)
    start_time: float = 1_700_000_000.0
    depth_interval_ms: int = Field(default=100, ge=10)
    trades_per_s: float = Field(default=5.0, ge=0)
    rates: dict[str, float] | None = None  # per symbol trades/s, instead of trades_per_s (the real profile)
    # BTC-like clustering: the trade rate is ``trades_per_s`` times a log-normal intensity whose log follows
    # an AR(1) with this standard deviation (0 = a constant-rate Poisson stream; 1 puts the busiest 1 % of
    # seconds at about 6x the mean rate, as aggTrade counts of BTCUSDT do), remembering ``burst_memory_s``
    burstiness: float = Field(default=0.0, ge=0, le=3)
    burst_memory_s: float = Field(default=10.0, gt=0)
    mark_interval_s: int = Field(default=1, ge=1)
    liquidations_per_min: float = Field(default=3.0, ge=0)
    book_levels: int = Field(default=20, ge=2)
    book_ticker: bool = True
    # keep Binance's usual stream names (<sym>@depth@100ms, <sym>@markPrice@1s) whatever the intervals: a
    # long session with sparse depth and marks that a producer subscribing to the usual streams receives
    binance_stream_names: bool = False


def format_fixed(units: int, decimals: int) -> str:
    """Integer ``units`` of ``10**-decimals`` as a decimal string (``format_fixed(12345, 2)`` = ``"123.45"``)."""
    sign = "-" if units < 0 else ""
    digits = str(abs(units))
    if decimals == 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def price_decimals_for(price: float) -> int:
    """Tick size of roughly 1/100 000 of the price (BTC 30 000 -> 0.1, ETH 2 000 -> 0.01)."""
    return min(8, max(0, 5 - math.floor(math.log10(price))))


@dataclass
class _SymbolState:
    symbol: str
    decimals: int
    mid: int  # best bid tick; best ask is mid + 1
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    last_u: int = 0
    next_agg_id: int = 0
    next_trade_id: int = 0
    log_intensity: float = 0.0

    def price(self, tick: int) -> str:
        return format_fixed(tick, self.decimals)

    def stream(self, kind: str) -> str:
        return f"{self.symbol.lower()}@{kind}"


class _Generator:
    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)  # nosec B311 # generated market data, seeded on purpose (not a secret)
        # its own stream, so a session without bursts draws exactly what it always drew
        self.burst_rng = random.Random(f"burst:{spec.seed}")  # nosec B311 # generated market data, seeded on purpose (not a secret)
        self.update_id = 1_000_000_000 + self.rng.randrange(1_000_000)
        self.events: list[tuple[float, int, str, dict[str, Any]]] = []
        self.last_receive: dict[str, float] = {}
        self.books: dict[str, BookSnapshot] = {}
        self.start_ms = int(spec.start_time * 1000)
        usual = spec.binance_stream_names
        self.depth_kind = "depth@100ms" if spec.depth_interval_ms == 100 or usual else "depth"
        self.mark_kind = "markPrice@1s" if spec.mark_interval_s == 1 or usual else "markPrice"

    # -- helpers ---------------------------------------------------------------------------------
    def qty(self, low: int = 1, high: int = 5000) -> int:
        return self.rng.randint(low, high)

    def emit(self, event_ms: int, stream: str, payload: dict[str, Any]) -> None:
        latency = 0.005 + self.rng.random() * 0.02
        receive = max(event_ms / 1000 + latency, self.last_receive.get(stream, 0.0) + 1e-6)
        self.last_receive[stream] = receive
        self.events.append((receive, len(self.events), stream, payload))

    def new_state(self, symbol: str) -> _SymbolState:
        base = DEFAULT_PRICES.get(symbol) or round(10 ** self.rng.uniform(0, 3), 4)
        decimals = price_decimals_for(base)
        state = _SymbolState(symbol, decimals, mid=round(base * 10**decimals))
        levels = self.spec.book_levels
        state.bids = {state.mid - i: self.qty() for i in range(levels)}
        state.asks = {state.mid + 1 + i: self.qty() for i in range(levels)}
        state.next_agg_id = self.rng.randrange(1_000_000, 900_000_000)
        state.next_trade_id = state.next_agg_id * 2 + self.rng.randrange(1000)
        self.update_id += self.rng.randint(1, 40)
        state.last_u = self.update_id
        self.books[symbol] = BookSnapshot(
            symbol=symbol,
            last_update_id=state.last_u,
            event_time=self.start_ms,
            transaction_time=self.start_ms,
            bids=self.levels(state, state.bids, reverse=True),
            asks=self.levels(state, state.asks, reverse=False),
        )
        return state

    def levels(self, st: _SymbolState, side: dict[int, int], reverse: bool) -> tuple[tuple[str, str], ...]:
        return tuple((st.price(t), format_fixed(side[t], QTY_DECIMALS)) for t in sorted(side, reverse=reverse))

    def intensity(self, st: _SymbolState, window_ms: int) -> float:
        """This window's rate multiplier (mean 1): exp of a stationary AR(1) of std ``burstiness``."""
        sigma = self.spec.burstiness
        if sigma == 0:
            return 1.0
        phi = math.exp(-window_ms / 1000 / self.spec.burst_memory_s)
        st.log_intensity = phi * st.log_intensity + math.sqrt(1 - phi * phi) * sigma * self.burst_rng.gauss(0, 1)
        return math.exp(st.log_intensity - sigma * sigma / 2)

    # -- event kinds -----------------------------------------------------------------------------
    def trades(self, st: _SymbolState, window_start: int, window_ms: int) -> None:
        rate = self.spec.rates.get(st.symbol, self.spec.trades_per_s) if self.spec.rates else self.spec.trades_per_s
        expected = rate * window_ms / 1000 * self.intensity(st, window_ms)
        count = _poisson(self.rng, expected)
        times = sorted(window_start + self.rng.randint(1, window_ms) for _ in range(count))
        for trade_ms in times:
            buyer_is_maker = self.rng.random() < 0.5
            tick = st.mid if buyer_is_maker else st.mid + 1
            first = st.next_trade_id
            last = first + self.rng.randint(0, 2)
            st.next_trade_id = last + 1
            payload = {
                "e": "aggTrade",
                "E": trade_ms + self.rng.randint(0, 5),
                "a": st.next_agg_id,
                "s": st.symbol,
                "p": st.price(tick),
                "q": format_fixed(self.qty(1, 2000), QTY_DECIMALS),
                "f": first,
                "l": last,
                "T": trade_ms,
                "m": buyer_is_maker,
            }
            st.next_agg_id += 1
            self.emit(payload["E"], st.stream("aggTrade"), payload)

    def depth(self, st: _SymbolState, now_ms: int) -> None:
        levels = self.spec.book_levels
        st.mid += self.rng.choice((-1, 0, 0, 0, 1))
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        low_bid, high_ask = st.mid - levels + 1, st.mid + levels
        for tick in [t for t in st.bids if t > st.mid or t < low_bid]:
            bid_changes[tick] = 0
        for tick in [t for t in st.asks if t <= st.mid or t > high_ask]:
            ask_changes[tick] = 0
        for _ in range(self.rng.randint(1, 4)):
            bid_changes[self.rng.randint(low_bid, st.mid)] = self.qty()
            ask_changes[self.rng.randint(st.mid + 1, high_ask)] = self.qty()
        if self.rng.random() < 0.3:
            bid_changes[self.rng.randint(low_bid, st.mid - 1)] = 0
        if self.rng.random() < 0.3:
            ask_changes[self.rng.randint(st.mid + 2, high_ask)] = 0
        for side, book in ((bid_changes, st.bids), (ask_changes, st.asks)):
            for tick, qty in side.items():
                if qty:
                    book[tick] = qty
                else:
                    book.pop(tick, None)
        # keep the touch populated so bookTicker always has both sides
        for tick, side, book in ((st.mid, bid_changes, st.bids), (st.mid + 1, ask_changes, st.asks)):
            if tick not in book:
                book[tick] = side[tick] = self.qty()
        self.update_id += self.rng.randint(1, 40)
        first_id = self.update_id + 1
        final_id = first_id + self.rng.randint(0, 25)
        self.update_id = final_id
        event_ms = now_ms + self.rng.randint(0, 3)
        payload = {
            "e": "depthUpdate",
            "E": event_ms,
            "T": now_ms - self.rng.randint(0, 20),
            "s": st.symbol,
            "U": first_id,
            "u": final_id,
            "pu": st.last_u,
            "b": [[st.price(t), format_fixed(q, QTY_DECIMALS)] for t, q in sorted(bid_changes.items())],
            "a": [[st.price(t), format_fixed(q, QTY_DECIMALS)] for t, q in sorted(ask_changes.items())],
        }
        st.last_u = final_id
        self.emit(event_ms, st.stream(self.depth_kind), payload)
        if self.spec.book_ticker:
            best_bid, best_ask = max(st.bids), min(st.asks)
            ticker = {
                "e": "bookTicker",
                "u": final_id,
                "s": st.symbol,
                "b": st.price(best_bid),
                "B": format_fixed(st.bids[best_bid], QTY_DECIMALS),
                "a": st.price(best_ask),
                "A": format_fixed(st.asks[best_ask], QTY_DECIMALS),
                "T": payload["T"],
                "E": event_ms + 1,
            }
            self.emit(event_ms + 1, st.stream("bookTicker"), ticker)

    def mark(self, st: _SymbolState, now_ms: int) -> None:
        mark_units = st.mid * 10 ** (8 - st.decimals) + 10 ** (8 - st.decimals) // 2
        index_units = mark_units + round(mark_units * (self.rng.random() - 0.5) * 0.0006)
        funding_units = 10_000 + self.rng.randint(-3_000, 3_000)  # 0.0001 +- 0.00003 in 1e-8 units
        payload = {
            "e": "markPriceUpdate",
            "E": now_ms,
            "s": st.symbol,
            "p": format_fixed(mark_units, 8),
            "i": format_fixed(index_units, 8),
            "P": format_fixed(index_units, 8),
            "r": format_fixed(funding_units, 8),
            "T": (now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS,
        }
        self.emit(now_ms, st.stream(self.mark_kind), payload)

    def liquidation(self, st: _SymbolState, now_ms: int) -> None:
        side = self.rng.choice(("BUY", "SELL"))
        touch = st.mid + 1 if side == "BUY" else st.mid
        limit_tick = round(touch * (1.01 if side == "BUY" else 0.99))
        qty = format_fixed(self.qty(1, 5000), QTY_DECIMALS)
        payload = {
            "e": "forceOrder",
            "E": now_ms,
            "o": {
                "s": st.symbol,
                "S": side,
                "o": "LIMIT",
                "f": "IOC",
                "q": qty,
                "p": st.price(limit_tick),
                "ap": st.price(touch),
                "X": "FILLED",
                "l": qty,
                "z": qty,
                "T": now_ms,
            },
        }
        self.emit(now_ms, "!forceOrder@arr", payload)

    # -- driver ----------------------------------------------------------------------------------
    def run(self) -> Recording:
        spec = self.spec
        states = [self.new_state(s.upper()) for s in spec.symbols]
        step = spec.depth_interval_ms
        steps = max(1, int(spec.duration_s * 1000 // step))
        mark_every = max(1, spec.mark_interval_s * 1000 // step)
        liquidation_p = spec.liquidations_per_min * step / 60_000
        for k in range(1, steps + 1):
            now_ms = self.start_ms + k * step
            order = list(states)
            self.rng.shuffle(order)
            for st in order:
                self.trades(st, now_ms - step, step)
                self.depth(st, now_ms)
                if k % mark_every == 0:
                    self.mark(st, now_ms)
                if self.rng.random() < liquidation_p:
                    self.liquidation(st, now_ms)
        self.events.sort(key=lambda e: (e[0], e[1]))
        frames = []
        for index, (receive, _, stream, payload) in enumerate(self.events):
            frames.append(RecordedFrame(index, round(receive, 6), stream, orjson.dumps(payload).decode(), payload))
        streams = list(dict.fromkeys(f.stream for f in frames))
        return build_recording(
            frames,
            initial_books=self.books,
            stream_url="ws://127.0.0.1/stream?streams=" + "/".join(streams),
            configuration={"synthetic": spec.model_dump(mode="json")},
            source=f"synthetic(seed={spec.seed})",
        )


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's Poisson sampler for the small means of a 100 ms window; past 100 (a burst at thousands of
    trades per second) the normal approximation, which Knuth's product would underflow towards."""
    if mean <= 0:
        return 0
    if mean > 100:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def generate_session(spec: SyntheticSpec | None = None, **overrides: Any) -> Recording:
    """Deterministic synthetic session; ``generate_session(seed=3, duration_s=600)`` also works."""
    spec = spec or SyntheticSpec()
    if overrides:
        spec = SyntheticSpec.model_validate({**spec.model_dump(), **overrides})
    return _Generator(spec).run()
