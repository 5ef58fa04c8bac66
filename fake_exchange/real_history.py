"""The hours before a session's live start at real trade rates, generated an hour at a time on demand.

A warm start at real rates needs a day or two of history per symbol: BTCUSDT's perpetual trades 15-40
times a second, so 25 h are ~2.7 M aggTrades for it alone and ~6.5 M for BTC/ETH/SOL/XRP. Held as
frames of a :class:`~.recording.Recording` that would be gigabytes; here each (symbol, UTC hour) is
drawn with numpy from its own seed when a request needs it (a few hours cached), and everything the
exchange serves about the past comes from the same draws, so it agrees with itself:

- ``/fapi/v1/aggTrades`` by ``fromId`` or ``startTime``/``endTime`` (:meth:`RealHistory.agg_trades`);
- ``/fapi/v1/klines`` at ``1m`` with the taker-buy volume (:meth:`RealHistory.klines`);
- the Binance Vision daily archive of every complete UTC day the history covers (:meth:`RealHistory.day_csv`).

Rates and burstiness: ``REAL_RATES`` are mean aggTrades per second (BTC 30, ETH 20, SOL 12, XRP 9);
the per-second rate is that times a log-normal intensity whose log is an AR(1) of std ``burstiness``
(1.0: the busiest 1 % of seconds at ~6x the mean, as BTCUSDT's counts are) remembering ~10 s. Sizes are
log-normal (a heavy tail of whales), sides even, prices a per-minute random walk of ~0.03 % ending at
the live session's first price, agg ids consecutive and ending right before the live session's first.

The counts per second of the whole span are drawn at construction (cheap: 3,600 per hour), so where an
hour's ids begin is known without drawing the hours before it.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
REAL_RATES = {"BTCUSDT": 30.0, "ETHUSDT": 20.0, "SOLUSDT": 12.0, "XRPUSDT": 9.0}
QTY_DECIMALS = 3
_CACHED_HOURS = 12


@dataclass(frozen=True)
class HourTrades:
    """One symbol's aggTrades of one hour, columns in agg-id (and time) order."""

    ids: np.ndarray  # int64
    times: np.ndarray  # int64 epoch ms
    ticks: np.ndarray  # int64 price in ticks
    qty: np.ndarray  # int64 quantity in 1e-3 units
    buyer_maker: np.ndarray  # bool: the taker sold


def _fmt(units: int, decimals: int) -> str:
    sign = "-" if units < 0 else ""
    digits = str(abs(units)).rjust(decimals + 1, "0")
    return sign + (digits if decimals == 0 else f"{digits[:-decimals]}.{digits[-decimals:]}")


