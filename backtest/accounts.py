"""The paper accounts of a backtest: one ``Executor`` with the ``PaperBroker`` each, the sink that turns
their output into ``BacktestTrade`` rows, the executor-side clock (event time fed so far, the next
clock tick) and the executors' answers (busy markets, quiet clock) remembered while nothing moved."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter
from typing import Any, Literal, cast

from backtest.inputs import Record
from backtest.model import BacktestTrade
from backtest.routed_orders import is_routed_entry, order_row
from execution.broker import Broker
from execution.config import ExecutorConfig
from execution.domain import TradeTick
from execution.executor import Executor, mid_now
from execution.paper_broker import PaperBroker

Account = Literal["per_strategy", "shared"]
MODE = "paper"
_CHANGES = attrgetter("changes")


class BacktestSink:
    """The executor's ``OutputSink`` in a backtest: closed positions become ``BacktestTrade`` rows, the
    rest is counted (a long run must not keep every order record)."""

    healthy = True

    def __init__(self, signal_scores: Mapping[str, float]) -> None:
        self.signal_scores = signal_scores
        self.trades: list[BacktestTrade] = []
        self.opened: dict[str, Record] = {}
        self.tp1: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()  # risk.events reasons of blocked/paused entries
        self.positions: list[Record] = []  # every position event (for --verify-against-topics)
        self.fills: list[Record] = []  # every fill (outcome labels: backtest.outcome_labels)
        self.routed: list[list[Any]] = []  # routed entry orders as sent (backtest.routed_orders)
        self.mid_at: Callable[[str], tuple[float, str] | None] | None = None  # the executor's mid_now

    def emit(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.counts[topic] += 1
        if topic == "risk.events":
            if record["decision"] != "allow":
                self.decisions[record["reason"]] += 1
            return
        if topic == "orders":
            if is_routed_entry(record):
                self.routed.append(order_row(record, self.mid_at(key) if self.mid_at is not None else None))
            return
        if topic == "fills":
            self.fills.append(record)
        if topic != "positions":
            return
        self.positions.append(record)
        pid, event = record["position_id"], record["event"]
        if event == "opened":
            self.opened[pid] = record
        elif event == "tp1":
            self.tp1.add(pid)
        elif event == "closed":
            self.trades.append(self._trade(self.opened.pop(pid), record, pid in self.tp1))
            self.tp1.discard(pid)

    def barrier(self) -> None:
        """Nothing to make durable: paper mode never calls it."""

    def _trade(self, opened: Record, closed: Record, tp1_hit: bool) -> BacktestTrade:
        return BacktestTrade(
            position_id=closed["position_id"],
            signal_id=closed["signal_id"],
            strategy=closed["strategy"],
            strategy_version=closed["strategy_version"],
            config_hash=closed["config_hash"],
            exchange=closed["exchange"],
            symbol=closed["symbol"],
            direction=closed["direction"],
            tier=closed["tier"],
            score=float(self.signal_scores.get(closed["signal_id"], float("nan"))),
            entry_time=int(opened["event_time"]),
            exit_time=int(closed["event_time"]),
            entry_price=float(opened["entry_price"]),
            exit_price=float(closed["exit_price"]),
            sl_price=float(opened["sl_price"]),
            tp1_price=float(opened["tp1_price"]),
            tp2_price=float(opened["tp2_price"]),
            risk_distance=abs(float(opened["entry_price"]) - float(opened["sl_price"])),
            exit_reason=closed["exit_reason"],
            tp1_hit=tp1_hit,
            r_usd=float(closed["r_usd"]),
            pnl_r_gross=float(closed["pnl_r_gross"]),
            fees_r=float(closed["fees_r"]),
            slippage_r=float(closed["slippage_r"]),
            funding_r=float(closed.get("funding_r") or 0.0),
            pnl_r_net=float(closed["pnl_r_net"]),
        )


@dataclass
class AccountBook:
    """One executor (paper account) and what it produced."""

    executor: Executor
    sink: BacktestSink
    clock_ms: int = -1
    # the executor's answers, asked again only when ``Executor.changes`` (and for the clock, the
    # markets it knows) moved: busy markets, and from when until when its clock is quiet
    busy: set[str] = field(default_factory=set)
    busy_stamp: int = -1
    quiet: tuple[int, int, float] = (-1, -1, -math.inf)  # (changes, markets known, until)
    quiet_from: float = math.inf

    def busy_markets(self) -> set[str]:
        ex = self.executor
        if self.busy_stamp != ex.changes:
            self.busy, self.busy_stamp = ex.busy_markets(), ex.changes
        return self.busy

    def clock_quiet(self, now: int) -> bool:
        """``Executor.clock_quiet(now)``, from ``Executor.clock_quiet_until`` while nothing changed."""
        return now < self.quiet_until(now)

    def quiet_until(self, now: int) -> float:
        """``Executor.clock_quiet_until(now)``, remembered while nothing changed and ``now`` is inside it
        (``now`` itself when the clock may act now)."""
        ex = self.executor
        changes, known, until = self.quiet
        if changes != ex.changes or known != len(ex.data_time) or not self.quiet_from <= now < until:
            until = ex.clock_quiet_until(now)
            self.quiet, self.quiet_from = (ex.changes, len(ex.data_time), until), now
        return until


class Accounts:
    """Every account of a run (one per strategy, or one ``"*"`` for all when shared), made together at
    the first slice, and the executor side's time: ``executor_ms``, the event time up to which the
    executors have been fed, and ``next_tick``, before which no account's clock is due (sparse feed)."""

    def __init__(self, strategies: Sequence[str], config: ExecutorConfig, account: Account) -> None:
        self.names = ["*"] if account == "shared" else list(strategies)
        self.config = config
        self.account = account
        self.signal_scores: dict[str, float] = {}
        self.books: dict[str, AccountBook] = {}
        self.executors: list[Executor] = []
        self.executor_ms = -1
        self.next_tick = -1
        self._busy_stamp = -1
        self._busy_all: set[str] = set()

    def open(self, now_ms: int) -> None:
        for name in self.names:
            if name not in self.books:
                sink = BacktestSink(self.signal_scores)
                # PaperBroker implements Broker; its ``mode`` attribute is typed as a plain str
                broker = cast(Broker, PaperBroker(self.config.fees, self.config.paper))
                executor = Executor(self.config, MODE, broker, sink, now_ms)
                # no mid at send: the sparse feed gives an executor only the trades its markets need, so
                # the last trade it knows when a clock tick sends an order depends on the slicing, and a
                # backtest keeps no orders to measure against it (its trades have no TCA)
                executor.stamp_mid = False
                # ... but the routed entries the sink keeps carry theirs (backtest.routed_orders)
                sink.mid_at = partial(mid_now, executor.market, book_max_age_ms=self.config.paper.book_max_age_ms)
                self.books[name] = AccountBook(executor, sink)
        self.executors = [book.executor for book in self.books.values()]

    def signal(self, record: Record, now: int) -> None:
        """The signal to its strategy's account."""
        self.books["*" if self.account == "shared" else record["strategy"]].executor.on_signal(record, now)

    def busy(self) -> set[str]:
        """The markets some account is busy on (``Executor.busy``)."""
        stamp = sum(map(_CHANGES, self.executors))  # each only grows: the sum moves when one does
        if stamp != self._busy_stamp:
            self._busy_stamp = stamp
            self._busy_all = set().union(*(book.busy_markets() for book in self.books.values()))
        return self._busy_all

    def tick_clocks(self, now: int) -> None:
        """Dense feed: ``on_clock`` of every account whose clock is due (at most once per second)."""
        for book in self.books.values():
            if now >= book.clock_ms + 1000:
                book.clock_ms = now
                book.executor.on_clock(now)

    def last_prices(self, last: Mapping[str, TradeTick]) -> None:
        """Accounts idle on a market still learn its last price (its newest trade)."""
        books = self.books.values()
        for key, tick in last.items():
            for book in books:
                if key not in book.busy_markets():
                    book.executor.on_trade_tick(tick, max(tick.trade_time, self.executor_ms))

    def closed_count(self) -> int:
        return sum(len(b.sink.trades) for b in self.books.values())

    def trades(self) -> list[BacktestTrade]:
        return sorted(
            (t for b in self.books.values() for t in b.sink.trades), key=lambda t: (t.exit_time, t.position_id)
        )

    def open_positions(self) -> list[dict[str, Any]]:
        return [
            {
                "position_id": pos.position_id,
                "signal_id": pos.signal_id,
                "strategy": pos.strategy,
                "symbol": pos.symbol,
                "direction": pos.direction,
                "entry_time": pos.opened_at,
                "entry_price": pos.entry,
            }
            for b in self.books.values()
            for pos in b.executor.positions.values()
        ]

    def decisions(self) -> Counter[str]:
        decisions: Counter[str] = Counter()
        for b in self.books.values():
            decisions.update(b.sink.decisions)
        return decisions

    def degradations(self, end_ms: int) -> list[dict[str, Any]]:
        """Every account's degradation changes up to ``end_ms``, in time order: the maker-fill-ratio rule
        on event time routes a backtest's entries as it routes paper's (``execution.maker_fill_rule``).
        Closes the windows up to ``end_ms`` first: a change that no clock tick or entry noticed (the
        sparse feed skips quiet ticks) is still reported at the time it happened."""
        out: list[dict[str, Any]] = []
        for name, book in self.books.items():
            rule = book.executor.entry_flow.maker_rule
            if rule is None:
                continue
            rule.advance(end_ms)
            for c in rule.changes:
                row = {"account": name, "time_ms": c.time_ms, "rule": c.rule, "active": c.active, "value": c.value}
                out.append(row | {"samples": c.samples, "detail": c.describe()})
        return sorted(out, key=lambda row: (row["time_ms"], row["account"]))

    def position_events(self) -> list[Record]:
        """Every positions record the executors emitted (opened, tp1, closed), in emission order per account."""
        return [ev for b in self.books.values() for ev in b.sink.positions]
