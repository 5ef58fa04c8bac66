"""Put one session's md.* records where the stored sources read them: on the real broker (published
as the producers publish them) and in the database (written as the sink writes them), for the tests
that compare the `topics` and `db` sources with the session they came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import psycopg

from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.migrate import migrate
from sinks.tables import table_for_topic, write_rows
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.publisher import Publisher


def store_session(bootstrap: str, topic_prefix: str, database: str, records: Mapping[str, Sequence[Mapping]]) -> None:
    """Every record on ``<topic_prefix><topic>`` (keyed exchange:symbol, timestamped by its receive
    time) and in the topic's table of a freshly migrated ``database``."""
    ensure_topics(bootstrap, prefix=topic_prefix)
    publisher = Publisher(bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=topic_prefix)
    for topic, recs in records.items():
        for r in recs:
            publisher.publish(topic, f"{r['exchange']}:{r['symbol']}", r, r["receive_time"])
    assert publisher.flush(60) == 0 and not publisher.failed
    store_rows(database, records)


def store_rows(database: str, records: Mapping[str, Sequence[Mapping]]) -> None:
    """Every record in its topic's table of a freshly migrated ``database`` (as the sink writes them)."""
    migrate(database)
    with psycopg.connect(database) as conn:
        for topic, recs in records.items():
            spec = table_for_topic(topic)
            assert write_rows(conn, spec, (spec.to_row(r) for r in recs)) == len(recs)
