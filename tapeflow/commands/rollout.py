"""Strategy revisions and rollouts (`tapeflow.rollout`), on the `strategy` group:

- `strategy revisions [NAME]`: the registered revisions (monotonic per name, one per config hash);
- `strategy promote FILE [--canary PCT | --symbols A,B] [--canary-size PCT]`: register the file and make
  it active, or run it as a canary on a share (or a list) of the symbols beside the active revision, or
  at a share of the size beside it on every symbol (both revisions evaluate each);
- `strategy promote NAME --finish`: the canary becomes active everywhere;
- `strategy rollback NAME --reason TEXT`: drop the canary, or put the previous active revision back.

Each step is a row of strategy_rollouts_audit (who: the OS user or --as; why: --reason) and a new state
on config.rollouts, which an engine worker with ``follow_rollouts`` applies without a restart. A candidate that changes what shapes the
engine's per-symbol state (windows, detectors) is refused: the engine must restart on it. A candidate
(or, at --finish, a canary) whose file names a confidence model (``model: {file, sha256}``) is refused
while that model is unhealthy over the strategy's last labelled trades (``backtest.research.model_health``:
AUC below --model-min-auc or Brier above --model-max-brier, once --model-min-samples trades are
labelled); the guardrail controller rolls back a running canary on the same verdict."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapeflow.commands._common import echo, fail, state
from tapeflow.commands.strategy import strategy_app

if TYPE_CHECKING:
    import psycopg

    from backtest.research.model_health import HealthThresholds
    from stream_apps.core.rollout import Guardrails, Revision, RolloutState
    from stream_apps.core.strategy import StrategyConfig
    from tapeflow.rollout import Publisher

DatabaseOption = Annotated[
    str | None,
    typer.Option("--database", help="PostgreSQL conninfo or URL (default: TAPEFLOW_DATABASE_URL, else the stack's)."),
]
ActorOption = Annotated[str | None, typer.Option("--as", help="Who takes the step (default: the OS user).")]
MinAucOption = Annotated[
    float, typer.Option("--model-min-auc", help="Model health: lowest rolling AUC over the last labelled trades.")
]
MaxBrierOption = Annotated[float, typer.Option("--model-max-brier", help="Model health: highest rolling Brier score.")]
MinSamplesOption = Annotated[
    int, typer.Option("--model-min-samples", help="Model health: labelled trades before a model is judged.")
]


def _model_limits(min_auc: float, max_brier: float, min_samples: int) -> HealthThresholds:
    from backtest.research.model_health import HealthThresholds, ModelHealthError

    try:
        return HealthThresholds(min_auc=min_auc, max_brier=max_brier, min_samples=min_samples)
    except ModelHealthError as exc:
        raise fail(str(exc), 2) from None


def _model_gate(
    conn: psycopg.Connection,
    name: str,
    content: str,
    limits: HealthThresholds,
    rev: int | None,
) -> None:
    """Refuse (RolloutError) a revision whose confidence model is unhealthy; say the verdict otherwise."""
    from backtest.research.model_health import ModelHealthError
    from backtest.research.model_health_job import gate
    from tapeflow.rollout import RolloutError

    try:
        judged = gate(conn, name, content, limits, role="candidate", config_rev=rev)
    except ModelHealthError as exc:
        raise RolloutError(f"{name}: its confidence model cannot be checked: {exc}") from None
    if judged is None:
        return
    if judged.health.unhealthy:
        raise RolloutError(
            f"{name}: not promoted, its confidence model is unhealthy: {judged.health.reason}"
            " (tapeflow model evaluate shows it on any window)"
        )
    echo(f"{name}: confidence model {judged.model_sha256[:12]} {judged.health.status}: {judged.health.reason}")


def _conninfo(database: str | None) -> str:
    if database:
        return database
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError

    try:
        return resolve_database(state.settings(), state.paths()).writer
    except TapeflowError as exc:
        raise fail(f"{exc} (or pass --database)") from None


def _connect(database: str | None) -> psycopg.Connection:
    import psycopg

    try:
        return psycopg.connect(_conninfo(database), connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise fail(f"cannot reach the database: {first}") from None


def _actor(given: str | None) -> str:
    if given is not None:
        if not given.strip():
            raise fail("--as: an empty name", 2)
        return given.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def _running() -> dict[str, Path]:
    """The strategies the engine runs, by name: TAPEFLOW_STRATEGIES, else the shipped ones."""
    from stream_apps.core.strategy import default_strategy_dir, load_strategy, strategy_path

    refs = [strategy_path(str(p)) for p in state.settings().strategies]
    if not refs:
        refs = sorted(default_strategy_dir().glob("*.yaml"))
    return {load_strategy(path).name: path for path in refs}


class _Control:
    """The broker side of a step: the latest states and a publisher."""

    def __init__(self) -> None:
        from schemas.catalogue import topic as topic_spec
        from schemas.registry import registry_from_url
        from schemas.serde import AvroSerde
        from tapeflow.commands._common import bootstrap_address
        from tapeflow.rollout import CONTROL_TOPIC, Publisher
        from tapeflow_runtime.kafka_client import ensure_topics

        settings = state.settings()
        self.bootstrap = bootstrap_address()
        self.prefix = settings.topic_prefix
        self.serde = AvroSerde(registry_from_url(settings.schema_registry_url))
        ensure_topics(self.bootstrap, prefix=self.prefix, specs=[topic_spec(CONTROL_TOPIC)])
        self.publisher: Publisher = Publisher(self.bootstrap, self.prefix, self.serde)

    def states(self) -> dict[str, RolloutState]:
        from tapeflow.rollout import read_states

        return read_states(self.bootstrap, self.prefix, self.serde)


def _run(step: Any) -> None:
    """Run ``step``; a RolloutError, a strategy error or a broker error is one line."""
    import psycopg

    from tapeflow_runtime.errors import TapeflowError

    try:
        step()
    except TapeflowError as exc:
        raise fail(_first_line(exc)) from None
    except psycopg.Error as exc:
        raise fail(f"database: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@strategy_app.command("revisions")
def strategy_revisions(
    name: Annotated[str | None, typer.Argument(help="Only this strategy's revisions.")] = None,
    database: DatabaseOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The registered revisions of each strategy (or of NAME): revision, config hash, when and by whom."""
    from tapeflow.rollout import revisions

    with _connect(database) as conn:
        rows = revisions(conn, name)
    if as_json:
        keep = ("name", "rev", "config_hash", "created_at_ms", "created_by", "note")
        echo(json.dumps([{k: getattr(r, k) for k in keep} for r in rows]))
        return
    if not rows:
        echo(f"no registered revisions{f' of {name}' if name else ''}")
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.created_at_ms / 1000))
        echo(f"{r.name:<16} rev {r.rev:<4} {r.config_hash[:12]}  {when}  {r.created_by}  {r.note}".rstrip())


