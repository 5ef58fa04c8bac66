"""``tapeflow backtest``: the command's logic (the ``tapeflow`` CLI only registers it, see ``register``).

Flow: validate strategies, symbols, range and source (each failure one ``error:`` line, exit 2 for
bad arguments, 1 for "nothing to test"), run ``BacktestRunner`` with a progress bar (event time,
ETA, trades/s) on stderr, write ``result.json`` and the report (``backtest.result_io``), print a short
summary and where the report is. Ctrl-C stops at the next slice and still writes everything, marked
partial (exit code 130); a second Ctrl-C aborts at once without a report.

Times: ``--from``/``--to`` are UTC dates (``2024-01-01``) or times (``2024-01-01T12:00``); a date
given to ``--to`` includes that whole day, a time is the exclusive end.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tapeflow_runtime.instants import parse_ms

if TYPE_CHECKING:
    from backtest.inputs import Source
    from backtest.model import RunResult
    from backtest.sources.topics import TopicSource
    from backtest.verify import Comparison
    from execution.config import ExecutorConfig
    from stream_apps.core.strategy import StrategyConfig
    from tapeflow_runtime.settings import Settings
    from tapeflow_runtime.warm_start_span import WarmStartSpan

INTERRUPTED = 130  # exit code of a run stopped by Ctrl-C (its report is written, marked partial)
DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT")
DEMO_HOURS = 30  # the shipped strategies warm up for 24 h of data first
DEMO_START = datetime(2024, 3, 1, tzinfo=UTC)
DEMO_SEED = 7
# quieter than the synthetic defaults (30 and 20 trades/s): the engine evaluates every second that has
# trades, and the demo must finish in about a minute on a laptop (benchmarks/RESULTS.md has the speeds)
DEMO_RATES = {"BTCUSDT": 0.5, "ETHUSDT": 0.4}


class CliError(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def parse_time(text: str, option: str) -> int:
    """Unix ms of `--from`/`--to` as every command reads them (tapeflow_runtime.instants)."""
    try:
        return parse_ms(text, option)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


StrategyFiles = Annotated[
    list[Path],
    typer.Option(
        "--strategy",
        "-s",
        help="Strategy file (YAML/JSON) or a shipped strategy's name (v53); repeat for A/B. Default: the shipped ones.",
    ),
]
Symbols = Annotated[str | None, typer.Option("--symbols", help="Comma-separated symbols. Default: TAPEFLOW_SYMBOLS.")]
From = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Start, included: a UTC date or time (2024-01-01[T00:00]) or Unix ms; a recording: default its start.",
    ),
]
To = Annotated[
    str | None,
    typer.Option("--to", help="End, exclusive: a UTC date (its midnight), time or Unix ms. A recording: its end."),
]
SourceSpec = Annotated[
    str,
    typer.Option(
        "--source",
        help="vision (downloads Binance's public daily archives once, cached in TAPEFLOW_HOME/vision) | "
        "vision:DIR | synthetic[:SEED] (offline) | recording:DIR | db | topics (md.* by time from the broker).",
    ),
]
OutDir = Annotated[
    Path | None, typer.Option("--out", help="Report directory. Default: TAPEFLOW_HOME/backtests/<time>.")
]
ExecutorConfigFile = Annotated[
    Path | None,
    typer.Option("--executor-config", help="Executor settings (fees, slippage model, risk limits) as for `execute`."),
]
AccountChoice = Annotated[
    str,
    typer.Option(
        "--account",
        help="per-strategy: each strategy trades its own paper account; shared: one account (as one stack).",
    ),
]
Formats = Annotated[str | None, typer.Option("--format", help="Report formats, e.g. json,md,png,html (default all).")]
VisionUrl = Annotated[str | None, typer.Option("--vision-url", help="Binance Vision base URL (a mirror).")]
CacheDir = Annotated[Path | None, typer.Option("--cache-dir", help="Download cache. Default: TAPEFLOW_HOME/vision.")]
Demo = Annotated[
    bool,
    typer.Option(
        "--demo",
        help=f"Offline demo: {DEMO_HOURS} h of synthetic {'/'.join(DEMO_SYMBOLS)}, shipped strategies.",
    ),
]
VerifyAgainstTopics = Annotated[
    bool,
    typer.Option(
        "--verify-against-topics",
        help="Backtest md.* from the broker and compare signals and positions with what the stack published.",
    ),
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
WalkForward = Annotated[
    str | None,
    typer.Option(
        "--walk-forward",
        help="train=30d,test=7d,step=7d[,embargo=..][,holdout=..]: a parameter search "
        "of the (first) strategy on each training window, scored on the next test window "
        "(`tapeflow research walk-forward`; --trials per window).",
    ),
]
Trials = Annotated[int, typer.Option("--trials", min=2, help="With --walk-forward: configurations per window.")]
WarmStartApproximation = Annotated[
    bool,
    typer.Option(
        "--warm-start-approximation",
        help="Start as a fresh stack's warm start does (parity with it): the first TAPEFLOW_WARM_START_HOURS "
        "of the range as 1m minute bars made from its trades, but the last TAPEFLOW_WARM_START_DETAIL_MINUTES "
        "of them trade by trade, and no books or liquidations before that live start.",
    ),
]


@dataclass(frozen=True)
class RunRequest:
    """What ``tapeflow backtest`` was asked to run (its options, as given)."""

    strategy_files: list[Path]
    symbols: str | None
    from_: str | None
    to: str | None
    source: str
    out: Path | None
    executor_config: Path | None
    account: str
    formats: str | None
    vision_url: str | None
    cache_dir: Path | None
    demo: bool
    verify: bool
    progress: bool
    warm_start: bool = False


def register(app: typer.Typer, settings: Callable[[], Settings]) -> None:
    """Add ``backtest`` to the ``tapeflow`` app; ``settings`` loads the stack settings when needed."""

    @app.command("backtest")
    def backtest(
        strategy: StrategyFiles = [],  # noqa: B006 - typer reads the default; nothing mutates it
        symbols: Symbols = None,
        from_: From = None,
        to: To = None,
        source: SourceSpec = "vision",
        out: OutDir = None,
        executor_config: ExecutorConfigFile = None,
        account: AccountChoice = "per-strategy",
        formats: Formats = None,
        vision_url: VisionUrl = None,
        cache_dir: CacheDir = None,
        demo: Demo = False,
        verify_against_topics: VerifyAgainstTopics = False,
        no_progress: NoProgress = False,
        walk_forward: WalkForward = None,
        trials: Trials = 50,
        warm_start_approximation: WarmStartApproximation = False,
    ) -> None:
        """Run strategies over history through the live engine and paper executor; write a report."""
        if walk_forward is not None:
            if warm_start_approximation:
                typer.echo("error: --warm-start-approximation does not apply to --walk-forward", err=True)
                raise typer.Exit(2)
            _walk_forward(walk_forward, strategy, symbols, from_, to, source, out, trials, not no_progress, settings)
            return
        request = RunRequest(
            strategy_files=strategy,
            symbols=symbols,
            from_=from_,
            to=to,
            source=source,
            out=out,
            executor_config=executor_config,
            account=account,
            formats=formats,
            vision_url=vision_url,
            cache_dir=cache_dir,
            demo=demo,
            verify=verify_against_topics,
            progress=not no_progress,
            warm_start=warm_start_approximation,
        )
        try:
            code = run_command(settings, request)
        except CliError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.code) from None
        raise typer.Exit(code)


def _walk_forward(
    spec: str,
    strategy_files: list[Path],
    symbols: str | None,
    from_: str | None,
    to: str | None,
    source: str,
    out: Path | None,
    trials: int,
    progress: bool,
    settings: Callable[[], Settings],
) -> None:
    """``--walk-forward``: the research command's logic (``backtest.research.cli.run_walk_forward``)."""
    from backtest.research.cli import run_walk_forward
    from stream_apps.core.strategy import default_strategy_dir, load_strategy

    if from_ is None or to is None:
        raise CliError("--walk-forward needs --from and --to")
    base = load_strategy(strategy_files[0] if strategy_files else default_strategy_dir() / "v53.yaml")
    out_dir = out or settings().home / "research" / datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    run_walk_forward(
        spec,
        parse_time(from_, "--from"),
        parse_time(to, "--to"),
        base,
        symbols=symbols or ",".join(settings().symbols),
        source=source,
        trials=trials,
        sampler="tpe",
        objective="net_r",
        min_trades=20,
        batch=25,
        seed=0,
        out=out_dir,
        store_dir=None,
        workers=None,
        progress=progress,
    )


