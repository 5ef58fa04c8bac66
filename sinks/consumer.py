"""Topic → table sink: batched binary COPY into staging, `INSERT ... ON CONFLICT DO NOTHING`, then commit offsets.

Exactly-once rows from at-least-once delivery: a batch is written in one database transaction keyed on
natural keys, and Kafka offsets are committed only after that transaction commits. A crash between
the two re-delivers the batch, which the `ON CONFLICT DO NOTHING` absorbs. Records that fail to
decode or map go to `dlq.<topic>` and `pipeline_errors` (in the same transaction as the batch) and the
batch goes on. When the database is down the consumer pauses its partitions (so the group keeps it
and nothing more is fetched: back-pressure), retries with backoff, and resumes exactly where it was.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.catalogue import dlq_topic
from schemas.dead_letters import dead_letter_record
from schemas.serde import AvroSerde
from sinks.metrics import SinkMetrics
from sinks.partitions import (
    PLANS,
    add_periods,
    drop_expired_partitions,
    ensure_partitions,
    ensure_partitions_ahead,
    period_start,
)
from sinks.tables import PIPELINE_ERRORS, TableSpec, table_for_topic, write_rows
from tapeflow_runtime.kafka_client import LagProbe, consumer_config, producer_config

log = structlog.get_logger("sink")

MAINTENANCE_INTERVAL_S = 3600.0


@dataclass
class SinkConfig:
    topics: list[str]  # catalogue names
    topic_prefix: str = ""
    group_id: str = "tapeflow-sink"
    batch_rows: int = 50_000
    batch_ms: int = 250
    max_backoff_s: float = 10.0


@dataclass
class Batch:
    rows: dict[str, list[tuple]] = field(default_factory=lambda: defaultdict(list))  # table -> rows
    dlq: list[tuple[str, bytes | None, dict]] = field(default_factory=list)  # (topic, key, dead letter)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    max_time: dict[str, int] = field(default_factory=dict)  # table -> newest event time (ms)
    min_time: dict[str, int] = field(default_factory=dict)  # table -> oldest event time (ms)
    count: int = 0

    def clear(self) -> None:
        self.rows.clear()
        self.dlq.clear()
        self.offsets.clear()
        self.max_time.clear()
        self.min_time.clear()
        self.count = 0


class TopicSink:
    def __init__(self, config: SinkConfig, bootstrap: str, conninfo: str, serde: AvroSerde,
                 metrics: SinkMetrics | None = None) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.conninfo = conninfo
        self.serde = serde
        self.metrics = metrics or SinkMetrics()
        self.specs: dict[str, TableSpec] = {config.topic_prefix + t: table_for_topic(t) for t in config.topics}
        self.catalogue_name = {config.topic_prefix + t: t for t in config.topics}
        self._by_table = {spec.table: spec for spec in self.specs.values()}
        self._by_table[PIPELINE_ERRORS.table] = PIPELINE_ERRORS
        self._covered: dict[str, set[datetime]] = {}  # partition periods known to exist, per table
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        self._dlq_producer: Producer | None = None
        self.assignment: list[TopicPartition] = []
        self.stop_requested = False
        self.committed_batches = 0
        self.database_down = False  # a batch is waiting for the database (what /health reports)
        self.metrics.expect_tables(sorted(self._by_table))
        self._lag = LagProbe(self.metrics.lag, config.group_id)

    # --- lifecycle -------------------------------------------------------------------------------------
    def _make_consumer(self) -> Consumer:
        consumer = Consumer(consumer_config(self.bootstrap, self.config.group_id,
                                            **{"enable.auto.offset.store": False}))
        consumer.subscribe(list(self.specs), on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _on_assign(self, consumer, partitions) -> None:
        self.assignment = list(partitions)
        log.info("partitions assigned", count=len(partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        # an uncommitted batch will be re-delivered to the new owner; it is idempotent, so just drop ours
        self._pending.clear()
        self.assignment = []

    def maintain(self) -> None:
        """Partitions ahead (and plain-PostgreSQL retention): at start and hourly, never per flush."""
        now = datetime.now(UTC)
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                created = ensure_partitions_ahead(conn, now)
                dropped = {t: drop_expired_partitions(conn, t, now) for t in created}
            self._covered.clear()  # re-learn after drops
        except psycopg.Error as exc:  # the batch path retries on its own; maintenance tries again next hour
            log.warning("partition maintenance failed", error=str(exc).splitlines()[0])
            return
        new = sum(len(v) for v in created.values())
        gone = sum(len(v) for v in dropped.values())
        if new or gone:
            log.info("partition maintenance", created=new, dropped=gone)

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        self._consumer = self._make_consumer()
        self._dlq_producer = Producer(producer_config(self.bootstrap))
        self._pending = Batch()
        self.maintain()
        next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
        try:
            while not (self.stop_requested or should_stop()):
                self._fill(self._pending)
                if self._pending.count:
                    self._flush(self._pending)
                self._lag.maybe_refresh(self._consumer, self.assignment, time.monotonic())
                if time.monotonic() >= next_maintenance:
                    self.maintain()
                    next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
        finally:
            try:
                if self._pending.count and self._conn is not None:
                    self._flush(self._pending)
            except Exception:  # shutting down: what is not committed is re-delivered next time
                log.exception("final flush failed; the batch will be re-delivered")
            self._consumer.close()
            self._dlq_producer.flush(10)
            if self._conn is not None:
                self._conn.close()

    # --- consume ---------------------------------------------------------------------------------------
    def _fill(self, batch: Batch) -> None:
        deadline = time.monotonic() + self.config.batch_ms / 1000
        assert self._consumer is not None
        while batch.count < self.config.batch_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msgs = self._consumer.consume(num_messages=min(10_000, self.config.batch_rows - batch.count),
                                          timeout=remaining)
            for msg in msgs:
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("consume error", error=msg.error().str())
                    continue
                self._add(batch, msg)
            if self.stop_requested:
                break

    def _add(self, batch: Batch, msg: Message) -> None:
        topic = msg.topic()
        spec = self.specs[topic]
        batch.offsets[(topic, msg.partition())] = msg.offset() + 1
        batch.count += 1
        kind = "decode"
        try:
            record = self.serde.decode(msg.value())
            kind = "map"
            row = spec.to_row(record)
        except Exception as exc:  # any record we cannot decode or map: dead-letter it, keep the batch
            reason = f"{type(exc).__name__}: {exc}"[:2000]
            dead = self._dead_letter_record(msg, reason)
            batch.dlq.append((topic, msg.key(), dead))
            batch.rows[PIPELINE_ERRORS.table].append(PIPELINE_ERRORS.to_row(dead))
            self.metrics.errors.labels(spec.table, kind).inc()
            return
        batch.rows[spec.table].append(row)
        t = record.get(spec.time_field) if spec.time_field else None
        if t is not None:
            if t > batch.max_time.get(spec.table, -1):
                batch.max_time[spec.table] = t
            if t < batch.min_time.get(spec.table, 1 << 62):
                batch.min_time[spec.table] = t

    # --- write -----------------------------------------------------------------------------------------
    def _flush(self, batch: Batch) -> None:
        attempt = 0
        paused = False
        while True:
            try:
                t0 = time.perf_counter()
                written = self._write(batch)
                break
            except psycopg.Error as exc:
                for table in batch.rows:
                    self.metrics.errors.labels(table, "database").inc()
                if not isinstance(exc, psycopg.OperationalError):
                    raise
                self._drop_connection()
                self.database_down = True
                attempt += 1
                delay = min(self.config.max_backoff_s, 0.2 * 2 ** attempt) * random.uniform(0.5, 1.0)
                log.warning("database unavailable, retrying the batch", error=str(exc).splitlines()[0],
                            retry_in_s=round(delay, 2), attempt=attempt)
                self.metrics.db_retries.inc()
                if not paused and self.assignment:
                    self._consumer.pause(self.assignment)  # back-pressure: fetch nothing more meanwhile
                    paused = True
                end = time.monotonic() + delay
                while time.monotonic() < end:  # keep the group membership alive while we wait
                    self._consumer.poll(0.1)
                    self._lag.maybe_refresh(self._consumer, self.assignment, time.monotonic())
        self.database_down = False
        if paused and self.assignment:
            self._consumer.resume(self.assignment)
        commit_s = time.perf_counter() - t0
        self._send_dlq(batch)
        self._commit_offsets(batch)
        self.metrics.observe_batch(batch.count, commit_s, written, batch.max_time)
        self.committed_batches += 1
        batch.clear()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.conninfo, connect_timeout=5)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None

    def _cover(self, conn: psycopg.Connection, batch: Batch) -> None:
        """Make partitions for data outside the maintained window (a replay or backfill of old days).

        Partition periods already known to exist are cached, so live data costs a set lookup per
        table and batch; only a batch reaching into a new period touches the catalog.
        """
        for table, lo in batch.min_time.items():
            plan = PLANS.get(table)
            if plan is None:
                continue
            first = period_start(plan.granularity, _ms_to_dt(lo))
            last = period_start(plan.granularity, _ms_to_dt(batch.max_time[table]))
            periods, p = [], first
            while p <= last:
                periods.append(p)
                p = add_periods(plan.granularity, p, 1)
            covered = self._covered.setdefault(table, set())
            if all(p in covered for p in periods):
                continue
            try:
                ensure_partitions(conn, table, first, last)
            except ValueError as exc:  # a wild timestamp: leave those rows to the DEFAULT partition
                log.warning("not creating partitions", table=table, reason=str(exc))
                continue
            covered.update(periods)

    @staticmethod
    def _dead_letter_record(msg: Message, reason: str) -> dict:
        return dead_letter_record(source_topic=msg.topic(), value=msg.value() or b"", error=reason, stage="sink",
                                  key=msg.key(), partition=msg.partition(), offset=msg.offset())

    def _write(self, batch: Batch) -> dict[str, int]:
        """Every table of the batch in one transaction: all of it lands, or none of it."""
        conn = self._connection()
        written: dict[str, int] = {}
        with conn.transaction():
            self._cover(conn, batch)
            for table, rows in batch.rows.items():
                written[table] = write_rows(conn, self._by_table[table], rows)
        return written

    def _send_dlq(self, batch: Batch) -> None:
        for topic, key, dead in batch.dlq:
            name = self.catalogue_name[topic]
            dlq = dlq_topic(name)
            self._dlq_producer.produce(self.config.topic_prefix + dlq, key=key, value=self.serde.encode(dlq, dead))
            self.metrics.dlq.labels(dlq, dead["stage"]).inc()
        if batch.dlq:
            self._dlq_producer.flush(10)

    def _commit_offsets(self, batch: Batch) -> None:
        if not batch.offsets:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # e.g. a rebalance took the partitions: rows are in, re-delivery is harmless
            log.warning("offset commit failed; the batch may be re-delivered (idempotent)", error=str(exc))


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
