"""``tapeflow backtest --warm-start-approximation``: a source that starts the way a fresh stack's warm start
does, so a backtest computes what the stack computed after its start (parity).

A live producer primes the window ``[now - hours, now)`` with 1m klines (minute bars: taker-buy volume,
OHLC, trade count) for all but the last ``detail_minutes`` and trades one by one only after
(``producers.binance.warm_start``); the engine applies the bars as minute buckets and says in each
feature record (``approx_until_ms``) where trade detail begins. This source wraps any other, with
``now`` = its start + ``hours``, and gives the engine the same:

- the span comes from ``tapeflow_runtime.warm_start_span.warm_start_span``, the live warm start's own
  function (bars from the minute the window starts in, trades from the minute ``detail_minutes``
  before ``now``), so the inner source is opened from ``WarmStartSpan.bars_from_ms``;
- the trades of the bar minutes become ``kline_1m`` md.indicators records made by
  ``stream_apps.core.minute_bars.minute_bars_from_trades`` (what a 1m kline holds; the engine then
  applies them through ``SymbolState.apply_minute_bars``, as live), each in the slice of its engine
  time (its minute's last millisecond); the trades from the detail span on pass as they are;
- books and liquidations before ``now`` are dropped: they have no public history, so a warm-started
  engine sees them from the live stream on. Marks and the other indicators pass as the source has them
  (the warm start takes marks, funding, open interest and the ratios from the exchange's history).

What is approximated is stated in the source's report (``notes``) and, per evaluation, in the feature
records' ``approx_until_ms`` (the same value a live start gives).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np

from backtest.inputs import MarketSlice, Record, Source, SourceReport
from stream_apps.core.events import TradeBatch
from stream_apps.core.minute_bars import minute_bar_record, minute_bars_from_trades
from tapeflow_runtime.warm_start_span import HOUR_MS, MINUTE_MS, WarmStartSpan, warm_start_span


def approximation_span(from_ms: int, hours: float, detail_minutes: float) -> WarmStartSpan:
    """The span of a warm start whose window begins at ``from_ms`` (the backtest's start): ``now`` =
    ``from_ms`` + ``hours``."""
    return warm_start_span(from_ms + round(hours * HOUR_MS), hours, detail_minutes)


class WarmStartApproximation:
    """``inner`` (opened from ``span.bars_from_ms``) as a warm start at ``span.now_ms`` gives it (module
    docstring)."""

    def __init__(self, inner: Source, span: WarmStartSpan) -> None:
        if inner.from_ms > span.bars_from_ms:
            raise ValueError("the inner source must be opened from the span's first bar minute")
        self.inner, self.span = inner, span
        self.name = f"{inner.name} (warm start approximation)"
        self.exchange = inner.exchange
        self.symbols = inner.symbols
        self.from_ms, self.to_ms = inner.from_ms, inner.to_ms
        self.report: SourceReport = inner.report
        self._pending: dict[str, TradeBatch] = {}  # trades of a bar minute that is not over yet
        self.bars = 0  # minute bars made
        self._note()

    def inputs(self) -> set[str]:
        return self.inner.inputs()

    def slices(self) -> Iterator[MarketSlice]:
        for piece in self.inner.slices():
            yield self._approximate(piece)

    def _approximate(self, piece: MarketSlice) -> MarketSlice:
        span = self.span
        detail_from = span.detail_from_ms if span.detail_from_ms is not None else span.bars_from_ms
        # bars for the minutes over by the slice's end (a minute split over two slices waits for the next)
        complete = min(detail_from, piece.end_ms // MINUTE_MS * MINUTE_MS)
        out = MarketSlice(piece.start_ms, piece.end_ms, marks=piece.marks)
        bars: list[Record] = []
        for key, batch in piece.trades.items():
            cut = int(np.searchsorted(batch.time_ms, detail_from, side="left"))
            if cut < len(batch):
                out.trades[key] = batch.take(slice(cut, None))
            before = [b for b in (self._pending.pop(key, None), batch.take(slice(0, cut))) if b is not None and len(b)]
            if not before:
                continue
            early = TradeBatch.concat(before)
            done = int(np.searchsorted(early.time_ms, complete, side="left"))
            if done < len(early):
                self._pending[key] = early.take(slice(done, None))
            bars += [minute_bar_record(bar) for bar in minute_bars_from_trades(early.take(slice(0, done)))]
        self.bars += len(bars)
        live = span.now_ms
        out.books = [r for r in piece.books if r["event_time"] >= live]
        out.liquidations = [r for r in piece.liquidations if r["trade_time"] >= live]
        out.indicators = sorted(piece.indicators + bars, key=lambda r: r["receive_time"]) if bars else piece.indicators
        return out

    def _note(self) -> None:
        span, notes = self.span, self.report.notes
        if span.detail_from_ms is not None:
            notes["trades"] = (
                f"warm start approximation: 1m minute bars made from the trades before "
                f"{_fmt(span.detail_from_ms)} UTC (exact for the 4h/24h CVD, bars and ATR; size "
                "quantiles, large and whale flows and the second buckets from trades after: the "
                "feature records' approx_until_ms), trade by trade after"
            )
        for name in ("book", "liquidations"):
            notes[name] = f"warm start approximation: none before the live start {_fmt(span.now_ms)} UTC (no history)"


def _fmt(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")
