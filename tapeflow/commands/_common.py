"""What every command module shares: the `tapeflow` app and its groups, the settings state, output
and error helpers, and the readings of the options several commands take (`--from`/`--to`,
`--input-prefix`, the broker's address).

The options several commands declare alike are `Annotated` types here (`MetricsPortOption`, ...): one
declaration, one help text, wherever the option appears.

The commands live in one module per group (`tapeflow.commands.*`); `tapeflow.cli` imports them in
the order `--help` lists them and runs the app."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tapeflow_runtime.paths import StackPaths

if TYPE_CHECKING:  # settings (pydantic-settings: ~60 % of `tapeflow --help`'s imports) load when a command reads them
    from tapeflow_runtime.settings import Settings

# where the exchange's REST answers unless the settings say otherwise
BINANCE_REST_URL = "https://fapi.binance.com"

app = typer.Typer(
    name="tapeflow",
    help="Kafka-based order-flow pipeline for crypto derivatives: run the stack, inspect topics, manage the database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(
    help="Inspect and create Kafka topics (schema-aware: records are decoded from Avro).", no_args_is_help=True
)
db_app = typer.Typer(help="Database tasks.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(db_app, name="db")

# --- options several commands take (the parameter's default is given where it is declared) ---------------
MetricsPortOption = Annotated[
    int, typer.Option("--metrics-port", min=0, max=65535, help="Port of /metrics and /health (0 = a free one, logged).")
]
NoProgressOption = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]
JsonSummaryOption = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


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


def parse_time(text: str, flag: str) -> datetime:
    """`--from`/`--to` as every command reads them (tapeflow_runtime.instants); a bad one exits 2."""
    from tapeflow_runtime.instants import parse_moment

    try:
        return parse_moment(text, flag)
    except ValueError as exc:
        raise fail(str(exc), 2) from None


def use_namespace(name: str | None) -> None:
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


def bootstrap_address() -> str:
    from tapeflow_runtime.endpoints import resolve_broker

    return resolve_broker(state.settings(), state.paths())
