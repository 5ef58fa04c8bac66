"""Topic → table sink: consume and decode in one thread, write in another; offsets only after the DB commit.

Exactly-once rows from at-least-once delivery: a batch is written in one database transaction keyed on
natural keys, and Kafka offsets are committed only after that transaction commits. A crash between
the two re-delivers the batch, which the natural keys absorb (a direct COPY that hits an existing
key is retried through staging with `ON CONFLICT DO NOTHING`, sinks.tables.copy_binary). Records
that fail to decode or map go to `dlq.<topic>` and `pipeline_errors` (in the same transaction as the
batch) and the batch goes on.

Throughput (≥ 300k trades/s per process): the consumer thread fetches the next batch while a
sealer thread decodes the one before into COPY data and `SinkConfig.writers` writer threads
(default 2), each with its own database connection and so its own PostgreSQL backend, write the
ones before in parallel, each batch in its own transaction (one batch queued at each hand-over, so
memory stays bounded). The sealer keeps a decoded batch ready for the next free writer: when each
writer decoded its own batch, its connection sat idle between transactions for the decode (~1/3
of the time, measured with the sink's own timings: benchmarks/RESULTS.md). One backend
ingesting `trades` (heap, primary-key btree, BRIN, WAL) was the limit with one writer. Flat topics
such as md.trades are decoded a whole batch at a time straight into columns and encoded as binary
COPY (sinks.columnar; a batch that fails is halved until the bad records are among a few thousand
that go record by record); other topics go record by record (fastavro, a tuple per row).

Offsets with parallel writers: batches are numbered as they are handed over; the writers hand
committed batches back in whatever order their transactions finish, and the consumer thread
sends dead letters and commits offsets only for the unbroken prefix of committed batches (a
watermark). A partition's offsets grow with the batch number, so an offset is committed only once
every batch holding an earlier record of that partition is in the database: a batch that is not
committed (database down, writer gave up at stop) holds back every later batch's offsets. Two
writers storing the same natural key at once (a re-delivered record) is settled by PostgreSQL:
the second waits for the first's commit, then takes the ON CONFLICT DO NOTHING path; a deadlock
between them is retried. Every write is DO NOTHING on natural keys, so the order in which parallel
transactions commit never changes what is stored.

When the database is down the writer retries with backoff (up to `max_backoff_s`, 10 s), and as soon as
one writer gets through the others retry at once: a writer left sleeping would hold an older batch
out of the table for up to its backoff while newer ones land (a hole that closes late). The
consumer thread, finding the queue full, pauses its partitions (back-pressure: nothing more is
fetched, the group keeps it) and polls only to stay in the group, then resumes exactly where it was.
A stop request ends the retries: what was not committed is re-delivered to the next run.

The sink subscribes to its topics as a consumer group, on the embedded broker and on an external
Kafka cluster alike: the group shares the partitions among however many sinks run, and a partition
starts at the group's committed offset (none: the earliest record retained).

Flat topics are not read through librdkafka's messages when the cluster has one broker (the embedded
Kafka, a single-node external one): of the partitions the group assigns, theirs are fetched as whole
record batches (`tapeflow_runtime.record_batches`: values gathered into one buffer by a compiled walk,
no Python object per record) and each batch of them is decoded at once; the other topics, the group,
the commits, the committed offsets and the watermarks stay librdkafka's. On the embedded Kafka the
sink process took 1.1 instead of 4.0 CPU-s per million trades (benchmarks/RESULTS.md, "Sink on
Apache Kafka"). On a cluster of several brokers (partition leaders spread, moving at a failover)
librdkafka fetches everything; `SinkConfig.raw_fetch` turns the raw fetch off.

Maintenance (at start and hourly, never per flush): partitions ahead (plain PostgreSQL) and
retention (sinks.retention): nothing holding a day the sink wrote since it started is dropped.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import numpy as np
import psycopg
import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.catalogue import MD_PREFIX, dlq_topic
from schemas.dead_letters import dead_letter_record
from schemas.serde import AvroSerde
from sinks.columnar import DAY_MS, ColumnarCodec, ColumnarError, copy_payload
from sinks.metrics import SinkMetrics
from sinks.partitions import (
    PLANS,
    add_periods,
    ensure_partitions,
    ensure_partitions_ahead,
    period_start,
)
from sinks.retention import (
    RetentionPolicy,
    apply_retention,
    protect_since,
    record_writes,
    resolve_policies,
)
from sinks.tables import (
    PIPELINE_ERRORS,
    TableSpec,
    copy_binary,
    table_for_topic,
    write_rows,
)
from sinks.trade_levels import backfill_pending, compact_written_days, pending_days
from tapeflow_runtime.db_liveness import liveness_kwargs
from tapeflow_runtime.kafka_client import LagProbe, consumer_config, producer_config
from tapeflow_runtime.record_batches import RawFetcher, RecordChunk, SplitConsumer, one_broker

log = structlog.get_logger("sink")

MAINTENANCE_INTERVAL_S = 3600.0
RECORD_WRITES_EVERY_S = 600.0  # a (table, day) written again is re-recorded at most this often
PAUSE_AFTER_S = 0.5  # the writer busy this long with a full queue: pause the partitions
# librdkafka fetches ahead until this many records wait locally (default 100,000); more keeps fetches
# to the broker going while the consumer thread hands a batch over, so a 50,000-row batch is never
# waited for. Memory stays capped by queued.max.messages.kbytes (64 MiB by default).
PREFETCH_CONFIG = {"queued.min.messages": 500_000}
SPLIT_BELOW = 2_000  # records of a flat topic that failed the fast path: halved until this few (_encode)


@dataclass
class SinkConfig:
    topics: list[str]  # catalogue names
    topic_prefix: str = ""
    group_id: str = "tapeflow-sink"
    batch_rows: int = 50_000
    batch_ms: int = 250
    max_backoff_s: float = 10.0
    first_backoff_s: float = 0.4  # the first retry's wait; it doubles per attempt up to max_backoff_s (jittered)
    retention: dict[str, RetentionPolicy] = field(default_factory=resolve_policies)
    columnar: bool = True  # decode flat topics a batch at a time (sinks.columnar)
    writers: int = 2  # writer threads, each with its own connection (parallel PostgreSQL backends)
    # how long the broker holds a fetch that finds nothing new (fetch.wait.max.ms): Kafka answers as soon
    # as data is there, so while records flow the wait adds no delay; an idle sink asks once per wait
    fetch_wait_ms: int = 500
    # a one-broker cluster: the flat topics' partitions fetched as whole record batches
    # (tapeflow_runtime.record_batches), no Python object per record; False: librdkafka for all
    raw_fetch: bool = True


@dataclass
class Batch:
    rows: dict[str, list[tuple]] = field(default_factory=lambda: defaultdict(list))  # table -> rows
    copies: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))  # table -> COPY row data
    copy_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dlq: list[tuple[str, bytes | None, dict]] = field(default_factory=list)  # (topic, key, dead letter)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    max_time: dict[str, int] = field(default_factory=dict)  # table -> newest event time (ms)
    min_time: dict[str, int] = field(default_factory=dict)  # table -> oldest event time (ms)
    days: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # table -> UTC days written
    # topic -> its flat-topic records not decoded yet: encoded into `copies` once per batch by
    # the writer that takes it (TopicSink._seal), since each encode call has a fixed cost of ~2 ms
    columnar: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0
    written: dict[str, int] = field(default_factory=dict)
    commit_s: float = 0.0
    seq: tuple[int, int] = (0, -1)  # (assignment generation, number): set when handed to the writers

    def clear(self) -> None:
        """Empty in place (a rebalance took the partitions: whoever holds this batch sees it empty)."""
        for name in ("rows", "copies", "copy_rows", "days", "columnar"):
            getattr(self, name).clear()
        self.dlq.clear()
        self.offsets.clear()
        self.max_time.clear()
        self.min_time.clear()
        self.count = 0

    def note_time(self, table: str, lo: int, hi: int) -> None:
        if hi > self.max_time.get(table, -1):
            self.max_time[table] = hi
        if lo < self.min_time.get(table, 1 << 62):
            self.min_time[table] = lo


class _Stopped(Exception):
    """The writer gave up a batch because the sink is stopping (it will be re-delivered)."""


class TopicSink:
    def __init__(
        self, config: SinkConfig, bootstrap: str, conninfo: str, serde: AvroSerde, metrics: SinkMetrics | None = None
    ) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.conninfo = conninfo
        self._liveness = liveness_kwargs(conninfo)  # a partitioned link is noticed in seconds, both ends
        self.serde = serde
        self.metrics = metrics or SinkMetrics()
        # per topic name on the broker (the catalogue name under topic_prefix)
        self.specs: dict[str, TableSpec] = {}
        self.catalogue_name: dict[str, str] = {}
        self.codecs: dict[str, ColumnarCodec] = {}
        for name in config.topics:
            topic = config.topic_prefix + name
            self.specs[topic] = spec = table_for_topic(name)
            self.catalogue_name[topic] = name
            codec = ColumnarCodec.for_topic(spec, self.serde, name) if config.columnar else None
            if codec is not None:
                self.codecs[topic] = codec
        self._by_table = {table_for_topic(t).table: table_for_topic(t) for t in config.topics}
        self._by_table[PIPELINE_ERRORS.table] = PIPELINE_ERRORS
        self._covered: dict[str, set[datetime]] = {}  # partition periods known to exist, per table
        self._covered_stale = False
        self._recorded: dict[tuple[str, int], float] = {}  # (table, day) -> when recorded (monotonic)
        if config.writers < 1:
            raise ValueError(f"writers must be at least 1, not {config.writers}")
        self._conns: list[psycopg.Connection | None] = [None] * config.writers  # one per writer thread
        self._cache_lock = threading.Lock()  # _covered, _covered_stale and _recorded, shared by the writers
        self._consumer: Consumer | SplitConsumer | None = None
        self._split: SplitConsumer | None = None  # _consumer when the raw fetcher takes the flat topics
        self._dlq_producer: Producer | None = None
        self._todo: queue.Queue[Batch | None] = queue.Queue(maxsize=1)  # consumer thread -> sealer
        self._sealed: queue.Queue[Batch | None] = queue.Queue(maxsize=1)  # sealer -> writers
        self._done: queue.Queue[Batch] = queue.Queue()
        self._writers: list[threading.Thread] = []  # the sealer first, then the writers
        self._writer_error: BaseException | None = None
        # the offset watermark (consumer thread only): batches are numbered per assignment generation
        # (one per rebalance that took the partitions)
        self._generation = 0
        self._next_seq = 0  # number of the next batch handed to the writers
        self._next_commit = 0  # lowest number whose offsets are not committed yet
        self._finished: dict[int, Batch] = {}  # committed in the database, waiting for earlier batches
        self._pending = Batch()
        self.assignment: list[TopicPartition] = []
        self.rebalances = 0  # group rebalances that took the partitions
        self.stop_requested = False
        self.committed_batches = 0
        self.started_at = datetime.now(UTC)
        self._last_maintenance: datetime | None = None
        self._backfill: threading.Thread | None = None  # trade_levels_1m's old days (migration 0021)
        self.database_down = False  # a batch is waiting for the database (what /health reports)
        self.database_error = ""  # the last error while it is down, and since when (monotonic)
        self.database_down_since: float | None = None
        self.metrics.expect_tables(sorted(self._by_table))
        self._lag = LagProbe(self.metrics.lag, config.group_id)

    # --- lifecycle -------------------------------------------------------------------------------------
    def _make_consumer(self) -> Consumer:
        consumer = Consumer(
            consumer_config(
                self.bootstrap,
                self.config.group_id,
                **{
                    "enable.auto.offset.store": False,
                    **PREFETCH_CONFIG,
                    "fetch.wait.max.ms": self.config.fetch_wait_ms,
                },
            )
        )
        broker = one_broker(consumer) if self.config.raw_fetch and self.codecs else None
        if broker is not None:
            consumer = SplitConsumer(
                consumer, RawFetcher(broker, fetch_wait_ms=self.config.fetch_wait_ms), raw=self._raw_fetched
            )
        self._split = consumer if isinstance(consumer, SplitConsumer) else None
        consumer.subscribe(list(self.specs), on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _raw_fetched(self, topic: str) -> bool:
        """Only market data (md.*) is fetched raw: its producers are idempotent, never transactional.
        The engine's and executor's outputs (bars.1m among the columnar topics) commit in transactions,
        and the raw fetch does not drop the batches of aborted ones (the Fetch answer's aborted-
        transaction list); librdkafka, reading committed, does."""
        return topic in self.codecs and self.catalogue_name[topic].startswith(MD_PREFIX)

    def _on_assign(self, consumer, partitions) -> None:
        self.assignment = list(partitions)
        if self._split is not None:  # the flat topics' partitions to the raw fetcher, the rest to librdkafka
            self._split.assign(partitions)
        log.info("partitions assigned", count=len(partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        # uncommitted batches will be re-delivered to the new owner; they are idempotent, so drop ours.
        # Those being written finish, but a new generation starts: their offsets are never committed (the
        # re-delivered copies are), and the watermark starts afresh for the next assignment.
        self._pending.clear()
        while True:
            try:
                self._todo.get_nowait()
            except queue.Empty:
                break
        self._generation += 1
        self.rebalances += 1
        self._next_seq = self._next_commit = 0
        self._finished.clear()
        self.assignment = []
        if self._split is not None:
            self._split.revoke()

    def maintain(self) -> None:
        """Partitions ahead, retention, trade_levels_1m compaction (and its backfill, in a thread): at start and
        hourly, never per flush."""
        now = datetime.now(UTC)
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5, **self._liveness) as conn:
                created = ensure_partitions_ahead(conn, now)
                dropped = apply_retention(conn, self.config.retention, now, protect_since(self.started_at, now))
                # days written since the last maintenance (at start: in the last 2 h, the predecessor's), by
                # the sink that writes trades (the others would only repeat it)
                if any(spec.table == "trades" for spec in self.specs.values()):
                    compact_written_days(conn, self._last_maintenance or self.started_at - timedelta(hours=2))
                self._last_maintenance = now
                backfill = bool(pending_days(conn))
            with self._cache_lock:
                self._covered_stale = True  # re-learn after drops
        except psycopg.Error as exc:  # the batch path retries on its own; maintenance tries again next hour
            log.warning("partition maintenance failed", error=str(exc).splitlines()[0])
            return
        if backfill and (self._backfill is None or not self._backfill.is_alive()):
            self._backfill = threading.Thread(
                target=self._backfill_trade_levels, name="sink-trade-levels-backfill", daemon=True
            )
            self._backfill.start()
        new = sum(len(v) for v in created.values())
        gone = sum(len(v) for v in dropped.values())
        if new or gone:
            log.info(
                "partition maintenance",
                created=new,
                dropped=gone,
                dropped_tables={t: len(v) for t, v in dropped.items() if v},
            )

    def _backfill_trade_levels(self) -> None:
        """The days of trades stored before migration 0021, one transaction each, beside the consumer
        (a big history takes minutes; the consumer and its writers keep going, a writer into the day
        being summed waits for that day only)."""
        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5, **self._liveness) as conn:
                done = backfill_pending(conn, lambda: self.stop_requested)
            if done:
                log.info("trade_levels_1m backfilled", days=done)
        except psycopg.Error as exc:  # tried again at the next maintenance; the UI reads trades meanwhile
            log.warning("trade_levels_1m backfill failed", error=str(exc).splitlines()[0])

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.started_at = datetime.now(UTC)
        self._consumer = self._make_consumer()
        self._dlq_producer = Producer(producer_config(self.bootstrap))
        self._pending = Batch()
        self._writers = [threading.Thread(target=self._seal_loop, name="sink-sealer", daemon=True)] + [
            threading.Thread(target=self._write_loop, args=(slot,), name=f"sink-writer-{slot}", daemon=True)
            for slot in range(self.config.writers)
        ]
        for writer in self._writers:
            writer.start()
        self.maintain()
        next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
        try:
            while not (self.stop_requested or should_stop()):
                self._fill(self._pending)
                self._collect()
                if self._pending.count:
                    self._submit(self._pending)
                    self._pending = Batch()
                self._lag.maybe_refresh(self._consumer, self.assignment, time.monotonic())
                if time.monotonic() >= next_maintenance:
                    self.maintain()
                    next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL_S
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self.stop_requested = True  # from here on the writer gives up a batch rather than wait for a dead DB
        try:
            if self._pending.count and self.assignment:
                self._submit(self._pending, give_up_after=30.0)
            # one end marker per writer, after what is queued: the sealer passes them on after what it
            # decoded, the writers finish it (or give up if the DB is down). Any writer may take any
            # marker, so count markers, not the writers still alive
            markers = self.config.writers
            while markers and any(writer.is_alive() for writer in self._writers):
                try:
                    self._todo.put(None, timeout=0.1)
                    markers -= 1
                except queue.Full:
                    pass
            for writer in self._writers:
                writer.join()
            self._collect()
        except Exception:  # shutting down: what is not committed is re-delivered next time
            log.exception("final flush failed; the batch will be re-delivered")
        finally:
            self._consumer.close()
            self._dlq_producer.flush(10)
            for slot in range(len(self._conns)):
                self._drop_connection(slot)
        if self._writer_error is not None:
            raise self._writer_error

    # --- consume and decode (consumer thread) ----------------------------------------------------------
    def _fill(self, batch: Batch) -> None:
        deadline = time.monotonic() + self.config.batch_ms / 1000
        assert self._consumer is not None
        while batch.count < self.config.batch_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msgs = self._consumer.consume(
                num_messages=min(10_000, self.config.batch_rows - batch.count), timeout=remaining
            )
            if msgs:
                self._absorb(batch, msgs)
            if self.stop_requested:
                break

    def _absorb(self, batch: Batch, msgs: list[Message]) -> None:
        """Add one fetch: flat topics a topic at a time into columns, the rest record by record."""
        by_topic: dict[str, list[Message]] = defaultdict(list)
        offsets = batch.offsets
        for msg in msgs:
            if isinstance(msg, RecordChunk):  # a partition's records from the raw fetcher, decoded as one
                offsets[(msg.topic, msg.partition)] = msg.next_offset
                batch.count += msg.count
                batch.columnar[msg.topic].append(msg)
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("consume error", error=msg.error().str())
                continue
            topic = msg.topic()
            by_topic[topic].append(msg)
            offsets[(topic, msg.partition())] = msg.offset() + 1
        for topic, topic_msgs in by_topic.items():
            batch.count += len(topic_msgs)
            if topic in self.codecs:  # decoded with the rest of the batch's, when it is handed over
                batch.columnar[topic] += topic_msgs
                continue
            for msg in topic_msgs:
                self._add(batch, msg)

    def _seal(self, batch: Batch) -> None:
        """Decode the batch's flat-topic records, a topic at a time, into binary COPY row data (sealer
        thread: the consumer thread only consumes, so its ~2 µs a record of consume() is not added to
        the ~1.5 µs a record of decoding in one thread; polars and pgpq run partly outside the GIL)."""
        for topic, items in batch.columnar.items():
            chunks = [x for x in items if isinstance(x, RecordChunk)]
            msgs = [x for x in items if not isinstance(x, RecordChunk)] if len(chunks) < len(items) else []
            if chunks:
                self._encode_chunks(batch, self.codecs[topic], chunks)
            if msgs:
                self._encode(batch, self.codecs[topic], msgs)
        batch.columnar.clear()

    def _encode_chunks(self, batch: Batch, codec: ColumnarCodec, chunks: list[RecordChunk]) -> None:
        """The raw fetcher's chunks through the fast path at once; if they are not all provably right, each
        chunk's records go the way of messages (`_encode`: halved down to the bad ones, dead letters)."""
        try:
            part = codec.encode_joined(
                b"".join(c.values for c in chunks), np.concatenate([c.value_lengths for c in chunks])
            )
        except ColumnarError:
            for chunk in chunks:
                self._encode(batch, codec, chunk.records())
            return
        self._add_part(batch, part)

    def _encode(self, batch: Batch, codec: ColumnarCodec, msgs: list[Message]) -> None:
        """`msgs` through the fast path; if they are not all provably right, each half on its own, down to
        SPLIT_BELOW records, which go record by record (where dead letters are made): a bad record sends
        a few thousand of a batch's records down the slow path, not all of them."""
        try:
            part = codec.encode([m.value() for m in msgs])
        except ColumnarError:
            if len(msgs) > SPLIT_BELOW:
                half = len(msgs) // 2
                self._encode(batch, codec, msgs[:half])
                self._encode(batch, codec, msgs[half:])
            else:
                for msg in msgs:
                    self._add(batch, msg)
            return
        self._add_part(batch, part)

    @staticmethod
    def _add_part(batch: Batch, part) -> None:
        batch.copies[part.table].append(part.data)
        batch.copy_rows[part.table] += part.rows
        batch.note_time(part.table, part.min_ms, part.max_ms)
        batch.days[part.table].update(part.days)

    def _add(self, batch: Batch, msg: Message) -> None:
        topic = msg.topic()
        spec = self.specs[topic]
        kind = "decode"
        try:
            record = self.serde.decode(msg.value())
            kind = "map"
            row = spec.to_row(record)
            if any(isinstance(v, str) and "\x00" in v for v in row):  # PostgreSQL text cannot hold NUL: the
                raise ValueError("a text field holds a NUL character")  # batch's write would fail for ever
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
            batch.note_time(spec.table, t, t)
            batch.days[spec.table].add(t // DAY_MS)

    def _submit(self, batch: Batch, give_up_after: float | None = None) -> None:
        """Hand `batch` to the writer; while it is busy for long, pause the partitions (back-pressure)."""
        waited_since = time.monotonic()
        paused: list[TopicPartition] = []
        try:
            while True:
                batch.seq = (self._generation, self._next_seq)  # a rebalance during the wait starts a new one
                try:
                    self._todo.put(batch, timeout=0.05)
                    self._next_seq += 1
                    return
                except queue.Full:
                    pass
                self._collect()
                if not all(writer.is_alive() for writer in self._writers):
                    raise self._writer_error or RuntimeError("a writer thread of the sink ended")
                if give_up_after is not None and time.monotonic() - waited_since > give_up_after:
                    return
                if not paused and self.assignment and time.monotonic() - waited_since > PAUSE_AFTER_S:
                    paused = list(self.assignment)
                    self._consumer.pause(paused)
                if paused:
                    self._lag.maybe_refresh(self._consumer, self.assignment, time.monotonic())
                    msg = self._consumer.poll(0.1)  # keeps the group membership; paused: normally nothing
                    if msg is not None:
                        self._absorb(batch, [msg])
                    if batch.count == 0:  # a rebalance took our partitions (and this batch with them)
                        return
        finally:
            if paused and self.assignment:
                self._consumer.resume([tp for tp in paused if tp in self.assignment] or self.assignment)

    def _collect(self) -> None:
        """Batches the writers committed: dead letters out, then offsets up to the watermark (consumer thread).

        Only the unbroken prefix of committed batches (by number, in this generation) is released, and
        its offsets are committed in one call after its dead letters are out; a batch of an earlier
        generation (before a rebalance) is in the database but its offsets are left to the re-delivery.
        """
        if self._writer_error is not None:
            raise self._writer_error
        while True:
            try:
                batch = self._done.get_nowait()
            except queue.Empty:
                break
            self.metrics.observe_batch(batch.count, batch.commit_s, batch.written, batch.max_time)
            self.committed_batches += 1
            generation, number = batch.seq
            if generation == self._generation:
                self._finished[number] = batch
        ready: list[Batch] = []
        while self._next_commit in self._finished:
            ready.append(self._finished.pop(self._next_commit))
            self._next_commit += 1
        if ready:
            for batch in ready:
                self._send_dlq(batch)
            self._commit_offsets(ready)

    @staticmethod
    def _dead_letter_record(msg: Message, reason: str) -> dict:
        return dead_letter_record(
            source_topic=msg.topic(),
            value=msg.value() or b"",
            error=reason,
            stage="sink",
            key=msg.key(),
            partition=msg.partition(),
            offset=msg.offset(),
        )

    def _send_dlq(self, batch: Batch) -> None:
        for topic, key, dead in batch.dlq:
            name = self.catalogue_name[topic]
            dlq = dlq_topic(name)
            self._dlq_producer.produce(self.config.topic_prefix + dlq, key=key, value=self.serde.encode(dlq, dead))
            self.metrics.dlq.labels(dlq, dead["stage"]).inc()
        if batch.dlq:
            self._dlq_producer.flush(10)

    def _commit_offsets(self, batches: list[Batch]) -> None:
        """Commit the offsets of `batches` (consecutive, all in the database): the newest per partition."""
        newest: dict[tuple[str, int], int] = {}
        for batch in batches:
            newest.update(batch.offsets)  # later batches hold later offsets of a partition
        if not newest:
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in newest.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # e.g. a rebalance took the partitions: rows are in, re-delivery is harmless
            log.warning("offset commit failed; the batch may be re-delivered (idempotent)", error=str(exc))

    # --- decode (sealer thread) and write (writer threads) ------------------------------------------------
    def _seal_loop(self) -> None:
        """Batches from the consumer thread, decoded, to the writers in the order they came (their numbers
        are already given); the writers' end markers passed on after what came before them. A batch in
        `_todo` is no longer touched by the consumer thread (`_submit` returned), so decoding it here
        cannot miss a record added later."""
        markers = 0
        try:
            if self.codecs:
                from sinks._avro_copy import warm_up

                warm_up()  # compiled (an install's first run) or loaded before the first batch, not with it
            while markers < self.config.writers:
                batch = self._todo.get()
                if batch is None:
                    markers += 1
                else:
                    self._seal(batch)
                if not self._hand_to_writers(batch):
                    return  # every writer ended (its error is re-raised in the consumer thread)
        except BaseException as exc:  # re-raised in the consumer thread: the process fails as before
            self._writer_error = exc
            for _ in range(self.config.writers):  # the writers end after what was handed to them
                if not self._hand_to_writers(None):
                    return

    def _hand_to_writers(self, batch: Batch | None) -> bool:
        """Queue `batch` (or an end marker) for the writers; False if no writer is left to take it."""
        while True:
            try:
                self._sealed.put(batch, timeout=0.1)
                return True
            except queue.Full:
                if not any(writer.is_alive() for writer in self._writers[1:]):
                    return False

    def _write_loop(self, slot: int) -> None:
        try:
            while True:
                batch = self._sealed.get()
                if batch is None:
                    return
                try:
                    self._flush(batch, slot)
                except _Stopped:  # never handed back: the watermark holds every later batch's offsets
                    continue
                self._done.put(batch)
        except BaseException as exc:  # re-raised in the consumer thread: the process fails as before
            self._writer_error = exc

    def _flush(self, batch: Batch, slot: int = 0) -> None:
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
                self._drop_connection(slot)
                self.database_error = str(exc).splitlines()[0]
                if not self.database_down:
                    self.database_down_since = time.monotonic()
                self.database_down = True
                self.metrics.database_state.set(1)
                attempt += 1
                backoff = min(self.config.max_backoff_s, self.config.first_backoff_s * 2 ** (attempt - 1))
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
                    if self.stop_requested:
                        raise _Stopped() from None
                    if not self.database_down:  # another writer got through: the database is back, retry now
                        break
                    time.sleep(0.05)

    def _connection(self, slot: int) -> psycopg.Connection:
        conn = self._conns[slot]
        if conn is None or conn.closed:
            conn = self._conns[slot] = psycopg.connect(self.conninfo, connect_timeout=5, **self._liveness)
        return conn

    def _drop_connection(self, slot: int) -> None:
        conn, self._conns[slot] = self._conns[slot], None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # nosec B110 # closing a consumer that is already failing: the error that matters was logged
                pass

    def _cover(self, conn: psycopg.Connection, batch: Batch) -> dict[str, list[datetime]]:
        """Make partitions for data outside the maintained window (a replay or backfill of old days).

        Partition periods already known to exist are cached, so live data costs a set lookup per
        table and batch; only a batch reaching into a new period touches the catalog. Each table's
        partitions are made and committed in a transaction of their own, before the batch's write:
        creating one locks its parent ACCESS EXCLUSIVE, and holding that lock while waiting for the
        next table's deadlocked with any reader of both tables in the other order (seen in the suite:
        a count of trades, then of depth_updates, while the sink made old days of depth_updates, then
        of trades; PostgreSQL aborted the reader). Returns the periods ensured, now visible to every
        writer (`_learn_covered`).
        """
        with self._cache_lock:
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
        with self._cache_lock:
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
            with self._cache_lock:
                due = [d for d in days if now - self._recorded.get((table, d), -1e18) > RECORD_WRITES_EVERY_S]
            if due:
                record_writes(conn, table, [_day(d) for d in due])
                recorded += [(table, d) for d in due]
        return recorded

    def _write(self, batch: Batch, slot: int = 0) -> dict[str, int]:
        """Every table of the batch in one transaction: all of it lands, or none of it."""
        conn = self._connection(slot)
        written: dict[str, int] = defaultdict(int)
        self._learn_covered(self._cover(conn, batch))
        with conn.transaction():
            for table, parts in batch.copies.items():
                written[table] += copy_binary(conn, self._by_table[table], copy_payload(parts), batch.copy_rows[table])
            for table, rows in batch.rows.items():
                written[table] += write_rows(conn, self._by_table[table], rows)
            recorded = self._record_writes(conn, batch)
        now = time.monotonic()
        with self._cache_lock:
            for key in recorded:
                self._recorded[key] = now
        return dict(written)


def _ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _day(day_number: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day_number)
