"""The sink's writers: a decoded batch into PostgreSQL, every table of it in one transaction.

A writer owns its database connection (one per writer thread, so one PostgreSQL backend each) and
only writes: it never touches Kafka. The batch's offsets are the checkpoint's business
(`sinks.checkpoint`), once the writer hands the batch back committed.

- All of a batch lands, or none of it: the tables' rows are COPYed or upserted in one transaction,
  and every write is DO NOTHING on natural keys, so a batch written twice (re-delivered after a
  crash, or by two writers at once) stores each row once.
- The database down: the batch is retried with backoff (up to `max_backoff_s`), and as soon as one
  writer gets through the others retry at once (a writer left sleeping would hold an older batch out
  of the table while newer ones land). A stop request ends the retries (`Stopped`): the batch was
  not committed, so its records are re-delivered to the next run.
- Partitions: a batch reaching into a period not known to exist (a replay or backfill of old days)
  makes its partitions first, each table in a transaction of its own (`_cover`); the periods known
  to exist are cached across writers and forgotten when maintenance drops partitions.
- Retention: the days a batch wrote are recorded in the same transaction, at most every
  `RECORD_WRITES_EVERY_S` per (table, day), so retention never drops them soon after.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import structlog

from sinks.batch import Batch
from sinks.columnar import copy_payload
from sinks.metrics import SinkMetrics
from sinks.partitions import PLANS, add_periods, ensure_partitions, period_start
from sinks.retention import record_writes
from sinks.tables import TableSpec, copy_binary, write_rows

log = structlog.get_logger("sink")

RECORD_WRITES_EVERY_S = 600.0  # a (table, day) written again is re-recorded at most this often


class Stopped(Exception):
    """A stop was requested while the batch waited for the database: it is not committed."""


class BatchWriter:
    """The writers of one sink: `flush(batch, slot)` from writer thread `slot`."""

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        tables: dict[str, TableSpec],
        metrics: SinkMetrics,
        *,
        slots: int,
        first_backoff_s: float,
        max_backoff_s: float,
        stopping: Callable[[], bool],
    ) -> None:
        self.conninfo = conninfo
        self._connect_kwargs = connect_kwargs
        self._tables = tables
        self.metrics = metrics
        self.first_backoff_s, self.max_backoff_s = first_backoff_s, max_backoff_s
        self._stopping = stopping
        self._conns: list[psycopg.Connection | None] = [None] * slots
        self._lock = threading.Lock()  # _covered, _covered_stale and _recorded, shared by the writers
        self._covered: dict[str, set[datetime]] = {}  # partition periods known to exist, per table
        self._covered_stale = False
        self._recorded: dict[tuple[str, int], float] = {}  # (table, day) -> when recorded (monotonic)
        self.database_down = False  # a batch is waiting for the database (what /health reports)
        self.database_error = ""  # the last error while it is down, and since when (monotonic)
        self.database_down_since: float | None = None

    def partitions_dropped(self) -> None:
        """Maintenance dropped partitions: re-learn which exist before trusting the cache."""
        with self._lock:
            self._covered_stale = True

    def flush(self, batch: Batch, slot: int = 0) -> None:
        """Write ``batch`` until it is committed; raises `Stopped` if a stop comes while the database is down."""
        attempt = 0
        while True:
            try:
                t0 = time.perf_counter()
                batch.written = self._write(batch, slot)
                batch.commit_s = time.perf_counter() - t0
                if self.database_down:
                    log.info(
                        "database reachable again",
                        down_s=round(time.monotonic() - (self.database_down_since or time.monotonic()), 1),
                    )
                self.database_down, self.database_down_since = False, None
                self.metrics.database_state.set(0)
                return
            except psycopg.errors.DeadlockDetected as exc:
                # two writers storing the same keys in a different order (re-delivered records): the
                # transaction was rolled back whole, so writing it again is safe; the database is up
                log.info("deadlock between sink writers, writing the batch again", error=str(exc).splitlines()[0])
                continue
            except psycopg.Error as exc:
                for table in {*batch.rows, *batch.copies}:
                    self.metrics.errors.labels(table, "database").inc()
                if not isinstance(exc, psycopg.OperationalError):
                    raise
                self.drop_connection(slot)
                self.database_error = str(exc).splitlines()[0]
                if not self.database_down:
                    self.database_down_since = time.monotonic()
                self.database_down = True
                self.metrics.database_state.set(1)
                attempt += 1
                backoff = min(self.max_backoff_s, self.first_backoff_s * 2 ** (attempt - 1))
                delay = backoff * random.uniform(0.5, 1.0)  # nosec B311 # retry jitter, not a secret
                log.warning(
                    "database unavailable, retrying the batch",
                    error=str(exc).splitlines()[0],
                    retry_in_s=round(delay, 2),
                    attempt=attempt,
                )
                self.metrics.db_retries.inc()
                end = time.monotonic() + delay
                while time.monotonic() < end:
                    if self._stopping():
                        raise Stopped() from None
                    if not self.database_down:  # another writer got through: the database is back, retry now
                        break
                    time.sleep(0.05)

    def connection(self, slot: int) -> psycopg.Connection:
        conn = self._conns[slot]
        if conn is None or conn.closed:
            conn = self._conns[slot] = psycopg.connect(self.conninfo, connect_timeout=5, **self._connect_kwargs)
        return conn

    def drop_connection(self, slot: int) -> None:
        conn, self._conns[slot] = self._conns[slot], None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # nosec B110 # closing a connection that is already failing: the error that matters was logged
                pass

    def close(self) -> None:
        for slot in range(len(self._conns)):
            self.drop_connection(slot)

    def _cover(self, conn: psycopg.Connection, batch: Batch) -> dict[str, list[datetime]]:
        """Make partitions for data outside the maintained window (a replay or backfill of old days).

        Partition periods already known to exist are cached, so live data costs a set lookup per
        table and batch; only a batch reaching into a new period touches the catalog. Each table's
        partitions are made and committed in a transaction of their own, before the batch's write:
        creating one locks its parent ACCESS EXCLUSIVE, and holding that lock while waiting for the
        next table's deadlocked with any reader of both tables in the other order (a count of trades,
        then of depth_updates, while the sink made old days of depth_updates, then of trades:
        PostgreSQL aborted the reader). Returns the periods ensured, now visible to every writer
        (`_learn_covered`).
        """
        with self._lock:
            if self._covered_stale:
                self._covered.clear()
                self._covered_stale = False
            known = {table: set(periods) for table, periods in self._covered.items()}
        ensured: dict[str, list[datetime]] = {}
        for table, lo in sorted(batch.min_time.items()):
            plan = PLANS.get(table)
            if plan is None:
                continue
            first = period_start(plan.granularity, _ms_to_dt(lo))
            last = period_start(plan.granularity, _ms_to_dt(batch.max_time[table]))
            periods, p = [], first
            while p <= last:
                periods.append(p)
                p = add_periods(plan.granularity, p, 1)
            covered = known.get(table, set())
            if all(p in covered for p in periods):
                continue
            try:
                with conn.transaction():  # this table only: its parent's lock ends here
                    ensure_partitions(conn, table, first, last)
            except ValueError as exc:  # a wild timestamp: leave those rows to the DEFAULT partition
                log.warning("not creating partitions", table=table, reason=str(exc))
                continue
            ensured[table] = periods
        return ensured

    def _learn_covered(self, ensured: dict[str, list[datetime]]) -> None:
        with self._lock:
            if not self._covered_stale:
                for table, periods in ensured.items():
                    self._covered.setdefault(table, set()).update(periods)

    def _record_writes(self, conn: psycopg.Connection, batch: Batch) -> list[tuple[str, int]]:
        """Remember the days written (retention never drops them soon after); what was recorded.

        Tables in name order: two writers upserting the same (table, day) rows lock them in one order.
        """
        now = time.monotonic()
        recorded = []
        for table, days in sorted(batch.days.items()):
            if table not in PLANS:
                continue
            with self._lock:
                due = [d for d in days if now - self._recorded.get((table, d), -1e18) > RECORD_WRITES_EVERY_S]
            if due:
                record_writes(conn, table, [_day(d) for d in due])
                recorded += [(table, d) for d in due]
        return recorded

    def _write(self, batch: Batch, slot: int = 0) -> dict[str, int]:
        """Every table of the batch in one transaction: all of it lands, or none of it."""
        conn = self.connection(slot)
        written: dict[str, int] = defaultdict(int)
        self._learn_covered(self._cover(conn, batch))
        with conn.transaction():
            for table, parts in batch.copies.items():
                written[table] += copy_binary(conn, self._tables[table], copy_payload(parts), batch.copy_rows[table])
            for table, rows in batch.rows.items():
                written[table] += write_rows(conn, self._tables[table], rows)
            recorded = self._record_writes(conn, batch)
        now = time.monotonic()
        with self._lock:
            for key in recorded:
                self._recorded[key] = now
        return dict(written)


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _day(day_number: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day_number)
