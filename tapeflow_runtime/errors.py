"""One root for the failures tapeflow expects, so the CLI and services can tell them from bugs.

A `TapeflowError` carries a one-line message written for the user; the CLI prints it as `error: ...`
and exits non-zero instead of showing a traceback. Each package subclasses it (`ConfigError`,
`EndpointError`, the supervisor's `StackError`, `MigrationError`, `BackfillError`, ...); anything
else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class TapeflowError(Exception):
    """An expected failure with a one-line message for the user."""


class EndpointError(TapeflowError):
    """A dependency (broker, database) cannot be located: the stack is not running and nothing is configured."""
