"""Backfill failures the user must act on, each a one-line message naming the day, file or URL.

A missing day (HTTP 404, no file in the directory) is not an error: it is reported in the summary
and the run goes on. Everything here stops the run; the checkpoint keeps what was already delivered.
"""

from __future__ import annotations

from typing import Any

from tapeflow_runtime.errors import TapeflowError


class BackfillError(TapeflowError):
    """A backfill cannot go on: bad arguments, an unreadable archive, a failed download or delivery.

    `summary` (a BackfillSummary) is set when the run had started: what it did before stopping.
    """

    summary: Any = None


class ChecksumMismatchError(BackfillError):
    """An archive whose SHA-256 differs from its `.CHECKSUM` file (corrupt or tampered download)."""
