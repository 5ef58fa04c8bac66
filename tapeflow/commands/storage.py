"""The database and the local cache: `db migrate|retention|audit`, `sink`, `cache ls|clear`."""

from __future__ import annotations

from datetime import UTC

import orjson
import typer

from tapeflow.commands._common import (
    app,
    db_app,
    echo,
    fail,
    parse_time,
    state,
    use_namespace,
)


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending migrations (plain PostgreSQL always; TimescaleDB parts when the extension exists)."""
    from sinks.migrate import migrate
    from tapeflow.stack.steps import (
        apply_configured_compression,
        provision_external_roles,
    )
    from tapeflow_runtime.endpoints import resolve_database

    settings = state.settings()
    endpoints = resolve_database(settings, state.paths())
    report = migrate(endpoints.owner, log=echo)
    for table, what in apply_configured_compression(settings, endpoints.owner).items():
        echo(f"{table}: {what}")
    for role in provision_external_roles(settings):
        echo(f"role {role}: LOGIN password set")
    echo(
        f"{len(report.applied)} applied, {len(report.already)} already applied, "
        f"{len(report.skipped_timescale)} TimescaleDB-only skipped ({report.engine})"
    )


@db_app.command("retention")
def db_retention(
    apply: bool = typer.Option(
        False,
        "--apply",
        help="Apply now: compression policies (TimescaleDB) and "
        "drops of what expired (days written in the last 24 h are kept).",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Per-table retention and compression: the configuration (`retention:` setting) and the database now.

    Defaults keep trades, bars, liquidations, mark prices, indicators and features forever (compressed
    on TimescaleDB); only raw depth diffs (7d) and book snapshots (30d) expire. The sink applies
    retention at start and hourly and never drops a partition or chunk it wrote since it started.
    """
    from datetime import datetime

    import psycopg

    from sinks.retention import (
        PROTECT_AT_LEAST,
        apply_compression,
        apply_retention,
        resolve_policies,
        retention_report,
    )
    from tapeflow_runtime.endpoints import resolve_database

    settings = state.settings()
    policies = resolve_policies(settings.retention)
    endpoints = resolve_database(settings, state.paths())
    now = datetime.now(UTC)
    applied: dict[str, object] = {}
    if apply:
        with psycopg.connect(endpoints.owner, autocommit=True) as conn:
            applied["compression"] = apply_compression(conn, policies)
            applied["dropped"] = {
                t: v for t, v in apply_retention(conn, policies, now, now - PROTECT_AT_LEAST).items() if v
            }
    with psycopg.connect(endpoints.owner, autocommit=True) as conn:
        report = retention_report(conn, policies, now)
    if json_out:
        typer.echo(
            orjson.dumps(
                {"tables": [r.as_dict() for r in report], **applied}, default=str, option=orjson.OPT_INDENT_2
            ).decode()
        )
        return
    engine = report[0].engine if report else "plain"
    pieces = "CHUNKS(COMPRESSED)" if engine == "timescaledb" else "PARTITIONS"
    echo(f"storage: {'TimescaleDB (hypertables)' if engine == 'timescaledb' else 'plain PostgreSQL (partitions)'}")
    echo(f"{'TABLE':<19}{'KEEP':<9}{'COMPRESS':<10}{'SET BY':<12}{pieces:<20}{'OLDEST':<12}{'EXPIRED':<9}PROTECTED")
    for r in report:
        count = f"{r.pieces}({r.compressed})" if r.compressed is not None else str(r.pieces)
        compress = r.compress_after
        if r.compression_job is not None and r.compression_job != r.compress_after:
            compress += f" (job: {r.compression_job}, run `tapeflow db retention --apply`)"
        echo(
            f"{r.table:<19}{r.keep:<9}{compress:<10}{r.source:<12}{count:<20}"
            f"{r.oldest.date().isoformat() if r.oldest else '-':<12}{len(r.expired):<9}{len(r.protected)}"
        )
    if apply:
        for table, what in applied["compression"].items():
            echo(f"{table}: {what}")
        for table, names in applied["dropped"].items():
            echo(f"{table}: dropped {len(names)} ({names[0]} .. {names[-1]})")
        if not applied["compression"] and not applied["dropped"]:
            echo("nothing to apply")


