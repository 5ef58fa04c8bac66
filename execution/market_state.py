"""What the executor knows of each market (key ``exchange:symbol``) from md.trades, md.book and md.mark:
the newest trade/book event time (data freshness for the risk guard), the newest trade's time and price
(exit orders' not-before, the fallback entry's market price), the book tops, and the next funding
settlement each md.mark record announces.

Bookkeeping only: a settlement that falls due is handed back to the caller, which charges it to its open
positions (`Executor`); orders, positions and the guard are not this module's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from execution.domain import BookTop, MarkTick, TradeTick


class FundingDue:
    """The next funding settlement of a symbol: when, at which rate, and the newest mark price before it."""

    __slots__ = ("mark_price", "rate", "time")

    def __init__(self, time: int, rate: float, mark_price: float) -> None:
        self.time, self.rate, self.mark_price = time, rate, mark_price


class MarketState:
    """Per market key: data and trade times, last price, book top, mark time, the funding settlement due."""

    def __init__(self) -> None:
        self.data_time: dict[str, int] = {}  # newest trade/book event time
        self.trade_time: dict[str, int] = {}  # newest trade time (exit orders' not-before)
        self.last_price: dict[str, float] = {}
        self.books: dict[str, BookTop] = {}
        self.mark_time: dict[str, int] = {}  # newest mark event time
        self.funding_due: dict[str, FundingDue] = {}  # the next funding settlement

    def on_trade(self, tick: TradeTick) -> FundingDue | None:
        """Record a trade; returns the settlement it makes due (taken off the schedule), if any."""
        key, t = tick.key, tick.trade_time
        due = self.funding_due.get(key)
        if due is not None and t >= due.time:
            del self.funding_due[key]
        else:
            due = None
        # `note_trade` inline: this runs for every trade the backtest feeds
        if t > self.data_time.get(key, -1):
            self.data_time[key] = t
        if t >= self.trade_time.get(key, -1):
            self.trade_time[key] = t
            self.last_price[key] = tick.price
        return due

    def note_trade(self, tick: TradeTick) -> None:
        """The trade's time and price, funding left alone."""
        key = tick.key
        if tick.trade_time > self.data_time.get(key, -1):
            self.data_time[key] = tick.trade_time
        if tick.trade_time >= self.trade_time.get(key, -1):
            self.trade_time[key] = tick.trade_time
            self.last_price[key] = tick.price

    def on_book(self, book: BookTop) -> None:
        if book.event_time > self.data_time.get(book.key, -1):
            self.data_time[book.key] = book.event_time
        self.books[book.key] = book

    def on_mark(self, mark: MarkTick) -> FundingDue | None:
        """Track the next funding settlement of the symbol; returns the previous one if this record makes
        it due (taken off the schedule). A record older than the newest seen changes nothing."""
        key = mark.key
        if mark.event_time < self.mark_time.get(key, -1):
            return None  # older than what we have: it cannot tell us anything newer about funding
        self.mark_time[key] = mark.event_time
        due = self.funding_due.get(key)
        if due is not None and mark.event_time >= due.time:
            del self.funding_due[key]
        else:
            due = None
        if mark.event_time < mark.next_funding_time:
            self.funding_due[key] = FundingDue(mark.next_funding_time, mark.funding_rate, mark.mark_price)
        return due

    def warm(self, trades: Iterable[Mapping[str, Any]], books: Iterable[Mapping[str, Any]]) -> list[BookTop]:
        """Take in trades and books handled before a restart (records, in any order); returns the book
        tops that became the newest of their market (for the caller's broker)."""
        newest: list[BookTop] = []
        for rec in books:
            book = BookTop.from_record(rec)
            if book.event_time > self.data_time.get(book.key, -1):
                self.data_time[book.key] = book.event_time
            if book.event_time >= getattr(self.books.get(book.key), "event_time", -1):
                self.books[book.key] = book
                newest.append(book)
        for rec in trades:
            self.note_trade(TradeTick.from_record(rec))
        return newest

    def data_age(self, key: str, now_ms: int) -> float | None:
        """Milliseconds since the market's newest trade or book (None: never seen)."""
        t = self.data_time.get(key)
        return None if t is None else now_ms - t

    def price(self, key: str) -> float | None:
        """The market's price now: its book's mid, else its last trade price."""
        book = self.books.get(key)
        return (book.mid if book is not None else None) or self.last_price.get(key)
