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

Outputs are plain dicts shaped like the Avro records: ``bars`` (bars.1m), ``features`` (one
FeatureEvaluation per strategy x symbol x evaluation) and ``signals``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .cooldown import CooldownBook
from .decision import decide
from .events import (
    BookUpdate,
    IndicatorUpdate,
    LiquidationEvent,
    MarketEvent,
    MarkUpdate,
    TradeBatch,
)
from .params import StateParams
from .records import feature_record, signal_record
from .scoring import score
from .strategy import StrategyConfig
from .symbol_state import STANDARD_CVD_WINDOWS_MS, SymbolState

Key = tuple[str, str]
_EVENT_TYPES = {cls.__name__: cls for cls in (BookUpdate, MarkUpdate, LiquidationEvent, IndicatorUpdate)}


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


@dataclass
class EngineOutput:
    bars: list[dict[str, Any]] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, other: EngineOutput) -> None:
        self.bars += other.bars
        self.features += other.features
        self.signals += other.signals


def _sorted(batch: TradeBatch) -> TradeBatch:
    times, ids = batch.time_ms, batch.agg_id
    if len(batch) < 2 or (np.all(times[1:] >= times[:-1]) and np.all((times[1:] > times[:-1]) | (ids[1:] >= ids[:-1]))):
        return batch
    return batch.take(np.lexsort((ids, times)))


