"""The services a user runs: `engine`, `execute`, `cross-venue`, `watchlist`, `notify`, `ui`, `kill-switch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from tapeflow.commands._common import (
    MetricsPortOption,
    app,
    echo,
    fail,
    state,
    use_namespace,
)
from tapeflow_runtime.errors import TapeflowError

# `engine`'s own options
StrategyFilesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--strategy",
        help="Strategy file (YAML/JSON) or a shipped strategy's name (v53), repeatable (A/B). "
        "Default: TAPEFLOW_STRATEGIES, else the shipped ones.",
    ),
]
ExactlyOnceOption = Annotated[
    bool,
    typer.Option(
        "--exactly-once/--at-least-once",
        help="Exactly-once: outputs, state snapshots and input offsets commit in one Kafka transaction per "
        "partition and commit interval (the broker must serve transactions). At-least-once: a crash can "
        "repeat outputs in the topics (the database still stores each once).",
    ),
]
EvalIntervalOption = Annotated[
    int,
    typer.Option(
        "--eval-interval-ms",
        min=1_000,
        max=60_000,
        help="Evaluate at least this often per symbol (also on every closed 1-second bucket with new trades).",
    ),
]
PrimeHoursOption = Annotated[
    float,
    typer.Option(
        "--prime-hours",
        min=0.0,
        help="A new engine group starts this many hours back in md.* so the 24 h "
        "windows fill from history (0 = no priming: read everything retained).",
    ),
]
AllowedLatenessOption = Annotated[
    int,
    typer.Option(
        "--allowed-lateness-ms",
        min=0,
        max=600_000,
        help="Hold evaluation this long in event time so inputs from other topics that arrive a little "
        "out of order are not late. Replays need none: their progress markers order the inputs.",
    ),
]
WaitForProgressOption = Annotated[
    bool | None,
    typer.Option(
        "--wait-for-progress/--no-wait-for-progress",
        help="A new group holds every symbol until md.progress markers (a replay's producer, `tapeflow replay`, "
        "the warm start) release it, so its output does not depend on how the topics' fetches "
        "interleave. Default: on for a replay:DIR source or an --input-prefix namespace.",
    ),
]
SignalMaxAgeOption = Annotated[
    float | None,
    typer.Option(
        "--signal-max-age-s",
        min=0.0,
        help="Keep signals evaluated more than this long ago (wall clock) off `signals`; features are still "
        "written. Default: 60 s for a live source, unlimited for replay:DIR or --input-prefix.",
    ),
]
EngineInputPrefixOption = Annotated[
    str | None,
    typer.Option(
        "--input-prefix",
        help="Read md.* from, and write outputs to, the namespace NAME that "
        "`tapeflow replay --to-prefix NAME` fills (never the live topics).",
    ),
]


@app.command()
def engine(
    strategy: StrategyFilesOption = None,
    exactly_once: ExactlyOnceOption = True,
    metrics_port: MetricsPortOption = 0,
    eval_interval_ms: EvalIntervalOption = 15_000,
    prime_hours: PrimeHoursOption = 25.0,
    allowed_lateness_ms: AllowedLatenessOption = 0,
    wait_for_progress: WaitForProgressOption = None,
    signal_max_age_s: SignalMaxAgeOption = None,
    input_prefix: EngineInputPrefixOption = None,
) -> None:
    """Run the signal engine (Faust): md.* in, bars.1m / features / signals out, state in Faust tables.

    Start it more than once to share the partitions between workers (same settings, same group)."""
    import asyncio

    from stream_apps.service import run_engine
    from tapeflow_runtime.logs import configure_logging

    use_namespace(input_prefix)
    settings = state.settings()
    strategies = _engine_strategies(strategy or settings.strategies)
    rehearsal = settings.replay_dir is not None or bool(settings.namespace)
    if signal_max_age_s is None and not rehearsal:
        signal_max_age_s = 60.0
    if wait_for_progress is None:
        wait_for_progress = rehearsal
    configure_logging(settings.log_level, settings.log_format)
    code = asyncio.run(
        run_engine(
            settings,
            metrics_port=metrics_port,
            strategies=strategies or None,
            processing_guarantee="exactly_once" if exactly_once else "at_least_once",
            eval_interval_ms=eval_interval_ms,
            allowed_lateness_ms=allowed_lateness_ms,
            wait_for_progress=wait_for_progress,
            signal_max_age_ms=None if signal_max_age_s is None else int(signal_max_age_s * 1000),
            prime_history_ms=int(prime_hours * 3_600_000) if prime_hours > 0 else None,
        )
    )
    raise typer.Exit(code)


def _engine_strategies(given: list[Path] | list[str]) -> list[Path]:
    """The strategy files `engine` runs: each a file or a shipped strategy's name (none given: the caller
    passes TAPEFLOW_STRATEGIES; empty: the shipped ones). A missing file exits 2."""
    from stream_apps.core.strategy import strategy_path

    try:
        paths = [strategy_path(p) for p in given]
    except TapeflowError as exc:
        raise fail(str(exc), 2) from None
    for path in paths:
        if not path.is_file():
            raise fail(f"strategy file {path} does not exist", 2)
    return paths


# --- execution ----------------------------------------------------------------------------------
@app.command()
def execute(
    mode: str = typer.Option(
        "paper",
        "--mode",
        help="paper (default), testnet or live. Live needs "
        "TAPEFLOW_LIVE_TRADING=I_UNDERSTAND and Binance keys in the environment.",
    ),
    config: Path | None = typer.Option(
        None, "--executor-config", help="Executor settings (YAML/JSON): balance, risk %, fees, risk guard."
    ),
    metrics_port: MetricsPortOption = 0,
    from_beginning: bool = typer.Option(
        False,
        "--from-beginning",
        help="A new consumer group starts at the beginning of its inputs, not "
        "their end (trade a replay already in the broker).",
    ),
    input_prefix: str | None = typer.Option(
        None,
        "--input-prefix",
        help="Trade the signals of the namespace NAME (`tapeflow replay --to-prefix "
        "NAME`), writing orders/fills/positions there too; paper only; starts at the namespace's beginning.",
    ),
) -> None:
    """Turn signals into orders: position manager, risk guard and the paper broker (or an exchange when keyed)."""
    import asyncio

    from execution.service import ExecuteOptions, run_executor
    from tapeflow_runtime.logs import configure_logging

    if mode not in ("paper", "testnet", "live"):
        raise fail(f"unknown mode {mode!r}: expected paper, testnet or live", 2)
    if input_prefix and mode != "paper":
        raise fail("--input-prefix rehearses on replayed history: paper mode only", 2)
    use_namespace(input_prefix)
    settings = state.settings()
    configure_logging(settings.log_level, settings.log_format)
    options = ExecuteOptions(
        config_path=config,
        metrics_port=metrics_port,
        metrics_host=settings.metrics_host,
        start_from="earliest" if from_beginning or settings.namespace else "latest",
    )
    raise typer.Exit(asyncio.run(run_executor(settings, mode, options)))


# --- cross-venue watchlist ------------------------------------------------------------------------
# `cross-venue`'s own options
EMPTY_PATHS: list[Path] = []  # `--strategy`'s default: read, never appended to
PairVenuesOption = Annotated[
    str,
    typer.Option("--venues", help="Comma-separated venues: the legs; every ordered pair of them is a feature record."),
]
SweepNotionalOption = Annotated[
    float,
    typer.Option("--sweep-notional-usd", min=1.0, help="Notional the swept (executable) spread is computed for."),
]
MaxStalenessOption = Annotated[
    int,
    typer.Option(
        "--max-staleness-ms",
        min=0,
        help="A leg whose book is older than this at an evaluation makes the pair's spreads missing, with the reason.",
    ),
]
PublishIntervalOption = Annotated[
    int,
    typer.Option(
        "--publish-interval-ms",
        min=1_000,
        help="Event time between two records of a coin (whole seconds; the "
        "state evaluates every second for its rolling statistics).",
    ),
]
LatenessOption = Annotated[
    int,
    typer.Option(
        "--lateness-ms",
        min=0,
        max=60_000,
        help="Hold inputs this long in event time, so a venue whose books arrive "
        "a little later than another's is not late.",
    ),
]
PrimeMinutesOption = Annotated[
    float,
    typer.Option(
        "--prime-minutes",
        min=0.0,
        help="A new group without a checkpoint starts this far back in md.* (0 = where --from-beginning says).",
    ),
]
FromBeginningOption = Annotated[
    bool,
    typer.Option("--from-beginning", help="A new group without priming reads md.* from the beginning, not the end."),
]
WatchlistStrategiesOption = Annotated[
    list[Path],
    typer.Option(
        "--strategy",
        help="A watchlist strategy file (`kind: watchlist`) "
        "to trade as hedged paper pairs on the same inputs: xv.signals, "
        "xv.orders, xv.funding, xv.pairs (repeat for several; default: "
        "TAPEFLOW_WATCHLIST_STRATEGIES).",
    ),
]
InstrumentRulesOption = Annotated[
    Path | None,
    typer.Option(
        "--instrument-rules",
        help="The venues' lot steps, minimum "
        "order sizes and minimum notionals (a file of `tapeflow watchlist "
        "rules --out`): the strategies' pairs trade quantities the venues "
        "accept. Without it they are unrounded (default: "
        "TAPEFLOW_WATCHLIST_INSTRUMENT_RULES).",
    ),
]


@app.command("cross-venue")
def cross_venue(
    metrics_port: MetricsPortOption = 0,
    venues: PairVenuesOption = "binance,bybit,okx",
    sweep_notional_usd: SweepNotionalOption = 10_000.0,
    max_staleness_ms: MaxStalenessOption = 2_000,
    publish_interval_ms: PublishIntervalOption = 15_000,
    lateness_ms: LatenessOption = 1_000,
    prime_minutes: PrimeMinutesOption = 15.0,
    from_beginning: FromBeginningOption = False,
    strategies: WatchlistStrategiesOption = EMPTY_PATHS,
    instrument_rules: InstrumentRulesOption = None,
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
        traders = _watchlist_traders(
            strategies or [Path(p) for p in settings.watchlist_strategies],
            _instrument_rules(instrument_rules or settings.watchlist_instrument_rules),
        )
        params = CrossVenueParams(
            venues=tuple(v.strip() for v in venues.split(",") if v.strip()),
            sweep_notional_usd=sweep_notional_usd,
            max_staleness_ms=max_staleness_ms,
        )
        options = WatchlistOptions(
            params=params,
            publish_interval_ms=publish_interval_ms,
            lateness_ms=lateness_ms,
            prime_history_ms=int(prime_minutes * 60_000) if prime_minutes > 0 else None,
            start_from="earliest" if from_beginning else "latest",
            metrics_port=metrics_port,
            metrics_host=settings.metrics_host,
            traders=traders,
        )
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


watchlist_app = typer.Typer(
    invoke_without_command=True,
    help="The cross-venue watchlist: with no command, the live "
    "ranking of venue pairs by executable (swept) spread, from the database's xv_features; "
    "`backtest` and `fit` run a watchlist strategy and fit its model offline.",
)
app.add_typer(watchlist_app, name="watchlist")


@watchlist_app.callback()
def watchlist(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, help="Pairs shown (and missing pairs listed)."),
    window_s: float = typer.Option(
        300.0,
        "--window-s",
        min=1.0,
        help="A coin is shown at its latest evaluation within this many seconds before the newest one in the table.",
    ),
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
        rules = fetch_rules_blocking(
            names, {"binance": binance_url, "bybit": bybit_url, "okx": okx_url}, timeout_s=timeout_s
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        rules.save(out)
    except (InstrumentRulesError, OSError) as exc:
        raise fail(str(exc)) from None
    counts = ", ".join(f"{v} {sum(k[0] == v for k in rules.rules)}" for v in names)
    echo(f"{len(rules)} instrument rules ({counts}) written to {out}")


@app.command()
def notify(
    metrics_port: MetricsPortOption = 0,
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
    port: int | None = typer.Option(
        None, "--port", min=0, max=65535, help="Port (default: TAPEFLOW_UI_PORT; 0 = a free one, printed)."
    ),
    print_url: bool = typer.Option(
        False,
        "--print-url",
        help="Print the login URL (with the token) of the UI `tapeflow up` runs in this TAPEFLOW_HOME, and exit.",
    ),
) -> None:
    """Serve the web UI: order-flow charts per symbol (candles, CVD, VWAP, signals, footprint, volume
    profile, liquidity heatmap), the market overview and the watchlist desk. Reads the database with
    the read-only role; every request needs the token in TAPEFLOW_HOME/secrets/ui-token."""
    from tapeflow.commands.topics import _ui_consumer_lag as ui_consumer_lag
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
        code = run_ui(
            settings, paths, host, port or free_port(host), echo, consumer_lag=ui_consumer_lag(settings, paths)
        )
    except TapeflowError as exc:
        raise fail(str(exc)) from None
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
