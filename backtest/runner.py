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
  (``_quiet_before``): such a record is held before those trades, which are skipped later, as they
  would be now; a busy market's held records are passed before any of its trades that is fed;
- the clock ticks at the points the dense feed ticks at (at most once per second of event time, on
  records and busy trades), but ``on_clock`` runs only where some account's may act
  (``Executor.clock_quiet``: a pause ending, a UTC day change, a market going stale or fresh, an
  entry in flight). Deferred data only makes markets look older, so a tick judged quiet is quiet;
- a held record does not stop the feed: busy markets' trades before it wait for the next record that
  is not held; the clock ticks they and the record would make (at the first event at or after each
  tick time) are made without them where every due account's clock is quiet there (``_quiet_ticks``),
  since such a tick only moves the account's clock time; a tick that may act stops the hold. A tick
  that may act only because held data made a market look old is asked again once the data is passed.

How that loop stays off Python per record (results unchanged; the same tests): the slice's marks
and books are ordered as columns (``MarketSlice.columns``, also what the engine is fed; a record
becomes an executor object only where it is passed); while no account is busy, a tight run over them
only holds records and advances quiet clocks (``_idle_run``); the executor's answers (``busy_markets``,
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

import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Literal, NamedTuple

import numpy as np
from numba import njit

from backtest.inputs import MarketSlice, Record, Source, market_key
from backtest.model import BacktestTrade, CoverageRow, RunResult, StrategyInfo
from execution.config import ExecutorConfig
from execution.domain import BookTop, MarkTick, TradeTick
from execution.executor import Executor
from execution.paper_broker import PaperBroker
from stream_apps.core.engine import Engine, EngineParams
from stream_apps.core.params import StateParams
from stream_apps.core.records import FeatureTable
from stream_apps.core.scoring import BLOCK_REASONS
from stream_apps.core.strategy import StrategyConfig

Account = Literal["per_strategy", "shared"]
_CHANGES = attrgetter("changes")
Feed = Literal["sparse", "dense"]
MODE = "paper"

# layer -> inputs (feature ``inputs`` names) whose presence the layer needs; "trades" and
# "liquidations" are special: trades are what every evaluation is made of, liquidations are sums
# that read 0 without data, so they are present when the source delivers them at all
LAYER_INPUTS: Mapping[str, tuple[str, ...]] = {
    "direction": ("trades",),
    "crowding": ("long_short_ratio", "top_trader_long_share"),
    "environment": ("oi_change",),
    "confirmation": ("vwap_30m",),
    "auxiliary": ("coinbase_premium",),
    "funding": ("funding_rate",),
    "liquidation": ("liquidations",),
}
GATE_INPUTS: Mapping[str, str] = {
    "min_atr_price": "atr_price_ratio",
    "obi_against": "obi",
    "spot_perp_divergence": "spot_perp_divergence",
    "whale_against": "whale_ratio_15m",
}


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


class _Controls(NamedTuple):
    """The non-trade executor inputs of a slice, ordered by time, rank and arrival, as parallel
    lists (a run has hundreds of thousands: no object each). Rank 0 signal, 1 mark, 2 book; holdable:
    a book, or a mark before its own funding time."""

    times: list[int]
    ranks: list[int]
    holdable: list[bool]
    records: list[Record]
    keys: list[str]
    columns: _ControlColumns


class _ControlColumns(NamedTuple):
    """The same controls as arrays, for the idle run (``_idle_run``): times, holdable, each control's
    market as a number (an index into ``names``) and its (rank, market) slot as one number."""

    times: np.ndarray
    holdable: np.ndarray
    market: np.ndarray
    slot: np.ndarray
    names: list[str]


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

    def emit(self, topic: str, key: str, record: dict[str, Any]) -> None:
        self.counts[topic] += 1
        if topic == "risk.events":
            if record["decision"] != "allow":
                self.decisions[record["reason"]] += 1
            return
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
class _Book:
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


