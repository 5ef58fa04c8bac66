"""What a backfill has delivered, per (symbol, topic), so that a re-run resumes instead of repeating.

File: `TAPEFLOW_HOME/backfill/checkpoints/binance-vision-<topic>-<SYMBOL>.json` (topic with its
prefix: each prefixed topic set has its own history). It records the completed days (with the last
agg id and the counts of each) and, for a day in progress, the last agg id delivered. It is written
only after the producer's flush confirmed delivery of everything up to that id, and replaced
atomically (write + rename), so it never claims more than the broker acknowledged.

Delivery is therefore at-least-once: after a crash, the trades produced since the last checkpoint
(at most one checkpoint interval) are produced again; consumers already drop repeated agg ids.
On an orderly failure (unreadable archive, delivery error, Ctrl-C) the backfill flushes and
checkpoints what was confirmed, so that re-run repeats nothing. Bad rows of a resumed day are
counted again in the new run's summary (they are still in the file) but dead-lettered only once:
`line` says how far the previous run got.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import orjson

from producers.backfill.errors import BackfillError
from tapeflow_runtime.files import atomic_write_bytes

VERSION = 1


@dataclass
class DayResult:
    """Counts of one completed day, as kept in the checkpoint.

    For a day finished by a resumed run, the counts (and first_agg_id) are those of the run that
    finished it; rows before the resume point were counted by the run that published them.
    """

    rows_published: int = 0
    first_agg_id: int | None = None
    last_agg_id: int | None = None
    duplicates: int = 0
    late: int = 0
    gaps: int = 0
    missing_ids: int = 0
    bad_rows: int = 0


@dataclass
class Checkpoint:
    path: Path
    symbol: str
    topic: str
    completed: dict[str, DayResult] = field(default_factory=dict)  # ISO day -> result
    partial_day: str | None = None
    partial_last_agg_id: int | None = None
    partial_line: int = 0  # archive lines read when partial_last_agg_id was confirmed

    @staticmethod
    def file_for(home: Path, symbol: str, topic: str) -> Path:
        return home / "backfill" / "checkpoints" / f"binance-vision-{topic}-{symbol}.json"

    @classmethod
    @contextmanager
    def locked(cls, home: Path, symbol: str, topic: str) -> Iterator[Checkpoint]:
        """The checkpoint, held exclusively: two backfills of one (symbol, topic) would overwrite each other."""
        path = cls.file_for(home, symbol, topic)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackfillError(
                    f"another backfill of {symbol} into {topic} is running (lock {lock.name})"
                ) from None
            try:
                yield cls.load(home, symbol, topic)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @classmethod
    def load(cls, home: Path, symbol: str, topic: str) -> Checkpoint:
        path = cls.file_for(home, symbol, topic)
        if not path.exists():
            return cls(path, symbol, topic)
        try:
            data = orjson.loads(path.read_bytes())
            if data.get("version") != VERSION or data["symbol"] != symbol or data["topic"] != topic:
                raise ValueError(f"written for {data.get('symbol')}/{data.get('topic')} version {data.get('version')}")
            completed = {day: DayResult(**result) for day, result in data["completed"].items()}
            partial = data.get("partial") or {}
            return cls(
                path, symbol, topic, completed, partial.get("day"), partial.get("last_agg_id"), partial.get("line", 0)
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise BackfillError(f"checkpoint {path} is unreadable ({exc}); move it away to start over") from None

    def is_complete(self, day: date) -> bool:
        return day.isoformat() in self.completed

    def result(self, day: date) -> DayResult | None:
        return self.completed.get(day.isoformat())

    def resume_after(self, day: date) -> int | None:
        """Last agg id delivered for a partially published `day`, else None."""
        return self.partial_last_agg_id if self.partial_day == day.isoformat() else None

    def resume_line(self, day: date) -> int:
        """Archive lines of a partially published `day` already handled (bad rows there were dead-lettered)."""
        return self.partial_line if self.partial_day == day.isoformat() else 0

    def record_progress(self, day: date, last_agg_id: int, line: int) -> None:
        self.partial_day, self.partial_last_agg_id, self.partial_line = day.isoformat(), last_agg_id, line
        self.save()

    def record_complete(self, day: date, result: DayResult) -> None:
        self.completed[day.isoformat()] = result
        if self.partial_day == day.isoformat():
            self.partial_day = self.partial_last_agg_id = None
            self.partial_line = 0
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": VERSION,
            "symbol": self.symbol,
            "topic": self.topic,
            "completed": {day: asdict(r) for day, r in sorted(self.completed.items())},
            "partial": None
            if self.partial_day is None
            else {"day": self.partial_day, "last_agg_id": self.partial_last_agg_id, "line": self.partial_line},
        }
        atomic_write_bytes(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))
