"""The outcome of one backfill run, for people (`format_summary`) and machines (`to_dict`, `--json`).

Every data row read is accounted for:
    rows_read = rows_published + duplicates + late + rows_already_published
and every line that is not a row is a bad row (counted, its first few listed with line numbers,
all sent to the dead-letter topic). Counts cover this run only; the checkpoint keeps per-day counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from producers.backfill.agg_trades_csv import BadRow

REPORT_LIMIT = 20  # bad rows and gaps listed individually; all are counted


@dataclass
class BackfillSummary:
    symbol: str
    topic: str
    start: str
    end: str
    days_done: list[str] = field(default_factory=list)  # published (fully or the rest of a partial day)
    days_skipped: list[str] = field(default_factory=list)  # already complete per the checkpoint
    days_missing: list[str] = field(default_factory=list)  # no archive (HTTP 404, not in --dir)
    days_resumed: list[str] = field(default_factory=list)  # days_done that continued a partial day
    rows_read: int = 0  # data rows parsed successfully
    rows_published: int = 0
    rows_already_published: int = 0  # rows of a resumed day at or before its checkpoint
    duplicates: int = 0  # agg id already published
    late: int = 0  # arrived after its hole was given up: not publishable in order
    gaps: int = 0
    missing_ids: int = 0  # agg ids inside the gaps
    gap_ranges: list[tuple[int, int]] = field(default_factory=list)  # first REPORT_LIMIT
    bad_rows: int = 0
    bad_row_samples: list[BadRow] = field(default_factory=list)  # first REPORT_LIMIT
    seconds: float = 0.0
    checkpoint: str = ""

    @property
    def rows_per_second(self) -> float:
        return self.rows_published / self.seconds if self.seconds > 0 else 0.0

    def add_bad_row(self, bad: BadRow) -> None:
        self.bad_rows += 1
        if len(self.bad_row_samples) < REPORT_LIMIT:
            self.bad_row_samples.append(bad)

    def add_gaps(self, count: int, missing_ids: int, ranges: list[tuple[int, int]]) -> None:
        self.gaps += count
        self.missing_ids += missing_ids
        room = REPORT_LIMIT - len(self.gap_ranges)
        if room > 0:
            self.gap_ranges.extend(ranges[:room])

    def to_dict(self) -> dict:
        return {
            "symbol": self.symbol,
            "topic": self.topic,
            "from": self.start,
            "to": self.end,
            "days": {
                "done": len(self.days_done),
                "skipped": len(self.days_skipped),
                "missing": len(self.days_missing),
                "resumed": len(self.days_resumed),
            },
            "days_done": self.days_done,
            "days_skipped": self.days_skipped,
            "days_missing": self.days_missing,
            "days_resumed": self.days_resumed,
            "rows_read": self.rows_read,
            "rows_published": self.rows_published,
            "rows_already_published": self.rows_already_published,
            "duplicates": self.duplicates,
            "late": self.late,
            "gaps": self.gaps,
            "missing_ids": self.missing_ids,
            "gap_ranges": [list(r) for r in self.gap_ranges],
            "bad_rows": self.bad_rows,
            "bad_row_samples": [
                {"file": b.source, "line": b.line, "reason": b.reason, "text": b.text} for b in self.bad_row_samples
            ],
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "checkpoint": self.checkpoint,
        }

    def to_json(self) -> str:
        return orjson.dumps(self.to_dict()).decode()


def format_summary(s: BackfillSummary) -> str:
    """Human-readable summary, one fact per line."""
    lines = [
        f"backfill {s.symbol} {s.start}..{s.end} -> {s.topic}",
        (
            f"  days: {len(s.days_done)} done ({len(s.days_resumed)} resumed), {len(s.days_skipped)} skipped "
            f"(already complete), {len(s.days_missing)} missing"
        ),
    ]
    if s.days_missing:
        lines.append(f"  missing days: {', '.join(s.days_missing)}")
    lines += [
        (
            f"  rows: {s.rows_published:,} published of {s.rows_read:,} read "
            f"({s.rows_already_published:,} already published before a resume) in {s.seconds:.1f} s "
            f"({s.rows_per_second:,.0f} rows/s)"
        ),
        f"  duplicates: {s.duplicates:,}   late (out of order beyond the window): {s.late:,}",
        f"  gaps: {s.gaps:,} ({s.missing_ids:,} agg ids missing)",
    ]
    lines += [f"    agg ids {a}..{b}" for a, b in s.gap_ranges]
    if s.gaps > len(s.gap_ranges):
        lines.append(f"    ... and {s.gaps - len(s.gap_ranges)} more")
    lines.append(f"  bad rows: {s.bad_rows:,} (sent to the dead-letter topic)")
    lines += [f"    {b}" for b in s.bad_row_samples]
    if s.bad_rows > len(s.bad_row_samples):
        lines.append(f"    ... and {s.bad_rows - len(s.bad_row_samples)} more")
    lines.append(f"  checkpoint: {s.checkpoint}")
    return "\n".join(lines)
