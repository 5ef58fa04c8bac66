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
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable

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
from producers.backfill.topic_publisher import (
    TRADES,
    TradeTopicPublisher,
    ensure_destination,
    trade_topic_spec,
)
from producers.backfill.vision_files import DEFAULT_BASE_URL
from producers.binance.parse import EXCHANGE
from producers.metrics import ProducerMetrics
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde

log = structlog.get_logger("producer.backfill")

DEFAULT_CHECKPOINT_EVERY = 200_000
_PROGRESS_EVERY = 8_192  # rows between progress updates
# Throughput over latency: bigger batches, lz4 as elsewhere; still idempotent with acks=all.
BACKFILL_PRODUCER_OVERRIDES = {"linger.ms": 50, "batch.size": 1_000_000}


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


def cache_dir_for(home: Path) -> Path:
    return home / "backfill" / "cache"


def run_backfill(*, bootstrap: str, topic_prefix: str, home: Path, symbol: str, start: date, end: date,
                 directory: Path | None, topic: str = TRADES, base_url: str = DEFAULT_BASE_URL,
                 progress: bool = True, cache_dir: Path | None = None, registry_url: str | None = None,
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY, reorder_window: int = DEFAULT_REORDER_WINDOW,
                 clock: Callable[[], int] = wall_clock_ms,
                 producer_overrides: dict[str, Any] | None = None) -> BackfillSummary:
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
    source: ArchiveSource = (LocalDirectory(directory) if directory is not None
                             else VisionDownloader(base_url, cache_dir or cache_dir_for(home)))
    checkpoint = Checkpoint.load(home, symbol, topic_prefix + topic)
    summary = BackfillSummary(symbol, topic_prefix + topic, start.isoformat(), end.isoformat(),
                              checkpoint=str(checkpoint.path))
    ensure_destination(bootstrap, topic_prefix, topic)
    publisher = TradeTopicPublisher(bootstrap, AvroSerde(registry_from_url(registry_url)), ProducerMetrics(),
                                    topic_prefix, topic,
                                    **(BACKFILL_PRODUCER_OVERRIDES | (producer_overrides or {})))
    bar = make_progress(progress, len(days))
    day_run = _DayPublisher(symbol, publisher, checkpoint, summary, bar, clock, checkpoint_every, reorder_window)
    started = time.monotonic()
    # the chain starts at the day before the range if an earlier run completed it
    before = checkpoint.result(days[0] - timedelta(days=1))
    chain_last = before.last_agg_id if before is not None else None
    try:
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
    finally:
        bar.close()
        summary.seconds = time.monotonic() - started
        publisher.flush(10)  # best effort on the error path; the checkpoint only counts confirmed rows
    return summary


@dataclass
class _DayPublisher:
    """Publishes one day's archive; holds what stays the same from day to day."""

    symbol: str
    publisher: TradeTopicPublisher
    checkpoint: Checkpoint
    summary: BackfillSummary
    bar: BackfillProgress
    clock: Callable[[], int]
    checkpoint_every: int
    reorder_window: int

    def publish(self, archive: DayArchive, chain_last: int | None) -> DayResult:
        day, summary = archive.day, self.summary
        key = f"{EXCHANGE}:{self.symbol}".encode()
        resume_after = self.checkpoint.resume_after(day)
        continuity = ArchiveContinuity(self.symbol, self.reorder_window)
        continuity.continue_after(resume_after if resume_after is not None else chain_last)
        result = DayResult()
        publish_trade = self.publisher.publish_trade
        receive_time = self.clock()
        bad_before = summary.bad_rows

        def on_bad(bad: BadRow) -> None:
            summary.add_bad_row(bad)
            self.publisher.dead_letter_row(bad, key, receive_time)

        last_published: int | None = resume_after
        unconfirmed = 0
        rows = already = 0
        reader: AggTradeCsvReader | None = None
        try:
            with open_archive(archive.path) as (raw, size):
                self.bar.start_day(day, size)
                reader = AggTradeCsvReader(raw, source=archive.path.name, symbol=self.symbol,
                                           receive_time=receive_time, on_bad=on_bad)
                for trade in reader:
                    rows += 1
                    if resume_after is not None and trade["agg_id"] <= resume_after:
                        already += 1
                        continue
                    released = continuity.offer(trade)
                    if released:
                        for t in released:
                            publish_trade(key, t)
                        if result.first_agg_id is None:
                            result.first_agg_id = released[0]["agg_id"]
                        last_published = released[-1]["agg_id"]
                        result.rows_published += len(released)
                        unconfirmed += len(released)
                        if unconfirmed >= self.checkpoint_every:
                            self.publisher.confirm_delivery()
                            self.checkpoint.record_progress(day, last_published)
                            unconfirmed = 0
                    if rows % _PROGRESS_EVERY == 0:
                        self.bar.update_day(raw.tell(), rows)
                released = continuity.drain()
                for t in released:
                    publish_trade(key, t)
                if released:
                    if result.first_agg_id is None:
                        result.first_agg_id = released[0]["agg_id"]
                    last_published = released[-1]["agg_id"]
                    result.rows_published += len(released)
                self.bar.update_day(size, rows)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:  # e.g. CRC error or truncation mid-stream
            raise BackfillError(f"{archive.path.name}: archive unreadable after line "
                                f"{reader.line if reader else 0}: {exc}") from None
        self.publisher.confirm_delivery()
        c = continuity.counters
        result.last_agg_id = last_published
        result.duplicates, result.late, result.gaps, result.missing_ids = c.duplicates, c.late, c.gaps, c.missing_ids
        result.bad_rows = summary.bad_rows - bad_before
        self.checkpoint.record_complete(day, result)

        summary.days_done.append(day.isoformat())
        if resume_after is not None:
            summary.days_resumed.append(day.isoformat())
        summary.rows_read += rows
        summary.rows_already_published += already
        summary.rows_published += result.rows_published
        summary.duplicates += c.duplicates
        summary.late += c.late
        summary.add_gaps(c.gaps, c.missing_ids, c.gap_ranges)
        log.info("day published", day=day.isoformat(), origin=archive.origin, rows=result.rows_published,
                 duplicates=c.duplicates, gaps=c.gaps, bad_rows=result.bad_rows)
        return result
