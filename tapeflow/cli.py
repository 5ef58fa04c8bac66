"""The `tapeflow` command: one entry point for the stack, topics, database and the services.

Every user-facing failure is a one-line `error: ...` with a non-zero exit code, never a traceback:
configuration and stack problems are expected events, not bugs.

The commands are defined one module per group in `tapeflow.commands` (`register_all` imports them in
the order `--help` lists them). The research and watchlist-backtest commands keep their logic in
`backtest` and register themselves last.
"""

from __future__ import annotations

import inspect
import sys

import typer

from tapeflow.commands import register_all
from tapeflow.commands._common import app, echo, fail, state
from tapeflow.commands._common import parse_time as _parse_time
from tapeflow.commands._common import use_namespace as _use_namespace
from tapeflow_runtime.errors import TapeflowError

register_all()

from backtest.research.cli import register as _register_research  # noqa: E402 - registered after every group
from backtest.research.model_cli import register as _register_model  # noqa: E402
from backtest.watchlist.cli import register as _register_watchlist  # noqa: E402
from tapeflow.commands.services import _instrument_rules, _watchlist_traders, watchlist_app  # noqa: E402
from tapeflow.commands.topics import _ui_consumer_lag  # noqa: E402

__all__ = [
    "_instrument_rules",
    "_parse_time",
    "_ui_consumer_lag",
    "_use_namespace",
    "_watchlist_traders",
    "app",
    "echo",
    "fail",
    "main",
    "state",
]

_register_research(app)
_register_model(app)
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
            typer.echo(f"error: database: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}", err=True)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