class Engine:
    """Drives symbol states and strategies on event time; see the module docstring for the rules."""

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
        self.applied_input_ms: int | None = None  # newest event time among inputs already applied
        self._pending_trades: dict[Key, TradeBatch] = {}
        self._pending_events: list[MarketEvent] = []
        self._event_times: list[int] = []
        self._event_cursor = 0
        self._cvd_windows = tuple(
            sorted(set(STANDARD_CVD_WINDOWS_MS) | {w for c in self.strategies for w in (c.windows.cvd_fast, c.windows.cvd_mid)})
        )
        self._slope_windows = tuple(sorted({1_800_000} | {c.windows.cvd_fast for c in self.strategies}))

    # ------------------------------------------------------------------------------------------
    def state(self, exchange: str, symbol: str) -> SymbolState:
        key = (exchange, symbol)
        if key not in self.states:
            self.states[key] = SymbolState(exchange, symbol, self._state_params(symbol))
        return self.states[key]

    def process(
        self,
        trades: Iterable[TradeBatch] = (),
        events: Iterable[MarketEvent] = (),
        now_ms: int | None = None,
    ) -> EngineOutput:
        """Buffer the input, then run every evaluation point the clock has reached."""
        newest: int | None = None
        lowest, highest = PLAUSIBLE_TIME_MS
        if now_ms is not None:
            highest = min(highest, now_ms + self.params.max_future_ms + 1)
        for batch in trades:
            if len(batch) == 0:
                continue
            key = (batch.exchange, batch.symbol)
            implausible = (batch.time_ms < lowest) | (batch.time_ms >= highest)
            if np.any(implausible):  # a corrupt timestamp must not drag the clock years ahead
                self.state(*key).counters.rejected += int(implausible.sum())
                batch = batch.take(~implausible)
                if len(batch) == 0:
                    continue
            if self.sealed_ms is not None:
                late = batch.time_ms < self.sealed_ms
                if np.any(late):
                    self.state(*key).skip_late(batch.agg_id[late])
                    batch = batch.take(~late)
                    if len(batch) == 0:
                        continue
            pending = self._pending_trades.get(key)
            self._pending_trades[key] = _sorted(batch if pending is None else TradeBatch.concat([pending, batch]))
            batch_newest = int(batch.time_ms.max())
            newest = batch_newest if newest is None else max(newest, batch_newest)
        for event in events:
            if not lowest <= event.time_ms < highest:
                self.state(event.exchange, event.symbol).counters.rejected += 1
                continue
            self._pending_events.append(event)
            reach = event.time_ms - self.params.event_clock_delay_ms
            newest = reach if newest is None else max(newest, reach)

        out = EngineOutput()
        lateness = self.params.allowed_lateness_ms
        reached = [t - lateness for t in (newest, now_ms) if t is not None]
        if reached:
            self.clock_ms = max(reached) if self.clock_ms is None else max(self.clock_ms, *reached)
        if self.clock_ms is None:
            return out
        low = self.sealed_ms
        if low is None:
            # nothing is sealed before the first evaluation: an input that happens to arrive first
            # (a liquidation 13 s into the session) must not make the trades before it late
            starts = [int(b.time_ms[0]) for b in self._pending_trades.values()] + [e.time_ms for e in self._pending_events]
            if not starts:
                return out
            low = min(starts) // 1000 * 1000
        # events in time order (stable: equal times keep arrival order), consumed with a cursor so a
        # long replay call stays linear in the number of events
        self._pending_events.sort(key=lambda e: e.time_ms)
        self._event_times = [e.time_ms for e in self._pending_events]
        self._event_cursor = 0
        for point in self._evaluation_points(low):
            self._evaluate_at(point, out)
        del self._pending_events[: self._event_cursor]
        return out

    def _evaluation_points(self, low: int) -> list[int]:
        assert self.clock_ms is not None
        high = self.clock_ms
        if high <= low:
            return []
        points: set[int] = set()
        for batch in self._pending_trades.values():
            ends = (np.unique(batch.time_ms // 1000) + 1) * 1000
            points.update(int(p) for p in ends[(ends > low) & (ends <= high)])
        interval = self.params.eval_interval_ms
        if self.states or self._pending_trades:
            for start, end in self._active_spans():
                begin, stop = max(low, start), min(high, end)
                if stop > begin:
                    points.update(range((begin // interval + 1) * interval, stop + 1, interval))
        return sorted(points)

    def _active_spans(self) -> list[tuple[int, int]]:
        """Merged ``[t, t + idle_eval_limit_ms]`` over the times of every input at hand (applied
        ones are represented by the newest): where periodic evaluation points may fall."""
        parts = [np.asarray(self._event_times, dtype=np.int64)]
        parts += [batch.time_ms for batch in self._pending_trades.values()]
        if self.applied_input_ms is not None:
            parts.append(np.asarray([self.applied_input_ms], dtype=np.int64))
        times = np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
        limit = self.params.idle_eval_limit_ms
        spans: list[tuple[int, int]] = []
        if len(times) == 0:
            return spans
        breaks = np.flatnonzero(np.diff(times) > limit)  # a silence longer than the limit ends a span
        starts = np.concatenate(([0], breaks + 1))
        ends = np.concatenate((breaks, [len(times) - 1]))
        return [(int(times[a]), int(times[b]) + limit) for a, b in zip(starts, ends)]

    def _evaluate_at(self, point: int, out: EngineOutput) -> None:
        cut = bisect_left(self._event_times, point, lo=self._event_cursor)
        for event in self._pending_events[self._event_cursor : cut]:
            self.state(event.exchange, event.symbol).apply_event(event)
            self._note_applied(event.time_ms)
        self._event_cursor = cut
        due: set[Key] = set()
        for key in sorted(self._pending_trades):
            batch = self._pending_trades[key]
            cut = int(np.searchsorted(batch.time_ms, point, side="left"))
            if cut == 0:
                continue
            state = self.state(*key)
            accepted_before = state.counters.accepted
            self._note_applied(int(batch.time_ms[cut - 1]))
            bars = state.apply_trades(batch.take(slice(0, cut)))
            out.bars.extend(bar.to_record(*key) for bar in bars)
            if state.counters.accepted > accepted_before:
                due.add(key)
            if cut == len(batch):
                del self._pending_trades[key]
            else:
                self._pending_trades[key] = batch.take(slice(cut, None))
        if point % self.params.eval_interval_ms == 0:
            due.update(key for key, state in self.states.items() if state.last_trade_ms is not None)
        for key in sorted(due):
            self._evaluate_symbol(key, point, out)
        self.sealed_ms = point

    def _note_applied(self, time_ms: int) -> None:
        if self.applied_input_ms is None or time_ms > self.applied_input_ms:
            self.applied_input_ms = time_ms

    def _evaluate_symbol(self, key: Key, point: int, out: EngineOutput) -> None:
        state = self.states[key]
        out.bars.extend(bar.to_record(*key) for bar in state.advance_to(point))
        strategies = [cfg for cfg in self.strategies if cfg.applies_to(key[1])]
        if not strategies:
            return
        features = state.snapshot(point, self._cvd_windows, self._slope_windows)
        base_inputs = features.inputs()
        for cfg in strategies:
            decision = decide(score(features, cfg, base_inputs), features, cfg, self.books[cfg.name])
            out.features.append(feature_record(decision.evaluation))
            if decision.plan is not None:
                out.signals.append(signal_record(decision.evaluation, decision.plan))

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
            "pending_trades": [
                {
                    "exchange": b.exchange,
                    "symbol": b.symbol,
                    "agg_id": b.agg_id.tolist(),
                    "time_ms": b.time_ms.tolist(),
                    "price": b.price.tolist(),
                    "qty": b.qty.tolist(),
                    "taker_sell": b.taker_sell.tolist(),
                }
                for _, b in sorted(self._pending_trades.items())
            ],
            "pending_events": [{"type": type(e).__name__, **asdict(e)} for e in self._pending_events],
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
            engine.states[(state.exchange, state.symbol)] = state
        for name, book in data["books"].items():
            if name in engine.books:
                engine.books[name] = CooldownBook.from_dict(book)
        for b in data["pending_trades"]:
            engine._pending_trades[(b["exchange"], b["symbol"])] = TradeBatch.from_arrays(
                b["exchange"], b["symbol"], b["agg_id"], b["time_ms"], b["price"], b["qty"], b["taker_sell"]
            )
        for e in data["pending_events"]:
            fields = {k: v for k, v in e.items() if k != "type"}
            engine._pending_events.append(_EVENT_TYPES[e["type"]](**fields))
        return engine
