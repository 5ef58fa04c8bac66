"""The raw fetcher against the real broker: every record librdkafka reads, the same bytes, keys and offsets.

The reference is an independent reader: librdkafka's consumer over the same partitions. Records are
written by librdkafka's producer with each compression codec a producer may use, including null keys
and null values, in batches of many records and of one. Malformed record sets (cut, flipped bytes)
raise `RecordBatchError` and never read outside their buffer (fuzzed).
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapeflow_runtime.kafka_client import admin_client, consumer_config
from tapeflow_runtime.record_batches import RawFetcher, RecordBatchError, RecordChunk, parse_record_set

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, partitions: int = 2) -> str:
    name = f"raw-{uuid.uuid4().hex[:10]}"
    admin = admin_client(bootstrap)  # kept alive until the topic exists
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)
    return name


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, int]], **config) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", **config})
    for key, value, partition in records:
        p.produce(topic, key=key, value=value, partition=partition)
    assert p.flush(60) == 0


def _reference(bootstrap: str, topic: str, partition: int, count: int) -> list[tuple[int, bytes | None, bytes | None]]:
    c = Consumer(consumer_config(bootstrap, f"ref-{uuid.uuid4().hex[:8]}"))
    c.assign([TopicPartition(topic, partition, 0)])
    out = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < count and time.monotonic() < deadline:
            for m in c.consume(num_messages=10_000, timeout=0.5):
                if not m.error():
                    out.append((m.offset(), m.key(), m.value()))
    finally:
        c.close()
    return out


def _fetch_all(fetcher: RawFetcher, count: int) -> dict[tuple[str, int], list[tuple[int, bytes | None, bytes | None]]]:
    got: dict[tuple[str, int], list] = {}
    deadline = time.monotonic() + 60
    n = 0
    while n < count and time.monotonic() < deadline:
        for chunk in fetcher.take(100_000, timeout=0.5):
            recs = [(r.offset(), r.key(), r.value()) for r in chunk.records()]
            got.setdefault((chunk.topic, chunk.partition), []).extend(recs)
            n += len(recs)
    return got


def _records(n: int, partitions: int = 2) -> list[tuple[bytes | None, bytes | None, int]]:
    out = []
    for i in range(n):
        key = None if i % 7 == 3 else f"k{i}".encode()
        value = None if i % 11 == 5 else (b"\x00\x00\x00\x00\x01" + bytes([i % 251]) * (i % 300))
        out.append((key, value, i % partitions))
    return out


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_every_record_as_librdkafka_reads_it_for_each_compression(kafka_bootstrap, compression):
    topic = _topic(kafka_bootstrap)
    records = _records(3_000)
    # many records a batch, then one record a batch (linger 0, one message in flight)
    _produce(kafka_bootstrap, topic, records[:2_500], **{"compression.type": compression, "linger.ms": 20})
    _produce(
        kafka_bootstrap,
        topic,
        records[2_500:],
        **{
            "compression.type": compression,
            "linger.ms": 0,
            "max.in.flight.requests.per.connection": 1,
            "batch.num.messages": 1,
        },
    )
    fetcher = RawFetcher(kafka_bootstrap, fetch_wait_ms=200)
    try:
        for p in (0, 1):
            fetcher.assign(topic, p, 0)
        got = _fetch_all(fetcher, len(records))
    finally:
        fetcher.close()
    for p in (0, 1):
        expected = _reference(kafka_bootstrap, topic, p, sum(1 for r in records if r[2] == p))
        assert len(expected) == 1_500
        assert got[(topic, p)] == expected
    assert fetcher.fetches >= 1


def test_a_fetch_from_inside_a_batch_starts_at_that_record_and_pause_stops_fetching(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, partitions=1)
    records = [(f"k{i}".encode(), f"v{i}".encode(), 0) for i in range(1_000)]
    _produce(kafka_bootstrap, topic, records, **{"compression.type": "lz4", "linger.ms": 50})
    expected = _reference(kafka_bootstrap, topic, 0, 1_000)
    fetcher = RawFetcher(kafka_bootstrap, fetch_wait_ms=100)
    try:
        fetcher.assign(topic, 0, 437)  # in the middle of a batch of many records
        got = _fetch_all(fetcher, 1_000 - 437)
        assert got[(topic, 0)] == expected[437:]
        fetcher.pause([(topic, 0)])
        deadline = time.monotonic() + 10
        while fetcher.in_flight and time.monotonic() < deadline:  # a fetch already out is answered
            time.sleep(0.01)
        before = fetcher.fetches
        _produce(kafka_bootstrap, topic, [(b"k", b"late", 0)])
        assert fetcher.take(100, timeout=1.0) == []  # paused: nothing fetched
        assert fetcher.fetches == before
        fetcher.resume([(topic, 0)])
        late = fetcher.take(100, timeout=10.0)
        assert [(r.offset(), r.value()) for c in late for r in c.records()] == [(expected[-1][0] + 1, b"late")]
        fetcher.unassign(topic, 0)
        _produce(kafka_bootstrap, topic, [(b"k", b"later", 0)])
        assert fetcher.take(100, timeout=1.0) == []  # forgotten
    finally:
        fetcher.close()


def test_a_partition_error_the_fetcher_cannot_mend_is_raised_to_the_reader(kafka_bootstrap):
    """Offset out of range (the answer built here with aiokafka's struct, as Apache Kafka sends it, so the
    test needs no log trimmed under a reader); an unknown topic is asked again later."""
    from aiokafka.protocol.fetch import FetchResponse_v4

    fetcher = RawFetcher(kafka_bootstrap, fetch_wait_ms=100)
    try:
        wanted = {("a", 0): (10_000, 1), ("b", 0): (0, 1)}
        fetcher._absorb(FetchResponse_v4(0, [("b", [(0, 3, -1, -1, [], b"")])]), wanted)  # unknown: later
        assert fetcher._retry_at[("b", 0)] > time.monotonic()
        with pytest.raises(RecordBatchError, match=r"a\[0\]: offset 10000 out of range"):
            fetcher._absorb(FetchResponse_v4(0, [("a", [(0, 1, -1, -1, [], b"")])]), wanted)
    finally:
        fetcher.close()


@pytest.fixture(scope="module")
def record_set(kafka_bootstrap) -> bytes:
    """A real record set as the broker answers a fetch: two lz4 batches of 40 records each."""
    topic = _topic(kafka_bootstrap, partitions=1)
    for _ in range(2):
        _produce(
            kafka_bootstrap,
            topic,
            [(f"k{i}".encode(), f"value-{i}".encode() * 3, 0) for i in range(40)],
            **{"compression.type": "lz4", "linger.ms": 50},
        )
    fetcher = RawFetcher(kafka_bootstrap, fetch_wait_ms=100)
    try:
        return fetcher._fetch({(topic, 0): 0}).topics[0][1][0][5]
    finally:
        fetcher.close()


def test_a_reader_asking_for_n_records_gets_n_and_the_rest_next(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, partitions=1)
    records = [
        (None if i % 5 == 0 else f"k{i}".encode(), None if i % 7 == 0 else f"v{i}".encode(), 0) for i in range(1_000)
    ]
    _produce(kafka_bootstrap, topic, records, **{"compression.type": "lz4", "linger.ms": 50})
    expected = _reference(kafka_bootstrap, topic, 0, 1_000)
    fetcher = RawFetcher(kafka_bootstrap, fetch_wait_ms=100)
    try:
        fetcher.assign(topic, 0, 0)
        got, nexts = [], []
        deadline = time.monotonic() + 30
        while len(got) < 1_000 and time.monotonic() < deadline:
            chunks = fetcher.take(300, timeout=1.0)
            assert sum(c.count for c in chunks) <= 300
            for c in chunks:
                got += [(r.offset(), r.key(), r.value()) for r in c.records()]
                nexts.append(c.next_offset)
        assert got == expected
        assert nexts[-1] == 1_000 and all(n == o for n, (o, _, _) in zip(nexts, got[300::300]))
    finally:
        fetcher.close()


def test_the_record_set_parses_to_its_records(record_set):
    chunk, nxt = parse_record_set("t", 0, record_set, 0)
    assert isinstance(chunk, RecordChunk) and chunk.count == 80 and nxt == 80
    assert [r.value() for r in chunk.records()] == [f"value-{i}".encode() * 3 for i in range(40)] * 2
    cut, nxt = parse_record_set("t", 0, record_set[:-1], 0)  # the second batch cut off: left for later
    assert cut.count == 40 and nxt == 40


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_corrupted_record_set_raises_or_parses_within_its_bounds(record_set, data):
    """Any bytes changed (uncompressed too: the walk sees what decompression gives): a clean error or
    records whose bytes all come from the set, never a crash."""
    raw = bytearray(record_set)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw[21:23] = b"\x00\x00"  # attributes: uncompressed, so the corruption reaches the record walk
    try:
        chunk, _ = parse_record_set("t", 0, bytes(raw), 0)
    except (RecordBatchError, Exception) as exc:  # cramjam's decompression errors are its own
        assert not isinstance(exc, (MemoryError, SystemError))
        return
    if chunk is not None:
        assert chunk.value_lengths.clip(0).sum() == len(chunk.values)
        assert chunk.key_lengths.clip(0).sum() == len(chunk.keys)
        assert len(chunk.values) + len(chunk.keys) <= len(raw) * 64  # lz4 may expand; bounded, not garbage


def test_close_cuts_short_a_fetch_the_broker_holds():
    """A fetch out to a broker that does not answer it (a broker just started once held one for
    seconds): close() shuts its socket down, so the fetch thread ends at once instead of waiting out its
    socket timeout (31 s) past close's join (10.5 s). The broker here accepts the connection and
    never answers."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    got_request = threading.Event()

    def hold() -> None:
        conn, _ = server.accept()
        accepted.append(conn)
        conn.recv(4)  # the fetch's size prefix: the request is out
        got_request.set()

    threading.Thread(target=hold, daemon=True).start()
    fetcher = RawFetcher(f"127.0.0.1:{server.getsockname()[1]}", fetch_wait_ms=500)
    try:
        fetcher.assign("md.trades", 0, 0)
        assert got_request.wait(10), "the fetcher never sent its fetch"
        assert fetcher.in_flight
        fetcher.close()
        assert not fetcher._thread.is_alive(), "the fetch thread outlived close()"
    finally:
        for conn in accepted:
            conn.close()
        server.close()
