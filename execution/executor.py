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
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import structlog

from execution.broker import (
    TERMINAL_STATES,
    Broker,
    Execution,
    OrderRequest,
    OrderUpdate,
)
from execution.client_ids import client_order_id, position_id
from execution.config import ExecutorConfig
from execution.domain import (
    BookTop,
    InvalidSignal,
    MarkTick,
    Signal,
    TradeTick,
    direction_sign,
    exit_side,
)
from execution.entries import (
    PendingEntry,
    fallback_order,
    fallback_slippage_bps,
    first_entry_order,
)
from execution.position_manager import ExitIntent, Position
from execution.reconcile import Reconciler, ReconcileReport
from execution.records import fill_record, order_record, position_record
from execution.risk_guard import (
    KILL_SWITCH,
    RiskDecision,
    RiskGuard,
    risk_key,
    slot_scope,
    symbol_scope,
)
from execution.sizing import SizingError, position_size, r_usd_for_tier
from schemas.catalogue import market_key

log = structlog.get_logger("executor")

ORDERS, FILLS, POSITIONS, RISK = "orders", "fills", "positions", "risk.events"
RECONCILE_FLATTEN = "reconcile_flatten"
# risk.events decision per reconciliation outcome (reason: `<finding kind>:<outcome>`)
_OUTCOME_DECISION = {
    "adopted": "allow",
    "adoption_ended": "allow",
    "reported": "allow",
    "flatten_sent": "flatten",
    "cancelled": "flatten",
    "flatten_rejected": "block",
    "cancel_failed": "block",
}


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


class _OrderInfo:
    __slots__ = ("leg", "position_id", "reason", "reference", "request", "signal_id")

    def __init__(
        self,
        request: OrderRequest,
        leg: str,
        signal_id: str | None,
        position_id: str | None,
        reference: float | None,
        reason: str | None,
    ) -> None:
        self.request, self.leg, self.signal_id, self.position_id = request, leg, signal_id, position_id
        self.reference, self.reason = reference, reason


class _FundingDue:
    """The next funding settlement of a symbol: when, at which rate, and the newest mark price before it."""

    __slots__ = ("mark_price", "rate", "time")

    def __init__(self, time: int, rate: float, mark_price: float) -> None:
        self.time, self.rate, self.mark_price = time, rate, mark_price


