"""History out of the topics: `backtest` (its logic lives in `backtest.cli`) and `replay`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Annotated

import orjson
import typer

from backtest.cli import register as register_backtest
from schemas.catalogue import ENGINE_INPUTS
from tapeflow.commands._common import (
    JsonSummaryOption,
    NoProgressOption,
    app,
    bootstrap_address,
    echo,
    fail,
    parse_time,
    state,
)
from tapeflow_runtime.speed import parse_speed

register_backtest(app, lambda: state.settings())


# `replay`'s own options
ENGINE_TOPICS = ",".join(ENGINE_INPUTS)
ToPrefixOption = Annotated[str, typer.Option("--to-prefix", help="Namespace NAME: copies go to <prefix>NAME.<topic>.")]
ArrivalFromOption = Annotated[
    str,
    typer.Option(
        "--from",
        help="Start (ISO date/time, UTC, or Unix ms): the first records "
        "copied are those that reached the broker at or after it (arrival time, the "
        "records' timestamps; not event time).",
    ),
]
ArrivalToOption = Annotated[
    str,
    typer.Option(
        "--to",
        help="End, exclusive (ISO date/time, UTC, or Unix ms; a date means its "
        "midnight), in arrival time: records that reached the broker from then on, or "
        "after the replay started, are not copied.",
    ),
]
ReplayTopicsOption = Annotated[
    str, typer.Option("--topics", help="Comma-separated md.* topics (default: the engine's inputs).")
]
ReplaySpeedOption = Annotated[
    str,
    typer.Option("--speed", help="Pace on the records' event times: 1x (as the events happened), 10x, ... or max."),
]
ReplaySymbolsOption = Annotated[str | None, typer.Option("--symbols", help="Only these symbols (comma-separated).")]


@app.command()
def replay(
    to_prefix: ToPrefixOption,
    from_time: ArrivalFromOption,
    to_time: ArrivalToOption,
    topics: ReplayTopicsOption = ENGINE_TOPICS,
    speed: ReplaySpeedOption = "max",
    symbols: ReplaySymbolsOption = None,
    no_progress: NoProgressOption = False,
    json_out: JsonSummaryOption = False,
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
    progress = _ReplayProgress(shown=not no_progress and sys.stderr.isatty())
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
            on_progress=progress.update,
        )
        summary = job.run()
    except ReplayError as exc:
        raise fail(str(exc), 2) from None
    progress.finish()
    echo(orjson.dumps(dataclasses.asdict(summary)).decode() if json_out else summary.line())
    if summary.records == 0:
        raise fail("nothing in that range: check --from/--to (record timestamps, UTC) and --topics")
    raise typer.Exit(0 if summary.undelivered == 0 else 1)


class _ReplayProgress:
    """The progress line `replay` redraws on stderr (a terminal only), at most twice a second."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self._last_shown = 0.0

    def update(self, summary) -> None:
        if self.shown and time.monotonic() - self._last_shown >= 0.5 and summary.last_event_ms is not None:
            self._last_shown = time.monotonic()
            done = summary.read / max(summary.in_range, 1)  # the range is in arrival time, the pace in event time
            sys.stderr.write(
                f"\rreplay {min(max(done, 0.0), 1.0):6.1%}  {summary.records:,} records  "
                f"at {datetime.fromtimestamp(summary.last_event_ms / 1000, tz=UTC):%Y-%m-%d %H:%M:%S}"
            )
            sys.stderr.flush()

    def finish(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