@dataclass
class _Coverage:
    counts: dict[tuple[str, str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    blocked: Counter[str] = field(default_factory=Counter)


class BacktestRunner:
    """Runs strategies over a source; see the module docstring. One runner = one run."""

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
        self._held: dict[tuple[int, str], Record] = {}  # sparse: (rank, key) -> newest mark/book of an idle market
        self._skipped: dict[str, tuple[Any, int]] = {}  # sparse: key -> newest busy trade not fed (batch, index)
        self._last: dict[str, TradeTick] = {}
        self._bands_dirty = True
        self._band_stamp = -1  # the executors' changes the band memo is for (a mark passed or held for
        # another funding time forgets its market's band: funding times end the bands)
        self._band_memo: dict[str, tuple[float, float, float] | None] = {}
        self._band_version = 0  # moves whenever the memo forgets something
        self._quiet_to: float | None = None  # busy trades before this time are all inside their bands
        self._quiet_bands: dict[str, tuple[float, float, float] | None] = {}  # ... these bands
        self._quiet_version = -1  # the band memo's version they were last checked against
        self._busy_stamp = -1
        self._executors: list[Executor] = []
        self._busy_all: set[str] = set()
        self._next_tick = -1  # sparse: no account's clock is due before this event time
        self.strategies = list(strategies)
        self.config = executor_config or ExecutorConfig()
        self.account = account
        self.engine_params = engine_params or EngineParams()
        self.engines: dict[str, Engine] = {}
        self.signal_scores: dict[str, float] = {}
        self.signals: list[Record] = []  # every signal the engine emitted (ids, scores, tiers)
        self._books: dict[str, _Book] = {}
        self._pending: list[MarketSlice] = []  # slices the engine has done and the executor has not
        self._late_signals: list[Record] = []  # signals for times the executor has passed
        self._future_signals: list[Record] = []  # signals past the slice the executor is on
        self._executor_ms = -1  # event time up to which the executor has been fed
        self.processed_to_ms: int | None = None  # end of the last slice fed
        self._coverage = _Coverage()
        self._layer_use = self._layers_in_use()
        self._source_inputs: set[str] = set()
        self.trades_processed = 0
        self.events_processed = 0
        self.evaluations = 0

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
            sum(len(b.sink.trades) for b in self._books.values()),
        )

    def feed(self, piece: MarketSlice) -> None:
        """Engine over ``piece``; then the executor over the slice before it."""
        if not self._books:
            self._accounts(piece.start_ms)
        self.processed_to_ms = piece.end_ms
        self._engine_slice(piece)
        self._pending.append(piece)
        if len(self._pending) > 1:
            self._executor_slice(self._pending.pop(0))

    def finish(self) -> None:
        """Feed the executor what is still pending (end of data or of an interrupted run)."""
        while self._pending:
            self._executor_slice(self._pending.pop(0))
        for sig in sorted(self._future_signals, key=lambda s: s["eval_time"]):
            self._signal(sig, max(sig["eval_time"], self._executor_ms))
        self._future_signals = []

    # ------------------------------------------------------------------------------------------ engine
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
                if sig["eval_time"] < self._executor_ms:
                    self._late_signals.append(sig)
                else:
                    self._future_signals.append(sig)

    # ------------------------------------------------------------------------------------------ executor
    def _accounts(self, now_ms: int) -> list[_Book]:
        names = ["*"] if self.account == "shared" else [cfg.name for cfg in self.strategies]
        for name in names:
            if name not in self._books:
                sink = BacktestSink(self.signal_scores)
                broker = PaperBroker(self.config.fees, self.config.paper)
                self._books[name] = _Book(Executor(self.config, MODE, broker, sink, now_ms), sink)
        self._executors = [book.executor for book in self._books.values()]
        return list(self._books.values())

    def _book_for(self, strategy: str) -> _Book:
        return self._books["*" if self.account == "shared" else strategy]

    def _controls(self, piece: MarketSlice) -> _Controls:
        """Late signals handed over; the slice's due signals, marks and books in executor order."""
        end = piece.end_ms
        for sig in self._late_signals:  # produced after the executor passed their time: handed over now
            self._signal(sig, max(sig["eval_time"], self._executor_ms))
        self._late_signals = []
        due = [s for s in self._future_signals if s["eval_time"] < end]
        self._future_signals = [s for s in self._future_signals if s["eval_time"] >= end]
        # (time, rank, seq) as columns, seq the position in signals + marks + books; "held" says
        # whether the record may be held (a book, or a mark before its own funding time)
        names = sorted(
            {market_key(s["exchange"], s["symbol"]) for s in due}
            | {c.key for kind in ("marks", "books") for c in piece.columns(kind)}
        )
        code = {key: n for n, key in enumerate(names)}
        times = [np.array([s["eval_time"] for s in due], dtype=np.int64)]
        seqs = [np.arange(len(due), dtype=np.int64)]
        ranks = [np.zeros(len(due), dtype=np.int64)]
        keys = [np.array([code[market_key(s["exchange"], s["symbol"])] for s in due], dtype=np.int64)]
        held = [np.zeros(len(due), dtype=bool)]
        offset = len(due)
        for rank, kind in ((1, "marks"), (2, "books")):
            for cols in piece.columns(kind):
                times.append(cols.batch.time_ms)
                seqs.append(cols.index + offset)
                ranks.append(np.full(len(cols.index), rank, dtype=np.int64))
                keys.append(np.full(len(cols.index), code[cols.key], dtype=np.int64))
                held.append(
                    cols.batch.time_ms < cols.batch.next_funding_time_ms
                    if rank == 1
                    else np.ones(len(cols.index), dtype=bool)
                )
            offset += len(getattr(piece, kind))
        time_col, seq_col, rank_col = np.concatenate(times), np.concatenate(seqs), np.concatenate(ranks)
        order = np.lexsort((seq_col, rank_col, time_col))
        records = due + piece.marks + piece.books
        time_col, rank_col, held_col = time_col[order], rank_col[order], np.concatenate(held)[order]
        key_col = np.concatenate(keys)[order]
        arrays = _ControlColumns(time_col, held_col, key_col, rank_col * max(len(names), 1) + key_col, names)
        return _Controls(
            time_col.tolist(),
            rank_col.tolist(),
            held_col.tolist(),
            [records[i] for i in seq_col[order].tolist()],
            [names[k] for k in key_col.tolist()],
            arrays,
        )

    def _executor_slice(self, piece: MarketSlice) -> None:
        if self.feed_mode == "sparse":
            self._executor_slice_sparse(piece)
            return
        end = piece.end_ms
        controls = self._controls(piece)
        cursors = {key: 0 for key in piece.trades}
        for t, rank, record in zip(controls.times, controls.ranks, controls.records, strict=True):
            self._trades_before(piece, cursors, t)
            now = max(t, self._executor_ms)
            self._tick_clocks(now)
            if rank == 0:
                self._signal(record, now)
            elif rank == 1:
                mark = MarkTick.from_record(record)
                for book in self._books.values():
                    book.executor.on_mark_tick(mark, now)
            else:
                top = BookTop.from_record(record)
                for book in self._books.values():
                    book.executor.on_book_top(top, now)
            self._executor_ms = max(self._executor_ms, t)
        self._trades_before(piece, cursors, end)
        self._executor_ms = max(self._executor_ms, end - 1)

    def _executor_slice_sparse(self, piece: MarketSlice) -> None:
        """The slice with the same executor state at every point that matters as ``dense`` (module
        docstring, "Speed"): marks and books of idle markets are held, newest per kind and market, and
        delivered with the market's newest trade before a signal, a clock tick that may act, a record of
        the market that is not held, and the slice's end (so nothing is held between slices)."""
        end = piece.end_ms
        controls = self._controls(piece)
        cursors = {key: 0 for key in piece.trades}
        self._quiet_to = None  # found over the previous slice's trades
        books = list(self._books.values())
        first = books[0].executor
        unknown = [key for key in piece.trades if key not in first.data_time]  # flushed until delivered once
        executors = [book.executor for book in books]
        times, ranks, holdables, records, keys, _ = controls
        n, count = 0, len(times)
        while n < count:
            busy = self._busy()
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
                    and self._may_hold(rank, key, t, busy)
                    and self._quiet_before(piece, cursors, t, busy)
                    and (
                        max(t, self._executor_ms) < self._next_tick or self._quiet_ticks(piece, cursors, t, busy, books)
                    )
                ):
                    # held, and no clock is due: busy markets' trades before it cannot tick either
                    # (they are older), so they wait for the next record that is not held, fed with
                    # their own times (the executor's time is left where it is)
                    self._hold(rank, key, record)
                    continue
                self._trades_before(piece, cursors, t)
            if unknown:
                for k in list(unknown):
                    self._flush_key(piece, cursors, k, t)
                    if k in first.data_time:
                        unknown.remove(k)
            now = max(t, self._executor_ms)
            if now >= self._next_tick:
                self._tick_sparse(now, piece, cursors, t)
            if rank == 0:
                self._feed_skipped()
                self._flush(piece, cursors, t)
                self._signal(record, now)
            elif holdable and key in first.data_time and self._may_hold(rank, key, t, self._busy()):
                # the record only updates latest values (a mark at or after its own funding time is not
                # held: whether it sets the next funding depends on what came before; on a busy market
                # see ``_may_hold``)
                self._hold(rank, key, record)
            else:
                self._flush_key(piece, cursors, key, t)
                if rank == 1:
                    self._forget_band(key)
                    mark = MarkTick.from_record(record)
                    for ex in executors:
                        ex.on_mark_tick(mark, now)
                else:
                    top = BookTop.from_record(record)
                    for ex in executors:
                        ex.on_book_top(top, now)
            self._executor_ms = max(self._executor_ms, t)
        self._trades_before(piece, cursors, end)
        self._feed_skipped()
        self._flush(piece, cursors, end)
        self._executor_ms = max(self._executor_ms, end - 1)

    def _idle_run(self, controls: _Controls, n: int, books: list[_Book]) -> int:
        """The sparse feed's loop over controls while no account is busy and every market is known,
        reduced to what it does there: hold each mark and book (newest per kind and market) and let
        the clock tick where every due account's clock is quiet. Stops (returning the index) at the
        first control that needs more: a signal, a mark at or after its funding time, a market not
        known yet, a tick that may act; the caller's loop takes that control as before.

        Nothing is passed to an account here, so each account's quiet end stays put: the run is found
        by ``_quiet_tick_run`` (compiled; a tick is due at the first control at or after the previous
        tick + 1 s) and only its newest record per kind and market is held."""
        cols = controls.columns
        # the accounts are made together (``_accounts``) and every tick moves each due one, so their
        # clocks are equal: a tick due for one is due for all
        assert len({book.clock_ms for book in books}) == 1, "accounts' clocks differ"
        data_time = books[0].executor.data_time
        known = np.fromiter((name in data_time for name in cols.names), dtype=bool, count=len(cols.names))
        ok = cols.holdable & known[cols.market] if len(cols.names) else cols.holdable
        now = max(int(cols.times[n]), self._executor_ms) if n < len(cols.times) else self._executor_ms
        quiet_to = min(book.quiet_until(now) for book in books)  # now itself when a tick now may act
        stop, last_tick, executor_ms = _quiet_tick_run(
            cols.times, ok, n, self._executor_ms, self._next_tick, float(quiet_to)
        )
        if stop > n:
            _, newest = np.unique(cols.slot[n:stop][::-1], return_index=True)
            held, records, ranks, keys = self._held, controls.records, controls.ranks, controls.keys
            for i in (stop - 1 - newest).tolist():
                held[(ranks[i], keys[i])] = records[i]
        if last_tick >= 0:
            for book in books:
                book.clock_ms = last_tick
            self._next_tick = last_tick + 1000
        self._executor_ms = executor_ms
        return stop

    def _flush(self, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:
        for key in sorted(set(cursors) | {k for _, k in self._held}):
            self._flush_key(piece, cursors, key, until)

    def _flush_key(self, piece: MarketSlice, cursors: dict[str, int], key: str, until: int) -> None:
        """Sparse feed: what is held of ``key`` and its newest trade before ``until`` not fed yet, in
        executor order (time; at equal times mark, book, trade), to every account. The key is idle (no
        account busy on it): a busy market's trades are fed by ``_trades_before``, which moves its cursor."""
        items = self._held_items(key)
        batch = piece.trades.get(key)
        if batch is not None:
            hi = int(batch.time_ms.searchsorted(until))
            if hi > cursors[key]:
                cursors[key] = hi
                tick = _tick(batch, hi - 1)
                items.append((tick.trade_time, 3, tick))
        if items:
            self._pass_items(key, items)

    def _held_items(self, key: str) -> list[tuple[int, int, Any]]:
        """What is held of ``key``, taken out, as (time, rank, record)."""
        held = self._held
        if (1, key) not in held and (2, key) not in held:
            return []
        return [
            (int(rec["event_time"]), rank, rec) for rank in (1, 2) if (rec := held.pop((rank, key), None)) is not None
        ]

    def _pass_items(self, key: str, items: list[tuple[int, int, Any]]) -> None:
        """Marks (rank 1), books (2) and a trade (3) of ``key`` to every account, in executor order."""
        items.sort(key=lambda item: item[:2])
        for time_ms, rank, item in items:
            now = max(time_ms, self._executor_ms)
            if rank == 1:
                self._forget_band(key)
                mark = MarkTick.from_record(item)
                for ex in self._executors:
                    ex.on_mark_tick(mark, now)
            elif rank == 2:
                top = BookTop.from_record(item)
                for ex in self._executors:
                    ex.on_book_top(top, now)
            else:
                for ex in self._executors:
                    ex.on_trade_tick(item, now)

    def _tick_sparse(self, now: int, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:
        """The dense feed's clock ticks (at most once per second of event time, at the same points), but
        ``on_clock`` only where some account's may act (``Executor.clock_quiet``), after the held data."""
        due = [book for book in self._books.values() if now >= book.clock_ms + 1000]
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
                    self._bands_dirty = True
        self._next_tick = min(book.clock_ms for book in self._books.values()) + 1000

    def _busy(self) -> set[str]:
        """The markets some account is busy on (``Executor.busy``)."""
        stamp = sum(map(_CHANGES, self._executors))  # each only grows: the sum moves when one does
        if stamp != self._busy_stamp:
            self._busy_stamp = stamp
            self._busy_all = set().union(*(book.busy_markets() for book in self._books.values()))
        return self._busy_all

    def _signal(self, record: Record, now: int) -> None:
        book = self._book_for(record["strategy"])
        book.executor.on_signal(record, now)

    def _tick_clocks(self, now: int) -> None:
        for book in self._books.values():
            if now >= book.clock_ms + 1000:
                book.clock_ms = now
                book.executor.on_clock(now)

    def _trades_before(self, piece: MarketSlice, cursors: dict[str, int], until: int) -> None:  # noqa: C901 - over the complexity limit, to be split
        """Every trade of ``piece`` before ``until`` not fed yet: one by one, in time order across
        symbols, for the markets an executor is busy on; only the newest for the others (sparse feed:
        none for the others, ``_flush_key`` feeds their newest when it matters)."""
        books = list(self._books.values())
        sparse = self.feed_mode == "sparse"
        busy = self._busy()
        if sparse and not busy:
            return
        busy_parts = []
        for key in sorted(cursors):
            batch = piece.trades[key]
            lo = cursors[key]
            if sparse and key not in self._busy():
                continue
            hi = int(batch.time_ms.searchsorted(until))
            if hi <= lo:
                continue
            cursors[key] = hi
            if key in self._busy():
                busy_parts.append((key, batch, lo, hi))
            else:
                tick = _tick(batch, hi - 1)
                now = max(tick.trade_time, self._executor_ms)
                for book in books:
                    book.executor.on_trade_tick(tick, now)
        if not busy_parts:
            return
        if sparse:
            order = []
        elif len(busy_parts) == 1:
            key, batch, lo, hi = busy_parts[0]
            order = [(batch, i) for i in range(lo, hi)]
        else:
            times = np.concatenate([b.time_ms[lo:hi] for _, b, lo, hi in busy_parts])
            owner = np.concatenate([np.full(hi - lo, n) for n, (_, _, lo, hi) in enumerate(busy_parts)])
            index = np.concatenate([np.arange(lo, hi) for _, _, lo, hi in busy_parts])
            merged = np.lexsort((owner, times))  # time order; equal times: symbols in key order
            order = [(busy_parts[owner[m]][1], int(index[m])) for m in merged]
        last: dict[str, TradeTick] = {}
        if sparse:
            self._busy_trades_sparse(piece, cursors, until, busy_parts, last)
            order = []
            # the newest trade of each market with trades here, fed or skipped (a skipped one left
            # is newer than any fed: feeding one feeds the skipped first)
            last = {
                key: _tick(*self._skipped[key]) if key in self._skipped else last[key]
                for key, *_ in busy_parts
                if key in self._skipped or key in last
            }
        for batch, i in order:
            tick = _tick(batch, i)
            now = max(tick.trade_time, self._executor_ms)
            self._tick_clocks(now)
            key = tick.key
            for book in books:
                if key in book.busy_markets():
                    book.executor.on_trade_tick(tick, now)
            last[key] = tick
        for key, tick in last.items():  # accounts that were idle on the market still learn its last price
            for book in books:
                if key not in book.busy_markets():
                    book.executor.on_trade_tick(tick, max(tick.trade_time, self._executor_ms))

    def _busy_trades_sparse(
        self,
        piece: MarketSlice,
        cursors: dict[str, int],
        until: int,
        parts: list[tuple[str, Any, int, int]],
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
        if len(parts) == 1:
            _, batch, lo, hi = parts[0]
            times, prices = batch.time_ms[lo:hi], batch.price[lo:hi]
            owner, local = _zeros(hi - lo), _arange(hi - lo)
        else:
            times = np.concatenate([b.time_ms[lo:hi] for _, b, lo, hi in parts])
            owner = np.concatenate([np.full(hi - lo, n) for n, (_, _, lo, hi) in enumerate(parts)])
            local = np.concatenate([np.arange(hi - lo) for _, _, lo, hi in parts])
            merged = np.lexsort((owner, times))
            times, prices = times[merged], np.concatenate([b.price[lo:hi] for _, b, lo, hi in parts])[merged]
            owner, local = owner[merged], local[merged]
        time_list, price_list = times.tolist(), prices.tolist()
        owner_list, local_list = owner.tolist(), local.tolist()
        skipped = self._skipped
        self._last = last
        bands: dict[str, tuple[float, float, float] | None] = {}
        limits: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._bands_dirty = True
        count, pos = len(time_list), 0
        while pos < count:
            key, batch, lo, _ = parts[owner_list[pos]]
            j = local_list[pos]
            t = time_list[pos]
            now = t if t > self._executor_ms else self._executor_ms
            if now >= self._next_tick:
                self._tick_sparse(now, piece, cursors, until)
            if self._bands_dirty:
                bands = {k: self._band(k) for k, *_ in parts}
                limits = None
                self._bands_dirty = False
            band = bands[key]
            pos += 1
            if band is not None and band[0] < price_list[pos - 1] < band[1] and t < band[2]:
                skipped[key] = (batch, lo + j)
                if pos + _SCALAR_RUN < count and self._executor_ms < self._next_tick:
                    if limits is None:  # per part: (low, high, until); no band: nothing is inside
                        rows = [bands[k] or (math.inf, -math.inf, -math.inf) for k, *_ in parts]
                        limits = (
                            np.array([r[0] for r in rows]),
                            np.array([r[1] for r in rows]),
                            np.array([r[2] for r in rows]),
                        )
                    pos = self._skip_run(parts, times, prices, owner, local, limits, pos, skipped)
                continue
            self._feed_skipped()
            self._pass_held(key)
            self._feed_busy(_tick(batch, lo + j))

    def _skip_run(
        self,
        parts: list[tuple[str, Any, int, int]],
        times: np.ndarray,
        prices: np.ndarray,
        owner: np.ndarray,
        local: np.ndarray,
        limits: tuple[np.ndarray, np.ndarray, np.ndarray],
        pos: int,
        skipped: dict[str, tuple[Any, int]],
    ) -> int:
        """From ``pos``: the trades inside their market's band and before the next tick, in windows
        growing 4x; each market's newest of them is remembered (first-seen order, as the loop would);
        returns the position of the first trade that is not such a trade."""
        low, high, until = limits
        next_tick, count, width = self._next_tick, len(times), 64
        while pos < count:
            stop = min(count, pos + width)
            o, t, p = owner[pos:stop], times[pos:stop], prices[pos:stop]
            if len(parts) == 1:
                inside = (low[0] < p) & (p < high[0]) & (t < until[0]) & (t < next_tick)
            else:
                inside = (low[o] < p) & (p < high[o]) & (t < until[o]) & (t < next_tick)
            run = len(inside) if inside.all() else int(inside.argmin())
            if run:
                if len(parts) == 1:
                    seen = [(0, 0, run - 1)]
                else:
                    seen = []
                    for n in range(len(parts)):
                        at = np.flatnonzero(o[:run] == n)
                        if len(at):
                            seen.append((int(at[0]), n, int(at[-1])))
                    seen.sort()
                for _, n, newest in seen:
                    key, batch, lo, _ = parts[n]
                    skipped[key] = (batch, lo + int(local[pos + newest]))
            pos += run
            if run < len(inside):
                return pos
            width *= 4
        return pos

    def _may_hold(self, rank: int, key: str, t: int, busy: set[str]) -> bool:
        """Whether a holdable mark or book of ``key`` at ``t`` may be held. Always on a market no account is
        busy on. On a busy market only while its trades have a quiet band (no entry or order there: a
        fill reads the book), and a mark only before the band's end, which is at or before the funding
        time the executor knows and the one a held mark would set (``_band``): a mark that would settle
        funding is passed at its place, and a held one is passed before the first trade at or after
        its funding time (``_pass_held`` before every busy trade that is fed). Held records change only
        latest values that trades inside the band do not read, so passing them late, before the next
        point that reads them, gives every account the state the dense feed gives it there."""
        if key not in busy:
            return True
        band = self._band_of(key)
        return band is not None and (rank == 2 or t < band[2])

    def _band_of(self, key: str) -> tuple[float, float, float] | None:
        """``_band(key)``, remembered while no executor changed (positions, entries, orders) and no mark
        of the market was passed or held for another funding time. Funding settled by a trade only
        widens a band, so a remembered one is never wider than the true one."""
        self._band_check()
        memo = self._band_memo
        if key not in memo:
            memo[key] = self._band(key)
        return memo[key]

    def _band_check(self) -> None:
        stamp = sum(map(_CHANGES, self._executors))
        if stamp != self._band_stamp:
            self._band_stamp, self._band_memo = stamp, {}
            self._band_version += 1

    def _forget_band(self, key: str) -> None:
        """Forget the market's band (its funding time may move); what was found with it (``_quiet_before``)
        is checked again."""
        if key in self._band_memo:
            del self._band_memo[key]
            self._band_version += 1

    def _quiet_ticks(
        self, piece: MarketSlice, cursors: dict[str, int], t: int, busy: set[str], books: list[_Book]
    ) -> bool:
        """The clock ticks the dense feed makes up to a record at ``t`` whose busy trades before it are all
        inside their bands (``_quiet_before``): each at the first event at or after the next tick time
        (a busy trade not fed yet before ``t``, else the record); as long as every due account's clock is
        quiet there, the tick only moves its time, which is done here without feeding the trades (they
        are skipped later, as they would be now). False at the first tick that is not quiet (its time
        not taken): the caller then feeds the record as usual, which ticks there."""
        last = max(t, self._executor_ms)
        next_tick = self._next_tick
        while next_tick <= last:
            now = last
            for key in busy:
                batch = piece.trades.get(key)
                if batch is None:
                    continue
                times = batch.time_ms
                i = max(cursors[key], int(times.searchsorted(next_tick)))
                if i < len(times) and times[i] < t:
                    now = min(now, max(int(times[i]), self._executor_ms))
            due = [book for book in books if now >= book.clock_ms + 1000]
            if not all(book.clock_quiet(now) for book in due):
                return False
            for book in due:
                book.clock_ms = now
            next_tick = self._next_tick = min(book.clock_ms for book in books) + 1000
        return True

    def _hold(self, rank: int, key: str, record: Record) -> None:
        """Hold a mark or book (newest per kind and market); a held mark for another funding time than
        the one held before forgets the market's band (``_band`` ends at it)."""
        if rank == 1:
            before = self._held.get((1, key))
            if before is None or before["next_funding_time"] != record["next_funding_time"]:
                self._forget_band(key)
        self._held[(rank, key)] = record

    def _quiet_before(self, piece: MarketSlice, cursors: dict[str, int], t: int, busy: set[str]) -> bool:
        """Whether every busy market's trades not fed yet before ``t`` lie inside its band, so that
        ``_trades_before(t)`` would only skip them (the caller also requires that no clock is due before
        ``t``): then a record at ``t`` may be held before them, since they change nothing it reads. The
        answer comes from the time of the first such trade outside a band (numpy over the rest of the
        slice), remembered with the bands it was found for; a trade fed since (``_feed_busy``) and a new
        slice forget it (skipped trades only move the cursors up to it)."""
        self._band_check()
        if self._quiet_to is not None and self._quiet_version == self._band_version:
            return t <= self._quiet_to
        self._quiet_version = self._band_version
        bands = {key: self._band_of(key) for key in busy}
        if self._quiet_to is None or bands != self._quiet_bands:
            self._quiet_bands = bands
            first = math.inf
            for key in busy:
                batch = piece.trades.get(key)
                if batch is None:
                    continue
                lo = cursors[key]
                if lo >= len(batch):
                    continue
                band = self._band_of(key)
                times = batch.time_ms[lo:]
                if band is None:
                    first = min(first, int(times[0]))
                    continue
                prices = batch.price[lo:]
                outside = (prices <= band[0]) | (prices >= band[1]) | (times >= band[2])
                at = int(outside.argmax())
                if outside[at]:
                    first = min(first, int(times[at]))
            self._quiet_to = first
        return t <= self._quiet_to

    def _pass_held(self, key: str) -> None:
        """Pass what is held of ``key`` (mark before book at equal times) to every account."""
        items = self._held_items(key)
        if items:
            self._pass_items(key, items)
            self._bands_dirty = True

    def _band(self, key: str) -> tuple[float, float, float] | None:
        """The intersection of the quiet bands of the accounts busy on ``key`` (None: every trade), ending
        at the latest at the funding time a held mark of ``key`` would set."""
        low, high, until = -math.inf, math.inf, math.inf
        mark = self._held.get((1, key))
        if mark is not None:
            until = int(mark["next_funding_time"])
        for book in self._books.values():
            if key in book.busy_markets():
                band = book.executor.quiet_trades(key)
                if band is None:
                    return None
                low, high, until = max(low, band[0]), min(high, band[1]), min(until, band[2])
        return low, high, until

    def _feed_busy(self, tick: TradeTick) -> None:
        now = max(tick.trade_time, self._executor_ms)
        key = tick.key
        for book in self._books.values():
            if key in book.busy_markets():
                book.executor.on_trade_tick(tick, now)
        self._last[tick.key] = tick
        self._bands_dirty = True
        self._quiet_to = None

    def _feed_skipped(self) -> None:
        if self._skipped:
            held = list(self._skipped.values())
            self._skipped.clear()
            for batch, i in held:
                self._feed_busy(_tick(batch, i))

    # ------------------------------------------------------------------------------------------ coverage
    def _layers_in_use(self) -> dict[str, list[tuple[str, str]]]:
        """strategy -> [(layer or gate, input)] it depends on."""
        use: dict[str, list[tuple[str, str]]] = {}
        for cfg in self.strategies:
            pairs = [
                (layer, name)
                for layer, names in LAYER_INPUTS.items()
                if getattr(cfg.weights, layer) > 0
                for name in names
            ]
            pairs += [
                (f"gate:{gate}", name) for gate, name in GATE_INPUTS.items() if getattr(cfg.gates, gate) is not None
            ]
            use[cfg.name] = pairs
        return use

    def _count_coverage(self, tables: list[FeatureTable]) -> None:
        """Coverage from the engine's columnar feature records (no dict per record): an input is
        present in a record when its column is not NaN there (the records' ``inputs`` map leaves out
        exactly those)."""
        counts, blocked = self._coverage.counts, self._coverage.blocked
        has_liquidations = "liquidations" in self._source_inputs
        for table in tables:
            for block in table.blocks:
                name_of, symbol, n = block.strategy.name, block.frame.symbol, len(block)
                reasons = np.bincount(block.block, minlength=len(BLOCK_REASONS))
                for code in np.flatnonzero(reasons[1:]) + 1:
                    blocked[f"{name_of}:{BLOCK_REASONS[code]}"] += int(reasons[code])
                for layer, name in self._layer_use[name_of]:
                    row = counts[(layer, symbol, name)]
                    row[0] += n
                    if name == "trades" or (name == "liquidations" and has_liquidations):
                        row[1] += n
                    else:
                        column = (
                            block.frame.atr_price_ratio if name == "atr_price_ratio" else block.frame.values.get(name)
                        )
                        row[1] += int(np.count_nonzero(~np.isnan(column))) if column is not None else 0

    def coverage_rows(self, notes: Mapping[str, str]) -> list[CoverageRow]:
        return [
            CoverageRow(layer, symbol, name, evaluations, present, notes.get(name, ""))
            for (layer, symbol, name), (evaluations, present) in sorted(self._coverage.counts.items())
        ]

    def position_events(self) -> list[Record]:
        """Every positions record the executors emitted (opened, tp1, closed), in emission order per account."""
        return [ev for b in self._books.values() for ev in b.sink.positions]

    # ------------------------------------------------------------------------------------------ result
    def result(self, source: Source, started_ms: int, partial: bool) -> RunResult:
        trades = sorted(
            (t for b in self._books.values() for t in b.sink.trades), key=lambda t: (t.exit_time, t.position_id)
        )
        open_positions = [
            {
                "position_id": pos.position_id,
                "signal_id": pos.signal_id,
                "strategy": pos.strategy,
                "symbol": pos.symbol,
                "direction": pos.direction,
                "entry_time": pos.opened_at,
                "entry_price": pos.entry,
            }
            for b in self._books.values()
            for pos in b.executor.positions.values()
        ]
        decisions: Counter[str] = Counter()
        for b in self._books.values():
            decisions.update(b.sink.decisions)
        params = {
            "executor": self.config.model_dump(mode="json", exclude={"exchange", "reconcile"}),
            "engine": {
                "eval_interval_ms": self.engine_params.eval_interval_ms,
                "allowed_lateness_ms": self.engine_params.allowed_lateness_ms,
            },
            "account": self.account,
            "mode": MODE,
            "open_positions_at_end": open_positions,
            "blocked_evaluations": dict(sorted(self._coverage.blocked.items())),
            "risk_decisions": dict(sorted(decisions.items())),
            "source_notes": dict(source.report.notes),
            "bad_row_count": source.report.bad_row_count,
        }
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
            trades=trades,
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
        )


_SCALAR_RUN = 32  # a shorter run of trades left is skipped one by one (numpy costs more than it saves)


def warm_up() -> None:
    """Compile (or load from numba's cache) the runner's kernel, so a timed run does not include it."""
    _quiet_tick_run(np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool), 0, 0, 0, math.inf)


@njit(cache=True)
def _quiet_tick_run(times, ok, start, executor_ms, next_tick, quiet_to):  # pragma: no cover - compiled
    """From ``start``: the index of the first control that is not ``ok`` (not holdable, or its market not
    known) or at which a clock tick is due (its time, or the executor's if later, at or after
    ``next_tick``) at or after ``quiet_to``; the time of the last tick made before it (-1: none), each
    at least a second after the one before; and the executor time there."""
    n = len(times)
    i = start
    last_tick = -1
    while i < n:
        if not ok[i]:
            break
        t = times[i]
        now = t if t > executor_ms else executor_ms
        if now >= next_tick:
            if now >= quiet_to:
                break
            last_tick = now
            next_tick = now + 1000
        if t > executor_ms:
            executor_ms = t
        i += 1
    return i, last_tick, executor_ms


def _zeros(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int64)


def _arange(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def _tick(batch, i: int) -> TradeTick:
    return TradeTick(
        batch.exchange,
        batch.symbol,
        int(batch.agg_id[i]),
        float(batch.price[i]),
        float(batch.qty[i]),
        int(batch.time_ms[i]),
        "SELL" if batch.taker_sell[i] else "BUY",
    )
