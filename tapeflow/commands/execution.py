"""`tapeflow execution`: the execution model's own tools. `retune` reads what routed entries paid
(``review.routing_tca``: slippage against the mid at send, maker fill ratios and times, per notional
bucket and UTC day) and proposes a routing table from it, with the report behind every change."""

from __future__ import annotations

from datetime import timedelta
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
    from_time: str = typer.Option(..., "--from", help="Orders sent from (ISO date or time, UTC, or Unix ms)."),
    to_time: str = typer.Option(..., "--to", help="Orders sent before (exclusive)."),
    strategy: Annotated[
        Path | None,
        typer.Option(
            "--strategy",
            help="Tune this strategy file's routing section (or, without one, the executor config's table), "
            "from its own orders only.",
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
    routing table (each change with the numbers behind it)."""
    import psycopg
    import yaml

    from review.routing_tca import by_bucket_and_day, load_routed, order_stats, propose, report_text
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.instants import EPOCH

    if mode not in ("paper", "testnet", "live"):
        raise fail(f"--mode {mode!r}: paper, testnet or live", 2)
    start, end = parse_time(from_time, "--from"), parse_time(to_time, "--to")
    if end <= start:
        raise fail(f"--to {to_time} is not after --from {from_time}", 2)
    table, name = _table(strategy, executor_config)
    if not database:
        try:
            endpoints = resolve_database(state.settings(), state.paths())
        except TapeflowError as exc:
            raise fail(f"{exc} (or pass --database)") from None
        database = endpoints.readonly or endpoints.owner
    since, until = (start - EPOCH) // _ONE_MS, (end - EPOCH) // _ONE_MS
    try:
        with psycopg.connect(database) as conn:
            orders, fills = load_routed(conn, mode, since, until, name)
    except psycopg.Error as exc:
        raise fail(f"database: {str(exc).strip().splitlines()[0]}") from None
    stats = order_stats(orders, fills)
    daily, totals = by_bucket_and_day(table, stats)
    proposed, changes = propose(table, totals, min_samples=min_samples, target_slip_bps=target_slip_bps)
    worst = sorted((s for s in stats if s.slip_bps is not None), key=lambda s: -(s.slip_bps or 0.0))[:5]
    window = f"{mode} {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, {len(stats)} routed orders"
    text = report_text(table, daily, totals, changes, window, worst)
    proposal = yaml.safe_dump({"routing": proposed.model_dump(mode="json")}, sort_keys=False)
    if report is not None:
        report.write_text(text)
    if out is not None:
        out.write_text(proposal)
    echo(text + ("" if out is not None else "\n" + proposal))
