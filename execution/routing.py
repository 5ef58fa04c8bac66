"""The order router: how an entry of a given notional is worked (``entry.kind: routed``).

Per entry, from the routing table of the signal's strategy (``stream_apps.core.routing_table``):

1. **bucket** by notional (quantity x signal price, USDT): its maker wait, TWAP slices and interval;
2. **liquidity probe** on the newest book: the spread in bps against its own mean over the last
   ``mean_window_ms`` (one-minute sums of every book seen); wider than ``spread_ratio`` x the mean ->
   hold the entry ``wait_ms`` and probe again (``on_wide: wait``, at most ``max_waits`` times, then split)
   or multiply the slices (``split``). Then depth: a taker slice takes at most ``depth_share`` of the
   notional shown on the side it takes (``depth_levels`` levels), else more slices (at most ``max_slices``);
3. **maker phase**: a post-only limit at the touch for the whole quantity, resting ``maker_wait_ms``;
4. after the wait, the filled share against **theta** (``taker_below_fill_ratio``): at or above it the
   entry keeps what filled; below it the rest goes out as **taker slices**: equal market orders, the
   next one ``slice_interval_ms`` +/- jitter after the previous one filled (one order of an entry in
   flight at a time, so an entry never has two live orders).

Degradation (``execution.degradation``): ``market_only`` skips the maker phase (the slices go to market
at once); ``no_twap_no_maker`` sends one market order, no probe. Set on event time by the executor's
maker rule in paper and the backtest (``execution.maker_fill_rule``, through ``Router.flags_at``), by
the service's wall-clock SLO monitor in testnet and live (``Router.flags``).

Determinism: the router reads no wall clock and no global random state. Times are the executor's
``now_ms`` and the books' event times, so a backtest and the live service make the same decisions on
the same inputs; the slice jitter is a hash of (``jitter_seed``, the signal's market, evaluation time and
direction, slice number: ``jitter_key``), so the same signal gets the same schedule everywhere, and so
does a renamed revision of its strategy (an A/B candidate). Client order ids of the slices derive from the signal id
(``client_ids``: the maker order is the signal's ``entry`` id, slice k its ``entry_fallback`` id with
attempt k), so a re-delivered signal or a restart never sends a slice twice.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from execution.degradation import NONE, DegradationFlags
from execution.domain import BookTop, Side, Signal
from stream_apps.core.routing_table import LiquidityProbe, RouteBucket, RoutingTable

MINUTE_MS = 60_000


def bucket_for(table: RoutingTable, notional: float) -> int:
    """Index of the first bucket whose ``up_to`` exceeds ``notional`` (the last one has no bound)."""
    for i, bucket in enumerate(table.buckets):
        if bucket.up_to is None or notional < bucket.up_to:
            return i
    return len(table.buckets) - 1  # unreachable: the table's last bucket is unbounded


def split_qty(qty: float, slices: int) -> list[float]:
    """``slices`` equal parts of ``qty``; the last takes the rounding remainder, so they sum to ``qty``."""
    part = qty / slices
    return [part] * (slices - 1) + [qty - part * (slices - 1)]


def jitter_key(signal: Signal) -> str:
    """What an entry's slice jitter is drawn from (with the seed and the slice number): the signal's
    market, evaluation time and direction. Not its id, which names the strategy and its revision: two
    revisions entering the same market at the same moment (an A/B run, ``strategy simulate``'s candidate,
    which runs under another name) get the same schedule, so they differ only by their rules."""
    return f"{signal.exchange}:{signal.symbol}:{signal.eval_time}:{signal.direction}"


def jitter_fraction(seed: int, key: str, slice_no: int) -> float:
    """A number in [-1, 1) from (seed, ``jitter_key``, slice number) alone: BLAKE2b rather than ``random``
    so nothing depends on a process's random state and live and backtest draw the same number."""
    digest = hashlib.blake2b(f"{seed}:{key}:{slice_no}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**63 - 1.0


def slice_delay_ms(interval_ms: int, jitter: float, seed: int, key: str, slice_no: int) -> int:
    """Time from one taker slice to slice ``slice_no``: the interval moved by at most +/- ``jitter`` of it."""
    return max(0, round(interval_ms * (1.0 + jitter * jitter_fraction(seed, key, slice_no))))


def spread_bps(book: BookTop) -> float | None:
    if book.best_bid is None or book.best_ask is None or book.best_ask <= 0 or book.best_bid <= 0:
        return None
    mid = (book.best_bid + book.best_ask) / 2
    return (book.best_ask - book.best_bid) / mid * 1e4


def depth_notional(book: BookTop, side: Side, levels: int) -> float:
    """Notional shown on the side a taker order of ``side`` takes (asks for a buy), over ``levels`` levels."""
    shown = book.asks if side == "BUY" else book.bids
    return sum(price * qty for price, qty in shown[:levels])


class SpreadTracker:
    """Each market's spread in bps, summed per minute of book event time: the mean over a trailing
    window in O(window / 1 min) memory and time, whatever the book rate.

    Books can also be handed over in bulk and counted later (``defer``: the backtest's sparse feed, which
    holds or skips most books; with ``deferring`` set, as the backtest runner sets it, ``observe`` too): they are counted, in the order given, before anything reads the sums
    or counts another book (``flush``). A deferred book whose minute the newest book's count would drop
    (``horizon_ms`` before it) is not added only to be dropped: the sums come out the same, float for
    float, as counting every book as it came (``add``), and the work is per entry probed, not per book.
    Why not just count as they come: a backtest sees ~2 books/s per market and probes a few entries an
    hour, so counting each book was ~10 % of a routed backtest."""

    DEFER_LIMIT = 30_000  # deferred books compacted at this many (a backtest's records: bounded memory)

    def __init__(self, horizon_ms: int = 3_600_000) -> None:
        self._horizon_ms = horizon_ms  # minutes older than this before the newest book are dropped
        self._rows: dict[str, deque[list[float]]] = {}  # key -> [minute start, sum, count], oldest first
        self._last: dict[str, int] = {}  # key -> event time of the newest book counted
        self._deferred: list[tuple[str, int, Any, float | None]] = []  # books not counted yet (``defer``)
        # ``observe`` defers too (a backtest: the count's work is done when a probe reads it; live
        # counts each book at once, so a probe never waits for an hour of books to be counted)
        self.deferring = False

    @property
    def horizon_ms(self) -> int:
        return self._horizon_ms

    @horizon_ms.setter
    def horizon_ms(self, value: int) -> None:
        self.flush()  # deferred books are counted with the horizon in force when they came
        self._horizon_ms = value

    @property
    def _minutes(self) -> dict[str, deque[list[float]]]:
        """The per-minute rows with every book given so far counted (tests compare them)."""
        self.flush()
        return self._rows

    def observe(self, book: BookTop) -> None:
        if book.best_bid is not None and book.best_ask is not None:
            if self.deferring:
                self.defer([(book.key, book.event_time, book.best_bid, book.best_ask)])
            else:
                self.add(book.key, book.event_time, book.best_bid, book.best_ask)

    def add(self, key: str, event_time: int, bid: float, ask: float) -> None:
        """Count one book's spread. A book no newer than the newest counted is not counted (again): the
        backtest's sparse feed shows the router every book as it holds it and passes some later."""
        if self._deferred:
            self.flush()  # books given before this one are counted before it
        if event_time <= self._last.get(key, -1) or bid <= 0 or ask <= 0:
            return
        self._last[key] = event_time
        spread = (ask - bid) / ((ask + bid) / 2) * 1e4
        rows = self._rows.setdefault(key, deque())
        minute = event_time - event_time % MINUTE_MS
        if rows and rows[-1][0] == minute:
            rows[-1][1] += spread
            rows[-1][2] += 1
        else:  # a later minute (books are counted in time order)
            rows.append([minute, spread, 1])
        while rows and rows[0][0] + MINUTE_MS <= minute - self._horizon_ms:
            rows.popleft()

    def defer(self, books: Sequence[tuple[str, int, Any, float | None]]) -> None:
        """Books, in the order they came, to be counted as ``add`` counts them before the sums are next
        read or another book is added: each (key, event time, best bid, best ask), or (key, event time,
        an md.book record, None), whose touch is read only if it is counted (the backtest's records: most
        are never read). Past ``DEFER_LIMIT`` books those that will never count are dropped (``_compact``)."""
        self._deferred.extend(books)
        if len(self._deferred) >= self.DEFER_LIMIT:
            self._compact()

    @staticmethod
    def _top(item: Any, ask: float | None) -> tuple[float, float] | None:
        """A deferred book's (bid, ask): as given, or an md.book record's first levels (None: a side empty)."""
        if ask is not None:
            return item, ask
        bids, asks = item["bids"], item["asks"]
        return (bids[0]["price"], asks[0]["price"]) if bids and asks else None

    def _cuts(self, books: list[tuple[str, int, Any, float | None]]) -> dict[str, float]:
        """Per market, the time from which deferred books are added (markets absent: none counts).
        ``add`` of each in order would leave the rows of the minutes after ``minute(newest) - horizon -
        1 min`` (newest: the latest valid book, the last one counted; rows are dropped oldest first as
        later minutes come), each the sum of its books in order. Books of earlier minutes are all older
        than those minutes, so they neither count nor stop a kept book from counting (``add`` skips a
        book no newer than the last counted). When the latest book of a market is not valid (a side
        empty or not positive), all its books are added (-inf): ``add`` decides."""
        newest: dict[str, int] = {}
        at: dict[str, int] = {}
        for i, (key, t, _, _) in enumerate(books):
            if t > newest.get(key, -1):
                newest[key], at[key] = t, i
        cut: dict[str, float] = {}
        for key, t in newest.items():
            if t <= self._last.get(key, -1):
                continue  # no deferred book of the market is newer than the last counted: none counts
            _, _, item, ask = books[at[key]]
            top = self._top(item, ask)
            if top is None or top[0] <= 0 or top[1] <= 0:
                cut[key] = -math.inf
                continue
            dropped_to = t - t % MINUTE_MS - self._horizon_ms - MINUTE_MS  # rows at or before: dropped
            cut[key] = (dropped_to // MINUTE_MS + 1) * MINUTE_MS  # the first minute kept
        return cut

    def _compact(self) -> None:
        """Drop the deferred books that will never count (before their market's cut now: a later book
        only moves the cut later); count them all if that leaves over half the limit."""
        cut, never = self._cuts(self._deferred), math.inf
        self._deferred = [book for book in self._deferred if book[1] >= cut.get(book[0], never)]
        if len(self._deferred) >= self.DEFER_LIMIT // 2:
            self.flush()

    def flush(self) -> None:
        """Count the deferred books: those from their market's cut on (``_cuts``), the rest would have
        been dropped."""
        books, self._deferred = self._deferred, []
        if not books:
            return
        cut, add, top_of, never = self._cuts(books), self.add, self._top, math.inf
        for key, t, item, ask in books:
            if t >= cut.get(key, never):
                top = top_of(item, ask)
                if top is not None:
                    add(key, t, *top)

    def mean(self, key: str, now_ms: int, window_ms: int) -> tuple[float, int] | None:
        """(mean spread bps, books) over the minutes that overlap ``(now_ms - window_ms, now_ms]``."""
        if self._deferred:
            self.flush()
        total, count = 0.0, 0
        for minute, spread_sum, n in self._rows.get(key, ()):
            if minute + MINUTE_MS > now_ms - window_ms and minute <= now_ms:
                total += spread_sum
                count += int(n)
        return (total / count, count) if count else None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    action: Literal["send", "wait"]
    slices: int
    reason: str  # what the probe found ("" when nothing), on the orders' reason


def probe(
    cfg: LiquidityProbe,
    book: BookTop | None,
    side: Side,
    notional: float,
    slices: int,
    mean: tuple[float, int] | None,
    waits_done: int,
) -> ProbeResult:
    """The liquidity probe (module docstring, step 2) for an entry the bucket works in ``slices``."""
    if book is None:
        return ProbeResult("send", slices, "no_book")
    notes, cap = [], max(cfg.max_slices, slices)
    spread = spread_bps(book)
    if spread is not None and mean is not None and mean[1] >= cfg.min_books and spread > cfg.spread_ratio * mean[0]:
        if cfg.on_wide == "wait" and waits_done < cfg.max_waits:
            return ProbeResult("wait", slices, f"wide_spread {spread:.2f}bps>{cfg.spread_ratio:g}x{mean[0]:.2f}")
        slices *= cfg.split_factor
        notes.append(f"wide_spread_split {spread:.2f}bps")
    depth = depth_notional(book, side, cfg.depth_levels)
    if depth > 0 and notional / slices > cfg.depth_share * depth:
        slices = math.ceil(notional / (cfg.depth_share * depth))
        notes.append(f"thin_book {depth:.0f}")
    return ProbeResult("send", min(slices, cap), " ".join(notes))


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """How one entry is worked: decided once, when it is first sent."""

    bucket: int
    label: str  # the bucket as reports name it (0-200, 1000+)
    notional: float
    maker_wait_ms: int  # 0: no maker phase
    slices: int
    slice_interval_ms: int
    jitter: float
    seed: int
    theta: float
    note: str  # probe findings and degradation, for the orders' reason

    def reason(self, role: Literal["maker", "taker"], slice_no: int = 0) -> str:
        """An entry order's reason, ``route <bucket> n=<notional> maker|taker <k>/<n>[ <note>]``: the maker
        order is ``maker 0/<slices>`` (no taker slice sent yet), taker slice k (from 1) ``taker k/<slices>``.
        It carries what the plan was decided from, so a restarted executor rebuilds the plan from any
        order of the entry (``rebuild_plan``); the routing TCA reads the prefix up to the role."""
        tail = f" {self.note}" if self.note else ""
        return f"route {self.label} n={self.notional:.2f} {role} {slice_no}/{max(self.slices, slice_no)}{tail}"

    def delay_ms(self, signal: Signal, slice_no: int) -> int:
        return slice_delay_ms(self.slice_interval_ms, self.jitter, self.seed, jitter_key(signal), slice_no)

    def go_taker(self, filled: float, qty: float) -> bool:
        """After the maker wait: below theta the rest goes to the taker slices (nothing filled: always)."""
        return filled <= 0 or filled / qty < self.theta


_REASON = re.compile(
    r"^route (?P<label>\S+) n=(?P<notional>[0-9.]+) (?P<role>maker|taker)"
    r"(?: (?P<k>[0-9]+)/(?P<n>[0-9]+))?(?: (?P<note>.*))?$"
)


@dataclass(frozen=True, slots=True)
class RouteReason:
    """A routed entry order's reason read back (``RoutePlan.reason``)."""

    label: str
    notional: float
    role: Literal["maker", "taker"]
    slice_no: int | None  # None: a maker reason written before the reason carried the slice count
    slices: int | None
    note: str


def parse_route(reason: str | None) -> RouteReason | None:
    """The parts of a routed order's reason; None for the reason of any other order."""
    m = _REASON.match(reason or "")
    if m is None:
        return None
    k, n = m["k"], m["n"]
    role: Literal["maker", "taker"] = "maker" if m["role"] == "maker" else "taker"
    return RouteReason(
        m["label"],
        float(m["notional"]),
        role,
        None if k is None else int(k),
        None if n is None else int(n),
        m["note"] or "",
    )


def rebuild_plan(table: RoutingTable, found: RouteReason, maker_sent: bool) -> RoutePlan:
    """The plan an entry was worked with, from one of its orders' reasons and the routing table of its
    strategy revision (the table is part of the revision's hash, so it is the table that made the plan).
    The reason gives the bucket, the notional, the slice count (the probe and degradation may have
    changed the bucket's) and the notes; the table the wait, interval, jitter and theta. ``maker_sent``:
    the entry had a maker phase (a maker order is among its records), else its wait was 0. A reason
    without the slice count (written before it carried one) takes the bucket's, 1 under
    ``no_twap_no_maker``."""
    labels = [table.label(i) for i in range(len(table.buckets))]
    index = labels.index(found.label) if found.label in labels else bucket_for(table, found.notional)
    bucket = table.buckets[index]
    degraded = "degraded:" in found.note
    slices = found.slices or (1 if "degraded:no_twap_no_maker" in found.note else bucket.slices)
    return RoutePlan(
        index,
        table.label(index),
        found.notional,
        bucket.maker_wait_ms if maker_sent and not degraded else 0,
        slices,
        bucket.slice_interval_ms,
        table.slice_jitter,
        table.jitter_seed,
        table.taker_below_fill_ratio,
        found.note,
    )


def plan_route(
    table: RoutingTable,
    notional: float,
    found: ProbeResult,
    maker_possible: bool,
    flags: DegradationFlags = NONE,
) -> RoutePlan:
    """The plan of an entry the probe let through (``found.action == "send"``)."""
    index = bucket_for(table, notional)
    bucket: RouteBucket = table.buckets[index]
    notes = [found.reason] if found.reason else []
    wait, slices = bucket.maker_wait_ms, found.slices
    if flags.no_twap_no_maker:
        wait, slices = 0, 1
        notes.append("degraded:no_twap_no_maker")
    elif flags.market_only:
        wait = 0
        notes.append("degraded:market_only")
    if not maker_possible:
        wait = 0
    return RoutePlan(
        index,
        table.label(index),
        notional,
        wait,
        slices,
        bucket.slice_interval_ms,
        table.slice_jitter,
        table.jitter_seed,
        table.taker_below_fill_ratio,
        " ".join(notes),
    )


class RoutedStrategy(Protocol):
    """What the router needs of a strategy revision (``StrategyConfig`` is one)."""

    @property
    def config_hash(self) -> str: ...

    @property
    def routing(self) -> RoutingTable | None: ...


class Router:
    """The routing tables in force and what the router remembers between entries (the spreads), plus
    the degradation flags in force: ``flags``, what the wall-clock SLO monitor last set (testnet, live),
    or ``flags_at(now_ms)``, which wins: the maker rule on event time in paper and the backtest
    (``execution.maker_fill_rule``), or a scripted ``execution.slo.FlagSchedule`` in a test. One per
    executor (``executor.entry_flow.router``).

    Tables are found by the signal's ``config_hash`` (the strategy revision that made it): those
    registered (``register_all``: the backtest registers its strategies), else what ``resolver`` returns
    for the hash (the service's ``execution.routing_source``; a table it finds is kept), else the default
    table (the executor config's ``routing``)."""

    def __init__(self, default: RoutingTable) -> None:
        self.default = default
        self.tables: dict[str, RoutingTable] = {}  # strategy config_hash -> its own table
        self.flags: DegradationFlags = NONE  # the SLO monitor's flags in force (a value it replaces)...
        self.flags_at: Callable[[int], DegradationFlags] | None = None  # ...or a function of the clock (wins)
        self.spreads = SpreadTracker(default.probe.mean_window_ms)
        self.resolver: Callable[[str], RoutingTable | None] | None = None

    def register_all(self, strategies: Iterable[RoutedStrategy]) -> None:
        for strategy in strategies:
            self.register(strategy.config_hash, strategy.routing)

    def register(self, config_hash: str, table: RoutingTable | None) -> None:
        """The table of the strategy revision ``config_hash`` (None: it has none, the default applies)."""
        if table is not None:
            self.tables[config_hash] = table
            self.spreads.horizon_ms = max(self.spreads.horizon_ms, table.probe.mean_window_ms)

    def table_for(self, config_hash: str) -> RoutingTable:
        table = self.tables.get(config_hash)
        if table is None and self.resolver is not None:
            table = self.resolver(config_hash)  # a table found is kept; none is asked again next time
            if table is not None:
                self.tables[config_hash] = table
        return table or self.default

    def on_book(self, book: BookTop) -> None:
        self.spreads.observe(book)

    def plan(
        self,
        config_hash: str,
        side: Side,
        notional: float,
        book: BookTop | None,
        now_ms: int,
        waits_done: int,
        flags: DegradationFlags | None = None,
    ) -> RoutePlan | ProbeResult:
        """The entry's plan, or the probe's ``wait`` result when the entry must be held first."""
        if flags is None:
            flags = self.flags_at(now_ms) if self.flags_at is not None else self.flags
        table = self.table_for(config_hash)
        bucket = table.buckets[bucket_for(table, notional)]
        if flags.no_twap_no_maker:
            found = ProbeResult("send", 1, "")
        else:
            mean = None if book is None else self.spreads.mean(book.key, now_ms, table.probe.mean_window_ms)
            found = probe(table.probe, book, side, notional, bucket.slices, mean, waits_done)
            if found.action == "wait":
                return found
        touch = book is not None and (book.best_bid if side == "BUY" else book.best_ask) is not None
        return plan_route(table, notional, found, touch, flags)
