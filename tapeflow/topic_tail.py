"""`tapeflow topics tail`: read a topic without joining a consumer group and print decoded records.

Partitions are assigned directly (no group, no commits), so tailing never disturbs the offsets of
the services and never waits for a rebalance. It starts at the end, at the oldest record, or at a
time (`--from 10m` or an ISO-8601 time: the broker's offsets-by-timestamp lookup, then a timestamp
check per record), and filters by symbol or by exact key.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from stream_apps.core.durations import parse_duration_ms
from tapeflow.stack.process import StackError
from tapeflow_runtime.epochs import Chain, ChainLink
from tapeflow_runtime.kafka_client import consumer_config

log = structlog.get_logger("topics")


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
    (``2024-01-01T12:00``, ``...Z`` or an offset; a time without a zone is UTC) -> epoch ms."""
    try:
        return now_ms - parse_duration_ms(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise StackError(f"--from {text!r} is neither a duration (10m, 2h, 1d) nor an ISO-8601 time "
                         "(2024-01-01T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def start_offsets(consumer: Consumer, topic: str, partitions: list[int], from_ms: int | None,
                  from_beginning: bool) -> list[TopicPartition]:
    """Where each partition starts: its oldest record, the first record at or after ``from_ms``
    (the broker's offsets-by-timestamp lookup), or its end."""
    if from_beginning:
        return [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    if from_ms is None:
        return [TopicPartition(topic, p, OFFSET_END) for p in partitions]
    found = consumer.offsets_for_times([TopicPartition(topic, p, from_ms) for p in partitions], timeout=10)
    # -1: no record that new in this partition, so it starts at its end
    return [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]


def tail(bootstrap: str, topic: str, registry_url: str | None, *, from_beginning: bool,
         max_records: int | None, idle_timeout: float | None, symbol: str | None, json_out: bool,
         out: Callable[[str], None], from_ms: int | None = None, key: str | None = None,
         follow: bool = False, chain: Chain | None = None, refresh: Callable[[], Chain] | None = None,
         shown_as: str | None = None) -> int:
    """Print the records of the logical topic ``topic`` (a catalogue name) and return how many were printed.

    ``chain`` is its segments (``tapeflow_runtime.epochs.reader_chain``; default: ``topic`` itself, as on
    Kafka). The finished segments are read one after the other, each to its recorded end, then the
    segments being written; offsets printed are logical (stable when old segments are deleted).
    ``refresh`` gives the chain again: a follower picks up the next segment of a rollover with it.
    Starting from the oldest record or from a time, it stops once every partition has been read to
    its end, unless ``follow``; starting from the end (the default) always follows. ``max_records``
    and ``idle_timeout`` (seconds without a record) stop it in any case.
    """
    chain = chain or Chain.single("")
    name = topic
    shown = shown_as or topic
    serde = AvroSerde(registry_from_url(registry_url))
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    printer = _Printer(serde, shown, symbol, key, json_out, out)
    try:
        current = chain.current
        md = consumer.list_topics(current.prefix + name, timeout=10).topics.get(current.prefix + name)
        if md is None or md.error is not None or not md.partitions:
            raise StackError(f"topic {current.prefix + name!r} does not exist (see `tapeflow topics list`)")
        follow = follow or (from_ms is None and not from_beginning)
        # Records older than the start are skipped by their timestamp too. Without --from-beginning
        # or --from only records produced from now on are shown; that check backs up OFFSET_END on
        # Tansu, whose high watermark counts record batches, not records, so "the end" it reports
        # can lie inside older data. Tansu also answers every offsets-by-timestamp lookup with 0, so
        # with --from the timestamp check is what finds the start there.
        printer.not_before_ms = None if from_beginning else (from_ms if from_ms is not None else int(time.time() * 1000))
        if from_beginning or from_ms is not None:
            for link in chain.links:
                if not link.closed:
                    break
                if from_ms is not None and link.last_ms is not None and link.last_ms < from_ms:
                    continue  # wholly older than the start
                if _read_closed(consumer, link, name, printer, max_records, idle_timeout) == "stop":
                    return printer.count
        return _read_open(consumer, chain, name, printer, from_ms, from_beginning, follow, max_records,
                          idle_timeout, refresh)
    finally:
        consumer.close()


class _Printer:
    """Filters and prints records with their logical topic name and offset; counts what it printed."""

    def __init__(self, serde: AvroSerde, shown: str, symbol: str | None, key: str | None, json_out: bool,
                 out: Callable[[str], None]) -> None:
        self.serde, self.shown, self.symbol, self.key, self.json_out, self.out = serde, shown, symbol, key, json_out, out
        self.not_before_ms: int | None = None
        self.count = 0

    def note(self, line: str) -> None:
        """A line for the person reading (stderr), never mixed into the records."""
        print(line, file=sys.stderr, flush=True)

    def __call__(self, msg, offset: int) -> None:
        ts = msg.timestamp()[1]
        if self.not_before_ms is not None and ts < self.not_before_ms:
            return
        record_key = msg.key().decode(errors="replace") if msg.key() is not None else None
        if self.key is not None and record_key != self.key:
            return
        value, error = decode_value(self.serde, msg.value())
        if self.symbol and not _matches_symbol(self.symbol, record_key, value):
            return
        record = {"topic": self.shown, "partition": msg.partition(), "offset": offset,
                  "timestamp": ts, "key": record_key, "value": value}
        if error:
            record["error"] = error
        if self.json_out:
            self.out(orjson.dumps(record, default=_default).decode())
        else:
            self.out(f"{self.shown}[{msg.partition()}]@{offset} key={record_key} ts={ts}")
            self.out("  " + orjson.dumps(value, default=_default, option=orjson.OPT_INDENT_2).decode()
                     .replace("\n", "\n  "))
        self.count += 1


def _read_closed(consumer: Consumer, link: ChainLink, name: str, printer: _Printer, max_records: int | None,
                 idle_timeout: float | None) -> str:
    """A finished segment from its first own record to its recorded end (no end-of-partition guess
    needed: it is final). Returns "stop" when ``max_records`` or ``idle_timeout`` ended the tail."""
    full = link.prefix + name
    ends = {p: e for p, e in (link.ends or {}).get(name, {}).items() if e > link.start(name, p)}
    if not ends:
        return "done"
    if not _exists(consumer, full):
        printer.note(f"-- {full} was deleted by the retention before it was read (the database keeps its records)")
        return "done"
    consumer.assign([TopicPartition(full, p, link.start(name, p)) for p in sorted(ends)])
    left = set(ends)
    last = checked = time.monotonic()
    try:
        while left:
            if max_records is not None and printer.count >= max_records:
                return "stop"
            msg = consumer.poll(0.2)
            if msg is None:
                # librdkafka says nothing of a topic deleted under it: it just stops fetching it
                if time.monotonic() - checked >= 2.0:
                    checked = time.monotonic()
                    if not _exists(consumer, full):
                        printer.note(f"-- {full} was deleted by the retention while read: its records from "
                                     "here on are gone from the topics (the database keeps them)")
                        return "done"
                if time.monotonic() - last >= max(idle_timeout or 0.0, 30.0):
                    if idle_timeout is not None:
                        return "stop"
                    raise StackError(f"reading {full}: nothing for 30 s before its end "
                                     f"(partitions {sorted(left)}); was the segment deleted?")
                continue
            if msg.error():
                code = msg.error().code()
                if code == KafkaError._PARTITION_EOF or (msg.topic() and msg.topic() != full):
                    continue  # an end, or news of a segment read before this one (deleted since)
                if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
                    printer.note(f"-- {full} was deleted by the retention while read: its records from here "
                                 "on are gone from the topics (the database keeps them)")
                    return "done"
                raise StackError(f"reading {full}: {msg.error().str()}")
            last = time.monotonic()
            p = msg.partition()
            if p not in left:
                continue
            if msg.offset() >= ends[p]:
                left.discard(p)
                continue
            printer(msg, link.logical(name, p, msg.offset()))
            if msg.offset() + 1 >= ends[p]:
                left.discard(p)
        return "done"
    finally:
        consumer.unassign()


def _exists(consumer: Consumer, topic: str) -> bool:
    """Whether the broker still has ``topic`` (a metadata request; a finished segment the retention
    deleted is gone)."""
    try:
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException:  # the broker did not answer: assume it is there, the read goes on
        return True
    return md is not None and md.error is None and bool(md.partitions)


def _read_open(consumer: Consumer, chain: Chain, name: str, printer: _Printer, from_ms: int | None,
               from_beginning: bool, follow: bool, max_records: int | None, idle_timeout: float | None,
               refresh: Callable[[], Chain] | None) -> int:
    """The segments being written (the current one, and the next during a rollover), read together;
    a follower adds a new segment when ``refresh`` shows one."""
    links: dict[str, ChainLink] = {}
    partitions: set[tuple[str, int]] = set()

    def add(link: ChainLink, start_at_beginning: bool) -> None:
        full = link.prefix + name
        md = consumer.list_topics(full, timeout=10).topics.get(full)
        if md is None or md.error is not None or not md.partitions:
            return
        links[full] = link
        parts = sorted(md.partitions)
        if start_at_beginning:
            starts = [TopicPartition(full, p, max(link.start(name, p), 0)) for p in parts]
        else:
            starts = start_offsets(consumer, full, parts, from_ms, from_beginning)
        partitions.update((full, p) for p in parts)
        consumer.incremental_assign(starts)

    for link in chain.links:
        if not link.closed and link.readable(name):
            # a later open segment (the next epoch of a rollover, once its carried state is known) is
            # read from its first own record
            add(link, start_at_beginning=bool(links))
    at_end: set[tuple[str, int]] = set()
    last = time.monotonic()
    next_refresh = time.monotonic() + 2.0
    while max_records is None or printer.count < max_records:
        if refresh is not None and follow and time.monotonic() >= next_refresh:
            next_refresh = time.monotonic() + 2.0
            try:
                for link in refresh().links:
                    if not link.closed and link.readable(name) and link.prefix + name not in links:
                        add(link, start_at_beginning=True)
            except KafkaException as exc:  # the broker did not answer the metadata request: next time
                log.debug("next segment not looked up", error=str(exc))
        msg = consumer.poll(0.2)
        if msg is None:
            if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                break
            continue
        tp = (msg.topic(), msg.partition())
        if msg.error():
            if msg.topic() and msg.topic() not in links:
                continue  # news of a finished segment read before (deleted since): not this read's
            if msg.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(tp)
                if not follow and at_end >= partitions:
                    break
                continue
            raise StackError(f"reading {msg.topic()}: {msg.error().str()}")
        last = time.monotonic()
        at_end.discard(tp)
        link = links[msg.topic()]
        if msg.offset() < link.start(name, msg.partition()):
            continue  # carried state: the older segment holds it
        printer(msg, link.logical(name, msg.partition(), msg.offset()))
    return printer.count


def _matches_symbol(symbol: str, key: str | None, value: object) -> bool:
    symbol = symbol.upper()
    if isinstance(value, dict) and "symbol" in value:
        return str(value["symbol"]).upper() == symbol
    return key is not None and key.upper().endswith(":" + symbol)
