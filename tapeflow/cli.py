"""The `tapeflow` command: one entry point for the stack, topics, database and (later) the services.

Every user-facing failure is a one-line `error: ...` with a non-zero exit code, never a traceback:
configuration and stack problems are expected events, not bugs.
"""

from __future__ import annotations

import inspect
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import typer

from backtest.cli import register as register_backtest
from schemas.catalogue import ENGINE_INPUTS
from tapeflow import __version__
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.speed import parse_speed

if TYPE_CHECKING:  # settings (pydantic-settings: ~60 % of `tapeflow --help`'s imports) load when a command reads them
    from tapeflow_runtime.settings import Settings

BINANCE_REST_URL = "https://fapi.binance.com"

app = typer.Typer(
    name="tapeflow",
    help="Kafka-based order-flow pipeline for crypto derivatives: run the stack, inspect topics, manage the database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Inspect and create Kafka topics (schema-aware: records are decoded from Avro).",
                         no_args_is_help=True)
db_app = typer.Typer(help="Database tasks.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")


class _State:
    config_file: Path | None = None
    _settings: Settings | None = None

    def __init__(self) -> None:
        self.overrides: dict[str, object] = {}

    def settings(self) -> Settings:
        if self._settings is None:
            from tapeflow_runtime.settings import load_settings

            self._settings = load_settings(self.config_file, **self.overrides)
        return self._settings

    def paths(self) -> StackPaths:
        return StackPaths(self.settings().home)


state = _State()


def echo(msg: str) -> None:
    typer.echo(msg)
    sys.stdout.flush()


def fail(msg: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


@app.callback()
def main_options(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML settings file (same keys as the TAPEFLOW_* variables, lower case).",
        envvar="TAPEFLOW_CONFIG", show_envvar=True),
) -> None:
    """Settings come from TAPEFLOW_* environment variables, a .env file and an optional YAML file."""
    state.config_file = config
    state._settings = None


# --- stack ---------------------------------------------------------------------------------------
@app.command()
def up(
    detach: bool = typer.Option(False, "--detach", "-d", help="Run in the background and return once healthy."),
    source: str | None = typer.Option(
        None, "--source", help="Market data: `live` (Binance) or `replay:DIR` (a recording, offline). "
        "Default: TAPEFLOW_SOURCE or live."),
    replay_speed: str | None = typer.Option(None, "--replay-speed", help="With replay: 1x, 10x, ... or max (the x is "
                                            "optional)."),
    input_prefix: str | None = typer.Option(
        None, "--input-prefix", help="Rehearsal: run sink, engine and executor on the namespace NAME that "
        "`tapeflow replay --to-prefix NAME` fills (no producer; point TAPEFLOW_BROKER at the broker holding it)."),
) -> None:
    """Start the stack and supervise it: broker, PostgreSQL, migrations, topics, then the sink, the signal
    engine and the paper executor (and the cross-venue watchlist when TAPEFLOW_WATCHLIST=true), then the
    producer (with --source replay:DIR, a local fake exchange replaying the recording feeds it), then the
    web UI (`tapeflow ui`; its login URL, with the token, is printed). A crashed service is restarted with
    backoff."""
    from sinks.retention import resolve_policies
    from tapeflow.stack.supervisor import run_foreground, start_detached

    state.overrides.update({k: v for k, v in (("source", source), ("replay_speed", replay_speed)) if v})
    state._settings = None
    _use_namespace(input_prefix)
    settings, paths = state.settings(), state.paths()
    resolve_policies(settings.retention)  # a retention typo fails here, in one line, before anything starts
    runner = start_detached if detach else run_foreground
    raise typer.Exit(runner(settings, paths, echo))


@app.command()
def down() -> None:
    """Stop everything `up` started in this TAPEFLOW_HOME (SIGTERM, then SIGKILL after a timeout)."""
    from tapeflow.stack.supervisor import stop_stack

    raise typer.Exit(stop_stack(state.settings(), state.paths(), echo))


