"""Kafka plumbing shared by the CLI and services: client configs, health probe, idempotent topic creation.

Client configs carry low session/rebalance timeouts because every consumer-group join waits for the
rebalance timeout; on a dev broker the defaults turn each join into a 20-30 s pause.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from schemas.catalogue import TopicSpec, all_topics, topic_configs
from tapeflow_runtime.health import Health

T = TypeVar("T")

# Fast group joins on a single-node dev/test broker; production deployments override via env.
# Heartbeats at a third of the session (Kafka's advice): every heartbeat is a request the idle broker
# answers, and a member is still declared gone within the session's 6 s.
FAST_GROUP_CONFIG = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 2000,
    "max.poll.interval.ms": 30000,
}


_QUIET = logging.getLogger("tapeflow.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def admin_client(bootstrap: str) -> AdminClient:
    # librdkafka logs every refused connection to stderr; a health probe expects refusals, so the
    # client logs go to a silent logger and the probe reports the outcome itself.
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, "logger": _QUIET})


def producer_config(bootstrap: str, **extra) -> dict:
    """Idempotent producer: acks=all + enable.idempotence, so retries never duplicate or reorder.

    A record waits for the broker as long as it takes (``message.timeout.ms`` 0: no expiry): with
    librdkafka's default of 300 s, a broker down for longer (a full log disk waiting for space) would
    fail the records queued meanwhile. A transactional producer keeps librdkafka's bound instead: its
    records cannot outlive the transaction that holds them."""
    cfg = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "message.timeout.ms": 0,
        **extra,
    }
    if "transactional.id" in extra and "message.timeout.ms" not in extra:
        del cfg["message.timeout.ms"]
    return cfg


# Large fetches: librdkafka's defaults (1 MB per partition) cap a consumer catching up on history;
# a short fetch wait keeps latency low when traffic is thin.
FETCH_CONFIG = {
    "fetch.max.bytes": 52_428_800,
    "max.partition.fetch.bytes": 10_485_760,
    "fetch.wait.max.ms": 10,
}

# For readers of history (a whole topic, a time range): Kafka answers a fetch as soon as data is there,
# so a longer wait costs a history reader nothing but up to 0.5 s at its end, and saves empty fetches.
HISTORY_FETCH_CONFIG = {"fetch.wait.max.ms": 500}


def consumer_config(bootstrap: str, group_id: str | None = None, **extra) -> dict:
    cfg = {
        "bootstrap.servers": bootstrap,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # the engine and the executor commit in transactions: never a record of an aborted or open one
        "isolation.level": "read_committed",
        **FAST_GROUP_CONFIG,
        **FETCH_CONFIG,
        **extra,
    }
    # librdkafka insists on a group.id even for assign()-only consumers that never commit.
    cfg["group.id"] = group_id or "tapeflow-cli-no-commit"
    return cfg


def end_offsets(consumer, partitions: Iterable[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int]:
    """(topic, partition) -> end offset, asked of the broker (never librdkafka's cache, which only fetch
    answers fill): one ListOffsets(latest) request for every partition. Partitions the broker answered with an error are left out."""
    return _listed_offsets(consumer, partitions, timeout, -1)


def start_offsets(consumer, partitions: Iterable[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int]:
    """(topic, partition) -> log start offset, in one ListOffsets(earliest) request. One
    ``get_watermark_offsets`` per partition the consumer does not fetch itself took seconds each in the
    sink (its raw-fetched partitions), holding its consumer thread. Errors are left out."""
    return _listed_offsets(consumer, partitions, timeout, -2)


#: ListOffsets answers that mean "not yet, ask again": a topic created a moment ago is not yet in
#: librdkafka's metadata (_UNKNOWN_PARTITION) or has no leader in the broker's metadata cache yet, a
#: restarted broker is still loading its partitions. A topic that truly does not exist therefore
#: fails only after the whole timeout.
_LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.OFFSET_NOT_AVAILABLE,
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_LEADER_EPOCH,
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def error_code(exc: BaseException) -> int | None:
    """The code of the KafkaError a KafkaException carries (None when it carries none)."""
    return exc.args[0].code() if exc.args and isinstance(exc.args[0], KafkaError) else None


class _NotYet(Exception):
    """An answer that means "ask again" (see `ask_again`); it carries the answer, returned at the deadline."""

    def __init__(self, answer: Any) -> None:
        super().__init__("not yet")
        self.answer = answer


def ask_again(
    call: Callable[[float], T],
    codes: Collection[int],
    timeout: float,
    *,
    attempt_s: float | None = None,
    floor_s: float = 0.5,
    pause_s: float = 0.2,
    between: Callable[[float], None] | None = None,
) -> T:
    """``call(seconds)`` until it answers, asked again while it raises a KafkaException whose code is in
    ``codes`` (the broker saying "not yet": a coordinator loading, a leader moving, a timeout), up to
    ``timeout``; then, or for any other error, the exception is raised. Each attempt gets what is left
    (at least ``floor_s``, at most ``attempt_s``); ``between(seconds_left)`` runs after each pause. A call
    may raise ``_NotYet(answer)`` for an answer that is not final yet: ``answer`` is returned at the
    deadline. The one retry loop of the Kafka lookups (committed offsets, metadata, offsets by time)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return call(max(floor_s, left if attempt_s is None else min(attempt_s, left)))
        except _NotYet as pending:
            if time.monotonic() >= deadline:
                return cast(T, pending.answer)
        except KafkaException as exc:
            if error_code(exc) not in codes or time.monotonic() >= deadline:
                raise
        if pause_s:
            time.sleep(pause_s)
        if between is not None:
            between(deadline - time.monotonic())


