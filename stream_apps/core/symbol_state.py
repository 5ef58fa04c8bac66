"""Per-symbol engine state: bucketed windows, bars, ATR, size quantiles and the latest market records.

Why this shape: DESIGN §2 wants state that a Faust table can hold and restore (plain data), that
recovers fast and stays bounded (bucketed aggregates, never per-trade lists), and that live and replay
update identically. So:

- trades update fixed-size rings of per-second and per-minute integer sums (``flow_windows``; see
  ``ring``/``units``); CVD, VWAP, large-trade and whale flow over any window are sums of buckets,
  computed on read;
- the 24-h trade-size distribution is an hourly log-linear histogram (``size_thresholds``; see
  ``quantiles``);
- 1m and 5m bars are built from the same batches; closed 5m bars drive a Wilder ATR;
- book, mark, liquidation and indicator records live in ``MarketRecords`` (latest values, staleness);
- optionally (``state_detectors``, set from the strategies' ``detectors`` section) VPIN, Kyle's lambda and
  Amihud (``core.detectors``), fed the accepted trades; their changes are logged with the times from
  which they hold, so a segment's evaluation times read them as the other windows. Likewise the flow
  detectors (``flow``: CVD–price divergence from the trades, OI spikes and liquidation windows from
  the other inputs), and the book detectors (``orderbook``: walls and iceberg refills from the book
  snapshots' levels and the trades between them: a segment's snapshots are held until its trades are
  in, then both are merged in time order; trades with no snapshot waiting are counted at once, so a
  caller applies a span's books before its trades, as the engine does).

Bad input never raises; it is counted in ``counters`` (the checks are in ``trade_intake``):
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

A segment's evaluation times are read after its inputs are applied at once, from a ``SegmentLog``.

Time rules: ``snapshot(t)`` reads only; call ``advance_to(t)`` first (closes bars that ended by ``t``)
and never snapshot at or before the last applied trade. A window of length ``w`` ending at ``t`` is the
``w / bucket`` buckets up to and including the one holding ``t - 1 ms``: exactly ``[t - w, t)`` when
``t`` is on a bucket boundary (the engine evaluates on whole seconds), otherwise up to one bucket
shorter. 5m..1h windows use second buckets, 4h/24h minute buckets (so at a non-minute ``t`` they
start at the next minute boundary), the P95/P99 window hour buckets (see ``quantiles``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .atr import WilderATR
from .bars import Bar, BarBuilder, segments_from_groups
from .detectors import BookDetectors, BookParams, DetectorParams, FlowDetectors, FlowParams, MicrostructureDetectors
from .events import BookUpdate, IndicatorUpdate, LiquidationEvent, MarkUpdate, TradeBatch
from .features import Features
from .flow_windows import FlowWindows
from .frame import FeatureFrame, distinct_sorted
from .market_records import MarketRecords, MarketTimeline
from .minute_bars import MINUTE_BAR_KIND
from .params import MINUTE_MS, SECOND_MS, Counters, StateParams
from .ring import BucketRing
from .segment_log import SegmentLog, segment_limit_ms
from .size_thresholds import SizeThresholds
from .state_codec import restore_state, state_to_dict
from .state_detectors import DetectorSet
from .state_frame import state_frame
from .trade_intake import clean_run_length, is_clean_run, judge_trades, minute_bar_rows
from .units import notional_to_units, qty_to_units

__all__ = ["MINUTE_BAR_KIND", "STANDARD_CVD_WINDOWS_MS", "Counters", "SegmentLog", "StateParams", "SymbolState"]

STANDARD_CVD_WINDOWS_MS = (300_000, 900_000, 1_800_000, 3_600_000, 14_400_000, 86_400_000)


class SymbolState:
    """All state of one (exchange, symbol): update with ``apply_*``, read with ``snapshot``.

    The state keeps the trade sequence (ids, times, warm-up coverage, ``counters``), the 1m/5m bars
    and the ATR, and routes every input to its parts: ``windows`` (the rings of trade flow),
    ``sizes`` (the size histogram and frozen P95/P99), ``market`` (the latest book, mark,
    liquidation and indicator records) and ``detector_set`` (the optional detectors).
    """

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
        self.windows = FlowWindows(p)
        self.sizes = SizeThresholds(p)
        self.bars_1m = BarBuilder(MINUTE_MS)
        self.bars_atr = BarBuilder(p.atr_bar_ms)
        self.atr = WilderATR(p.atr_period, p.atr_history, p.atr_min_history)
        self.market = MarketRecords(p, self.counters)
        self.detector_set = DetectorSet(p, detectors, flow, book)
        self._log: SegmentLog | None = None  # set while ``apply_segment`` runs

    # the parts' members that callers read directly
    @property
    def seconds(self) -> BucketRing:
        return self.windows.seconds

    @property
    def p99(self) -> float:
        return self.sizes.p99

    @property
    def qty_samples(self) -> int:
        return self.sizes.qty_samples

    @property
    def detectors(self) -> MicrostructureDetectors | None:
        return self.detector_set.micro

    @property
    def flow(self) -> FlowDetectors | None:
        return self.detector_set.flow

    @property
    def orderbook(self) -> BookDetectors | None:
        return self.detector_set.book

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
        if is_clean_run(ids, times, prices, qty_units, self.last_agg_id, self.sealed_ms, self.head_second):
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
        if n <= 64 or not np.isfinite(batch.qty).all():  # small or odd: the exact rule, then bisect the bad spot
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
        return clean_run_length(
            batch.agg_id, batch.time_ms, batch.price, batch.qty, self.last_agg_id, self.sealed_ms, self.head_second
        )

    def is_clean(self, batch: TradeBatch) -> bool:
        """Would ``apply_trades`` accept every trade of ``batch`` (the common case: consecutive ids
        continuing this symbol's, time order, valid prices and quantities)?"""
        if len(batch) == 0:
            return True
        if not np.isfinite(batch.qty).all():
            return False
        units = qty_to_units(batch.qty)
        return is_clean_run(
            batch.agg_id, batch.time_ms, batch.price, units, self.last_agg_id, self.sealed_ms, self.head_second
        )

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

    def _apply_general(self, ids, times, prices, qtys, qty_units, sells) -> list[Bar]:
        """Any batch: each trade judged (``trade_intake.judge_trades``), counted, the accepted applied."""
        v = judge_trades(ids, times, prices, qtys, qty_units, self.last_agg_id, self.sealed_ms, self.head_second)
        c = self.counters
        c.duplicates += int(v.duplicate.sum())
        c.rejected += int((~v.duplicate & ~v.valid).sum())
        c.late += int(v.late.sum())
        c.gaps += int(v.gap.sum())
        if np.any(v.fresh):
            self.last_agg_id = max(self.last_agg_id, int(ids[v.fresh].max()))
        accepted_idx = np.flatnonzero(v.accept)
        if np.any(v.gap):
            last_gap = int(np.flatnonzero(v.gap)[-1])
            after = accepted_idx[accepted_idx >= last_gap]
            self.coverage_start_ms = int(times[after[0]]) if len(after) else None
        elif self.coverage_start_ms is None and len(accepted_idx):
            self.coverage_start_ms = int(times[accepted_idx[0]])
        if len(accepted_idx) == 0:
            return []
        c.accepted += len(accepted_idx)
        a = v.accept
        return self._apply_accepted(ids[a], times[a], prices[a], qtys[a], v.qty_units[a], sells[a])

    def _apply_accepted(
        self,
        ids: np.ndarray,
        times: np.ndarray,
        prices: np.ndarray,
        qtys: np.ndarray,
        qty_units: np.ndarray,
        sells: np.ndarray,
    ) -> list[Bar]:
        """Accepted trades (time-ordered) into every part; return the 1-minute bars they closed."""
        quote = prices * qtys
        quote_units = notional_to_units(quote)
        minutes = times // MINUTE_MS
        m_starts = np.concatenate(([0], np.flatnonzero(minutes[1:] != minutes[:-1]) + 1))
        minute_numbers = minutes[m_starts]
        # large trades: P99 frozen per minute, then the minute's sizes enter the histogram
        large = self.sizes.large_trades(qtys, m_starts, minute_numbers, self._log)
        per_minute = self.windows.add_trades(
            times, qty_units, quote, quote_units, sells, large, m_starts, minute_numbers
        )
        self.detector_set.on_trades(times, prices, qtys, qty_units, quote_units, sells, self._log)
        closed = self._apply_bars(segments_from_groups(MINUTE_MS, minute_numbers, m_starts, prices, per_minute, ids))

        self.last_price = float(prices[-1])
        last_time = int(times.max())
        self.last_trade_ms = last_time if self.last_trade_ms is None else max(self.last_trade_ms, last_time)
        if self.first_trade_ms is None:
            self.first_trade_ms = int(times[0])
        self.head_second = max(self.head_second, int(times[-1] // SECOND_MS))
        return closed

    def _apply_bars(self, segments: list[Bar]) -> list[Bar]:
        """Bar segments into the 1-minute and ATR bars; return the 1-minute bars closed."""
        closed = self.bars_1m.apply(segments)
        for bar in self.bars_atr.apply(segments):
            self._update_atr(bar)
        return closed

    # ------------------------------------------------------------------------------------------
    # other market records (see ``market_records``)
    # ------------------------------------------------------------------------------------------
    def apply_book(self, update: BookUpdate) -> None:
        self.market.apply_book(update)
        self.detector_set.on_book(update)

    def apply_mark(self, update: MarkUpdate) -> None:
        self.market.apply_mark(update)

    def apply_liquidation(self, event: LiquidationEvent) -> None:
        self.market.apply_liquidation(event)
        self.detector_set.on_events([event])

    def apply_indicator(self, update: IndicatorUpdate) -> None:
        if update.kind == MINUTE_BAR_KIND:
            self.apply_minute_bars([update])
            return
        self.market.apply_indicator(update)
        self.detector_set.on_events([update])

    def apply_minute_bars(self, bars: list[IndicatorUpdate]) -> None:
        """Minute bars (``kind`` ``kline_1m``: a warm start's 1m klines, ``extra`` open/high/low/close,
        buy_volume/sell_volume in base units, quote_volume, trades) standing in for the trades of minutes
        before any trade was applied. They fill the minute buckets (CVD and volume of the 4h/24h windows,
        exact to the minute), the 1m and 5m bars (ATR, exact) and the price, start the coverage, and set
        ``approx_until_ms``: the second buckets, size quantiles and large/whale flows only hold what
        trades bring after. A bar at or after the first applied trade is counted as rejected (it would
        double the trades); so is a malformed one."""
        taken = minute_bar_rows(bars, self.first_trade_ms, self.approx_until_ms)
        self.counters.rejected += taken.rejected
        if not taken.sums:
            return
        table = np.array(taken.sums, dtype=np.int64)
        self.windows.add_minutes(table[:, 0], table[:, 1:])
        segments = [
            Bar(m * MINUTE_MS, (m + 1) * MINUTE_MS, o, h, lo, c, int(b + s_), int(b), int(s_), int(q), int(n), -1, -1)
            for (m, o, h, lo, c), (_, b, s_, q, n) in zip(taken.prices, table.tolist())
        ]
        self._apply_bars(segments)  # (their bars are not published: the minutes were history)
        last_minute = int(table[-1, 0])
        self.last_price = taken.prices[-1][4]
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
        self.detector_set.on_books(books)
        if others:
            oi_log = self.detector_set.on_events(others)
            if oi_log is not None:
                timeline.flow = oi_log
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
        self.detector_set.advance_to(now_ms, self._log)
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
    segment_limit_ms = staticmethod(segment_limit_ms)  # the engine asks before the symbol has a state

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
            self.sizes.threshold_minute,
            self.sizes.current,
            distinct_sorted(times // MINUTE_MS).tolist(),
        )
        self.detector_set.log_before(log)
        self._log = log
        try:
            closed: list[Bar] = []
            if batch is not None and len(batch):
                log.trade_times, log.trade_prices = batch.time_ms, batch.price
                closed = self.apply_trades(batch)
            self.detector_set.merge_book_inputs(log)
            self.sizes.log_wanted(log)
        finally:
            self._log = None
        return log, closed

    def advance_segment(self, now_ms: int, log: SegmentLog) -> list[Bar]:
        """``advance_to`` at the end of a segment, its ATR updates added to the segment's log."""
        self._log = log
        try:
            return self.advance_to(now_ms)
        finally:
            self._log = None

    def snapshot_frame(
        self,
        times: np.ndarray,
        cvd_windows_ms: Iterable[int] = STANDARD_CVD_WINDOWS_MS,
        slope_windows_ms: Iterable[int] = (1_800_000,),
        log: SegmentLog | None = None,
        timeline: MarketTimeline | None = None,
    ) -> FeatureFrame:
        """Features at every one of ``times`` (sorted), as columns (pure read; see ``state_frame``).

        Without ``log`` the state as it is answers every time (``snapshot``). With the log of
        ``apply_segment`` (and ``advance_segment``, and the ``MarketTimeline`` of the segment's other
        inputs) each time sees only the trades and inputs before it: window
        sums are read from buckets that end before the time, and everything else comes from the logs.
        """
        return state_frame(self, times, cvd_windows_ms, slope_windows_ms, log, timeline)

    # ------------------------------------------------------------------------------------------
    # size and plain-data form (see ``state_codec``)
    # ------------------------------------------------------------------------------------------
    def capacity_cells(self) -> int:
        """Allocated cells of all bounded structures: constant whatever the trade rate or duration."""
        return (
            self.windows.capacity_cells
            + self.market.capacity_cells
            + self.sizes.capacity_cells
            + self.atr.history_len
            + self.detector_set.capacity_cells
        )

    def to_dict(self) -> dict[str, Any]:
        return state_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SymbolState:
        state = cls(data["exchange"], data["symbol"], StateParams(**data["params"]))
        restore_state(state, data)
        return state

    def use_detectors(
        self, params: DetectorParams | None, flow: FlowParams | None = None, book: BookParams | None = None
    ) -> None:
        """Keep the detectors if their parameters are ``params`` (and ``flow``, ``book``); otherwise
        start them afresh (their windows fill again from the next inputs) or, with None, drop them (a
        restored state after the strategies' ``detectors`` section changed)."""
        self.detector_set.use(params, flow, book)