class Executor:
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
        self.data_time: dict[str, int] = {}  # market key -> newest trade/book event time
        self.trade_time: dict[str, int] = {}  # market key -> newest trade time (exit orders' not-before)
        self.last_price: dict[str, float] = {}
        self.books: dict[str, BookTop] = {}
        self.mark_time: dict[str, int] = {}  # market key -> newest mark event time
        self.funding_due: dict[str, _FundingDue] = {}  # market key -> its next funding settlement
        self.owner_ok = True  # False when another executor may own some of our partitions (service sets it)
        self.reconcile_ok = True  # False after a failed reconciliation: entries blocked until one succeeds
        # bumped by every change of positions, entries, orders or the guard (and by every signal, clock
        # tick and kill-switch record): a caller caching ``busy_markets`` or ``clock_quiet_until`` asks
        # again only when it moved (the backtest runner)
        self.changes = 0

    # ================================================================ inputs
    def on_signal(self, record: Mapping[str, Any], now_ms: int) -> RiskDecision:
        """Decide on one signal; returns the decision (also emitted)."""
        self.changes += 1
        try:
            sig = Signal.from_record(record)
        except (InvalidSignal, KeyError, TypeError, ValueError) as exc:
            scope = slot_scope(str(record.get("strategy")), str(record.get("exchange")), str(record.get("symbol")))
            log.warning("invalid signal", signal_id=record.get("signal_id"), error=str(exc))
            return self._decide(RiskDecision("block", scope, "invalid_signal", now_ms))
        scope = slot_scope(sig.strategy, sig.exchange, sig.symbol)
        if sig.signal_id in self.seen_signals:
            return self._decide(RiskDecision("block", scope, "duplicate_signal", now_ms))
        self.seen_signals[sig.signal_id] = sig.eval_time
        if now_ms - sig.eval_time > self.config.risk.max_signal_age_s * 1000:
            return self._decide(RiskDecision("block", scope, "stale_signal", now_ms))

        flipping = 0
        held = self.positions.get(self.slot_position.get(sig.slot, ""))
        entering = self.entries.get(self.slot_entry.get(sig.slot, ""))
        for other in (held, entering):
            if other is None:
                continue
            other_direction = other.direction if isinstance(other, Position) else other.signal.direction
            if other_direction == sig.direction or not sig.is_flip:
                return self._decide(RiskDecision("block", scope, "position_open", now_ms))
        if held is not None:
            self._close(held, "signal_flip", now_ms)
            flipping += 1
        if entering is not None:
            self._cancel_entry(entering, "signal_flip", now_ms)

        decision = self.guard.check_entry(
            now_ms=now_ms,
            scope=scope,
            market_data_age_ms=self._data_age(sig.key, now_ms),
            venue_up=self.venue_up,
            output_up=self.sink.healthy,
            sole_writer=self.owner_ok,
            open_positions=len(self.positions) + len(self.entries) - flipping,
        )
        if not decision.allowed:
            return self._decide(decision)
        try:
            size = position_size(r_usd_for_tier(self.config, sig.tier, sig.risk_multiplier), sig.risk_distance)
        except SizingError as exc:
            log.warning("no size", signal_id=sig.signal_id, error=str(exc))
            return self._decide(RiskDecision("block", scope, "sizing", now_ms))
        self._decide(decision)
        pid = position_id(sig.signal_id)
        request = first_entry_order(
            sig, client_order_id(sig.signal_id, "entry"), size.qty, self.config.entry, self.books.get(sig.key)
        )
        entry = PendingEntry(sig, pid, size, request, "entry", now_ms)
        self.entries[pid] = entry
        self.slot_entry[sig.slot] = pid
        self._send(request, "entry", sig.signal_id, pid, sig.price, None, now_ms)
        return decision

    def on_trade(self, record: Mapping[str, Any], now_ms: int) -> None:
        self.on_trade_tick(TradeTick.from_record(record), now_ms)

    def on_trade_tick(self, tick: TradeTick, now_ms: int) -> None:
        key = tick.key
        due = self.funding_due.get(key)
        if due is not None and tick.trade_time >= due.time:
            self._settle_funding(key, due)
        if tick.trade_time > self.data_time.get(key, -1):
            self.data_time[key] = tick.trade_time
        if tick.trade_time >= self.trade_time.get(key, -1):
            self.trade_time[key] = tick.trade_time
            self.last_price[key] = tick.price
        self._route(self.broker.on_trade(tick), now_ms)
        for pid in list(self.by_market.get(key, ())):
            pos = self.positions.get(pid)
            if pos is None:
                continue
            intent = pos.on_trade(tick.price, tick.trade_time)
            if intent is not None:
                self._send_exit(pos, intent, now_ms)

    def on_book(self, record: Mapping[str, Any], now_ms: int) -> None:
        self.on_book_top(BookTop.from_record(record), now_ms)

    def on_book_top(self, book: BookTop, now_ms: int) -> None:
        """``on_book`` of a parsed record (a caller feeding one record to several executors parses once)."""
        if book.event_time > self.data_time.get(book.key, -1):
            self.data_time[book.key] = book.event_time
        self.books[book.key] = book
        self.broker.on_book(book)

    def on_mark(self, record: Mapping[str, Any], now_ms: int) -> None:
        """Track the next funding settlement of the symbol, settling the previous one once it is due."""
        self.on_mark_tick(MarkTick.from_record(record), now_ms)

    def on_mark_tick(self, mark: MarkTick, now_ms: int) -> None:
        """``on_mark`` of a parsed record."""
        key = mark.key
        if mark.event_time < self.mark_time.get(key, -1):
            return  # older than what we have: it cannot tell us anything newer about funding
        self.mark_time[key] = mark.event_time
        due = self.funding_due.get(key)
        if due is not None and mark.event_time >= due.time:
            self._settle_funding(key, due)
        if mark.event_time < mark.next_funding_time:
            self.funding_due[key] = _FundingDue(mark.next_funding_time, mark.funding_rate, mark.mark_price)

    def warm_market(self, trades: Iterable[Mapping[str, Any]], books: Iterable[Mapping[str, Any]]) -> None:
        """Market state from inputs handled before a restart (the newest trades and books before the
        committed input offsets): data freshness, last price and trade time, book tops. Nothing is
        filled, exited or settled; without it a restarted executor would refuse a signal that comes
        before its market's next trade as stale where the run before it traded the signal."""
        for rec in books:
            book = BookTop.from_record(rec)
            if book.event_time > self.data_time.get(book.key, -1):
                self.data_time[book.key] = book.event_time
            if book.event_time >= getattr(self.books.get(book.key), "event_time", -1):
                self.books[book.key] = book
                self.broker.on_book(book)
        for rec in trades:
            tick = TradeTick.from_record(rec)
            if tick.trade_time > self.data_time.get(tick.key, -1):
                self.data_time[tick.key] = tick.trade_time
            if tick.trade_time >= self.trade_time.get(tick.key, -1):
                self.trade_time[tick.key] = tick.trade_time
                self.last_price[tick.key] = tick.price
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
        due = self.funding_due.get(key)
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
        for entry in list(self.entries.values()):
            if entry.maker_timed_out(self.config.entry, now_ms):
                self._route(self.broker.cancel(entry.request.client_order_id, now_ms, "maker_timeout"), now_ms)
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
    ) -> dict[str, int]:
        """Rebuild state from the executor's own output topics (records of every mode may be passed).

        `signals(ids)` returns the signal records of those ids that can still be found; exchange modes
        ask for the signals of unfinished entry orders, to give a late-found fill its exit plan.

        `committed_cut`: the records are those of committed transactions and the inputs that follow are
        exactly those after the offsets committed with them (the transactional service): in paper mode
        an unfinished order is then re-entered in the new paper book as it was, entries included (their
        signal read back), so the next trade delivered fills it as it would have without the restart.
        Its not-before is the signal's evaluation time for an entry and none for the others (their
        trigger trade is at or before the cut; every trade delivered after it comes later)."""
        self.changes += 1
        self.guard = RiskGuard.restore(self.config.risk, self.mode, risk, now_ms)
        last_order: dict[str, Mapping[str, Any]] = {}
        intent_reason: dict[str, str | None] = {}  # exit orders carry their exit reason on the intent
        for rec in orders:
            if rec["mode"] != self.mode:
                continue
            last_order[rec["client_order_id"]] = rec
            if rec["state"] == "PENDING_NEW":
                intent_reason[rec["client_order_id"]] = rec.get("reason")
            if rec["leg"] == "entry" and rec.get("signal_id"):
                self.seen_signals.setdefault(rec["signal_id"], int(rec["event_time"]))
        events: dict[str, dict[str, Mapping[str, Any]]] = defaultdict(dict)
        for rec in positions:
            if rec["mode"] == self.mode:
                events[rec["position_id"]][rec["event"]] = rec
                self.seen_signals.setdefault(rec["signal_id"], int(rec["event_time"]))
        for evs in events.values():
            if "closed" in evs or "opened" not in evs:
                continue
            opened = evs["opened"]
            # the timeout it was opened with (events from before positions carried it: the setting)
            timeout_ms = opened.get("timeout_ms") or self.config.timeout_ms(opened["strategy"])
            pos = Position.restore(
                opened, evs.get("tp1"), timeout_ms=int(timeout_ms), breakeven_offset_r=self.config.breakeven_offset_r
            )
            self._register(pos)
        cancelled = resumed = 0
        unfinished = {cid: rec for cid, rec in last_order.items() if rec["state"] not in TERMINAL_STATES}
        resume = getattr(self.broker, "resume", None) if self.mode != "paper" else None
        wanted = {rec["signal_id"] for rec in unfinished.values() if rec["leg"] == "entry" and rec.get("signal_id")}
        reenter = committed_cut and self.mode == "paper"
        found = dict(signals(wanted)) if (resume is not None or reenter) and wanted and signals is not None else {}
        for cid, rec in unfinished.items():
            req = OrderRequest(
                cid,
                rec["exchange"],
                rec["symbol"],
                rec["side"],
                rec["type"],
                float(rec["qty"]),
                price=rec.get("price"),
                reduce_only=bool(rec.get("reduce_only")),
                not_before_ms=int(rec["event_time"]),
            )
            pos = self.positions.get(rec.get("position_id") or "")
            if resume is not None:
                self._resume_order(req, rec, pos, intent_reason.get(cid), found.get(rec.get("signal_id") or ""), now_ms)
                resumed += 1
                continue
            if reenter and rec["leg"] == "entry" and self._reenter_entry(req, rec, found):
                resumed += 1
                continue
            if reenter and pos is not None:
                req = replace(req, not_before_ms=0)
            if rec["leg"] == "entry" or pos is None or self.mode != "paper":
                # an entry cut short by the restart is dropped (its signal is old by now); exits of
                # other modes are the reconciler's job
                self._emit_order(
                    req,
                    rec["leg"],
                    rec.get("signal_id"),
                    rec.get("position_id"),
                    "CANCELED",
                    now_ms,
                    None,
                    "executor_restart",
                )
                cancelled += 1
                continue
            leg = rec["leg"]
            reason = (
                {"tp1": "tp1", "tp2": "tp", "sl": "sl_be" if pos.tp1_done else "sl"}.get(leg)
                or intent_reason.get(cid)
                or "timeout"
            )
            reference = {"tp1": pos.plan.tp1, "tp2": pos.plan.tp2, "sl": pos.stop}.get(leg)
            intent = ExitIntent(rec["leg"], reason, req.qty, reference, req.not_before_ms)
            pos.exit_sent(intent, cid)
            self.orders[cid] = _OrderInfo(req, rec["leg"], pos.signal_id, pos.position_id, reference, reason)
            self.broker.submit(req, now_ms)  # the paper book died with the old process: re-enter it silently
            resumed += 1
        if self.guard.state.kill_switch_flatten:
            self._flatten(KILL_SWITCH, now_ms)
        return {"positions": len(self.positions), "orders_resumed": resumed, "orders_cancelled": cancelled}

    # ================================================================ reconciliation
    def reconcile(self, reconciler: Reconciler, now_ms: int) -> ReconcileReport:
        """Compare the exchange with our positions and open orders, repair per policy, publish findings.

        Our side: open positions plus what pending entries already filled, signed and summed per symbol
        (the exchange nets them: one-way mode). Stream events are routed first, and symbols with one of
        our orders in flight are left for the next run (see `execution.reconcile`)."""
        self._route(self.broker.poll(now_ms), now_ms)
        exchange = reconciler.exchange
        ours: dict[str, float] = defaultdict(float)
        for pos in self.positions.values():
            if pos.exchange == exchange:
                ours[pos.symbol] += direction_sign(pos.direction) * pos.qty_open
        for entry in self.entries.values():
            sig = entry.signal
            if sig.exchange == exchange and entry.fills:
                ours[sig.symbol] += direction_sign(sig.direction) * sum(f.qty for f in entry.fills)
        in_flight = {info.request.symbol for info in self.orders.values() if info.request.exchange == exchange}
        report = reconciler.run(dict(ours), set(self.orders), now_ms, in_flight=in_flight, submit=self._repair)
        if report.error is not None:
            mark = getattr(self.broker, "mark_unreachable", None)
            if mark is not None:
                mark()
            if self.reconcile_ok:  # published when it starts failing; retries only log (execution.reconcile)
                self._decide(RiskDecision("block", f"reconcile:{exchange}", "reconcile_failed", now_ms))
        for f in report.findings:
            scope = f"reconcile:{exchange}:{f.symbol}" + (f":{f.client_order_id}" if f.client_order_id else "")
            self._decide(
                RiskDecision(_OUTCOME_DECISION.get(f.outcome, "block"), scope, f"{f.kind}:{f.outcome}", now_ms)
            )
        if report.ok and not self.reconcile_ok:
            self._decide(RiskDecision("resume", f"reconcile:{exchange}", "reconcile_ok", now_ms))
        self.reconcile_ok = report.ok
        return report

    def _repair(self, req: OrderRequest, now_ms: int) -> list:
        """A reconciliation order, sent like ours: intent on the orders topic first, then its events."""
        return self._send(req, "exit", None, None, None, RECONCILE_FLATTEN, now_ms)

    @property
    def venue_up(self) -> bool:
        """The exchange is reachable and the last reconciliation succeeded (the guard's `exchange_down`)."""
        return self.broker.healthy and self.reconcile_ok

    # ================================================================ internals
    def _resume_order(
        self,
        req: OrderRequest,
        rec: Mapping[str, Any],
        pos: Position | None,
        reason: str | None,
        signal: Mapping[str, Any] | None,
        now_ms: int,
    ) -> None:
        """Exchange modes after a restart: follow an order the previous run sent; never send it again."""
        cid, leg = req.client_order_id, rec["leg"]
        sid, pid = rec.get("signal_id"), rec.get("position_id")
        entry: PendingEntry | None = None
        reference: float | None = None
        if leg == "entry":
            leg = "entry_fallback" if sid and cid == client_order_id(sid, "entry_fallback") else "entry"
            entry = self._restored_entry(req, leg, signal, pid)
            reference = entry.signal.price if entry is not None else None
        elif pos is not None:
            reason = (
                {"tp1": "tp1", "tp2": "tp", "sl": "sl_be" if pos.tp1_done else "sl"}.get(leg) or reason or "timeout"
            )
            reference = {"tp1": pos.plan.tp1, "tp2": pos.plan.tp2, "sl": pos.stop}.get(leg)
            pos.exit_sent(ExitIntent(leg, reason, req.qty, reference, req.not_before_ms), cid)
        self.orders[cid] = _OrderInfo(req, leg, sid, pid, reference, reason)
        self._route(self.broker.resume(req, now_ms), now_ms)
        if leg.startswith("entry") and self.broker.is_open(cid):  # resting for a signal that is old by now
            if entry is not None:
                self._cancel_entry(entry, "executor_restart", now_ms)
            else:
                self._route(self.broker.cancel(cid, now_ms, "executor_restart"), now_ms)

    def _reenter_entry(self, req: OrderRequest, rec: Mapping[str, Any], found: Mapping[str, Mapping[str, Any]]) -> bool:
        """Paper, committed cut: put an unfinished entry back in the paper book silently (its intent
        and NEW state are already published); False when its signal cannot be read (then it is cancelled)."""
        cid, sid, pid = req.client_order_id, rec.get("signal_id"), rec.get("position_id")
        leg = "entry_fallback" if sid and cid == client_order_id(sid, "entry_fallback") else "entry"
        entry = self._restored_entry(req, leg, found.get(sid or ""), pid)
        if entry is None:
            return False
        req = replace(req, not_before_ms=entry.signal.eval_time if leg == "entry" else 0)
        entry.request = req
        self.orders[cid] = _OrderInfo(req, leg, sid, entry.position_id, entry.signal.price, None)
        self.broker.submit(req, now_ms=int(rec["event_time"]))
        return True

    def _restored_entry(
        self, req: OrderRequest, leg: str, signal: Mapping[str, Any] | None, pid: str | None
    ) -> PendingEntry | None:
        """The pending entry of an unfinished entry order, if its signal can still be read."""
        if signal is None:
            log.warning(
                "signal of an unfinished entry not found: a fill will be left to reconciliation",
                client_order_id=req.client_order_id,
            )
            return None
        try:
            sig = Signal.from_record(signal)
            size = position_size(r_usd_for_tier(self.config, sig.tier, sig.risk_multiplier), sig.risk_distance)
        except (InvalidSignal, SizingError, KeyError, TypeError, ValueError) as exc:
            log.warning("unfinished entry cannot be rebuilt", client_order_id=req.client_order_id, error=str(exc))
            return None
        entry = PendingEntry(sig, pid or position_id(sig.signal_id), size, req, leg, req.not_before_ms)
        self.changes += 1
        self.entries[entry.position_id] = entry
        self.slot_entry[sig.slot] = entry.position_id
        return entry

    def _settle_funding(self, key: str, due: _FundingDue) -> None:
        del self.funding_due[key]
        for pid in self.by_market.get(key, ()):
            pos = self.positions.get(pid)
            if pos is not None:
                pos.pay_funding(due.time, due.mark_price, due.rate)

    def _data_age(self, key: str, now_ms: int) -> float | None:
        t = self.data_time.get(key)
        return None if t is None else now_ms - t

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
        self.sink.emit(
            ORDERS,
            market_key(req.exchange, req.symbol),
            order_record(
                req,
                mode=self.mode,
                leg=leg,
                state=state,
                event_time=event_time,
                signal_id=signal_id,
                position_id=pid,
                update=update,
                reason=reason,
            ),
        )

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
        self.orders[req.client_order_id] = _OrderInfo(req, leg, signal_id, pid, reference, reason)
        self._emit_order(req, leg, signal_id, pid, "PENDING_NEW", now_ms, None, reason)
        if self.mode != "paper":
            self.sink.barrier()
        events = self.broker.submit(req, now_ms)
        self._route(events, now_ms)
        return events

    def _send_exit(self, pos: Position, intent: ExitIntent, now_ms: int) -> None:
        cid = client_order_id(pos.signal_id, intent.leg, pos.next_attempt(intent.leg))
        req = OrderRequest(
            cid,
            pos.exchange,
            pos.symbol,
            exit_side(pos.direction),
            "MARKET",
            intent.qty,
            reduce_only=True,
            not_before_ms=intent.trigger_time,
        )
        pos.exit_sent(intent, cid)
        self._send(req, intent.leg, pos.signal_id, pos.position_id, intent.reference, intent.reason, now_ms)

    def _close(self, pos: Position, reason: str, now_ms: int) -> None:
        """Close at market; the order can fill from the newest trade time of the symbol on."""
        market_time = self.trade_time.get(market_key(pos.exchange, pos.symbol), pos.last_event_time)
        intent = pos.request_close(reason, market_time)
        if intent is not None:
            self._send_exit(pos, intent, now_ms)

    def _flatten(self, reason: str, now_ms: int) -> None:
        for entry in list(self.entries.values()):
            self._cancel_entry(entry, reason, now_ms)
        for pos in list(self.positions.values()):
            self._close(pos, reason, now_ms)

    def _cancel_entry(self, entry: PendingEntry, reason: str, now_ms: int) -> None:
        events = self.broker.cancel(entry.request.client_order_id, now_ms, reason)
        self._route(events, now_ms)
        self._drop_entry(entry)

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
                self._entry_update(info, ev, now_ms)
            else:
                self._exit_update(info, ev, now_ms)

    def _entry_update(self, info: _OrderInfo, ev: OrderUpdate, now_ms: int) -> None:
        entry = self.entries.get(info.position_id or "")
        if entry is None or entry.request.client_order_id != ev.client_order_id:
            return
        if ev.state == "FILLED":
            self._drop_entry(entry)
            self._open(entry)
            return
        if ev.state not in TERMINAL_STATES:
            return
        if entry.maker and ev.reason == "maker_timeout" and not entry.fills:
            self._fallback(entry, now_ms)
            return
        self._drop_entry(entry)
        if entry.fills:  # ended part-filled (cancelled, expired): what we hold is a position to manage
            self._open(entry)

    def _open(self, entry: PendingEntry) -> None:
        """Open the position of an entry from its fills. r_usd is the risk actually taken: the sized 1R
        scaled by filled / sized quantity when they differ (lot-step rounding, a partial fill)."""
        filled = sum(f.qty for f in entry.fills)
        r_usd = entry.size.r_usd
        if abs(filled - entry.size.qty) > 1e-12 * entry.size.qty:
            r_usd = entry.size.r_usd * filled / entry.size.qty
        sig = entry.signal
        pos = Position.open(
            position_id=entry.position_id,
            signal=sig,
            mode=self.mode,
            fills=entry.fills,
            r_usd=r_usd,
            timeout_ms=self.config.timeout_ms(sig.strategy, sig.timeout_ms),
            breakeven_offset_r=self.config.breakeven_offset_r,
        )
        self._register(pos)
        self.sink.emit(POSITIONS, market_key(pos.exchange, pos.symbol), position_record(pos, "opened", pos.opened_at))

    def _fallback(self, entry: PendingEntry, now_ms: int) -> None:
        sig = entry.signal
        scope = slot_scope(sig.strategy, sig.exchange, sig.symbol)
        book = self.books.get(sig.key)
        market = (book.mid if book is not None else None) or self.last_price.get(sig.key)
        if market is None or fallback_slippage_bps(sig, market) > self.config.entry.fallback_slippage_cap_bps:
            self._drop_entry(entry)
            self._decide(RiskDecision("block", scope, "slippage_cap", now_ms))
            return
        decision = self.guard.check_entry(
            now_ms=now_ms,
            scope=scope,
            market_data_age_ms=self._data_age(sig.key, now_ms),
            venue_up=self.venue_up,
            output_up=self.sink.healthy,
            sole_writer=self.owner_ok,
            open_positions=len(self.positions) + len(self.entries) - 1,
        )
        if not decision.allowed:
            self._drop_entry(entry)
            self._decide(decision)
            return
        request = fallback_order(
            entry, client_order_id(sig.signal_id, "entry_fallback"), self.trade_time.get(sig.key, sig.eval_time)
        )
        entry.request, entry.leg, entry.submitted_ms = request, "entry_fallback", now_ms
        self._send(request, "entry_fallback", sig.signal_id, entry.position_id, sig.price, None, now_ms)

    def _exit_update(self, info: _OrderInfo, ev: OrderUpdate, now_ms: int) -> None:
        pos = self.positions.get(info.position_id or "")
        if pos is None:
            return
        kinds, follow = pos.on_order_update(ev)
        key = market_key(pos.exchange, pos.symbol)
        for kind in kinds:
            self.sink.emit(POSITIONS, key, position_record(pos, kind, ev.event_time))
        if pos.closed:
            self._unregister(pos)
            weight = pos.r_usd / self.config.base_r_usd
            for decision in self.guard.record_close(pos.result.net_r * weight, ev.event_time, now_ms):
                self._decide(decision)
                if decision.decision == "flatten" and decision.reason == "daily_loss_limit":
                    self._flatten("risk_flatten", now_ms)
        elif follow is not None:
            self._send_exit(pos, follow, now_ms)