class RealHistory:
    """History of ``symbols`` over ``[start_ms, end_ms)`` (``start_ms``: ``hours`` before ``end_ms``, earlier
    when needed to begin at a UTC midnight so that yesterday's Vision archive is whole)."""

    def __init__(
        self,
        symbols: list[str],
        end_ms: int,
        first_live_ids: dict[str, int],
        end_ticks: dict[str, int],
        decimals: dict[str, int],
        *,
        hours: float = 26.0,
        seed: int = 0,
        burstiness: float = 1.0,
        burst_memory_s: float = 10.0,
        rates: dict[str, float] | None = None,
    ) -> None:
        self.symbols = list(symbols)
        self.end_ms = end_ms
        yesterday = (end_ms // DAY_MS - 1) * DAY_MS
        self.start_ms = (min(end_ms - round(hours * HOUR_MS), yesterday) // HOUR_MS) * HOUR_MS
        self.hours = math.ceil((end_ms - self.start_ms) / HOUR_MS)
        self.seed = seed
        self.decimals = dict(decimals)
        self.rates = {s: (rates or REAL_RATES).get(s, 5.0) for s in self.symbols}
        self._cache: OrderedDict[tuple[str, int], HourTrades] = OrderedDict()
        self._lock = threading.Lock()  # a Vision archive is built on a worker thread
        self._per_second: dict[str, np.ndarray] = {}
        self._hour_first_id: dict[str, np.ndarray] = {}
        self._minute_ticks: dict[str, np.ndarray] = {}
        seconds = self.hours * 3600
        phi = math.exp(-1.0 / burst_memory_s)
        for k, symbol in enumerate(self.symbols):
            rng = np.random.default_rng([seed, k, 1_000_003])
            noise = rng.standard_normal(seconds) * math.sqrt(1 - phi * phi) * burstiness
            log_i = np.empty(seconds)
            level = rng.standard_normal() * burstiness
            for i in range(seconds):  # AR(1): a Python loop of ~170k steps for 47 h, ~50 ms
                level = phi * level + noise[i]
                log_i[i] = level
            rate = self.rates[symbol] * np.exp(log_i - burstiness * burstiness / 2)
            counts = rng.poisson(rate).astype(np.int64)
            # nothing at or after the live start (the live session has those seconds)
            first_live_second = (end_ms - self.start_ms) // 1000
            counts[first_live_second:] = 0
            self._per_second[symbol] = counts
            per_hour = counts.reshape(self.hours, 3600).sum(axis=1)
            total = int(per_hour.sum())
            first = first_live_ids[symbol] - total
            self._hour_first_id[symbol] = first + np.concatenate(([0], np.cumsum(per_hour)))
            minutes = self.hours * 60 + 1
            steps = np.round(rng.standard_normal(minutes) * 3e-4 * end_ticks[symbol]).astype(np.int64)
            walk = np.cumsum(steps[::-1])[::-1] - steps[-1]  # ends at 0 at the last minute
            self._minute_ticks[symbol] = np.maximum(end_ticks[symbol] + walk, 10)

    # -- ids and hours --------------------------------------------------------------------------
    def first_id(self, symbol: str) -> int:
        return int(self._hour_first_id[symbol][0])

    def last_id(self, symbol: str) -> int:
        return int(self._hour_first_id[symbol][-1]) - 1

    def count(self, symbol: str) -> int:
        return self.last_id(symbol) - self.first_id(symbol) + 1

    def hour(self, symbol: str, h: int) -> HourTrades:
        key = (symbol, h)
        with self._lock:
            got = self._cache.get(key)
            if got is not None:
                self._cache.move_to_end(key)
                return got
        counts = self._per_second[symbol][h * 3600 : (h + 1) * 3600]
        n = int(counts.sum())
        rng = np.random.default_rng([self.seed, self.symbols.index(symbol), h])
        second_of = np.repeat(np.arange(3600, dtype=np.int64), counts)
        offsets = rng.integers(0, 1000, n)
        times = self.start_ms + h * HOUR_MS + second_of * 1000 + offsets
        order = np.lexsort((offsets, second_of))
        times = times[order]
        minute = (times - self.start_ms) // 60_000
        ticks_at = self._minute_ticks[symbol]
        frac = ((times - self.start_ms) % 60_000) / 60_000
        base = ticks_at[minute] + (ticks_at[minute + 1] - ticks_at[minute]) * frac
        ticks = np.maximum(np.round(base + rng.integers(-2, 3, n)).astype(np.int64), 1)
        qty = np.maximum(np.round(np.exp(rng.normal(math.log(40), 1.3, n))).astype(np.int64), 1)
        buyer_maker = rng.random(n) < 0.5
        first = int(self._hour_first_id[symbol][h])
        trades = HourTrades(np.arange(first, first + n, dtype=np.int64), times, ticks, qty, buyer_maker)
        with self._lock:
            self._cache[key] = trades
            if len(self._cache) > _CACHED_HOURS:
                self._cache.popitem(last=False)
        return trades

    def _hour_of_id(self, symbol: str, agg_id: int) -> int:
        return int(np.searchsorted(self._hour_first_id[symbol], agg_id, side="right")) - 1

    def _rows(self, symbol: str, trades: HourTrades, lo: int, hi: int) -> list[dict]:
        d = self.decimals[symbol]
        return [
            {
                "a": int(trades.ids[i]),
                "p": _fmt(int(trades.ticks[i]), d),
                "q": _fmt(int(trades.qty[i]), QTY_DECIMALS),
                "f": int(trades.ids[i]) * 2,
                "l": int(trades.ids[i]) * 2,
                "T": int(trades.times[i]),
                "m": bool(trades.buyer_maker[i]),
            }
            for i in range(lo, hi)
        ]

    # -- what the exchange serves ---------------------------------------------------------------
    def agg_trades(
        self,
        symbol: str,
        *,
        from_id: int | None = None,
        start_time: int | None = None,
        end_time: int | None = None,
        limit: int = 500,
    ) -> list[dict]:
        """``/fapi/v1/aggTrades`` over the history (Binance's semantics, as :mod:`.agg_trades`): ascending,
        at most ``limit``; the caller appends the live session's trades when the page reaches them."""
        out: list[dict] = []
        if from_id is not None:
            h = max(0, self._hour_of_id(symbol, from_id))
            while h < self.hours and len(out) < limit:
                trades = self.hour(symbol, h)
                lo = int(np.searchsorted(trades.ids, from_id))
                hi = min(len(trades.ids), lo + limit - len(out))
                if end_time is not None:
                    hi = min(hi, int(np.searchsorted(trades.times, end_time, side="right")))
                out += self._rows(symbol, trades, lo, hi)
                if end_time is not None and hi < len(trades.ids) and len(out) < limit:
                    break
                h += 1
            return out
        if start_time is None and end_time is None:
            return []  # "the most recent": the live session's
        start = self.start_ms if start_time is None else start_time
        h = max(0, (start - self.start_ms) // HOUR_MS)
        while h < self.hours and len(out) < limit:
            trades = self.hour(symbol, h)
            lo = int(np.searchsorted(trades.times, start))
            hi = len(trades.times) if end_time is None else int(np.searchsorted(trades.times, end_time, side="right"))
            hi = min(hi, lo + limit - len(out))
            out += self._rows(symbol, trades, lo, max(lo, hi))
            if end_time is not None and end_time < self.start_ms + (h + 1) * HOUR_MS:
                break
            h += 1
        return out

    def klines(self, symbol: str, start_time: int | None, end_time: int | None, limit: int) -> list[list]:
        """``/fapi/v1/klines?interval=1m`` rows of the history's minutes in ``[start_time, end_time]``
        (open times), at most ``limit``: ``[open time, open, high, low, close, volume, close time, quote
        volume, trades, taker-buy base volume, taker-buy quote volume, "0"]`` as Binance sends them."""
        first = self.start_ms if start_time is None else max(self.start_ms, -(-start_time // 60_000) * 60_000)
        last = min(self.end_ms - 60_000, self.end_ms if end_time is None else end_time)
        rows: list[list] = []
        d = self.decimals[symbol]
        minute = first
        while minute <= last and len(rows) < limit:
            h = (minute - self.start_ms) // HOUR_MS
            trades = self.hour(symbol, h)
            hour_end = self.start_ms + (h + 1) * HOUR_MS
            bounds = np.searchsorted(trades.times, np.arange(minute, hour_end + 1, 60_000))
            for j in range(len(bounds) - 1):
                if minute > last or len(rows) >= limit:
                    break
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                rows.append(self._kline(symbol, minute, trades, lo, hi, d))
                minute += 60_000
        return rows

    def _kline(self, symbol: str, minute: int, trades: HourTrades, lo: int, hi: int, d: int) -> list:
        ticks, qty, maker = trades.ticks[lo:hi], trades.qty[lo:hi], trades.buyer_maker[lo:hi]
        scale = 10**d
        if hi == lo:  # no trade in the minute: the walk's price, zero volume
            price = _fmt(int(self._minute_ticks[symbol][(minute - self.start_ms) // 60_000]), d)
            return [minute, price, price, price, price, "0", minute + 59_999, "0", 0, "0", "0", "0"]
        quote = (ticks * qty).astype(np.float64) / scale / 10**QTY_DECIMALS
        buy = ~maker
        return [
            minute,
            _fmt(int(ticks[0]), d),
            _fmt(int(ticks.max()), d),
            _fmt(int(ticks.min()), d),
            _fmt(int(ticks[-1]), d),
            _fmt(int(qty.sum()), QTY_DECIMALS),
            minute + 59_999,
            f"{quote.sum():.8f}",
            int(hi - lo),
            _fmt(int(qty[buy].sum()), QTY_DECIMALS),
            f"{quote[buy].sum():.8f}",
            "0",
        ]

    def covers_day(self, day: date) -> bool:
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        return start >= self.start_ms and start + DAY_MS <= self.end_ms

    def day_zip(self, symbol: str, day: date) -> bytes | None:
        """The Vision archive of a complete UTC day of the history (None outside it)."""
        if not self.covers_day(day):
            return None
        start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(
            ["agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker"]
        )
        d = self.decimals[symbol]
        first_hour = (start - self.start_ms) // HOUR_MS
        for h in range(first_hour, first_hour + 24):
            t = self.hour(symbol, h)
            prices = np.char.mod(f"%.{d}f", t.ticks / 10**d) if d else t.ticks.astype(str)
            qtys = np.char.mod("%.3f", t.qty / 1000)
            makers = np.where(t.buyer_maker, "true", "false")
            ids2 = t.ids * 2
            writer.writerows(
                zip(
                    t.ids.tolist(),
                    prices.tolist(),
                    qtys.tolist(),
                    ids2.tolist(),
                    ids2.tolist(),
                    t.times.tolist(),
                    makers.tolist(),
                    strict=True,
                )
            )
        name = f"{symbol}-aggTrades-{day.isoformat()}"
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr(name + ".csv", text.getvalue())
        return out.getvalue()


def real_history_for(recording, hours: float, seed: int, rates: dict[str, float] | None = None) -> RealHistory:
    """The history that ends where ``recording`` (the live session) begins: its symbols, its first agg id
    and price per symbol (a symbol without a trade in the session starts at id 1,000,000)."""
    frames = recording.frames
    end_ms = int(frames[0].receive_time * 1000) if frames else 0
    first_ids: dict[str, int] = {}
    ticks: dict[str, int] = {}
    decimals: dict[str, int] = {}
    for frame in frames:
        if frame.event == "aggTrade" and frame.payload["s"] not in first_ids:
            price = frame.payload["p"]
            symbol = frame.payload["s"]
            first_ids[symbol] = int(frame.payload["a"])
            decimals[symbol] = len(price.partition(".")[2])
            ticks[symbol] = int(price.replace(".", ""))
    symbols = [s for s in recording.symbols if s in first_ids]
    return RealHistory(symbols, end_ms, first_ids, ticks, decimals, hours=hours, seed=seed, rates=rates)
