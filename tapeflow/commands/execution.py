"""`tapeflow execution`: the execution model's own tools. `retune` reads what routed entries paid
(``review.routing_tca``: slippage against the mid at send, maker fill ratios and times, per notional
bucket and UTC day) and proposes a routing table from it, with the report behind every change."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from tapeflow.commands._common import app, echo, fail, parse_time, state

execution_app = typer.Typer(help="Execution: the routing table's TCA and its retuning.", no_args_is_help=True)
app.add_typer(execution_app, name="execution")

_ONE_MS = timedelta(milliseconds=1)


def _table(strategy: Path | None, executor_config: Path | None):  # -> (RoutingTable, strategy name | None)
    from execution.config import ExecutorConfigError, load_executor_config
    from stream_apps.core.strategy import StrategyConfigError, load_strategy

    try:
        if strategy is not None:
            cfg = load_strategy(strategy)
            if cfg.routing is not None:
                return cfg.routing, cfg.name
            return load_executor_config(executor_config).routing, cfg.name
        return load_executor_config(executor_config).routing, None
    except (ExecutorConfigError, StrategyConfigError) as exc:
        raise fail(str(exc), 2) from None


@execution_app.command("retune")
def retune(
    from_time: str | None = typer.Option(
        None, "--from", help="Orders sent from (ISO date or time, UTC, or Unix ms); needed without --backtest."
    ),
    to_time: str | None = typer.Option(None, "--to", help="Orders sent before (exclusive); needed without --backtest."),
    backtest: Annotated[
        Path | None,
        typer.Option(
            "--backtest",
            help="Read a backtest run's routed entries instead of the database: its run directory or its "
            "result.json (the table tuned: the run's own for the strategy, unless --strategy or "
            "--executor-config names another; --from/--to narrow the run's range).",
        ),
    ] = None,
    revision: Annotated[
        int | None,
        typer.Option(
            "--revision", min=0, help="Only the orders of this strategy revision (config_rev), not every revision's."
        ),
    ] = None,
    strategy: Annotated[
        Path | None,
        typer.Option(
            "--strategy",
            help="Tune this strategy file's routing section (or, without one, the executor config's table), "
            "from its own orders only (every revision's: see --revision).",
        ),
    ] = None,
    executor_config: Annotated[
        Path | None, typer.Option("--executor-config", help="The executor config whose routing table is tuned.")
    ] = None,
    mode: str = typer.Option("paper", "--mode", help="Executor mode whose orders are read: paper, testnet or live."),
    database: str | None = typer.Option(
        None, "--database", help="PostgreSQL conninfo or URL (default: TAPEFLOW_DATABASE_URL, else the stack's)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the proposed table here (YAML: a routing section)."),
    report: Path | None = typer.Option(None, "--report", help="Write the report here too (text)."),
    min_samples: int = typer.Option(20, "--min-samples", min=1, help="Orders a bucket needs before it is retuned."),
    target_slip_bps: float = typer.Option(
        2.0, "--target-slip-bps", min=0.0, help="Taker slippage above it: one slice more; below half: one fewer."
    ),
) -> None:
    """Per bucket and day: slippage against the mid at send, maker fill ratio and times; then a proposed
    routing table (each change with the numbers behind it). From the database (paper, testnet, live) or,
    with --backtest, from the routed entries a backtest run kept: the same statistics either way."""
    import yaml

    from review.routing_tca import propose, report_text, routing_tca

    if mode not in ("paper", "testnet", "live"):
        raise fail(f"--mode {mode!r}: paper, testnet or live", 2)
    start = parse_time(from_time, "--from") if from_time is not None else None
    end = parse_time(to_time, "--to") if to_time is not None else None
    if start is not None and end is not None and end <= start:
        raise fail(f"--to {to_time} is not after --from {from_time}", 2)
    if backtest is not None:
        table, orders, fills, source = _from_backtest(backtest, strategy, executor_config, start, end, revision)
    else:
        if start is None or end is None:
            raise fail("--from and --to are needed to read the database (or pass --backtest RUN_DIR)", 2)
        table, name = _table(strategy, executor_config)
        orders, fills = _from_database(database, mode, start, end, name, revision)
        source = f"{mode} {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    tca = routing_tca(table, orders, fills)
    proposed, changes = propose(table, tca.totals, min_samples=min_samples, target_slip_bps=target_slip_bps)
    window = f"{source}{'' if revision is None else f' revision {revision}'}, {len(tca.stats)} routed orders"
    text = report_text(table, tca.daily, tca.totals, changes, window, tca.worst())
    proposal = yaml.safe_dump({"routing": proposed.model_dump(mode="json")}, sort_keys=False)
    if report is not None:
        report.write_text(text)
    if out is not None:
        out.write_text(proposal)
    echo(text + ("" if out is not None else "\n" + proposal))


def _from_database(
    database: str | None, mode: str, start: datetime, end: datetime, name: str | None, revision: int | None
):
    """The routed orders and fills sent in [start, end) from the ``orders`` and ``fills`` tables."""
    import psycopg

    from review.routing_tca import load_routed
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.instants import EPOCH

    if not database:
        try:
            endpoints = resolve_database(state.settings(), state.paths())
        except TapeflowError as exc:
            raise fail(f"{exc} (or pass --database)") from None
        database = endpoints.readonly or endpoints.owner
    since, until = (start - EPOCH) // _ONE_MS, (end - EPOCH) // _ONE_MS
    try:
        with psycopg.connect(database) as conn:
            return load_routed(conn, mode, since, until, name, revision)
    except psycopg.Error as exc:
        raise fail(f"database: {str(exc).strip().splitlines()[0]}") from None


def _from_backtest(
    path: Path,
    strategy: Path | None,
    executor_config: Path | None,
    start: datetime | None,
    end: datetime | None,
    revision: int | None,
):
    """(table, orders, fills, description) of a backtest run's kept routed entries (backtest.routed_orders);
    a path that is not a run, or a run without routed entries, exits with one line."""
    from backtest.result_io import RESULT_FILE, read_result_json
    from backtest.routed_orders import of_strategy, routed, strategy_table
    from tapeflow_runtime.instants import EPOCH

    file = path / RESULT_FILE if path.is_dir() else path
    try:
        result = read_result_json(file)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise fail(
            f"--backtest {path}: not a backtest run (no readable {RESULT_FILE}: {type(exc).__name__})", 2
        ) from None
    names = [s.name for s in result.strategies]
    if strategy is not None or executor_config is not None:
        table, name = _table(strategy, executor_config)
    elif len(names) == 1:
        name = names[0]
        table = strategy_table(result, name)
    else:
        raise fail(f"--backtest {path}: the run has strategies {', '.join(names)}: pass --strategy FILE", 2)
    orders, fills = routed(result.routed_orders)
    if name is not None:
        orders = of_strategy(orders, name)
    if start is not None:
        orders = [o for o in orders if o.sent_time >= (start - EPOCH) // _ONE_MS]
    if end is not None:
        orders = [o for o in orders if o.sent_time < (end - EPOCH) // _ONE_MS]
    if revision is not None:
        orders = [o for o in orders if o.config_rev == revision]
    if not orders:
        who = (f" of {name}" if name else "") + ("" if revision is None else f" revision {revision}")
        raise fail(f"--backtest {path}: no routed entry orders{who} in the run (entries taker or maker_first?)")
    return table, orders, fills, f"backtest {result.run_id} ({result.source})"
