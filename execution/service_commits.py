"""The executor service's input offsets and their commit with the outputs they caused.

Transactional (the default): the offset after each input handled is kept per topic-partition and
committed with everything published since the last commit in one Kafka transaction, then the next
transaction begins. A transaction that held outputs and was aborted raises (`TransactionAborted`): the
executor's state includes what was aborted, and only a restore from the committed cut undoes that. One
that held input offsets only is aborted and the service goes on (the next transaction commits later
offsets). After an assignment, before any of its inputs is handled, the assigned partitions' committed
offsets are committed once more in a transaction of their own, so a fenced zombie learns it there.

Without transactions: offsets are stored as inputs are handled and committed only after every output
is acknowledged, so a crash re-delivers inputs rather than losing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from tapeflow_runtime.offsets import CommittedOffsetError, committed_offsets
from tapeflow_runtime.publisher import Publisher, TransactionAborted, TransactionFenced

log = structlog.get_logger("executor")


class OffsetCommitter:
    """Input offsets of one service and their commit (module docstring). `consumer` is set once the
    service has one; until then a commit does nothing."""

    def __init__(self, publisher: Publisher, transactional: bool) -> None:
        self.publisher = publisher
        self.transactional = transactional
        self.consumer: Consumer | None = None
        # transactional: (topic, partition) -> the offset after the last input handled (committed with the outputs)
        self.handled: dict[tuple[str, int], int] = {}
        self.handled_moved = False  # inputs handled since the last commit
        self.last_commit = 0.0  # monotonic time of the last commit
        self.commits = 0  # transactions committed (tests, benchmarks)
        self.fence_check: list[TopicPartition] | None = None  # an assignment whose producer epoch is unchecked
        # transactional: the metadata committed with every offset (the paper executor's event clock,
        # `execution.event_clock`: restored with the cut it belongs to)
        self.metadata: Callable[[], str | None] | None = None

    def start(self) -> None:
        """Transactional: fence an older executor and abort its open transaction (before any state is
        read), then begin ours."""
        if self.transactional:
            self.publisher.init_transactions()
            self.publisher.begin_transaction()
            self.last_commit = time.monotonic()

    def _live(self) -> Consumer:
        if self.consumer is None:
            raise RuntimeError("the committer has no consumer yet")
        return self.consumer

    def handled_input(self, msg: Any) -> None:
        """An input was handled: its offset goes with the next commit."""
        if self.transactional:
            self.handled[(msg.topic(), msg.partition())] = msg.offset() + 1
            self.handled_moved = True
        else:
            self._live().store_offsets(msg)

    def forget(self, partitions: list[TopicPartition]) -> None:
        """Revoked partitions: their offsets are no longer ours to commit."""
        for tp in partitions:
            self.handled.pop((tp.topic, tp.partition), None)

    def transaction_due(self, interval_ms: int) -> bool:
        """A transaction holding outputs has been open `interval_ms` since the last commit."""
        return (
            self.transactional
            and bool(self.publisher.transaction_records)
            and time.monotonic() - self.last_commit >= interval_ms / 1000
        )

    def commit(self) -> None:
        """Commit consumed input offsets once every output they caused is acknowledged (transactional:
        together with those outputs, in the open transaction, and begin the next)."""
        if self.consumer is None:
            return
        if self.transactional:
            self.commit_transaction()
            return
        remaining = self.publisher.flush(10)
        if remaining or not self.publisher.healthy:
            log.error(
                "outputs not delivered; input offsets not committed",
                undelivered=remaining,
                failed=len(self.publisher.failed),
            )
            return
        try:
            self.consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("offset commit failed", error=exc.args[0].str())

    def commit_transaction(self) -> None:
        """Commit the open transaction with the offsets after the inputs handled so far, then begin the
        next. Raises `TransactionAborted` (aborted: nothing of it is visible) or `TransactionFenced`."""
        if self.consumer is None or not self.publisher.in_transaction:
            return
        if self.handled_moved or self.publisher.transaction_records:
            meta = self.metadata() if self.metadata is not None else None  # the state this cut belongs with
            offsets = [  # (confluent-kafka refuses metadata=None)
                TopicPartition(t, p, offset) if meta is None else TopicPartition(t, p, offset, metadata=meta)
                for (t, p), offset in self.handled.items()
            ]
            try:
                self.publisher.commit_transaction(offsets, self.consumer.consumer_group_metadata())
            except TransactionAborted as exc:
                if self.publisher.transaction_records:
                    raise  # outputs were aborted: the in-memory state includes them, only a restore undoes that
                # offsets alone (inputs that published nothing): no state to undo, and offsets only move
                # forward, so the next transaction commits these with its own. A broker that stopped
                # answering ends here; exiting would only get us restarted into the same outage.
                log.warning("input offsets not committed: they go with the next transaction", error=str(exc))
                self.publisher.begin_transaction()
                self.last_commit = time.monotonic()
                return
            self.handled_moved = False
            self.commits += 1
            self.publisher.begin_transaction()
        self.last_commit = time.monotonic()

    def abort_quietly(self) -> None:
        """On the way out after a failure: abort what is open (a fenced producer cannot; the broker does)."""
        try:
            self.publisher.abort_transaction(5)
        except (TransactionFenced, KafkaException) as exc:
            log.info("open transaction left to the broker to abort", error=str(exc))

    def check_fence_pending(self) -> None:
        """Run the fencing check of the last assignment, if one is pending (`check_not_fenced`)."""
        if self.fence_check is not None:
            assigned, self.fence_check = self.fence_check, None
            self.check_not_fenced(self._live(), assigned)

    def check_not_fenced(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit the assigned partitions' committed offsets again in a transaction of their own: a
        no-op for the group, but the transaction coordinator checks our producer epoch. An executor
        stopped (SIGSTOP, a long pause) while a newer one took over rejoins the group when it wakes; with
        nothing left to handle it would never publish, never learn it was fenced, and keep partitions
        from its successor (which then blocks new entries as not the sole writer). Raises
        `TransactionFenced` for such a zombie."""
        try:
            committed = [tp for tp in committed_offsets(consumer, partitions, 10) if tp.offset >= 0]
        except (KafkaException, CommittedOffsetError) as exc:
            log.warning("committed offsets not read: producer epoch not checked on assignment", error=str(exc))
            return
        if not committed:
            return
        try:
            # bounded well below the group's max poll interval: it runs between two polls of the loop
            self.publisher.commit_transaction(committed, consumer.consumer_group_metadata(), timeout=10.0)
        except TransactionAborted as exc:  # a broker still recovering (not a fencing): checked at the next commit
            log.warning("producer epoch not checked on assignment", error=str(exc))
        self.publisher.begin_transaction()
