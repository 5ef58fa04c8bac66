"""Whole record batches from a one-broker Kafka, without a Python object per record: the sink's fast path.

Why hand-rolled: librdkafka (confluent-kafka) hands every record to Python as a `Message` with its own
bytes, key and topic string: 1.2-1.3 CPU-s per million records in the process before anything is
decoded. On 2 cores the sink must fit its whole work beside PostgreSQL's COPY into ~1 CPU-s per
million to reach 0.9x of a plain COPY (benchmarks/RESULTS.md), so that alone is over the
budget, and no maintained Python client hands over record batches as bytes. Here aiokafka's protocol
structs encode the Fetch request and decode its response (the record set stays one bytes object), the
batches are decompressed by cramjam (lz4, zstd, snappy) or zlib, and one numba kernel walks the records
of Kafka's record batch format v2 and gathers their values and keys into two buffers with their lengths
and offsets: what `sinks.columnar` reads as one Avro block. A prototype fetched and parsed 1M trades in
0.09 CPU-s (RESULTS).

Scope, on purpose narrow: a cluster of one broker (the embedded Kafka of `tapeflow up`, or an external
single-node one), which leads every partition, so no leader routing or failover is needed; plain
fetches of assigned partitions from given offsets, read_committed skipping control batches. On a
cluster of several brokers the sink leaves every partition to librdkafka (`one_broker`). Group
membership, committed offsets, watermarks and commits stay with librdkafka (`SplitConsumer` routes
each partition the group assigns to one or the other). The record walk checks every length against the batch it
is in, so a malformed batch raises `RecordBatchError` instead of reading past its buffer.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import structlog

log = structlog.get_logger("record_batches")

#: record batch v2 header: base offset, length, partition leader's term, magic, crc, attributes, last offset
#: delta, first/max timestamp, producer id and its term, base sequence, record count (61 bytes)
_BATCH = struct.Struct(">qiibIhiqqqhii")
_CONTROL = 0x20  # attributes bit 5: a transaction marker, no data records
_SIZE = struct.Struct(">i")
# Kafka error codes the fetcher acts on
_NONE, _OFFSET_OUT_OF_RANGE, _UNKNOWN_TOPIC = 0, 1, 3


class RecordBatchError(Exception):
    """A record set that is not well-formed record batches v2 (or a fetch error the fetcher cannot mend)."""


def _walk_kernel():
    """The numba kernel (`tapeflow_runtime._record_walk`), imported on first use: importing this module costs
    no numba import, which the executor and the UI do not need."""
    from tapeflow_runtime._record_walk import walk

    return walk


def warm_up() -> None:
    """Compile (or load from numba's cache) the record walk with the argument types the fetcher passes."""
    empty = np.zeros(0, dtype=np.uint8)
    lengths = np.zeros(0, dtype=np.int64)
    _walk_kernel()(
        np.frombuffer(b"", dtype=np.uint8),  # read-only, as a fetched record set is
        np.zeros((0, 4), dtype=np.int64),
        empty,
        empty,
        lengths,
        lengths,
        lengths,
    )


def _decompress(codec: int, body: bytes) -> bytes:
    import cramjam

    if codec == 3:  # lz4 frame
        return bytes(cramjam.lz4.decompress(body))
    if codec == 4:
        return bytes(cramjam.zstd.decompress(body))
    if codec == 1:
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if codec == 2:  # snappy: Java's xerial framing (magic, two versions, then length-prefixed blocks) or raw
        if body[:8] == b"\x82SNAPPY\x00":
            out, pos = [], 16
            while pos < len(body):
                (n,) = _SIZE.unpack_from(body, pos)
                out.append(bytes(cramjam.snappy.decompress_raw(body[pos + 4 : pos + 4 + n])))
                pos += 4 + n
            return b"".join(out)
        return bytes(cramjam.snappy.decompress_raw(body))
    raise RecordBatchError(f"unknown compression codec {codec}")


@dataclass
class RecordChunk:
    """The records of one partition from one fetch: values and keys joined, with lengths and offsets."""

    topic: str
    partition: int
    values: bytes
    value_lengths: np.ndarray  # int64, -1 for a null value
    keys: bytes
    key_lengths: np.ndarray  # int64, -1 for a null key
    record_offsets: np.ndarray  # int64
    next_offset: int  # where the partition's next fetch starts (past every batch this came from)

    @property
    def count(self) -> int:
        return len(self.record_offsets)

    def split(self, n: int) -> tuple[RecordChunk, RecordChunk]:
        """The first `n` records and the rest (0 < n < count): a consumer that asked for n records gets n,
        so the sink's batches keep their size (`SinkConfig.batch_rows`)."""
        vcut = int(np.maximum(self.value_lengths[:n], 0).sum())
        kcut = int(np.maximum(self.key_lengths[:n], 0).sum())
        head = RecordChunk(
            self.topic,
            self.partition,
            self.values[:vcut],
            self.value_lengths[:n],
            self.keys[:kcut],
            self.key_lengths[:n],
            self.record_offsets[:n],
            int(self.record_offsets[n]),
        )
        tail = RecordChunk(
            self.topic,
            self.partition,
            self.values[vcut:],
            self.value_lengths[n:],
            self.keys[kcut:],
            self.key_lengths[n:],
            self.record_offsets[n:],
            self.next_offset,
        )
        return head, tail

    def records(self) -> list[RawRecord]:
        """One object per record (the slow path: dead letters need each record's bytes and offset)."""
        out: list[RawRecord] = []
        vpos = kpos = 0
        for vlen, klen, offset in zip(
            self.value_lengths.tolist(), self.key_lengths.tolist(), self.record_offsets.tolist(), strict=True
        ):
            value = None if vlen < 0 else self.values[vpos : vpos + vlen]
            key = None if klen < 0 else self.keys[kpos : kpos + klen]
            vpos += max(vlen, 0)
            kpos += max(klen, 0)
            out.append(RawRecord(self.topic, self.partition, offset, key, value))
        return out


class RawRecord:
    """One record of a `RecordChunk`, with the accessors of a confluent-kafka `Message` the sink uses."""

    __slots__ = ("_topic", "_partition", "_offset", "_key", "_value")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        self._topic, self._partition, self._offset, self._key, self._value = topic, partition, offset, key, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


def parse_record_set(topic: str, partition: int, data: bytes, fetch_offset: int) -> tuple[RecordChunk | None, int]:
    """The complete batches of a fetched record set -> (their records from `fetch_offset` on, or None if
    none; the offset to fetch next). A batch cut off at the end of the set (the fetch's byte limit) is
    left for the next fetch; records before `fetch_offset` (a batch that starts earlier) are dropped."""
    bodies: list[bytes] = []
    rows: list[tuple[int, int, int, int]] = []
    pos, start, records, nxt = 0, 0, 0, fetch_offset
    n = len(data)
    while pos + _BATCH.size <= n:
        base, length, _, magic, _, attrs, last_delta, _, _, _, _, _, count = _BATCH.unpack_from(data, pos)
        end = pos + 12 + length
        if end > n:
            break
        if magic != 2:
            raise RecordBatchError(f"{topic}[{partition}]: record batch magic {magic} at offset {base}, not 2")
        if length < _BATCH.size - 12 or count < 0:
            raise RecordBatchError(f"{topic}[{partition}]: malformed batch header at offset {base}")
        body = data[pos + _BATCH.size : end]
        nxt = max(nxt, base + last_delta + 1)
        pos = end
        if attrs & _CONTROL or count == 0:
            continue
        if attrs & 7:
            body = _decompress(attrs & 7, body)
        bodies.append(body)
        rows.append((start, start + len(body), count, base))
        start += len(body)
        records += count
    if not rows:
        return None, nxt
    buf = np.frombuffer(b"".join(bodies), dtype=np.uint8)
    values = np.empty(len(buf), dtype=np.uint8)
    keys = np.empty(len(buf), dtype=np.uint8)
    value_len = np.empty(records, dtype=np.int64)
    key_len = np.empty(records, dtype=np.int64)
    offsets = np.empty(records, dtype=np.int64)
    k, vbytes, kbytes = _walk_kernel()(buf, np.array(rows, dtype=np.int64), values, keys, value_len, key_len, offsets)
    if k != records:
        raise RecordBatchError(f"{topic}[{partition}]: malformed record in the batches from offset {rows[0][3]}")
    if records > 1 and not (np.diff(offsets) > 0).all():
        raise RecordBatchError(
            f"{topic}[{partition}]: record offsets not increasing in the batches from offset {rows[0][3]}"
        )
    keep = offsets >= fetch_offset
    if not keep.all():  # a batch that began before the position asked for (Kafka answers from its start)
        if not keep.any():
            return None, nxt
        vstart = int(np.maximum(value_len, 0)[~keep].sum())
        kstart = int(np.maximum(key_len, 0)[~keep].sum())
        first = int(np.argmax(keep))
        return RecordChunk(
            topic,
            partition,
            values[vstart:vbytes].tobytes(),
            value_len[first:],
            keys[kstart:kbytes].tobytes(),
            key_len[first:],
            offsets[first:],
            nxt,
        ), nxt
    return RecordChunk(
        topic, partition, values[:vbytes].tobytes(), value_len, keys[:kbytes].tobytes(), key_len, offsets, nxt
    ), nxt


class RawFetcher:
    """Fetches the partitions it is given, from the offsets it is given, in a thread of its own.

    `take` returns what has been fetched (`RecordChunk`s, in offset order per partition). `pause` stops
    a partition's fetches (what was fetched stays to be taken), `unassign` forgets it and drops what
    was fetched of it. Fetched data waits in memory up to `queued_bytes`; beyond that the thread stops
    fetching until it is taken (the consumer's back-pressure). A connection lost is reopened with
    backoff; an error the fetcher cannot mend (an offset out of range, a malformed batch) is raised
    from the next `take`.
    """

    def __init__(
        self,
        address: str,
        fetch_wait_ms: int = 500,
        max_bytes: int = 52_428_800,
        partition_max_bytes: int = 10_485_760,
        queued_bytes: int = 64 << 20,
        client_id: str = "tapeflow-raw-fetch",
    ) -> None:
        host, port = address.rsplit(":", 1)
        self._address = (host, int(port))
        self.fetch_wait_ms = fetch_wait_ms
        self.max_bytes = max_bytes
        self.partition_max_bytes = partition_max_bytes
        self.queued_bytes = queued_bytes
        self.client_id = client_id
        self._lock = threading.Condition()
        self._position: dict[tuple[str, int], int] = {}
        self._generation: dict[tuple[str, int], int] = {}
        self._paused: set[tuple[str, int]] = set()
        self._retry_at: dict[tuple[str, int], float] = {}  # a partition the broker does not know yet
        self._ready: deque[tuple[int, RecordChunk]] = deque()
        self._ready_bytes = 0
        self._error: BaseException | None = None
        self._closed = False
        self._sock: socket.socket | None = None
        self._correlation = 0
        self.fetches = 0  # answered fetches
        self.in_flight = False  # a fetch is out (its answer is taken even if the partitions pause meanwhile)
        self._thread = threading.Thread(target=self._run, name="raw-fetch", daemon=True)
        self._thread.start()

    # --- the consumer thread's side ----------------------------------------------------------------------
    def assign(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            key = (topic, partition)
            self._position[key] = offset
            self._generation[key] = self._generation.get(key, 0) + 1
            self._paused.discard(key)
            self._lock.notify_all()

    def unassign(self, topic: str, partition: int) -> None:
        with self._lock:
            key = (topic, partition)
            self._position.pop(key, None)
            self._generation[key] = self._generation.get(key, 0) + 1
            self._paused.discard(key)
            self._retry_at.pop(key, None)

    def pause(self, partitions: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            self._paused.update(p for p in partitions if p in self._position)

    def resume(self, partitions: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            self._paused.difference_update(partitions)
            self._lock.notify_all()

    def assigned(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self._position)

    def take(self, max_records: int, timeout: float = 0.0) -> list[RecordChunk]:
        """Fetched chunks of the assigned partitions (at least one if any arrives within `timeout`), up to
        `max_records` records (a chunk is split at a record to fit; the rest is taken next)."""
        deadline = time.monotonic() + timeout
        out: list[RecordChunk] = []
        taken = 0
        with self._lock:
            while True:
                if self._error is not None:
                    raise self._error
                while self._ready and taken < max_records:
                    generation, chunk = self._ready[0]
                    if self._generation.get((chunk.topic, chunk.partition)) != generation:
                        self._ready.popleft()  # unassigned since it was fetched
                        self._ready_bytes -= len(chunk.values) + len(chunk.keys)
                        continue
                    if chunk.count > max_records - taken:
                        chunk, rest = chunk.split(max_records - taken)
                        self._ready[0] = (generation, rest)
                    else:
                        self._ready.popleft()
                    self._ready_bytes -= len(chunk.values) + len(chunk.keys)
                    out.append(chunk)
                    taken += chunk.count
                self._lock.notify_all()
                remaining = deadline - time.monotonic()
                if out or remaining <= 0:
                    return out
                self._lock.wait(remaining)

    def close(self) -> None:
        """Stop the fetch thread. A fetch still out is cut short by shutting its socket down: the broker
        answers within the fetch's wait as a rule, but one just started was seen holding a fetch for
        seconds, and waiting it out (up to the socket timeout, 31 s) made a sink stopped on Ctrl-C
        outlast the supervisor's stop timeout and be killed. What such a fetch would have brought is
        fetched again from the committed offsets."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # the fetch thread's recv returns at once
            except OSError:  # nosec B110 # not connected (any more): nothing to cut short
                pass
        self._thread.join(self.fetch_wait_ms / 1000 + 10)
        self._disconnect()

    # --- the fetch thread ----------------------------------------------------------------------------
    def _wanted(self) -> dict[tuple[str, int], tuple[int, int]] | None:
        """(offset, generation) of each partition to fetch now; None when closed. Waits while there is
        nothing to fetch or the fetched data waiting is over its bound."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                wanted = {
                    key: (offset, self._generation[key])
                    for key, offset in self._position.items()
                    if key not in self._paused and self._retry_at.get(key, 0.0) <= now
                }
                if wanted and self._ready_bytes < self.queued_bytes:
                    return wanted
                self._lock.wait(0.25)
            return None

    def _run(self) -> None:
        try:
            warm_up()  # compiled (first run of an install) or loaded before the first records, not with them
        except BaseException as exc:  # noqa: BLE001 # handed to the consumer thread, which fails the service
            with self._lock:
                self._error = exc
                self._lock.notify_all()
            return
        backoff = 0.2
        while True:
            wanted = self._wanted()
            if wanted is None:
                return
            try:
                self.in_flight = True
                try:
                    response = self._fetch({key: offset for key, (offset, _) in wanted.items()})
                finally:
                    self.in_flight = False
                self._absorb(response, wanted)
                backoff = 0.2
            except (OSError, EOFError) as exc:  # the broker went away or restarted: reconnect with backoff
                self._disconnect()
                if self._closed:
                    return
                log.warning("raw fetch failed, reconnecting", error=str(exc), retry_in_s=backoff)
                with self._lock:
                    self._lock.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except BaseException as exc:  # noqa: BLE001 # handed to the consumer thread, which fails the service
                with self._lock:
                    self._error = exc
                    self._lock.notify_all()
                return

    def _absorb(self, response, wanted: dict[tuple[str, int], tuple[int, int]]) -> None:
        for topic, partitions in response.topics:
            for partition, error, _high, _stable, _aborted, data in partitions:
                key = (topic, partition)
                if key not in wanted:
                    continue
                offset, generation = wanted[key]
                if error == _UNKNOWN_TOPIC:  # just created (metadata not everywhere yet) or being deleted
                    with self._lock:
                        self._retry_at[key] = time.monotonic() + 1.0
                    continue
                if error == _OFFSET_OUT_OF_RANGE:
                    raise RecordBatchError(f"{topic}[{partition}]: offset {offset} out of range")
                if error != _NONE:  # a transient broker error (leadership, timeout): asked again in a second
                    log.warning("raw fetch partition error", topic=topic, partition=partition, error_code=error)
                    with self._lock:
                        self._retry_at[key] = time.monotonic() + 1.0
                    continue
                if not data:
                    continue
                chunk, nxt = parse_record_set(topic, partition, data, offset)
                if chunk is None and nxt == offset:
                    raise RecordBatchError(
                        f"{topic}[{partition}]: a record batch at offset {offset} is larger "
                        f"than the fetch's {self.partition_max_bytes:,} bytes per partition"
                    )
                with self._lock:
                    if self._generation.get(key) != generation or self._position.get(key) != offset:
                        continue  # unassigned or moved while the fetch was out
                    self._position[key] = nxt
                    if chunk is not None:
                        self._ready.append((generation, chunk))
                        self._ready_bytes += len(chunk.values) + len(chunk.keys)
                        self._lock.notify_all()

    def _fetch(self, positions: dict[tuple[str, int], int]):
        from aiokafka.protocol.api import RequestHeader_v1
        from aiokafka.protocol.fetch import FetchRequest_v4, FetchResponse_v4

        topics: dict[str, list[tuple[int, int, int]]] = {}
        for (topic, partition), offset in sorted(positions.items()):
            topics.setdefault(topic, []).append((partition, offset, self.partition_max_bytes))
        request = FetchRequest_v4(-1, self.fetch_wait_ms, 1, self.max_bytes, 1, list(topics.items()))
        self._correlation = (self._correlation + 1) & 0x7FFFFFFF
        message = RequestHeader_v1(request, self._correlation, self.client_id).encode() + request.encode()
        sock = self._connect()
        sock.sendall(_SIZE.pack(len(message)) + message)
        (size,) = _SIZE.unpack(self._recv(sock, 4))
        payload = self._recv(sock, size)
        (correlation,) = _SIZE.unpack_from(payload, 0)
        if correlation != self._correlation:
            raise OSError(f"response {correlation} to request {self._correlation}")
        self.fetches += 1
        return FetchResponse_v4.decode(io.BytesIO(payload[4:]))

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.create_connection(self._address, timeout=10)
            # a fetch is answered within its wait; twice that plus the transfer, or the link is dead
            sock.settimeout(2 * self.fetch_wait_ms / 1000 + 30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self._sock

    def _disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:  # nosec B110 # closing a socket that already failed
                pass

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            r = sock.recv_into(view[got:])
            if not r:
                raise EOFError("the broker closed the connection")
            got += r
        return bytes(buf)


def one_broker(consumer, timeout: float = 10.0) -> str | None:
    """host:port of the cluster's broker when it has exactly one (what `RawFetcher` can fetch from), else None."""
    brokers = consumer.list_topics(timeout=timeout).brokers
    if len(brokers) != 1:
        return None
    (broker,) = brokers.values()
    return f"{broker.host}:{broker.port}"


def _asked_until_answered(ask: Callable[[], dict], want: set, attempts: int = 60) -> dict:
    """``ask()`` again while the broker cannot answer for every key in ``want`` yet: a broker that just
    started loads its offsets topic first (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS), and a topic
    just created has no leader known everywhere for a moment (NOT_LEADER, UNKNOWN_TOPIC_OR_PART, a
    partition left out of the answer). About 30 s at most, then the last error is raised."""
    from confluent_kafka import KafkaException

    for attempt in range(attempts):
        try:
            answer = ask()
        except KafkaException as exc:
            passing = exc.args[0].code() in (3, 5, 6, 14, 15, 16) or exc.args[0].retriable()
            if attempt == attempts - 1 or not passing:
                raise
            time.sleep(0.5)
            continue
        if want <= answer.keys() or attempt == attempts - 1:
            return answer
        time.sleep(0.5)
    return {}


class SplitConsumer:
    """A subscribed confluent-kafka `Consumer` whose partitions of `raw(topic)` topics are fetched by a
    `RawFetcher`.

    `assign` takes what the group assigned (the sink's on_assign): the raw topics' partitions go to the
    fetcher from the group's committed offsets, the others to librdkafka (`Consumer.assign`, which also
    tells the client the rebalance was handled); `revoke` forgets them (on_revoke). Offers what the sink
    calls: pause/resume, consume (chunks of the raw partitions and messages of the others), and passes
    everything else (commits, committed offsets, watermarks, metadata) to the consumer, so commits and
    the group stay librdkafka's. `consume` polls the consumer at least every 0.4 s even when every
    partition is raw: polling is what keeps the member in the group and runs the rebalance callbacks.

    One thread cannot wait on librdkafka and on the fetcher at once, so `consume` waits on one of them
    in slices and looks at the other between slices: 50 ms while records come (a raw chunk waits at most
    that long behind a librdkafka wait), doubling while none do up to 0.4 s, so an idle sink wakes a few
    times a second instead of twenty. With no librdkafka partition it waits on the fetcher, which wakes
    it as soon as a chunk is ready.
    """

    SLICE_S, IDLE_SLICE_S = 0.05, 0.4

    def __init__(self, consumer, fetcher: RawFetcher, raw: Callable[[str], bool]) -> None:
        self.consumer = consumer
        self.fetcher = fetcher
        self.raw = raw
        self._plain: set[tuple[str, int]] = set()  # the consumer's own partitions
        self._slice_s = self.SLICE_S

    def __getattr__(self, name: str):
        return getattr(self.consumer, name)

    def assign(self, partitions) -> None:
        raw = [tp for tp in partitions if self.raw(tp.topic)]
        plain = [tp for tp in partitions if not self.raw(tp.topic)]
        if raw:
            from confluent_kafka import TopicPartition

            from tapeflow_runtime.kafka_client import start_offsets

            keys = {(tp.topic, tp.partition) for tp in raw}
            committed = _asked_until_answered(
                lambda: {
                    (tp.topic, tp.partition): tp.offset
                    for tp in self.consumer.committed([TopicPartition(t, p) for t, p in sorted(keys)], timeout=10)
                },
                keys,
            )
            offsets = {key: committed.get(key, -1) for key in keys}
            # nothing committed: the partition's first record (auto.offset.reset=earliest), one request for all
            unread = {key for key, offset in offsets.items() if offset < 0}
            starts = _asked_until_answered(lambda: start_offsets(self.consumer, sorted(unread), 10), unread)
            for (topic, partition), offset in offsets.items():
                if offset < 0:
                    if (topic, partition) not in starts:
                        raise RecordBatchError(f"{topic}[{partition}]: the broker did not tell its log start")
                    offset = starts[(topic, partition)]
                self.fetcher.assign(topic, partition, offset)
        self.consumer.assign(plain)  # also when empty: the rebalance is handled, librdkafka assigns nothing
        self._plain = {(tp.topic, tp.partition) for tp in plain}

    def revoke(self) -> None:
        for topic, partition in self.fetcher.assigned():
            self.fetcher.unassign(topic, partition)
        self._plain = set()

    def pause(self, partitions) -> None:
        self._split(partitions, self.fetcher.pause, self.consumer.pause)

    def resume(self, partitions) -> None:
        self._split(partitions, self.fetcher.resume, self.consumer.resume)

    def _split(self, partitions, raw_call, plain_call) -> None:
        plain = [tp for tp in partitions if (tp.topic, tp.partition) in self._plain]
        raw = [(tp.topic, tp.partition) for tp in partitions if (tp.topic, tp.partition) not in self._plain]
        if raw:
            raw_call(raw)
        if plain:
            plain_call(plain)

    def consume(self, num_messages: int = 1, timeout: float = -1):
        """Chunks of the raw partitions, then messages of the others; waits up to `timeout` for either, in
        slices (see the class), polling the consumer in each."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            chunks = self.fetcher.take(num_messages)
            taken = sum(c.count for c in chunks)
            # at least one asked for even when the chunks filled the call: a steady stream of them must
            # not keep the consumer from being polled (one message over num_messages at most)
            msgs = self.consumer.consume(num_messages=max(num_messages - taken, 1), timeout=0)
            remaining = deadline - time.monotonic()
            if chunks or msgs:
                self._slice_s = self.SLICE_S
                return [*chunks, *msgs]
            if remaining <= 0:
                return []
            wait = min(remaining, self._slice_s)
            if self._plain:
                got = self.consumer.consume(num_messages=num_messages, timeout=wait)
            else:
                got = self.fetcher.take(num_messages, timeout=wait)
            if got:
                self._slice_s = self.SLICE_S
                return got
            self._slice_s = min(2 * self._slice_s, self.IDLE_SLICE_S)

    def poll(self, timeout: float = -1):
        return self.consumer.poll(timeout)

    def close(self) -> None:
        self.fetcher.close()
        self.consumer.close()