def run_command(settings: Callable[[], Settings], request: RunRequest) -> int:
    """``tapeflow backtest`` (its walk-forward aside): the exit code; ``CliError`` for bad arguments or no data."""
    from backtest.result_io import write_outputs
    from backtest.runner import BacktestRunner
    from backtest.sources import SourceError
    from tapeflow_runtime.batch import batch_gc

    strategies = _load_strategies(request.strategy_files)
    config = _load_executor_config(request.executor_config)
    if request.account not in ("per-strategy", "shared"):
        raise CliError(f"--account {request.account!r}: use per-strategy or shared")
    report_formats = _report_formats(request.formats)
    if request.verify:
        if request.warm_start:
            raise CliError(
                "--warm-start-approximation does not apply to --verify-against-topics (that compares "
                "a stack's own inputs, warm start included)"
            )
        return verify_command(
            settings(),
            strategies,
            config,
            symbols=request.symbols,
            from_=request.from_,
            to=request.to,
            out=request.out,
            progress=request.progress,
        )
    from backtest.outcome_labels import LabelTape

    src = LabelTape(_open_source(settings, request))  # passes the slices on; keeps what outcome labels need
    runner = BacktestRunner(strategies, config, account="shared" if request.account == "shared" else "per_strategy")
    from_ms, to_ms = src.from_ms, src.to_ms
    typer.echo(
        f"backtest: {src.name}, {','.join(src.symbols)}, {fmt_ms(from_ms)} to {fmt_ms(to_ms)} UTC, "
        f"{', '.join(s.name for s in strategies)} (Ctrl-C writes a partial report)",
        err=True,
    )
    try:
        with batch_gc():
            result = run_with_progress(runner, src, request.progress)
    except SourceError as exc:  # a source that reads lazily (topics, db) fails here, not at open
        raise CliError(str(exc), 1) from None
    if result.trades_processed == 0:
        where = f"; {len(result.missing)} missing, first: {result.missing[0]}" if result.missing else ""
        raise CliError(
            f"no market data for {','.join(src.symbols)} from {fmt_ms(from_ms)} to {fmt_ms(to_ms)} UTC "
            f"in {src.name}{where}",
            1,
        )
    out_dir = request.out or settings().home / "backtests" / datetime.now(tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    written = write_outputs(result, out_dir, report_formats)
    stored = store(result, settings)
    if stored.startswith("stored"):
        stored += store_outcome_labels(result, runner, src, settings)
    print_summary(result, written, stored)
    return INTERRUPTED if result.partial else 0


def _load_strategies(files: list[Path]) -> list[StrategyConfig]:
    """The strategies of ``--strategy`` (default: the shipped ones), their names unique."""
    from stream_apps.core.strategy import StrategyConfigError, default_strategy_dir, load_strategies, load_strategy

    try:
        strategies = [load_strategy(p) for p in files] if files else load_strategies(default_strategy_dir())
    except StrategyConfigError as exc:
        raise CliError(f"bad strategy file: {exc}") from None
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise CliError(f"strategy names must be unique for an A/B run, got {', '.join(names)}")
    return strategies


def _load_executor_config(path: Path | None) -> ExecutorConfig:
    from execution.config import ExecutorConfigError, load_executor_config

    try:
        return load_executor_config(path)
    except ExecutorConfigError as exc:
        raise CliError(f"bad executor config: {exc}") from None


def _report_formats(formats: str | None) -> tuple[str, ...] | None:
    """``--format`` as a tuple of known report formats (None: all)."""
    report_formats = tuple(f.strip() for f in formats.split(",") if f.strip()) if formats else None
    if report_formats is not None:
        from backtest.report import FORMATS

        unknown = [f for f in report_formats if f not in FORMATS]
        if unknown or not report_formats:
            raise CliError(f"--format {formats!r}: choose from {', '.join(FORMATS)}")
    return report_formats


@dataclass(frozen=True)
class _Range:
    """The source, symbols and times a run reads (None: the source's own)."""

    source: str
    symbols: list[str] | None
    from_ms: int | None
    to_ms: int | None


def _range(settings: Callable[[], Settings], request: RunRequest) -> _Range:
    """``--demo``'s fixed range, else ``--from``/``--to``/``--symbols`` (default: a recording's own
    symbols, else the configured ones)."""
    symbols = request.symbols
    if request.demo:
        start = int(DEMO_START.timestamp() * 1000)
        symbol_list = list(DEMO_SYMBOLS) if symbols is None else symbols.split(",")
        return _Range(f"synthetic:{DEMO_SEED}", symbol_list, start, start + DEMO_HOURS * 3_600_000)
    from_ms = parse_time(request.from_, "--from") if request.from_ is not None else None
    to_ms = parse_time(request.to, "--to") if request.to is not None else None
    if symbols:
        return _Range(request.source, symbols.split(","), from_ms, to_ms)
    # a recording's own symbols, else the configured ones
    return _Range(
        request.source, None if request.source.startswith("recording:") else list(settings().symbols), from_ms, to_ms
    )


def _warm_start_span(settings: Callable[[], Settings], from_ms: int | None) -> WarmStartSpan:
    """The live warm start's span (tapeflow_runtime.warm_start_span), its window from ``--from``."""
    from backtest.sources.warm_start import approximation_span

    hours, detail = settings().warm_start_hours, settings().warm_start_detail_minutes
    if hours <= 0:
        raise CliError("--warm-start-approximation: TAPEFLOW_WARM_START_HOURS is 0 (no warm start to approximate)")
    if from_ms is None:
        raise CliError("--warm-start-approximation needs --from (the warm start's window begins there)")
    return approximation_span(from_ms, hours, detail)


def _source_options(settings: Callable[[], Settings], request: RunRequest, kind: str) -> dict[str, Any]:
    """``open_source`` options of a source kind: where vision archives are kept, the stack's database
    or broker."""
    options: dict[str, Any] = {"vision_url": request.vision_url}
    if request.demo:
        options["trades_per_s"] = DEMO_RATES
    if kind == "vision":
        options["cache_dir"] = request.cache_dir or settings().home / "vision"
        options["column_cache"] = settings().home / "cache" / "columns"  # parsed aggTrades (tapeflow cache)
    elif kind == "db":
        options["database_url"] = _database_url(settings())
    elif kind == "topics":
        s = settings()
        options.update(bootstrap=_bootstrap(s), topic_prefix=s.topic_prefix, registry_url=s.schema_registry_url)
    return options


def _open_source(settings: Callable[[], Settings], request: RunRequest) -> Source:
    """The source the request reads, wrapped in the warm-start approximation when asked; what the
    default source downloads, and the approximation's span, said on stderr."""
    from backtest.sources import SourceError, open_source

    where = _range(settings, request)
    from_ms = where.from_ms
    span = None
    if request.warm_start:
        span = _warm_start_span(settings, from_ms)
        from_ms = span.bars_from_ms  # the first bar holds that whole minute, as the first 1m kline does
    kind = where.source.partition(":")[0]
    options = _source_options(settings, request, kind)
    try:
        src = open_source(where.source, where.symbols, from_ms, where.to_ms, **options)
    except SourceError as exc:
        raise CliError(str(exc)) from None
    if kind == "vision" and where.source == "vision":  # the default: say that it downloads, and where it keeps
        _say_vision_downloads(src, request.vision_url, options["cache_dir"])
    if span is None:
        return src
    from backtest.sources.warm_start import WarmStartApproximation

    bars = (
        f"minute bars before {fmt_ms(span.detail_from_ms)}, trade by trade after"
        if span.detail_from_ms is not None
        else "every trade"
    )
    typer.echo(
        f"warm start approximation: live start {fmt_ms(span.now_ms)} UTC, {bars}; no books or "
        "liquidations before the live start",
        err=True,
    )
    return WarmStartApproximation(src, span)


def _say_vision_downloads(src: Any, vision_url: str | None, cache_dir: Path) -> None:
    from producers.backfill.vision_files import DEFAULT_BASE_URL as DEFAULT_VISION_URL

    typer.echo(
        f"source vision: Binance's public daily archives for {len(src.symbols)} symbol(s) x "
        f"{len(src.days())} day(s), downloaded from {(vision_url or DEFAULT_VISION_URL).rstrip('/')} on first "
        f"use and kept in {cache_dir} (checksums verified); --source synthetic runs offline, "
        "--source vision:DIR reads archives from a directory",
        err=True,
    )


def _bootstrap(settings: Settings) -> str:
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths

    try:
        return resolve_broker(settings, StackPaths(settings.home))
    except TapeflowError as exc:
        raise CliError(str(exc), 1) from None


def _database_url(settings: Settings) -> str:
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths

    try:
        endpoints = resolve_database(settings, StackPaths(settings.home))
    except TapeflowError as exc:
        raise CliError(str(exc), 1) from None
    return endpoints.readonly or endpoints.owner


def store(result: RunResult, settings: Callable[[], Settings]) -> str:
    """Store the run in ``backtest_runs``/``backtest_trades`` when a database is configured (external,
    or the embedded stack running); what happened, for the summary. Never fails the run."""
    import psycopg

    from backtest.report import store_run
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.paths import StackPaths

    try:
        s = settings()
        endpoints = resolve_database(s, StackPaths(s.home))
    except TapeflowError:
        return "not stored (no database: TAPEFLOW_DATABASE_URL unset and no stack running)"
    try:
        store_run(result, endpoints.writer)
    except psycopg.Error as exc:
        return f"not stored: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    return f"stored as run {result.run_id} in backtest_runs/backtest_trades"


def store_outcome_labels(result: RunResult, runner: Any, tape: Any, settings: Callable[[], Settings]) -> str:
    """The run's outcome labels (``backtest.outcome_labels``) beside its rows; what happened, for the summary."""
    import psycopg

    from backtest.outcome_labels import label_source, run_labels, store_labels
    from review.label_job import config_thresholds
    from review.labels import LabelParams
    from tapeflow_runtime.endpoints import resolve_database
    from tapeflow_runtime.paths import StackPaths

    s = settings()
    params = LabelParams(thresholds=config_thresholds(runner.strategies))  # each file's labels.roi_threshold
    labels = run_labels(runner, tape, params, result.end_ms)
    try:
        store_labels(resolve_database(s, StackPaths(s.home)).writer, result.run_id, labels, result.finished_at_ms)
    except psycopg.Error as exc:
        return f"; outcome labels not stored: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'error'}"
    return f", {len(labels)} outcome labels as source {label_source(result.run_id)}"


def run_with_progress(runner: Any, src: Any, progress: bool) -> RunResult:
    """Run with the Ctrl-C rule of the module docstring and a progress bar when stderr is a terminal."""
    stop = {"requested": False}

    def on_sigint(signum, frame) -> None:
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        sys.stderr.write(
            "\ninterrupted: finishing the current slice and writing a partial report (Ctrl-C again to abort)\n"
        )

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        if progress and sys.stderr.isatty():
            with _Bar(src) as bar:
                return runner.run(src, progress=bar.update, stop=lambda: stop["requested"])
        return runner.run(src, stop=lambda: stop["requested"])
    except KeyboardInterrupt:
        raise CliError("aborted; no report written", 130) from None
    finally:
        signal.signal(signal.SIGINT, previous)


class _Bar:
    """rich progress over event time, with ETA, trades/s, signals and closed trades (stderr)."""

    def __init__(self, src: Any) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[stats]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self.from_ms, self.to_ms = src.from_ms, src.to_ms
        self.started = time.monotonic()
        self.task = self.progress.add_task(
            f"backtest {src.name}", total=(self.to_ms - self.from_ms) / 1000, rate="", stats=""
        )

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, p: Any) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.progress.update(
            self.task,
            completed=(p.event_time_ms - self.from_ms) / 1000,
            description=f"backtest {fmt_ms(p.event_time_ms)}",
            rate=f"{p.trades / elapsed:,.0f} trades/s",
            stats=f"{p.trades:,} trades, {p.signals} signals, {p.closed} closed",
        )


