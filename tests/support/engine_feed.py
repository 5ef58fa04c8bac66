"""A generated session published the way a replaying source publishes it (in event-time steps, each
followed by its progress markers), for engine tests that inject faults while the input still arrives.

Why not the fake exchange and the producer: the exactly-once tests look at the engine only (its
transactions, its restores), and the full replay path is `tests/test_replay_parity.py`'s. Publishing
from the test keeps the input exactly the session (the reference is computed on it, no read-back) and
lets the test pace the source on the engine's own progress (`SessionFeed.publish`'s ``pace``): a fault
then always lands while the engine has input it has not committed, whatever the machine's load,
with a session of minutes instead of hours.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from schemas.catalogue import ENGINE_INPUTS
from schemas.serde import AvroSerde
from stream_apps.faust_app.session import SessionRecord
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher, PublishMetrics


class SessionFeed:
    """Publishes `session` (sorted by event time, as `synthetic_session` returns it) to the `md.*`
    topics of namespace `prefix` with the markers of one source, as `tapeflow produce` does: a marker
    for every key after each step, published once the step's records are acknowledged.

    ``published`` and ``published_trades`` count what the broker acknowledged; they only grow, and
    another thread may read them."""

    def __init__(
        self, bootstrap: str, serde: AvroSerde, prefix: str, session: Sequence[SessionRecord], source: str = "test-feed"
    ) -> None:
        self.session = session
        self.publisher = Publisher(bootstrap, serde, PublishMetrics(), topic_prefix=prefix)
        self.markers = ProgressMarkers(self.publisher, source, ENGINE_INPUTS)
        self.keys = sorted({r.key for r in session})
        self.published = 0  # records of the session acknowledged, in session order
        self.published_trades = 0

    def publish(self, start: int, stop: int, step: int, pace: Callable[[], None] | None = None) -> None:
        """Records ``start:stop`` in steps of ``step`` records; after each step (flushed, its markers
        out) ``pace()`` runs, and may block to hold the source back."""
        total = len(self.session)
        for i in range(start, stop, step):
            end = min(i + step, stop)
            for r in self.session[i:end]:
                self.publisher.publish(r.topic, r.key, r.value)
            if end < total:  # the session is in time order: everything before the next record's time is out
                for key in self.keys:
                    self.markers.mark(key, self.session[end].time_ms - 1)
            remaining = self.publisher.flush(30)
            assert remaining == 0, f"{remaining} records not delivered within 30 s"
            self.markers.publish_ready()
            self.published_trades += sum(1 for r in self.session[i:end] if r.topic == "md.trades")
            self.published = end
            if pace is not None:
                pace()

    def finish(self) -> None:
        """Every key's final marker (the engine stops waiting for this source), once all is delivered."""
        unpublished = self.markers.finish(self.keys)
        assert unpublished == 0, f"{unpublished} progress markers not published"
        assert not self.publisher.failed, f"records given up: {self.publisher.failed[:3]}"

    def start(self, step: int, pace: Callable[[], None] | None = None) -> None:
        """The whole session (`publish`, then `finish`) on a thread of its own; `check` raises what it
        raised, `join` waits for its end."""
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                self.publish(0, len(self.session), step, pace)
                self.finish()
            except BaseException as exc:  # the test's thread reports it (check, join)
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, name="session-feed", daemon=True)
        self.thread.start()

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def check(self) -> None:
        assert not self.errors, f"the feed failed: {self.errors!r}"

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the feed did not finish within {timeout} s"
        self.check()


def partition_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition of ``topic``, its end offset (high watermark): what a group that consumed
    everything commits, on a topic no transactional producer wrote."""
    from confluent_kafka import Consumer, TopicPartition

    from tapeflow_runtime.kafka_client import consumer_config, topic_metadata

    consumer = Consumer(consumer_config(bootstrap))
    try:
        partitions = topic_metadata(consumer, topic, timeout_s=10.0).partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()


def stable_offsets_client(bootstrap: str, group: str):
    """A client of ``group`` for `tests.support.kafka.committed_offsets` that is answered while a
    transaction holding offsets of the group is open (a killed exactly-once engine's, until its
    successor fences it): read_committed, librdkafka asks for stable offsets only, and the broker
    refuses to answer (UNSTABLE_OFFSET_COMMIT) until that transaction ends, which on a loaded machine
    took longer than a question's 30 s. Read uncommitted, it gets the offsets committed so far."""
    from confluent_kafka import Consumer

    from tapeflow_runtime.kafka_client import consumer_config

    return Consumer(consumer_config(bootstrap, group_id=group, **{"isolation.level": "read_uncommitted"}))


class OpenTransactionRecords:
    """How many records of open transactions are in the log of ``topics`` (every partition): per
    partition its end read uncommitted (the high watermark) minus its end read committed (the last
    stable offset, which stops at the first open transaction's first record); 0 when none is open.

    What an exactly-once test kills an engine on to kill it mid-batch: its open transaction then holds
    outputs already in the log, which its death must leave aborted. One ListOffsets request per
    isolation level and question (the admin client asks for every partition at once)."""

    def __init__(self, bootstrap: str, topics: Sequence[str], partitions: int) -> None:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        from tapeflow_runtime.kafka_client import admin_client

        self.admin = admin_client(bootstrap)
        self.request = {TopicPartition(t, p): OffsetSpec.latest() for t in topics for p in range(partitions)}

    def _ends(self, isolation_level) -> dict[tuple[str, int], int]:
        futures = self.admin.list_offsets(self.request, isolation_level=isolation_level, request_timeout=10)
        return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}

    def __call__(self) -> int:
        from confluent_kafka import IsolationLevel

        # the high watermark first: a partition's records below it and past the stable end asked after
        # it were in a transaction still open at the second question (one committed in between counts 0)
        written = self._ends(IsolationLevel.READ_UNCOMMITTED)
        stable = self._ends(IsolationLevel.READ_COMMITTED)
        return sum(max(0, written[tp] - stable[tp]) for tp in written)


def wait_for_distinct(
    bootstrap: str, topic: str, serde: AvroSerde, field: str, count: int, timeout: float, workers: Sequence = ()
) -> None:
    """Until ``count`` distinct values of ``field`` are on ``topic``, read committed (outputs of open or
    aborted transactions do not count). One consumer reads on from where it was, so each record is
    fetched and decoded once: reading the whole topic again every half second (the 9,600 features of a
    40-minute session, for as long as a loaded engine takes) cost the waiting test more CPU than the
    engine it waited for. ``workers`` (``.proc``, ``.name``, ``.log()``): fail at once when one dies."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from tapeflow_runtime.kafka_client import consumer_config, topic_metadata

    consumer = Consumer(consumer_config(bootstrap))
    try:
        partitions = topic_metadata(consumer, topic, timeout_s=10.0).partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        seen: set = set()
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            for message in consumer.consume(1000, 0.5):
                if message.error() is None:
                    seen.add(serde.decode(message.value())[field])
            for w in workers:
                assert w.proc.poll() in (None, 0), f"{w.name} died:\n{w.log()[-3000:]}"
            if len(seen) < count and time.monotonic() > deadline:
                logs = "\n".join(f"--- {w.name}:\n{w.log()[-3000:]}" for w in workers)
                raise AssertionError(f"only {len(seen)} of {count} {field}s on {topic} after {timeout} s\n{logs}")
    finally:
        consumer.close()
