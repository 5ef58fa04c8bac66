"""Producing backfilled trades: to `md.trades` or to a replay topic outside the catalogue.

A replay topic (e.g. `replay.btc-2024w1`) carries md.trades records, so values are encoded with
md.trades' registered schema (same subject, same id: any md.trades consumer can read them) and
produced under the topic's own name. Topics are created like `tapeflow topics create` does, from
md.trades' spec (6 partitions, 7-day retention) for a replay topic: the broker never auto-creates.

Why not `tapeflow_runtime.publisher.Publisher`: it resolves the schema from the destination topic (a
replay topic has none in the catalogue), and it is built for live streams: a delivery that fails
for good is produced again, after later records, and every record gets its own Python delivery
callback and metric update. A backfill needs the opposite trade-offs: strict agg-id order (a
failure stops the run; the checkpoint keeps the last confirmed position and the re-run resumes
there) and throughput over millions of rows. So this is a thin wrapper around the same idempotent
producer config (`tapeflow_runtime.kafka_client.producer_config`): librdkafka reports only failures
(`delivery.report.only.error`), the queue is served every few hundred records, and a full queue
blocks (back-pressure) rather than dropping. Delivery is confirmed by `confirm_delivery` (a flush),
which is what the checkpoint waits for.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import structlog
from confluent_kafka import KafkaError, Producer

from producers.backfill.agg_trades_csv import BadRow
from producers.backfill.errors import BackfillError
from producers.metrics import ProducerMetrics
from schemas.catalogue import DLQ_MD, TOPICS, TopicSpec, dlq_topic
from schemas.catalogue import topic as topic_spec
from schemas.dead_letters import dead_letter_record
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics, producer_config

log = structlog.get_logger("producer.backfill")

TRADES = "md.trades"
DLQ_STAGE = "producer.backfill:parse"
_TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_POLL_EVERY = 512  # produced records between serving librdkafka's queue (failure reports)


def trade_topic_spec(name: str) -> TopicSpec:
    """The spec of destination `name`: md.trades itself, or a replay topic shaped like it."""
    if not _TOPIC_NAME_RE.match(name):
        raise BackfillError(f"topic {name!r}: use letters, digits, '.', '_' and '-' (at most 200)")
    spec = TOPICS.get(name)
    if spec is not None:
        if spec.value_schema != topic_spec(TRADES).value_schema:
            raise BackfillError(f"topic {name} carries {spec.value_schema} records, not trades")
        return spec
    if name.startswith("dlq."):
        raise BackfillError(f"topic {name} is a dead-letter topic name")
    return replace(topic_spec(TRADES), name=name, description=f"Replay of backfilled trades ({TRADES} schema).")


def ensure_destination(bootstrap: str, prefix: str, name: str) -> None:
    """Create the destination and the md dead-letter topic if missing (never alters existing ones)."""
    specs = [trade_topic_spec(name), topic_spec(dlq_topic(TRADES))]
    for result in ensure_topics(bootstrap, prefix=prefix, specs=specs):
        if result.action == "mismatch":
            log.warning("existing topic differs from the catalogue", topic=result.name, detail=result.detail)


class TradeTopicProducer:
    """md.trades records to one destination topic, bad archive rows to dlq.md; order kept, failures fatal."""

    def __init__(
        self,
        bootstrap: str,
        serde: AvroSerde,
        metrics: ProducerMetrics,
        topic_prefix: str,
        topic: str,
        **producer_overrides: Any,
    ) -> None:
        trade_topic_spec(topic)
        self.serde = serde
        self.metrics = metrics
        self.prefix = topic_prefix
        self.topic = topic_prefix + topic
        self._dlq = topic_prefix + DLQ_MD
        self._producer = Producer(
            producer_config(bootstrap, **{"delivery.report.only.error": True, **producer_overrides})
        )
        self._encode = serde.encode
        self._since_poll = 0
        self.produced = 0  # trades handed to librdkafka
        self.dead_lettered = 0  # bad rows handed to librdkafka
        self._confirmed = (0, 0)  # (produced, dead_lettered) acknowledged as of the last confirm_delivery
        self.failed: list[tuple[str, str]] = []  # (topic, error) of records librdkafka gave up on

    def publish_trade(self, key: bytes, record: dict) -> None:
        self._produce(self.topic, key, self._encode(TRADES, record))
        self.produced += 1

    def dead_letter_row(self, bad: BadRow, key: bytes, now_ms: int) -> None:
        record = dead_letter_record(
            source_topic=self.topic,
            value=bad.text.encode(),
            error=str(bad),
            stage=DLQ_STAGE,
            key=key,
            event_time_ms=now_ms,
        )
        self.metrics.dlq.labels(DLQ_MD, DLQ_STAGE).inc()
        self._produce(self._dlq, key, self.serde.encode(DLQ_MD, record))
        self.dead_lettered += 1

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_failure)
                break
            except BufferError:  # local queue full: let librdkafka drain it (back-pressure, nothing dropped)
                self._producer.poll(0.05)
        self._since_poll += 1
        if self._since_poll >= _POLL_EVERY:
            self._since_poll = 0
            self._producer.poll(0)

    def _on_failure(self, err: KafkaError | None, msg) -> None:
        if err is not None:  # only failures are reported (delivery.report.only.error)
            self.metrics.delivery_errors.labels(msg.topic()).inc()
            self.failed.append((msg.topic(), err.str()))

    def flush(self, timeout: float) -> int:
        """Wait for outstanding records; how many are still undelivered."""
        return self._producer.flush(timeout)

    @property
    def healthy(self) -> bool:
        return not self.failed

    def confirm_delivery(self, timeout: float = 60.0) -> None:
        """Block until the broker acknowledged everything produced; BackfillError if anything was lost."""
        left = self.flush(timeout)
        if left:
            raise BackfillError(
                f"{left} record(s) to {self.topic} still unacknowledged after {timeout:.0f} s; "
                "is the broker up? (the checkpoint keeps the last confirmed position)"
            )
        if self.failed:
            topic, error = self.failed[0]
            raise BackfillError(f"{len(self.failed)} record(s) could not be delivered to {topic}: {error}")
        self.metrics.messages_out.labels(self.topic).inc(self.produced - self._confirmed[0])
        self.metrics.messages_out.labels(self._dlq).inc(self.dead_lettered - self._confirmed[1])
        self._confirmed = (self.produced, self.dead_lettered)
