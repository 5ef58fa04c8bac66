"""Market data in: `produce`, `fake-exchange`, `backfill`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapeflow.commands._common import (
    BINANCE_REST_URL,
    JsonSummaryOption,
    MetricsPortOption,
    NoProgressOption,
    app,
    bootstrap_address,
    echo,
    fail,
    state,
)

if TYPE_CHECKING:
    from tapeflow_runtime.settings import Settings


# `produce`'s own options
ExchangeOption = Annotated[
    str,
    typer.Option("--exchange", help="binance (USD-M futures), bybit (v5 linear) or okx (USDT perpetual swaps)."),
]
BybitWsUrlOption = Annotated[
    str | None,
    typer.Option(
        "--bybit-ws-url",
        help="Bybit v5 public linear websocket URL (default: wss://stream.bybit.com/v5/public/linear).",
    ),
]
OkxWsUrlOption = Annotated[
    str | None,
    typer.Option("--okx-ws-url", help="OKX v5 public websocket URL (default: wss://ws.okx.com:8443/ws/v5/public)."),
]
OkxRestUrlOption = Annotated[
    str | None,
    typer.Option(
        "--okx-rest-url",
        help="OKX v5 REST base URL for instruments and book snapshots (default: https://www.okx.com).",
    ),
]
WsUrlOption = Annotated[str, typer.Option("--ws-url", help="Binance USD-M websocket base URL.")]
RestUrlOption = Annotated[str, typer.Option("--rest-url", help="Binance USD-M REST base URL.")]
SpotUrlOption = Annotated[str, typer.Option("--spot-url", help="Binance spot REST (divergence).")]
CoinbaseUrlOption = Annotated[str, typer.Option("--coinbase-url", help="Coinbase REST (premium).")]
ReplayControlUrlOption = Annotated[
    str | None,
    typer.Option("--replay-control-url", help="Fake exchange control URL: stop cleanly when its replay ends."),
]
SymbolsFromRecordingOption = Annotated[
    bool,
    typer.Option("--symbols-from-recording", help="Use the symbols of the TAPEFLOW_SOURCE=replay:DIR recording."),
]
WarmStartHoursOption = Annotated[
    float | None,
    typer.Option(
        "--warm-start-hours",
        min=0.0,
        max=72.0,
        help="Binance: before streaming, publish this many hours of history into md.* (Vision archives, REST "
        "aggTrades, OI/ratio/funding/mark history, or the database when it holds them). Default: "
        "TAPEFLOW_WARM_START_HOURS (25) live, 0 with --replay-control-url.",
    ),
]
WarmStartDetailOption = Annotated[
    float | None,
    typer.Option(
        "--warm-start-detail-minutes",
        min=0.0,
        max=4320.0,
        help="Binance warm start: trade by trade (REST aggTrades) only for the last this many minutes, 1m klines "
        "before (0 = every trade: Vision and REST). Default: TAPEFLOW_WARM_START_DETAIL_MINUTES (62).",
    ),
]
VisionUrlOption = Annotated[
    str | None,
    typer.Option(
        "--vision-url",
        help="Binance Vision base URL (or a mirror) for the warm start's archives. Default: "
        "https://data.binance.vision, or --rest-url when that is not Binance's (the local "
        "fake exchange serves both).",
    ),
]


@app.command()
def produce(
    exchange: ExchangeOption = "binance",
    bybit_ws_url: BybitWsUrlOption = None,
    okx_ws_url: OkxWsUrlOption = None,
    okx_rest_url: OkxRestUrlOption = None,
    ws_url: WsUrlOption = "wss://fstream.binance.com",
    rest_url: RestUrlOption = BINANCE_REST_URL,
    spot_url: SpotUrlOption = "https://api.binance.com",
    coinbase_url: CoinbaseUrlOption = "https://api.exchange.coinbase.com",
    replay_control_url: ReplayControlUrlOption = None,
    symbols_from_recording: SymbolsFromRecordingOption = False,
    metrics_port: MetricsPortOption = 0,
    warm_start_hours: WarmStartHoursOption = None,
    warm_start_detail_minutes: WarmStartDetailOption = None,
    vision_url: VisionUrlOption = None,
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
        settings = _use_recording_symbols(settings)
    if exchange not in ("binance", "bybit", "okx"):
        raise fail(f"unknown exchange {exchange!r}: expected binance, bybit or okx", 2)
    if warm_start_hours is None:
        warm_start_hours = 0.0 if replay_control_url else settings.warm_start_hours
    if vision_url is None:
        vision_url = "https://data.binance.vision" if rest_url == BINANCE_REST_URL else rest_url
    options = ProduceOptions(
        exchange=exchange,
        bybit_ws_url=bybit_ws_url,
        okx_ws_url=okx_ws_url,
        okx_rest_url=okx_rest_url,
        ws_base_url=ws_url,
        rest_base_url=rest_url,
        spot_base_url=spot_url,
        coinbase_base_url=coinbase_url,
        replay_control_url=replay_control_url,
        metrics_port=metrics_port,
        metrics_host=settings.metrics_host,
        warm_start_hours=warm_start_hours if exchange == "binance" else 0.0,
        vision_url=vision_url,
        warm_start_detail_minutes=(
            settings.warm_start_detail_minutes if warm_start_detail_minutes is None else warm_start_detail_minutes
        ),
    )
    raise typer.Exit(asyncio.run(run_producer(settings, options)))


def _use_recording_symbols(settings: Settings) -> Settings:
    """`--symbols-from-recording`: the settings, for this command, with the symbols of the
    TAPEFLOW_SOURCE=replay:DIR recording (exits 2 without one)."""
    if settings.replay_dir is None:
        raise fail("--symbols-from-recording needs TAPEFLOW_SOURCE=replay:DIR", 2)
    from fake_exchange.recording import load_recording

    state._settings = settings.model_copy(update={"symbols": list(load_recording(settings.replay_dir).symbols)})
    return state._settings


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
        None, "--dir", help="Read <SYMBOL>-aggTrades-<day>.zip|.csv from here instead of downloading."
    ),
    topic: str = typer.Option("md.trades", "--topic", help="Target topic (md.trades or a replay topic name)."),
    no_progress: NoProgressOption = False,
    json_out: JsonSummaryOption = False,
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
        summary = run_backfill(
            bootstrap=bootstrap_address(),
            topic_prefix=settings.topic_prefix,
            home=settings.home,
            symbol=symbol.upper(),
            start=start,
            end=stop - timedelta(days=1),
            directory=directory,
            topic=topic,
            progress=not no_progress,
            registry_url=settings.schema_registry_url,
        )
    except BackfillError as exc:
        raise fail(str(exc)) from None
    echo(summary.to_json() if json_out else format_summary(summary))
