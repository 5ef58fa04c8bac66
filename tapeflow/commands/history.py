"""History out of the topics: `backtest` (its logic lives in `backtest.cli`) and `replay`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import orjson
import typer

from backtest.cli import register as register_backtest
from schemas.catalogue import ENGINE_INPUTS
from tapeflow.commands._common import (
    app,
    bootstrap_address,
    echo,
    fail,
    parse_time,
    state,
)
from tapeflow_runtime.speed import parse_speed

register_backtest(app, lambda: state.settings())


@app.command()
def replay(
    to_prefix: str = typer.Option(..., "--to-prefix", help="Namespace NAME: copies go to <prefix>NAME.<topic>."),
    from_time: str = typer.Option(
        ...,
        "--from",
        help="Start (ISO date/time, UTC, or Unix ms): the first records "
        "copied are those that reached the broker at or after it (arrival time, the "
        "records' timestamps; not event time).",
    ),
    to_time: str = typer.Option(
        ...,
        "--to",
        help="End, exclusive (ISO date/time, UTC, or Unix ms; a date means its "
        "midnight), in arrival time: records that reached the broker from then on, or "
        "after the replay started, are not copied.",
    ),
    topics: str = typer.Option(
        ",".join(ENGINE_INPUTS), "--topics", help="Comma-separated md.* topics (default: the engine's inputs)."
    ),
    speed: str = typer.Option(
        "max", "--speed", help="Pace on the records' event times: 1x (as the events happened), 10x, ... or max."
    ),
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
    start, end = parse_time(from_time, "--from"), parse_time(to_time, "--to")
    show = not no_progress and sys.stderr.isatty()
    last_shown = [0.0]

    def progress(summary) -> None:
        if show and time.monotonic() - last_shown[0] >= 0.5 and summary.last_event_ms is not None:
            last_shown[0] = time.monotonic()
            done = summary.read / max(summary.in_range, 1)  # the range is in arrival time, the pace in event time
            sys.stderr.write(
                f"\rreplay {min(max(done, 0.0), 1.0):6.1%}  {summary.records:,} records  "
                f"at {datetime.fromtimestamp(summary.last_event_ms / 1000, tz=UTC):%Y-%m-%d %H:%M:%S}"
            )
            sys.stderr.flush()

    try:
        job = TopicReplay(
            bootstrap_address(),
            AvroSerde(registry_from_url(settings.schema_registry_url)),
            source_prefix=settings.topic_prefix,
            target_prefix=f"{settings.topic_prefix}{to_prefix}.",
            topics=topics.split(","),
            from_ms=int(start.timestamp() * 1000),
            to_ms=int(end.timestamp() * 1000),
            speed=pace,
            symbols=symbols.split(",") if symbols else None,
            on_progress=progress,
        )
        summary = job.run()
    except ReplayError as exc:
        raise fail(str(exc), 2) from None
    if show:
        sys.stderr.write("\n")
    echo(orjson.dumps(dataclasses.asdict(summary)).decode() if json_out else summary.line())
    if summary.records == 0:
        raise fail("nothing in that range: check --from/--to (record timestamps, UTC) and --topics")
    raise typer.Exit(0 if summary.undelivered == 0 else 1)
