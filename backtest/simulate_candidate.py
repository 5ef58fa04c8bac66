"""``tapeflow strategy simulate``: a candidate strategy against the active one, over stored inputs.

One A/B backtest (``BacktestRunner``: the engine core and the executor's paper model, as
``tapeflow backtest``) reads the window once and runs both strategies side by side, each on its own
paper account (``per_strategy``, the backtest's default), so neither's trades change the other's.

Which active strategy the candidate is measured against (``pair``): the active strategy with the
candidate's name; else the only active strategy; else the caller must narrow the active config to
one. The other active strategies are the same in both configs and, with an account each, trade the
same in both, so they are not run: their deltas are zero by construction. A candidate named like its
active strategy runs under another name (``<name>_candidate``), since a run keys accounts and
cooldowns by name; name and version are not read by any decision, so the run is unchanged by it.

Numbers per strategy (``Outcome``), and candidate minus active:

- **signals**: signals the engine emitted;
- **trades**: positions closed in the window (``open_at_end`` apart), **net R** their summed net R
  (``backtest.metrics.summarise``, the number the backtest report shows);
- **skip rate**: the share of signals the executor did not take, i.e. from which no position was
  opened (a position already open on the market, a risk guard, an entry that did not fill);
- **size multipliers above 1**: signals whose risk multiplier (``sizing.tier_multipliers`` of their
  tier, or the engine's ``size_mult`` with a confidence model; ``execution.sizing.signal_multiplier``) exceeds 1.

The window: the last ``days`` of what the source holds, ending at its newest trade of the symbols
(``newest_trade_ms_db``, ``newest_trade_ms_topics``) or at a given end. The sensitivity check of the
candidate (``backtest.sensitivity``) reads the feature frames the engine produced in the same run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from backtest.inputs import Source
from backtest.metrics import summarise
from backtest.model import RunResult
from backtest.runner import BacktestRunner
from backtest.sensitivity import DEFAULT_EPSILON, Sensitivity, SensitivityProbe
from execution.config import ExecutorConfig
from execution.sizing import signal_multiplier
from stream_apps.core.strategy import StrategyConfig, parse_strategy

DAY_MS = 86_400_000
SKIP_RATE = "share of the strategy's signals from which the executor opened no position"
SIZE_UP = "signals whose risk multiplier (sizing.tier_multipliers of their tier) is above 1"


class SimulateError(ValueError):
    """A simulation that cannot run as asked (one line for the user); ``code``: the exit code (2 for
    bad arguments, 1 for nothing to simulate)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Pair:
    """The candidate, the active strategy it is measured against, and the names they run under."""

    active: StrategyConfig
    candidate: StrategyConfig  # as its file has it
    run_candidate: StrategyConfig  # the same rules under a name the run can tell from the active one's
    unchanged: list[str]  # the other active strategies (the same in both configs)


def pair(active: Sequence[StrategyConfig], candidate: StrategyConfig) -> Pair:
    """See the module docstring; ``SimulateError`` when no single active strategy is the counterpart."""
    if not active:
        raise SimulateError("the active config has no strategy")
    same = [a for a in active if a.name == candidate.name]
    if same:
        counterpart = same[0]
    elif len(active) == 1:
        counterpart = active[0]
    else:
        names = ", ".join(a.name for a in active)
        raise SimulateError(
            f"the candidate is named {candidate.name!r} and the active config runs {names}: "
            "name the one it replaces with --active (e.g. --active v53)"
        )
    run_candidate = candidate
    if candidate.name == counterpart.name:
        name = f"{candidate.name[:38]}_candidate"
        run_candidate = parse_strategy({**candidate.model_dump(mode="json"), "name": name}, "candidate")
    return Pair(counterpart, candidate, run_candidate, [a.name for a in active if a is not counterpart])


def window(newest_ms: int | None, days: float, to_ms: int | None) -> tuple[int, int]:
    """``[from, to)``: ``days`` ending at ``to_ms`` or, without it, just after the newest record."""
    if not days > 0:
        raise SimulateError(f"--days must be > 0, got {days:g}")
    if to_ms is None:
        if newest_ms is None:
            raise SimulateError("the source holds no trades of these symbols", 1)
        to_ms = newest_ms + 1
    return to_ms - round(days * DAY_MS), to_ms


def newest_trade_ms_db(conninfo: str, exchange: str, symbols: Sequence[str]) -> int | None:
    """Trade time of the newest stored trade of ``symbols`` (None: none stored). agg_id grows with
    time per (exchange, symbol), so each symbol's newest is its primary key's last entry: one index
    probe per partition, not a scan of the table."""
    newest: int | None = None
    try:
        with psycopg.connect(conninfo) as conn:
            for symbol in symbols:
                row = conn.execute(
                    "SELECT trade_time FROM trades WHERE exchange = %s AND symbol = %s ORDER BY agg_id DESC LIMIT 1",
                    (exchange, symbol),
                ).fetchone()
                if row is not None:
                    ms = round(row[0].timestamp() * 1000)
                    newest = ms if newest is None else max(newest, ms)
    except psycopg.Error as exc:
        raise SimulateError(f"db: {(str(exc).strip() or type(exc).__name__).splitlines()[0]}", 1) from None
    return newest