def _candidate(path: Path) -> tuple[StrategyConfig, str]:
    from stream_apps.core.strategy import StrategyConfigError, load_strategy

    if not path.is_file():
        raise fail(f"{path}: no such file (give the candidate's strategy file; --finish takes a name)", 2)
    try:
        cfg = load_strategy(path)
    except StrategyConfigError as exc:
        raise fail(str(exc).strip().splitlines()[0], 2) from None
    return cfg, path.read_text(encoding="utf-8")


def _canary_size(cfg: StrategyConfig, canary_size: str | None, symbols: str | None) -> float | None:
    """The candidate's share of the size in a canary by size (``--canary-size``), or None. It evaluates
    beside the active revision on every symbol (or those of --symbols)."""
    from stream_apps.core.rollout import parse_share

    if canary_size is None:
        return None
    try:
        return parse_share(canary_size, "--canary-size", whole=False)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def _canary_scope(
    cfg: StrategyConfig, canary: str | None, symbols: str | None, by_size: bool = False
) -> list[str] | None:
    from stream_apps.core.rollout import canary_symbols, parse_share

    if canary is not None and symbols is not None:
        raise fail("--canary and --symbols: give one (a share of the symbols, or the symbols)", 2)
    if by_size and canary is not None:
        raise fail("--canary and --canary-size: give one (a share of the symbols, or of the size)", 2)
    if by_size and symbols is None:
        return sorted(cfg.symbols or state.settings().symbols)  # every symbol, both revisions
    if symbols is not None:
        chosen = [s.strip().upper() for s in symbols.split(",") if s.strip()]
        if not chosen:
            raise fail("--symbols: no symbol given", 2)
        universe = cfg.symbols or list(state.settings().symbols)
        outside = [s for s in chosen if universe and s not in universe]
        if outside:
            raise fail(f"--symbols: {', '.join(outside)} not among the strategy's symbols ({', '.join(universe)})", 2)
        return chosen
    if canary is None:
        return None
    try:
        share = parse_share(canary)
        return list(canary_symbols(cfg.symbols or state.settings().symbols, share, cfg.config_hash))
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def _check_hot_switch(current: Revision, cfg: StrategyConfig) -> None:
    from stream_apps.core.rollout import restart_reason

    why = restart_reason(current.config(f"{cfg.name} rev {current.rev}"), cfg)
    if why is not None:
        raise fail(f"{cfg.name}: cannot switch a running engine to this file, a restart is needed: {why}", 2)


