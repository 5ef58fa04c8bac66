"""Binance Vision aggTrades for ``backtest.sources.vision``: a symbol-day's trades fetched, parsed
(pyarrow columns, or the backfill's row reader for a file with bad rows) and kept in the column cache,
then handed out an hour at a time."""

from __future__ import annotations

from array import array
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np

from backtest.inputs import SourceReport
from backtest.sources.column_cache import FIELDS as COLUMN_FIELDS
from backtest.sources.column_cache import HOUR_MS, HOURS, CachedDay, ColumnCache
from producers.backfill.agg_trades_csv import AggTradeColumns, AggTradeCsvReader, open_archive, read_agg_trade_columns
from stream_apps.core.events import TradeBatch
from tapeflow_runtime.native_memory import file_buffers_unmapped

EXCHANGE = "binance"


class DayTrades:
    """One symbol's trades of the day starting at ``start``, handed out an hour at a time (in time order)."""

    def __init__(self, start: int) -> None:
        self.start = start

    def hour(self, i: int) -> TradeBatch:
        raise NotImplementedError

    def price_before(self, t: int) -> float | None:
        """The price of the last trade before ``t`` within the day, None if there is none."""
        for i in range(min(HOURS - 1, max(0, (t - self.start) // HOUR_MS)), -1, -1):
            batch = self.hour(i)
            if len(batch):
                k = int(np.searchsorted(batch.time_ms, t, side="left"))
                if k:
                    return float(batch.price[k - 1])
        return None


class MemoryDayTrades(DayTrades):
    """Parsed columns held in memory: a file with bad rows, or no usable column cache."""

    def __init__(self, batch: TradeBatch, start: int) -> None:
        super().__init__(start)
        self.batch = batch
        edges = np.searchsorted(batch.time_ms, start + HOUR_MS * np.arange(1, HOURS), side="left")
        self._bounds = [0, *edges.tolist(), len(batch)]

    def hour(self, i: int) -> TradeBatch:
        return self.batch.take(slice(self._bounds[i], self._bounds[i + 1]))


class CachedDayTrades(DayTrades):
    """The column cache's day file: an hour is read from disk when asked for, then dropped."""

    def __init__(self, symbol: str, cached: CachedDay) -> None:
        super().__init__(cached.day_start_ms)
        self.symbol, self.cached = symbol, cached

    def hour(self, i: int) -> TradeBatch:
        c = self.cached.hour(i)
        return TradeBatch.from_arrays(
            EXCHANGE, self.symbol, c["agg_id"], c["time_ms"], c["price"], c["qty"], c["taker_sell"]
        )


class DayTradeReader:
    """Reads a symbol-day's aggTrades archive (``fetch``: the source's archive lookup, which lists a
    missing one) through the column cache when there is one; bad rows and cache trouble go to ``report``."""

    def __init__(
        self,
        fetch: Callable[..., Path | None],
        column_cache: ColumnCache | None,
        report: SourceReport,
    ) -> None:
        self.fetch = fetch
        self.column_cache = column_cache
        self.report = report

    def day(self, symbol: str, day: date, start: int) -> DayTrades | None:
        """The day's trades of ``symbol`` (None: no archive for it, listed as missing)."""
        path = self.fetch("aggTrades", symbol, day, required=True)
        if path is None:
            return None
        cached = self.column_cache.day(path, start) if self.column_cache is not None else None
        if cached is not None:
            return CachedDayTrades(symbol, cached)
        with file_buffers_unmapped():  # the file's buffers go back to the OS when freed (native_memory)
            found = self._parse_and_cache(path, symbol, start)
        if isinstance(found, CachedDay):
            return CachedDayTrades(symbol, found)
        return found

    def _parse_and_cache(self, path: Path, symbol: str, start: int) -> CachedDay | MemoryDayTrades:
        with open_archive(path) as (raw, _):
            cols = read_agg_trade_columns(raw)  # pyarrow, no Python per row
        if cols is None:
            batch = self._trades_by_row(path, symbol)
            return MemoryDayTrades(batch.take(np.lexsort((batch.agg_id, batch.time_ms))), start)
        order = np.lexsort((cols.agg_id, cols.time_ms))
        cols = AggTradeColumns(**{name: np.asarray(getattr(cols, name))[order] for name in COLUMN_FIELDS})
        if self.column_cache is not None:
            try:
                self.column_cache.put(path, cols, start)
            except OSError as exc:  # disk full, read-only home: run from memory, say why
                self.report.notes["column_cache"] = f"not written ({type(exc).__name__}: {exc}); files parsed in memory"
            else:
                cached = self.column_cache.day(path, start)
                if cached is not None:
                    return cached
        return MemoryDayTrades(
            TradeBatch.from_arrays(EXCHANGE, symbol, cols.agg_id, cols.time_ms, cols.price, cols.qty, cols.taker_sell),
            start,
        )

    def _trades_by_row(self, path: Path, symbol: str) -> TradeBatch:
        """A file with bad rows: the backfill's row reader, which names each one in the report."""
        ids, times, prices, qtys, sells = array("q"), array("q"), array("d"), array("d"), array("b")
        with open_archive(path) as (raw, _):
            reader = AggTradeCsvReader(
                raw,
                source=path.name,
                symbol=symbol,
                receive_time=0,
                on_bad=lambda bad: self.report.add_bad_row(str(bad)),
            )
            for t in reader:
                ids.append(t["agg_id"])
                times.append(t["trade_time"])
                prices.append(t["price"])
                qtys.append(t["qty"])
                sells.append(t["taker_side"] == "SELL")
        return TradeBatch.from_arrays(
            EXCHANGE,
            symbol,
            np.frombuffer(ids, dtype=np.int64),
            np.frombuffer(times, dtype=np.int64),
            np.frombuffer(prices),
            np.frombuffer(qtys),
            np.frombuffer(sells, dtype=np.int8).astype(bool),
        )
