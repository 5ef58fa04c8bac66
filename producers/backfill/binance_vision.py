"""`tapeflow backfill binance-vision`: daily aggTrades archives into md.trades (or a replay topic).

For each UTC day of the inclusive range, in order:
  1. skip it if the checkpoint says it is complete;
  2. get the archive from `--dir` or data.binance.vision (checksum-verified, cached); none ⇒ the day
     is reported missing and the run goes on;
  3. stream its rows (header or not), set bad rows aside (counted, listed, dead-lettered), drop
     rows a previous partial run already delivered, restore agg-id order, count duplicates and
     gaps, and publish keyed `binance:<SYMBOL>` (one key ⇒ one partition ⇒ order kept);
  4. every `checkpoint_every` published rows, and at the end of the day, flush the producer and
     only then write the checkpoint.
The agg-id chain continues across days, so a hole at a day boundary (or a missing day) shows up as
a gap. Records: event_time = trade_time = the archive's transact_time, receive_time = when the
archive was opened for reading (see agg_trades_csv).
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import structlog

from producers.backfill.agg_trades_csv import AggTradeCsvReader, BadRow, open_archive
from producers.backfill.checkpoint import Checkpoint, DayResult
from producers.backfill.continuity import DEFAULT_REORDER_WINDOW, ArchiveContinuity
from producers.backfill.days import day_range, normalise_symbol
from producers.backfill.errors import BackfillError
from producers.backfill.progress import BackfillProgress, make_progress
from producers.backfill.sources import (
    ArchiveSource,
    DayArchive,
    LocalDirectory,
    VisionDownloader,
)
from producers.backfill.summary import BackfillSummary
from producers.backfill.trade_producer import (
    TRADES,
    TradeTopicProducer,
    ensure_destination,
    trade_topic_spec,
)
from producers.backfill.vision_files import DEFAULT_BASE_URL
from producers.binance.parse import EXCHANGE
from producers.metrics import ProducerMetrics
from schemas.catalogue import symbol_key
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde

log = structlog.get_logger("producer.backfill")

DEFAULT_CHECKPOINT_EVERY = 200_000
_PROGRESS_EVERY = 8_192  # rows between progress updates
# Throughput over latency: fuller batches (lz4, idempotence and acks=all as everywhere else).
BACKFILL_PRODUCER_OVERRIDES = {"linger.ms": 50}


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def cache_dir_for(home: Path) -> Path:
    return home / "backfill" / "cache"


def run_backfill(
    *,
    bootstrap: str,
    topic_prefix: str,
    home: Path,
    symbol: str,
    start: date,
    end: date,
    directory: Path | None,
    topic: str = TRADES,
    base_url: str = DEFAULT_BASE_URL,
    progress: bool = True,
    cache_dir: Path | None = None,
    registry_url: str | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    reorder_window: int = DEFAULT_REORDER_WINDOW,
    clock: Callable[[], int] = wall_clock_ms,
    producer_overrides: dict[str, Any] | None = None,
) -> BackfillSummary:
    """Publish `symbol`'s aggTrades from `start` to `end` (inclusive) to `topic_prefix + topic`.

    `directory` set: read `<SYMBOL>-aggTrades-<day>.zip|.csv` from it; else download from
    `base_url` into `cache_dir` (default `home/backfill/cache`). Raises BackfillError (one-line
    message) for bad arguments, a checksum mismatch, an unreadable archive or a delivery failure;
    the checkpoint then holds the last confirmed position and a re-run resumes from it.
    """
    symbol = normalise_symbol(symbol)
    days = day_range(start, end)
    trade_topic_spec(topic)
    if checkpoint_every < 1:
        raise BackfillError("checkpoint_every must be >= 1")
    source: ArchiveSource = (
        LocalDirectory(directory)
        if directory is not None
        else VisionDownloader(base_url, cache_dir or cache_dir_for(home))
    )
    with Checkpoint.locked(home, symbol, topic_prefix + topic) as checkpoint:
        summary = BackfillSummary(
            symbol, topic_prefix + topic, start.isoformat(), end.isoformat(), checkpoint=str(checkpoint.path)
        )
        ensure_destination(bootstrap, topic_prefix, topic)
        producer = TradeTopicProducer(
            bootstrap,
            AvroSerde(registry_from_url(registry_url)),
            ProducerMetrics(),
            topic_prefix,
            topic,
            **(BACKFILL_PRODUCER_OVERRIDES | (producer_overrides or {})),
        )
        bar = make_progress(progress, len(days))
        day_run = _DayPublisher(symbol, producer, checkpoint, summary, bar, clock, checkpoint_every, reorder_window)
        started = time.monotonic()
        try:
            _run_days(days, source, day_run)
        except BackfillError as exc:
            exc.summary = summary  # what this run did before it stopped, for the CLI to show
            raise
        finally:
            bar.close()
            summary.seconds = time.monotonic() - started
            producer.flush(10)  # best effort on the error path; the checkpoint only counts confirmed rows
    return summary


def _run_days(days: list[date], source: ArchiveSource, day_run: _DayPublisher) -> None:
    checkpoint, summary, bar, symbol = day_run.checkpoint, day_run.summary, day_run.bar, day_run.symbol
    # the agg-id chain starts at the day before the range if an earlier run completed it
    before = checkpoint.result(days[0] - timedelta(days=1))
    chain_last = before.last_agg_id if before is not None else None
    for day in days:
        done = checkpoint.result(day)
        if done is not None:
            summary.days_skipped.append(day.isoformat())
            chain_last = done.last_agg_id if done.last_agg_id is not None else chain_last
            bar.end_day()
            continue
        archive = source.fetch(symbol, day)
        if archive is None:
            log.warning("no archive for day", day=day.isoformat(), looked_at=source.where(symbol, day))
            summary.days_missing.append(day.isoformat())
            bar.end_day()
            continue
        result = day_run.publish(archive, chain_last)
        if result.last_agg_id is not None:
            chain_last = result.last_agg_id
        bar.end_day()


@dataclass
class _DayProgress:
    """Where the current day stands: what was read, and the last agg id handed to the producer."""

    resume_after: int | None
    last_published: int | None
    result: DayResult
    rows: int = 0
    already: int = 0
    reader: AggTradeCsvReader | None = None

    @property
    def line(self) -> int:
        return self.reader.line if self.reader is not None else 0


@dataclass
class _DayPublisher:
    """Publishes one day's archive; holds what stays the same from day to day."""

    symbol: str
    producer: TradeTopicProducer
    checkpoint: Checkpoint
    summary: BackfillSummary
    bar: BackfillProgress
    clock: Callable[[], int]
    checkpoint_every: int
    reorder_window: int

    def publish(self, archive: DayArchive, chain_last: int | None) -> DayResult:
        resume_after = self.checkpoint.resume_after(archive.day)
        state = _DayProgress(resume_after, resume_after, DayResult())
        continuity = ArchiveContinuity(self.symbol, self.reorder_window)
        continuity.continue_after(resume_after if resume_after is not None else chain_last)
        bad_before = self.summary.bad_rows
        try:
            self._stream(archive, continuity, state)
            self.producer.confirm_delivery()
        except BaseException:
            # An unreadable archive, a delivery failure or Ctrl-C: keep what the broker confirmed,
            # so the re-run resumes exactly there (a crash without this falls back to the last
            # periodic checkpoint: at-least-once).
            self._checkpoint_confirmed(archive.day, state)
            raise
        c = continuity.counters
        result = state.result
        result.last_agg_id = state.last_published
        result.duplicates, result.late, result.gaps, result.missing_ids = c.duplicates, c.late, c.gaps, c.missing_ids
        result.bad_rows = self.summary.bad_rows - bad_before
        self.checkpoint.record_complete(archive.day, result)
        self._add_to_summary(archive, state, continuity)
        return result

    def _stream(self, archive: DayArchive, continuity: ArchiveContinuity, state: _DayProgress) -> None:
        day, result, resume_after = archive.day, state.result, state.resume_after
        key = symbol_key(EXCHANGE, self.symbol)
        publish_trade = self.producer.publish_trade
        receive_time = self.clock()
        unconfirmed = 0

        dead_lettered_up_to = self.checkpoint.resume_line(day)

        def on_bad(bad: BadRow) -> None:
            self.summary.add_bad_row(bad)
            if bad.line > dead_lettered_up_to:
                self.producer.dead_letter_row(bad, key, receive_time)

        def publish(released: list[dict]) -> None:
            for t in released:
                publish_trade(key, t)
            if result.first_agg_id is None:
                result.first_agg_id = released[0]["agg_id"]
            state.last_published = released[-1]["agg_id"]
            result.rows_published += len(released)

        try:
            with open_archive(archive.path) as (raw, size):
                self.bar.start_day(day, size)
                reader = state.reader = AggTradeCsvReader(
                    raw, source=archive.path.name, symbol=self.symbol, receive_time=receive_time, on_bad=on_bad
                )
                rows = 0
                for trade in reader:
                    rows += 1
                    if resume_after is not None and trade["agg_id"] <= resume_after:
                        state.already += 1
                        continue
                    released = continuity.offer(trade)
                    if released:
                        publish(released)
                        unconfirmed += len(released)
                        if unconfirmed >= self.checkpoint_every:
                            self.producer.confirm_delivery()
                            self.checkpoint.record_progress(day, state.last_published, reader.line)
                            unconfirmed = 0
                    if rows % _PROGRESS_EVERY == 0:
                        state.rows = rows
                        self.bar.update_day(raw.tell(), rows)
                state.rows = rows
                released = continuity.drain()
                if released:
                    publish(released)
                self.bar.update_day(size, rows)
        except (zipfile.BadZipFile, EOFError, OSError, UnicodeError) as exc:  # CRC error, truncation mid-stream
            raise BackfillError(f"{archive.path.name}: archive unreadable after line {state.line}: {exc}") from None

    def _checkpoint_confirmed(self, day: date, state: _DayProgress) -> None:
        if state.last_published is None or state.last_published == state.resume_after:
            return
        try:
            if self.producer.flush(30) == 0 and self.producer.healthy:
                self.checkpoint.record_progress(day, state.last_published, state.line)
        except Exception as exc:  # never mask the original error
            log.warning("could not checkpoint after the failure", day=day.isoformat(), error=str(exc))

    def _add_to_summary(self, archive: DayArchive, state: _DayProgress, continuity: ArchiveContinuity) -> None:
        summary, day, c = self.summary, archive.day.isoformat(), continuity.counters
        summary.days_done.append(day)
        if state.resume_after is not None:
            summary.days_resumed.append(day)
        summary.rows_read += state.rows
        summary.rows_already_published += state.already
        summary.rows_published += state.result.rows_published
        summary.duplicates += c.duplicates
        summary.late += c.late
        summary.add_gaps(c.gaps, c.missing_ids, c.gap_ranges)
        log.info(
            "day published",
            day=day,
            origin=archive.origin,
            rows=state.result.rows_published,
            duplicates=c.duplicates,
            gaps=c.gaps,
            bad_rows=state.result.bad_rows,
        )
