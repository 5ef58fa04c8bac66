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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

WARMUP_MS = 25 * 3_600_000
SIGNAL_FIELDS = (
    "strategy",
    "config_hash",
    "symbol",
    "eval_time",
    "direction",
    "tier",
    "score",
    "price",
    "risk_distance",
)
OPENED_FIELDS = (
    "signal_id",
    "direction",
    "tier",
    "entry_price",
    "qty",
    "r_usd",
    "sl_price",
    "tp1_price",
    "tp2_price",
    "event_time",
)
CLOSED_FIELDS = (
    "exit_price",
    "exit_reason",
    "pnl_r_gross",
    "pnl_r_net",
    "fees_r",
    "slippage_r",
    "funding_r",
    "event_time",
)


@dataclass
class Comparison:
    signals_compared: int = 0
    positions_compared: int = 0
    differences: list[str] = field(default_factory=list)
    not_compared: dict[str, int] = field(default_factory=dict)  # "strategy:config_hash" -> signals

    @property
    def identical(self) -> bool:
        return not self.differences


def _diff(
    kind: str, ident: str, stack: Mapping[str, Any], backtest: Mapping[str, Any], names: Iterable[str]
) -> list[str]:
    out = []
    for name in names:
        a, b = stack.get(name), backtest.get(name)
        if a != b:
            out.append(f"{kind} {ident}: {name} stack={a!r} backtest={b!r}")
    return out


def compare(
    stack_signals: list[dict],
    stack_positions: list[dict],
    backtest_signals: list[dict],
    backtest_positions: list[dict],
    strategies: Iterable[tuple[str, str]],
    symbols: Iterable[str],
    from_ms: int,
    to_ms: int,
    stack_risk: Iterable[dict] = (),
) -> Comparison:
    """Signals evaluated and positions opened in ``[from_ms, to_ms)`` for ``symbols``; see the module doc."""
    wanted = set(symbols)
    result = Comparison()

    def in_range(sig: Mapping[str, Any]) -> bool:
        return sig["symbol"] in wanted and from_ms <= sig["eval_time"] < to_ms

    stack_sig = _known_signals(result, [s for s in stack_signals if in_range(s)], set(strategies))
    test_sig = {s["signal_id"]: s for s in backtest_signals if in_range(s)}
    _compare_signals(result, stack_sig, test_sig)
    _compare_positions(
        result,
        _lifecycle(stack_positions, stack_sig),
        _lifecycle(backtest_positions, test_sig),
        stack_sig | test_sig,
        _blocked(stack_risk),
    )
    return result


def _known_signals(result: Comparison, signals: list[dict], known: set[tuple[str, str]]) -> dict[str, dict]:
    """The stack's signals by id whose (strategy, config hash) the backtest ran; the others counted in
    ``result.not_compared``."""
    by_id: dict[str, dict] = {}
    for sig in signals:
        if (sig["strategy"], sig["config_hash"]) not in known:
            key = f"{sig['strategy']}:{sig['config_hash'][:12]}"
            result.not_compared[key] = result.not_compared.get(key, 0) + 1
            continue
        by_id[sig["signal_id"]] = sig
    return by_id


def _compare_signals(result: Comparison, stack_sig: Mapping[str, dict], test_sig: Mapping[str, dict]) -> None:
    for sid in sorted(stack_sig.keys() | test_sig.keys()):
        if sid not in test_sig:
            result.differences.append(f"signal {sid}: only in the stack")
        elif sid not in stack_sig:
            result.differences.append(f"signal {sid}: only in the backtest")
        else:
            result.signals_compared += 1
            result.differences += _diff("signal", sid, stack_sig[sid], test_sig[sid], SIGNAL_FIELDS)


def _blocked(stack_risk: Iterable[dict]) -> dict[tuple[str, int], str]:
    """(strategy scope, event time) -> reason of the stack executor's first block there."""
    blocked: dict[tuple[str, int], str] = {}
    for rec in stack_risk:
        if rec.get("decision") == "block" and str(rec.get("scope", "")).startswith("strategy:"):
            blocked.setdefault((rec["scope"], rec["event_time"]), rec["reason"])
    return blocked


def _lifecycle(events: Iterable[dict], signals: Mapping[str, dict]) -> dict[str, dict[str, dict]]:
    """position id -> event -> paper position record, for positions of the given signals."""
    out: dict[str, dict[str, dict]] = {}
    for ev in events:
        if ev.get("mode", "paper") == "paper" and ev["signal_id"] in signals:
            out.setdefault(ev["position_id"], {})[ev["event"]] = ev
    return out


def _compare_positions(
    result: Comparison,
    stack_pos: Mapping[str, dict[str, dict]],
    test_pos: Mapping[str, dict[str, dict]],
    signals: Mapping[str, dict],
    blocked: Mapping[tuple[str, int], str],
) -> None:
    """``signals``: both sides' signals by id (the backtest's where both have one)."""
    for pid in sorted(stack_pos.keys() | test_pos.keys()):
        a, b = stack_pos.get(pid), test_pos.get(pid)
        if a is None or b is None:
            result.differences.append(_only_in_one(pid, a, b, signals, blocked))
            continue
        result.positions_compared += 1
        if set(a) != set(b):
            result.differences.append(f"position {pid}: events stack={sorted(a)} backtest={sorted(b)}")
        for event, names in (
            ("opened", OPENED_FIELDS),
            ("tp1", ("event_time", "exit_price", "qty", "sl_price")),
            ("closed", CLOSED_FIELDS),
        ):
            if event in a and event in b:
                result.differences += _diff(f"position {event}", pid, a[event], b[event], names)


def _only_in_one(
    pid: str,
    a: dict[str, dict] | None,
    b: dict[str, dict] | None,
    signals: Mapping[str, dict],
    blocked: Mapping[tuple[str, int], str],
) -> str:
    """The difference line of a position only one side has; for one only in the backtest, the stack
    executor's block reason at or after its signal, when there is one."""
    where = "backtest" if a is None else "stack"
    events = b if a is None else a
    assert events is not None
    sid = next(iter(events.values()))["signal_id"]
    sig = signals.get(sid) or {}
    scope = f"strategy:{sig.get('strategy')}:{sig.get('exchange')}:{sig.get('symbol')}"
    reason = next((r for (s, t), r in blocked.items() if s == scope and t >= sig.get("eval_time", 0)), None)
    why = f" (the stack's executor: {reason})" if a is None and reason else ""
    return f"position {pid} of {sid}: only in the {where}{why}"
