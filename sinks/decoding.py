"""The sink's decoding: Kafka records into table rows and binary COPY data, bad records into dead letters.

Flat topics (trades, liquidations, mark prices, 1-minute bars) are decoded a whole batch at a time
straight into columns and encoded as binary COPY (`sinks.columnar`); a batch that fails is halved
until the bad records are among `SPLIT_BELOW`, which go record by record. Other topics go record by
record (fastavro, a tuple per row). A record that cannot be decoded or mapped becomes a dead letter
(for `dlq.<topic>`) and a `pipeline_errors` row in the same batch; the batch goes on.
"""

from __future__ import annotations

import numpy as np
from confluent_kafka import Message

from schemas.dead_letters import dead_letter_record
from schemas.serde import AvroSerde
from sinks.batch import Batch
from sinks.columnar import DAY_MS, ColumnarCodec, ColumnarError
from sinks.metrics import SinkMetrics
from sinks.tables import PIPELINE_ERRORS, TableSpec
from tapeflow_runtime.record_batches import RecordChunk

SPLIT_BELOW = 2_000  # records of a flat topic that failed the fast path: halved until this few (_encode)


class BatchDecoder:
    """Decodes for one sink: ``specs`` and ``codecs`` by topic name on the broker."""

    def __init__(
        self, specs: dict[str, TableSpec], codecs: dict[str, ColumnarCodec], serde: AvroSerde, metrics: SinkMetrics
    ) -> None:
        self.specs, self.codecs, self.serde, self.metrics = specs, codecs, serde, metrics

    @staticmethod
    def dead_letter(msg: Message, reason: str) -> dict:
        return dead_letter_record(
            source_topic=msg.topic(),
            value=msg.value() or b"",
            error=reason,
            stage="sink",
            key=msg.key(),
            partition=msg.partition(),
            offset=msg.offset(),
        )

    def seal(self, batch: Batch) -> None:
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
                    self.add(batch, msg)
            return
        self._add_part(batch, part)

    @staticmethod
    def _add_part(batch: Batch, part) -> None:
        batch.copies[part.table].append(part.data)
        batch.copy_rows[part.table] += part.rows
        batch.note_time(part.table, part.min_ms, part.max_ms)
        batch.days[part.table].update(part.days)

    def add(self, batch: Batch, msg: Message) -> None:
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
            dead = self.dead_letter(msg, reason)
            batch.dlq.append((topic, msg.key(), dead))
            batch.rows[PIPELINE_ERRORS.table].append(PIPELINE_ERRORS.to_row(dead))
            self.metrics.errors.labels(spec.table, kind).inc()
            return
        batch.rows[spec.table].append(row)
        t = record.get(spec.time_field) if spec.time_field else None
        if t is not None:
            batch.note_time(spec.table, t, t)
            batch.days[spec.table].add(t // DAY_MS)
