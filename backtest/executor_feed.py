"""Feeding the paper accounts, one slice behind the engine, in executor order (module docstring of
``backtest.runner``): signals handed over when due (or when produced, if the executor has passed
their time), marks, books and trades by event time. ``ExecutorFeed`` is the dense feed, every record
and every busy trade passed and the clock ticked every second; ``backtest.sparse_feed.SparseFeed``
passes only what some account reads, with the same state wherever one decides something."""

from __future__ import annotations

from typing import Any

import numpy as np

from backtest.accounts import Accounts
from backtest.controls import Controls, order_controls
from backtest.feed_kernels import trade_tick
from backtest.inputs import MarketSlice, Record
from execution.domain import BookTop, MarkTick, TradeTick

Part = tuple[str, Any, int, int]  # (key, trade batch, first index not fed, end index) of a busy market


class ExecutorFeed:
    """The dense feed, and the signal handover every feed shares."""

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts
        self.late_signals: list[Record] = []  # signals for times the executor has passed
        self.future_signals: list[Record] = []  # signals past the slice the executor is on

    def add_signal(self, sig: Record) -> None:
        """A signal the engine produced: due in a later slice, or late (handed over with the next one)."""
        if sig["eval_time"] < self.accounts.executor_ms:
            self.late_signals.append(sig)
        else:
            self.future_signals.append(sig)

    def finish(self) -> None:
        """The signals still waiting (end of data or of an interrupted run), at their time or now."""
        acc = self.accounts
        for sig in sorted(self.future_signals, key=lambda s: s["eval_time"]):
            acc.signal(sig, max(sig["eval_time"], acc.executor_ms))
        self.future_signals = []

    def controls(self, piece: MarketSlice) -> Controls:
        """Late signals handed over; the slice's due signals, marks and books in executor order."""
        acc = self.accounts
        end = piece.end_ms
        for sig in self.late_signals:  # produced after the executor passed their time: handed over now
            acc.signal(sig, max(sig["eval_time"], acc.executor_ms))
        self.late_signals = []
        due = [s for s in self.future_signals if s["eval_time"] < end]
        self.future_signals = [s for s in self.future_signals if s["eval_time"] >= end]
        return order_controls(due, piece)

    def slice(self, piece: MarketSlice) -> None:
        """Every control of the slice at its place, the trades before it first, the clock ticked."""
        acc = self.accounts
        end = piece.end_ms
        controls = self.controls(piece)
        cursors = {key: 0 for key in piece.trades}
        for t, rank, record in zip(controls.times, controls.ranks, controls.records, strict=True):
            self.trades_before(piece, cursors, t)
            now = max(t, acc.executor_ms)
            acc.tick_clocks(now)
            if rank == 0:
                acc.signal(record, now)
            elif rank == 1:
                mark = MarkTick.from_record(record)
                for book in acc.books.values():
                    book.executor.on_mark_tick(mark, now)
            else:
                top = BookTop.from_record(record)
                for book in acc.books.values():
                    book.executor.on_book_top(top, now)
            acc.executor_ms = max(acc.executor_ms, t)
        self.trades_before(piece, cursors, end)
        acc.executor_ms = max(acc.executor_ms, end - 1)

    def trades_before(self, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:
        """Every trade of ``piece`` before ``until`` not fed yet: one by one, in time order across
        symbols, for the markets an executor is busy on; only the newest for the others."""
        acc = self.accounts
        books = list(acc.books.values())
        busy_parts = []
        for key in sorted(cursors):
            batch = piece.trades[key]
            lo = cursors[key]
            hi = int(batch.time_ms.searchsorted(until))
            if hi <= lo:
                continue
            cursors[key] = hi
            if key in acc.busy():
                busy_parts.append((key, batch, lo, hi))
            else:
                tick = trade_tick(batch, hi - 1)
                now = max(tick.trade_time, acc.executor_ms)
                for book in books:
                    book.executor.on_trade_tick(tick, now)
        if not busy_parts:
            return
        last: dict[str, TradeTick] = {}
        for batch, i in _time_order(busy_parts):
            tick = trade_tick(batch, i)
            now = max(tick.trade_time, acc.executor_ms)
            acc.tick_clocks(now)
            key = tick.key
            for book in books:
                if key in book.busy_markets():
                    book.executor.on_trade_tick(tick, now)
            last[key] = tick
        acc.last_prices(last)


def _time_order(parts: list[Part]) -> list[tuple[Any, int]]:
    """The parts' trades as (batch, index) in time order; equal times: symbols in key order."""
    if len(parts) == 1:
        key, batch, lo, hi = parts[0]
        return [(batch, i) for i in range(lo, hi)]
    times = np.concatenate([b.time_ms[lo:hi] for _, b, lo, hi in parts])
    owner = np.concatenate([np.full(hi - lo, n) for n, (_, _, lo, hi) in enumerate(parts)])
    index = np.concatenate([np.arange(lo, hi) for _, _, lo, hi in parts])
    merged = np.lexsort((owner, times))
    return [(parts[owner[m]][1], int(index[m])) for m in merged]
