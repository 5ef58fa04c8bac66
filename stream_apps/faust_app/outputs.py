"""Engine results → Kafka records for ``bars.1m``, ``features`` and ``signals`` (and dead letters).

Idempotency: every output is a pure function of the input (the engine is deterministic and its ids
are derived from strategy, config hash, symbol, evaluation time and direction), so a record produced
again after a crash or a redelivery is byte-for-byte the record already written; consumers
de-duplicate on ``signal_id`` / ``evaluation_id`` / (symbol, open_time). Each output goes to the
partition its input came from: all these topics are keyed ``exchange:symbol`` with the same partition
count, and the executor relies on a symbol's signals sharing a partition number with its trades.
(The producers partition with librdkafka's default hash, not the Java/aiokafka one, so the partition
is passed explicitly instead of letting a second partitioner pick one.)

Stale signals: a worker that primes its 24-h windows from history evaluates past times and produces
signals for them. ``signal_max_age_ms`` (wall clock, applied here, outside the pure engine) keeps
such signals off the topic; they still count for cooldown, as they would in a backtest.

Record timestamps are event times (bar close, evaluation time), so a replay writes identical records
and `topics tail --from` finds them by the time they describe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.dead_letters import dead_letter_record
from schemas.serde import AvroSerde
from stream_apps.core.engine import EngineOutput

from .inputs import DeadInput


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str  # full (prefixed) topic name
    partition: int
    key: bytes
    value: bytes
    timestamp_ms: int | None = None  # event time of the record (deterministic, unlike the wall clock)
    source_partition: int | None = None  # input partition it derives from (its transaction with exactly_once)


class OutputEncoder:
    """Avro-encodes engine output for the prefixed output topics."""

    def __init__(
        self,
        serde: AvroSerde,
        topic_prefix: str = "",
        signal_max_age_ms: int | None = None,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.serde = serde
        self.prefix = topic_prefix
        self.signal_max_age_ms = signal_max_age_ms
        self.wall_clock_ms = wall_clock_ms

    def encode(self, out: EngineOutput, partition: int) -> tuple[list[OutRecord], list[dict]]:
        """Records for every bar, feature and fresh signal of ``out``, and the signals published."""
        signals = self.fresh_signals(out.signals)
        records: list[OutRecord] = []
        encode = self.serde.encode
        for topic, items, time_field in (
            ("bars.1m", out.bars, "close_time"),
            ("features", out.features, "eval_time"),
            ("signals", signals, "eval_time"),
        ):
            full = self.prefix + topic
            for item in items:
                key = f"{item['exchange']}:{item['symbol']}".encode()
                records.append(OutRecord(full, partition, key, encode(topic, item), item[time_field], partition))
        return records, signals

    def fresh_signals(self, signals: list[dict]) -> list[dict]:
        if self.signal_max_age_ms is None or not signals:
            return signals
        oldest = self.wall_clock_ms() - self.signal_max_age_ms
        return [s for s in signals if s["eval_time"] >= oldest]

    def dead_letter(self, dead: DeadInput, stage: str = "engine:decode") -> OutRecord:
        record = dead_letter_record(
            source_topic=dead.topic,
            value=dead.value,
            error=dead.error,
            stage=stage,
            key=dead.key,
            partition=dead.partition,
            offset=dead.offset,
            event_time_ms=self.wall_clock_ms(),
        )
        return OutRecord(
            self.prefix + "dlq.md", 0, dead.key or b"", self.serde.encode("dlq.md", record), None, dead.partition
        )
