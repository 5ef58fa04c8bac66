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

The sink's jobs, one module each (as Quix Streams' sinks are built): this module consumes, runs the
threads and hands batches (`sinks.batch`) over; `sinks.decoding` turns records into rows, COPY data
and dead letters; `sinks.writer` writes them (and only writes); `sinks.checkpoint` decides which
offsets may be committed; `sinks.maintenance` keeps partitions, retention and the trade-level
summaries beside the write path (at start and hourly, never per batch).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from schemas.catalogue import MD_PREFIX, dlq_topic
from schemas.serde import AvroSerde
from sinks.batch import Batch
from sinks.checkpoint import OffsetCheckpoint, newest_offsets
from sinks.columnar import ColumnarCodec
from sinks.decoding import BatchDecoder
from sinks.maintenance import INTERVAL_S as MAINTENANCE_INTERVAL_S
from sinks.maintenance import SinkMaintenance
from sinks.metrics import SinkMetrics
from sinks.retention import (
    RetentionPolicy,
    resolve_policies,
)
from sinks.tables import (
    PIPELINE_ERRORS,
    TableSpec,
    table_for_topic,
)
from sinks.writer import BatchWriter, Stopped
from tapeflow_runtime.db_liveness import liveness_kwargs
from tapeflow_runtime.kafka_client import LagProbe, consumer_config, producer_config
from tapeflow_runtime.record_batches import RawFetcher, RecordChunk, SplitConsumer, one_broker

log = structlog.get_logger("sink")

PAUSE_AFTER_S = 0.5  # the writer busy this long with a full queue: pause the partitions
IDLE_FILL_S = 1.0  # the longest an empty batch waits for its first fetch (`TopicSink._fill`)
# librdkafka fetches ahead until this many records wait locally (default 100,000); more keeps fetches
# to the broker going while the consumer thread hands a batch over, so a 50,000-row batch is never
# waited for. Memory stays capped by queued.max.messages.kbytes (64 MiB by default).
PREFETCH_CONFIG = {"queued.min.messages": 500_000}


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
        self.decoder = BatchDecoder(self.specs, self.codecs, self.serde, self.metrics)
        self._by_table = {table_for_topic(t).table: table_for_topic(t) for t in config.topics}
        self._by_table[PIPELINE_ERRORS.table] = PIPELINE_ERRORS
        if config.writers < 1:
            raise ValueError(f"writers must be at least 1, not {config.writers}")
        self.writer = BatchWriter(
            conninfo,
            self._liveness,
            self._by_table,
            self.metrics,
            slots=config.writers,
            first_backoff_s=config.first_backoff_s,
            max_backoff_s=config.max_backoff_s,
            stopping=lambda: self.stop_requested,
        )
        self.maintenance = SinkMaintenance(
            conninfo,
            self._liveness,
            config.retention,
            writes_trades=any(spec.table == "trades" for spec in self.specs.values()),
            started_at=lambda: self.started_at,
            stopping=lambda: self.stop_requested,
            partitions_dropped=self.writer.partitions_dropped,
        )
        self._consumer: Consumer | SplitConsumer | None = None
        self._split: SplitConsumer | None = None  # _consumer when the raw fetcher takes the flat topics
        self._dlq_producer: Producer | None = None
        self._todo: queue.Queue[Batch | None] = queue.Queue(maxsize=1)  # consumer thread -> sealer
        self._sealed: queue.Queue[Batch | None] = queue.Queue(maxsize=1)  # sealer -> writers
        self._done: queue.Queue[Batch] = queue.Queue()
        self._writers: list[threading.Thread] = []  # the sealer first, then the writers
        self._writer_error: BaseException | None = None
        self.checkpoint = OffsetCheckpoint()  # offsets only after their rows are durable (consumer thread only)
        self._pending = Batch()
        self.assignment: list[TopicPartition] = []
        self.rebalances = 0  # group rebalances that took the partitions
        self.stop_requested = False
        self.consuming = False  # past the start (consumer, writers, first maintenance): a stop is prompt
        self.committed_batches = 0
        self.started_at = datetime.now(UTC)
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
        self.checkpoint.reset()
        self.rebalances += 1
        self.assignment = []
        if self._split is not None:
            self._split.revoke()

    def maintain(self) -> None:
        """Partitions ahead, retention, trade_levels_1m compaction and backfill (`sinks.maintenance`)."""
        self.maintenance.run()

    # the database's state as /health reports it: the writers'
    @property
    def database_down(self) -> bool:
        return self.writer.database_down

    @property
    def database_error(self) -> str:
        return self.writer.database_error

    @property
    def database_down_since(self) -> float | None:
        return self.writer.database_down_since

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
        self.consuming = True
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
            if len(self._dlq_producer):  # nothing queued: no flush (it waited on a coordinator still loading)
                self._dlq_producer.flush(10)
            self.writer.close()
        if self._writer_error is not None:
            raise self._writer_error

    # --- consume and decode (consumer thread) ----------------------------------------------------------
    def _fill(self, batch: Batch) -> None:
        """Up to ``batch_rows`` rows, handed on at most ``batch_ms`` after the first fetch that brought
        any. An empty batch waits up to ``IDLE_FILL_S`` for that first fetch: what the run loop does
        between batches (collecting written ones, the lag probe, maintenance) is not due more often,
        and an idle sink then wakes about once a second instead of four times."""
        deadline = time.monotonic() + IDLE_FILL_S
        started = False
        assert self._consumer is not None
        while batch.count < self.config.batch_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            msgs = self._consumer.consume(
                num_messages=min(10_000, self.config.batch_rows - batch.count), timeout=remaining
            )
            if msgs:
                if not started:
                    started = True
                    deadline = min(deadline, time.monotonic() + self.config.batch_ms / 1000)
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
                self.decoder.add(batch, msg)

    def _seal(self, batch: Batch) -> None:
        """Decode the batch's flat-topic records into COPY data (sealer thread; `sinks.decoding`)."""
        self.decoder.seal(batch)

    def _submit(self, batch: Batch, give_up_after: float | None = None) -> None:
        """Hand `batch` to the writer; while it is busy for long, pause the partitions (back-pressure)."""
        waited_since = time.monotonic()
        paused: list[TopicPartition] = []
        try:
            while True:
                self.checkpoint.stamp(batch)  # again after a rebalance during the wait: a new generation
                try:
                    self._todo.put(batch, timeout=0.05)
                    self.checkpoint.handed()
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
            self.checkpoint.written(batch)
        ready = self.checkpoint.ready()
        if ready:
            for batch in ready:
                self._send_dlq(batch)
            self._commit_offsets(ready)

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
        offsets = newest_offsets(batches)
        if not offsets:
            return
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
                    self.writer.flush(batch, slot)
                except Stopped:  # never handed back: the watermark holds every later batch's offsets
                    continue
                self._done.put(batch)
        except BaseException as exc:  # re-raised in the consumer thread: the process fails as before
            self._writer_error = exc
