"""Avro records to Kafka with an idempotent producer: acks=all, enable.idempotence, nothing ignored.

librdkafka already retries transient failures internally (idempotence keeps that free of duplicates
and reordering). A delivery that still fails is counted and produced again, up to a bound; a record
that keeps failing marks the publisher unhealthy rather than vanishing. A full local queue blocks
(back-pressure) instead of dropping. Frames that cannot be normalised or encoded go to the
dead-letter topic with their raw bytes and the reason.

Transactional mode (`transactional_id=...`, the executor): every record goes into the open Kafka
transaction (`begin_transaction`), and `commit_transaction` commits them together with the consumer
offsets given (read_committed readers see all of them or none). A record that fails delivery is not
produced again: the transaction is aborted instead (`TransactionAborted`), and the caller re-processes
its inputs from the last committed offsets. A fenced producer (a newer one with the same
transactional.id) or any other fatal error raises `TransactionFenced`.

A transactional producer never re-bootstraps (`metadata.recovery.strategy=none`): librdkafka (2.16)
re-bootstraps a client whose brokers are all down (a broker restart), decommissioning the learned
brokers; one still cached as the group coordinator then keeps `send_offsets_to_transaction` waiting
on a broker thread that is gone, past the call's timeout and for good (librdkafka issues 5511 and
5456). The executor stalled inside that call after every restart of the stack's broker: its consumer
left the group and it neither traded nor stopped. Without re-bootstrapping, the producer reconnects to
the brokers it knows, as before KIP-1102; a cluster whose every broker changed address is then only
found by a restarted process.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas.dead_letters import dead_letter_record
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import producer_config

log = structlog.get_logger("producer.publisher")

MAX_REDELIVERIES = 5
POLL_EVERY = 256  # serve delivery callbacks every N produces, not after each one (hot path)
LATENCY_SAMPLE = 16  # observe receive->ack latency for 1 record in N: a distribution needs no census
#: a transaction left open by a killed process blocks read_committed readers of its partitions until a
#: new producer with the same transactional.id starts (the stack restarts a dead executor within
#: seconds) or the broker aborts it after this long. Longer than a broker restart: a broker that comes
#: back after more than this aborts the open transaction itself and bumps the producer's epoch, which
#: the producer can only take as fenced (the executor exited after a 31-s broker restart under load
#: with 30 s here). The engine's is 300 s (`bulk_consumer`).
TRANSACTION_TIMEOUT_MS = 120_000
#: how long an abort waits for an unreachable transaction coordinator (a broker restarting, paused, or
#: held on a full disk): aborting is always safe to retry, and giving up means the caller's exit
ABORT_PATIENCE_S = 120.0


_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


def _kafka_error(exc: Any) -> KafkaError | None:
    """The KafkaError an exception from the client carries (a KafkaException's argument, or itself)."""
    for candidate in (exc, *getattr(exc, "args", ())):
        if callable(getattr(candidate, "fatal", None)) and callable(getattr(candidate, "str", None)):
            return candidate
    return None


class TransactionAborted(RuntimeError):
    """The open transaction was aborted: its records will never be visible; re-process from the last commit."""


class TransactionFenced(RuntimeError):
    """The transactional producer cannot go on (fenced by a newer instance, or another fatal error)."""


class PublishMetrics:
    """Delivery metrics of one publishing process, `<prefix>_*`: what the `Publisher` itself counts.

    A producer registers them as `tapeflow_producer_*` (its `ProducerMetrics` adds gaps, resyncs and
    freshness); the executor as `tapeflow_executor_publish_*`, so it registers nothing it never uses.
    A private registry per instance keeps tests (several publishers in one interpreter) independent.
    """

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "tapeflow_producer") -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_out = Counter(f"{prefix}_messages_out_total", "Records delivered to Kafka", ["topic"], registry=r)
        self.delivery_errors = Counter(
            f"{prefix}_delivery_errors_total", "Kafka delivery failures (each is retried)", ["topic"], registry=r
        )
        # topic = the dead-letter topic written to, reason = the stage that gave up (normalise, decode, ...)
        self.dlq = Counter(
            f"{prefix}_dlq_messages_total", "Frames sent to a dead-letter topic", ["topic", "reason"], registry=r
        )
        self.produce_latency = Histogram(
            f"{prefix}_produce_latency_seconds",
            "Receive-to-Kafka-acknowledgement latency",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )


class Publisher:
    def __init__(
        self,
        bootstrap: str,
        serde: AvroSerde,
        metrics: PublishMetrics,
        topic_prefix: str = "",
        transactional_id: str | None = None,
        **producer_overrides: Any,
    ) -> None:
        self.serde = serde
        self.metrics = metrics
        self.prefix = topic_prefix
        self.transactional = transactional_id is not None
        if self.transactional:
            producer_overrides = {
                "transactional.id": transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                # no re-bootstrap: it strands send_offsets_to_transaction on a decommissioned coordinator
                "metadata.recovery.strategy": "none",
                **producer_overrides,
            }
        self._producer = Producer(producer_config(bootstrap, **producer_overrides))
        self.in_transaction = False
        self.transaction_records = 0  # records produced into the open transaction
        self._transaction_error: str | None = None  # the first delivery failure of the open transaction
        self._fatal: str | None = None  # a delivery failure that ends the producer (fenced)
        self.failed: list[tuple[str, bytes | None, str]] = []  # (topic, key, error) given up after retries
        self.delivered = 0
        self.delivered_by_topic: dict[str, int] = {}  # topic (as produced, prefix included) -> records acked
        self.dead_lettered = 0
        self._since_poll = 0
        self._retry: list[tuple] = []  # failed deliveries waiting to be produced again
        self._out: dict[str, Any] = {}  # topic -> labelled counter child (labels() lookups are not free)
        self._acked: dict[str, int] = {}  # deliveries not yet added to the Prometheus counter
        self._latency = metrics.produce_latency
        self._sample = 0
        # per (topic, key) delivery counts of the topics `track` names (progress markers need them)
        self._tracked: frozenset[str] = frozenset()
        self.produced_count: dict[tuple[str, bytes | None], int] = {}
        self.acked_count: dict[tuple[str, bytes | None], int] = {}
        self.acked_offset: dict[tuple[str, bytes | None], int] = {}
        self.on_tracked_ack: Callable[[str, bytes | None, int, int], None] | None = None
        self.on_publish: Callable[[str, str, dict], None] | None = None  # sees each record before it is sent

    def track(self, topics: Iterable[str]) -> None:
        """Count records produced and acknowledged per (topic, key) for these catalogue topics, with the
        offset of the last acknowledged one (`on_tracked_ack(topic, key, count, offset)` after each).
        Per partition the broker acknowledges in produce order, so "the n-th record of this key" and
        its offset are known exactly; `tapeflow_runtime.progress` builds its markers from that."""
        self._tracked = frozenset(self.prefix + t for t in topics)

    def publish(
        self,
        topic: str,
        key: str,
        record: dict,
        receive_time_ms: int | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        """Encode `record` for catalogue topic `topic` and produce it keyed by `key`.

        `on_delivered` runs once the broker acknowledged the record (used for checkpoints).
        """
        if self.on_publish is not None:
            self.on_publish(topic, key, record)
        value = self.serde.encode(topic, record)
        self._produce(self.prefix + topic, key.encode(), value, receive_time_ms, 0, on_delivered)

    def publish_encoded(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int = 0) -> None:
        """Produce an already encoded record of catalogue topic `topic` (a copy). `timestamp_ms` (0 = now)
        is the record's create time, which only a CreateTime topic keeps: the catalogue's topics are
        stamped by the broker on arrival (`schemas.catalogue`)."""
        self._produce(self.prefix + topic, key, value, None, 0, timestamp_ms=timestamp_ms)

    def dead_letter(self, dlq: str, source: str, raw: bytes, error: str, stage: str, key: bytes | None = None) -> None:
        """Send an unusable input to the dead-letter topic `dlq` with its raw bytes and why.

        `source` says where it came from or was going (a topic, or `ws:<stream>` for a frame that
        never became a record); the producer keeps going either way.
        """
        record = dead_letter_record(source_topic=source, value=raw, error=error, stage=stage, key=key)
        self.metrics.dlq.labels(dlq, stage).inc()
        self.dead_lettered += 1
        self._produce(self.prefix + dlq, key, self.serde.encode(dlq, record), None, 0)

    def _acked_one(self, topic: str) -> None:
        self.delivered += 1
        self._acked[topic] = self._acked.get(topic, 0) + 1

    def _failed_one(
        self,
        err: KafkaError,
        topic: str,
        key: bytes | None,
        value: bytes,
        receive_time_ms: int | None,
        attempt: int,
        on_delivered: Callable[[], None] | None,
        timestamp_ms: int = 0,
    ) -> None:
        self.metrics.delivery_errors.labels(topic).inc()
        if self.transactional:  # never produced again: the transaction is aborted at its commit
            log.error("delivery failed inside a transaction", topic=topic, error=err.str())
            self._transaction_error = self._transaction_error or f"{topic}: {err.str()}"
            if err.fatal() or err.code() in _FENCED:
                self._fatal = self._fatal or f"{topic}: {err.str()}"
            return
        if attempt + 1 < MAX_REDELIVERIES and not err.fatal():
            # never produce from inside a delivery callback (librdkafka's call state forbids it):
            # queue it and produce again from the next poll/flush
            log.warning("delivery failed, producing again", topic=topic, error=err.str(), attempt=attempt + 1)
            self._retry.append((topic, key, value, receive_time_ms, attempt + 1, on_delivered, timestamp_ms))
        else:
            log.error("delivery failed for good", topic=topic, error=err.str(), attempts=attempt + 1)
            self.failed.append((topic, key, err.str()))

    def _plain_delivery(self, err: KafkaError | None, msg) -> None:
        """The common case's callback: one shared bound method, no per-record closure."""
        if err is None:
            self._acked_one(msg.topic())
            if self._tracked and msg.topic() in self._tracked:
                self._tracked_ack(msg)
        else:
            self._failed_one(err, msg.topic(), msg.key(), msg.value(), None, 0, None)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        receive_time_ms: int | None,
        attempt: int,
        on_delivered: Callable[[], None] | None = None,
        timestamp_ms: int = 0,
    ) -> None:
        if receive_time_ms is not None:
            self._sample += 1
            if self._sample < LATENCY_SAMPLE:
                receive_time_ms = None  # not this one's latency
            else:
                self._sample = 0
        if attempt == 0 and on_delivered is None and receive_time_ms is None and not timestamp_ms:
            on_delivery = self._plain_delivery
        else:

            def on_delivery(err: KafkaError | None, msg) -> None:
                if err is not None:
                    self._failed_one(err, topic, key, value, receive_time_ms, attempt, on_delivered, timestamp_ms)
                    return
                self._acked_one(topic)
                if self._tracked and topic in self._tracked:
                    self._tracked_ack(msg)
                if on_delivered is not None:
                    on_delivered()
                if receive_time_ms is not None:
                    self._latency.observe(max(0.0, time.time() - receive_time_ms / 1000))

        if attempt == 0 and self._tracked and topic in self._tracked:
            k = (topic, key)
            self.produced_count[k] = self.produced_count.get(k, 0) + 1
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery, timestamp=timestamp_ms)
                break
            except BufferError:  # local queue full: serve callbacks until there is room (back-pressure)
                self._producer.poll(0.05)
        self._since_poll += 1
        self.transaction_records += 1
        if self._since_poll >= POLL_EVERY:
            self.poll(0)

    def _tracked_ack(self, msg) -> None:
        k = (msg.topic(), msg.key())
        count = self.acked_count[k] = self.acked_count.get(k, 0) + 1
        self.acked_offset[k] = msg.offset()
        if self.on_tracked_ack is not None:
            self.on_tracked_ack(k[0], k[1], count, msg.offset())

    def _drain_retries(self) -> None:
        while self._retry:
            self._produce(*self._retry.pop(0))

    def poll(self, timeout: float = 0.0) -> int:
        self._since_poll = 0
        served = self._producer.poll(timeout)
        self._drain_retries()
        self._publish_counts()
        return served

    def _publish_counts(self) -> None:
        for topic, n in self._acked.items():
            self.delivered_by_topic[topic] = self.delivered_by_topic.get(topic, 0) + n
            counter = self._out.get(topic)
            if counter is None:
                counter = self._out[topic] = self.metrics.messages_out.labels(topic)
            counter.inc(n)
        self._acked.clear()

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for every outstanding record (re-producing failed ones); returns how many remain."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
            self._publish_counts()
            if not self._retry or time.monotonic() >= deadline:
                return remaining + len(self._retry)
            self._drain_retries()

    # --- transactions (transactional_id given) ---------------------------------------------------------
    def init_transactions(self, timeout: float = 60.0) -> None:
        """Register the transactional.id: a previous producer with it is fenced and its open
        transaction aborted (so read_committed readers get past it) before this returns."""
        self._call(lambda left: self._producer.init_transactions(left), timeout)

    def begin_transaction(self) -> None:
        self._call(lambda left: self._producer.begin_transaction(), 1.0)
        self.in_transaction = True
        self.transaction_records = 0
        self._transaction_error = None

    def commit_transaction(self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = 30.0) -> None:
        """Commit every record produced since `begin_transaction` together with the consumer `offsets`
        (next offsets to read, of the group `group_metadata` names). Raises `TransactionAborted` after
        aborting when a record was not delivered or the broker refused the commit; retriable errors are
        retried until `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            remaining = self.flush(timeout)
        except:  # noqa: E722 - a fatal producer error surfaces from the flush (fenced while producing):
            # confluent-kafka 2.16 raises the KafkaError object itself, no BaseException (only a bare
            # except catches it), or leaves it pending around the delivery report, which then fails as a
            # SystemError; aborting tells fenced (TransactionFenced) from not
            exc = sys.exc_info()[1]
            err = _kafka_error(exc)
            reason = self._fatal or (err.str() if err is not None else f"{type(exc).__name__}: {exc}")
            if err is not None and err.fatal():
                raise TransactionFenced(reason) from exc
            self.abort_transaction()
            raise TransactionAborted(reason) from exc
        if self._fatal:
            raise TransactionFenced(self._fatal)
        if remaining or self._transaction_error:
            reason = self._transaction_error or f"{remaining} records undelivered"
            self.abort_transaction()
            raise TransactionAborted(reason)
        try:
            if offsets:
                self._call(
                    lambda left: self._producer.send_offsets_to_transaction(offsets, group_metadata, left),
                    max(0.1, deadline - time.monotonic()),
                )
            self._call(lambda left: self._producer.commit_transaction(left), max(0.1, deadline - time.monotonic()))
        except KafkaException as exc:  # abortable (the group's generation moved on) or the broker unreachable
            self.abort_transaction()
            raise TransactionAborted(exc.args[0].str()) from exc
        self.in_transaction = False
        self._publish_counts()

    def abort_transaction(self, timeout: float = ABORT_PATIENCE_S) -> None:
        """Abort the open transaction: none of its records will ever be visible to read_committed readers.
        Retried while the coordinator cannot be reached, up to `timeout` (`TransactionFenced` after it)."""
        self._retry.clear()
        if self.in_transaction:
            self.in_transaction = False
            try:
                self._call(lambda left: self._producer.abort_transaction(left), timeout)
            except KafkaException as exc:  # abortable state that cannot even abort: the broker times it out
                raise TransactionFenced(f"abort failed: {exc.args[0].str()}") from exc
        try:
            self._producer.poll(0)  # the aborted records' delivery reports (purged), not errors of the next one
        except:  # noqa: E722 - see commit_transaction
            log.warning("delivery reports after an abort failed", error=str(sys.exc_info()[1]))
        self._transaction_error = None

    def _call(self, call: Callable[[float], Any], timeout: float) -> Any:
        """A transactional API call, retried while its error is retriable; a fatal error (fenced by a
        newer producer with our transactional.id) is `TransactionFenced`, others are raised as they are."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call(max(0.1, deadline - time.monotonic()))
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() or err.code() in _FENCED:
                    raise TransactionFenced(err.str()) from exc
                if err.retriable() and not err.txn_requires_abort() and time.monotonic() < deadline:
                    log.warning("transactional call failed, retrying", error=err.str())
                    continue
                raise

    @property
    def healthy(self) -> bool:
        return not self.failed