@db_app.command("audit")
def db_audit(
    symbol: str = typer.Option(..., "--symbol", help="Symbol, e.g. BTCUSDT."),
    from_time: str = typer.Option(
        ..., "--from", help="Start, included (ISO date or time, UTC, or Unix ms), e.g. 2024-01-01."
    ),
    to_time: str = typer.Option(
        ..., "--to", help="End, exclusive (ISO date or time, UTC, or Unix ms; a date means its midnight)."
    ),
    exchange: str = typer.Option("binance", "--exchange", help="Exchange name."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Continuity report: agg-id gaps and duplicates in trades, row counts and freshness per table.

    Exit code 0 when the range is clean, 1 when it found problems (gaps, duplicates, ...).
    """
    import psycopg

    from sinks.audit import audit, render
    from tapeflow_runtime.endpoints import resolve_database

    start, end = parse_time(from_time, "--from"), parse_time(to_time, "--to")
    if end <= start:
        raise fail(f"--to {to_time} is not after --from {from_time}", 2)
    endpoints = resolve_database(state.settings(), state.paths())
    with psycopg.connect(endpoints.readonly or endpoints.owner) as conn:
        report = audit(conn, symbol.upper(), start, end, exchange=exchange)
    if json_out:
        typer.echo(orjson.dumps(report.as_dict(), default=str, option=orjson.OPT_INDENT_2).decode())
    else:
        echo(render(report))
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def sink(
    topics: str | None = typer.Option(None, "--topics", help="Comma-separated catalogue topics (default: all)."),
    metrics_port: int = typer.Option(
        0, "--metrics-port", min=0, max=65535, help="Port of /metrics and /health (0 = a free one, logged)."
    ),
    input_prefix: str | None = typer.Option(
        None,
        "--input-prefix",
        help="Store the namespace NAME's topics (`tapeflow replay --to-prefix NAME`); "
        "rows go to the configured database, so point TAPEFLOW_DATABASE_URL at a rehearsal database.",
    ),
) -> None:
    """Copy topics into PostgreSQL/TimescaleDB: batched COPY, idempotent on natural keys, offsets after commit."""
    import asyncio

    from sinks.service import run_sink
    from sinks.tables import sinkable_topics
    from tapeflow_runtime.logs import configure_logging

    use_namespace(input_prefix)
    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    chosen = [t.strip() for t in topics.split(",") if t.strip()] if topics else None
    unknown = sorted(set(chosen or []) - set(sinkable_topics()))
    if unknown:
        raise fail(f"no table for topic(s) {', '.join(unknown)}; known: {', '.join(sorted(sinkable_topics()))}", 2)
    raise typer.Exit(asyncio.run(run_sink(settings, chosen, metrics_port, settings.metrics_host)))


# --- cache ----------------------------------------------------------------------------------------
cache_app = typer.Typer(
    help="The local columnar cache of parsed aggTrades files (TAPEFLOW_HOME/cache/columns).", no_args_is_help=True
)
app.add_typer(cache_app, name="cache")


def _column_cache():
    from backtest.sources.column_cache import ColumnCache

    return ColumnCache(state.settings().home / "cache" / "columns")


@cache_app.command("ls")
def cache_ls() -> None:
    """List the cached files: source file, rows, size."""
    cache = _column_cache()
    entries = cache.entries()
    for e in entries:
        rows = f"{e.rows:,}" if e.rows >= 0 else "unreadable"
        echo(f"{e.source:<48} {rows:>12} rows {e.size_bytes / 2**20:9.1f} MiB")
    echo(f"{len(entries)} file(s), {sum(e.size_bytes for e in entries) / 2**20:.1f} MiB in {cache.root}")


@cache_app.command("clear")
def cache_clear() -> None:
    """Remove every cached file (the next backtest parses its files again)."""
    cache = _column_cache()
    files, size = cache.clear()
    echo(f"removed {files} file(s), {size / 2**20:.1f} MiB from {cache.root}")