@app.command()
def status(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Health, address, pid and uptime of each component; exit code 0 only when all are healthy."""
    from tapeflow.stack.supervisor import stack_status

    settings = state.settings()
    components = stack_status(settings, state.paths())
    healthy = all(c.healthy for c in components)
    if json_out:
        typer.echo(orjson.dumps({"healthy": healthy, "components": [c.as_dict() for c in components],
                                 "config": settings.masked()}, option=orjson.OPT_INDENT_2).decode())
    else:
        echo(f"{'COMPONENT':<15}{'HEALTH':<8}{'STATE':<10}{'ADDRESS':<22}{'PID':<8}{'UPTIME':<9}DETAIL")
        for c in components:
            echo(f"{c.name:<15}{'ok' if c.healthy else 'FAIL':<8}{c.state:<10}{c.address or '-':<22}"
                 f"{c.pid or '-':<8}{_fmt_uptime(c.uptime_s):<9}{c.detail}")
        echo("")
        echo("config (secrets masked):")
        for k, v in settings.masked().items():
            echo(f"  {k}: {v}")
    raise typer.Exit(0 if healthy else 1)


def _fmt_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@app.command()
def logs(
    component: str | None = typer.Argument(None, help="supervisor, broker, database, ... (default: all)."),
    lines: int = typer.Option(40, "--lines", "-n", min=0, help="How many trailing lines per log."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (Ctrl-C to stop)."),
) -> None:
    """Show the logs of the stack's components (files under TAPEFLOW_HOME/logs)."""
    logs_dir = state.paths().logs_dir
    files = sorted(logs_dir.glob("*.log")) if logs_dir.exists() else []
    if component:
        files = [f for f in files if f.stem == component]
        if not files:
            known = ", ".join(f.stem for f in sorted(logs_dir.glob("*.log"))) if logs_dir.exists() else "none"
            raise fail(f"no log for {component!r} in {logs_dir} (available: {known or 'none'})")
    if not files:
        raise fail(f"no logs in {logs_dir}: has `tapeflow up` run with this TAPEFLOW_HOME?")
    offsets = {}
    for f in files:
        content = f.read_bytes().decode(errors="replace").splitlines()
        prefix = f"[{f.stem}] " if len(files) > 1 else ""
        for line in content[-lines:] if lines else []:
            echo(prefix + line)
        offsets[f] = f.stat().st_size
    while follow:
        time.sleep(0.5)
        for f in files:
            size = f.stat().st_size
            if size > offsets[f]:
                with open(f, "rb") as fh:
                    fh.seek(offsets[f])
                    chunk = fh.read().decode(errors="replace")
                offsets[f] = size
                prefix = f"[{f.stem}] " if len(files) > 1 else ""
                for line in chunk.splitlines():
                    echo(prefix + line)


@app.command()
def version() -> None:
    """Print the tapeflow version."""
    echo(f"tapeflow {__version__} (Python {sys.version.split()[0]})")


# --- market data ----------------------------------------------------------------------------------
@app.command()
def produce(
    exchange: str = typer.Option("binance", "--exchange",
                                 help="binance (USD-M futures), bybit (v5 linear) or okx (USDT perpetual swaps)."),
    bybit_ws_url: str | None = typer.Option(
        None, "--bybit-ws-url", help="Bybit v5 public linear websocket URL (default: wss://stream.bybit.com/v5/public/linear)."),
    okx_ws_url: str | None = typer.Option(
        None, "--okx-ws-url", help="OKX v5 public websocket URL (default: wss://ws.okx.com:8443/ws/v5/public)."),
    okx_rest_url: str | None = typer.Option(
        None, "--okx-rest-url", help="OKX v5 REST base URL for instruments and book snapshots (default: https://www.okx.com)."),
    ws_url: str = typer.Option("wss://fstream.binance.com", "--ws-url", help="Binance USD-M websocket base URL."),
    rest_url: str = typer.Option(BINANCE_REST_URL, "--rest-url", help="Binance USD-M REST base URL."),
    spot_url: str = typer.Option("https://api.binance.com", "--spot-url", help="Binance spot REST (divergence)."),
    coinbase_url: str = typer.Option("https://api.exchange.coinbase.com", "--coinbase-url",
                                     help="Coinbase REST (premium)."),
    replay_control_url: str | None = typer.Option(
        None, "--replay-control-url", help="Fake exchange control URL: stop cleanly when its replay ends."),
    symbols_from_recording: bool = typer.Option(
        False, "--symbols-from-recording", help="Use the symbols of the TAPEFLOW_SOURCE=replay:DIR recording."),
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="Port of /metrics and /health (0 = a free one, logged)."),
    warm_start_hours: float | None = typer.Option(
        None, "--warm-start-hours", min=0.0, max=72.0,
        help="Binance: before streaming, publish this many hours of history into md.* (Vision archives, REST "
             "aggTrades, OI/ratio/funding/mark history, or the database when it holds them). Default: "
             "TAPEFLOW_WARM_START_HOURS (25) live, 0 with --replay-control-url."),
    warm_start_detail_minutes: float | None = typer.Option(
        None, "--warm-start-detail-minutes", min=0.0, max=4320.0,
        help="Binance warm start: trade by trade (REST aggTrades) only for the last this many minutes, 1m klines "
             "before (0 = every trade: Vision and REST). Default: TAPEFLOW_WARM_START_DETAIL_MINUTES (62)."),
    vision_url: str | None = typer.Option(
        None, "--vision-url", help="Binance Vision base URL (or a mirror) for the warm start's archives. Default: "
                                   "https://data.binance.vision, or --rest-url when that is not Binance's (the local "
                                   "fake exchange serves both)."),
) -> None:
    """Run an exchange producer into the md.* topics (Binance: aggTrade, depth, markPrice, forceOrder, REST
    indicators; Bybit: publicTrade, orderbook.50, allLiquidation, tickers; OKX: trades, books, mark-price,
    index-tickers, funding-rate on SYMBOL's -SWAP, e.g. BTCUSDT as BTC-USDT-SWAP, sizes converted to base coin)."""
    import asyncio

    from producers.service import ProduceOptions, run_producer
    from tapeflow_runtime.logs import configure_logging

    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    if symbols_from_recording:
        if settings.replay_dir is None:
            raise fail("--symbols-from-recording needs TAPEFLOW_SOURCE=replay:DIR", 2)
        from fake_exchange.recording import load_recording

        state._settings = settings.model_copy(update={"symbols": list(load_recording(settings.replay_dir).symbols)})
        settings = state._settings
    if exchange not in ("binance", "bybit", "okx"):
        raise fail(f"unknown exchange {exchange!r}: expected binance, bybit or okx", 2)
    if warm_start_hours is None:
        warm_start_hours = 0.0 if replay_control_url else settings.warm_start_hours
    if vision_url is None:
        vision_url = "https://data.binance.vision" if rest_url == BINANCE_REST_URL else rest_url
    options = ProduceOptions(exchange=exchange, bybit_ws_url=bybit_ws_url, okx_ws_url=okx_ws_url,
                             okx_rest_url=okx_rest_url, ws_base_url=ws_url, rest_base_url=rest_url,
                             spot_base_url=spot_url, coinbase_base_url=coinbase_url,
                             replay_control_url=replay_control_url, metrics_port=metrics_port,
                             metrics_host=settings.metrics_host,
                             warm_start_hours=warm_start_hours if exchange == "binance" else 0.0,
                             vision_url=vision_url,
                             warm_start_detail_minutes=(settings.warm_start_detail_minutes
                                                        if warm_start_detail_minutes is None
                                                        else warm_start_detail_minutes))
    raise typer.Exit(asyncio.run(run_producer(settings, options)))


