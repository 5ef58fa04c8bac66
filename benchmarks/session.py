"""A generated, realistic multi-symbol session as engine input columns, for the replay speed benchmark.

Why its own generator and not the backtest's ``synthetic`` source: the speed benchmark hands the
engine exactly what a replay hands it (columnar trades, book and mark batches, the few liquidation
and indicator events) without timing the making of a record per input, and must produce ten million
trades in seconds (all numpy). Research runs read the backtest's sources. The recipe:

- bursty arrivals: per-second Poisson counts whose rate follows a per-minute AR(1) log-activity times
  occasional bursts (x3-x10, decaying over minutes); default rates BTC 30, ETH 20, SOL 10, XRP 8
  trades/s (Binance USD-M aggTrades in 2024-25 are 15-35/s for BTC);
- regimes (up, down, range) switching after exponential spells (mean 90 min), volatility rising with
  activity, taker side leaning with the regime and the second's return (so CVD and price agree);
- heavy-tailed sizes (log-normal, a Pareto tail on 2 % of the trades);
- a mark price every second, a book imbalance every 2 s, 5-minute metrics (open interest, long/short
  ratios, taker ratio, Coinbase premium for BTC/ETH, spot-perp divergence) known 30-90 s after their
  period, liquidations after sharp moves.

Deterministic for a seed; each symbol has its own random stream.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from stream_apps.core.events import (
    BookBatch,
    IndicatorUpdate,
    LiquidationEvent,
    MarkBatch,
    TradeBatch,
)

EXCHANGE = "binance"
HOUR_MS = 3_600_000
PRICES = {"BTCUSDT": 30_000.0, "ETHUSDT": 2_000.0, "SOLUSDT": 100.0, "XRPUSDT": 0.5}
RATES = {"BTCUSDT": 30.0, "ETHUSDT": 20.0, "SOLUSDT": 10.0, "XRPUSDT": 8.0}
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


@dataclass
class SymbolSession:
    symbol: str
    trades: TradeBatch
    books: BookBatch
    marks: MarkBatch
    others: list[LiquidationEvent | IndicatorUpdate]  # time order


def _rng(seed: int, symbol: str) -> np.random.Generator:
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "big")])


class SymbolGenerator:
    """One symbol's market, generated a span at a time; price, ids and open interest carry over, so
    consecutive spans form one continuous session (the same seed gives the same days)."""

    def __init__(self, symbol: str, seed: int = 0, rate: float | None = None) -> None:
        self.symbol = symbol
        self.seed = seed
        self.base_rate = rate if rate is not None else RATES.get(symbol, 10.0)
        self.price0 = PRICES.get(symbol, 50.0)
        self.decimals = min(8, max(0, 5 - math.floor(math.log10(self.price0))))
        self.tick = 10.0**-self.decimals
        self.log_price = math.log(self.price0)
        self.next_id = int(_rng(seed, symbol).integers(1_000_000, 900_000_000))
        self.open_interest = 2e8 / self.price0
        self.spans = 0

    def span(self, start_ms: int, seconds: int) -> SymbolSession:
        rng = np.random.default_rng([self.seed, self.spans, *_rng(self.seed, self.symbol).integers(0, 2**31, 2)])
        self.spans += 1
        session = _generate(self, rng, start_ms, seconds)
        return session


def generate_symbol(
    symbol: str, start_ms: int, seconds: int, seed: int = 0, rate: float | None = None
) -> SymbolSession:
    return SymbolGenerator(symbol, seed, rate).span(start_ms, seconds)


def _generate(gen: SymbolGenerator, rng: np.random.Generator, start_ms: int, seconds: int) -> SymbolSession:
    symbol, base_rate, tick, decimals = gen.symbol, gen.base_rate, gen.tick, gen.decimals
    price0 = gen.price0
    minutes = -(-seconds // 60)

    # activity (AR(1) per minute) and bursts
    activity = np.empty(minutes)
    burst = np.empty(minutes)
    a, b = 0.0, 1.0
    shocks = rng.normal(0.0, 0.3, minutes)
    starts = rng.random(minutes) < 0.02
    sizes = rng.uniform(3.0, 10.0, minutes)
    for m in range(minutes):
        a = 0.85 * a + shocks[m]
        if starts[m]:
            b = max(b, sizes[m])
        b = 1.0 + (b - 1.0) * 0.6
        activity[m], burst[m] = a, b
    rate_s = np.repeat(base_rate * np.exp(activity) * burst, 60)[:seconds]

    # regimes: -1 down, 0 range, +1 up, exponential spells
    regime = np.empty(seconds, dtype=np.int8)
    s = 0
    while s < seconds:
        length = max(int(rng.exponential(90 * 60)), 60)
        regime[s : s + length] = rng.choice((-1, 0, 1), p=(0.3, 0.4, 0.3))
        s += length
    sigma = 0.00012 * np.sqrt(rate_s / base_rate)
    returns = regime * 2.8e-6 + sigma * rng.normal(0.0, 1.0, seconds)
    mids = gen.log_price + np.cumsum(returns)
    gen.log_price = float(mids[-1])
    mid_ticks = np.round(np.exp(mids) / tick).astype(np.int64)

    # trades
    counts = rng.poisson(rate_s)
    n = int(counts.sum())
    sec_of = np.repeat(np.arange(seconds), counts)
    times = (start_ms // 1000 + sec_of) * 1000 + rng.integers(0, 1000, n)
    order = np.argsort(times, kind="stable")
    times, sec_of = times[order], sec_of[order]
    lean = 0.1 * regime[sec_of] + 0.25 * np.tanh(returns[sec_of] / sigma[sec_of])
    taker_sell = rng.random(n) >= 0.5 + lean
    price = np.round(np.where(taker_sell, mid_ticks[sec_of], mid_ticks[sec_of] + 1) * tick, decimals)
    median_qty = 3_000.0 / price0
    qty = median_qty * rng.lognormal(0.0, 0.9, n)
    whales = rng.random(n) < 0.02
    qty[whales] *= 1.0 + rng.pareto(1.3, int(whales.sum()))
    lot = 0.001 if price0 >= 1000 else 10.0 ** -max(0, min(3, decimals - 2))
    qty = np.round(np.maximum(np.round(qty / lot), 1) * lot, 8)
    first_id = gen.next_id
    gen.next_id += n
    trades = TradeBatch.from_arrays(EXCHANGE, symbol, np.arange(first_id, first_id + n), times, price, qty, taker_sell)

    # mark every second, book every 2 s
    sec_times = (start_ms // 1000 + np.arange(seconds)) * 1000
    mark = mid_ticks * tick
    trend = np.convolve(regime.astype(float), np.ones(3600) / 3600, mode="full")[:seconds]
    funding = np.clip(0.0001 + 0.0004 * np.tanh(trend * 3) + rng.normal(0, 0.00002, seconds), -0.0075, 0.0075)
    next_funding = (sec_times // (8 * HOUR_MS) + 1) * (8 * HOUR_MS)
    marks = MarkBatch.from_arrays(
        EXCHANGE, symbol, sec_times + 500, mark, mark * (1 + rng.normal(0, 2e-5, seconds)), funding, next_funding
    )
    book_s = np.arange(0, seconds, 2)
    obi = np.clip(0.6 * np.tanh(returns[book_s] / sigma[book_s]) + rng.normal(0, 0.2, len(book_s)), -1, 1)
    books = BookBatch.from_arrays(EXCHANGE, symbol, sec_times[book_s] + 250, obi)

    # liquidations after sharp moves, on the side the move hurts
    sharp = np.flatnonzero(np.abs(returns) > 3.2 * sigma)
    others: list[LiquidationEvent | IndicatorUpdate] = [
        LiquidationEvent(
            EXCHANGE,
            symbol,
            int(sec_times[s] + rng.integers(0, 1000)),
            "LONG" if returns[s] < 0 else "SHORT",
            float(round(rng.lognormal(10.5, 1.2), 2)),
        )
        for s in sharp.tolist()
    ]
    # 5-minute metrics, known 30-90 s after their period
    open_interest = gen.open_interest
    buy_qty = np.bincount(sec_of // 300, weights=qty * ~taker_sell, minlength=seconds // 300 + 1)
    sell_qty = np.bincount(sec_of // 300, weights=qty * taker_sell, minlength=seconds // 300 + 1)
    for period in range(seconds // 300):
        at = start_ms + (period + 1) * 300_000
        known = at + int(rng.integers(30_000, 90_000))
        t = min(period * 300 + 299, seconds - 1)
        tr = float(np.tanh(trend[t] * 3))
        open_interest *= 1.0 + 0.002 * abs(tr) + rng.normal(0, 0.003)
        values = [
            ("open_interest_hist", open_interest, {}),
            ("long_short_account_ratio", float(np.exp(-0.6 * tr + rng.normal(0, 0.1))), {}),
            ("top_trader_position_ratio", float(np.exp(-0.4 * tr + rng.normal(0, 0.1))), {}),
            ("taker_buy_sell_ratio", float(buy_qty[period] / max(sell_qty[period], 1e-9)), {}),
            ("spot_perp_divergence", float(rng.normal(0, 0.001)), {}),
        ]
        if symbol in ("BTCUSDT", "ETHUSDT"):
            values.append(("coinbase_premium", float(0.0004 * tr + rng.normal(0, 0.0003)), {}))
        for kind, value, extra in values:
            if kind == "top_trader_position_ratio":
                extra = {"long_account": value / (1.0 + value)}
            others.append(IndicatorUpdate(EXCHANGE, symbol, known, kind, float(value), at, extra))
    gen.open_interest = open_interest
    others.sort(key=lambda e: e.time_ms)
    return SymbolSession(symbol, trades, books, marks, others)


def generate_session(symbols: list[str], start_ms: int, seconds: int, seed: int = 0) -> list[SymbolSession]:
    return [generate_symbol(s, start_ms, seconds, seed) for s in symbols]


def seconds_for_trades(symbols: list[str], trades: int) -> int:
    """Session length that gives about ``trades`` trades at the default rates (bursts add ~10 %)."""
    return int(trades / sum(RATES.get(s, 10.0) for s in symbols) / 1.1)


def hourly(session: SymbolSession, slice_ms: int = HOUR_MS) -> Iterator[tuple[TradeBatch, list]]:
    """The session in time slices, as a replay feeds an engine: (trades, [books, marks, *others])."""
    t, b, m = session.trades, session.books, session.marks
    other_times = np.array([e.time_ms for e in session.others], dtype=np.int64)
    start = int(min(t.time_ms[0], b.time_ms[0], m.time_ms[0])) // slice_ms * slice_ms
    end = int(max(t.time_ms[-1], b.time_ms[-1], m.time_ms[-1], other_times.max(initial=0))) + 1
    for lo in range(start, end, slice_ms):
        hi = lo + slice_ms
        ts = slice(*np.searchsorted(t.time_ms, [lo, hi]))
        bs = slice(*np.searchsorted(b.time_ms, [lo, hi]))
        ms = slice(*np.searchsorted(m.time_ms, [lo, hi]))
        os_ = slice(*np.searchsorted(other_times, [lo, hi]))
        yield t.take(ts), [b.take(bs), m.take(ms), *session.others[os_]]
