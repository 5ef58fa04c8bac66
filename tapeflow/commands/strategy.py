"""Strategy files: `strategy list` (the shipped ones), `strategy new` (a new file from one of them),
`strategy check` (validate files and show the hash the engine will stamp on their signals) and
`strategy simulate` (a candidate against the active strategy over stored inputs, `backtest.simulate_candidate`).

A new strategy starts as a copy of a shipped one, not as a blank form: every key then has a value the
engine has run with, and the first backtest of the copy reproduces its base exactly (only the name,
the version and the description differ, and those are part of the hash, so the copy's signals are
told apart from its base's)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tapeflow.commands._common import app, echo, fail, state

if TYPE_CHECKING:
    from backtest.inputs import Source
    from backtest.simulate_candidate import Pair, Simulation
    from stream_apps.core.rollout import RolloutState
    from stream_apps.core.strategy import StrategyConfig

strategy_app = typer.Typer(
    help="Strategy files: list the shipped ones, start a new one, check files.", no_args_is_help=True
)
app.add_typer(strategy_app, name="strategy")

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


def _shipped() -> dict[str, Path]:
    from stream_apps.core.strategy import default_strategy_dir

    return {p.stem: p for p in sorted(default_strategy_dir().glob("*.yaml"))}


def _base_file(base: str) -> Path:
    shipped = _shipped()
    if base in shipped:
        return shipped[base]
    path = Path(base)
    if path.is_file():
        return path
    raise fail(f"--from {base!r}: not a shipped strategy ({', '.join(sorted(shipped))}) nor a file", 2)


def new_strategy_text(base_text: str, base_label: str, base_ref: str, name: str, version: str, description: str) -> str:
    """``base_text`` (a strategy file) as a new strategy: its own header, name, version and description;
    every other line (values and the comments beside them) as the base has it."""
    body = base_text.split("\n")
    while body and (body[0].startswith("#") or not body[0].strip()):
        body.pop(0)  # the base's header speaks of the base
    # the base's name, version and description go, with any continuation lines of a long value
    # (those are indented; nothing nests under these three keys), and the new ones take their place
    mine = [f"name: {name}", f"version: {json.dumps(version)}", f"description: {json.dumps(description)}"]
    kept: list[str] = []
    at, skipping = None, False
    for line in body:
        if re.match(r"^(name|version|description):", line):
            at = len(kept) if at is None else at
            skipping = True
            continue
        if skipping and line[:1].isspace():
            continue
        skipping = False
        kept.append(line)
    at = 0 if at is None else at
    text = "\n".join(kept[:at] + mine + kept[at:])
    day = datetime.now(UTC).date().isoformat()
    header = (
        f"# {name}: started with `tapeflow strategy new` from {base_label} on {day}.\n"
        "# Every key, its unit and its effect: docs/reference/strategy.md (or the schema in any error\n"
        "# message); how the engine scores, gates and exits: docs/concepts/signals.md.\n"
        "# Check it: tapeflow strategy check THIS_FILE; backtest it beside its base:\n"
        f"#   tapeflow backtest --strategy THIS_FILE --strategy {base_ref}\n"
    )
    return header + text.rstrip("\n") + "\n"


@strategy_app.command("list")
def strategy_list() -> None:
    """The shipped strategies: name, version, config hash and what each is."""
    from stream_apps.core.strategy import load_strategy

    for path in _shipped().values():
        cfg = load_strategy(path)
        echo(f"{cfg.name:<16} {cfg.version:<10} {cfg.config_hash[:12]}  {cfg.description}")


@strategy_app.command("new")
def strategy_new(
    name: str = typer.Argument(..., help="The new strategy's name: lower case letters, digits and _, 48 at most."),
    base: str = typer.Option("v53", "--from", help="Start from this shipped strategy (name or file stem) or file."),
    out: Path | None = typer.Option(None, "--out", help="Where to write it. Default: ./NAME.yaml."),
    version: str = typer.Option("0.1.0", "--version", help="Its version label (carried on every signal)."),
    force: bool = typer.Option(False, "--force", help="Overwrite the file if it exists."),
) -> None:
    """Write a new strategy file: a copy of a shipped strategy with its own name, version and
    description, validated before it is written. Edit it, then `strategy check` and `backtest` it."""
    from stream_apps.core.strategy import StrategyConfigError, default_strategy_dir, parse_strategy, read_strategy_file

    if not _NAME.match(name):
        raise fail(f"{name!r} is not a strategy name: lower case letters, digits and _, starting with a letter", 2)
    source = _base_file(base)
    path = out or Path(f"{name}.yaml")
    if path.exists() and not force:
        raise fail(f"{path} exists (--force overwrites it)", 2)
    import yaml

    data = read_strategy_file(source)
    base_cfg = parse_strategy(data, str(source))
    base_text = source.read_text(encoding="utf-8")
    if source.suffix.lower() == ".json":  # written out as YAML, the format a person edits
        base_text = yaml.safe_dump(data, sort_keys=False)
    text = new_strategy_text(
        base_text,
        f"{base_cfg.name} {base_cfg.version}",
        source.stem if source.parent == default_strategy_dir() else str(source.resolve()),
        name,
        version,
        f"from {base_cfg.name} {base_cfg.version}",
    )
    try:
        cfg = parse_strategy(yaml.safe_load(text), str(path))
    except StrategyConfigError as exc:  # a base file this cannot copy faithfully: nothing is written
        raise fail(f"the copy of {source} does not validate: {exc}", 1) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    echo(f"wrote {path}: {cfg.name} {cfg.version} (config hash {cfg.config_hash[:12]}), from {source.name}")
    echo(f"next: tapeflow strategy check {path} && tapeflow backtest --strategy {path} --source synthetic")


@strategy_app.command("check")
def strategy_check(
    files: list[Path] = typer.Argument(..., help="Strategy files (YAML or JSON)."),
) -> None:
    """Validate strategy files as the engine will: each valid file with its name, version and config
    hash; each invalid one with the engine's one-line reason. Exits 2 when any is invalid."""
    from stream_apps.core.strategy import load_strategy
    from tapeflow_runtime.errors import TapeflowError

    bad = 0
    for path in files:
        try:
            cfg = load_strategy(path)
        except TapeflowError as exc:
            bad += 1
            typer.echo(f"error: {exc}", err=True)
            continue
        echo(f"{path}: ok, {cfg.name} {cfg.version}, config hash {cfg.config_hash}")
    if bad:
        raise typer.Exit(2)


