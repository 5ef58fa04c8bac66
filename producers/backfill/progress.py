"""Progress display: a bar over the days and one over the current file (bytes), with rows and rows/s.

Drawn with rich (installed with typer) on stderr, so `--json` output on stdout stays clean. When
disabled (`--no-progress`, or stderr is not a terminal) a no-op stands in, so the backfill loop
never checks. The loop reports every few thousand rows; rich redraws at its own pace.
"""

from __future__ import annotations

import sys
from datetime import date
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class BackfillProgress(Protocol):
    def start_day(self, day: date, total_bytes: int) -> None: ...

    def update_day(self, bytes_read: int, rows: int) -> None: ...

    def end_day(self) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def start_day(self, day: date, total_bytes: int) -> None:
        pass

    def update_day(self, bytes_read: int, rows: int) -> None:
        pass

    def end_day(self) -> None:
        pass

    def close(self) -> None:
        pass


class _RowsColumn(ProgressColumn):
    """`1,234,567 rows  85,000 rows/s` from the task's `rows` field and elapsed time."""

    def render(self, task: Task) -> Text:
        rows = task.fields.get("rows")
        if rows is None:
            return Text("")
        elapsed = task.elapsed or 0.0
        rate = f"{rows / elapsed:,.0f} rows/s" if elapsed > 0 else "- rows/s"
        return Text(f"{rows:>11,} rows  {rate:>14}", style="progress.data.speed")


class RichProgress:
    def __init__(self, days: int, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            _RowsColumn(),
            TimeElapsedColumn(),
            console=console or Console(file=sys.stderr),
            transient=False,
        )
        self._progress.start()
        self._days = self._progress.add_task("days", total=days, rows=0)
        self._day: TaskID | None = None
        self._rows_before = 0  # rows of finished days
        self._rows_today = 0

    def start_day(self, day: date, total_bytes: int) -> None:
        self._day = self._progress.add_task(day.isoformat(), total=max(total_bytes, 1), rows=0)

    def update_day(self, bytes_read: int, rows: int) -> None:
        if self._day is not None:
            self._rows_today = rows
            self._progress.update(self._day, completed=bytes_read, rows=rows)
            self._progress.update(self._days, rows=self._rows_before + rows)

    def end_day(self) -> None:
        """The current day is finished (or a day was skipped or missing): one more day done."""
        if self._day is not None:
            self._progress.remove_task(self._day)  # one line per day would grow without bound
            self._day = None
        self._rows_before += self._rows_today
        self._rows_today = 0
        self._progress.update(self._days, advance=1, rows=self._rows_before)

    def close(self) -> None:
        self._progress.stop()


def make_progress(enabled: bool, days: int) -> BackfillProgress:
    """A rich progress display if `enabled` and stderr is a terminal, else a no-op."""
    if enabled and sys.stderr.isatty():
        return RichProgress(days)
    return NoProgress()
