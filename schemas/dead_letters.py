"""The dead-letter record (`schemas/avro/dead_letter.avsc`, every `dlq.*` topic), built in one place.

A producer's unparseable frame, a backfill's bad row, a record a sink cannot store and an input the
engine cannot decode all become the same record: the raw bytes, where they came from (topic, and the
partition/offset when they came from Kafka), the error (capped at 2,000 characters) and the stage.
"""

from __future__ import annotations

import time

ERROR_MAX_CHARS = 2000


def dead_letter_record(
    *,
    source_topic: str,
    value: bytes,
    error: str,
    stage: str,
    key: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
    event_time_ms: int | None = None,
) -> dict:
    """A `dlq.*` record; `event_time_ms` defaults to now (when the failure was seen)."""
    return {
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": key,
        "value": value,
        "error": error[:ERROR_MAX_CHARS],
        "stage": stage,
        "event_time": int(time.time() * 1000) if event_time_ms is None else event_time_ms,
    }