def print_summary(result: RunResult, written: dict[str, Path], stored: str = "") -> None:
    from collections import defaultdict

    seconds = max((result.finished_at_ms - result.started_at_ms) / 1000, 1e-9)
    status = "PARTIAL (interrupted)" if result.partial else "complete"
    typer.echo(
        f"backtest {status}: {result.source}, {','.join(result.symbols)}, "
        f"{fmt_ms(result.from_ms)} to {fmt_ms(result.to_ms)} UTC"
    )
    typer.echo(
        f"  {result.trades_processed:,} trades and {result.events_processed - result.trades_processed:,} other "
        f"inputs in {seconds:.1f} s ({result.trades_processed / seconds:,.0f} trades/s), "
        f"{result.evaluations:,} evaluations, {result.signals} signals"
    )
    by_strategy: dict[str, list[float]] = defaultdict(list)
    for t in result.trades:
        by_strategy[t.strategy].append(t.pnl_r_net)
    for info in result.strategies:
        nets = by_strategy.get(info.name, [])
        wins = sum(1 for r in nets if r > 0)
        rate = f", win rate {wins / len(nets):.0%}" if nets else ""
        typer.echo(f"  {info.name} {info.version}: {len(nets)} trades, net {sum(nets):+.2f}R{rate}")
    if result.missing:
        typer.echo(f"  missing: {len(result.missing)} (e.g. {result.missing[0]})")
    if result.bad_rows:
        typer.echo(
            f"  bad rows: {result.params.get('bad_row_count', len(result.bad_rows))} (e.g. {result.bad_rows[0]})"
        )
    changes = result.params.get("degradation_changes") or []
    if changes:  # the maker-fill-ratio rule on event time sent entries to market (execution.maker_fill_rule)
        first = changes[0]
        typer.echo(
            f"  degradation: {len(changes)} changes ({sum(1 for c in changes if c['active'])} set); first at "
            f"{fmt_ms(first['time_ms'])} UTC, account {first['account']}: {first['detail']}"
        )
    if stored:
        typer.echo(f"  database: {stored}")
    typer.echo("report:")
    for kind, path in written.items():
        typer.echo(f"  {kind}: {path}")


