"""Producing backfilled trades: to `md.trades` or to a replay topic outside the catalogue.

A replay topic (e.g. `replay.btc-2024w1`) carries md.trades records, so values are encoded with
md.trades' registered schema (same subject, same id: any md.trades consumer can read them) and
produced under the topic's own name. `Publisher.publish` resolves the schema from the destination
topic, which a replay topic does not have in the catalogue; this subclass reuses everything else
of `Publisher` (idempotent producer, back-pressure, redelivery, metrics) and produces pre-encoded
values through its `_produce`. (If `Publisher` grows a public `publish_encoded`, use that.)

Topics are created like `tapeflow topics create` does, from md.trades' spec (6 partitions, 7-day
retention) for a replay topic, because the broker does not auto-create topics.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import structlog

from producers.backfill.agg_trades_csv import BadRow
from producers.backfill.errors import BackfillError
from producers.metrics import ProducerMetrics
from producers.publisher import Publisher
from schemas.catalogue import DLQ_MD, TOPICS, TopicSpec, dlq_topic
from schemas.catalogue import topic as topic_spec
from schemas.serde import AvroSerde
from tapeflow.kafka_client import ensure_topics

log = structlog.get_logger("producer.backfill")

TRADES = "md.trades"
DLQ_STAGE = "producer.backfill:parse"
_TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


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


class TradeTopicPublisher(Publisher):
    """Publishes md.trades records to one destination topic; bad archive rows to dlq.md."""

    def __init__(self, bootstrap: str, serde: AvroSerde, metrics: ProducerMetrics, topic_prefix: str,
                 topic: str, **producer_overrides: Any) -> None:
        super().__init__(bootstrap, serde, metrics, topic_prefix, **producer_overrides)
        trade_topic_spec(topic)
        self.topic = topic_prefix + topic
        self._dlq = topic_prefix + DLQ_MD
        self._encode = serde.encode

    def publish_trade(self, key: bytes, record: dict) -> None:
        self._produce(self.topic, key, self._encode(TRADES, record), None, 0)

    def dead_letter_row(self, bad: BadRow, key: bytes, now_ms: int) -> None:
        record = {"source_topic": self.topic, "partition": None, "offset": None, "key": key,
                  "value": bad.text.encode(), "error": str(bad)[:2000], "stage": DLQ_STAGE, "event_time": now_ms}
        self.metrics.dlq.labels("backfill").inc()
        self._produce(self._dlq, key, self.serde.encode(DLQ_MD, record), None, 0)

    def confirm_delivery(self, timeout: float = 60.0) -> None:
        """Block until the broker acknowledged everything produced; BackfillError if anything is lost."""
        left = self.flush(timeout)
        if left:
            raise BackfillError(f"{left} record(s) to {self.topic} still unacknowledged after {timeout:.0f} s; "
                                "is the broker up? (the checkpoint keeps the last confirmed position)")
        if self.failed:
            topic, _key, error = self.failed[0]
            raise BackfillError(f"{len(self.failed)} record(s) could not be delivered to {topic}: {error}")
