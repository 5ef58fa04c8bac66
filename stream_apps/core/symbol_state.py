"""Per-symbol engine state: bucketed windows, bars, ATR, size quantiles and the latest market records.

Why this shape: DESIGN §2 wants state that a Faust table can hold and restore (plain data), that
recovers fast and stays bounded (bucketed aggregates, never per-trade lists), and that live and replay
update identically. So:

- trades update fixed-size rings of per-second and per-minute integer sums (see ``ring``/``units``);
  CVD, VWAP, large-trade and whale flow over any window are sums of buckets, computed on read;
- the 24-h trade-size distribution is an hourly log-linear histogram (see ``quantiles``);
- 1m and 5m bars are built from the same batches; closed 5m bars drive a Wilder ATR;
- book, mark, liquidation and indicator records live in ``MarketRecords`` (latest values, staleness);
- optionally (``detectors``, set from the strategies' ``detectors`` section) VPIN, Kyle's lambda and
  Amihud (``core.detectors``), fed the accepted trades; their changes are logged with the times from
  which they hold, so a segment's evaluation times read them as the other windows. Likewise the flow
  detectors (``flow``: CVD–price divergence from the trades, OI spikes and liquidation windows from
  the other inputs), and the book detectors (``orderbook``: walls and iceberg refills from the book
  snapshots' levels and the trades between them: a segment's snapshots are held until its trades are
  in, then both are merged in time order; trades with no snapshot waiting are counted at once, so a
  caller applies a span's books before its trades, as the engine does).

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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .atr import WilderATR
from .bars import Bar, BarBuilder, segments_from_groups
from .detectors import (
    BookDetectors,
    BookParams,
    DetectorLog,
    DetectorParams,
    FlowDetectors,
    FlowParams,
    MicrostructureDetectors,
)
from .detectors.book import BOOK_FIELDS
from .detectors.flow import FLOW_FIELDS
from .events import (
    BookBatch,
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    MarkUpdate,
    TradeBatch,
    concat_columns,
)
from .features import Features
from .frame import SCALAR_FIELDS, FeatureFrame, distinct_sorted, exact_ratio
from .kernels import apply_minutes, ring_window_sums, thresholds_at
from .market_records import MarketRecords, MarketTimeline
from .minute_bars import MINUTE_BAR_KIND
from .params import MINUTE_MS, SECOND_MS, Counters, StateParams
from .quantiles import HOUR_MS, MIN_EXPONENT, SUB_BUCKETS, HourlyQuantileWindow, bin_index
from .ring import BucketRing
from .units import NOTIONAL_SCALE, QTY_SCALE, notional_to_units, qty_to_units

__all__ = ["MINUTE_BAR_KIND", "STANDARD_CVD_WINDOWS_MS", "Counters", "SegmentLog", "StateParams", "SymbolState"]

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


@dataclass
class SegmentLog:
    """What ``apply_segment`` saw, so the segment's evaluation times can be read afterwards."""

    pre_last_price: float | None
    pre_last_trade_ms: int | None
    pre_atr: float | None
    pre_atr_percentile: float
    pre_atr_bars: int
    pre_threshold_minute: int
    pre_thresholds: tuple[float, float, int]
    wanted: list[int]  # minutes whose P95/P99 the evaluation times need, ascending
    trade_times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    trade_prices: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    atr: list[tuple[int, float | None, float, int]] = field(default_factory=list)  # (bar close, value, pct, bars)
    thresholds: dict[int, tuple[float, float, int]] = field(default_factory=dict)  # minute -> (p95, p99, n)
    pre_detectors: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # (vpin, kyle, amihud) before
    detectors: DetectorLog = field(default_factory=DetectorLog)  # their changes during the segment
    pre_divergence: tuple[float, float, float] = (np.nan, np.nan, np.nan)  # flow: divergence before
    divergence: DetectorLog = field(default_factory=DetectorLog)  # its changes during the segment
    pre_walls: tuple[float, ...] = (np.nan,) * 7  # book detectors: nearest walls before
    walls: DetectorLog = field(default_factory=DetectorLog)  # their changes during the segment


