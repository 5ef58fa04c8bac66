"""The executor's decision loop: signals, trades, book tops, kill-switch records and clock ticks in;
order, fill, position and risk records out. Pure: no Kafka, no wall clock (every call takes `now_ms`).

Inputs are records of signals, md.trades, md.book and md.mark; the streaming service (`execution.service`)
and the backtest runner (`backtest.runner`) drive the same object, so exits, fills, costs and funding
have one implementation.

Per signal (strategy x exchange x symbol is a slot holding at most one position):
1. parse (invalid -> block `invalid_signal`); already seen -> block `duplicate_signal`; older than
   max_signal_age -> block `stale_signal`;
2. an open position or entry in the slot: same direction, or opposite without `is_flip` -> block
   `position_open`; opposite with `is_flip` -> close it (`signal_flip`) and go on;
3. risk guard (kill switch, daily loss, pause, venue, outputs, stale data, max open positions);
4. size (tier R) and send the entry: the order intent (PENDING_NEW) is emitted before the broker sees
   the order, and outside paper mode the sink's `barrier()` makes it durable first.
Every decision is emitted to risk.events with its reason, signal decisions under the scope
`strategy:<name>:<exchange>:<symbol>` (the slot), market-data transitions under `symbol:...`. Per trade: the broker fills what the trade
reaches, then every open position of the symbol evaluates its exits on the trade. Per clock tick: pause
end, UTC day change, stale data and venue transitions, maker-entry timeouts.

Timeouts: a position closes at market once it has been open for its signal's `timeout_ms` (the
strategy's `exits.timeout_min`, so research, backtest and live trading run the same timeout); the
executor's `timeout_min` / `timeout_min_by_strategy` only stand in for signals that carry none
(written before the field existed). The timeout travels on the position's events, so a restart
restores it.

Funding: every md.mark record names the next funding time of its symbol and the rate it will charge
(Binance's estimate, final at the settlement). The first trade or mark record of the symbol at or
after that time settles it with the newest rate and mark price seen before it: every open position
opened before the funding time pays qty x mark x rate (longs pay a positive rate, shorts a negative
one), accumulated as the position's funding_r (`Position.pay_funding`).

Idempotency: client order ids derive from the signal id (`client_ids`), and the executor remembers the
signals it has handled for as long as they are young enough to be traded (older ones are refused as
stale anyway), so a re-delivered signal never opens a second position. After a restart `restore`
rebuilds open positions from the positions topic, handled signals from the orders and positions
topics, and the guard from risk.events: the output topics are the state (see `execution.service`).
Orders the previous run left unfinished are, in paper mode, re-entered in the new paper book (exits;
entries too when the state is a committed cut of the transactional service, see `restore`) or
dropped (entries otherwise); in exchange modes they are looked up by client id (`broker.resume`) and never
sent again: fills the dead run did not record are reported now, an entry that filled opens its
position (the signal is read back for its exit plan), one still resting is cancelled.

Exchange modes also reconcile (`reconcile`, driven by the service): the exchange's positions and open
orders against ours, every finding published to risk.events (scope `reconcile:<exchange>:<symbol>`,
reason `<finding>:<outcome>`, e.g. `orphan_position:flatten_sent`); until a run succeeds new entries
are blocked as if the exchange were down (fail closed).

Layout: `Executor` holds the state every job shares (positions, pending entries, open orders, the
guard, the signals seen) and routes broker events; signal intake and entry orders are
`execution.executor_entries`, exits and position management (add-ons, trailing, partial take-profit:
`execution.management`) `execution.management_flow`, market data and the funding schedule `execution.market_state`, restore
`execution.executor_restore`, and its side of reconciliation `execution.executor_reconcile`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import structlog

from execution.broker import (
    TERMINAL_STATES,
    Broker,
    Execution,
    OrderRequest,
    OrderUpdate,
)
from execution.config import ExecutorConfig
from execution.domain import (
    BookTop,
    MarkTick,
    TradeTick,
)
from execution.entries import (
    PendingEntry,
)
from execution.executor_entries import EntryFlow
from execution.executor_reconcile import reconcile as reconcile_with_exchange
from execution.executor_restore import StateRestore
from execution.management_flow import PositionFlow
from execution.market_state import FundingDue, MarketState
from execution.position_manager import Position
from execution.reconcile import Reconciler, ReconcileReport
from execution.records import fill_record, order_record
from execution.risk_guard import (
    KILL_SWITCH,
    RiskDecision,
    RiskGuard,
    risk_key,
    symbol_scope,
)
from schemas.catalogue import market_key

log = structlog.get_logger("executor")

ORDERS, FILLS, POSITIONS, RISK = "orders", "fills", "positions", "risk.events"


class OutputSink(Protocol):
    """Where records go (the service: the Kafka publisher; tests: a list)."""

    def emit(self, topic: str, key: str, record: dict[str, Any]) -> None: ...

    def barrier(self) -> None:
        """Return once everything emitted so far is durable (acknowledged by the broker)."""
        ...

    @property
    def healthy(self) -> bool: ...


class ListSink:
    """Collects records in memory; what the unit tests and the pure benchmark use."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []
        self.barriers = 0
        self.healthy = True

    def emit(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.records.append((topic, key, record))

    def barrier(self) -> None:
        self.barriers += 1

    def of(self, topic: str) -> list[dict[str, Any]]:
        return [r for t, _, r in self.records if t == topic]


def mid_now(market: MarketState, key: str, book_max_age_ms: int) -> tuple[float, str] | None:
    """What an order's fills are measured against (its mid at send): the book top's mid while the book
    is fresh (at most `book_max_age_ms` older than the newest trade, as the paper broker's book model
    asks), else the last trade price, with which one it is; None before either was seen."""
    book = market.books.get(key)
    last = market.last_price.get(key)
    newest = market.trade_time.get(key, -1)
    if book is not None and book.mid is not None and newest - book.event_time <= book_max_age_ms:
        return book.mid, "book"
    return (last, "last_trade") if last is not None else None


def _stamp_mid(ex: Executor, req: OrderRequest) -> None:
    """Record on the order just tracked the mid it is sent against (``mid_now``), unless ``stamp_mid`` is off."""
    if ex.stamp_mid:
        key = market_key(req.exchange, req.symbol)
        ex.orders[req.client_order_id].mid_at_send = mid_now(ex.market, key, ex.config.paper.book_max_age_ms)


class _OrderInfo:
    __slots__ = (
        "config_rev",
        "leg",
        "market_notional",
        "market_qty",
        "mid_at_send",
        "position_id",
        "reason",
        "reference",
        "request",
        "signal_id",
    )

    def __init__(
        self,
        request: OrderRequest,
        leg: str,
        signal_id: str | None,
        position_id: str | None,
        reference: float | None,
        reason: str | None,
        mid_at_send: tuple[float, str] | None = None,
    ) -> None:
        self.request, self.leg, self.signal_id, self.position_id = request, leg, signal_id, position_id
        self.reference, self.reason, self.mid_at_send = reference, reason, mid_at_send
        self.config_rev: int | None = None
        # the order's fills so far at their market prices (orders records carry the average: a restore
        # rebuilds a part-filled entry's fills from it, ``routed_restore.restored_fill``)
        self.market_qty = self.market_notional = 0.0

    @property
    def avg_market_price(self) -> float | None:
        return self.market_notional / self.market_qty if self.market_qty > 0 else None


class Executor:
    """The decision loop of one mode (module docstring): feed it inputs with ``on_*`` and ``now_ms``."""

    def __init__(self, config: ExecutorConfig, mode: str, broker: Broker, sink: OutputSink, now_ms: int) -> None:
        self.config = config
        self.mode = mode
        self.broker = broker
        self.sink = sink
        self.guard = RiskGuard.fresh(config.risk, mode, now_ms)
        self.positions: dict[str, Position] = {}  # open positions by id
        self.by_market: dict[str, set[str]] = defaultdict(set)  # market key -> open position ids
        self.slot_position: dict[tuple[str, str, str], str] = {}
        self.entries: dict[str, PendingEntry] = {}  # by position id
        self.slot_entry: dict[tuple[str, str, str], str] = {}
        self.orders: dict[str, _OrderInfo] = {}  # open orders by client order id
        self.seen_signals: dict[str, int] = {}  # signal id -> eval time (pruned once too old to trade)
        self.market = MarketState()  # per market key: data freshness, last trade, book top, funding due
        self.stamp_mid = True  # orders carry their mid at send (the backtest's executors do not: see accounts)
        self.data_time = self.market.data_time  # market key -> newest trade/book event time
        self.owner_ok = True  # False when another executor may own some of our partitions (service sets it)
        self.reconcile_ok = True  # False after a failed reconciliation: entries blocked until one succeeds
        # bumped by every change of positions, entries, orders or the guard (and by every signal, clock
        # tick and kill-switch record): a caller caching ``busy_markets`` or ``clock_quiet_until`` asks
        # again only when it moved (the backtest runner)
        self.changes = 0
        self.entry_flow = EntryFlow(self)  # signal intake, entry orders, positions opened from them
        self.position_flow = PositionFlow(self)  # exits and management of open positions

    # ================================================================ inputs
    def on_signal(self, record: Mapping[str, Any], now_ms: int) -> RiskDecision:
        """Decide on one signal; returns the decision (also emitted). See `execution.executor_entries`."""
        return self.entry_flow.on_signal(record, now_ms)

    def on_trade(self, record: Mapping[str, Any], now_ms: int) -> None:
        self.on_trade_tick(TradeTick.from_record(record), now_ms)

    def on_trade_tick(self, tick: TradeTick, now_ms: int) -> None:
        key = tick.key
        due = self.market.on_trade(tick)
        if due is not None:
            self._settle_funding(key, due)
        self._route(self.broker.on_trade(tick), now_ms)
        self.position_flow.on_trade(key, tick.price, tick.trade_time, now_ms)

    def on_book(self, record: Mapping[str, Any], now_ms: int) -> None:
        self.on_book_top(BookTop.from_record(record), now_ms)

    def on_book_top(self, book: BookTop, now_ms: int) -> None:
        """``on_book`` of a parsed record (a caller feeding one record to several executors parses once)."""
        self.market.on_book(book)
        self.broker.on_book(book)
        self.entry_flow.on_book(book)  # the router's spread means (routed entries)

    def on_mark(self, record: Mapping[str, Any], now_ms: int) -> None:
        """Track the next funding settlement of the symbol, settling the previous one once it is due."""
        self.on_mark_tick(MarkTick.from_record(record), now_ms)

    def on_mark_tick(self, mark: MarkTick, now_ms: int) -> None:
        """``on_mark`` of a parsed record."""
        due = self.market.on_mark(mark)
        if due is not None:
            self._settle_funding(mark.key, due)

    def warm_market(self, trades: Iterable[Mapping[str, Any]], books: Iterable[Mapping[str, Any]]) -> None:
        """Market state from inputs handled before a restart (the newest trades and books before the
        committed input offsets): data freshness, last price and trade time, book tops. Nothing is
        filled, exited or settled; without it a restarted executor would refuse a signal that comes
        before its market's next trade as stale where the run before it traded the signal."""
        for book in self.market.warm(trades, books):
            self.broker.on_book(book)
        self.changes += 1

    def busy(self, key: str) -> bool:
        """Whether anything of ours (an open position, an entry being worked) trades on market `key`:
        otherwise a trade only updates the market's last price and times, so a caller that feeds the
        trades of a quiet market may pass only its newest one (the backtest runner does)."""
        return bool(self.by_market.get(key)) or any(e.signal.key == key for e in self.entries.values())

    def busy_markets(self) -> set[str]:
        """Every market ``busy`` is true of (the same answer for many keys at once; it changes only
        with ``changes``)."""
        return {key for key, ids in self.by_market.items() if ids} | {e.signal.key for e in self.entries.values()}

    def quiet_trades(self, key: str) -> tuple[float, float, float] | None:
        """``(low, high, until)``: a trade of market ``key`` with ``low < price < high`` and trade time
        before ``until`` changes nothing but the market's latest price and times (no exit crossed, no
        funding due: ``Position.quiet_band`` of every position, the funding time); None when every
        trade may matter (an entry or an order on the market). The backtest runner feeds only the
        others and the newest one."""
        if any(e.signal.key == key for e in self.entries.values()) or any(
            market_key(i.request.exchange, i.request.symbol) == key for i in self.orders.values()
        ):
            return None
        due = self.market.funding_due.get(key)
        low, high, until = -math.inf, math.inf, (due.time if due is not None else math.inf)
        for pid in self.by_market.get(key, ()):
            pos = self.positions.get(pid)
            if pos is not None:
                lo, hi, end = pos.quiet_band()
                low, high, until = max(low, lo), min(high, hi), min(until, end)
        return low, high, until

    def on_risk_record(self, record: Mapping[str, Any], now_ms: int) -> None:
        """Obey kill-switch records for our mode (other risk.events, including our own, are ignored)."""
        self.changes += 1
        if record.get("scope") != KILL_SWITCH or record.get("mode") != self.mode:
            return
        on = record["decision"] in ("halt", "flatten", "block")
        flatten = record["decision"] == "flatten"
        for decision in self.guard.set_kill_switch(on, flatten, now_ms):
            self._decide(decision)
        if on:
            for entry in list(self.entries.values()):
                self._cancel_entry(entry, KILL_SWITCH, now_ms)
        if flatten:
            self._flatten(KILL_SWITCH, now_ms)

    def on_clock(self, now_ms: int) -> None:
        self.changes += 1
        for decision in self.guard.tick(now_ms):
            self._decide(decision)
        venue = self.guard.venue(self.venue_up, now_ms)
        if venue is not None:
            self._decide(venue)
        for key in list(self.data_time):
            exchange, symbol = key.split(":", 1)
            change = self.guard.market_data(key, symbol_scope(exchange, symbol), self._data_age(key, now_ms), now_ms)
            if change is not None:
                self._decide(change)
        self._route(self.broker.poll(now_ms), now_ms)
        self.entry_flow.on_clock(now_ms)  # maker waits over, routed entries' steps due
        horizon = now_ms - 2 * int(self.config.risk.max_signal_age_s * 1000)
        if self.seen_signals and len(self.seen_signals) > 1024:
            for sid in [s for s, t in self.seen_signals.items() if t < horizon]:
                del self.seen_signals[sid]

    def clock_quiet(self, now_ms: int) -> bool:
        """Whether ``on_clock(now_ms)`` would change nothing (no decision, order or state): paper mode (its
        broker's ``poll`` is empty), no order or entry in flight, no pruning due, no UTC day change or
        pause end, and every market flagged fresh that is still fresh. Market data only ever makes a
        market fresher, so the answer stays true if data newer than this executor has seen exists: a
        caller that defers the data of idle markets (the backtest runner) may skip such ticks, as long
        as it delivers that data before any tick it does not skip."""
        if self.mode != "paper" or self.orders or self.entries or len(self.seen_signals) > 1024:
            return False
        guard = self.guard
        if not guard.tick_quiet(now_ms) or not guard.venue_quiet(self.venue_up):
            return False
        return all(guard.market_data_quiet(key, now_ms - t) for key, t in self.data_time.items())

    def clock_quiet_until(self, now_ms: int) -> float:
        """The end of the time from ``now_ms`` on in which ``clock_quiet`` stays true as long as nothing
        is passed to the executor (``now_ms`` itself when it is not quiet now): the next UTC day, the
        pause's end, the first market whose newest data turns stale. Newer data only moves the end
        later, so the answer holds until ``changes`` moves or a market is first seen (a caller may
        cache it; the backtest runner asks once per change instead of on every tick)."""
        if not self.clock_quiet(now_ms):
            return now_ms
        until = self.guard.tick_quiet_until()
        stale_ms = self.config.risk.stale_market_data_s * 1000
        for t in self.data_time.values():  # quiet while now - t <= stale_ms (now a whole ms)
            until = min(until, math.floor(t + stale_ms) + 1)
        return until

    # ================================================================ restore
    def restore(
        self,
        positions: Iterable[Mapping[str, Any]],
        orders: Iterable[Mapping[str, Any]],
        risk: Iterable[Mapping[str, Any]],
        now_ms: int,
        *,
        signals: Callable[[set[str]], Mapping[str, Mapping[str, Any]]] | None = None,
        committed_cut: bool = False,
        fills: Iterable[Mapping[str, Any]] = (),
    ) -> dict[str, int]:
        """Rebuild state from the executor's own output topics (records of every mode may be passed;
        `execution.executor_restore`).

        `signals(ids)` returns the signal records of those ids that can still be found; exchange modes
        ask for the signals of unfinished entry orders, to give a late-found fill its exit plan.

        `committed_cut`: the records are those of committed transactions and the inputs that follow are
        exactly those after the offsets committed with them (the transactional service): in paper mode
        an unfinished order is then re-entered in the new paper book as it was, entries included (their
        signal read back), so the next trade delivered fills it as it would have without the restart.
        Its not-before is the signal's evaluation time for an entry and none for the others (their
        trigger trade is at or before the cut; every trade delivered after it comes later).

        `fills`: the fills topic's records; what an order put back had filled is replayed from them one
        by one, so the restored state is bit-identical (without them: one execution per order from its
        orders record, equal to about 12 digits; `routed_restore.OrderFills`)."""
        orders = list(orders)  # read twice: the maker rule's samples (execution.maker_fill_rule), the state
        self.entry_flow.restore_maker_rule(orders, now_ms)
        return StateRestore(self, now_ms, signals, committed_cut).run(positions, orders, risk, fills)

    # ================================================================ reconciliation
    def reconcile(self, reconciler: Reconciler, now_ms: int) -> ReconcileReport:
        """Compare the exchange with our positions and open orders, repair per policy, publish findings.

        Our side: open positions plus what pending entries already filled, signed and summed per symbol
        (the exchange nets them: one-way mode). Stream events are routed first, and symbols with one of
        our orders in flight are left for the next run (see `execution.reconcile`)."""
        return reconcile_with_exchange(self, reconciler, now_ms)

    @property
    def venue_up(self) -> bool:
        """The exchange is reachable and the last reconciliation succeeded (the guard's `exchange_down`)."""
        return self.broker.healthy and self.reconcile_ok

    # ================================================================ internals
    def _settle_funding(self, key: str, due: FundingDue) -> None:
        """Charge a settlement that fell due to the market's open positions (those opened before it)."""
        for pid in self.by_market.get(key, ()):
            pos = self.positions.get(pid)
            if pos is not None:
                pos.pay_funding(due.time, due.mark_price, due.rate)

    def _data_age(self, key: str, now_ms: int) -> float | None:
        return self.market.data_age(key, now_ms)

    def _decide(self, decision: RiskDecision) -> RiskDecision:
        self.sink.emit(RISK, risk_key(self.mode, decision.scope), self.guard.to_record(decision))
        return decision

    def _register(self, pos: Position) -> None:
        self.changes += 1
        self.positions[pos.position_id] = pos
        self.by_market[market_key(pos.exchange, pos.symbol)].add(pos.position_id)
        self.slot_position[pos.slot] = pos.position_id

    def _unregister(self, pos: Position) -> None:
        self.changes += 1
        self.positions.pop(pos.position_id, None)
        self.by_market[market_key(pos.exchange, pos.symbol)].discard(pos.position_id)
        if self.slot_position.get(pos.slot) == pos.position_id:
            del self.slot_position[pos.slot]

    def _emit_order(
        self,
        req: OrderRequest,
        leg: str,
        signal_id: str | None,
        pid: str | None,
        state: str,
        event_time: int,
        update: OrderUpdate | None,
        reason: str | None,
    ) -> None:
        info = self.orders.get(req.client_order_id)
        record = order_record(
            req,
            mode=self.mode,
            leg=leg,
            state=state,
            event_time=event_time,
            signal_id=signal_id,
            position_id=pid,
            update=update,
            reason=reason,
            mid_at_send=info.mid_at_send if info is not None else None,
            config_rev=info.config_rev if info is not None else self._config_rev(pid),
            avg_market_price=info.avg_market_price if info is not None else None,
        )
        self.sink.emit(ORDERS, market_key(req.exchange, req.symbol), record)
        self.entry_flow.order_recorded(record)  # a maker entry's end feeds the maker rule (paper)

    def _send(
        self,
        req: OrderRequest,
        leg: str,
        signal_id: str | None,
        pid: str | None,
        reference: float | None,
        reason: str | None,
        now_ms: int,
    ) -> list:
        """Record the intent, then hand the order to the broker; returns the broker's events (routed)."""
        self.changes += 1
        self._track(req, leg, signal_id, pid, reference, reason)
        _stamp_mid(self, req)
        self._emit_order(req, leg, signal_id, pid, "PENDING_NEW", now_ms, None, reason)
        if self.mode != "paper":
            self.sink.barrier()
        events = self.broker.submit(req, now_ms)
        self._route(events, now_ms)
        return events

    def _track(
        self,
        req: OrderRequest,
        leg: str,
        signal_id: str | None,
        pid: str | None,
        reference: float | None,
        reason: str | None,
    ) -> None:
        """Follow an order's broker events from now on (sent now, or resumed after a restart)."""
        info = self.orders[req.client_order_id] = _OrderInfo(req, leg, signal_id, pid, reference, reason)
        info.config_rev = self._config_rev(pid)

    def _config_rev(self, pid: str | None) -> int | None:
        """The strategy revision of the position (or pending entry) ``pid``; None for orders of neither."""
        pos = self.positions.get(pid or "")
        if pos is not None:
            return pos.config_rev
        entry = self.entries.get(pid or "")
        return entry.signal.config_rev if entry is not None else None

    def _close(self, pos: Position, reason: str, now_ms: int) -> None:
        """Close at market (`PositionFlow.close`)."""
        self.position_flow.close(pos, reason, now_ms)

    def _flatten(self, reason: str, now_ms: int) -> None:
        for entry in list(self.entries.values()):
            self._cancel_entry(entry, reason, now_ms)
        for pos in list(self.positions.values()):
            self._close(pos, reason, now_ms)

    def _cancel_entry(self, entry: PendingEntry, reason: str, now_ms: int) -> None:
        events = self.broker.cancel(entry.request.client_order_id, now_ms, reason)
        self._route(events, now_ms)
        if self.entries.get(entry.position_id) is entry:  # no update ended it: no order of it was open
            self._drop_entry(entry)
            if entry.fills:  # a routed entry between slices: what filled is a position, as a cancelled part fill's
                self.entry_flow._open(entry)

    def _drop_entry(self, entry: PendingEntry) -> None:
        self.changes += 1
        self.entries.pop(entry.position_id, None)
        if self.slot_entry.get(entry.signal.slot) == entry.position_id:
            del self.slot_entry[entry.signal.slot]

    def _route(self, events: list, now_ms: int) -> None:
        if events:
            self.changes += 1
        for ev in events:
            info = self.orders.get(ev.client_order_id)
            if info is None:
                log.warning("broker event for an unknown order", client_order_id=ev.client_order_id)
                continue
            req = info.request
            if isinstance(ev, Execution):
                info.market_qty += ev.qty
                info.market_notional += ev.qty * ev.market_price
                self.sink.emit(
                    FILLS,
                    market_key(req.exchange, req.symbol),
                    fill_record(
                        ev, exchange=req.exchange, symbol=req.symbol, mode=self.mode, reference_price=info.reference
                    ),
                )
                if info.leg.startswith("entry"):
                    entry = self.entries.get(info.position_id or "")
                    if entry is not None:
                        entry.fills.append(ev)
                else:
                    pos = self.positions.get(info.position_id or "")
                    if pos is not None:
                        pos.on_execution(ev)
                continue
            self._emit_order(req, info.leg, info.signal_id, info.position_id, ev.state, ev.event_time, ev, None)
            if ev.state in TERMINAL_STATES:
                del self.orders[ev.client_order_id]
            if info.leg.startswith("entry"):
                self.entry_flow.on_update(info.position_id, ev, now_ms)
            else:
                self.position_flow.on_update(info.position_id, ev, now_ms)