def verify_command(
    settings: Settings,
    strategies: list[StrategyConfig],
    config: ExecutorConfig,
    *,
    symbols: str | None,
    from_: str | None,
    to: str | None,
    out: Path | None,
    progress: bool,
) -> int:
    """``--verify-against-topics``: backtest md.* from the broker (with 25 h of warm-up before
    ``--from``) and compare its signals and positions with what the stack published; the exit code."""
    from backtest.result_io import write_outputs
    from backtest.runner import BacktestRunner
    from backtest.sources import SourceError
    from backtest.verify import compare
    from tapeflow_runtime.topic_reader import StateReadError

    from_ms, to_ms, symbol_list = _verify_range(settings, symbols, from_, to)
    bootstrap = _bootstrap(settings)
    source = _verify_source(settings, bootstrap, symbol_list, from_ms, to_ms)
    runner = BacktestRunner(strategies, config, account="shared")
    typer.echo(
        f"verify: md.* of {','.join(symbol_list)} from {fmt_ms(source.from_ms)} (25 h of warm-up) to "
        f"{fmt_ms(to_ms)} UTC, comparing {fmt_ms(from_ms)} to {fmt_ms(to_ms)}",
        err=True,
    )
    try:
        result = run_with_progress(runner, source, progress)
        stack = _published(settings, bootstrap)
    except (SourceError, StateReadError) as exc:
        raise CliError(str(exc), 1) from None
    if result.trades_processed == 0:
        raise CliError(f"no md.trades records for {','.join(symbol_list)} in the broker in that range", 1)
    comparison = compare(
        stack["signals"].records,
        stack["positions"].records,
        runner.signals,
        runner.position_events(),
        [(s.name, s.config_hash) for s in strategies],
        symbol_list,
        from_ms,
        to_ms,
        stack["risk.events"].records,
    )
    if out is not None:
        for kind, path in write_outputs(result, out).items():
            typer.echo(f"report {kind}: {path}")
    return _print_comparison(comparison)


