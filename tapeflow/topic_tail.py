"""`tapeflow topics tail`: read a topic without joining a consumer group and print decoded records.

Partitions are assigned directly (no group, no commits), so tailing never disturbs the offsets of
the services and never waits for a rebalance. It starts at the end, at the oldest record, or at a
time (`--from 10m` or an ISO-8601 time: the broker's offsets-by-timestamp lookup over the records'
arrival times), and filters by symbol or by exact key.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    TopicPartition,
)

from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from stream_apps.core.durations import parse_duration_ms
from tapeflow.stack.process import StackError
from tapeflow_runtime.kafka_client import consumer_config, offsets_for_times


def _default(obj):
    if isinstance(obj, (bytes, bytearray)):
        return base64.b64encode(obj).decode()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise TypeError


def decode_value(serde: AvroSerde, raw: bytes | None) -> tuple[object, str | None]:
    if raw is None:
        return None, None
    try:
        return serde.decode(raw), None
    except Exception as exc:  # not Avro / unknown schema id: show the bytes and why
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            text = base64.b64encode(raw).decode()
        return text, f"undecodable: {exc}"


def parse_start_time(text: str, now_ms: int) -> int:
    """``--from``: a duration back from now (``10m``, ``2h``, ``90s``, ``1d``) or an ISO-8601 time
    (``2024-01-01T12:00``, ``...Z`` or an offset; a time without a zone is UTC) -> Unix ms."""
    try:
        return now_ms - parse_duration_ms(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise StackError(
            f"--from {text!r} is neither a duration (10m, 2h, 1d) nor an ISO-8601 time (2024-01-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def start_offsets(
    consumer: Consumer, topic: str, partitions: list[int], from_ms: int | None, from_beginning: bool
) -> list[TopicPartition]:
    """Where each partition starts: its oldest record, the first record at or after ``from_ms``
    (the broker's offsets-by-timestamp lookup: record timestamps are arrival times, LogAppendTime,
    so they grow with the offset and the answer is exact), or its end."""
    if from_beginning:
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if from_ms is None:
        return [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    found = offsets_for_times(consumer, [TopicPartition(topic, p, from_ms) for p in partitions], 10)
    # -1: no record that new in this partition, so it starts at its end
    return [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]


def tail(
    bootstrap: str,
    topic: str,
    registry_url: str | None,
    *,
    from_beginning: bool,
    max_records: int | None,
    idle_timeout: float | None,
    symbol: str | None,
    json_out: bool,
    out: Callable[[str], None],
    from_ms: int | None = None,
    key: str | None = None,
    follow: bool = False,
) -> int:
    """Print the records of ``topic`` (its full name) and return how many were printed.

    Starting from the oldest record or from a time, it stops once every partition has been read to
    its end, unless ``follow``; starting from the end (the default) always follows. ``max_records``
    and ``idle_timeout`` (seconds without a record) stop it in any case.
    """
    serde = AvroSerde(registry_from_url(registry_url))
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    printer = _Printer(serde, topic, symbol, key, json_out, out)
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise StackError(f"topic {topic!r} does not exist (see `tapeflow topics list`)")
        follow = follow or (from_ms is None and not from_beginning)
        partitions = sorted(md.partitions)
        consumer.assign(start_offsets(consumer, topic, partitions, from_ms, from_beginning))
        return _read(consumer, {(topic, p) for p in partitions}, printer, follow, max_records, idle_timeout)
    finally:
        consumer.close()


class _Printer:
    """Filters and prints records with their topic name and offset; counts what it printed."""

    def __init__(
        self,
        serde: AvroSerde,
        shown: str,
        symbol: str | None,
        key: str | None,
        json_out: bool,
        out: Callable[[str], None],
    ) -> None:
        self.serde, self.shown, self.symbol, self.key, self.json_out, self.out = (
            serde,
            shown,
            symbol,
            key,
            json_out,
            out,
        )
        self.count = 0

    def __call__(self, msg) -> None:
        ts, offset = msg.timestamp()[1], msg.offset()
        record_key = msg.key().decode(errors="replace") if msg.key() is not None else None
        if self.key is not None and record_key != self.key:
            return
        value, error = decode_value(self.serde, msg.value())
        if self.symbol and not _matches_symbol(self.symbol, record_key, value):
            return
        record = {
            "topic": self.shown,
            "partition": msg.partition(),
            "offset": offset,
            "timestamp": ts,
            "key": record_key,
            "value": value,
        }
        if error:
            record["error"] = error
        if self.json_out:
            self.out(orjson.dumps(record, default=_default).decode())
        else:
            self.out(f"{self.shown}[{msg.partition()}]@{offset} key={record_key} ts={ts}")
            self.out(
                "  " + orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2).decode().replace("\n", "\n  ")
            )
        self.count += 1


def _read(
    consumer: Consumer,
    partitions: set[tuple[str, int]],
    printer: _Printer,
    follow: bool,
    max_records: int | None,
    idle_timeout: float | None,
) -> int:
    at_end: set[tuple[str, int]] = set()
    last = time.monotonic()
    while max_records is None or printer.count < max_records:
        msg = consumer.poll(0.2)
        if msg is None:
            if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                break
            continue
        tp = (msg.topic(), msg.partition())
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(tp)
                if not follow and at_end >= partitions:
                    break
                continue
            raise StackError(f"reading {msg.topic()}: {msg.error().str()}")
        last = time.monotonic()
        at_end.discard(tp)
        printer(msg)
    return printer.count


def _matches_symbol(symbol: str, key: str | None, value: object) -> bool:
    symbol = symbol.upper()
    if isinstance(value, dict) and "symbol" in value:
        return str(value["symbol"]).upper() == symbol
    return key is not None and key.upper().endswith(":" + symbol)