def _promote_file(
    path: Path,
    canary: str | None,
    symbols: str | None,
    reason: str,
    actor: str,
    database: str | None,
    guards: Guardrails | None = None,
    limits: HealthThresholds | None = None,
    canary_size: str | None = None,
) -> None:
    from backtest.research.model_health import HealthThresholds
    from stream_apps.core.strategy import load_strategy
    from tapeflow.rollout import apply_step, plan_promote, register

    cfg, content = _candidate(path)
    running = _running()
    if cfg.name not in running:
        raise fail(f"{cfg.name} is not a running strategy (running: {', '.join(sorted(running))})", 2)
    size_pct = _canary_size(cfg, canary_size, symbols)
    scope = _canary_scope(cfg, canary, symbols, size_pct is not None)
    control = _Control()
    now_ms = int(time.time() * 1000)
    with _connect(database) as conn:
        _model_gate(conn, cfg.name, content, limits or HealthThresholds(), None)
        current = control.states().get(cfg.name)
        baseline = None
        if current is None:  # the first step: the file the engine started on is the active revision
            base_path = running[cfg.name]
            base_cfg = load_strategy(base_path)
            baseline = register(conn, base_cfg, base_path.read_text(encoding="utf-8"), actor, now_ms, "running file")
        active = current.active if current is not None else baseline.revision()  # type: ignore[union-attr]
        _check_hot_switch(active, cfg)
        candidate = register(conn, cfg, content, actor, now_ms, reason)
        after = plan_promote(
            current,
            active,
            candidate.revision(),
            cfg.name,
            scope,
            actor,
            reason,
            now_ms,
            guards,
            size_pct,
        )
        apply_step(conn, control.publisher, current, after, active)
    if after.canary is not None and after.canary.size_pct is not None:
        echo(
            f"{cfg.name}: rev {candidate.rev} runs as a canary at {after.canary.size_pct:g}% of the size beside rev"
            f" {after.active.rev} at {100 - after.canary.size_pct:g}% on {', '.join(after.canary.symbols)}"
            f" (state {after.seq}); finish with `tapeflow strategy promote {cfg.name} --finish`"
        )
    elif after.canary is not None:
        echo(
            f"{cfg.name}: rev {candidate.rev} runs as a canary on {', '.join(after.canary.symbols)} beside rev"
            f" {after.active.rev} (state {after.seq}); finish with `tapeflow strategy promote {cfg.name} --finish`"
        )
    else:
        echo(f"{cfg.name}: rev {candidate.rev} is active (was rev {active.rev}; state {after.seq})")


def _finish(name: str, reason: str, actor: str, database: str | None, limits: HealthThresholds | None = None) -> None:
    from backtest.research.model_health import HealthThresholds
    from tapeflow.rollout import apply_step, plan_finish

    control = _Control()
    with _connect(database) as conn:
        current = control.states().get(name)
        if current is not None and current.canary is not None:
            _model_gate(conn, name, current.canary.content, limits or HealthThresholds(), current.canary.rev)
        after = plan_finish(current, name, actor, reason, int(time.time() * 1000))
        apply_step(conn, control.publisher, current, after)
    echo(f"{name}: rev {after.active.rev} is active on every symbol (state {after.seq})")


@strategy_app.command("promote")
def strategy_promote(
    target: Annotated[str, typer.Argument(help="The candidate's strategy file; with --finish, the strategy's name.")],
    canary: Annotated[
        str | None, typer.Option("--canary", help="Run the candidate on this share of the symbols, e.g. 10%.")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Run the candidate as a canary on these symbols (A,B).")
    ] = None,
    canary_size: Annotated[
        str | None,
        typer.Option(
            "--canary-size",
            help="Run the candidate beside the active revision on every symbol (or --symbols) at this share of"
            " the size, e.g. 10%; the active revision trades the rest.",
        ),
    ] = None,
    finish: Annotated[
        bool, typer.Option("--finish", help="Make the running canary of TARGET active everywhere.")
    ] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit table).")] = "",
    actor: ActorOption = None,
    database: DatabaseOption = None,
    max_drawdown_r: Annotated[
        float, typer.Option("--max-drawdown-r", help="Canary guard: largest fall of its cumulative net R, in R.")
    ] = 3.0,
    min_net_r: Annotated[
        float, typer.Option("--min-net-r", help="Canary guard: lowest net R over its last --window-trades trades.")
    ] = -3.0,
    window_trades: Annotated[int, typer.Option("--window-trades", help="Canary guard: the rolling window.")] = 20,
    min_win_rate: Annotated[
        float, typer.Option("--min-win-rate", help="Canary guard: lowest share of winners (0..1) from --min-trades on.")
    ] = 0.25,
    min_trades: Annotated[
        int, typer.Option("--min-trades", help="Canary guard: trades before the win rate counts.")
    ] = 10,
    model_min_auc: MinAucOption = 0.55,
    model_max_brier: MaxBrierOption = 0.25,
    model_min_samples: MinSamplesOption = 30,
) -> None:
    """Register a strategy file and make it the active revision, or run it as a canary beside the active
    revision (--canary 10% or --symbols A,B: a share of the symbols; --canary-size 10%: a share of the
    size on every symbol, both revisions evaluating it); with --finish, make the canary of strategy
    TARGET active. The engine follows config.rollouts: each symbol switches at its next input, without
    a restart."""
    who = _actor(actor)
    limits = _model_limits(model_min_auc, model_max_brier, model_min_samples)
    if finish:
        if canary is not None or symbols is not None or canary_size is not None:
            raise fail("--finish takes no --canary, --canary-size or --symbols", 2)
        _run(lambda: _finish(target, reason, who, database, limits))
        return
    from stream_apps.core.rollout import Guardrails

    try:
        guards = Guardrails(max_drawdown_r, min_net_r, window_trades, min_win_rate, min_trades)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    _run(lambda: _promote_file(Path(target), canary, symbols, reason, who, database, guards, limits, canary_size))