def newest_trade_ms_topics(
    bootstrap: str, topic_prefix: str, registry_url: str | None, timeout_s: float = 30.0
) -> int | None:
    """Trade time of the last record of each ``md.trades`` partition, the newest of them (None: the
    topic is empty). Records carry the broker's arrival time, which for a replayed or backfilled
    history is not the trade's; the producer publishes each market in time order, so a partition's
    last record holds its newest trade."""
    from confluent_kafka import Consumer, KafkaException

    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow_runtime.kafka_client import consumer_config

    topic = f"{topic_prefix}md.trades"
    serde = AvroSerde(registry_from_url(registry_url))
    consumer = Consumer(consumer_config(bootstrap, group_id=f"tapeflow-simulate-{uuid.uuid4().hex[:8]}"))
    try:
        return _newest_of(consumer, topic, serde, timeout_s)
    except KafkaException as exc:
        raise SimulateError(f"topics: {exc}", 1) from None
    finally:
        consumer.close()


def _newest_of(consumer: Any, topic: str, serde: Any, timeout_s: float) -> int | None:
    """``newest_trade_ms_topics`` on an open consumer."""
    from confluent_kafka import TopicPartition

    from tapeflow_runtime.kafka_client import topic_metadata

    md = topic_metadata(consumer, topic, timeout_s=timeout_s)
    if md is None or md.error is not None:
        raise SimulateError(f"cannot read {topic}: {md.error if md else 'no such topic'}", 1)
    last: list[TopicPartition] = []
    for p in sorted(md.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        if high > low:
            last.append(TopicPartition(topic, p, high - 1))
    if not last:
        return None
    consumer.assign(last)
    return max(int(serde.decode(msg.value())["trade_time"]) for msg in _consume(consumer, len(last), timeout_s))


def _consume(consumer: Any, count: int, timeout_s: float) -> list[Any]:
    import time

    deadline = time.monotonic() + timeout_s
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += [m for m in consumer.consume(count - len(got), 0.2) if m.error() is None]
    if len(got) < count:
        raise SimulateError(f"the newest md.trades records did not arrive within {timeout_s:.0f} s")
    return got


@dataclass(frozen=True)
class Outcome:
    """One strategy's numbers in the run (see the module docstring)."""

    strategy: str
    version: str
    config_hash: str
    signals: int
    taken: int
    trades: int
    open_at_end: int
    skip_rate: float | None  # None without signals
    size_up: int
    size_up_share: float | None
    net_r: float


DELTA_FIELDS = ("signals", "taken", "trades", "open_at_end", "skip_rate", "size_up", "size_up_share", "net_r")


def outcome(cfg: StrategyConfig, run_name: str, runner: BacktestRunner, result: RunResult) -> Outcome:
    """``cfg``'s numbers in a run in which it ran as ``run_name``."""
    signals = [s for s in runner.signals if s["strategy"] == run_name]
    ids = {s["signal_id"] for s in signals}
    opened = {
        e["signal_id"]
        for e in runner.position_events()
        if e["event"] == "opened" and e["strategy"] == run_name and e["signal_id"] in ids
    }
    size_up = sum(1 for s in signals if (signal_multiplier(s) or 1.0) > 1.0)  # what the executor sizes by
    trades = [t for t in result.trades if t.strategy == run_name]
    open_at_end = sum(1 for p in result.params.get("open_positions_at_end", []) if p["strategy"] == run_name)
    n = len(signals)
    return Outcome(
        cfg.name,
        cfg.version,
        cfg.config_hash,
        n,
        len(opened),
        len(trades),
        open_at_end,
        (n - len(opened)) / n if n else None,
        size_up,
        size_up / n if n else None,
        summarise(trades).net_r,
    )


def delta(active: Outcome, candidate: Outcome) -> dict[str, float | None]:
    """Candidate minus active, field by field (None where either is undefined)."""
    out: dict[str, float | None] = {}
    for name in DELTA_FIELDS:
        a, c = getattr(active, name), getattr(candidate, name)
        out[name] = None if a is None or c is None else c - a
    return out


@dataclass(frozen=True)
class Simulation:
    """What ``simulate`` produced."""

    source: str
    symbols: list[str]
    from_ms: int
    to_ms: int
    partial: bool
    trades_processed: int
    evaluations: int
    active: Outcome
    candidate: Outcome
    unchanged: list[str]
    sensitivity: Sensitivity
    notes: list[str]  # where the active config came from, for the reader

    @property
    def delta(self) -> dict[str, float | None]:
        return delta(self.active, self.candidate)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "symbols": self.symbols,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "from": _iso(self.from_ms),
            "to": _iso(self.to_ms),
            "partial": self.partial,
            "trades_processed": self.trades_processed,
            "evaluations": self.evaluations,
            "active": asdict(self.active),
            "candidate": asdict(self.candidate),
            "delta": self.delta,
            "unchanged_active_strategies": self.unchanged,
            "notes": self.notes,
            "definitions": {"skip_rate": SKIP_RATE, "size_up": SIZE_UP},
            "sensitivity": self.sensitivity.as_dict(),
        }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def simulate(
    chosen: Pair,
    source: Source,
    executor_config: ExecutorConfig | None = None,
    *,
    epsilon: float = DEFAULT_EPSILON,
    run: Callable[[BacktestRunner, Source], RunResult] | None = None,
    notes: Sequence[str] = (),
) -> Simulation:
    """Active and candidate over ``source`` in one run, then the candidate's sensitivity. ``run``
    drives the runner (the CLI's progress bar and Ctrl-C); default ``runner.run(source)``."""
    probe = SensitivityProbe(chosen.run_candidate.name, chosen.candidate, epsilon)
    runner = BacktestRunner([chosen.active, chosen.run_candidate], executor_config, on_features=probe)
    result = run(runner, source) if run is not None else runner.run(source)
    return Simulation(
        source=result.source,
        symbols=list(result.symbols),
        from_ms=result.from_ms,
        to_ms=result.to_ms,
        partial=result.partial,
        trades_processed=result.trades_processed,
        evaluations=result.evaluations,
        active=outcome(chosen.active, chosen.active.name, runner, result),
        candidate=outcome(chosen.candidate, chosen.run_candidate.name, runner, result),
        unchanged=chosen.unchanged,
        sensitivity=probe.result(),
        notes=list(notes),
    )


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "share":
        return f"{value:.1%}"
    if kind == "r":
        return f"{value:+.2f}R"
    return f"{value:,.0f}"


