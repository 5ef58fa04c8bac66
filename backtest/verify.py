"""``tapeflow backtest --verify-against-topics``: backtest what a stack consumed and compare with what it
published.

The run reads ``md.*`` from the broker (``TopicSource``: the very records the stack's engine and
executor consumed) from ``warmup_ms`` (25 h, the engine's priming) before ``--from`` on, runs the
strategies in one shared paper account (as one stack trades them) and compares, for signals
evaluated and positions opened in ``[--from, --to)``:

- signals by id: direction, tier, score, price, risk distance (same inputs, same engine: equal);
- positions by id: entry time and price, stop and targets, exit time, price and reason, and pnl_r
  gross, fees, slippage, funding and net.

Numbers are compared exactly: both sides run the same code on the same inputs. Differences are
listed one per line; the stack's reasons for signals it did not trade are looked up in risk.events
(e.g. ``stale_signal`` when its executor saw the signal too late). Only the stack's signals whose
strategy and config hash are among the strategy files given are compared (the others are counted).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from execution.config import ExecutorConfig
    from stream_apps.core.strategy import StrategyConfig
    from tapeflow_runtime.settings import Settings

WARMUP_MS = 25 * 3_600_000
SIGNAL_FIELDS = ("strategy", "config_hash", "symbol", "eval_time", "direction", "tier", "score", "price",
                 "risk_distance")
OPENED_FIELDS = ("signal_id", "direction", "tier", "entry_price", "qty", "r_usd", "sl_price", "tp1_price",
                 "tp2_price", "event_time")
CLOSED_FIELDS = ("exit_price", "exit_reason", "pnl_r_gross", "pnl_r_net", "fees_r", "slippage_r", "funding_r",
                 "event_time")


@dataclass
class Comparison:
    signals_compared: int = 0
    positions_compared: int = 0
    differences: list[str] = field(default_factory=list)
    not_compared: dict[str, int] = field(default_factory=dict)  # "strategy:config_hash" -> signals

    @property
    def identical(self) -> bool:
        return not self.differences


def _diff(kind: str, ident: str, stack: Mapping[str, Any], backtest: Mapping[str, Any], names: Iterable[str]) -> list[str]:
    out = []
    for name in names:
        a, b = stack.get(name), backtest.get(name)
        if a != b:
            out.append(f"{kind} {ident}: {name} stack={a!r} backtest={b!r}")
    return out


def compare(stack_signals: list[dict], stack_positions: list[dict], backtest_signals: list[dict],
            backtest_positions: list[dict], strategies: Iterable[tuple[str, str]], symbols: Iterable[str],
            from_ms: int, to_ms: int, stack_risk: list[dict] = ()) -> Comparison:
    """Signals evaluated and positions opened in ``[from_ms, to_ms)`` for ``symbols``; see the module doc."""
    known = set(strategies)
    wanted = set(symbols)
    result = Comparison()

    def in_range(sig: Mapping[str, Any]) -> bool:
        return sig["symbol"] in wanted and from_ms <= sig["eval_time"] < to_ms

    stack_sig: dict[str, dict] = {}
    for sig in stack_signals:
        if not in_range(sig):
            continue
        if (sig["strategy"], sig["config_hash"]) not in known:
            key = f"{sig['strategy']}:{sig['config_hash'][:12]}"
            result.not_compared[key] = result.not_compared.get(key, 0) + 1
            continue
        stack_sig[sig["signal_id"]] = sig
    test_sig = {s["signal_id"]: s for s in backtest_signals if in_range(s)}
    for sid in sorted(stack_sig.keys() | test_sig.keys()):
        if sid not in test_sig:
            result.differences.append(f"signal {sid}: only in the stack")
        elif sid not in stack_sig:
            result.differences.append(f"signal {sid}: only in the backtest")
        else:
            result.signals_compared += 1
            result.differences += _diff("signal", sid, stack_sig[sid], test_sig[sid], SIGNAL_FIELDS)

    blocked = {}
    for rec in stack_risk:
        if rec.get("decision") == "block" and str(rec.get("scope", "")).startswith("strategy:"):
            blocked.setdefault((rec["scope"], rec["event_time"]), rec["reason"])

    def lifecycle(events: Iterable[dict], signals: Mapping[str, dict]) -> dict[str, dict[str, dict]]:
        out: dict[str, dict[str, dict]] = {}
        for ev in events:
            if ev.get("mode", "paper") == "paper" and ev["signal_id"] in signals:
                out.setdefault(ev["position_id"], {})[ev["event"]] = ev
        return out

    stack_pos = lifecycle(stack_positions, stack_sig)
    test_pos = lifecycle(backtest_positions, test_sig)
    for pid in sorted(stack_pos.keys() | test_pos.keys()):
        a, b = stack_pos.get(pid), test_pos.get(pid)
        if a is None or b is None:
            where = "backtest" if a is None else "stack"
            events = b if a is None else a
            sid = next(iter(events.values()))["signal_id"]
            sig = test_sig.get(sid) or stack_sig.get(sid) or {}
            scope = f"strategy:{sig.get('strategy')}:{sig.get('exchange')}:{sig.get('symbol')}"
            reason = next((r for (s, t), r in blocked.items() if s == scope and t >= sig.get("eval_time", 0)), None)
            why = f" (the stack's executor: {reason})" if a is None and reason else ""
            result.differences.append(f"position {pid} of {sid}: only in the {where}{why}")
            continue
        result.positions_compared += 1
        if set(a) != set(b):
            result.differences.append(f"position {pid}: events stack={sorted(a)} backtest={sorted(b)}")
        for event, names in (("opened", OPENED_FIELDS), ("tp1", ("event_time", "exit_price", "qty", "sl_price")),
                             ("closed", CLOSED_FIELDS)):
            if event in a and event in b:
                result.differences += _diff(f"position {event}", pid, a[event], b[event], names)
    return result


def verify_command(settings: Settings, strategies: list[StrategyConfig], config: ExecutorConfig, *,
                   symbols: str | None, from_: str | None, to: str | None, out: Path | None, progress: bool) -> int:
    from backtest.cli import CliError, _bootstrap, fmt_ms, parse_time, run_with_progress
    from backtest.result_io import write_outputs
    from backtest.runner import BacktestRunner
    from backtest.sources import SourceError, check_symbols
    from backtest.sources.topics import TopicSource
    from execution.state_reader import StateReadError, read_to_end
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde

    if from_ is None or to is None:
        raise CliError("--verify-against-topics needs --from and --to (the range to compare)")
    from_ms, to_ms = parse_time(from_, "--from"), parse_time(to, "--to", end=True)
    if to_ms <= from_ms:
        raise CliError("--to must be after --from")
    try:
        symbol_list = check_symbols(symbols.split(",") if symbols else list(settings.symbols))
    except SourceError as exc:
        raise CliError(str(exc)) from None
    bootstrap = _bootstrap(settings)
    prefix = settings.topic_prefix
    source = TopicSource(bootstrap, symbol_list, from_ms - WARMUP_MS, to_ms, topic_prefix=prefix,
                         registry_url=settings.schema_registry_url)
    runner = BacktestRunner(strategies, config, account="shared")
    typer.echo(f"verify: md.* of {','.join(symbol_list)} from {fmt_ms(source.from_ms)} (25 h of warm-up) to "
               f"{fmt_ms(to_ms)} UTC, comparing {fmt_ms(from_ms)} to {fmt_ms(to_ms)}", err=True)
    try:
        result = run_with_progress(runner, source, progress)
        stack = read_to_end(bootstrap, {prefix + "signals": None, prefix + "positions": None, prefix + "risk.events": None},
                            AvroSerde(registry_from_url(settings.schema_registry_url)), idle_s=1.0, timeout_s=600)
    except (SourceError, StateReadError) as exc:
        raise CliError(str(exc), 1) from None
    if result.trades_processed == 0:
        raise CliError(f"no md.trades records for {','.join(symbol_list)} in the broker in that range", 1)
    comparison = compare(stack[prefix + "signals"].records, stack[prefix + "positions"].records, runner.signals,
                         runner.position_events(), [(s.name, s.config_hash) for s in strategies], symbol_list,
                         from_ms, to_ms, stack[prefix + "risk.events"].records)
    if out is not None:
        for kind, path in write_outputs(result, out).items():
            typer.echo(f"report {kind}: {path}")
    typer.echo(f"signals compared: {comparison.signals_compared}, positions compared: {comparison.positions_compared}")
    for key, count in sorted(comparison.not_compared.items()):
        typer.echo(f"  not compared: {count} signals of {key} (pass its strategy file to compare them)")
    if comparison.identical:
        typer.echo("identical: the backtest reproduces every signal and position the stack published")
        return 0
    typer.echo(f"{len(comparison.differences)} differences:")
    for line in comparison.differences[:50]:
        typer.echo(f"  {line}")
    if len(comparison.differences) > 50:
        typer.echo(f"  ... and {len(comparison.differences) - 50} more")
    return 1
