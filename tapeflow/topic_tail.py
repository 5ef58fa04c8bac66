"""`tapeflow topics tail`: read a topic without joining a consumer group and print decoded records.

Partitions are assigned directly (no group, no commits), so tailing never disturbs the offsets of
the services and never waits for a rebalance.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

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
from tapeflow.stack.process import StackError
from tapeflow_runtime.kafka_client import consumer_config


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


def tail(bootstrap: str, topic: str, registry_url: str | None, *, from_beginning: bool,
         max_records: int | None, idle_timeout: float | None, symbol: str | None, json_out: bool,
         out: Callable[[str], None]) -> int:
    serde = AvroSerde(registry_from_url(registry_url))
    consumer = Consumer(consumer_config(bootstrap))
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise StackError(f"topic {topic!r} does not exist (see `tapeflow topics list`)")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in sorted(md.partitions)])
        # Without --from-beginning only records produced from now on are shown. The timestamp check
        # backs up OFFSET_END on Tansu, whose high watermark counts record batches, not records, so
        # "the end" it reports can lie inside older data.
        not_before_ms = None if from_beginning else int(time.time() * 1000)
        count = 0
        last = time.monotonic()
        while max_records is None or count < max_records:
            msg = consumer.poll(0.2)
            if msg is None:
                if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise StackError(f"reading {topic}: {msg.error().str()}")
            last = time.monotonic()
            ts_type, ts = msg.timestamp()
            if not_before_ms is not None and ts < not_before_ms:
                continue
            value, error = decode_value(serde, msg.value())
            key = msg.key().decode(errors="replace") if msg.key() is not None else None
            if symbol and not _matches_symbol(symbol, key, value):
                continue
            record = {"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
                      "timestamp": ts, "key": key, "value": value}
            if error:
                record["error"] = error
            if json_out:
                out(orjson.dumps(record, default=_default).decode())
            else:
                out(f"{msg.topic()}[{msg.partition()}]@{msg.offset()} key={key} ts={ts}")
                out("  " + orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2).decode()
                    .replace("\n", "\n  "))
            count += 1
        return count
    finally:
        consumer.close()


def _matches_symbol(symbol: str, key: str | None, value: object) -> bool:
    symbol = symbol.upper()
    if isinstance(value, dict) and "symbol" in value:
        return str(value["symbol"]).upper() == symbol
    return key is not None and key.upper().endswith(":" + symbol)
