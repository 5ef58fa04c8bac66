"""A source over records already in memory (``md.*``-shaped dicts): the building block of the database
and topic sources, and what tests hand-build scenarios with.

Trades become columnar per ``exchange:symbol`` through the engine's own adapter
(``trade_batches_from_records``, as the live worker groups them), in (trade time, agg id) order;
the other kinds are sorted by their engine time. Everything is then cut into slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from backtest.inputs import (
    DEFAULT_SLICE_MS,
    RECORD_KINDS,
    Block,
    MarketSlice,
    Record,
    SliceCutter,
    SourceReport,
    sort_records,
)
from stream_apps.core.events import TradeBatch, trade_batches_from_records


def trade_block(trades: Iterable[Record]) -> dict[str, TradeBatch]:
    """md.trades records as one time-ordered ``TradeBatch`` per ``exchange:symbol``."""
    out = {}
    for batch in trade_batches_from_records(trades):
        order = np.lexsort((batch.agg_id, batch.time_ms))
        out[f"{batch.exchange}:{batch.symbol}"] = batch.take(order)
    return out


class RecordSource:
    """``name`` over ``[from_ms, to_ms)`` from lists of records (see the module docstring)."""

    def __init__(
        self,
        name: str,
        exchange: str,
        symbols: list[str],
        from_ms: int,
        to_ms: int,
        *,
        trades: Iterable[Record] = (),
        books: Iterable[Record] = (),
        marks: Iterable[Record] = (),
        liquidations: Iterable[Record] = (),
        indicators: Iterable[Record] = (),
        inputs: set[str] | None = None,
        report: SourceReport | None = None,
        slice_ms: int = DEFAULT_SLICE_MS,
        trade_batches: dict[str, TradeBatch] | None = None,
    ) -> None:
        self.name, self.exchange, self.symbols = name, exchange, list(symbols)
        self.from_ms, self.to_ms = from_ms, to_ms
        self.report = report or SourceReport()
        self.slice_ms = slice_ms
        self._trades = list(trades)
        self._trade_batches = trade_batches  # already columnar, in (trade time, agg id) order
        self._records = {
            "books": list(books),
            "marks": list(marks),
            "liquidations": list(liquidations),
            "indicators": list(indicators),
        }
        self._inputs = inputs

    def inputs(self) -> set[str]:
        if self._inputs is not None:
            return set(self._inputs)
        found = {"trades"} if self._trades or self._trade_batches else set()
        names = {"books": "book", "marks": "mark", "liquidations": "liquidations"}
        for kind, recs in self._records.items():
            if kind == "indicators":
                found.update(r["kind"] for r in recs)
            elif recs:
                found.add(names[kind])
        return found

    def slices(self) -> Iterator[MarketSlice]:
        trades = trade_block(self._trades) if self._trade_batches is None else self._trade_batches
        block = Block(
            self.from_ms, self.to_ms, trades, {kind: sort_records(self._records[kind], kind) for kind in RECORD_KINDS}
        )
        return SliceCutter(self.from_ms, self.to_ms, self.slice_ms).cut([block])