def _dcell(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "share":
        return f"{value * 100:+.1f} pp"
    if kind == "r":
        return f"{value:+.2f}R"
    return f"{value:+,.0f}"


ROWS = (
    ("signals", "signals", "n"),
    ("taken by the executor", "taken", "n"),
    ("skip rate", "skip_rate", "share"),
    ("size multiplier > 1", "size_up", "n"),
    ("  share of signals", "size_up_share", "share"),
    ("trades closed", "trades", "n"),
    ("open at the end", "open_at_end", "n"),
    ("net R", "net_r", "r"),
)


def render(sim: Simulation) -> list[str]:
    """The text report, line by line."""
    a, c, d = sim.active, sim.candidate, sim.delta
    status = " (PARTIAL: interrupted)" if sim.partial else ""
    lines = [
        f"simulate{status}: {sim.source}, {','.join(sim.symbols)}, {_iso(sim.from_ms)} to {_iso(sim.to_ms)}",
        f"  {sim.trades_processed:,} trades, {sim.evaluations:,} evaluations; one run, an account per strategy",
        f"  active    {a.strategy} {a.version} ({a.config_hash[:12]})",
        f"  candidate {c.strategy} {c.version} ({c.config_hash[:12]})",
    ]
    lines += [f"  {note}" for note in sim.notes]
    if sim.unchanged:
        lines.append(f"  unchanged in both configs (not run, zero deltas): {', '.join(sim.unchanged)}")
    lines.append(f"  {'':<24}{'active':>12}{'candidate':>12}{'delta':>12}")
    for label, name, kind in ROWS:
        lines.append(
            f"  {label:<24}{_cell(getattr(a, name), kind):>12}{_cell(getattr(c, name), kind):>12}"
            f"{_dcell(d[name], kind):>12}"
        )
    lines.append(f"  skip rate: {SKIP_RATE}; size multiplier: {SIZE_UP}")
    lines += render_sensitivity(sim.sensitivity)
    return lines


def render_sensitivity(s: Sensitivity) -> list[str]:
    lines = [
        f"sensitivity of the candidate (key features x (1 ± {s.epsilon:g})): {s.evaluations:,} evaluations at a "
        f"decision (warm, with a direction), {s.signals:,} of them let through"
    ]
    if s.entry_margin is None:
        lines.append(f"  median margin to the tier thresholds: n/a ({s.margin_note})")
    else:
        lines.append(
            f"  median margin over {s.scored:,} evaluations without a gate veto: {s.entry_margin:.2f} points to "
            f"entry, {s.heavy_margin:.2f} to heavy"
        )
    lines.append(f"  {'feature':<24}{'flips +ε':>10}{'flips -ε':>10}{'either':>10}")
    for f in sorted(s.flips, key=lambda f: -f.either):
        lines.append(f"  {f.feature:<24}{f.up:>10.2%}{f.down:>10.2%}{f.either:>10.2%}")
    return lines
