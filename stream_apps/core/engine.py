"""``Engine``: per-symbol states, per-strategy cooldown books and the evaluation cadence.

Why a single driver: Faust agents (live) and the backtest runner (replay) both call
``Engine.process(trades, events, now_ms)`` and must get the same signals, however their input is
batched. The engine therefore works on event time only and evaluates at fixed points:

- at the end of every second in which a symbol had new trades (``t`` = the next whole second), and
- every ``eval_interval_ms`` (default 15 s, aligned to multiples of it) for every symbol that has
  traded, so features and signals keep coming in a quiet market — but only while the newest input
  at or before the point is at most ``idle_eval_limit_ms`` (default 1 h) old. Across a longer
  silence (a feed outage, a replay whose sources disagree on the year) the engine skips ahead to
  the next input instead of evaluating every 15 s through the gap: an input jumping five years
  would otherwise cost ten million evaluations. The rule depends on the input only, so output
  stays independent of batching.

An evaluation at ``t`` sees exactly the trades with time < ``t``: incoming events are buffered and
applied in time order (trades sorted by time, then agg id) just before the evaluation they precede.
The engine clock is the newest trade time, the newest other input's time minus
``event_clock_delay_ms`` (default 1 s), or the caller's ``now_ms``, whichever is latest, minus
``allowed_lateness_ms``; an evaluation point runs once the clock reaches it. The delay exists because
inputs come from different sources: an open-interest answer stamped "now" by the exchange's REST
server arrives while the trades of the last few hundred milliseconds are still in flight on the
websocket, and without the delay it would seal the second those trades belong to (they would be
late). A trade still seals its second at once, so signal latency is unchanged while trades flow. A trade older than the last evaluation point
processed is late: it is counted in its symbol's ``counters.late`` and ignored. Events with an
implausible time (before 2010, after 2100, or more than ``max_future_ms`` ahead of ``now_ms``) are
counted as rejected, so one corrupt timestamp cannot push the clock ahead by years (the state then
sees a hole in the agg ids and restarts its warm-up coverage: missing data is treated as missing). Book, mark,
liquidation and indicator records are never dropped as late (they are latest-value updates or,
for liquidations, sums that tolerate 10 minutes of delay); they take effect at the next evaluation.
With input in time order, the output is identical for any batching (tested with 1, 7 and 1000).

Detectors (VPIN, Kyle's lambda, Amihud; CVD–price divergence, OI spikes, liquidation windows; walls
and iceberg refills from the book snapshots' levels; ``core.detectors``) run in a symbol's state when a strategy that applies to the symbol has a
``detectors`` section (the flow and book parts only when the section names them); every strategy that has one
must have the same (one state per symbol). Off, nothing changes: no field, no cost.

Outputs are plain dicts shaped like the Avro records: ``bars`` (bars.1m), ``features`` (one
FeatureEvaluation per strategy x symbol x evaluation) and ``signals``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .bars import Bar
from .cooldown import CooldownBook
from .decision import decide_frame
from .detectors import BookParams, DetectorParams, FlowParams
from .engine_cadence import evaluation_points
from .engine_inputs import Key, PendingInputs, event_from_dict
from .engine_rollout import Revisions, Switch, start_candidate_books
from .events import BookBatch, MarkBatch, MarketEvent, TradeBatch
from .market_records import MarketTimeline
from .params import StateParams
from .records import FeatureBlock, FeatureTable, signal_record
from .rollout import CANARY_LEG_SUFFIX
from .scoring import evaluation_at, score_frames
from .segment_log import SegmentLog
from .strategy import StrategyConfig
from .symbol_state import STANDARD_CVD_WINDOWS_MS, SymbolState

PLAUSIBLE_TIME_MS = (1_262_304_000_000, 4_102_444_800_000)  # 2010-01-01 .. 2100-01-01 UTC


@dataclass(frozen=True)
class EngineParams:
    eval_interval_ms: int = 15_000
    allowed_lateness_ms: int = 0
    max_future_ms: int = 60_000  # with ``now_ms`` given, events further ahead of it are rejected
    idle_eval_limit_ms: int = 3_600_000  # periodic evaluations stop this long after the newest input
    event_clock_delay_ms: int = 1_000  # a non-trade input moves the clock to its time minus this

    def __post_init__(self) -> None:
        if self.eval_interval_ms <= 0 or self.eval_interval_ms % 1000:
            raise ValueError("eval_interval_ms must be a positive whole number of seconds")
        if self.allowed_lateness_ms < 0:
            raise ValueError("allowed_lateness_ms cannot be negative")
        if self.event_clock_delay_ms < 0:
            raise ValueError("event_clock_delay_ms cannot be negative")
        if self.idle_eval_limit_ms < self.eval_interval_ms:
            raise ValueError("idle_eval_limit_ms must be at least eval_interval_ms")


class EngineOutput:
    """Bars, feature records and signals of one or more ``process`` calls.

    Feature records are kept as columns (``FeatureTable``s: one row per strategy x symbol x
    evaluation); ``features`` turns them into dicts on first access (the edge where a consumer wants
    dicts: the Faust worker's encoder, tests). ``evaluations`` counts them without that.
    """

    def __init__(
        self,
        bars: list[dict[str, Any]] | None = None,
        features: list[dict[str, Any]] | None = None,
        signals: list[dict[str, Any]] | None = None,
    ) -> None:
        self.bars: list[dict[str, Any]] = bars if bars is not None else []
        self.signals: list[dict[str, Any]] = signals if signals is not None else []
        self._parts: list[list[dict[str, Any]] | FeatureTable] = [features] if features else []
        self._features: list[dict[str, Any]] | None = None

    @property
    def features(self) -> list[dict[str, Any]]:
        if self._features is None:
            records: list[dict[str, Any]] = []
            for part in self._parts:
                records += part if isinstance(part, list) else part.records()
            self._parts = [records] if records else []
            self._features = records
        return self._features

    @property
    def tables(self) -> list[FeatureTable]:
        """The columnar feature records (research code reads these; empty once ``features`` was read)."""
        return [part for part in self._parts if isinstance(part, FeatureTable)]

    @property
    def evaluations(self) -> int:
        """Number of feature records (strategy x symbol x evaluation)."""
        return sum(len(part) for part in self._parts)

    def add_table(self, table: FeatureTable) -> None:
        if len(table):
            self._parts.append(table)
            self._features = None

    def extend(self, other: EngineOutput) -> None:
        self.bars += other.bars
        self.signals += other.signals
        self._parts += other._parts
        self._features = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EngineOutput):
            return NotImplemented
        return (self.bars, self.features, self.signals) == (other.bars, other.features, other.signals)


_NEVER = np.iinfo(np.int64).max


class _SegmentRecords:
    """Bars and signals of one segment, each with its sort key: output in point, symbol, strategy order."""

    def __init__(self) -> None:
        self.bars: list[tuple[int, int, Key, int, dict[str, Any]]] = []
        self.signals: list[tuple[int, Key, int, dict[str, Any]]] = []

    def place_bars(
        self,
        key: Key,
        closed: list[Bar],
        advanced: list[Bar],
        batch: TradeBatch | None,
        segment: np.ndarray,
        due_points: np.ndarray,
    ) -> None:
        """Place each 1-minute bar at the evaluation that would have emitted it one point at a time:
        the first due point at or after its close if its closing trade (``closed``: closed by a trade
        of ``batch``) comes at or after that point (there ``advance_to`` closed it), otherwise the
        first point after its closing trade."""
        for seq, bar in enumerate(closed + advanced):
            closing = _NEVER
            if seq < len(closed):
                assert batch is not None
                closing = int(batch.time_ms[np.searchsorted(batch.time_ms, bar.close_time, side="left")])
            k = int(np.searchsorted(due_points, bar.close_time, side="left"))
            if k < len(due_points) and due_points[k] <= closing:
                self.bars.append((int(due_points[k]), 1, key, seq, bar.to_record(*key)))
            else:
                point = int(segment[np.searchsorted(segment, closing, side="right")])
                self.bars.append((point, 0, key, seq, bar.to_record(*key)))

    def add_signal(self, time_ms: int, key: Key, rank: int, record: dict[str, Any]) -> None:
        self.signals.append((time_ms, key, rank, record))

    def flush(self, out: EngineOutput) -> None:
        self.bars.sort(key=lambda item: item[:4])
        out.bars.extend(item[4] for item in self.bars)
        self.signals.sort(key=lambda item: item[:3])
        out.signals.extend(item[3] for item in self.signals)


def _trade_marks(batch: TradeBatch | None, segment: np.ndarray, traded_before: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per point of ``segment``: has a trade of ``batch`` come since the previous point (due), and
    has the symbol traded by then (ever)."""
    if batch is None:
        return np.zeros(len(segment), dtype=bool), np.full(len(segment), traded_before)
    counts = np.searchsorted(batch.time_ms, segment, side="left")
    return np.diff(counts, prepend=0) > 0, traded_before | (counts > 0)


class Engine:
    """Drives symbol states and strategies on event time; see the module docstring for the rules.

    The pending inputs live in a ``PendingInputs``, the evaluation points come from
    ``engine_cadence``; the engine keeps the clock, the states and the cooldown books, and runs the
    evaluations.
    """

    def __init__(
        self,
        strategies: Sequence[StrategyConfig],
        params: EngineParams | None = None,
        state_params: Callable[[str], StateParams] = StateParams.for_symbol,
    ) -> None:
        names = [cfg.name for cfg in strategies]
        if len(set(names)) != len(names):
            raise ValueError(f"strategy names must be unique, got {names}")
        self.strategies = list(strategies)
        self.params = params or EngineParams()
        self._state_params = state_params
        self.states: dict[Key, SymbolState] = {}
        self.books: dict[str, CooldownBook] = {cfg.name: CooldownBook() for cfg in self.strategies}
        self.clock_ms: int | None = None
        self.sealed_ms: int | None = None  # last evaluation point processed
        self._inputs = PendingInputs()
        self._cvd_windows = tuple(
            sorted(
                set(STANDARD_CVD_WINDOWS_MS)
                | {w for c in self.strategies for w in (c.windows.cvd_fast, c.windows.cvd_mid)}
            )
        )
        self._slope_windows = tuple(sorted({1_800_000} | {c.windows.cvd_fast for c in self.strategies}))
        detecting = [cfg for cfg in self.strategies if cfg.detectors is not None]
        if len({cfg.detectors.model_dump_json() for cfg in detecting}) > 1:
            raise ValueError(
                "strategies that set detectors must set the same (a symbol has one state): "
                + ", ".join(cfg.name for cfg in detecting)
            )
        self._detecting = detecting
        self._limits: dict[str, int] = {}
        self.revisions = Revisions(self.strategies)  # hot-switched revisions (core.engine_rollout)

    @property
    def applied_input_ms(self) -> int | None:
        """Newest event time among inputs already applied."""
        return self._inputs.applied_ms

    @applied_input_ms.setter
    def applied_input_ms(self, value: int | None) -> None:
        self._inputs.applied_ms = value

    def switch_point(self) -> int:
        """The first evaluation boundary (the ``eval_interval_ms`` grid) after every evaluation this engine
        has made or can make with the inputs it holds: a switch from there changes no evaluation in flight."""
        reached = max((t for t in (self.sealed_ms, self.clock_ms) if t is not None), default=None)
        if reached is None:
            return 0
        step = self.params.eval_interval_ms
        return (reached // step + 1) * step

    def schedule_switch(self, switch: Switch) -> None:
        """Evaluate with ``switch``'s revisions from ``switch.applied_from`` on (``core.engine_rollout``);
        ``SwitchRefused`` when this engine cannot (a restart is needed)."""
        self.revisions.schedule(switch)

    @property
    def _pending_books(self) -> dict[Key, BookBatch]:
        """The pending book snapshots as columns, per key (tests check their levels' form)."""
        return self._inputs.books

    # ------------------------------------------------------------------------------------------
    def state(self, exchange: str, symbol: str) -> SymbolState:
        key = (exchange, symbol)
        if key not in self.states:
            self.states[key] = SymbolState(
                exchange,
                symbol,
                self._state_params(symbol),
                self.detector_params(symbol),
                self.flow_params(symbol),
                self.book_params(symbol),
            )
        return self.states[key]

    def flow_params(self, symbol: str) -> FlowParams | None:
        """The symbol's divergence / OI-spike / liquidation parameters (None: off), as ``detector_params``."""
        for cfg in self._detecting:
            if cfg.applies_to(symbol):
                return cfg.detectors.flow_params()
        return None

    def book_params(self, symbol: str) -> BookParams | None:
        """The symbol's wall / iceberg parameters (None: off), as ``detector_params``."""
        for cfg in self._detecting:
            if cfg.applies_to(symbol):
                return cfg.detectors.book_params()
        return None

    def detector_params(self, symbol: str) -> DetectorParams | None:
        """The symbol's detector parameters: from the first strategy with a ``detectors`` section that
        applies to it (they are all the same), None (off) without one."""
        for cfg in self._detecting:
            if cfg.applies_to(symbol):
                return cfg.detectors.params_for(symbol)
        return None

    # ------------------------------------------------------------------------------------------
    # input and clock
    # ------------------------------------------------------------------------------------------
    def process(
        self,
        trades: Iterable[TradeBatch] = (),
        events: Iterable[MarketEvent | BookBatch | MarkBatch] = (),
        now_ms: int | None = None,
    ) -> EngineOutput:
        """Buffer the input, then run every evaluation point the clock has reached."""
        lowest, highest = PLAUSIBLE_TIME_MS
        if now_ms is not None:
            highest = min(highest, now_ms + self.params.max_future_ms + 1)
        newest = self._buffer_trades(trades, lowest, highest)
        reach = self._inputs.add_events(events, lowest, highest, self.params.event_clock_delay_ms, self._reject)
        if reach is not None:
            newest = reach if newest is None else max(newest, reach)
        out = EngineOutput()
        self._advance_clock(newest, now_ms)
        if self.clock_ms is None:
            return out
        low = self.sealed_ms
        if low is None:
            # nothing is sealed before the first evaluation: an input that happens to arrive first
            # (a liquidation 13 s into the session) must not make the trades before it late
            first = self._inputs.first_time()
            if first is None:
                return out
            low = first // 1000 * 1000
        points = evaluation_points(
            low,
            self.clock_ms,
            self._inputs,
            bool(self.states or self._inputs.trades),
            self.params.eval_interval_ms,
            self.params.idle_eval_limit_ms,
        )
        if len(points):
            self._run(points, out)
        return out

    def _buffer_trades(self, trades: Iterable[TradeBatch], lowest: int, highest: int) -> int | None:
        """Add the plausible, not late trades to the pending inputs; return the newest time added."""
        newest: int | None = None
        for batch in trades:
            admitted = self._admit_trades(batch, lowest, highest)
            if admitted is None:
                continue
            self._inputs.add_trades((admitted.exchange, admitted.symbol), admitted)
            batch_newest = int(admitted.time_ms.max())
            newest = batch_newest if newest is None else max(newest, batch_newest)
        return newest

    def _admit_trades(self, batch: TradeBatch, lowest: int, highest: int) -> TradeBatch | None:
        """``batch`` without the trades at an implausible time (counted as rejected) or before the
        last evaluation point (late: counted, their ids taken as seen); None when nothing is left."""
        if len(batch) == 0:
            return None
        key = (batch.exchange, batch.symbol)
        implausible = (batch.time_ms < lowest) | (batch.time_ms >= highest)
        if np.any(implausible):  # a corrupt timestamp must not drag the clock years ahead
            self._reject(key, int(implausible.sum()))
            batch = batch.take(~implausible)
            if len(batch) == 0:
                return None
        if self.sealed_ms is not None:
            late = batch.time_ms < self.sealed_ms
            if np.any(late):
                self.state(*key).skip_late(batch.agg_id[late])
                batch = batch.take(~late)
                if len(batch) == 0:
                    return None
        return batch

    def _reject(self, key: Key, count: int) -> None:
        self.state(*key).counters.rejected += count

    def _advance_clock(self, newest: int | None, now_ms: int | None) -> None:
        lateness = self.params.allowed_lateness_ms
        reached = [t - lateness for t in (newest, now_ms) if t is not None]
        if reached:
            self.clock_ms = max(reached) if self.clock_ms is None else max(self.clock_ms, *reached)

    # ------------------------------------------------------------------------------------------
    # evaluation: segments of points at once
    # ------------------------------------------------------------------------------------------
    def _segment_limit(self) -> int:
        keys = set(self.states) | set(self._inputs.trades)
        limits = []
        for _, symbol in keys:
            if symbol not in self._limits:
                params = self.states[(_, symbol)].params if (_, symbol) in self.states else self._state_params(symbol)
                self._limits[symbol] = SymbolState.segment_limit_ms(params, self._cvd_windows, self._slope_windows)
            limits.append(self._limits[symbol])
        return min(limits) if limits else 0

    def _run(self, points: np.ndarray, out: EngineOutput) -> None:
        """Every evaluation point, a segment at a time.

        A segment is a run of points no longer than the rings allow (``SymbolState.segment_limit_ms``)
        whose trades are all clean (consecutive ids, in time order, valid); its trades and other
        inputs are applied at once and every point of it is read, scored and decided with array
        operations, with the same result as one point at a time (the rules are in
        ``_evaluate_segment``). A segment ends at the last point before a trade with anything unusual
        (a gap, a duplicate, a bad price); the point that applies that trade runs alone, so the
        state's own bookkeeping decides what counts, as it always did.
        """
        limit = self._segment_limit()
        table = FeatureTable()
        i, n = 0, len(points)
        while i < n:
            reached = self.revisions.reach(int(points[i]))  # switches due by this point are in force from it on
            start_candidate_books(reached, self.books)
            j = max(int(np.searchsorted(points, points[i] + limit, side="right")), i + 1)
            if j - i > 1:
                # stop before the first trade the clean path would not take (its point runs alone)
                unclean = self._first_unclean_before(int(points[j - 1]))
                if unclean is not None:
                    j = max(int(np.searchsorted(points, unclean, side="right")), i + 1)
            switch = self.revisions.next_switch()
            if switch is not None:  # a segment ends before a switch: one revision per evaluation
                j = max(min(j, int(np.searchsorted(points, switch, side="left"))), i + 1)
            self._evaluate_segment(points[i:j], out, table)
            i = j
        out.add_table(table)

    def _first_unclean_before(self, end: int) -> int | None:
        """Time of the earliest pending trade before ``end`` that its state would not take on the
        clean path (a gap, a duplicate, a bad value), or None."""
        first: int | None = None
        for key, batch in self._inputs.trades.items():
            cut = int(np.searchsorted(batch.time_ms, end, side="left"))
            if not cut:
                continue
            good = self.state(*key).clean_prefix(batch.take(slice(0, cut)))
            if good < cut:
                t = int(batch.time_ms[good])
                first = t if first is None else min(first, t)
        return first

    def _evaluate_segment(self, segment: np.ndarray, out: EngineOutput, table: FeatureTable) -> None:
        """Evaluate the points of ``segment`` (ascending); output as if one point at a time.

        One point at a time, the engine would at each point ``p``: apply every input before ``p``,
        then for each symbol with new accepted trades (and, on the 15-s grid, each symbol that ever
        traded) close what ended by ``p`` (``advance_to``) and read, score and decide. Here, per
        symbol: the segment's other inputs are applied with a timeline of what each point saw; its
        trades are applied at once with a log (ATR updates with their bars' close times, the P95/P99
        of each minute, the trades themselves); the symbol is advanced to its last due point; then the
        due points are read from buckets that end before each point (later trades lie in later
        buckets) and from the logs. A 1-minute bar is emitted at the first due point at or after its
        close if its closing trade comes at or after that point (there ``advance_to`` closed it),
        otherwise at the first point after its closing trade; outputs are ordered by point, then
        symbol (bars closed by trades before those closed by ``advance_to``), then strategy.
        """
        end = int(segment[-1])
        records = _SegmentRecords()
        for key in sorted(self._inputs.keys() | set(self.states)):
            timeline = self._apply_events(key, end)
            batch = self._inputs.take_trades(key, end)
            if key not in self.states and batch is None:
                continue
            state = self.state(*key)
            due_points, log, closed = self._apply_segment(state, batch, segment)
            advanced = state.advance_segment(int(due_points[-1]), log) if len(due_points) else []
            records.place_bars(key, closed, advanced, batch, segment, due_points)
            if len(due_points):
                self._score(key, state, due_points, log, timeline, table, records)
        records.flush(out)
        self.sealed_ms = end

    def _apply_segment(
        self, state: SymbolState, batch: TradeBatch | None, segment: np.ndarray
    ) -> tuple[np.ndarray, SegmentLog, list[Bar]]:
        """Apply the segment's trades to ``state``; return its due points (those with new accepted
        trades, and on the 15-s grid those after it ever traded), the log and the bars the trades closed."""
        single = len(segment) == 1
        periodic = segment % self.params.eval_interval_ms == 0
        accepted_before = state.counters.accepted
        due, ever = _trade_marks(batch, segment, state.last_trade_ms is not None)
        if single and batch is not None:
            wanted = segment  # a single point: its minute is wanted whether or not it is due
        else:
            wanted = segment[due | (periodic & ever)]
        log, closed = state.apply_segment(batch, wanted)
        if single:  # the state's own count of accepted trades decides (gaps, duplicates...)
            due = np.array([state.counters.accepted > accepted_before])
            ever = np.array([state.last_trade_ms is not None])
        return segment[due | (periodic & ever)], log, closed

    def _score(
        self,
        key: Key,
        state: SymbolState,
        due_points: np.ndarray,
        log: SegmentLog,
        timeline: MarketTimeline | None,
        table: FeatureTable,
        records: _SegmentRecords,
    ) -> None:
        """Read the symbol at its due points, then score and decide them for every strategy that applies."""
        in_force = (leg for cfg in self.strategies for leg in self.revisions.legs(cfg.name, key[1]))
        legs = [(rank, leg) for rank, leg in enumerate(in_force) if leg.config.applies_to(key[1])]
        if not legs:
            return
        frame = state.snapshot_frame(due_points, self._cvd_windows, self._slope_windows, log, timeline)
        for (rank, leg), scores in zip(legs, score_frames(frame, [leg.config for _, leg in legs])):
            cfg = leg.config  # a canary by size's two revisions are two legs (core.engine_rollout)
            if leg.book not in self.books:  # a candidate's (start_candidate_books), in a state from before
                self.books[leg.book] = CooldownBook.from_dict(self.books[cfg.name].to_dict())
            decided = decide_frame(frame, scores, cfg, self.books[leg.book])
            table.add(FeatureBlock(frame, cfg, scores, decided.block, decided.p_win), key, rank)
            for row, plan in decided.plans.items():
                evaluation = replace(evaluation_at(frame, scores, cfg, row), is_flip=decided.flips[row])
                record = signal_record(evaluation, plan, decided.p_win_at(row), decided.size_mult[row])
                records.add_signal(int(frame.time_ms[row]), key, rank, leg.signal(record))

    def _apply_events(self, key: Key, end: int) -> MarketTimeline | None:
        """Apply the key's pending books, marks, liquidations and indicators before ``end``."""
        books, marks, others = self._inputs.take_events(key, end)
        if books is None and marks is None and not others:
            return None
        return self.state(*key).apply_market_segment(books, marks, others)

    # ------------------------------------------------------------------------------------------
    # plain-data form
    # ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly where this engine stopped (plain data)."""
        return {
            "params": asdict(self.params),
            "strategies": {cfg.name: cfg.config_hash for cfg in self.strategies},
            "clock_ms": self.clock_ms,
            "sealed_ms": self.sealed_ms,
            "applied_input_ms": self.applied_input_ms,
            "states": [state.to_dict() for _, state in sorted(self.states.items())],
            "books": {name: book.to_dict() for name, book in sorted(self.books.items())},
            "pending_trades": self._inputs.trades_to_dict(),
            "pending_events": self._inputs.events_to_dict(lambda symbol: self.book_params(symbol) is not None),
            "revisions": self.revisions.to_dict(),
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        strategies: Sequence[StrategyConfig],
        state_params: Callable[[str], StateParams] = StateParams.for_symbol,
    ) -> Engine:
        """Resume from ``to_dict``. Cooldown books are matched by strategy name, so an edited
        strategy (new config_hash) keeps its cooldown and does not re-fire after a deploy."""
        engine = cls(strategies, EngineParams(**data["params"]), state_params)
        engine.clock_ms = data["clock_ms"]
        engine.sealed_ms = data["sealed_ms"]
        engine.applied_input_ms = data.get("applied_input_ms")  # absent in snapshots before it existed
        for state_data in data["states"]:
            state = SymbolState.from_dict(state_data)
            state.use_detectors(
                engine.detector_params(state.symbol),  # the strategies' section may have changed
                engine.flow_params(state.symbol),
                engine.book_params(state.symbol),
            )
            engine.states[(state.exchange, state.symbol)] = state
        for name, book in data["books"].items():
            if name in engine.books or name.removesuffix(CANARY_LEG_SUFFIX) in engine.books:  # a canary's own
                engine.books[name] = CooldownBook.from_dict(book)
        engine.revisions.restore(data.get("revisions"))  # absent in snapshots before hot switches
        engine._inputs.restore_trades(data["pending_trades"])
        events = [event_from_dict(e) for e in data["pending_events"]]
        engine._inputs.add_events(events, *PLAUSIBLE_TIME_MS, engine.params.event_clock_delay_ms, engine._reject)
        return engine