@strategy_app.command("simulate")
def strategy_simulate(
    candidate: str = typer.Argument(..., help="The candidate strategy: a file, or a shipped strategy's name."),
    active: list[str] = typer.Option(  # noqa: B008 - typer reads the default; nothing mutates it
        [],
        "--active",
        help="The active config's strategies (files or shipped names; repeat). Default: what the engine runs: "
        "TAPEFLOW_STRATEGIES (else the shipped ones), with the revisions config.rollouts made active.",
    ),
    days: float = typer.Option(..., "--days", help="The window: the last N days (fractions allowed) of the source."),
    to: str | None = typer.Option(
        None,
        "--to",
        help="End of the window, exclusive (UTC date, time or Unix ms). Default: just after the newest stored trade.",
    ),
    source: str = typer.Option("db", "--source", help="db (the sink's tables) | topics (md.* from the broker)."),
    symbols: str | None = typer.Option(None, "--symbols", help="Comma-separated symbols. Default: TAPEFLOW_SYMBOLS."),
    epsilon: float = typer.Option(0.05, "--epsilon", help="Sensitivity: each key feature x (1 ± this)."),
    executor_config: Path | None = typer.Option(
        None, "--executor-config", help="Executor settings (fees, slippage model, risk limits) as for `backtest`."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Replay the last N days of stored inputs through the active strategy and the candidate in one
    A/B backtest: signals, trades, skip rate, size multipliers above 1, net R and their deltas, and how
    many of the candidate's decisions flip when a key feature moves by ±epsilon."""
    from backtest.cli import CliError
    from backtest.simulate_candidate import SimulateError, pair
    from tapeflow_runtime.errors import TapeflowError

    try:
        active_config, note = _active_config(active)
        chosen = pair(active_config, _load(candidate))
        source_ = _simulate_source(source, symbols, days, to, chosen)
        sim = _run_simulation(chosen, source_, executor_config, epsilon, not no_progress, note)
    except (SimulateError, CliError, TapeflowError) as exc:
        raise fail(str(exc).strip().splitlines()[0], getattr(exc, "code", 2)) from None
    if as_json:
        echo(json.dumps(sim.as_dict(), indent=2))
    else:
        from backtest.simulate_candidate import render

        for line in render(sim):
            echo(line)
    if sim.partial:
        raise typer.Exit(130)


def _load(ref: str) -> StrategyConfig:
    from stream_apps.core.strategy import load_strategy

    return load_strategy(ref)


def _active_config(given: list[str]) -> tuple[list[StrategyConfig], str]:
    """``--active``, else what the engine runs: the files of TAPEFLOW_STRATEGIES (else the shipped
    strategies), each replaced by the active revision config.rollouts holds for its name (what the
    engine switched to since it started); with a line saying where the config came from."""
    from stream_apps.core.strategy import default_strategy_dir, load_strategies

    if given:
        return [_load(ref) for ref in given], "active config: --active"
    refs = [str(p) for p in state.settings().strategies]
    files = [_load(ref) for ref in refs] if refs else load_strategies(default_strategy_dir())
    where = "TAPEFLOW_STRATEGIES" if refs else "the shipped strategies (TAPEFLOW_STRATEGIES is empty)"
    states, why_not = _rollout_states()
    if states is None:
        return files, f"active config: {where}; config.rollouts not read ({why_not})"
    out, promoted = [], []
    for cfg in files:
        rollout = states.get(cfg.name)
        if rollout is None or rollout.active.config_hash == cfg.config_hash:
            out.append(cfg)
            continue
        out.append(rollout.active.config(f"config.rollouts {cfg.name} revision {rollout.active.rev}"))
        promoted.append(f"{cfg.name} revision {rollout.active.rev}")
    if promoted:
        return out, f"active config: {where}, with {', '.join(promoted)} from config.rollouts"
    return out, f"active config: {where} (config.rollouts holds no other active revision)"


def _rollout_states() -> tuple[dict[str, RolloutState] | None, str]:
    """The rollout states of config.rollouts (None when no broker answers, with why)."""
    from backtest.cli import CliError, _bootstrap
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow.rollout import RolloutError, read_states

    settings = state.settings()
    serde = AvroSerde(registry_from_url(settings.schema_registry_url))
    try:
        return read_states(_bootstrap(settings), settings.topic_prefix, serde, 5.0), ""
    except (CliError, RolloutError) as exc:
        return None, str(exc).strip().splitlines()[0]


def _simulate_source(source: str, symbols: str | None, days: float, to: str | None, chosen: Pair) -> Source:
    """The source over the window: the last ``days`` before ``--to`` or after the newest stored trade."""
    from backtest.cli import _bootstrap, _database_url, parse_time
    from backtest.simulate_candidate import SimulateError, newest_trade_ms_db, newest_trade_ms_topics, window
    from backtest.sources import SourceError, check_symbols, open_source

    if source not in ("db", "topics"):
        raise SimulateError(f"--source {source!r}: use db or topics (the inputs a stack stores)")
    settings = state.settings()
    try:
        wanted = check_symbols(symbols.split(",") if symbols else list(settings.symbols))
    except SourceError as exc:
        raise SimulateError(str(exc)) from None
    to_ms = parse_time(to, "--to") if to is not None else None
    options: dict[str, Any] = {}
    newest = None
    if source == "db":
        options["database_url"] = _database_url(settings)
        if to_ms is None:
            newest = newest_trade_ms_db(options["database_url"], "binance", wanted)
    else:
        options.update(
            bootstrap=_bootstrap(settings),
            topic_prefix=settings.topic_prefix,
            registry_url=settings.schema_registry_url,
        )
        if to_ms is None:
            newest = newest_trade_ms_topics(options["bootstrap"], settings.topic_prefix, settings.schema_registry_url)
    from_ms, end_ms = window(newest, days, to_ms)
    try:
        return open_source(source, wanted, from_ms, end_ms, **options)
    except SourceError as exc:
        raise SimulateError(str(exc)) from None


def _run_simulation(
    chosen: Pair, source: Source, executor_config: Path | None, epsilon: float, progress: bool, note: str
) -> Simulation:
    from backtest.cli import _load_executor_config, fmt_ms, run_with_progress
    from backtest.simulate_candidate import SimulateError, simulate
    from backtest.sources import SourceError
    from tapeflow_runtime.batch import batch_gc

    if not epsilon > 0 or epsilon >= 1:
        raise SimulateError(f"--epsilon must be between 0 and 1, got {epsilon:g}")
    config = _load_executor_config(executor_config)
    typer.echo(
        f"simulate: {source.name}, {','.join(source.symbols)}, {fmt_ms(source.from_ms)} to {fmt_ms(source.to_ms)} "
        f"UTC, active {chosen.active.name} vs candidate {chosen.candidate.name}",
        err=True,
    )
    try:
        with batch_gc():
            sim = simulate(
                chosen,
                source,
                config,
                epsilon=epsilon,
                run=lambda r, s: run_with_progress(r, s, progress),
                notes=[note],
            )
    except SourceError as exc:  # db and topics read lazily: their failures come during the run
        raise SimulateError(str(exc), 1) from None
    if sim.trades_processed == 0:
        raise SimulateError(
            f"no market data for {','.join(source.symbols)} from {fmt_ms(source.from_ms)} to "
            f"{fmt_ms(source.to_ms)} UTC in {source.name}",
            1,
        )
    return sim
