"""The backtest runner: history through the live pipeline's engine core and executor, in event-time order.

Nothing here decides a signal, an exit, a fill or a cost: the runner only orders the inputs and hands
them to the objects the live services run.

- Engine: one ``stream_apps.core.engine.Engine`` per ``exchange:symbol`` with every strategy, fed like
  the live worker feeds its per-key engines (``KeyedEngine``: ``Engine.process(trades, events)``
  without a caller clock, inputs in event-time order); so cadence, clock and warm-up are the live ones.
- Execution: ``execution.executor.Executor`` with the ``PaperBroker`` and the executor config (fees,
  slippage model, risk guard, funding), fed signals, trades, book and mark records with ``now_ms`` =
  event time. One executor per strategy (``account="per_strategy"``, the default: in an A/B run one
  strategy's losses never pause another) or one for all (``"shared"``, as a stack running the
  strategies together trades them).

Order seen by the executor (deterministic, independent of slicing): by event time; at equal times a
signal, then mark and book records, then trades. A signal evaluated at ``T`` (from trades before
``T``) therefore reaches the executor before any trade at or after ``T``, and its market entry fills
at the first trade at or after ``T`` (the paper broker's ``not_before_ms``): zero latency between
the evaluation and the order. To guarantee that across symbols, the executor runs one slice behind
the engine; a signal the engine produces later than that (a symbol silent for more than a slice) is
handed over when it is produced, with ``now_ms`` = that later time, so the executor's signal-age
rule sees it as late, as the live executor would. Sources cut hour-long slices
(``backtest.inputs.DEFAULT_SLICE_MS``): the engine runs far faster on big batches, and
tests/backtest/test_backtest_feed.py shows minute and hour slices give the same run.

Speed, without a second execution model (``feed="sparse"``, the default): a record that changes
nothing but "latest value" state of the executor (last price and times, book, next funding) need not
be passed when it happens, only before the next point where that state is read. Which records those
are is said by the execution code itself, and only the skipping is the runner's:

- trades: a market no account is busy on (``Executor.busy``: no position, no entry) gets only its
  newest trade; on a busy market, a trade inside every busy account's ``Executor.quiet_trades`` band
  (``Position.quiet_band`` of each position: stop, the phase's take-profit, the timeout; the funding
  time; no band while an entry or order is on the market) is skipped, the newest skipped one kept;
- marks and books are held, the newest per kind and market (a mark at or after its own funding time
  is never held); on a market some account is busy on only while its trades have a quiet band, a
  mark only before the band's end (which is at or before the funding time the executor knows and the
  one a held mark would set), and only where every busy trade before the record lies inside its band
  (``SparseFeed._quiet_before``): such a record is held before those trades, which are skipped later, as they
  would be now; a busy market's held records are passed before any of its trades that is fed;
- the clock ticks at the points the dense feed ticks at (at most once per second of event time, on
  records and busy trades), but ``on_clock`` runs only where some account's may act
  (``Executor.clock_quiet``: a pause ending, a UTC day change, a market going stale or fresh, an
  entry in flight). Deferred data only makes markets look older, so a tick judged quiet is quiet;
- a held record does not stop the feed: busy markets' trades before it wait for the next record that
  is not held; the clock ticks they and the record would make (at the first event at or after each
  tick time) are made without them where every due account's clock is quiet there (``SparseFeed._quiet_ticks``),
  since such a tick only moves the account's clock time; a tick that may act stops the hold. A tick
  that may act only because held data made a market look old is asked again once the data is passed.

How that loop stays off Python per record (results unchanged; the same tests): the slice's marks
and books are ordered as columns (``MarketSlice.columns``, also what the engine is fed; a record
becomes an executor object only where it is passed); while no account is busy, a tight run over them
only holds records and advances quiet clocks (``SparseFeed._idle_run``); the executor's answers (``busy_markets``,
``clock_quiet_until``: how long its clock stays quiet if nothing is passed) are asked again only when
``Executor.changes`` moved; a run of busy trades inside their bands before the next tick is found
with numpy, its newest per market remembered; a book or mark passed to several accounts is parsed once.

Everything held or skipped is passed, newest first per market and in executor order, before a
signal, a tick that may act, a trade outside a band, a record of the market that is not held, and at
the end of each slice; so at every point where an account decides something it has exactly the
state the dense feed gives it. One exception: the newest skipped trade of a busy market is not passed
to the accounts busy on it before a mark or book of a busy market (it waits for the next of the other
points): such a trade changes only that market's last price and trade times, which neither record
reads (a book only raises the market's data time, a mark sets or settles funding, which a trade inside
the band cannot reach); accounts idle on the market still get it there, as in the dense feed. ``feed="dense"`` passes every mark, book and busy trade and ticks every
second (the earlier runner); tests/backtest/test_backtest_feed.py runs both on sessions with
pauses, daily-loss flattens, a UTC midnight, funding, staleness transitions (also of accounts idle on
a busy market), maker entries, a shared account and funding times every few seconds (held marks of
busy markets across them), and requires every record every account emits to be identical.

Coverage (``RunResult.coverage``): for every layer a strategy uses (weight > 0) and every gate it
configures, per symbol, how many of its evaluations had the input present (the engine's feature
``inputs`` hold only available values); liquidations are present when the source has them at all.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from backtest import routed_orders
from backtest.accounts import MODE, Account, AccountBook, Accounts, BacktestSink
from backtest.coverage import GATE_INPUTS, LAYER_INPUTS, Coverage
from backtest.executor_feed import ExecutorFeed
from backtest.feed_kernels import quiet_tick_run as _quiet_tick_run
from backtest.feed_kernels import warm_up
from backtest.inputs import MarketSlice, Record, Source
from backtest.model import CoverageRow, RunResult, StrategyInfo
from backtest.sparse_feed import SparseFeed
from execution.config import ExecutorConfig
from stream_apps.core.engine import Engine, EngineParams
from stream_apps.core.params import StateParams
from stream_apps.core.records import FeatureTable
from stream_apps.core.strategy import StrategyConfig

__all__ = [
    "GATE_INPUTS",
    "LAYER_INPUTS",
    "MODE",
    "Account",
    "BacktestRunner",
    "BacktestSink",
    "Feed",
    "Progress",
    "_quiet_tick_run",
    "warm_up",
]

Feed = Literal["sparse", "dense"]


@dataclass(frozen=True)
class Progress:
    """Where a run stands (passed to the progress callback after every slice)."""

    event_time_ms: int
    from_ms: int
    to_ms: int
    trades: int
    events: int
    evaluations: int
    signals: int
    closed: int


class BacktestRunner:
    """Runs strategies over a source; see the module docstring. One runner = one run: it feeds the
    slices in time order to one engine per market, hands the signals to the executor feed (``Accounts``
    fed by ``ExecutorFeed`` or ``SparseFeed``, one slice behind) and collects the result."""

    def __init__(
        self,
        strategies: Sequence[StrategyConfig],
        executor_config: ExecutorConfig | None = None,
        *,
        account: Account = "per_strategy",
        engine_params: EngineParams | None = None,
        feed: Feed = "sparse",
        on_features: Callable[[FeatureTable], None] | None = None,
    ) -> None:
        """``on_features``: called with each feature table the engine produces (the run keeps none)."""
        if not strategies:
            raise ValueError("a backtest needs at least one strategy")
        if feed not in ("sparse", "dense"):
            raise ValueError(f"feed must be 'sparse' or 'dense', got {feed!r}")
        self.feed_mode = feed
        self.on_features = on_features
        self.strategies = list(strategies)
        self.config = executor_config or ExecutorConfig()
        self.account = account
        self.engine_params = engine_params or EngineParams()
        self.engines: dict[str, Engine] = {}
        self.accounts = Accounts([cfg.name for cfg in self.strategies], self.config, account)
        self.signal_scores: dict[str, float] = self.accounts.signal_scores
        self.signals: list[Record] = []  # every signal the engine emitted (ids, scores, tiers)
        self.executor_feed = SparseFeed(self.accounts) if feed == "sparse" else ExecutorFeed(self.accounts)
        self._pending: list[MarketSlice] = []  # slices the engine has done and the executor has not
        self.processed_to_ms: int | None = None  # end of the last slice fed
        self._coverage = Coverage(self.strategies)
        self._source_inputs: set[str] = set()
        self.trades_processed = 0
        self.events_processed = 0
        self.evaluations = 0

    @property
    def _books(self) -> dict[str, AccountBook]:
        """The accounts by name (``"*"``: the shared one)."""
        return self.accounts.books

    # ------------------------------------------------------------------------------------------
    def run(
        self,
        source: Source,
        *,
        progress: Callable[[Progress], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RunResult:
        """Every slice of ``source`` through engine and executor; ``stop()`` true between slices ends the
        run early, and the result is marked partial."""
        started = int(time.time() * 1000)
        self._source_inputs = source.inputs()
        partial = False
        for piece in source.slices():
            if stop is not None and stop():
                partial = True
                break
            self.feed(piece)
            if progress is not None:
                progress(self.progress(piece.end_ms, source))
        self.finish()
        return self.result(source, started, partial)

    def progress(self, event_time_ms: int, source: Source) -> Progress:
        return Progress(
            event_time_ms,
            source.from_ms,
            source.to_ms,
            self.trades_processed,
            self.events_processed,
            self.evaluations,
            len(self.signals),
            self.accounts.closed_count(),
        )

    def feed(self, piece: MarketSlice) -> None:
        """Engine over ``piece``; then the executor over the slice before it."""
        if not self.accounts.books:
            self.accounts.open(piece.start_ms)
            spreads = self.accounts.executors[0].entry_flow.router.spreads  # every account sees the same books
            spreads.deferring = True  # counted when a probe reads them (the same sums, less work)
            for executor in self.accounts.executors:  # routed entries: each strategy revision's own table
                executor.entry_flow.router.spreads = spreads
                executor.entry_flow.router.register_all(self.strategies)
        self.processed_to_ms = piece.end_ms
        self._engine_slice(piece)
        self._pending.append(piece)
        if len(self._pending) > 1:
            self.executor_feed.slice(self._pending.pop(0))

    def finish(self) -> None:
        """Feed the executor what is still pending (end of data or of an interrupted run)."""
        while self._pending:
            self.executor_feed.slice(self._pending.pop(0))
        self.executor_feed.finish()

    def _engine_slice(self, piece: MarketSlice) -> None:
        # books and marks as columns (the engine's own pending form; the same values as one
        # ``*_from_record`` object each, see benchmarks/RESULTS.md), the few others as events
        events = piece.engine_events()
        self.trades_processed += piece.trade_count
        self.events_processed += piece.trade_count + piece.record_count
        for key in sorted(set(piece.trades) | set(events)):
            engine = self.engines.get(key)
            if engine is None:
                engine = self.engines[key] = Engine(
                    self.strategies, self.engine_params, state_params=StateParams.for_replay
                )
            batch = piece.trades.get(key)
            out = engine.process([batch] if batch is not None else (), events.get(key, ()))
            self.evaluations += out.evaluations
            self._count_coverage(out.tables)
            if self.on_features is not None:
                for table in out.tables:
                    self.on_features(table)
            for sig in out.signals:
                self.signals.append(sig)
                self.signal_scores[sig["signal_id"]] = sig["score"]
                self.executor_feed.add_signal(sig)

    # ------------------------------------------------------------------------------------------ coverage
    def _count_coverage(self, tables: list[FeatureTable]) -> None:
        self._coverage.count(tables, "liquidations" in self._source_inputs)

    def coverage_rows(self, notes: Mapping[str, str]) -> list[CoverageRow]:
        return self._coverage.rows(notes)

    def position_events(self) -> list[Record]:
        """Every positions record the executors emitted (opened, tp1, closed), in emission order per account."""
        return self.accounts.position_events()

    # ------------------------------------------------------------------------------------------ result
    def result(self, source: Source, started_ms: int, partial: bool) -> RunResult:
        params = {
            "executor": self.config.model_dump(mode="json", exclude={"exchange", "reconcile"}),
            "engine": {
                "eval_interval_ms": self.engine_params.eval_interval_ms,
                "allowed_lateness_ms": self.engine_params.allowed_lateness_ms,
            },
            "account": self.account,
            "mode": MODE,
            "open_positions_at_end": self.accounts.open_positions(),
            "blocked_evaluations": dict(sorted(self._coverage.blocked.items())),
            "risk_decisions": dict(sorted(self.accounts.decisions().items())),
            "source_notes": dict(source.report.notes),
            "bad_row_count": source.report.bad_row_count,
        }
        end_ms = self.processed_to_ms if partial else source.to_ms
        degradations = self.accounts.degradations(end_ms) if end_ms is not None else []
        if degradations:  # only when a rule changed: the params of every other run stay as they were
            params["degradation_changes"] = degradations
        return RunResult(
            run_id=str(uuid.uuid4()),
            source=source.name,
            exchange=source.exchange,
            symbols=list(source.symbols),
            from_ms=source.from_ms,
            to_ms=source.to_ms,
            strategies=[
                StrategyInfo(c.name, c.version, c.config_hash, c.model_dump(mode="json")) for c in self.strategies
            ],
            trades=self.accounts.trades(),
            initial_balance=self.config.balance,
            started_at_ms=started_ms,
            finished_at_ms=int(time.time() * 1000),
            partial=partial,
            events_processed=self.events_processed,
            trades_processed=self.trades_processed,
            evaluations=self.evaluations,
            signals=len(self.signals),
            coverage=self.coverage_rows(source.report.notes),
            missing=list(source.report.missing),
            bad_rows=list(source.report.bad_rows),
            params=params,
            processed_to_ms=self.processed_to_ms if partial else source.to_ms,
            routed_orders=routed_orders.collect(
                (row for b in self._books.values() for row in b.sink.routed),
                (f for b in self._books.values() for f in b.sink.fills),
            ),
        )