def _verify_range(
    settings: Settings, symbols: str | None, from_: str | None, to: str | None
) -> tuple[int, int, list[str]]:
    """The range and symbols ``--verify-against-topics`` compares."""
    from backtest.sources import SourceError, check_symbols

    if from_ is None or to is None:
        raise CliError("--verify-against-topics needs --from and --to (the range to compare)")
    from_ms, to_ms = parse_time(from_, "--from"), parse_time(to, "--to")
    if to_ms <= from_ms:
        raise CliError("--to must be after --from")
    try:
        symbol_list = check_symbols(symbols.split(",") if symbols else list(settings.symbols))
    except SourceError as exc:
        raise CliError(str(exc)) from None
    return from_ms, to_ms, symbol_list


def _verify_source(settings: Settings, bootstrap: str, symbols: list[str], from_ms: int, to_ms: int) -> TopicSource:
    """md.* of the broker from the warm-up before ``from_ms`` to ``to_ms``."""
    from backtest.sources.topics import TopicSource
    from backtest.verify import WARMUP_MS

    return TopicSource(
        bootstrap,
        symbols,
        from_ms - WARMUP_MS,
        to_ms,
        topic_prefix=settings.topic_prefix,
        registry_url=settings.schema_registry_url,
    )


def _published(settings: Settings, bootstrap: str) -> dict[str, Any]:
    """What the stack published: its signals, positions and risk events topics."""
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow_runtime.topic_reader import read_topics

    return read_topics(
        bootstrap,
        settings.topic_prefix,
        {"signals": None, "positions": None, "risk.events": None},
        AvroSerde(registry_from_url(settings.schema_registry_url)),
        timeout_s=600,
    )


def _print_comparison(comparison: Comparison) -> int:
    """The comparison's counts and differences (at most 50); 0 when identical, else 1."""
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
