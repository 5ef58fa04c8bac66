"""`tapeflow labels`: the outcome labels of signals and closed trades (``review.labels``).

`backfill` recomputes a window into ``outcome_labels`` (the running stack writes new ones hourly with
`serve`; `run` is one such pass, for cron), `show` prints the labels of one signal or position."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapeflow.commands._common import (
    MetricsPortOption,
    NoProgressOption,
    app,
    bootstrap_address,
    echo,
    fail,
    parse_time,
    state,
)

if TYPE_CHECKING:
    from execution.config import ExecutorConfig
    from review.labels import LabelParams

_ONE_MS = timedelta(milliseconds=1)

labels_app = typer.Typer(
    help="Outcome labels: net P&L and ROI of every signal and trade at 12, 24 and 36 h (outcome_labels).",
    no_args_is_help=True,
)
app.add_typer(labels_app, name="labels")

DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="PostgreSQL conninfo or URL (default: TAPEFLOW_DATABASE_URL, else the running stack's database).",
    ),
]
ModeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mode", help="Executor mode whose signals and trades to label: paper (default) or live; repeatable."
    ),
]
ThresholdOption = Annotated[
    float,
    typer.Option("--threshold", min=0.0, max=99.0, help="Label threshold in percent of the basis: pos/neg beyond it."),
]
StrategyThresholdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--strategy-threshold",
        help="A strategy's own threshold in percent, NAME=PCT; repeatable. Default: its active revision's"
        " labels.roi_threshold, else --threshold.",
    ),
]
HorizonsOption = Annotated[str, typer.Option("--horizons", help="Horizons in whole hours, comma-separated.")]
ExecutorConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--executor-config", help="The executor config whose sizing and taker fee a vetoed signal's label uses."
    ),
]


def _database(database: str | None, *, write: bool) -> str:
    if database:
        return database
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError

    try:
        endpoints = resolve_database(state.settings(), state.paths())
    except TapeflowError as exc:
        raise fail(f"{exc} (or pass --database)") from None
    return endpoints.writer if write else (endpoints.readonly or endpoints.owner)


def _params(threshold: float, per_strategy: list[str] | None, horizons: str) -> LabelParams:
    from review.labels import LabelParams

    pairs: dict[str, float] = {}
    for item in per_strategy or []:
        name, sep, value = item.partition("=")
        try:
            pct = float(value)
        except ValueError:
            pct = -1.0
        if not sep or not name.strip() or not 0 <= pct < 100:
            raise fail(f"--strategy-threshold {item!r}: expected NAME=PERCENT, e.g. momentum=0.8", 2)
        pairs[name.strip()] = pct / 100
    try:
        hours = tuple(int(h) for h in horizons.split(",") if h.strip())
        return LabelParams(horizons_h=hours, default_threshold=threshold / 100, thresholds=pairs)
    except ValueError:
        raise fail(f"--horizons {horizons!r}: whole hours > 0, comma-separated, e.g. 12,24,36", 2) from None


def _executor_config(path: Path | None) -> ExecutorConfig:
    from execution.config import ExecutorConfigError, load_executor_config

    try:
        return load_executor_config(path)
    except ExecutorConfigError as exc:
        raise fail(str(exc), 2) from None


def _modes(modes: list[str] | None) -> list[str]:
    chosen = modes or ["paper"]
    for m in chosen:
        if m not in ("paper", "live", "testnet"):
            raise fail(f"--mode {m!r}: paper, testnet or live", 2)
    return chosen


def _publisher(registry: Any = None) -> Any:
    """A publisher to outcome.labels when a broker is configured or the stack runs one, else None (the
    labels then go to the table only)."""
    from tapeflow_runtime.errors import TapeflowError

    try:
        bootstrap = bootstrap_address()
    except TapeflowError:
        return None
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow_runtime.publisher import Publisher, PublishMetrics

    settings = state.settings()
    metrics = PublishMetrics(registry, prefix="tapeflow_labels_publish")
    serde = AvroSerde(registry_from_url(settings.schema_registry_url))
    return Publisher(bootstrap, serde, metrics, topic_prefix=settings.topic_prefix)


def _publishing(publisher: Any, now_ms: int) -> Any:
    """``on_written`` for the label job: each committed row to outcome.labels."""
    if publisher is None:
        return None
    from review.label_job import label_key, label_record

    def publish(source: str, labels: list) -> None:
        for lab in labels:
            publisher.publish("outcome.labels", label_key(source, lab), label_record(source, lab, now_ms))

    return publish


def _flush(publisher: Any) -> str:
    if publisher is None:
        return ""
    left = publisher.flush(30.0)
    return f"; {left} not delivered to outcome.labels" if left else "; also produced to outcome.labels"


def _db_error(exc: Exception) -> typer.Exit:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "outcome_labels" in text and "does not exist" in text:
        text += " (migrate it: tapeflow db migrate)"
    return fail(f"database: {text}")


@labels_app.command("backfill")
def labels_backfill(
    from_time: str = typer.Option(..., "--from", help="Start of t0, included (ISO date or time, UTC, or Unix ms)."),
    to_time: str = typer.Option(..., "--to", help="End of t0, exclusive (ISO date or time, UTC, or Unix ms)."),
    strategy: str | None = typer.Option(None, "--strategy", help="Only this strategy's signals and trades."),
    database: DatabaseOption = None,
    mode: ModeOption = None,
    threshold: ThresholdOption = 0.5,
    strategy_threshold: StrategyThresholdOption = None,
    horizons: HorizonsOption = "12,24,36",
    executor_config: ExecutorConfigOption = None,
    no_progress: NoProgressOption = False,
) -> None:
    """Recompute the labels of every signal and trade whose t0 is in [--from, --to) (replacing rows)."""
    import psycopg

    from review.label_job import WindowResult, label_range, with_strategy_thresholds
    from tapeflow.commands.rollout import _running
    from tapeflow_runtime.instants import EPOCH

    start, end = parse_time(from_time, "--from"), parse_time(to_time, "--to")
    if end <= start:
        raise fail(f"--to {to_time} is not after --from {from_time}", 2)
    params = _params(threshold, strategy_threshold, horizons)
    config = _executor_config(executor_config)
    modes = _modes(mode)
    conninfo = _database(database, write=True)
    from_ms, to_ms = (start - EPOCH) // _ONE_MS, (end - EPOCH) // _ONE_MS

    def progress(m: str, upto: int, r: WindowResult) -> None:
        if not no_progress:
            done = min(1.0, (upto - from_ms) / (to_ms - from_ms))
            typer.echo(f"  {m}: {done:6.1%}  {r.samples} samples, {r.written} labels written", err=True)

    now_ms = int(time.time() * 1000)
    publisher = _publisher()
    try:
        params = with_strategy_thresholds(conninfo, params, _running())  # the files' unless given
        total = label_range(
            conninfo,
            modes,
            from_ms,
            to_ms,
            params=params,
            config=config,
            now_ms=now_ms,
            strategy=strategy,
            progress=progress,
            on_written=_publishing(publisher, now_ms),
        )
    except psycopg.Error as exc:
        raise _db_error(exc) from None
    echo(
        f"{total.written} labels written for {total.samples} samples ({', '.join(modes)}); "
        f"{total.pending} due without price data reaching the horizon{_flush(publisher)}"
    )


@labels_app.command("show")
def labels_show(
    sample_id: str = typer.Argument(..., help="A signal id or a position id."),
    database: DatabaseOption = None,
) -> None:
    """Print a signal's or position's labels (every source and horizon)."""
    import psycopg

    from review.label_job import labels_of

    conninfo = _database(database, write=False)
    try:
        rows = labels_of(conninfo, sample_id)
    except psycopg.Error as exc:
        raise _db_error(exc) from None
    if not rows:
        raise fail(f"no outcome labels for {sample_id!r} (not matured yet, or not a signal or position id)")
    echo(
        f"{'source':<12} {'kind':<6} {'h':>3} {'taken':<5} {'net_pnl':>12} {'net_roi':>9} {'fees':>10} {'funding':>10} label"
    )
    for r in rows:
        echo(
            f"{r['source']:<12} {r['sample_kind']:<6} {r['horizon_h']:>3} {str(r['taken']).lower():<5} "
            f"{float(r['net_pnl']):>12.4f} {r['net_roi'] * 100:>8.3f}% {float(r['fees']):>10.4f} "
            f"{float(r['funding']):>10.4f} {r['label']}"
        )


@labels_app.command("run")
def labels_run(
    database: DatabaseOption = None,
    mode: ModeOption = None,
    threshold: ThresholdOption = 0.5,
    strategy_threshold: StrategyThresholdOption = None,
    horizons: HorizonsOption = "12,24,36",
    executor_config: ExecutorConfigOption = None,
) -> None:
    """One pass of the hourly job: label what matured since the last pass and write the autopsies of the
    closed trades whose market data is complete (for cron; `serve` repeats it)."""
    import psycopg

    from backtest.research.model_health_explain import TradeExplainer
    from review.autopsy_db import write_pending_autopsies
    from review.label_job import run_due, with_strategy_thresholds
    from tapeflow.commands.rollout import _running

    params = _params(threshold, strategy_threshold, horizons)
    config = _executor_config(executor_config)
    conninfo = _database(database, write=True)
    now_ms = int(time.time() * 1000)
    publisher = _publisher()
    try:
        params = with_strategy_thresholds(conninfo, params, _running())  # the files' unless given
        results = run_due(
            conninfo,
            _modes(mode),
            params=params,
            config=config,
            now_ms=now_ms,
            on_written=_publishing(publisher, now_ms),
        )
        with psycopg.connect(conninfo) as conn:
            autopsies = write_pending_autopsies(conn, now_ms, explain=TradeExplainer(_running))
    except psycopg.Error as exc:
        raise _db_error(exc) from None
    for m, r in results.items():
        echo(f"{m}: {r.written} labels written, {r.pending} due without price data reaching the horizon")
    echo(f"{autopsies} trade autopsies written")
    if publisher is not None:
        echo(_flush(publisher).removeprefix("; "))


@labels_app.command("serve")
def labels_serve(
    database: DatabaseOption = None,
    mode: ModeOption = None,
    threshold: ThresholdOption = 0.5,
    strategy_threshold: StrategyThresholdOption = None,
    horizons: HorizonsOption = "12,24,36",
    executor_config: ExecutorConfigOption = None,
    metrics_port: MetricsPortOption = 0,
) -> None:
    """Write labels as samples mature: a pass at start and at the top of every hour (the stack runs it)."""
    import asyncio

    from review.label_service import LabelService, run_label_service
    from tapeflow_runtime.logs import configure_logging

    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    from prometheus_client import CollectorRegistry

    from backtest.research.model_health_explain import TradeExplainer
    from backtest.research.model_health_job import ModelHealthJob
    from tapeflow.commands.rollout import _running

    registry = CollectorRegistry()
    conninfo = _database(database, write=True)
    health = ModelHealthJob(conninfo, _running, registry)  # the confidence models' rolling AUC and Brier
    service = LabelService(
        conninfo,
        _modes(mode),
        _params(threshold, strategy_threshold, horizons),
        _executor_config(executor_config),
        publisher=_publisher(registry),
        registry=registry,
        after_pass=[health],
        explain=TradeExplainer(_running, health.cache),
        strategy_files=_running,
    )
    raise typer.Exit(asyncio.run(run_label_service(service, settings.metrics_host, metrics_port)))
