"""``--source synthetic[:SEED]``: a generated, realistic-looking session, so a backtest runs offline.

Why a generator of its own: the fake exchange's ``synthetic`` builds websocket frames one Python dict
at a time (fine for a 25-minute pipeline test, minutes for the 26 h a shipped strategy needs to warm
up), and ``stream_apps.core.synthetic`` is a plain random walk without the inputs a strategy scores.
This one is vectorised (numpy; about a second per symbol-day at 30 trades/s) and produces every
input, as the producers would publish it (``md.trades``/``book``/``mark``/``liquidations``/``indicators``
records, field for field), hour by hour so memory stays bounded:

- regimes: trending up, trending down and ranging, switching after exponentially distributed spells
  (mean 90 min); a trend drifts ~0.5-1.5 % per hour, a range pulls back towards its anchor;
- bursty arrivals: per-second Poisson counts whose rate follows a per-minute log-activity (an AR(1)
  process) times occasional bursts (x3-x10, decaying over minutes); volatility rises with activity;
- heavy-tailed sizes: log-normal, with a Pareto tail on 2 % of the trades (whales);
- order flow leans with the regime and with the second's return, so CVD and price agree in trends;
- mark price every second and funding every 8 h (rates lean with the trend: longs pay in an up-trend);
- liquidations, more of them after sharp moves, on the side the move hurts;
- 5-minute metrics: open interest (rising in trends), global and top-trader long/short ratios
  (contrarian to the trend), the taker buy/sell ratio of the generated trades, Coinbase premium
  (BTC and ETH only, as the live producer), spot-perp divergence; published 30-90 s after their
  period, as the live poller sees them;
- a 10-level book snapshot every 2 s whose imbalance leans with the flow.

Deterministic: the same seed, symbols and range give the same session; each symbol has its own random
stream, so adding a symbol does not change the others.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from backtest.inputs import (
    DEFAULT_SLICE_MS,
    ENGINE_TIME,
    RECORD_KINDS,
    Block,
    MarketSlice,
    Record,
    SliceCutter,
    SourceReport,
    market_key,
    sort_records,
)
from stream_apps.core.events import TradeBatch, book_record

EXCHANGE = "binance"
HOUR_MS = 3_600_000
FUNDING_INTERVAL_MS = 8 * HOUR_MS
METRIC_PERIOD_MS = 300_000
BOOK_INTERVAL_MS = 2_000
BOOK_LEVELS = 10
DEFAULT_PRICES = {"BTCUSDT": 30_000.0, "ETHUSDT": 2_000.0, "SOLUSDT": 100.0, "XRPUSDT": 0.5}
DEFAULT_RATES = {"BTCUSDT": 30.0, "ETHUSDT": 20.0, "SOLUSDT": 10.0, "XRPUSDT": 8.0}
COINBASE_SYMBOLS = ("BTCUSDT", "ETHUSDT")
INPUTS = {
    "trades",
    "book",
    "mark",
    "liquidations",
    "open_interest_hist",
    "long_short_account_ratio",
    "top_trader_position_ratio",
    "taker_buy_sell_ratio",
    "coinbase_premium",
    "spot_perp_divergence",
    "funding_rate",
}


def price_decimals(price: float) -> int:
    """Tick of roughly 1/100,000 of the price (BTC 30,000 -> 0.1, ETH 2,000 -> 0.01)."""
    return min(8, max(0, 5 - math.floor(math.log10(price))))


def _symbol_seed(seed: int, symbol: str) -> list[int]:
    digest = hashlib.blake2b(symbol.encode(), digest_size=8).digest()
    return [seed, int.from_bytes(digest, "big")]


@dataclass
class SymbolGenerator:
    """One symbol's market, generated an hour at a time (state carries over between hours)."""

    symbol: str
    seed: int
    trades_per_s: float
    start_ms: int
    rng: np.random.Generator = field(init=False)
    decimals: int = field(init=False)
    tick: float = field(init=False)
    lot: float = field(init=False)
    median_qty: float = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(_symbol_seed(self.seed, self.symbol))
        base = DEFAULT_PRICES.get(self.symbol) or float(round(10 ** self.rng.uniform(0, 3), 4))
        self.decimals = price_decimals(base)
        self.tick = 10.0**-self.decimals
        self.log_price = math.log(base)
        self.anchor = self.log_price
        # quantity: about 3,000 USDT per trade at the median, on a lot of ~1e-5 of the price in USDT
        self.lot = 10.0 ** -max(0, min(3, self.decimals - 2)) if base < 1000 else 0.001
        self.median_qty = max(self.lot, 3_000.0 / base)
        self.regime = 0  # -1 down, 0 range, +1 up
        self.regime_left_s = 0.0
        self.activity = 0.0  # log multiplier of the arrival rate
        self.burst = 1.0
        self.next_agg_id = int(self.rng.integers(1_000_000, 900_000_000))
        self.open_interest = 2e8 / base * (0.5 + self.rng.random())
        self.funding: dict[int, float] = {}
        self.trend_memory = 0.0  # smoothed regime, drives funding and crowding

    # -- one hour ---------------------------------------------------------------------------------
    def hour(self, start_ms: int) -> tuple[TradeBatch, dict[str, list[Record]]]:
        rng, seconds = self.rng, 3600
        sec_start = start_ms // 1000
        # regimes and activity per second
        regime = np.empty(seconds, dtype=np.int8)
        rate = np.empty(seconds)
        for minute in range(60):
            self.activity = 0.85 * self.activity + rng.normal(0.0, 0.3)
            if rng.random() < 0.02:
                self.burst = max(self.burst, float(rng.uniform(3.0, 10.0)))
            self.burst = 1.0 + (self.burst - 1.0) * 0.6
            for s in range(minute * 60, minute * 60 + 60):
                if self.regime_left_s <= 0:
                    self.regime = int(rng.choice((-1, 0, 1), p=(0.3, 0.4, 0.3)))
                    self.regime_left_s = float(rng.exponential(90 * 60))
                    self.anchor = self.log_price
                self.regime_left_s -= 1
                regime[s] = self.regime
            rate[minute * 60 : (minute + 1) * 60] = self.trades_per_s * math.exp(self.activity) * self.burst
        # price per second: trend drift, range pull, volatility rising with activity
        scale = np.sqrt(rate / self.trades_per_s)
        sigma = 0.00012 * scale  # ~0.7 % per hour at normal activity
        drift = regime * 2.8e-6 * (1.0 + 0.5 * rng.random())
        shocks = rng.normal(0.0, 1.0, seconds)
        returns = np.empty(seconds)
        lp = self.log_price
        for s in range(seconds):
            pull = -0.002 * (lp - self.anchor) if regime[s] == 0 else 0.0
            r = drift[s] + pull + sigma[s] * shocks[s]
            returns[s] = r
            lp += r
        mids = self.log_price + np.cumsum(returns)
        self.log_price = float(mids[-1])
        self.trend_memory = 0.98 * self.trend_memory + 0.02 * float(regime.mean()) * 50
        mid_ticks = np.round(np.exp(mids) / self.tick).astype(np.int64)
        # arrivals
        counts = rng.poisson(rate)
        n = int(counts.sum())
        sec_of = np.repeat(np.arange(seconds), counts)
        times = (sec_start + sec_of) * 1000 + rng.integers(0, 1000, n)
        order = np.argsort(times, kind="stable")
        times, sec_of = times[order], sec_of[order]
        # taker side leans with the regime and the second's return
        lean = 0.1 * regime[sec_of] + 0.25 * np.tanh(returns[sec_of] / np.maximum(sigma[sec_of], 1e-12))
        taker_sell = rng.random(n) >= 0.5 + lean
        prev_ticks = np.concatenate(([mid_ticks[0]], mid_ticks[:-1]))
        frac = (times % 1000) / 1000.0
        mid_at = np.round(prev_ticks[sec_of] + (mid_ticks[sec_of] - prev_ticks[sec_of]) * frac).astype(np.int64)
        price_ticks = np.where(taker_sell, mid_at, mid_at + 1)  # bid = mid tick, ask one tick above
        price = np.round(price_ticks * self.tick, self.decimals)
        qty = self.median_qty * rng.lognormal(0.0, 0.9, n)
        whales = rng.random(n) < 0.02
        qty[whales] *= 1.0 + rng.pareto(1.3, int(whales.sum()))
        qty = self._lots(qty)
        ids = np.arange(self.next_agg_id, self.next_agg_id + n, dtype=np.int64)
        self.next_agg_id += n
        trades = TradeBatch.from_arrays(EXCHANGE, self.symbol, ids, times, price, qty, taker_sell)

        records: dict[str, list[Record]] = {
            "marks": self._marks(sec_start, mid_ticks),
            "books": self._books(sec_start, mid_ticks, returns, sigma),
            "liquidations": self._liquidations(sec_start, mid_ticks, returns),
            "indicators": self._indicators(start_ms, times, price, qty, taker_sell, mid_ticks),
        }
        return trades, records

    def _lots(self, qty: np.ndarray) -> np.ndarray:
        """Quantities on the lot grid (at least one lot), as clean decimals."""
        decimals = max(0, -math.floor(math.log10(self.lot) + 1e-9))
        return np.round(np.maximum(np.round(qty / self.lot), 1) * self.lot, decimals)

    # -- other inputs -----------------------------------------------------------------------------
    def _funding_rate(self, funding_time: int) -> float:
        rate = self.funding.get(funding_time)
        if rate is None:
            rate = float(
                np.clip(0.0001 + 0.0004 * math.tanh(self.trend_memory) + self.rng.normal(0, 0.00005), -0.003, 0.003)
            )
            self.funding = {funding_time: rate}
        return rate

    def _price(self, ticks: int) -> float:
        return round(ticks * self.tick, self.decimals)

    def _marks(self, sec_start: int, mid_ticks: np.ndarray) -> list[Record]:
        out = []
        noise = self.rng.normal(0.0, 0.0001, len(mid_ticks))
        for s in range(len(mid_ticks)):
            t = (sec_start + s) * 1000
            next_funding = (t // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
            mark = round(float(mid_ticks[s]) * self.tick + self.tick / 2, 8)
            out.append(
                {
                    "exchange": EXCHANGE,
                    "symbol": self.symbol,
                    "mark_price": mark,
                    "index_price": round(mark * (1 + float(noise[s])), 8),
                    "funding_rate": self._funding_rate(next_funding),
                    "next_funding_time": next_funding,
                    "event_time": t,
                    "receive_time": t + 15,
                }
            )
        return out

    def _books(self, sec_start: int, mid_ticks: np.ndarray, returns: np.ndarray, sigma: np.ndarray) -> list[Record]:
        """A book every 2 s. The sizes of the hour's books are one draw (the same random stream as a
        draw per book) and the level prices come from a per-hour cache of ticks: building 36,000
        level dicts one ``round`` at a time was most of the generator's time."""
        step = BOOK_INTERVAL_MS // 1000
        rows = range(0, len(mid_ticks), step)
        sizes = self.median_qty * 4 * self.rng.lognormal(0.0, 0.6, (len(rows), 2, BOOK_LEVELS))
        leans = np.array([math.tanh(returns[s] / max(sigma[s], 1e-12)) * 0.4 for s in rows])
        sizes[:, 0] *= (1 + leans)[:, None]
        sizes[:, 1] *= (1 - leans)[:, None]
        sizes = self._lots(sizes)
        prices: dict[int, float] = {}
        out: list[Record] = []
        for k, s in enumerate(rows):
            t = (sec_start + s) * 1000 + 500
            bid = int(mid_ticks[s])
            for tick in range(bid - BOOK_LEVELS + 1, bid + BOOK_LEVELS + 1):
                if tick not in prices:
                    prices[tick] = self._price(tick)
            bid_sizes, ask_sizes = sizes[k, 0], sizes[k, 1]
            bid_qty, ask_qty = float(bid_sizes.sum()), float(ask_sizes.sum())
            out.append(
                book_record(
                    {
                        "exchange": EXCHANGE,
                        "symbol": self.symbol,
                        "last_update_id": t,
                        "event_time": t,
                        "receive_time": t + 20,
                        "obi_10": (bid_qty - ask_qty) / (bid_qty + ask_qty),
                    },
                    [prices[bid - i] for i in range(len(bid_sizes))],
                    bid_sizes.tolist(),
                    [prices[bid + 1 + i] for i in range(len(ask_sizes))],
                    ask_sizes.tolist(),
                )
            )
        return out

    def _liquidations(self, sec_start: int, mid_ticks: np.ndarray, returns: np.ndarray) -> list[Record]:
        move = np.convolve(returns, np.ones(60), mode="full")[: len(returns)]  # last minute's return
        p = 0.004 + np.minimum(np.abs(move) * 40, 0.3)
        hits = np.flatnonzero(self.rng.random(len(returns)) < p)
        out = []
        for s in hits:
            # a fall liquidates longs (a SELL order), a rise shorts (BUY); noise both ways
            down = move[s] < 0 if self.rng.random() < 0.8 else move[s] >= 0
            side = "SELL" if down else "BUY"
            touch = int(mid_ticks[s]) + (0 if down else 1)
            avg = self._price(touch)
            usd = float(self.rng.lognormal(math.log(20_000), 1.3))
            qty = float(self._lots(np.array([usd / avg]))[0])
            t = (sec_start + int(s)) * 1000 + int(self.rng.integers(0, 1000))
            out.append(
                {
                    "exchange": EXCHANGE,
                    "symbol": self.symbol,
                    "side": side,
                    "liquidated_side": "LONG" if side == "SELL" else "SHORT",
                    "price": avg,
                    "avg_price": avg,
                    "qty": qty,
                    "filled_qty": qty,
                    "usd_value": avg * qty,
                    "event_time": t + 3,
                    "trade_time": t,
                    "receive_time": t + 25,
                }
            )
        return out

    def _indicators(
        self,
        start_ms: int,
        times: np.ndarray,
        price: np.ndarray,
        qty: np.ndarray,
        taker_sell: np.ndarray,
        mid_ticks: np.ndarray,
    ) -> list[Record]:
        """The hour's md.indicators, one set per metric period, in receive order."""
        out = []
        rng = self.rng
        for period in range(start_ms, start_ms + HOUR_MS, METRIC_PERIOD_MS):
            at = period + METRIC_PERIOD_MS  # the data point describes the period just ended
            received = at + int(rng.integers(30_000, 90_000))
            mid = self._price(int(mid_ticks[min(len(mid_ticks) - 1, (at - start_ms) // 1000 - 1)]))
            lo, hi = np.searchsorted(times, [period, at])
            out += [
                self._indicator(kind, value, extra, period_name, at, received)
                for kind, value, extra, period_name in self._period_values(mid, qty[lo:hi], taker_sell[lo:hi])
            ]
        out.sort(key=lambda r: r["receive_time"])
        return out

    def _period_values(
        self, mid: float, qty: np.ndarray, sells: np.ndarray
    ) -> list[tuple[str, float, dict[str, float], str | None]]:
        """(kind, value, extra, period) of one metric period's indicators: open interest and the
        positioning ratios drift with the regime and trend, the taker ratio is the period's trades',
        spot and Coinbase prices sit around the mid."""
        rng = self.rng
        self.open_interest *= 1 + 0.004 * abs(self.regime) * rng.random() + rng.normal(0, 0.002)
        ratio = float(np.clip(1.0 - 0.35 * math.tanh(self.trend_memory) + rng.normal(0, 0.12), 0.3, 3.0))
        top = float(np.clip(1.0 + 0.3 * math.tanh(self.trend_memory) + rng.normal(0, 0.1), 0.3, 3.0))
        buy_vol = float(qty[~sells].sum())
        sell_vol = float(qty[sells].sum())
        values: list[tuple[str, float, dict[str, float], str | None]] = [
            (
                "open_interest_hist",
                round(self.open_interest, 3),
                {"sum_open_interest_value": round(self.open_interest * mid, 2)},
                "5m",
            ),
            (
                "long_short_account_ratio",
                round(ratio, 4),
                {"long_account": round(ratio / (1 + ratio), 4), "short_account": round(1 / (1 + ratio), 4)},
                "5m",
            ),
            (
                "top_trader_position_ratio",
                round(top, 4),
                {"long_account": round(top / (1 + top), 4), "short_account": round(1 / (1 + top), 4)},
                "5m",
            ),
        ]
        if sell_vol > 0:
            values.append(
                (
                    "taker_buy_sell_ratio",
                    round(buy_vol / sell_vol, 4),
                    {"buy_vol": round(buy_vol, 4), "sell_vol": round(sell_vol, 4)},
                    "5m",
                )
            )
        spot = mid * (1 + rng.normal(0, 0.0004))
        values.append(("spot_perp_divergence", (mid - spot) / spot, {"perp_price": mid, "spot_price": spot}, None))
        if self.symbol in COINBASE_SYMBOLS:
            coinbase = mid * (1 + 0.0004 * math.tanh(self.trend_memory) + rng.normal(0, 0.0004))
            values.append(
                ("coinbase_premium", (coinbase - mid) / mid, {"coinbase_price": coinbase, "binance_price": mid}, None)
            )
        return values

    def _indicator(
        self, kind: str, value: float, extra: dict[str, float], period: str | None, at: int, received: int
    ) -> Record:
        return {
            "exchange": EXCHANGE,
            "symbol": self.symbol,
            "kind": kind,
            "value": value,
            "period": period,
            "extra": extra,
            "event_time": at,
            "receive_time": received,
        }


class SyntheticSource:
    """``synthetic[:SEED]`` (see the module docstring)."""

    exchange = EXCHANGE

    def __init__(
        self,
        symbols: list[str],
        from_ms: int,
        to_ms: int,
        seed: int = 0,
        *,
        trades_per_s: dict[str, float] | float | None = None,
        slice_ms: int = DEFAULT_SLICE_MS,
    ) -> None:
        self.symbols = [s.upper() for s in symbols]
        self.seed = seed
        self.name = f"synthetic:{seed}"
        self.from_ms, self.to_ms = from_ms, to_ms
        self.report = SourceReport()
        self.report.notes["coinbase_premium"] = "generated for BTCUSDT and ETHUSDT only (as the live poller)"
        self.slice_ms = slice_ms
        rates = trades_per_s if isinstance(trades_per_s, dict) else {}
        default = trades_per_s if isinstance(trades_per_s, (int, float)) else None
        self.rates = {s: float(rates.get(s) or default or DEFAULT_RATES.get(s, 10.0)) for s in self.symbols}

    def inputs(self) -> set[str]:
        return set(INPUTS)

    def expected_trades(self) -> int:
        return int(sum(self.rates.values()) * (self.to_ms - self.from_ms) / 1000)

    def blocks(self) -> Iterator[Block]:
        start = self.from_ms // HOUR_MS * HOUR_MS
        generators = [SymbolGenerator(s, self.seed, self.rates[s], start) for s in self.symbols]
        carry: dict[str, list[Record]] = {kind: [] for kind in RECORD_KINDS}
        for hour in range(start, self.to_ms, HOUR_MS):
            block = Block(hour, hour + HOUR_MS)
            kinds = carry
            for gen in generators:
                trades, records = gen.hour(hour)
                block.trades[market_key(EXCHANGE, gen.symbol)] = trades
                for kind, recs in records.items():
                    kinds[kind].extend(recs)
            carry = {kind: [] for kind in RECORD_KINDS}
            for kind, recs in kinds.items():  # indicators of the hour's last period are known after it
                recs = sort_records(recs, kind)
                cut = sum(1 for r in recs if r[ENGINE_TIME[kind]] < block.end_ms)
                block.records[kind], carry[kind] = recs[:cut], recs[cut:]
            yield block

    def slices(self) -> Iterator[MarketSlice]:
        return SliceCutter(self.from_ms, self.to_ms, self.slice_ms).cut(self.blocks())
