"""A backtest run's outcome labels: the same ``review.labels`` code the running stack's job uses, fed
from the run's own records (the engine's signals, the executors' ``opened`` events and fills) and
its own market data, stored as source ``backtest:<run id>`` in ``outcome_labels``.

``LabelTape`` wraps the run's source: it passes every slice on unchanged and keeps, per market, the
trades ``PricePath`` answers from (every trade whose price differs from the one before, and the
first and last trade of every minute: the last trade at or before any time, and whether a trade lies
in the hour after it, come out the same as from every trade) and, per funding time, the newest mark
before it. A run's "now" is the end of its data, so a horizon past the data gets no label, as live.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg

from backtest.inputs import MarketSlice, Record, Source
from backtest.runner import BacktestRunner
from review.label_job import ts, upsert_labels
from review.labels import LabelParams, OutcomeLabel, PricePath, Settlement, label_samples, samples_from_records

MINUTE_MS = 60_000


def label_source(run_id: str) -> str:
    return f"backtest:{run_id}"


class LabelTape:
    """A ``Source`` that is another one, remembering what outcome labels need (module docstring)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._times: dict[tuple[str, str], list[np.ndarray]] = {}
        self._prices: dict[tuple[str, str], list[np.ndarray]] = {}
        self._last_price: dict[tuple[str, str], float] = {}
        self._marks: dict[tuple[str, str], dict[int, Record]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def slices(self) -> Iterator[MarketSlice]:
        for piece in self.source.slices():
            self.observe(piece)
            yield piece

    def observe(self, piece: MarketSlice) -> None:
        for batch in piece.trades.values():
            if not len(batch):
                continue
            market = (batch.exchange, batch.symbol)
            times, prices = batch.time_ms, batch.price
            minute = times // MINUTE_MS
            keep = np.ones(len(times), dtype=bool)
            if len(times) > 1:
                changed = prices[1:] != prices[:-1]
                new_minute = minute[1:] != minute[:-1]
                keep[1:-1] = changed[:-1] | new_minute[:-1] | new_minute[1:]
                keep[-1] = True
            keep[0] = True  # the batch's first and last: a minute may go on in the next slice
            self._times.setdefault(market, []).append(times[keep])
            self._prices.setdefault(market, []).append(prices[keep])
        for m in piece.marks:
            f, t = int(m["next_funding_time"]), int(m["event_time"])
            if t < f:
                by_time = self._marks.setdefault((m["exchange"], m["symbol"]), {})
                if f not in by_time or t >= int(by_time[f]["event_time"]):
                    by_time[f] = m

    def prices(self) -> dict[tuple[str, str], PricePath]:
        out = {}
        for market, parts in self._times.items():
            times = np.concatenate(parts)
            prices = np.concatenate(self._prices[market])
            out[market] = PricePath(times.tolist(), prices.tolist())
        return out

    def settlements(self) -> dict[tuple[str, str], list[Settlement]]:
        from review.labels import settlements_from_marks

        return {market: settlements_from_marks(by_time.values()) for market, by_time in self._marks.items()}


def run_labels(runner: BacktestRunner, tape: LabelTape, params: LabelParams, end_ms: int) -> list[OutcomeLabel]:
    """Every label the run's signals and trades have by ``end_ms`` (the end of its data)."""
    events = runner.position_events()
    fills = [f for book in runner.accounts.books.values() for f in book.sink.fills]
    samples = samples_from_records(runner.signals, [e for e in events if e["event"] == "opened"], fills, runner.config)
    return label_samples(samples, tape.prices(), tape.settlements(), params, end_ms)


def store_labels(conninfo: str, run_id: str, labels: list[OutcomeLabel], computed_at_ms: int) -> int:
    """Replace the run's labels (source ``backtest:<run id>``) in one transaction."""
    source = label_source(run_id)
    with psycopg.connect(conninfo) as conn, conn.transaction():
        conn.execute("DELETE FROM outcome_labels WHERE source = %s", (source,))
        return upsert_labels(conn, source, labels, computed_at_ms)


__all__ = ["LabelTape", "label_source", "run_labels", "store_labels", "ts"]