def offsets_for_times(consumer, wanted: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    """``consumer.offsets_for_times``, asked again until ``timeout`` while the broker answers "not yet"
    (``_LEADER_MOVING``), whether librdkafka raises it for the request or sets it on a partition.
    Any other error is left for the caller (raised, or on the partition's ``error``)."""

    def ask(seconds: float) -> list[TopicPartition]:
        answer = consumer.offsets_for_times(wanted, timeout=seconds)
        if any(tp.error is not None and tp.error.code() in _LEADER_MOVING for tp in answer):
            raise _NotYet(answer)
        return answer

    def refresh(left: float) -> None:
        # librdkafka keeps what it last heard of a topic it does not fetch (for minutes): ask anew
        for topic in {tp.topic for tp in wanted}:
            with contextlib.suppress(KafkaException):  # the next attempt reports what is wrong
                consumer.list_topics(topic, timeout=max(0.5, min(5.0, left)))

    return ask_again(ask, _LEADER_MOVING, timeout, between=refresh)


def _listed_offsets(
    consumer, partitions: Iterable[tuple[str, int]], timeout: float, logical: int
) -> dict[tuple[str, int], int]:
    """``offsets_for_times`` with a logical offset as the "time" (-1 OFFSET_END, -2 OFFSET_BEGINNING): one
    ListOffsets request for every partition, answered by the broker."""
    wanted = [TopicPartition(t, p, logical) for t, p in partitions]
    if not wanted:
        return {}
    return {
        (tp.topic, tp.partition): tp.offset for tp in offsets_for_times(consumer, wanted, timeout) if tp.error is None
    }


def topic_metadata(client, topic: str, timeout_s: float = 60.0, attempt_s: float = 10.0):
    """The topic's metadata from a consumer/admin client, asking again while the broker times out.

    A loaded broker can leave one metadata request unanswered for over 10 s (the CI saw an
    executor's state read die so, mid-rebalance); a live service must wait that out, not crash. Other
    errors, and a broker that stays silent for ``timeout_s``, raise ``KafkaException``."""
    return ask_again(
        lambda seconds: client.list_topics(topic, timeout=seconds).topics.get(topic),
        (KafkaError._TIMED_OUT, KafkaError._TRANSPORT),
        timeout_s,
        attempt_s=attempt_s,
        floor_s=0.1,
        pause_s=0.0,
    )


def broker_health(bootstrap: str, timeout: float = 3.0) -> Health:
    try:
        md = admin_client(bootstrap).list_topics(timeout=timeout)
    except KafkaException as exc:
        return Health(False, f"no metadata from {bootstrap}: {exc.args[0].str() if exc.args else exc}")
    return Health(True, f"{len(md.brokers)} broker(s), {len(md.topics)} topic(s)")


#: Kafka APIs (key: (name, lowest version we need)) the pipeline uses beyond the basics: the idempotent
#: and transactional producer (InitProducerId v3, TxnOffsetCommit v3: KIP-447's consumer group metadata,
#: Kafka 2.5), ListOffsets by timestamp with isolation level (v2), and DescribeCluster (Kafka 2.8, which
#: also stands for "KRaft-era broker"). A broker missing one is refused at start with its name.
REQUIRED_APIS = {
    0: ("Produce", 3),
    2: ("ListOffsets", 2),
    22: ("InitProducerId", 3),
    28: ("TxnOffsetCommit", 3),
    60: ("DescribeCluster", 0),
}
OLDEST_KAFKA = "2.8"


def kafka_protocol_problem(bootstrap: str, timeout: float = 3.0) -> str | None:
    """None when the first reachable address of ``bootstrap`` answers Kafka's ApiVersions request with
    every API of ``REQUIRED_APIS``; else one line saying what answered instead.

    Hand-rolled (ApiVersions v0: a 10-byte header and an array of (key, min, max)) because neither
    confluent-kafka nor librdkafka exposes a broker's API versions: librdkafka negotiates them silently
    and falls back, so an old broker fails later, mid-stream, and a port that is not Kafka at all only
    times out. Reachability itself is ``broker_health``'s to report."""
    import socket
    import struct

    problems = []
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as sock:
                sock.settimeout(timeout)
                client = b"tapeflow"
                body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
                sock.sendall(struct.pack(">i", len(body)) + body)
                answer = _read_frame(sock)
        except (OSError, ValueError) as exc:
            problems.append(f"{address}: {exc}")
            continue
        if answer is None or len(answer) < 10 or struct.unpack(">i", answer[:4])[0] != 1:
            return f"{address} answers, but not as a Kafka broker (no ApiVersions response)"
        error, count = struct.unpack(">hi", answer[4:10])
        if error != 0 or count < 0 or len(answer) < 10 + 6 * count:
            return f"{address} answers, but not as a Kafka broker (ApiVersions error {error})"
        versions = {key: high for key, _low, high in struct.iter_unpack(">hhh", answer[10 : 10 + 6 * count])}
        missing = [f"{name} v{need}" for key, (name, need) in REQUIRED_APIS.items() if versions.get(key, -1) < need]
        if missing:
            return (
                f"{address} is a Kafka broker older than {OLDEST_KAFKA} (it lacks {', '.join(missing)}); "
                "tapeflow needs Apache Kafka >= 2.8 (the embedded one is 4.4)"
            )
        return None
    return "; ".join(problems) or "no address"


def _read_frame(sock) -> bytes | None:
    import struct

    head = _read_exact(sock, 4)
    if head is None:
        return None
    size = struct.unpack(">i", head)[0]
    if size < 0 or size > 1_000_000:
        return None  # a text protocol's first bytes read as a length
    return _read_exact(sock, size)


def _read_exact(sock, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except TimeoutError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


@dataclass(frozen=True)
class TopicResult:
    name: str
    action: str  # created | exists | mismatch
    detail: str = ""


def ensure_topics(
    bootstrap: str,
    prefix: str = "",
    specs: Iterable[TopicSpec] | None = None,
    timeout: float = 15.0,
    md_retention_ms: int | None = None,
) -> list[TopicResult]:
    """Create every catalogue topic that is missing; existing topics are checked, never altered.

    Idempotent: running it twice creates nothing the second time. ``md_retention_ms``: the market
    data's retention (``Settings.topic_retention_ms``). A partition-count mismatch is reported (Kafka cannot shrink partitions, and growing them would re-key existing data).
    """
    specs = list(specs if specs is not None else all_topics())
    admin = admin_client(bootstrap)
    existing = admin.list_topics(timeout=timeout).topics
    results: list[TopicResult] = []
    to_create: list[tuple[TopicSpec, NewTopic]] = []
    for spec in specs:
        name = prefix + spec.name
        if name in existing:
            have = len(existing[name].partitions)
            if have != spec.partitions:
                results.append(TopicResult(name, "mismatch", f"{have} partitions, catalogue says {spec.partitions}"))
            else:
                results.append(TopicResult(name, "exists"))
            continue
        to_create.append(
            (
                spec,
                NewTopic(
                    name,
                    num_partitions=spec.partitions,
                    replication_factor=-1,
                    config=topic_configs(spec, md_retention_ms),
                ),
            )
        )
    created: dict[str, int] = {}  # by this call: waited for until hosted (wait_hosted)
    if to_create:
        futures = admin.create_topics([nt for _, nt in to_create], operation_timeout=timeout)
        for spec, nt in to_create:
            try:
                futures[nt.topic].result(timeout)
                results.append(TopicResult(nt.topic, "created"))
                created[nt.topic] = spec.partitions
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                # created meanwhile by another creator, or before this client's metadata showed it:
                # checked like any existing topic, so a partition mismatch is never reported as "exists"
                have = _partition_count(admin, nt.topic, timeout)
                if have != spec.partitions:
                    results.append(
                        TopicResult(nt.topic, "mismatch", f"{have} partitions, catalogue says {spec.partitions}")
                    )
                else:
                    results.append(TopicResult(nt.topic, "exists"))
    if created:
        wait_hosted(bootstrap, created, timeout)
    return results


def wait_hosted(bootstrap: str, topics: dict[str, int], timeout: float) -> None:
    """Until the broker hosts every partition of ``topics`` (name -> partition count): its leader
    answers a ListOffsets for each. Raises TimeoutError after ``timeout``.

    Why: CreateTopics returns once the controller has the topics; the broker creates their partition
    logs afterwards (about 1.2 s for the ~100 of the catalogue, over 3 s under load) and answers a
    produce to a partition not created yet "not leader". An idempotent producer can then have two
    batches of that partition in flight: the first (sequence 0) refused, the second accepted once the
    partition exists (a broker with no state for the producer takes its first batch at any sequence),
    and librdkafka reports the refused one delivered too ("implicitly acked by subsequent batch
    success"): records acknowledged and never written (seen in the OKX producer test under load:
    md.book, md.indicators and md.depth records). So nothing produces before this returns."""
    from confluent_kafka import Consumer

    wanted = [(name, p) for name, n in topics.items() for p in range(n)]
    consumer = Consumer(consumer_config(bootstrap))
    try:
        deadline = time.monotonic() + timeout
        while True:
            hosted = start_offsets(consumer, wanted, max(1.0, deadline - time.monotonic()))
            if len(hosted) == len(wanted):
                return
            if time.monotonic() >= deadline:
                missing = sorted({name for name, p in wanted if (name, p) not in hosted})
                raise TimeoutError(f"the broker does not host every partition of {missing} after {timeout} s")
            time.sleep(0.05)
    finally:
        consumer.close()


def _partition_count(admin, name: str, timeout: float) -> int:
    """The topic's partition count, asked until the broker's metadata shows the topic."""
    deadline = time.monotonic() + timeout
    while True:
        found = admin.list_topics(name, timeout=timeout).topics.get(name)
        if found is not None and found.error is None and found.partitions:
            return len(found.partitions)
        if time.monotonic() >= deadline:
            return 0
        time.sleep(0.1)


def describe_topics(bootstrap: str, names: list[str], timeout: float = 10.0) -> list[dict]:
    """Partitions (leader, log start, high watermark, last stable offset, whether a transaction is open
    on it) and configs of `names` (as plain dicts)."""
    from confluent_kafka import Consumer

    admin = admin_client(bootstrap)
    md = admin.list_topics(timeout=timeout)
    consumer = Consumer(consumer_config(bootstrap, **{"isolation.level": "read_uncommitted"}))
    committed_reader = Consumer(consumer_config(bootstrap, **{"isolation.level": "read_committed"}))
    out = []
    try:
        for name in names:
            tmd = md.topics.get(name)
            if tmd is None or tmd.error is not None:
                out.append({"topic": name, "exists": False})
                continue
            parts = []
            pids = sorted(tmd.partitions)
            lows = start_offsets(consumer, [(name, p) for p in pids], timeout)
            highs = end_offsets(consumer, [(name, p) for p in pids], timeout)
            # ListOffsets(latest) read committed answers the last stable offset: below the high
            # watermark while a transaction that wrote to the partition is open
            stables = end_offsets(committed_reader, [(name, p) for p in pids], timeout)
            for pid in pids:
                low, high = lows.get((name, pid), -1), highs.get((name, pid), -1)
                stable = stables.get((name, pid), -1)
                parts.append(
                    {
                        "partition": pid,
                        "leader": tmd.partitions[pid].leader,
                        "low": low,
                        "high": high,
                        "last_stable": stable,
                        "open_transaction": 0 <= stable < high,
                    }
                )
            configs = {}
            try:
                res = admin.describe_configs([ConfigResource("topic", name)])
                for _, fut in res.items():
                    configs = {
                        k: v.value
                        for k, v in fut.result(timeout).items()
                        if k in ("cleanup.policy", "retention.ms", "compression.type", "message.timestamp.type")
                    }
            except KafkaException:
                configs = {}
            out.append(
                {
                    "topic": name,
                    "exists": True,
                    "partitions": parts,
                    "messages": sum(p["high"] - p["low"] for p in parts),
                    "config": configs,
                }
            )
    finally:
        consumer.close()
        committed_reader.close()
    return out


class LagProbe:
    """Keeps a ``*_consumer_lag_messages{group, topic, partition}`` gauge of a confluent-kafka consumer.

    lag = end offset - the group's committed offset (the log start before the first commit: everything
    retained is unread). Refreshed at most every ``interval_s`` from the consumer's own loop: one
    OffsetFetch and one ListOffsets(latest) for all assigned partitions per refresh. The end offsets
    are asked from the broker, not taken from librdkafka's cache, which only fetch answers fill (a
    partition the consumer does not fetch from would keep a stale end). Partitions no longer assigned
    lose their series, so a rebalance leaves no stale lag behind.
    """

    def __init__(self, gauge, group: str, interval_s: float = 15.0, timeout_s: float = 5.0) -> None:
        self.gauge = gauge
        self.group = group
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._next = 0.0
        self._shown: set[tuple[str, int]] = set()

    def due(self, now: float) -> bool:
        """Whether ``maybe_refresh`` at ``now`` would sample (callers skip building its arguments)."""
        return now >= self._next

    def maybe_refresh(self, consumer, assignment, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.interval_s
        current = {(tp.topic, tp.partition) for tp in assignment}
        for topic, partition in self._shown - current:
            self.gauge.remove(self.group, topic, str(partition))
        self._shown = current
        if not current:
            return
        try:
            parts = sorted(current)
            committed = consumer.committed([TopicPartition(t, p) for t, p in parts], timeout=self.timeout_s)
            ends = end_offsets(consumer, parts, self.timeout_s)
            # nothing committed yet: everything from the log start is unread
            starts = start_offsets(
                consumer, [(tp.topic, tp.partition) for tp in committed if tp.offset < 0], self.timeout_s
            )
            for tp in committed:
                high = ends.get((tp.topic, tp.partition), -1)
                done = tp.offset if tp.offset >= 0 else starts.get((tp.topic, tp.partition), -1)
                if high >= 0:
                    self.gauge.labels(self.group, tp.topic, str(tp.partition)).set(max(0, high - max(done, 0)))
        except KafkaException as exc:  # a broker hiccup: keep the last values, try again next interval
            _QUIET.debug("lag probe failed: %s", exc)
