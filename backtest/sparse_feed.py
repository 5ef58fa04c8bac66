"""The sparse feed (module docstring of ``backtest.runner``, "Speed"): the executor state of the dense
feed at every point where an account decides something, without passing every record. Marks and
books that only update latest values are held (``backtest.held.HeldRecords``), busy markets' trades
inside their quiet bands are skipped (the newest per market kept), and clock ticks that cannot act
only move the accounts' clock time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from backtest.accounts import AccountBook, Accounts
from backtest.controls import Controls
from backtest.executor_feed import ExecutorFeed, Part
from backtest.feed_kernels import SCALAR_RUN, quiet_tick_run, skip_run, trade_tick
from backtest.held import HeldRecords
from backtest.inputs import MarketSlice
from execution.domain import BookTop, MarkTick, TradeTick


class SparseFeed(ExecutorFeed):
    """Feeds a slice like ``ExecutorFeed`` with records held and busy trades skipped where that changes
    nothing an account reads before they are passed."""

    def __init__(self, accounts: Accounts) -> None:
        super().__init__(accounts)
        self.held = HeldRecords(accounts)
        self.skipped: dict[str, tuple[Any, int]] = {}  # key -> newest busy trade not fed (batch, index)
        self.last: dict[str, TradeTick] = {}  # the newest busy trade fed per market, in the current run
        self.bands_dirty = True
        self.quiet_to: float | None = None  # busy trades before this time are all inside their bands
        self.quiet_bands: dict[str, tuple[float, float, float] | None] = {}  # ... these bands
        self.quiet_version = -1  # the held records' band version they were last checked against

    def slice(self, piece: MarketSlice) -> None:
        """The slice with the same executor state at every point that matters as ``dense`` (module
        docstring, "Speed"): marks and books of idle markets are held, newest per kind and market, and
        delivered with the market's newest trade before a signal, a clock tick that may act, a record of
        the market that is not held, and the slice's end (so nothing is held between slices)."""
        acc = self.accounts
        end = piece.end_ms
        controls = self.controls(piece)
        cursors = {key: 0 for key in piece.trades}
        self.quiet_to = None  # found over the previous slice's trades
        books = list(acc.books.values())
        first = books[0].executor
        unknown = [key for key in piece.trades if key not in first.data_time]  # flushed until delivered once
        executors = [book.executor for book in books]
        times, ranks, holdables, records, keys, _ = controls
        n, count = 0, len(times)
        while n < count:
            busy = acc.busy()
            if not unknown and not busy:
                n = self._idle_run(controls, n, books)
                if n == count:
                    break
            t, rank, holdable, record, key = times[n], ranks[n], holdables[n], records[n], keys[n]
            n += 1
            if busy:
                if (
                    holdable
                    and key in first.data_time
                    and self.held.may_hold(rank, key, t, busy)
                    and self._quiet_before(piece, cursors, t, busy)
                    and (max(t, acc.executor_ms) < acc.next_tick or self._quiet_ticks(piece, cursors, t, busy, books))
                ):
                    # held, and no clock is due: busy markets' trades before it cannot tick either
                    # (they are older), so they wait for the next record that is not held, fed with
                    # their own times (the executor's time is left where it is)
                    self.held.hold(rank, key, record)
                    continue
                self.trades_before(piece, cursors, t)
            if unknown:
                for k in list(unknown):
                    self._flush_key(piece, cursors, k, t)
                    if k in first.data_time:
                        unknown.remove(k)
            now = max(t, acc.executor_ms)
            if now >= acc.next_tick:
                self._tick_sparse(now, piece, cursors, t)
            if rank == 0:
                self._feed_skipped()
                self._flush(piece, cursors, t)
                acc.signal(record, now)
            elif holdable and key in first.data_time and self.held.may_hold(rank, key, t, acc.busy()):
                # the record only updates latest values (a mark at or after its own funding time is not
                # held: whether it sets the next funding depends on what came before; on a busy market
                # see ``HeldRecords.may_hold``)
                self.held.hold(rank, key, record)
            else:
                self._flush_key(piece, cursors, key, t)
                if rank == 1:
                    self.held.forget_band(key)
                    mark = MarkTick.from_record(record)
                    for ex in executors:
                        ex.on_mark_tick(mark, now)
                else:
                    top = BookTop.from_record(record)
                    for ex in executors:
                        ex.on_book_top(top, now)
            acc.executor_ms = max(acc.executor_ms, t)
        self.trades_before(piece, cursors, end)
        self._feed_skipped()
        self._flush(piece, cursors, end)
        acc.executor_ms = max(acc.executor_ms, end - 1)

    def _idle_run(self, controls: Controls, n: int, books: list[AccountBook]) -> int:
        """The sparse feed's loop over controls while no account is busy and every market is known,
        reduced to what it does there: hold each mark and book (newest per kind and market) and let
        the clock tick where every due account's clock is quiet. Stops (returning the index) at the
        first control that needs more: a signal, a mark at or after its funding time, a market not
        known yet, a tick that may act; the caller's loop takes that control as before.

        Nothing is passed to an account here, so each account's quiet end stays put: the run is found
        by ``quiet_tick_run`` (compiled; a tick is due at the first control at or after the previous
        tick + 1 s) and only its newest record per kind and market is held."""
        acc = self.accounts
        cols = controls.columns
        # the accounts are made together (``Accounts.open``) and every tick moves each due one, so their
        # clocks are equal: a tick due for one is due for all
        assert len({book.clock_ms for book in books}) == 1, "accounts' clocks differ"
        data_time = books[0].executor.data_time
        known = np.fromiter((name in data_time for name in cols.names), dtype=bool, count=len(cols.names))
        ok = cols.holdable & known[cols.market] if len(cols.names) else cols.holdable
        now = max(int(cols.times[n]), acc.executor_ms) if n < len(cols.times) else acc.executor_ms
        quiet_to = min(book.quiet_until(now) for book in books)  # now itself when a tick now may act
        stop, last_tick, executor_ms = quiet_tick_run(
            cols.times, ok, n, acc.executor_ms, acc.next_tick, float(quiet_to)
        )
        if stop > n:
            _, newest = np.unique(cols.slot[n:stop][::-1], return_index=True)
            held, records, ranks, keys = self.held.records, controls.records, controls.ranks, controls.keys
            if acc.config.entry.kind == "routed":  # the router counts every book, not only the newest
                books_at = np.flatnonzero(cols.slot[n:stop] // max(len(cols.names), 1) == 2) + n
                self.held.observe_books(keys, records, controls.times, books_at.tolist())
            for i in (stop - 1 - newest).tolist():
                held[(ranks[i], keys[i])] = records[i]
        if last_tick >= 0:
            for book in books:
                book.clock_ms = last_tick
            acc.next_tick = last_tick + 1000
        acc.executor_ms = executor_ms
        return stop

    def _flush(self, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:
        for key in sorted(set(cursors) | self.held.keys()):
            self._flush_key(piece, cursors, key, until)

    def _flush_key(self, piece: MarketSlice, cursors: dict[str, int], key: str, until: int) -> None:
        """Sparse feed: what is held of ``key`` and its newest trade before ``until`` not fed yet, in
        executor order (time; at equal times mark, book, trade), to every account. The key is idle (no
        account busy on it): a busy market's trades are fed by ``trades_before``, which moves its cursor."""
        items = self.held.take(key)
        batch = piece.trades.get(key)
        if batch is not None:
            hi = int(batch.time_ms.searchsorted(until))
            if hi > cursors[key]:
                cursors[key] = hi
                tick = trade_tick(batch, hi - 1)
                items.append((tick.trade_time, 3, tick))
        if items:
            self._pass_items(key, items)

    def _pass_items(self, key: str, items: list[tuple[int, int, Any]]) -> None:
        """Marks (rank 1), books (2) and a trade (3) of ``key`` to every account, in executor order."""
        acc = self.accounts
        items.sort(key=lambda item: item[:2])
        for time_ms, rank, item in items:
            now = max(time_ms, acc.executor_ms)
            if rank == 1:
                self.held.forget_band(key)
                mark = MarkTick.from_record(item)
                for ex in acc.executors:
                    ex.on_mark_tick(mark, now)
            elif rank == 2:
                top = BookTop.from_record(item)
                for ex in acc.executors:
                    ex.on_book_top(top, now)
            else:
                for ex in acc.executors:
                    ex.on_trade_tick(item, now)

    def _tick_sparse(self, now: int, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:
        """The dense feed's clock ticks (at most once per second of event time, at the same points), but
        ``on_clock`` only where some account's may act (``Executor.clock_quiet``), after the held data."""
        acc = self.accounts
        due = [book for book in acc.books.values() if now >= book.clock_ms + 1000]
        if not due:
            return
        if all(book.clock_quiet(now) for book in due):
            for book in due:
                book.clock_ms = now
        else:
            self._feed_skipped()
            self._flush(piece, cursors, until)
            for book in due:
                book.clock_ms = now
                if not book.clock_quiet(now):  # asked again with the data passed: most such ticks only
                    book.executor.on_clock(now)  # saw held data looking old, and are quiet now
                    self.bands_dirty = True
        acc.next_tick = min(book.clock_ms for book in acc.books.values()) + 1000

    def trades_before(self, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:
        """Busy markets' trades of ``piece`` before ``until`` not fed yet, in time order across symbols,
        skipped where inside their bands (``_busy_trades_sparse``); accounts idle on such a market learn
        its newest trade. Idle markets' trades wait: ``_flush_key`` feeds their newest when it matters."""
        acc = self.accounts
        if not acc.busy():
            return
        busy_parts = []
        for key in sorted(cursors):
            if key not in acc.busy():
                continue
            batch = piece.trades[key]
            lo = cursors[key]
            hi = int(batch.time_ms.searchsorted(until))
            if hi <= lo:
                continue
            cursors[key] = hi
            busy_parts.append((key, batch, lo, hi))
        if not busy_parts:
            return
        last: dict[str, TradeTick] = {}
        self._busy_trades_sparse(piece, cursors, until, busy_parts, last)
        # the newest trade of each market with trades here, fed or skipped (a skipped one left
        # is newer than any fed: feeding one feeds the skipped first)
        skipped = self.skipped
        acc.last_prices(
            {
                key: trade_tick(*skipped[key]) if key in skipped else last[key]
                for key, *_ in busy_parts
                if key in skipped or key in last
            }
        )

    def _busy_trades_sparse(
        self,
        piece: MarketSlice,
        cursors: dict[str, int],
        until: int,
        parts: list[Part],
        last: dict[str, TradeTick],
    ) -> None:
        """Sparse feed of busy markets' trades (time order across symbols, equal times in key order):
        a trade inside every busy account's ``Executor.quiet_trades`` band of its market is skipped,
        remembering the newest; the newest skipped ones are fed before anything else is (a trade outside
        a band, a clock tick that may act) and at the end, so every account sees what the dense feed
        shows it wherever it decides something.

        After a skipped trade, the run of trades that would be skipped too (inside their market's band,
        before the next clock tick; bands and the tick only move where a trade is fed or a tick is due)
        is found with numpy and only its newest trade per market remembered, in the order the
        one-by-one loop would have remembered them; the trade that ends the run goes through the loop."""
        acc = self.accounts
        if len(parts) == 1:
            _, batch, lo, hi = parts[0]
            times, prices = batch.time_ms[lo:hi], batch.price[lo:hi]
            owner, local = np.zeros(hi - lo, dtype=np.int64), np.arange(hi - lo, dtype=np.int64)
        else:
            times = np.concatenate([b.time_ms[lo:hi] for _, b, lo, hi in parts])
            owner = np.concatenate([np.full(hi - lo, n) for n, (_, _, lo, hi) in enumerate(parts)])
            local = np.concatenate([np.arange(hi - lo) for _, _, lo, hi in parts])
            merged = np.lexsort((owner, times))
            times, prices = times[merged], np.concatenate([b.price[lo:hi] for _, b, lo, hi in parts])[merged]
            owner, local = owner[merged], local[merged]
        time_list, price_list = times.tolist(), prices.tolist()
        owner_list, local_list = owner.tolist(), local.tolist()
        skipped = self.skipped
        self.last = last
        bands: dict[str, tuple[float, float, float] | None] = {}
        limits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.bands_dirty = True
        count, pos = len(time_list), 0
        while pos < count:
            key, batch, lo, _ = parts[owner_list[pos]]
            j = local_list[pos]
            t = time_list[pos]
            now = t if t > acc.executor_ms else acc.executor_ms
            if now >= acc.next_tick:
                self._tick_sparse(now, piece, cursors, until)
            if self.bands_dirty:
                bands = {k: self.held.band(k) for k, *_ in parts}
                limits = None
                self.bands_dirty = False
            band = bands[key]
            pos += 1
            if band is not None and band[0] < price_list[pos - 1] < band[1] and t < band[2]:
                skipped[key] = (batch, lo + j)
                if pos + SCALAR_RUN < count and acc.executor_ms < acc.next_tick:
                    if limits is None:  # per part: (low, high, until); no band: nothing is inside
                        rows = [bands[k] or (math.inf, -math.inf, -math.inf) for k, *_ in parts]
                        limits = (
                            np.array([r[0] for r in rows]),
                            np.array([r[1] for r in rows]),
                            np.array([r[2] for r in rows]),
                        )
                    pos = skip_run(parts, times, prices, owner, local, limits, pos, skipped, acc.next_tick)
                continue
            self._feed_skipped()
            self._pass_held(key)
            self._feed_busy(trade_tick(batch, lo + j))

    def _quiet_ticks(
        self, piece: MarketSlice, cursors: dict[str, int], t: int, busy: set[str], books: list[AccountBook]
    ) -> bool:
        """The clock ticks the dense feed makes up to a record at ``t`` whose busy trades before it are all
        inside their bands (``_quiet_before``): each at the first event at or after the next tick time
        (a busy trade not fed yet before ``t``, else the record); as long as every due account's clock is
        quiet there, the tick only moves its time, which is done here without feeding the trades (they
        are skipped later, as they would be now). False at the first tick that is not quiet (its time
        not taken): the caller then feeds the record as usual, which ticks there."""
        acc = self.accounts
        last = max(t, acc.executor_ms)
        next_tick = acc.next_tick
        while next_tick <= last:
            now = last
            for key in busy:
                batch = piece.trades.get(key)
                if batch is None:
                    continue
                times = batch.time_ms
                i = max(cursors[key], int(times.searchsorted(next_tick)))
                if i < len(times) and times[i] < t:
                    now = min(now, max(int(times[i]), acc.executor_ms))
            due = [book for book in books if now >= book.clock_ms + 1000]
            if not all(book.clock_quiet(now) for book in due):
                return False
            for book in due:
                book.clock_ms = now
            next_tick = acc.next_tick = min(book.clock_ms for book in books) + 1000
        return True

    def _quiet_before(self, piece: MarketSlice, cursors: dict[str, int], t: int, busy: set[str]) -> bool:
        """Whether every busy market's trades not fed yet before ``t`` lie inside its band, so that
        ``trades_before(t)`` would only skip them (the caller also requires that no clock is due before
        ``t``): then a record at ``t`` may be held before them, since they change nothing it reads. The
        answer comes from the time of the first such trade outside a band (numpy over the rest of the
        slice), remembered with the bands it was found for; a trade fed since (``_feed_busy``) and a new
        slice forget it (skipped trades only move the cursors up to it)."""
        self.held.check()
        if self.quiet_to is not None and self.quiet_version == self.held.version:
            return t <= self.quiet_to
        self.quiet_version = self.held.version
        bands = {key: self.held.band_of(key) for key in busy}
        if self.quiet_to is None or bands != self.quiet_bands:
            self.quiet_bands = bands
            first = math.inf
            for key in busy:
                batch = piece.trades.get(key)
                if batch is None:
                    continue
                lo = cursors[key]
                if lo >= len(batch):
                    continue
                band = self.held.band_of(key)
                times = batch.time_ms[lo:]
                if band is None:
                    first = min(first, int(times[0]))
                    continue
                prices = batch.price[lo:]
                outside = (prices <= band[0]) | (prices >= band[1]) | (times >= band[2])
                at = int(outside.argmax())
                if outside[at]:
                    first = min(first, int(times[at]))
            self.quiet_to = first
        return t <= self.quiet_to

    def _pass_held(self, key: str) -> None:
        """Pass what is held of ``key`` (mark before book at equal times) to every account."""
        items = self.held.take(key)
        if items:
            self._pass_items(key, items)
            self.bands_dirty = True

    def _feed_busy(self, tick: TradeTick) -> None:
        now = max(tick.trade_time, self.accounts.executor_ms)
        key = tick.key
        for book in self.accounts.books.values():
            if key in book.busy_markets():
                book.executor.on_trade_tick(tick, now)
        self.last[tick.key] = tick
        self.bands_dirty = True
        self.quiet_to = None

    def _feed_skipped(self) -> None:
        if self.skipped:
            held = list(self.skipped.values())
            self.skipped.clear()
            for batch, i in held:
                self._feed_busy(trade_tick(batch, i))
