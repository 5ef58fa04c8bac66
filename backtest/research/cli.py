"""``tapeflow research``: search, walk-forward, labels and the training data export (the ``tapeflow`` CLI
only registers them).

Every command builds (or reuses) the feature store of its inputs first: one engine pass per symbol,
in parallel (``store``), reading the backtest's sources (``synthetic[:SEED]`` offline, ``vision``,
``recording:DIR``). Times are UTC dates; ``--to`` includes that day. Failures are one ``error:``
line. ``tapeflow backtest --walk-forward SPEC`` calls ``run_walk_forward``.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.instants import parse_ms

if TYPE_CHECKING:
    from stream_apps.core.strategy import StrategyConfig

# stream_apps.core.strategy (and numba with it) is imported where a command runs, not here: every
# `tapeflow` process imports this module to register the commands, and `tapeflow status` spent half
# its 1.5 CPU-s on imports only research needs (numpy too: 0.15 s of every `tapeflow` start)

DEFAULT_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"


class ResearchError(TapeflowError):
    """A research command that cannot run as asked (the message says why)."""


def parse_time(text: str, option: str) -> int:
    """Unix ms of `--from`/`--to` as every command reads them (tapeflow_runtime.instants)."""
    try:
        return parse_ms(text, option)
    except ValueError as exc:
        raise ResearchError(str(exc)) from None


def fmt_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _base(strategy: Path | None) -> StrategyConfig:
    from stream_apps.core.strategy import default_strategy_dir, load_strategy

    return load_strategy(strategy if strategy is not None else default_strategy_dir() / "v53.yaml")


def source_options(source: str) -> dict:
    """``open_source`` options for the sources research reads (db and topics need the stack's
    settings and are left to ``tapeflow backtest``)."""
    kind = source.partition(":")[0]
    if kind in ("synthetic", "recording"):
        return {}
    if kind == "vision":
        from tapeflow_runtime.settings import load_settings

        home = load_settings().home
        return {"cache_dir": home / "vision", "column_cache": home / "cache" / "columns"}
    raise ResearchError(f"--source {source!r}: research reads synthetic[:SEED], vision[:DIR] or recording:DIR")


def _store(
    out: Path,
    store_dir: Path | None,
    source: str,
    symbols: str,
    from_ms: int,
    to_ms: int,
    base: StrategyConfig,
    workers: int | None,
    progress: bool,
):
    from backtest.sources import SourceError

    from .store import StoreSpec, build_store

    options = source_options(source)
    names = tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
    if not names:
        raise ResearchError("--symbols: at least one symbol")
    if to_ms - from_ms < 2 * 86_400_000:
        raise ResearchError("the range must cover at least two days (the strategies warm up on the first)")
    spec = StoreSpec(
        source,
        names,
        from_ms,
        to_ms,
        base.windows.cvd_fast,
        base.windows.cvd_mid,
        base.detectors.model_dump_json() if base.detectors is not None else "",
    )
    began = time.perf_counter()
    try:
        store = build_store(store_dir or out / "store", spec, base, workers, show_progress=progress, options=options)
    except SourceError as error:
        raise ResearchError(str(error)) from None
    if store.manifest["trades"] == 0:
        raise ResearchError(f"no trades for {','.join(names)} from {fmt_day(from_ms)} to {fmt_day(to_ms)} in {source}")
    typer.echo(
        f"features: {store.manifest['trades']:,} trades, {len(names)} symbols "
        f"({time.perf_counter() - began:.0f} s; store {store.directory})",
        err=True,
    )
    return store


def study_storage(storage: str | None) -> tuple[str | None, str]:
    """Where the study lives: ``(storage, description)``. ``--storage URL`` (an optuna RDB URL,
    ``postgresql://...`` or a conninfo), ``memory``, or by default the stack's PostgreSQL when one runs
    (``TAPEFLOW_DATABASE_URL`` or the embedded database of ``TAPEFLOW_HOME`` as the writer role; optuna's
    tables in the schema ``optuna`` of migration 0013), else memory."""
    if storage is not None and storage.strip().lower() == "memory":
        return None, "in memory (this process only)"
    if storage is not None:
        from .study import sqlalchemy_url

        url = sqlalchemy_url(storage)
        return storage, url.split("://", 1)[0] + "://" + url.rsplit("@", 1)[-1] if "@" in url else url
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import EndpointError
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import load_settings

    settings = load_settings()
    try:
        endpoints = resolve_database(settings, StackPaths(settings.home))
    except EndpointError:
        return None, "in memory (no stack running; --storage URL shares a study between workers)"
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(endpoints.writer)
    where = f"{params.get('host', '?')}:{params.get('port', 5432)}/{params.get('dbname', '')}"
    return endpoints.writer, f"the stack's PostgreSQL ({where}, schema optuna)"


def _fdr_line(report) -> str:
    """How many variants' "net R per trade > 0" survive Benjamini-Hochberg, and the winner's q-value."""
    from .search import FDR_ALPHA

    q = report.best.q_value
    return (
        f"variants with net R per trade > 0 at a {FDR_ALPHA:.0%} false-discovery rate (stationary bootstrap, "
        f"Benjamini-Hochberg): {report.survivors} of {report.tested}; "
        f"winner's q-value {'-' if q is None else f'{q:.3f}'}"
    )


def _result_line(label: str, result) -> str:
    if result is None:
        return f"{label}: -"
    pf = "-" if result.profit_factor is None else f"{result.profit_factor:.2f}"
    sharpe = "-" if result.sharpe_per_day is None else f"{result.sharpe_per_day:.2f}"
    return (
        f"{label}: {result.trades} trades, net {result.net_r:+.2f}R, PF {pf}, Sharpe/day {sharpe}, "
        f"max DD {result.max_drawdown_r:.2f}R"
    )


research = typer.Typer(
    help="Research at machine speed: parameter search, walk-forward, labels, training data export.",
    no_args_is_help=True,
)

# the options several research commands share
common = {
    "strategy": typer.Option(None, "--strategy", help="Base strategy file (default: the shipped v53)."),
    "symbols": typer.Option(DEFAULT_SYMBOLS, "--symbols", help="Comma-separated symbols."),
    "source": typer.Option(
        "synthetic:7", "--source", help="synthetic[:SEED] (generated, offline), vision[:DIR] or recording:DIR."
    ),
    "out": typer.Option(Path("research-out"), "--out", help="Directory for strategies, report and store."),
    "store": typer.Option(None, "--store", help="Feature store directory (reused for the same inputs)."),
    "workers": typer.Option(None, "--workers", min=1, help="Processes (default: the machine's cores)."),
    "no_progress": typer.Option(False, "--no-progress", help="No progress bars."),
    "sampler": typer.Option("tpe", "--sampler", help="tpe (optuna) or grid."),
    "objective": typer.Option("net_r", "--objective", help="net_r, sharpe or pf."),
    "min_trades": typer.Option(20, "--min-trades", min=1, help="Fewer trades score -inf."),
    "batch": typer.Option(25, "--batch", min=1, help="Candidates scored together (TPE asks a batch)."),
    "seed": typer.Option(0, "--seed", help="Sampler seed."),
    "storage": typer.Option(
        None,
        "--storage",
        help="Optuna storage shared by every worker of the study: an RDB URL "
        "(postgresql://user:pass@host/db, sqlite:///file.db) or 'memory'. "
        "Default: the stack's PostgreSQL when one runs, else memory.",
    ),
    "study": typer.Option(
        None,
        "--study",
        help="Study name (default: derived from the inputs, so workers started with the same options join one study).",
    ),
}


@research.command("search")
def search_command(
    from_day: str = typer.Option(..., "--from", help="Start, included: a UTC date, date-time or Unix ms."),
    to_day: str = typer.Option(..., "--to", help="End, exclusive: a UTC date (its midnight), date-time or Unix ms."),
    strategy: Path | None = common["strategy"],
    symbols: str = common["symbols"],
    source: str = common["source"],
    trials: int = typer.Option(100, "--trials", min=2, help="Configurations to try."),
    sampler: str = common["sampler"],
    objective: str = common["objective"],
    min_trades: int = common["min_trades"],
    batch: int = common["batch"],
    holdout: str = typer.Option("0", "--holdout", help="Duration cut off the end, touched once (e.g. 7d)."),
    seed: int = common["seed"],
    out: Path = common["out"],
    store_dir: Path | None = common["store"],
    workers: int | None = common["workers"],
    no_progress: bool = common["no_progress"],
    storage: str | None = common["storage"],
    study: str | None = common["study"],
) -> None:
    """Search layer weights, thresholds, gates and exits of a base strategy; write the winner.
    Run it on several machines with the same options and --storage to share the trials."""
    from stream_apps.core.durations import parse_duration_ms

    from .search import evaluate, in_range, result_of, search, write_report, write_strategy
    from .study import StudyError

    base = _base(strategy)
    url, where = study_storage(storage)
    from_ms, to_ms = parse_time(from_day, "--from"), parse_time(to_day, "--to")
    held_ms = 0 if holdout.strip() == "0" else _duration(holdout, "--holdout", parse_duration_ms)
    store = _store(out, store_dir, source, symbols, from_ms, to_ms, base, workers, not no_progress)
    end = to_ms - held_ms
    began = time.perf_counter()
    typer.echo(f"study: {where}", err=True)
    try:
        report = search(
            store,
            base,
            trials=trials,
            from_ms=from_ms,
            to_ms=end,
            sampler=sampler,
            objective=objective,
            min_trades=min_trades,
            batch=batch,
            seed=seed,
            workers=workers,
            show_progress=not no_progress,
            storage=url,
            study_name=study,
        )
    except (StudyError, ValueError) as error:
        raise ResearchError(str(error)) from None
    if held_ms:
        [trades] = evaluate(store, [report.best.candidate.config], end, to_ms, workers)
        report.holdout, report.holdout_range = result_of(in_range(trades, end, to_ms), end, to_ms), (end, to_ms)
    path, config_hash = write_strategy(report.best.candidate.config, out / "strategies")
    summary = report.summary() | {"strategy_file": str(path), "seconds": time.perf_counter() - began}
    report_path = write_report(out, summary)
    typer.echo(
        f"search: {len(report.trials)} trials ({sampler}, objective {objective}) on "
        f"{fmt_day(from_ms)} .. {fmt_day(end)} in {summary['seconds']:.0f} s"
    )
    if report.study is not None:
        typer.echo(
            f"study {report.study}: {report.evaluated_here} of its {len(report.trials)} trials evaluated by this worker"
        )
    typer.echo(_result_line(f"best {report.best.candidate.config.name}", report.best.result))
    typer.echo(
        f"deflated Sharpe ratio of the winner given {len(report.trials)} trials: "
        f"{'-' if report.dsr is None else f'{report.dsr:.3f}'}; "
        f"PBO (CSCV): {'-' if report.pbo is None else f'{report.pbo:.2f}'}"
    )
    typer.echo(_fdr_line(report))
    if report.holdout is not None:
        typer.echo(_result_line(f"hold-out {fmt_day(end)} .. {fmt_day(to_ms)}", report.holdout))
    typer.echo(f"strategy: {path} (config_hash {config_hash})")
    typer.echo(f"report: {report_path}")
    typer.echo(f"run it live: tapeflow engine --strategy {path}")


@research.command("walk-forward")
def walk_forward_command(
    windows: str = typer.Option(
        "train=30d,test=7d,step=7d", "--windows", help="train=,test=,step=[,embargo=][,holdout=] durations."
    ),
    from_day: str = typer.Option(..., "--from", help="Start, included: a UTC date, date-time or Unix ms."),
    to_day: str = typer.Option(..., "--to", help="End, exclusive: a UTC date (its midnight), date-time or Unix ms."),
    strategy: Path | None = common["strategy"],
    symbols: str = common["symbols"],
    source: str = common["source"],
    trials: int = typer.Option(50, "--trials", min=2, help="Configurations per training window."),
    sampler: str = common["sampler"],
    objective: str = common["objective"],
    min_trades: int = common["min_trades"],
    batch: int = common["batch"],
    seed: int = common["seed"],
    out: Path = common["out"],
    store_dir: Path | None = common["store"],
    workers: int | None = common["workers"],
    no_progress: bool = common["no_progress"],
    storage: str | None = common["storage"],
    study: str | None = common["study"],
) -> None:
    """Rolling windows: search on each training window only, score the choice out of sample."""
    run_walk_forward(
        windows,
        parse_time(from_day, "--from"),
        parse_time(to_day, "--to"),
        _base(strategy),
        symbols=symbols,
        source=source,
        trials=trials,
        sampler=sampler,
        objective=objective,
        min_trades=min_trades,
        batch=batch,
        seed=seed,
        out=out,
        store_dir=store_dir,
        workers=workers,
        progress=not no_progress,
        storage=storage,
        study=study,
    )


@research.command("labels")
def labels_command(
    from_day: str = typer.Option(..., "--from", help="Start, included: a UTC date, date-time or Unix ms."),
    to_day: str = typer.Option(..., "--to", help="End, exclusive: a UTC date (its midnight), date-time or Unix ms."),
    strategy: list[Path] | None = typer.Option(None, "--strategy", help="Strategy files (default: shipped)."),
    symbols: str = common["symbols"],
    source: str = common["source"],
    output: Path = typer.Option(Path("research-out/labels.parquet"), "--output", help="Parquet file to write."),
    database: str | None = typer.Option(
        None, "--database", help="Also upsert into feature_labels here (a PostgreSQL conninfo)."
    ),
) -> None:
    """Every evaluation's features with y_binary_60m and forward returns: Parquet (and feature_labels)."""
    import numpy as np

    from stream_apps.core.strategy import default_strategy_dir, load_strategies, load_strategy

    from .dataset import ResearchTable
    from .export import replay_symbol
    from .labels import PricePath

    strategies = [load_strategy(p) for p in strategy] if strategy else load_strategies(default_strategy_dir())
    from_ms, to_ms = parse_time(from_day, "--from"), parse_time(to_day, "--to")
    options = source_options(source)
    table = ResearchTable()
    for symbol in (s.strip().upper() for s in symbols.split(",") if s.strip()):
        blocks, times, prices = [], [], []
        for step in replay_symbol(source, symbol, strategies, from_ms, to_ms, options):
            if step.times is not None:
                times.append(step.times)
                prices.append(step.prices)
            blocks += step.blocks
        if not times:
            continue
        path = PricePath.from_trades(np.concatenate(times), np.concatenate(prices), to_ms)
        for block in blocks:
            table.add_block(block, path)
    written = table.write_parquet(output)
    typer.echo(f"labels: {len(table):,} evaluations -> {written}")
    if database:
        typer.echo(f"feature_labels: {table.store(database):,} rows")
    typer.echo(json.dumps({"rows": len(table), "file": str(written)}))


@research.command("export")
def export_command(
    from_day: str = typer.Option(..., "--from", help="Start, included: a UTC date, date-time or Unix ms."),
    to_day: str = typer.Option(..., "--to", help="End, exclusive: a UTC date (its midnight), date-time or Unix ms."),
    strategy: str = typer.Option(
        "v53", "--strategy", help="A shipped strategy's name (v53, v52_8signals, v51_baseline) or a strategy file."
    ),
    symbols: str = common["symbols"],
    source: str = typer.Option(
        "synthetic:7",
        "--source",
        help="synthetic[:SEED] (generated, offline), vision[:DIR], recording:DIR, db "
        "(the stack's database) or topics (its broker).",
    ),
    out: Path = typer.Option(
        Path("research-out/export"),
        "--out",
        help="Export root: OUT/STRATEGY/date=YYYY-MM-DD/SYMBOL.parquet and OUT/STRATEGY/_schema.json.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Rewrite days already exported."),
    no_progress: bool = common["no_progress"],
) -> None:
    """Training data: every evaluation's features, decision and labels as Parquet per symbol and UTC
    day, with _schema.json (each column's type, unit and meaning). Re-runs skip finished days."""
    from tqdm import tqdm

    from backtest.sources import SourceError

    from .export import DAY_MS, SCHEMA_FILE, ExportError, day_name, export

    cfg = _named_strategy(strategy)
    from_ms, to_ms = parse_time(from_day, "--from"), parse_time(to_day, "--to")
    if to_ms <= from_ms:
        raise ResearchError(f"empty range: --to {to_day} is not after --from {from_day} (--to is excluded)")
    names = [s.strip().upper() for s in symbols.split(",") if s.strip()]
    options = export_source_options(source)
    began = time.perf_counter()
    with tqdm(
        total=len(names) * ((to_ms - from_ms) // DAY_MS), desc=f"export {cfg.name}", unit="day", disable=no_progress
    ) as bar:

        def on_day(symbol: str, day_ms: int, outcome: str) -> None:
            bar.set_postfix_str(f"{symbol} {day_name(day_ms)}{'' if outcome == 'written' else f' ({outcome})'}")
            bar.update()

        try:
            summary = export(
                cfg, source, names, from_ms, to_ms, out, options=options, overwrite=overwrite, on_day=on_day
            )
        except (ExportError, SourceError) as error:
            raise ResearchError(str(error)) from None
    seconds = time.perf_counter() - began
    if summary.written == summary.skipped == 0:
        raise ResearchError(f"no evaluations for {','.join(names)} from {from_day} to {to_day} in {source}")
    root = out / cfg.name
    rate = f", {summary.trades / seconds:,.0f} trades/s" if summary.trades and seconds > 0 else ""
    typer.echo(
        f"export: {summary.written} symbol-days written ({summary.rows:,} evaluations, "
        f"{summary.trades:,} trades replayed{rate}), {summary.skipped} already done, "
        f"{summary.empty} without data, in {seconds:.1f} s -> {root} (schema {root / SCHEMA_FILE})"
    )


def register(app: typer.Typer) -> None:
    """Add ``research`` (its commands are defined above, at import) to the ``tapeflow`` app."""
    app.add_typer(research, name="research")


def _named_strategy(text: str) -> StrategyConfig:
    """``--strategy``: a file, or the name of a shipped strategy."""
    from stream_apps.core.strategy import default_strategy_dir, load_strategy

    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml", ".json") or path.exists():
        if not path.is_file():
            raise ResearchError(f"--strategy {text}: no such file")
        return load_strategy(path)
    shipped = sorted(p.stem for p in default_strategy_dir().glob("*.yaml"))
    if text not in shipped:
        raise ResearchError(f"--strategy {text!r}: not a file or a shipped strategy ({', '.join(shipped)})")
    return load_strategy(default_strategy_dir() / f"{text}.yaml")


def export_source_options(source: str) -> dict:
    """``open_source`` options of the export's sources: ``source_options`` plus the stack's database
    (``db``) or broker (``topics``), found as ``tapeflow backtest`` finds them."""
    kind = source.partition(":")[0]
    if kind not in ("synthetic", "vision", "recording", "db", "topics"):
        raise ResearchError(
            f"--source {source!r}: the export reads synthetic[:SEED], vision[:DIR], recording:DIR, db or topics"
        )
    if kind not in ("db", "topics"):
        return source_options(source)
    # found with tapeflow_runtime.endpoints as backtest.cli finds them (that module imports this one)
    from tapeflow_runtime.endpoints import resolve_broker, resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths
    from tapeflow_runtime.settings import load_settings

    settings = load_settings()
    paths = StackPaths(settings.home)
    try:
        if kind == "db":
            endpoints = resolve_database(settings, paths)
            return {"database_url": endpoints.readonly or endpoints.owner}
        return {
            "bootstrap": resolve_broker(settings, paths),
            "topic_prefix": settings.topic_prefix,
            "registry_url": settings.schema_registry_url,
        }
    except TapeflowError as error:
        raise ResearchError(str(error)) from None


def run_walk_forward(
    windows: str,
    from_ms: int,
    to_ms: int,
    base: StrategyConfig,
    *,
    symbols: str,
    source: str,
    trials: int,
    sampler: str,
    objective: str,
    min_trades: int,
    batch: int,
    seed: int,
    out: Path,
    store_dir: Path | None,
    workers: int | None,
    progress: bool,
    storage: str | None = "memory",
    study: str | None = None,
) -> None:
    """``tapeflow research walk-forward`` and ``tapeflow backtest --walk-forward``."""
    from .search import walk_forward, write_report, write_strategy
    from .study import StudyError
    from .windows import parse_walk_forward

    try:
        spec = parse_walk_forward(windows, default_embargo_ms=max(base.exits.timeout_min, 480) * 60_000)
    except ValueError as error:
        raise ResearchError(str(error)) from None
    url, where = study_storage(storage)
    store = _store(out, store_dir, source, symbols, from_ms, to_ms, base, workers, progress)
    typer.echo(f"study: {where}", err=True)
    try:
        results, last, held = walk_forward(
            store,
            base,
            spec,
            trials=trials,
            sampler=sampler,
            objective=objective,
            min_trades=min_trades,
            batch=batch,
            seed=seed,
            workers=workers,
            show_progress=progress,
            storage=url,
            study_name=study,
        )
    except (StudyError, ValueError) as error:
        raise ResearchError(str(error)) from None
    rows = []
    for r in results:
        w = r.window
        typer.echo(
            f"window {w.index}: train {fmt_day(w.train_start)} .. {fmt_day(w.train_end)} -> "
            f"{r.search.best.candidate.config.name} (DSR "
            f"{'-' if r.search.dsr is None else f'{r.search.dsr:.2f}'}, PBO "
            f"{'-' if r.search.pbo is None else f'{r.search.pbo:.2f}'}, "
            f"{r.search.survivors} of {r.search.tested} variants survive FDR)"
        )
        typer.echo("  " + _result_line(f"test {fmt_day(w.test_start)} .. {fmt_day(w.test_end)}", r.test))
        rows.append({"window": w.__dict__, "search": r.search.summary(), "test": r.test.as_dict()})
    oos = sum(r.test.net_r for r in results)
    typer.echo(
        f"out of sample: {sum(r.test.trades for r in results)} trades, net {oos:+.2f}R over "
        f"{len(results)} windows ({spec})"
    )
    payload = {"windows": rows, "spec": str(spec)}
    if last is not None:
        path, config_hash = write_strategy(last.best.candidate.config, out / "strategies")
        payload["strategy_file"] = str(path)
        if held is not None:
            typer.echo(_result_line("hold-out (last window's choice, touched once)", held))
            payload["holdout"] = held.as_dict()
        typer.echo(f"strategy (last window's choice): {path} (config_hash {config_hash})")
    typer.echo(f"report: {write_report(out, payload, 'walk-forward.json')}")


def _duration(text: str, option: str, parse) -> int:
    try:
        return parse(text.strip())
    except ValueError as error:
        raise ResearchError(f"{option}: {error}") from None