class SymbolState:
    """All state of one (exchange, symbol): update with ``apply_*``, read with ``snapshot``."""

    def __init__(
        self,
        exchange: str,
        symbol: str,
        params: StateParams | None = None,
        detectors: DetectorParams | None = None,
        flow: FlowParams | None = None,
        book: BookParams | None = None,
    ) -> None:
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
        self.approx_until_ms: int | None = None  # minute bars stood in for trades before this (warm start)
        self.head_second = -1
        self.sealed_ms = 0
        self.threshold_minute = -1
        self.p95 = p.p95_floor
        self.p99 = p.p99_floor
        self.qty_samples = 0
        second_buckets, minute_buckets, _ = p.ring_sizes
        self.seconds = BucketRing(SECOND_MS, second_buckets, _SECOND_FIELDS)
        self.minutes = BucketRing(MINUTE_MS, minute_buckets, _MINUTE_FIELDS)
        self.qty_hist = HourlyQuantileWindow(p.qty_window_hours)
        self.bars_1m = BarBuilder(MINUTE_MS)
        self.bars_atr = BarBuilder(p.atr_bar_ms)
        self.atr = WilderATR(p.atr_period, p.atr_history, p.atr_min_history)
        self.market = MarketRecords(p, self.counters)
        self.detectors = MicrostructureDetectors(detectors) if detectors is not None else None
        self.flow = FlowDetectors(self._flow_params(flow)) if flow is not None else None
        self.orderbook = BookDetectors(self._book_params(book)) if book is not None else None
        self._book_inputs: tuple[list[BookBatch], list[tuple]] = ([], [])  # held for ``orderbook`` until merged
        self._log: SegmentLog | None = None  # set while ``apply_segment`` runs

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

    def clean_prefix(self, batch: TradeBatch) -> int:
        """How many leading trades of ``batch`` ``apply_trades`` would take on its clean path (ids
        consecutive and continuing this symbol's, time order, not late, valid price and quantity)."""
        n = len(batch)
        if n == 0:
            return 0
        ids, times, prices, qtys = batch.agg_id, batch.time_ms, batch.price, batch.qty
        if n <= 64 or not np.isfinite(qtys).all():  # small or odd: the exact rule, then bisect the bad spot
            if self.is_clean(batch):
                return n
            lo, hi = 0, n  # largest clean prefix (cleanliness of a prefix is monotone)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self.is_clean(batch.take(slice(0, mid))):
                    lo = mid
                else:
                    hi = mid - 1
            return lo
        with np.errstate(invalid="ignore"):
            ok = (prices > 0) & np.isfinite(prices) & (qty_to_units(qtys) > 0)
        ok[1:] &= (ids[1:] - ids[:-1] == 1) & (times[1:] >= times[:-1])
        first_ok = (
            ids[0] >= 0
            and (self.last_agg_id < 0 or ids[0] == self.last_agg_id + 1)
            and times[0] >= self.sealed_ms
            and times[0] // SECOND_MS >= self.head_second
        )
        ok[0] &= bool(first_ok)
        bad = np.flatnonzero(~ok)
        return int(bad[0]) if len(bad) else n

    def is_clean(self, batch: TradeBatch) -> bool:
        """Would ``apply_trades`` accept every trade of ``batch`` (the common case: consecutive ids
        continuing this symbol's, time order, valid prices and quantities)?"""
        if len(batch) == 0:
            return True
        if not np.isfinite(batch.qty).all():
            return False
        return self._is_clean(batch.agg_id, batch.time_ms, batch.price, batch.qty, qty_to_units(batch.qty))

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

        # large trades: P99 frozen per minute, then the minute's sizes enter the histogram (compiled loop)
        minutes = times // MINUTE_MS
        m_starts = np.concatenate(([0], np.flatnonzero(minutes[1:] != minutes[:-1]) + 1))
        large = self._minute_thresholds(qtys, bin_index(qtys), m_starts, minutes[m_starts])

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

        if self.detectors is not None:
            units = quote_units if self.detectors.params.vpin_volume_unit == "quote" else qty_units
            changes = self.detectors.update(times, prices, qtys, sells, units)
            if self._log is not None:
                self._log.detectors.extend(changes)
        if self.flow is not None and self.flow.divergence_on:
            changes = self.flow.update(times, prices, qty_units, sells)
            if self._log is not None:
                self._log.divergence.extend(changes)
        if self.orderbook is not None:
            self._book_inputs[1].append((times, prices, qty_units, sells))
            if not self._book_inputs[0]:  # no snapshot waits for them: count them now (nothing piles up)
                self._merge_book_inputs()

        segments = segments_from_groups(MINUTE_MS, minute_numbers, m_starts, prices, per_minute, ids)
        closed = self.bars_1m.apply(segments)
        for bar in self.bars_atr.apply(segments):
            self._update_atr(bar)

        self.last_price = float(prices[-1])
        last_time = int(times.max())
        self.last_trade_ms = last_time if self.last_trade_ms is None else max(self.last_trade_ms, last_time)
        if self.first_trade_ms is None:
            self.first_trade_ms = int(times[0])
        self.head_second = max(self.head_second, int(seconds[-1]))
        return closed

    def _minute_thresholds(
        self, qtys: np.ndarray, bins: np.ndarray, starts: np.ndarray, minute_numbers: np.ndarray
    ) -> np.ndarray:
        """Per minute group: freeze P95/P99 at the minute's first trade (from the trades before it),
        flag the trades above P99 as large, count the sizes into the hourly histogram; with a segment
        log, also the thresholds of the wanted minutes and of every minute frozen."""
        p, hist, log = self.params, self.qty_hist, self._log
        wanted = np.asarray(log.wanted if log is not None else [], dtype=np.int64)
        wanted_out = np.full((len(wanted), 3), np.nan)
        minute_out = np.full((len(starts), 3), np.nan)
        state = np.array([self.threshold_minute, self.p95, self.p99, self.qty_samples], dtype=np.float64)
        large = np.empty(len(qtys), dtype=bool)
        hist.head = int(
            apply_minutes(
                qtys,
                bins,
                starts,
                minute_numbers,
                hist._rows,
                hist._total,
                hist._ids,
                hist.head,
                hist.window_hours,
                np.array([p.p95_floor, p.p99_floor]),
                p.min_quantile_samples,
                SUB_BUCKETS,
                MIN_EXPONENT,
                state,
                wanted,
                wanted_out,
                minute_out,
                large,
            )
        )
        self.threshold_minute, self.p95, self.p99, self.qty_samples = (
            int(state[0]),
            float(state[1]),
            float(state[2]),
            int(state[3]),
        )
        if log is not None:
            done = ~np.isnan(wanted_out[:, 0])
            for minute, (p95, p99, n) in zip(wanted[done].tolist(), wanted_out[done].tolist()):
                log.thresholds.setdefault(minute, (p95, p99, int(n)))
            del log.wanted[: int(done.sum())]
            computed = ~np.isnan(minute_out[:, 0])
            for minute, (p95, p99, n) in zip(minute_numbers[computed].tolist(), minute_out[computed].tolist()):
                log.thresholds[minute] = (p95, p99, int(n))
        return large

    def _thresholds_at(self, time_ms: int) -> tuple[float, float, int]:
        p, hist = self.params, self.qty_hist
        p95, p99, n = thresholds_at(
            hist._rows,
            hist._total,
            hist._ids,
            time_ms // HOUR_MS,
            hist.window_hours,
            np.array([p.p95_floor, p.p99_floor]),
            p.min_quantile_samples,
            SUB_BUCKETS,
            MIN_EXPONENT,
        ).tolist()
        return p95, p99, int(n)

    # ------------------------------------------------------------------------------------------
    # other market records (see ``market_records``)
    # ------------------------------------------------------------------------------------------
    def apply_book(self, update: BookUpdate) -> None:
        self.market.apply_book(update)
        if self.orderbook is not None and update.levels is not None:
            self._book_inputs[0].append(BookBatch.from_updates([update]))

    def apply_mark(self, update: MarkUpdate) -> None:
        self.market.apply_mark(update)

    def apply_liquidation(self, event: LiquidationEvent) -> None:
        self.market.apply_liquidation(event)
        if self.flow is not None:
            self.flow.apply_events([event])

    def apply_indicator(self, update: IndicatorUpdate) -> None:
        if update.kind == MINUTE_BAR_KIND:
            self.apply_minute_bars([update])
            return
        self.market.apply_indicator(update)
        if self.flow is not None:
            self.flow.apply_events([update])

    def apply_minute_bars(self, bars: list[IndicatorUpdate]) -> None:
        """Minute bars (``kind`` ``kline_1m``: a warm start's 1m klines, ``extra`` open/high/low/close,
        buy_volume/sell_volume in base units, quote_volume, trades) standing in for the trades of minutes
        before any trade was applied. They fill the minute buckets (CVD and volume of the 4h/24h windows,
        exact to the minute), the 1m and 5m bars (ATR, exact) and the price, start the coverage, and set
        ``approx_until_ms``: the second buckets, size quantiles and large/whale flows only hold what
        trades bring after. A bar at or after the first applied trade is counted as rejected (it would
        double the trades); so is a malformed one."""
        rows, kept = [], []
        for bar in sorted(bars, key=lambda b: b.value_time_ms):
            x, minute = bar.extra, bar.value_time_ms // MINUTE_MS
            try:
                o, h, lo, c = (float(x[k]) for k in ("open", "high", "low", "close"))
                buy, sell, quote, n = (float(x[k]) for k in ("buy_volume", "sell_volume", "quote_volume", "trades"))
            except (KeyError, TypeError, ValueError):
                self.counters.rejected += 1
                continue
            late = self.first_trade_ms is not None or minute * MINUTE_MS < (self.approx_until_ms or 0)
            if (
                late
                or not (0 < lo <= min(o, c) <= max(o, c) <= h)
                or min(buy, sell, quote, n) < 0
                or not all(np.isfinite((o, h, lo, c, buy, sell, quote)))
            ):
                self.counters.rejected += 1
                continue
            rows.append(
                (
                    minute,
                    int(qty_to_units(np.array([buy]))[0]),
                    int(qty_to_units(np.array([sell]))[0]),
                    int(notional_to_units(np.array([quote]))[0]),
                    int(n),
                )
            )
            kept.append((minute, o, h, lo, c))
        if not rows:
            return
        table = np.array(rows, dtype=np.int64)
        self.minutes.add_grouped(table[:, 0], table[:, 1:])
        segments = [
            Bar(m * MINUTE_MS, (m + 1) * MINUTE_MS, o, h, lo, c, int(b + s_), int(b), int(s_), int(q), int(n), -1, -1)
            for (m, o, h, lo, c), (_, b, s_, q, n) in zip(kept, table.tolist())
        ]
        self.bars_1m.apply(segments)  # (their bars are not published: the minutes were history)
        for bar in self.bars_atr.apply(segments):
            self._update_atr(bar)
        last_minute = int(table[-1, 0])
        self.last_price = kept[-1][4]
        self.last_trade_ms = (last_minute + 1) * MINUTE_MS - 1
        if self.coverage_start_ms is None:
            self.coverage_start_ms = int(table[0, 0]) * MINUTE_MS
        self.approx_until_ms = (last_minute + 1) * MINUTE_MS
        self.sealed_ms = max(self.sealed_ms, self.approx_until_ms)

    def apply_market_segment(self, books, marks, others: list[LiquidationEvent | IndicatorUpdate]) -> MarketTimeline:
        """``MarketRecords.apply_segment``, and the flow detectors' OI and liquidations (their OI log
        in the timeline, so each evaluation time of the segment reads what it saw); minute bars go to
        ``apply_minute_bars``."""
        minute_bars = [e for e in others if isinstance(e, IndicatorUpdate) and e.kind == MINUTE_BAR_KIND]
        if minute_bars:
            self.apply_minute_bars(minute_bars)
            others = [e for e in others if not (isinstance(e, IndicatorUpdate) and e.kind == MINUTE_BAR_KIND)]
        timeline = self.market.apply_segment(books, marks, others)
        if self.orderbook is not None and books is not None and len(books):
            self._book_inputs[0].append(books)  # merged with the segment's trades once they are in
        if self.flow is not None and others:
            timeline.flow = self.flow.apply_events(others)
        return timeline

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
        if self.detectors is not None:
            changes = self.detectors.advance_to(now_ms)
            if self._log is not None:
                self._log.detectors.extend(changes)
        if self.flow is not None and self.flow.divergence_on:
            changes = self.flow.advance_to(now_ms)
            if self._log is not None:
                self._log.divergence.extend(changes)
        self._merge_book_inputs()
        for bar in self.bars_atr.close_until(now_ms):
            self._update_atr(bar)
        return self.bars_1m.close_until(now_ms)

    def _update_atr(self, bar: Bar) -> None:
        self.atr.update(bar)
        if self._log is not None:
            self._log.atr.append((bar.close_time, self.atr.value, self.atr.percentile(), self.atr.bars))

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
        """The features at ``now_ms`` from the state as it is (one row of ``snapshot_frame``)."""
        if self.last_trade_ms is not None and self.last_trade_ms >= now_ms:
            raise ValueError(f"snapshot at {now_ms} is not after the last applied trade ({self.last_trade_ms})")
        if self.bars_atr.open_bar is not None and self.bars_atr.open_bar.close_time <= now_ms:
            raise ValueError(f"call advance_to({now_ms}) before snapshot({now_ms})")
        frame = self.snapshot_frame(np.array([now_ms], dtype=np.int64), cvd_windows_ms, slope_windows_ms)
        return frame.row(0)

    # ------------------------------------------------------------------------------------------
    # many evaluation times at once (the engine's columnar path)
    # ------------------------------------------------------------------------------------------
    @staticmethod
    def segment_limit_ms(params: StateParams, cvd_windows_ms: Iterable[int], slope_windows_ms: Iterable[int]) -> int:
        """Longest span (first to last evaluation time) that ``apply_segment`` + ``snapshot_frame`` can
        answer: the rings must still hold the oldest bucket the first time reads after the trades up to
        the last time are in (``StateParams.replay_margin_s`` widens this for replays)."""
        p = params
        second_buckets, minute_buckets, liq_buckets = p.ring_sizes
        windows = set(cvd_windows_ms) | set(slope_windows_ms)
        second_windows = [w for w in windows if w <= p.second_window_limit_ms]
        reach_s = max([*second_windows, p.vwap_window_ms, p.large_window_ms, p.whale_window_ms]) // SECOND_MS
        reach_s += 2 * p.slope_step_ms // SECOND_MS + 2
        minute_windows = [w // MINUTE_MS for w in windows if w > p.second_window_limit_ms]
        limits = [
            (second_buckets - reach_s - 1) * SECOND_MS,
            (liq_buckets - p.liq_window_ms // SECOND_MS - 2) * SECOND_MS,
        ]
        if minute_windows:
            # whole minutes before the current one are read from the minute ring (the current one from
            # seconds), so the last time's minute may be up to ``buckets - window`` minutes ahead
            limits.append((minute_buckets - max(minute_windows)) * MINUTE_MS)
        return max(min(limits), 0)

    def apply_segment(self, batch: TradeBatch | None, times: np.ndarray) -> tuple[SegmentLog, list[Bar]]:
        """Apply the trades of a segment of evaluation ``times`` at once and log what the times need
        to be read afterwards (``snapshot_frame``): the trades, every ATR update with the close time of
        its bar, and the P95/P99 of each minute of ``times``. Returns the log and the 1-minute bars
        the trades closed (the engine places each at the evaluation that would have emitted it)."""
        log = SegmentLog(
            self.last_price,
            self.last_trade_ms,
            self.atr.value,
            self.atr.percentile(),
            self.atr.bars,
            self.threshold_minute,
            (self.p95, self.p99, self.qty_samples),
            distinct_sorted(times // MINUTE_MS).tolist(),
        )
        if self.detectors is not None:
            log.pre_detectors = self.detectors.values
        if self.flow is not None:
            log.pre_divergence = self.flow.divergence
        if self.orderbook is not None:
            log.pre_walls = self.orderbook.current
        self._log = log
        try:
            closed: list[Bar] = []
            if batch is not None and len(batch):
                log.trade_times, log.trade_prices = batch.time_ms, batch.price
                closed = self.apply_trades(batch)
            self._merge_book_inputs()
            self._log_thresholds_before(None)
        finally:
            self._log = None
        return log, closed

    def _log_thresholds_before(self, minute: int | None) -> None:
        """P95/P99 of the requested minutes before ``minute`` (None: all the rest) from the histogram as
        it is now: it holds every trade before them (a minute's own thresholds are frozen at its first
        trade, from the trades before it; a minute already frozen keeps its frozen values)."""
        log = self._log
        assert log is not None
        while log.wanted and (minute is None or log.wanted[0] < minute):
            wanted = log.wanted.pop(0)
            if wanted == self.threshold_minute:
                log.thresholds[wanted] = (self.p95, self.p99, self.qty_samples)
            elif wanted not in log.thresholds:
                log.thresholds[wanted] = self._thresholds_at(wanted * MINUTE_MS)

    def advance_segment(self, now_ms: int, log: SegmentLog) -> list[Bar]:
        """``advance_to`` at the end of a segment, its ATR updates added to the segment's log."""
        self._log = log
        try:
            return self.advance_to(now_ms)
        finally:
            self._log = None

    def snapshot_frame(  # noqa: C901 - over the complexity limit, to be split
        self,
        times: np.ndarray,
        cvd_windows_ms: Iterable[int] = STANDARD_CVD_WINDOWS_MS,
        slope_windows_ms: Iterable[int] = (1_800_000,),
        log: SegmentLog | None = None,
        timeline: MarketTimeline | None = None,
    ) -> FeatureFrame:
        """Features at every one of ``times`` (sorted), as columns (pure read).

        Without ``log`` the state as it is answers every time (``snapshot``). With the log of
        ``apply_segment`` (and ``advance_segment``, and the ``MarketTimeline`` of the segment's other
        inputs) each time sees only the trades and inputs before it: window
        sums are read from buckets that end before the time, and everything else comes from the logs.
        """
        p = self.params
        times = np.asarray(times, dtype=np.int64)
        n = len(times)
        windows = sorted(set(cvd_windows_ms) | set(slope_windows_ms))
        for w in windows:
            if w % SECOND_MS or w <= 0 or w > p.minute_window_limit_ms:
                raise ValueError(f"CVD window {w} ms must be whole seconds and at most {p.minute_window_limit_ms} ms")
        slope_windows = sorted(set(slope_windows_ms))
        for w in slope_windows:
            if w > p.second_window_limit_ms:
                raise ValueError(f"slope window {w} ms exceeds the second ring ({p.second_window_limit_ms} ms)")
        step = p.slope_step_ms
        values: dict[str, np.ndarray] = {}

        # window sums: every window of every time from one prefix sum per ring (compiled)
        def ends(lag: int) -> np.ndarray:
            return (times - lag * step - 1) // SECOND_MS + 1  # first bucket at or after the window's end

        end0 = ends(0)
        specs: list[tuple[np.ndarray, int]] = []  # (end buckets, window buckets), n rows each
        second_windows = [w for w in windows if w <= p.second_window_limit_ms]
        for w in second_windows:
            specs.append((end0, w // SECOND_MS))
        lagged = {lag: ends(lag) for lag in (1, 2)} if slope_windows else {}
        for w in slope_windows:
            specs += [(lagged[1], w // SECOND_MS), (lagged[2], w // SECOND_MS)]
        specs += [
            (end0, p.vwap_window_ms // SECOND_MS),
            (end0, p.large_window_ms // SECOND_MS),
            (end0, p.whale_window_ms // SECOND_MS),
        ]
        minute_windows = [w for w in windows if w > p.second_window_limit_ms]
        if minute_windows:
            hi_minute = (times - 1) // MINUTE_MS  # the minute holding t - 1 ms: in the window up to t
            partial_start = hi_minute * (MINUTE_MS // SECOND_MS)  # its seconds before t: from the second ring
            specs.append((end0, -1))
        starts = np.concatenate([e - w if w >= 0 else partial_start for e, w in specs])
        sums = ring_window_sums(
            self.seconds._values, self.seconds.head, starts, np.concatenate([e for e, _ in specs])
        ).reshape(len(specs), n, -1)
        at = dict(
            zip(
                [("cvd", w) for w in second_windows]
                + [(lag, w) for w in slope_windows for lag in (1, 2)]
                + ["vwap", "large", "whale", "partial"],
                sums,
            )
        )
        cvd_now: dict[int, np.ndarray] = {w: at[("cvd", w)][:, 0] - at[("cvd", w)][:, 1] for w in second_windows}
        if minute_windows:
            m_ends = np.concatenate([hi_minute] * len(minute_windows))
            m_starts = np.concatenate([hi_minute - w // MINUTE_MS + 1 for w in minute_windows])
            full = ring_window_sums(self.minutes._values, self.minutes.head, m_starts, m_ends)
            full = full.reshape(len(minute_windows), n, -1)  # whole minutes before the current one
            part = at["partial"]
            for k, w in enumerate(minute_windows):
                cvd_now[w] = (full[k, :, 0] + part[:, 0]) - (full[k, :, 1] + part[:, 1])
        cvd_now = {w: cvd_now[w] for w in windows}
        lag_cvd = {(lag, w): at[(lag, w)][:, 0] - at[(lag, w)][:, 1] for w in slope_windows for lag in (1, 2)}

        vwap_sums, large_sums, whale_sums = at["vwap"], at["large"], at["whale"]
        volume_units = vwap_sums[:, 0] + vwap_sums[:, 1]
        qty_columns = [*cvd_now.values()]
        for w in slope_windows:
            c0, c1, c2 = cvd_now[w], lag_cvd[(1, w)], lag_cvd[(2, w)]
            qty_columns += [c0 - c1, (c0 - c1) - (c1 - c2)]
        qty_columns += [volume_units, large_sums[:, 4], large_sums[:, 5]]
        qty_values = exact_ratio(np.concatenate(qty_columns), QTY_SCALE).reshape(len(qty_columns), n)
        notional_values = exact_ratio(
            np.concatenate((vwap_sums[:, 2], whale_sums[:, 6], whale_sums[:, 7])), NOTIONAL_SCALE
        ).reshape(3, n)
        cvd = dict(zip(windows, qty_values[: len(windows)]))
        slopes = {w: qty_values[len(windows) + 2 * k] for k, w in enumerate(slope_windows)}
        accels = {w: qty_values[len(windows) + 2 * k + 1] for k, w in enumerate(slope_windows)}
        volume, large_buy_qty, large_sell_qty = qty_values[-3:]
        traded = volume_units != 0
        vwap = np.full(n, np.nan)
        if traded.any():
            vwap[traded] = notional_values[0][traded] / volume[traded]
        whale_buy, whale_sell = whale_sums[:, 6], whale_sums[:, 7]
        whale_total = whale_buy + whale_sell
        whale_ratio = np.zeros(n)
        flowing = whale_total != 0
        if flowing.any():
            whale_ratio[flowing] = exact_ratio((whale_buy - whale_sell)[flowing], whale_total[flowing])

        # last trade, ATR and size quantiles: from the segment's logs, else the state
        last_price = np.full(n, np.nan if self.last_price is None else self.last_price)
        last_trade = np.full(n, np.nan if self.last_trade_ms is None else float(self.last_trade_ms))
        atr_value = np.full(n, np.nan if self.atr.value is None else self.atr.value)
        atr_pct = np.full(n, self.atr.percentile())
        atr_bars = np.full(n, float(self.atr.bars))
        if log is not None:
            last_price[:] = np.nan if log.pre_last_price is None else log.pre_last_price
            last_trade[:] = np.nan if log.pre_last_trade_ms is None else float(log.pre_last_trade_ms)
            if len(log.trade_times):
                index = np.searchsorted(log.trade_times, times, side="left") - 1
                has = index >= 0
                last_price[has] = log.trade_prices[index[has]]
                last_trade[has] = log.trade_times[index[has]]
            atr_value[:] = np.nan if log.pre_atr is None else log.pre_atr
            atr_pct[:], atr_bars[:] = log.pre_atr_percentile, float(log.pre_atr_bars)
            entries = log.atr
            if entries:
                close_times = np.array([e[0] for e in entries], dtype=np.int64)
                index = np.searchsorted(close_times, times, side="right") - 1
                has = index >= 0
                table = np.array([[np.nan if e[1] is None else e[1], e[2], e[3]] for e in entries])
                atr_value[has], atr_pct[has], atr_bars[has] = table[index[has]].T
            minutes = (times // MINUTE_MS).tolist()
            quantiles = np.array([log.thresholds[m] for m in minutes], dtype=np.float64).reshape(n, 3)
        else:
            minute_values: dict[int, tuple[float, float, int]] = {}
            for m in set((times // MINUTE_MS).tolist()):
                minute_values[m] = (
                    (self.p95, self.p99, self.qty_samples)
                    if m == self.threshold_minute
                    else self._thresholds_at(m * MINUTE_MS)
                )
            quantiles = np.array([minute_values[m] for m in (times // MINUTE_MS).tolist()], dtype=np.float64).reshape(
                n, 3
            )

        values["last_price"] = last_price
        values["last_trade_ms"] = last_trade
        values["coverage_start_ms"] = np.full(
            n, np.nan if self.coverage_start_ms is None else float(self.coverage_start_ms)
        )
        values["approx_until_ms"] = np.full(n, np.nan if self.approx_until_ms is None else float(self.approx_until_ms))
        values["vwap_30m"] = vwap
        values["volume_30m"] = volume
        values["atr"] = atr_value
        values["atr_percentile"] = atr_pct
        values["atr_bars"] = atr_bars
        values["p95_qty"], values["p99_qty"], values["qty_samples"] = quantiles.T.copy()
        values["large_buy_qty_15m"] = large_buy_qty
        values["large_sell_qty_15m"] = large_sell_qty
        values["whale_buy_usd_15m"], values["whale_sell_usd_15m"] = notional_values[1], notional_values[2]
        values["whale_ratio_15m"] = whale_ratio
        values.update(self.market.values_many(times, timeline))
        if self.detectors is None:
            detected = np.full((n, 3), np.nan)
        elif log is not None:
            detected = log.detectors.at(times, log.pre_detectors)
        else:
            detected = np.empty((n, 3))
            detected[:] = self.detectors.values
        values["vpin"], values["kyle_lambda"], values["amihud"] = detected.T.copy()
        if self.flow is None:
            for name in FLOW_FIELDS:
                values[name] = np.full(n, np.nan)
        else:
            divergence = log.divergence.at(times, log.pre_divergence) if log is not None else None
            oi = timeline.flow.at(times) if timeline is not None and timeline.flow is not None else None
            values.update(self.flow.values_many(times, divergence, oi))
        if self.orderbook is None:
            for name in BOOK_FIELDS:
                values[name] = np.full(n, np.nan)
        else:
            walls = log.walls.at(times, log.pre_walls) if log is not None else None
            values.update(self.orderbook.values_many(times, walls))
        return FeatureFrame(
            self.exchange, self.symbol, times, {name: values[name] for name in SCALAR_FIELDS}, cvd, slopes, accels
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
            + (self.detectors.capacity_cells if self.detectors is not None else 0)
            + (self.flow.capacity_cells if self.flow is not None else 0)
            + (self.orderbook.capacity_cells if self.orderbook is not None else 0)
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "params": asdict(self.params),
            "counters": asdict(self.counters),
            "last_agg_id": self.last_agg_id,
            "last_price": self.last_price,
            "last_trade_ms": self.last_trade_ms,
            "first_trade_ms": self.first_trade_ms,
            "coverage_start_ms": self.coverage_start_ms,
            "approx_until_ms": self.approx_until_ms,
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
        if self.detectors is not None:  # absent when off: snapshots stay as they were
            data["detectors"] = self.detectors.to_dict()
        if self.flow is not None:
            data["flow"] = self.flow.to_dict()
        if self.orderbook is not None:
            self._merge_book_inputs()  # nothing held: the engine merges at every segment
            data["orderbook"] = self.orderbook.to_dict()
        return data

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
        state.approx_until_ms = data.get(
            "approx_until_ms"
        )  # (absent from states saved before the warm start's approximation)
        state.seconds = BucketRing.from_dict(data["seconds"])
        state.minutes = BucketRing.from_dict(data["minutes"])
        state.qty_hist = HourlyQuantileWindow.from_dict(data["qty_hist"])
        state.bars_1m = BarBuilder.from_dict(data["bars_1m"])
        state.bars_atr = BarBuilder.from_dict(data["bars_atr"])
        state.atr = WilderATR.from_dict(data["atr"])
        state.market = MarketRecords.from_dict(data["market"], state.params, state.counters)
        if "detectors" in data:
            state.detectors = MicrostructureDetectors.from_dict(data["detectors"])
        if "flow" in data:
            state.flow = FlowDetectors.from_dict(data["flow"])
        if "orderbook" in data:
            state.orderbook = BookDetectors.from_dict(data["orderbook"])
        return state

    def use_detectors(
        self, params: DetectorParams | None, flow: FlowParams | None = None, book: BookParams | None = None
    ) -> None:
        """Keep the detectors if their parameters are ``params`` (and ``flow``); otherwise start them
        afresh (their windows fill again from the next inputs) or, with None, drop them (a restored
        state after the strategies' ``detectors`` section changed)."""
        current = self.detectors.params if self.detectors is not None else None
        if current != params:
            self.detectors = MicrostructureDetectors(params) if params is not None else None
        flow = self._flow_params(flow) if flow is not None else None
        if (self.flow.params if self.flow is not None else None) != flow:
            self.flow = FlowDetectors(flow) if flow is not None else None
        book = self._book_params(book) if book is not None else None
        if (self.orderbook.params if self.orderbook is not None else None) != book:
            self.orderbook = BookDetectors(book) if book is not None else None

    def _book_params(self, book: BookParams) -> BookParams:
        """``book`` with its count ring as long as the engine's segments need (as ``_flow_params``)."""
        late = self.params.ring_sizes[2] - self.params.liq_window_ms // SECOND_MS
        return replace(book, late_s=max(late, 0))

    def _merge_book_inputs(self) -> None:
        """Feed the held book snapshots and accepted trades to ``orderbook`` merged in time order (a
        trade at a snapshot's time before it); its log goes to the segment's."""
        books, trades = self._book_inputs
        if self.orderbook is None or (not books and not trades):
            return
        self._book_inputs = ([], [])
        if books:
            batch = concat_columns(books)
            order = np.argsort(batch.time_ms, kind="stable")
            book_times, levels = batch.time_ms[order], batch.levels[order]
        else:
            book_times, levels = np.empty(0, dtype=np.int64), np.empty(0, dtype=object)
        if trades:
            times, prices, units, sells = (np.concatenate(c) for c in zip(*trades))
            if len(times) > 1 and np.any(times[1:] < times[:-1]):
                order = np.argsort(times, kind="stable")
                times, prices, units, sells = times[order], prices[order], units[order], sells[order]
        else:
            times, prices, units, sells = (
                np.empty(0, dtype=np.int64),
                np.empty(0),
                np.empty(0, dtype=np.int64),
                np.empty(0, dtype=bool),
            )
        changes = self.orderbook.update(book_times, levels, times, prices, units, sells)
        if self._log is not None:
            self._log.walls.extend(changes)

    def _flow_params(self, flow: FlowParams) -> FlowParams:
        """``flow`` with its liquidation ring as tolerant of late records as the state's own (and as
        long as the engine's segments need: the replay margin counts)."""
        late = self.params.ring_sizes[2] - self.params.liq_window_ms // SECOND_MS
        return replace(flow, late_s=max(late, 0))
