"""Per-symbol engine state: bucketed windows, bars, ATR, size quantiles and the latest market records.

Why this shape: DESIGN §2 wants state that a Faust table can hold and restore (plain data), that
recovers fast and stays bounded (bucketed aggregates, never per-trade lists), and that live and replay
update identically. So:

- trades update fixed-size rings of per-second and per-minute integer sums (see ``ring``/``units``);
  CVD, VWAP, large-trade and whale flow over any window are sums of buckets, computed on read;
- the 24-h trade-size distribution is an hourly log-linear histogram (see ``quantiles``);
- 1m and 5m bars are built from the same batches; closed 5m bars drive a Wilder ATR;
- book, mark, liquidation and indicator records live in ``MarketRecords`` (latest values, staleness).

Bad input never raises; it is counted in ``counters``:
- ``rejected``: NaN/inf/zero/negative price or quantity, negative id or time (quantity below 1e-8
  rounds to zero units and is rejected too);
- ``duplicates``: agg id not above the highest id seen (Binance ids are consecutive per symbol);
- ``gaps``: agg id jumps; the data no longer covers the past, so warm-up coverage restarts there;
- ``late``: a trade in a second that is already closed — older than the newest accepted trade's second
  or than the last ``advance_to`` time. Late trades are ignored (not applied to their bucket) because
  evaluations up to that time were already computed from the closed buckets; applying them later would
  make results depend on arrival timing. The id still counts as seen.

Large trades (qty above P99) are classified with the P95/P99 frozen at the first trade of each minute
(from all trades before that minute), so the classification depends only on the data, not on batching.

Time rules: ``snapshot(t)`` reads only; call ``advance_to(t)`` first (closes bars that ended by ``t``)
and never snapshot at or before the last applied trade. A window of length ``w`` ending at ``t`` is the
``w / bucket`` buckets up to and including the one holding ``t - 1 ms``: exactly ``[t - w, t)`` when
``t`` is on a bucket boundary (the engine evaluates on whole seconds), otherwise up to one bucket
shorter. 5m..1h windows use second buckets, 4h/24h minute buckets (so at a non-minute ``t`` they
start at the next minute boundary), the P95/P99 window hour buckets (see ``quantiles``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from itertools import pairwise
from typing import Any

import numpy as np

from .atr import WilderATR
from .bars import Bar, BarBuilder, segments_from_groups
from .events import (
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    MarkUpdate,
    TradeBatch,
)
from .features import Features
from .market_records import MarketRecords
from .params import MINUTE_MS, SECOND_MS, Counters, StateParams
from .quantiles import HOUR_MS, HourlyQuantileWindow, bin_index
from .ring import BucketRing
from .units import NOTIONAL_SCALE, QTY_SCALE, notional_to_units, qty_to_units

__all__ = ["STANDARD_CVD_WINDOWS_MS", "Counters", "StateParams", "SymbolState"]

STANDARD_CVD_WINDOWS_MS = (300_000, 900_000, 1_800_000, 3_600_000, 14_400_000, 86_400_000)
_SECOND_FIELDS = (
    "buy_qty",
    "sell_qty",
    "quote",
    "trades",
    "large_buy_qty",
    "large_sell_qty",
    "whale_buy_quote",
    "whale_sell_quote",
)
_MINUTE_FIELDS = ("buy_qty", "sell_qty", "quote", "trades")


class SymbolState:
    """All state of one (exchange, symbol): update with ``apply_*``, read with ``snapshot``."""

    def __init__(self, exchange: str, symbol: str, params: StateParams | None = None) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.params = params or StateParams.for_symbol(symbol)
        p = self.params
        self.counters = Counters()
        self.last_agg_id = -1
        self.last_price: float | None = None
        self.last_trade_ms: int | None = None
        self.first_trade_ms: int | None = None
        self.coverage_start_ms: int | None = None
        self.head_second = -1
        self.sealed_ms = 0
        self.threshold_minute = -1
        self.p95 = p.p95_floor
        self.p99 = p.p99_floor
        self.qty_samples = 0
        self.seconds = BucketRing(SECOND_MS, p.second_buckets, _SECOND_FIELDS)
        self.minutes = BucketRing(MINUTE_MS, p.minute_buckets, _MINUTE_FIELDS)
        self.qty_hist = HourlyQuantileWindow(p.qty_window_hours)
        self.bars_1m = BarBuilder(MINUTE_MS)
        self.bars_atr = BarBuilder(p.atr_bar_ms)
        self.atr = WilderATR(p.atr_period, p.atr_history, p.atr_min_history)
        self.market = MarketRecords(p, self.counters)

    # ------------------------------------------------------------------------------------------
    # trades
    # ------------------------------------------------------------------------------------------
    def apply_trades(self, batch: TradeBatch) -> list[Bar]:
        """Apply trades in arrival order; return the 1-minute bars they closed."""
        n = len(batch)
        if n == 0:
            return []
        ids, times, prices, qtys, sells = batch.agg_id, batch.time_ms, batch.price, batch.qty, batch.taker_sell
        if np.isfinite(qtys).all():
            qty_units = qty_to_units(qtys)
        else:
            with np.errstate(invalid="ignore"):
                qty_units = qty_to_units(qtys)  # NaN/inf become garbage here and are rejected below
        if self._is_clean(ids, times, prices, qtys, qty_units):
            # the common case, checked in a few vectorised calls: consecutive ids, time order, valid
            if self.coverage_start_ms is None:
                self.coverage_start_ms = int(times[0])
            self.last_agg_id = int(ids[-1])
            self.counters.accepted += n
            return self._apply_accepted(ids, times, prices, qtys, qty_units, sells)
        return self._apply_general(ids, times, prices, qtys, qty_units, sells)

    def skip_late(self, ids: np.ndarray) -> None:
        """Trades the engine dropped as late (their second was already evaluated): counted, and the
        ids that continue this symbol's sequence taken as seen, so the next on-time trade does not
        look like a hole in the agg ids (which would restart the warm-up: 24 h for the shipped
        strategies). A real hole before or among them still shows at the next trade."""
        self.counters.late += len(ids)
        if self.last_agg_id < 0:
            return
        for agg_id in np.unique(ids[ids > self.last_agg_id]):
            if agg_id != self.last_agg_id + 1:
                break
            self.last_agg_id = int(agg_id)

    def _is_clean(self, ids, times, prices, qtys, qty_units) -> bool:
        n = len(ids)
        first_id, first_time = int(ids[0]), int(times[0])
        if self.last_agg_id >= 0 and first_id != self.last_agg_id + 1:
            return False
        if first_id < 0 or int(ids[-1]) - first_id != n - 1 or first_time < self.sealed_ms:
            return False
        if first_time // SECOND_MS < self.head_second:
            return False
        if n > 1 and not ((ids[1:] - ids[:-1] == 1).all() and (times[1:] >= times[:-1]).all()):
            return False
        # comparisons with NaN are False, so this also rejects NaN prices; qtys were checked finite
        return bool((prices > 0).all() and (qty_units > 0).all() and np.isfinite(prices).all())

    def _apply_general(self, ids, times, prices, qtys, qty_units, sells) -> list[Bar]:
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(prices) & (prices > 0) & np.isfinite(qtys) & (qtys > 0) & (times >= 0)
        qty_units = np.where(valid, qty_units, 0)
        valid &= qty_units > 0

        has_id = ids >= 0
        prev_max = np.maximum.accumulate(np.concatenate(([self.last_agg_id], np.where(has_id, ids, -1))))[:-1]
        duplicate = has_id & (ids <= prev_max)
        fresh = has_id & ~duplicate
        gap = fresh & (prev_max >= 0) & (ids > prev_max + 1)
        candidate = fresh & valid
        late = candidate & (times < self.sealed_ms)
        candidate &= ~late
        seconds = times // SECOND_MS
        running = np.maximum.accumulate(np.concatenate(([self.head_second], np.where(candidate, seconds, -1))))[:-1]
        behind = candidate & (seconds < running)
        late |= behind
        accept = candidate & ~behind

        c = self.counters
        c.duplicates += int(duplicate.sum())
        c.rejected += int((~duplicate & ~valid).sum())
        c.late += int(late.sum())
        c.gaps += int(gap.sum())
        if np.any(fresh):
            self.last_agg_id = max(self.last_agg_id, int(ids[fresh].max()))
        accepted_idx = np.flatnonzero(accept)
        if np.any(gap):
            last_gap = int(np.flatnonzero(gap)[-1])
            after = accepted_idx[accepted_idx >= last_gap]
            self.coverage_start_ms = int(times[after[0]]) if len(after) else None
        elif self.coverage_start_ms is None and len(accepted_idx):
            self.coverage_start_ms = int(times[accepted_idx[0]])
        if len(accepted_idx) == 0:
            return []
        c.accepted += len(accepted_idx)
        return self._apply_accepted(
            ids[accept], times[accept], prices[accept], qtys[accept], qty_units[accept], sells[accept]
        )

    def _apply_accepted(
        self,
        ids: np.ndarray,
        times: np.ndarray,
        prices: np.ndarray,
        qtys: np.ndarray,
        qty_units: np.ndarray,
        sells: np.ndarray,
    ) -> list[Bar]:
        p = self.params
        n = len(times)
        quote = prices * qtys
        quote_units = notional_to_units(quote)

        # large trades: P99 frozen per minute, then the minute's sizes enter the histogram
        minutes = times // MINUTE_MS
        m_starts = np.concatenate(([0], np.flatnonzero(minutes[1:] != minutes[:-1]) + 1))
        bins = bin_index(qtys)
        bounds = m_starts.tolist() + [n]
        large = np.empty(n, dtype=bool)
        for start, end in pairwise(bounds):
            minute = int(minutes[start])
            if minute != self.threshold_minute:
                self.p95, self.p99, self.qty_samples = self._thresholds_at(minute * MINUTE_MS)
                self.threshold_minute = minute
            np.greater(qtys[start:end], self.p99, out=large[start:end])
            self.qty_hist.add(minute * MINUTE_MS // HOUR_MS, bins[start:end])

        rows = np.empty((n, 8), dtype=np.int64)
        buy_units = np.multiply(qty_units, ~sells, out=rows[:, 0])
        sell_units = np.subtract(qty_units, buy_units, out=rows[:, 1])
        rows[:, 2] = quote_units
        rows[:, 3] = 1
        np.multiply(buy_units, large, out=rows[:, 4])
        np.multiply(sell_units, large, out=rows[:, 5])
        whale_units = quote_units * (quote >= p.whale_usd)
        np.multiply(whale_units, ~sells, out=rows[:, 6])
        np.subtract(whale_units, rows[:, 6], out=rows[:, 7])

        seconds = times // SECOND_MS
        s_starts = np.concatenate(([0], np.flatnonzero(seconds[1:] != seconds[:-1]) + 1))
        self.seconds.add_grouped(seconds[s_starts], np.add.reduceat(rows, s_starts, axis=0))
        per_minute = np.add.reduceat(rows[:, :4], m_starts, axis=0)
        minute_numbers = minutes[m_starts]
        self.minutes.add_grouped(minute_numbers, per_minute)

        segments = segments_from_groups(MINUTE_MS, minute_numbers, m_starts, prices, per_minute, ids)
        closed = self.bars_1m.apply(segments)
        for bar in self.bars_atr.apply(segments):
            self.atr.update(bar)

        self.last_price = float(prices[-1])
        last_time = int(times.max())
        self.last_trade_ms = last_time if self.last_trade_ms is None else max(self.last_trade_ms, last_time)
        if self.first_trade_ms is None:
            self.first_trade_ms = int(times[0])
        self.head_second = max(self.head_second, int(seconds[-1]))
        return closed

    def _thresholds_at(self, time_ms: int) -> tuple[float, float, int]:
        p = self.params
        (q95, q99), n = self.qty_hist.quantiles_at(time_ms // HOUR_MS, (0.95, 0.99))
        if n < p.min_quantile_samples or q95 is None or q99 is None:
            return p.p95_floor, p.p99_floor, n
        return max(q95, p.p95_floor), max(q99, p.p99_floor), n

    # ------------------------------------------------------------------------------------------
    # other market records (see ``market_records``)
    # ------------------------------------------------------------------------------------------
    def apply_book(self, update: BookUpdate) -> None:
        self.market.apply_book(update)

    def apply_mark(self, update: MarkUpdate) -> None:
        self.market.apply_mark(update)

    def apply_liquidation(self, event: LiquidationEvent) -> None:
        self.market.apply_liquidation(event)

    def apply_indicator(self, update: IndicatorUpdate) -> None:
        self.market.apply_indicator(update)

    def apply_event(self, event: BookUpdate | MarkUpdate | LiquidationEvent | IndicatorUpdate) -> None:
        if isinstance(event, BookUpdate):
            self.apply_book(event)
        elif isinstance(event, MarkUpdate):
            self.apply_mark(event)
        elif isinstance(event, LiquidationEvent):
            self.apply_liquidation(event)
        elif isinstance(event, IndicatorUpdate):
            self.apply_indicator(event)
        else:
            raise TypeError(f"unknown market event {type(event).__name__}")

    # ------------------------------------------------------------------------------------------
    # time
    # ------------------------------------------------------------------------------------------
    def advance_to(self, now_ms: int) -> list[Bar]:
        """Close everything that ended by ``now_ms``; later trades before ``now_ms`` become late."""
        self.sealed_ms = max(self.sealed_ms, int(now_ms))
        for bar in self.bars_atr.close_until(now_ms):
            self.atr.update(bar)
        return self.bars_1m.close_until(now_ms)

    def is_warm(self, now_ms: int, required_window_ms: int) -> bool:
        """True only when uninterrupted trades cover ``[now - window, now)`` (not a timer)."""
        return self.coverage_start_ms is not None and self.coverage_start_ms <= now_ms - required_window_ms

    # ------------------------------------------------------------------------------------------
    # snapshot (pure)
    # ------------------------------------------------------------------------------------------
    def snapshot(
        self,
        now_ms: int,
        cvd_windows_ms: Iterable[int] = STANDARD_CVD_WINDOWS_MS,
        slope_windows_ms: Iterable[int] = (1_800_000,),
    ) -> Features:
        p = self.params
        if self.last_trade_ms is not None and self.last_trade_ms >= now_ms:
            raise ValueError(f"snapshot at {now_ms} is not after the last applied trade ({self.last_trade_ms})")
        if self.bars_atr.open_bar is not None and self.bars_atr.open_bar.close_time <= now_ms:
            raise ValueError(f"call advance_to({now_ms}) before snapshot({now_ms})")
        windows = sorted(set(cvd_windows_ms) | set(slope_windows_ms))
        for w in windows:
            if w % SECOND_MS or w <= 0 or w > p.minute_window_limit_ms:
                raise ValueError(f"CVD window {w} ms must be whole seconds and at most {p.minute_window_limit_ms} ms")
        slope_windows = sorted(set(slope_windows_ms))
        for w in slope_windows:
            if w > p.second_window_limit_ms:
                raise ValueError(f"slope window {w} ms exceeds the second ring ({p.second_window_limit_ms} ms)")

        step = p.slope_step_ms

        # every second-ring window this snapshot needs, as [start, end) bucket ranges
        def buckets(end_ms: int, window_ms: int) -> tuple[int, int]:
            end = (end_ms - 1) // SECOND_MS + 1  # first bucket at or after end_ms
            return end - window_ms // SECOND_MS, end

        second_windows = [w for w in windows if w <= p.second_window_limit_ms]
        ranges = {("cvd", 0, w): buckets(now_ms, w) for w in second_windows}
        for w in slope_windows:
            ranges[("cvd", 1, w)] = buckets(now_ms - step, w)
            ranges[("cvd", 2, w)] = buckets(now_ms - 2 * step, w)
        ranges[("vwap",)] = buckets(now_ms, p.vwap_window_ms)
        ranges[("large",)] = buckets(now_ms, p.large_window_ms)
        ranges[("whale",)] = buckets(now_ms, p.whale_window_ms)
        bounds = sorted({b for pair in ranges.values() for b in pair})
        position = {b: i for i, b in enumerate(bounds)}
        segments = self.seconds.interval_sums(bounds)
        prefix = np.zeros((segments.shape[0], len(bounds)), dtype=np.int64)
        np.cumsum(segments, axis=1, out=prefix[:, 1:])
        prefix_rows = prefix.tolist()

        def window(key: tuple, field: int) -> int:
            start, end = ranges[key]
            row = prefix_rows[field]
            return row[position[end]] - row[position[start]]

        def cvd_units(lag: int, window_ms: int) -> int:
            if window_ms <= p.second_window_limit_ms:
                return window(("cvd", lag, window_ms), 0) - window(("cvd", lag, window_ms), 1)
            hi = (now_ms - 1) // MINUTE_MS
            buy, sell = self.minutes.window_sum(hi - window_ms // MINUTE_MS + 1, hi, 0, 2).tolist()
            return buy - sell

        cvd_now = {w: cvd_units(0, w) for w in windows}
        cvd = tuple((w, units / QTY_SCALE) for w, units in cvd_now.items())
        slopes, accels = [], []
        for w in slope_windows:
            c0, c1, c2 = cvd_now[w], cvd_units(1, w), cvd_units(2, w)
            slopes.append((w, (c0 - c1) / QTY_SCALE))
            accels.append((w, ((c0 - c1) - (c1 - c2)) / QTY_SCALE))

        buy, sell, quote = (window(("vwap",), f) for f in range(3))
        volume_units = buy + sell
        vwap = (quote / NOTIONAL_SCALE) / (volume_units / QTY_SCALE) if volume_units else None
        large_buy, large_sell = window(("large",), 4), window(("large",), 5)
        whale_buy, whale_sell = window(("whale",), 6), window(("whale",), 7)
        whale_ratio = (whale_buy - whale_sell) / (whale_buy + whale_sell) if whale_buy + whale_sell else 0.0
        minute = now_ms // MINUTE_MS
        if minute == self.threshold_minute:
            p95, p99, samples = self.p95, self.p99, self.qty_samples
        else:
            p95, p99, samples = self._thresholds_at(now_ms)

        return Features(
            exchange=self.exchange,
            symbol=self.symbol,
            time_ms=int(now_ms),
            last_price=self.last_price,
            last_trade_ms=self.last_trade_ms,
            coverage_start_ms=self.coverage_start_ms,
            cvd=cvd,
            cvd_slope=tuple(slopes),
            cvd_accel=tuple(accels),
            vwap_30m=vwap,
            volume_30m=volume_units / QTY_SCALE,
            atr=self.atr.value,
            atr_percentile=self.atr.percentile(),
            atr_bars=self.atr.bars,
            p95_qty=p95,
            p99_qty=p99,
            qty_samples=samples,
            large_buy_qty_15m=large_buy / QTY_SCALE,
            large_sell_qty_15m=large_sell / QTY_SCALE,
            whale_buy_usd_15m=whale_buy / NOTIONAL_SCALE,
            whale_sell_usd_15m=whale_sell / NOTIONAL_SCALE,
            whale_ratio_15m=whale_ratio,
            **self.market.values_at(now_ms),
        )

    # ------------------------------------------------------------------------------------------
    # size and plain-data form
    # ------------------------------------------------------------------------------------------
    def capacity_cells(self) -> int:
        """Allocated cells of all bounded structures: constant whatever the trade rate or duration."""
        return (
            self.seconds.capacity_cells
            + self.minutes.capacity_cells
            + self.market.capacity_cells
            + self.qty_hist.capacity_cells
            + self.atr.history_len
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "params": asdict(self.params),
            "counters": asdict(self.counters),
            "last_agg_id": self.last_agg_id,
            "last_price": self.last_price,
            "last_trade_ms": self.last_trade_ms,
            "first_trade_ms": self.first_trade_ms,
            "coverage_start_ms": self.coverage_start_ms,
            "head_second": self.head_second,
            "sealed_ms": self.sealed_ms,
            "threshold_minute": self.threshold_minute,
            "p95": self.p95,
            "p99": self.p99,
            "qty_samples": self.qty_samples,
            "seconds": self.seconds.to_dict(),
            "minutes": self.minutes.to_dict(),
            "qty_hist": self.qty_hist.to_dict(),
            "bars_1m": self.bars_1m.to_dict(),
            "bars_atr": self.bars_atr.to_dict(),
            "atr": self.atr.to_dict(),
            "market": self.market.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolState:
        state = cls(data["exchange"], data["symbol"], StateParams(**data["params"]))
        state.counters = Counters(**data["counters"])
        for name in (
            "last_agg_id",
            "last_price",
            "last_trade_ms",
            "first_trade_ms",
            "coverage_start_ms",
            "head_second",
            "sealed_ms",
            "threshold_minute",
            "p95",
            "p99",
            "qty_samples",
        ):
            setattr(state, name, data[name])
        state.seconds = BucketRing.from_dict(data["seconds"])
        state.minutes = BucketRing.from_dict(data["minutes"])
        state.qty_hist = HourlyQuantileWindow.from_dict(data["qty_hist"])
        state.bars_1m = BarBuilder.from_dict(data["bars_1m"])
        state.bars_atr = BarBuilder.from_dict(data["bars_atr"])
        state.atr = WilderATR.from_dict(data["atr"])
        state.market = MarketRecords.from_dict(data["market"], state.params, state.counters)
        return state