@app.command("fake-exchange", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def fake_exchange(ctx: typer.Context) -> None:
    """Run the local fake Binance exchange (websocket + REST) replaying a recording or a synthetic session.

    Options are those of `python -m fake_exchange --help`: --recording DIR | --synthetic-seed N,
    --speed 1|10|max, --ws-port, --rest-port, --fault KEY=VALUE (repeatable), ...
    """
    from fake_exchange.cli import main as fake_main

    fake_main(list(ctx.args) or ["--help"])


backfill_app = typer.Typer(help="Load historical market data into the topics.", no_args_is_help=True)
app.add_typer(backfill_app, name="backfill")


@backfill_app.command("binance-vision")
def backfill_binance_vision(
    symbol: str = typer.Option(..., "--symbol", help="Binance USD-M symbol, e.g. BTCUSDT."),
    from_day: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD, UTC)."),
    to_day: str = typer.Option(..., "--to", help="End day, exclusive (YYYY-MM-DD, UTC: its midnight)."),
    directory: Path | None = typer.Option(
        None, "--dir", help="Read <SYMBOL>-aggTrades-<day>.zip|.csv from here instead of downloading."),
    topic: str = typer.Option("md.trades", "--topic", help="Target topic (md.trades or a replay topic name)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Publish Binance Vision daily aggTrades (downloaded with checksum, or local) in agg-id order; resumable."""
    from producers.backfill.binance_vision import run_backfill
    from producers.backfill.days import parse_day
    from producers.backfill.errors import BackfillError
    from producers.backfill.summary import format_summary

    settings = state.settings()
    try:
        start, stop = parse_day(from_day, "--from"), parse_day(to_day, "--to")
        if stop <= start:
            raise BackfillError(f"--from {start.isoformat()} is not before --to {stop.isoformat()} (--to is excluded)")
        # --to is excluded, as in every command; run_backfill takes its last day
        summary = run_backfill(bootstrap=_bootstrap(), topic_prefix=settings.topic_prefix, home=settings.home,
                               symbol=symbol.upper(), start=start, end=stop - timedelta(days=1), directory=directory,
                               topic=topic, progress=not no_progress, registry_url=settings.schema_registry_url)
    except BackfillError as exc:
        raise fail(str(exc))
    echo(summary.to_json() if json_out else format_summary(summary))


# --- backtest -----------------------------------------------------------------------------------
register_backtest(app, lambda: state.settings())
@app.command()
def replay(
    to_prefix: str = typer.Option(..., "--to-prefix", help="Namespace NAME: copies go to <prefix>NAME.<topic>."),
    from_time: str = typer.Option(..., "--from", help="Start (ISO date/time, UTC, or Unix ms): the first records "
                                  "copied are those that reached the broker at or after it (arrival time, the "
                                  "records' timestamps; not event time)."),
    to_time: str = typer.Option(..., "--to", help="End, exclusive (ISO date/time, UTC, or Unix ms; a date means its "
                                "midnight), in arrival time: records that reached the broker from then on, or "
                                "after the replay started, are not copied."),
    topics: str = typer.Option(",".join(ENGINE_INPUTS), "--topics",
                               help="Comma-separated md.* topics (default: the engine's inputs)."),
    speed: str = typer.Option("max", "--speed", help="Pace on the records' event times: 1x (as the events "
                              "happened), 10x, ... or max."),
    symbols: str | None = typer.Option(None, "--symbols", help="Only these symbols (comma-separated)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Copy the md.* records that reached the broker between --from and --to into a namespace, in event-time
    order, with progress markers, so `engine|execute|sink|up --input-prefix NAME` rehearse on it.

    The range is in arrival time (record timestamps: the broker stamps each record when it arrives, so a
    recording loaded today arrived today; `tapeflow topics describe` shows each topic's first and last
    arrival). Order, --speed and the progress markers follow the event times inside the records (trade
    time, exchange event time, receive time). Copies keep their key and bytes, hence their event times;
    their own timestamps are their arrival in the namespace."""
    import dataclasses
    import re

    from producers.topic_replay import ReplayError, TopicReplay
    from schemas.registry import registry_from_url
    from schemas.serde import AvroSerde
    from tapeflow_runtime.logs import configure_logging

    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", to_prefix):
        raise fail(f"--to-prefix {to_prefix!r}: letters, digits, '_' and '-' only", 2)
    try:
        pace = parse_speed(speed)
    except ValueError as exc:
        raise fail(f"--speed {speed!r}: {exc}", 2) from None
    start, end = _parse_time(from_time, "--from"), _parse_time(to_time, "--to")
    show = not no_progress and sys.stderr.isatty()
    last_shown = [0.0]

    def progress(summary) -> None:
        if show and time.monotonic() - last_shown[0] >= 0.5 and summary.last_event_ms is not None:
            last_shown[0] = time.monotonic()
            done = summary.read / max(summary.in_range, 1)  # the range is in arrival time, the pace in event time
            sys.stderr.write(f"\rreplay {min(max(done, 0.0), 1.0):6.1%}  {summary.records:,} records  "
                             f"at {datetime.fromtimestamp(summary.last_event_ms / 1000, tz=UTC):%Y-%m-%d %H:%M:%S}")
            sys.stderr.flush()

    try:
        job = TopicReplay(_bootstrap(), AvroSerde(registry_from_url(settings.schema_registry_url)),
                          source_prefix=settings.topic_prefix, target_prefix=f"{settings.topic_prefix}{to_prefix}.",
                          topics=topics.split(","), from_ms=int(start.timestamp() * 1000),
                          to_ms=int(end.timestamp() * 1000), speed=pace,
                          symbols=symbols.split(",") if symbols else None, on_progress=progress)
        summary = job.run()
    except ReplayError as exc:
        raise fail(str(exc), 2)
    if show:
        sys.stderr.write("\n")
    echo(orjson.dumps(dataclasses.asdict(summary)).decode() if json_out else summary.line())
    if summary.records == 0:
        raise fail("nothing in that range: check --from/--to (record timestamps, UTC) and --topics")
    raise typer.Exit(0 if summary.undelivered == 0 else 1)


# --- engine -------------------------------------------------------------------------------------
@app.command()
def engine(
    strategy: list[Path] | None = typer.Option(
        None, "--strategy", help="Strategy file (YAML/JSON), repeatable (A/B). Default: the shipped ones."),
    exactly_once: bool = typer.Option(
        True, "--exactly-once/--at-least-once",
        help="Exactly-once: outputs, state snapshots and input offsets commit in one Kafka transaction per "
             "partition and commit interval (the broker must serve transactions). At-least-once: a crash can "
             "repeat outputs in the topics (the database still stores each once)."),
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="Port of /metrics and /health (0 = a free one, logged)."),
    eval_interval_ms: int = typer.Option(15_000, "--eval-interval-ms", min=1_000, max=60_000,
                                         help="Evaluate at least this often per symbol (also on every closed "
                                              "1-second bucket with new trades)."),
    prime_hours: float = typer.Option(25.0, "--prime-hours", min=0.0,
                                      help="A new engine group starts this many hours back in md.* so the 24 h "
                                           "windows fill from history (0 = no priming: read everything retained)."),
    allowed_lateness_ms: int = typer.Option(
        0, "--allowed-lateness-ms", min=0, max=600_000,
        help="Hold evaluation this long in event time so inputs from other topics that arrive a little "
             "out of order are not late. Replays need none: their progress markers order the inputs."),
    wait_for_progress: bool | None = typer.Option(
        None, "--wait-for-progress/--no-wait-for-progress",
        help="A new group holds every symbol until md.progress markers (a replay's producer, `tapeflow replay`, "
             "the warm start) release it, so its output does not depend on how the topics' fetches "
             "interleave. Default: on for a replay:DIR source or an --input-prefix namespace."),
    signal_max_age_s: float | None = typer.Option(
        None, "--signal-max-age-s", min=0.0,
        help="Keep signals evaluated more than this long ago (wall clock) off `signals`; features are still "
             "written. Default: 60 s for a live source, unlimited for replay:DIR or --input-prefix."),
    input_prefix: str | None = typer.Option(
        None, "--input-prefix", help="Read md.* from, and write outputs to, the namespace NAME that "
        "`tapeflow replay --to-prefix NAME` fills (never the live topics)."),
) -> None:
    """Run the signal engine (Faust): md.* in, bars.1m / features / signals out, state in Faust tables.

    Start it more than once to share the partitions between workers (same settings, same group)."""
    import asyncio

    from stream_apps.service import run_engine
    from tapeflow_runtime.logs import configure_logging

    _use_namespace(input_prefix)
    settings = state.settings()
    for path in strategy or []:
        if not path.is_file():
            raise fail(f"strategy file {path} does not exist", 2)
    rehearsal = settings.replay_dir is not None or bool(settings.namespace)
    if signal_max_age_s is None and not rehearsal:
        signal_max_age_s = 60.0
    if wait_for_progress is None:
        wait_for_progress = rehearsal
    configure_logging(settings.log_level, settings.log_format)
    code = asyncio.run(run_engine(
        settings, metrics_port=metrics_port, strategies=list(strategy) if strategy else None,
        processing_guarantee="exactly_once" if exactly_once else "at_least_once",
        eval_interval_ms=eval_interval_ms, allowed_lateness_ms=allowed_lateness_ms,
        wait_for_progress=wait_for_progress,
        signal_max_age_ms=None if signal_max_age_s is None else int(signal_max_age_s * 1000),
        prime_history_ms=int(prime_hours * 3_600_000) if prime_hours > 0 else None))
    raise typer.Exit(code)


# --- execution ----------------------------------------------------------------------------------
@app.command()
def execute(
    mode: str = typer.Option("paper", "--mode", help="paper (default), testnet or live. Live needs "
                             "TAPEFLOW_LIVE_TRADING=I_UNDERSTAND and Binance keys in the environment."),
    config: Path | None = typer.Option(None, "--executor-config",
                                          help="Executor settings (YAML/JSON): balance, risk %, fees, risk guard."),
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="Port of /metrics and /health (0 = a free one, logged)."),
    from_beginning: bool = typer.Option(False, "--from-beginning",
                                        help="A new consumer group starts at the beginning of its inputs, not "
                                             "their end (trade a replay already in the broker)."),
    input_prefix: str | None = typer.Option(
        None, "--input-prefix", help="Trade the signals of the namespace NAME (`tapeflow replay --to-prefix "
        "NAME`), writing orders/fills/positions there too; paper only; starts at the namespace's beginning."),
) -> None:
    """Turn signals into orders: position manager, risk guard and the paper broker (or an exchange when keyed)."""
    import asyncio

    from execution.service import ExecuteOptions, run_executor
    from tapeflow_runtime.logs import configure_logging

    if mode not in ("paper", "testnet", "live"):
        raise fail(f"unknown mode {mode!r}: expected paper, testnet or live", 2)
    if input_prefix and mode != "paper":
        raise fail("--input-prefix rehearses on replayed history: paper mode only", 2)
    _use_namespace(input_prefix)
    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    options = ExecuteOptions(config_path=config, metrics_port=metrics_port, metrics_host=settings.metrics_host,
                             start_from="earliest" if from_beginning or settings.namespace else "latest")
    raise typer.Exit(asyncio.run(run_executor(settings, mode, options)))


# --- cross-venue watchlist ------------------------------------------------------------------------
@app.command("cross-venue")
def cross_venue(
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="Port of /metrics and /health (0 = a free one, logged)."),
    venues: str = typer.Option("binance,bybit,okx", "--venues", help="Comma-separated venues: the legs; every "
                               "ordered pair of them is a feature record."),
    sweep_notional_usd: float = typer.Option(10_000.0, "--sweep-notional-usd", min=1.0,
                                             help="Notional the swept (executable) spread is computed for."),
    max_staleness_ms: int = typer.Option(2_000, "--max-staleness-ms", min=0,
                                         help="A leg whose book is older than this at an evaluation makes the "
                                              "pair's spreads missing, with the reason."),
    publish_interval_ms: int = typer.Option(15_000, "--publish-interval-ms", min=1_000,
                                            help="Event time between two records of a coin (whole seconds; the "
                                                 "state evaluates every second for its rolling statistics)."),
    lateness_ms: int = typer.Option(1_000, "--lateness-ms", min=0, max=60_000,
                                    help="Hold inputs this long in event time, so a venue whose books arrive "
                                         "a little later than another's is not late."),
    prime_minutes: float = typer.Option(15.0, "--prime-minutes", min=0.0,
                                        help="A new group without a checkpoint starts this far back in md.* "
                                             "(0 = where --from-beginning says)."),
    from_beginning: bool = typer.Option(False, "--from-beginning",
                                        help="A new group without priming reads md.* from the beginning, not "
                                             "the end."),
    strategies: list[Path] = typer.Option([], "--strategy", help="A watchlist strategy file (`kind: watchlist`) "
                                          "to trade as hedged paper pairs on the same inputs: xv.signals, "
                                          "xv.orders, xv.funding, xv.pairs (repeat for several; default: "
                                          "TAPEFLOW_WATCHLIST_STRATEGIES)."),
    instrument_rules: Path | None = typer.Option(None, "--instrument-rules", help="The venues' lot steps, minimum "
                                                 "order sizes and minimum notionals (a file of `tapeflow watchlist "
                                                 "rules --out`): the strategies' pairs trade quantities the venues "
                                                 "accept. Without it they are unrounded (default: "
                                                 "TAPEFLOW_WATCHLIST_INSTRUMENT_RULES)."),
) -> None:
    """Run the watchlist service: md.book/md.mark/md.indicators of every venue in, cross-venue features per
    coin and venue pair out to xv.features (the sink stores them in xv_features); with --strategy, each
    watchlist strategy's signals and hedged paper pairs as well."""
    import asyncio

    from stream_apps.cross_venue.state import CrossVenueParams
    from stream_apps.watchlist.service import WatchlistOptions, run_watchlist
    from tapeflow_runtime.logs import configure_logging

    settings = state.settings()
    try:  # every input checked before logging is configured: a refusal is one line on stderr
        traders = _watchlist_traders(strategies or [Path(p) for p in settings.watchlist_strategies],
                                     _instrument_rules(instrument_rules or settings.watchlist_instrument_rules))
        params = CrossVenueParams(venues=tuple(v.strip() for v in venues.split(",") if v.strip()),
                                  sweep_notional_usd=sweep_notional_usd, max_staleness_ms=max_staleness_ms)
        options = WatchlistOptions(params=params, publish_interval_ms=publish_interval_ms, lateness_ms=lateness_ms,
                                   prime_history_ms=int(prime_minutes * 60_000) if prime_minutes > 0 else None,
                                   start_from="earliest" if from_beginning else "latest",
                                   metrics_port=metrics_port, metrics_host=settings.metrics_host, traders=traders)
    except (ValueError, TapeflowError) as exc:
        raise fail(str(exc), 2) from None
    configure_logging(settings.log_level, settings.log_format)
    raise typer.Exit(asyncio.run(run_watchlist(settings, options)))


def _instrument_rules(path: Path | None):
    """The venue rules of an ``--instrument-rules`` file (None without one); a bad file is a ValueError."""
    if path is None:
        return None
    from execution.instrument_rules import InstrumentRules

    return InstrumentRules.load(path)


def _watchlist_traders(paths: list[Path], rules=None) -> tuple:
    """One live trader per watchlist strategy file (its model file loaded), in the order given; two
    files of the same strategy name and version are refused (their records would share ids). `rules`
    (``execution.instrument_rules.InstrumentRules``): the venues' lot steps for every trader."""
    from execution.watchlist_trader import WatchlistTrader
    from stream_apps.watchlist.model import load_model
    from stream_apps.watchlist.strategy import load_watchlist_strategy, model_path

    traders, names = [], set()
    for path in paths:
        if not path.is_file():
            raise ValueError(f"strategy file {path} does not exist")
        strategy = load_watchlist_strategy(path)
        model = load_model(model_path(strategy)) if strategy.model is not None else None
        key = (strategy.name, strategy.version)
        if key in names:
            raise ValueError(f"{path}: strategy {strategy.name} {strategy.version} given twice")
        names.add(key)
        traders.append(WatchlistTrader(strategy, model, rules=rules))
    return tuple(traders)


watchlist_app = typer.Typer(invoke_without_command=True, help="The cross-venue watchlist: with no command, the live "
                             "ranking of venue pairs by executable (swept) spread, from the database's xv_features; "
                             "`backtest` and `fit` run a watchlist strategy and fit its model offline.")
app.add_typer(watchlist_app, name="watchlist")


@watchlist_app.callback()
def watchlist(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, help="Pairs shown (and missing pairs listed)."),
    window_s: float = typer.Option(300.0, "--window-s", min=1.0,
                                   help="A coin is shown at its latest evaluation within this many seconds "
                                        "before the newest one in the table."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the live ranking of venue pairs by executable (swept) spread, from the database's xv_features."""
    if ctx.invoked_subcommand is not None:
        return
    import psycopg

    from stream_apps.watchlist.ranking import ranking, render
    from tapeflow_runtime.endpoints import resolve_database

    endpoints = resolve_database(state.settings(), state.paths())
    with psycopg.connect(endpoints.readonly or endpoints.owner) as conn:
        pairs = ranking(conn, window_s)
    if pairs is None:
        raise fail("the database has no xv_features table: run `tapeflow db migrate` (or `tapeflow up`)")
    if json_out:
        typer.echo(orjson.dumps([p.as_dict() for p in pairs[:limit]], option=orjson.OPT_INDENT_2).decode())
    else:
        echo(render(pairs, limit))


@watchlist_app.command("rules")
def watchlist_rules(
    out: Path = typer.Option(..., "--out", help="The JSON file to write (`cross-venue --instrument-rules FILE`)."),
    venues: str = typer.Option("binance,bybit,okx", "--venues", help="Comma-separated venues to download."),
    binance_url: str = typer.Option("https://fapi.binance.com", "--binance-url", help="Binance USD-M REST base URL."),
    bybit_url: str = typer.Option("https://api.bybit.com", "--bybit-url", help="Bybit v5 REST base URL."),
    okx_url: str = typer.Option("https://www.okx.com", "--okx-url", help="OKX v5 REST base URL."),
    timeout_s: float = typer.Option(20.0, "--timeout-s", min=1.0, help="Per venue, all pages and retries."),
) -> None:
    """Download every perpetual's lot step, minimum order size and minimum notional (in coins) from the
    venues' public instruments endpoints into a file the watchlist's hedged pairs trade by."""
    from execution.instrument_rules import InstrumentRulesError
    from execution.instrument_rules_fetch import fetch_rules_blocking

    names = [v.strip() for v in venues.split(",") if v.strip()]
    try:
        rules = fetch_rules_blocking(names, {"binance": binance_url, "bybit": bybit_url, "okx": okx_url},
                                     timeout_s=timeout_s)
        out.parent.mkdir(parents=True, exist_ok=True)
        rules.save(out)
    except (InstrumentRulesError, OSError) as exc:
        raise fail(str(exc)) from None
    counts = ", ".join(f"{v} {sum(k[0] == v for k in rules.rules)}" for v in names)
    echo(f"{len(rules)} instrument rules ({counts}) written to {out}")


@app.command()
def notify(
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="Port of /metrics and /health (0 = a free one, logged)."),
) -> None:
    """Send signals, fills, closed positions and risk events to Telegram, Discord or a webhook.

    Channels are on when their secrets are set: TAPEFLOW_TELEGRAM_BOT_TOKEN + TAPEFLOW_TELEGRAM_CHAT_ID,
    TAPEFLOW_DISCORD_WEBHOOK_URL, TAPEFLOW_NOTIFY_WEBHOOK_URL (or *_FILE). At most
    TAPEFLOW_NOTIFY_RATE_PER_MINUTE messages per channel; the rest is summarised."""
    import asyncio

    from tapeflow_notify.service import run_notifier
    from tapeflow_runtime.logs import configure_logging

    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    raise typer.Exit(asyncio.run(run_notifier(settings, metrics_port, settings.metrics_host)))


@app.command()
def ui(
    host: str | None = typer.Option(None, "--host", help="Listen address (default: TAPEFLOW_UI_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=0, max=65535,
                                    help="Port (default: TAPEFLOW_UI_PORT; 0 = a free one, printed)."),
    print_url: bool = typer.Option(False, "--print-url", help="Print the login URL (with the token) of the UI "
                                   "`tapeflow up` runs in this TAPEFLOW_HOME, and exit."),
) -> None:
    """Serve the web UI: order-flow charts per symbol (candles, CVD, VWAP, signals, footprint, volume
    profile, liquidity heatmap), the market overview and the watchlist desk. Reads the database with
    the read-only role; every request needs the token in TAPEFLOW_HOME/secrets/ui-token."""
    from tapeflow.stack.process import free_port
    from tapeflow_runtime.logs import configure_logging
    from tapeflow_runtime.process_records import ProcessRecord
    from tapeflow_ui.security import load_token
    from tapeflow_ui.service import login_url, run_ui

    settings, paths = state.settings(), state.paths()
    if print_url:
        rec = ProcessRecord.load(paths.state_file("ui"))
        if rec is not None and rec.is_alive():
            address = rec.address
        elif settings.ui_port:  # a UI this `up` did not start, on its fixed port (compose: the ui service)
            address = f"{settings.ui_host}:{settings.ui_port}"
        else:
            raise fail(f"no UI running in {paths.home}: start the stack with `tapeflow up` (or run `tapeflow ui`)")
        echo(login_url(address, load_token(paths)))
        return
    configure_logging(settings.log_level, settings.log_format)
    host = host or settings.ui_host
    port = port if port is not None else settings.ui_port
    try:
        code = run_ui(settings, paths, host, port or free_port(host), echo, consumer_lag=_ui_consumer_lag(settings, paths))
    except TapeflowError as exc:
        raise fail(str(exc))
    raise typer.Exit(code)


@app.command("kill-switch")
def kill_switch(
    state_: str = typer.Argument(..., metavar="on|off", help="on: cancel open orders and block entries; off: resume."),
    flatten: bool = typer.Option(False, "--flatten", help="With on: also close open positions at market."),
    mode: str | None = typer.Option(None, "--mode", help="Only this mode (paper, testnet, live); default all."),
) -> None:
    """Block (or unblock) new entries for the executors; the decision is published on risk.events."""
    from execution.kill_switch import MODES, run_kill_switch
    from tapeflow_runtime.logs import configure_logging

    if state_ not in ("on", "off"):
        raise fail(f"expected on or off, got {state_!r}", 2)
    if mode is not None and mode not in MODES:
        raise fail(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}", 2)
    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    code = run_kill_switch(settings, state_ == "on", flatten=flatten, modes=[mode] if mode else MODES)
    if code == 0:
        echo(f"kill switch {state_} published for {mode or ', '.join(MODES)}")
    raise typer.Exit(code)


def _parse_time(text: str, flag: str) -> datetime:
    """`--from`/`--to` as every command reads them (tapeflow_runtime.instants); a bad one exits 2."""
    from tapeflow_runtime.instants import parse_moment

    try:
        return parse_moment(text, flag)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def _use_namespace(name: str | None) -> None:
    """`--input-prefix NAME`: every topic (inputs, outputs, consumer groups) moves to `<prefix>NAME.`,
    where `tapeflow replay --to-prefix NAME` copied the history; nothing is read from or written to the
    live topics."""
    if not name:
        return
    import re

    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise fail(f"--input-prefix {name!r}: letters, digits, '_' and '-' only", 2)
    base = state.settings().topic_prefix
    state.overrides.update(topic_prefix=f"{base}{name}.", namespace=name)
    state._settings = None


# --- topics --------------------------------------------------------------------------------------
def _bootstrap() -> str:
    from tapeflow_runtime.endpoints import resolve_broker

    return resolve_broker(state.settings(), state.paths())


@topics_app.command("list")
def topics_list(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Topics on the broker with partitions and record counts; catalogue topics are marked."""
    from schemas.catalogue import all_topics
    from tapeflow_runtime.kafka_client import admin_client, describe_topics

    settings = state.settings()
    bootstrap = _bootstrap()
    names = sorted(t for t in admin_client(bootstrap).list_topics(timeout=10).topics if not t.startswith("__"))
    catalogue = {settings.topic_prefix + t.name for t in all_topics()}
    rows = [{**r, "catalogue": r["topic"] in catalogue} for r in describe_topics(bootstrap, names) if r.get("exists")]
    if json_out:
        for r in rows:
            typer.echo(orjson.dumps(r).decode())
        return
    echo(f"{'TOPIC':<32}{'PARTS':>6}{'RECORDS':>12}  CATALOGUE")
    for r in rows:
        echo(f"{r['topic']:<32}{len(r.get('partitions', [])):>6}{r.get('messages', 0):>12}  "
             f"{'yes' if r['catalogue'] else 'no'}")
    missing = sorted(catalogue - {r["topic"] for r in rows})
    if missing:
        echo(f"\n{len(missing)} catalogue topic(s) missing: {', '.join(missing)} (run `tapeflow topics create`)")


@topics_app.command("describe")
def topics_describe(
    topics: list[str] = typer.Argument(None, help="Topic names (default: every catalogue topic)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Partitions, offsets (the last stable offset where a transaction is open), retention, first and last
    record time, configuration, catalogue entry (key, schema) and the consumer groups reading each topic
    with their lag. Record times are the broker's
    arrival stamps (LogAppendTime): the first is the oldest record retention has kept."""
    from schemas.catalogue import all_topics
    from tapeflow.topic_groups import groups_lag
    from tapeflow.topic_times import format_ms, format_retention, topic_spans
    from tapeflow_runtime.kafka_client import describe_topics

    settings = state.settings()
    base = settings.topic_prefix
    by_name = {t.name: t for t in all_topics()}
    wanted = list(topics) if topics else sorted(by_name)
    # a catalogue name gets the prefix; a full name (prefixed, or not in the catalogue) is taken as it is
    names = [n if n not in by_name else base + n for n in wanted]
    bootstrap = _bootstrap()
    rows = describe_topics(bootstrap, names)
    spans = topic_spans(bootstrap, [r["topic"] for r in rows if r.get("exists")])
    groups = groups_lag(bootstrap, prefix=base)
    for row in rows:
        name = row["topic"][len(base):] if row["topic"].startswith(base) else row["topic"]
        spec = by_name.get(name)
        row["catalogue"] = None if spec is None else {
            "key": spec.key, "partitions": spec.partitions, "cleanup_policy": spec.cleanup_policy,
            "retention_ms": spec.retention_ms, "value_schema": spec.value_schema, "description": spec.description}
        if not row["exists"]:
            continue
        span = spans.get(row["topic"])
        row["first_record_ms"] = span.first_ms if span else None
        row["last_record_ms"] = span.last_ms if span else None
        readers = [g.on_topic(row["topic"]) for g in groups]
        row["groups"] = [g.as_dict() for g in readers if g.partitions]
    if json_out:
        for r in rows:
            typer.echo(orjson.dumps(r).decode())
        raise typer.Exit(0 if all(r["exists"] for r in rows) else 1)
    for r in rows:
        echo(f"{r['topic']}")
        if not r["exists"]:
            echo("  does not exist")
            continue
        if r["catalogue"]:
            c = r["catalogue"]
            echo(f"  {c['description']}")
            echo(f"  key {c['key']}, value schema {c['value_schema']}, cleanup {c['cleanup_policy']}")
        config = r.get("config", {})
        echo(f"  retention {format_retention(config.get('retention.ms'))}, {r['messages']} record(s), "
             f"first {format_ms(r['first_record_ms'])}, last {format_ms(r['last_record_ms'])}")
        echo(f"  config {config}")
        for p in r["partitions"]:
            stable = (f", last stable {p['last_stable']}: a transaction is open"
                      if p["open_transaction"] else "")
            echo(f"  partition {p['partition']}: leader {p['leader']}, offsets {p['low']}..{p['high']}{stable}")
        open_tx = sum(p["open_transaction"] for p in r["partitions"])
        if open_tx:
            echo(f"  {open_tx} partition(s) with an open transaction: read-committed readers stop at its start")
        for g in r["groups"]:
            lags = ", ".join(f"{p['partition']}:{p['lag']}" for p in g["partitions"])
            echo(f"  group {g['group']} ({g['state']}, {g['members']} members): lag {g['total_lag']} ({lags})")
        if not r["groups"]:
            echo("  no consumer group has committed offsets here")
    raise typer.Exit(0 if all(r["exists"] for r in rows) else 1)


def _ui_consumer_lag(settings, paths):
    """The UI's consumer-lag source: ``topics lag --json``'s groups of this deployment (the broker
    resolved on each call, so a stack started after the UI is found)."""
    from tapeflow.topic_groups import groups_lag
    from tapeflow_runtime.endpoints import resolve_broker

    return lambda: [g.as_dict() for g in groups_lag(resolve_broker(settings, paths), prefix=settings.topic_prefix)]


@topics_app.command("lag")
def topics_lag(
    group: str | None = typer.Argument(None, help="Consumer group (default: every group of this topic prefix)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per group."),
) -> None:
    """Consumer lag per partition and in total: end offset minus the group's committed offset.

    Read from the broker's admin API: it never joins the group."""
    from tapeflow.topic_groups import groups_lag, render

    settings = state.settings()
    groups = groups_lag(_bootstrap(), group, prefix=settings.topic_prefix)
    if json_out:
        for g in groups:
            typer.echo(orjson.dumps(g.as_dict()).decode())
        return
    if not groups:
        echo("no consumer groups")
        return
    render(groups, echo)


@topics_app.command("create")
def topics_create() -> None:
    """Create every catalogue topic that is missing (idempotent; existing topics are left alone)."""
    from tapeflow_runtime.kafka_client import ensure_topics

    settings = state.settings()
    results = ensure_topics(_bootstrap(), prefix=settings.topic_prefix, md_retention_ms=settings.topic_retention_ms())
    for r in results:
        echo(f"{r.name:<32}{r.action}{': ' + r.detail if r.detail else ''}")
    created = sum(r.action == "created" for r in results)
    echo(f"{created} created, {len(results) - created} already present")
    raise typer.Exit(1 if any(r.action == "mismatch" for r in results) else 0)


@topics_app.command("tail")
def topics_tail(
    topic: str = typer.Argument(..., help="Topic to read (catalogue name; the prefix is applied)."),
    from_beginning: bool = typer.Option(False, "--from-beginning", help="Start at the oldest record."),
    from_time: str | None = typer.Option(
        None, "--from", help="Start at the first record at or after this time: a duration back from now "
        "(10m, 2h, 1d) or ISO-8601 (2024-01-01T12:00:00Z; no zone = UTC)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep waiting for new records after the end "
                                "(always so when starting from the end, the default)."),
    max_records: int | None = typer.Option(None, "--max", min=1, help="Stop after N records."),
    timeout: float | None = typer.Option(None, "--timeout", min=0.1,
                                            help="Stop after S seconds without a new record."),
    symbol: str | None = typer.Option(None, "--symbol", help="Only records for this symbol."),
    key: str | None = typer.Option(None, "--key", help="Only records with exactly this key (e.g. binance:BTCUSDT)."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print decoded records of a topic (kcat-like, schema-aware).

    Starts at the end (new records only, following) unless --from-beginning or --from is given;
    those stop at the end of the topic unless --follow."""
    from tapeflow.topic_tail import parse_start_time, tail

    if from_beginning and from_time is not None:
        raise fail("--from-beginning and --from exclude each other", 2)
    settings = state.settings()
    from_ms = None if from_time is None else parse_start_time(from_time, int(time.time() * 1000))
    base = settings.topic_prefix
    name = topic if base and topic.startswith(base) else base + topic
    count = tail(_bootstrap(), name, settings.schema_registry_url, from_beginning=from_beginning,
                 max_records=max_records, idle_timeout=timeout, symbol=symbol, json_out=json_out, out=echo,
                 from_ms=from_ms, key=key, follow=follow)
    if not json_out:
        typer.echo(f"-- {count} record(s)", err=True)


# --- database ------------------------------------------------------------------------------------
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
    echo(f"{len(report.applied)} applied, {len(report.already)} already applied, "
         f"{len(report.skipped_timescale)} TimescaleDB-only skipped ({report.engine})")


@db_app.command("retention")
def db_retention(
    apply: bool = typer.Option(False, "--apply", help="Apply now: compression policies (TimescaleDB) and "
                               "drops of what expired (days written in the last 24 h are kept)."),
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
            applied["dropped"] = {t: v for t, v in apply_retention(conn, policies, now, now - PROTECT_AT_LEAST).items()
                                  if v}
    with psycopg.connect(endpoints.owner, autocommit=True) as conn:
        report = retention_report(conn, policies, now)
    if json_out:
        typer.echo(orjson.dumps({"tables": [r.as_dict() for r in report], **applied}, default=str,
                                option=orjson.OPT_INDENT_2).decode())
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
        echo(f"{r.table:<19}{r.keep:<9}{compress:<10}{r.source:<12}{count:<20}"
             f"{r.oldest.date().isoformat() if r.oldest else '-':<12}{len(r.expired):<9}{len(r.protected)}")
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
    from_time: str = typer.Option(..., "--from", help="Start, included (ISO date or time, UTC, or Unix ms), e.g. 2024-01-01."),
    to_time: str = typer.Option(..., "--to", help="End, exclusive (ISO date or time, UTC, or Unix ms; a date means "
                                "its midnight)."),
    exchange: str = typer.Option("binance", "--exchange", help="Exchange name."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Continuity report: agg-id gaps and duplicates in trades, row counts and freshness per table.

    Exit code 0 when the range is clean, 1 when it found problems (gaps, duplicates, ...).
    """
    import psycopg

    from sinks.audit import audit, render
    from tapeflow_runtime.endpoints import resolve_database

    start, end = _parse_time(from_time, "--from"), _parse_time(to_time, "--to")
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
    metrics_port: int = typer.Option(0, "--metrics-port", min=0, max=65535,
                                     help="Port of /metrics and /health (0 = a free one, logged)."),
    input_prefix: str | None = typer.Option(
        None, "--input-prefix", help="Store the namespace NAME's topics (`tapeflow replay --to-prefix NAME`); "
        "rows go to the configured database, so point TAPEFLOW_DATABASE_URL at a rehearsal database."),
) -> None:
    """Copy topics into PostgreSQL/TimescaleDB: batched COPY, idempotent on natural keys, offsets after commit."""
    import asyncio

    from sinks.service import run_sink
    from sinks.tables import sinkable_topics
    from tapeflow_runtime.logs import configure_logging

    _use_namespace(input_prefix)
    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    chosen = [t.strip() for t in topics.split(",") if t.strip()] if topics else None
    unknown = sorted(set(chosen or []) - set(sinkable_topics()))
    if unknown:
        raise fail(f"no table for topic(s) {', '.join(unknown)}; known: {', '.join(sorted(sinkable_topics()))}", 2)
    raise typer.Exit(asyncio.run(run_sink(settings, chosen, metrics_port, settings.metrics_host)))


# --- cache ----------------------------------------------------------------------------------------
cache_app = typer.Typer(help="The local columnar cache of parsed aggTrades files (TAPEFLOW_HOME/cache/columns).",
                        no_args_is_help=True)
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


# --- research -------------------------------------------------------------------------------------
from backtest.research.cli import register as _register_research  # noqa: E402  (the command's logic lives there)
from backtest.watchlist.cli import register as _register_watchlist  # noqa: E402

_register_research(app)
_register_watchlist(watchlist_app)


def _reflowed(text: str) -> str:
    """Each paragraph of a docstring on one line: the terminal wraps it at its own width. A paragraph
    whose lines are a list or indented (an example, a table) keeps its lines."""
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        shaped = any(line[:1].isspace() or line.lstrip().startswith(("- ", "* ", "|", "$ ", "\b")) for line in lines)
        out.append(para if shaped else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


def _reflow_help(typer_app: typer.Typer) -> None:
    """Docstrings are wrapped for the source (~100 columns), and Typer keeps the line breaks of every
    paragraph after a command's first: `--help` showed those lines ragged at any other width. Applied
    once to every command and group, after all are registered."""
    for command in typer_app.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = _reflowed(text)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


_reflow_help(app)


def main() -> None:
    """Console entry point: maps expected failures to one-line errors.

    The broker's and the database's exception classes are looked up in ``sys.modules`` after the fact:
    an exception of psycopg or confluent_kafka can only come from a command that imported it, and
    importing them up front cost every `tapeflow` process ~0.1 CPU-s (psycopg alone) it mostly did not use."""
    try:
        app(standalone_mode=True)
    except SystemExit:
        raise
    except TapeflowError as exc:
        from tapeflow_runtime.settings import ConfigError

        typer.echo(f"error: {exc}", err=True)
        sys.exit(2 if isinstance(exc, ConfigError) else 1)
    except Exception as exc:
        kafka, psycopg = sys.modules.get("confluent_kafka"), sys.modules.get("psycopg")
        if kafka is not None and isinstance(exc, kafka.KafkaException):
            err = exc.args[0] if exc.args else exc
            typer.echo(f"error: broker: {getattr(err, 'str', lambda: str(err))()}", err=True)
            sys.exit(1)
        if psycopg is not None and isinstance(exc, psycopg.Error):
            typer.echo(f"error: database: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
                       err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