def _rollback(name: str, reason: str, actor: str, database: str | None) -> RolloutState:
    from tapeflow.rollout import apply_step, plan_rollback, previous_active

    control = _Control()
    with _connect(database) as conn:
        current = control.states().get(name)
        previous = None
        if current is not None and current.canary is None:
            found = previous_active(conn, name, current.active.rev)
            previous = None if found is None else found.revision()
        after = plan_rollback(current, name, previous, actor, reason, int(time.time() * 1000))
        apply_step(conn, control.publisher, current, after)
    return after


@strategy_app.command("rollback")
def strategy_rollback(
    name: Annotated[str, typer.Argument(help="The strategy's name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (required; kept in the audit table).")] = "",
    actor: ActorOption = None,
    database: DatabaseOption = None,
) -> None:
    """Drop the strategy's canary (its symbols go back to the active revision), or without a canary put the
    previously active revision back."""
    if not reason.strip():
        raise fail("rollback needs --reason TEXT (kept in the audit table)", 2)
    who = _actor(actor)
    done: list[RolloutState] = []
    _run(lambda: done.append(_rollback(name, reason.strip(), who, database)))
    echo(f"{name}: rolled back, rev {done[0].active.rev} is active on every symbol (state {done[0].seq})")


@strategy_app.command("guard")
def strategy_guard(
    once: Annotated[
        bool, typer.Option("--once", help="One pass, then exit (default: a pass every 10 minutes).")
    ] = False,
    database: DatabaseOption = None,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", min=0, max=65535, help="Port of /metrics and /health (0 = a free one).")
    ] = 0,
    model_min_auc: MinAucOption = 0.55,
    model_max_brier: MaxBrierOption = 0.25,
    model_min_samples: MinSamplesOption = 30,
) -> None:
    """The canary guardrail controller: each running canary's closed trades against its guardrails (max
    drawdown, rolling net R, win rate) and its confidence model's health (AUC, Brier); a breach rolls the canary back with an auto_rollback audit row and
    an alert in the log. The stack runs it as the `guardrail` service."""
    import asyncio

    from backtest.research.model_health import ModelCache
    from tapeflow.rollout_guard import GuardResult, GuardService, check_once, serve_guard
    from tapeflow_runtime.logs import configure_logging

    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    conninfo = _conninfo(database)
    limits = _model_limits(model_min_auc, model_max_brier, model_min_samples)
    cache = ModelCache()  # each model file read once however many passes judge it

    def run_pass(now_ms: int) -> GuardResult:
        import psycopg

        from tapeflow.rollout_guard import canary_model_breach

        control = _Control()
        with psycopg.connect(conninfo, connect_timeout=10) as conn:
            return check_once(
                conn,
                control.states(),
                control.publisher,
                now_ms,
                lambda c, s: canary_model_breach(c, s, limits, cache, now_ms),
            )

    if once:
        done: list[GuardResult] = []
        _run(lambda: done.append(run_pass(int(time.time() * 1000))))
        for name, why in done[0].rolled_back.items():
            echo(f"{name}: canary rolled back ({why})")
        echo(f"{len(done[0].checked)} canaries checked, {len(done[0].rolled_back)} rolled back")
        return
    raise typer.Exit(asyncio.run(serve_guard(GuardService(run_pass), settings.metrics_host, metrics_port)))
