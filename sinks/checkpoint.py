"""The sink's one checkpoint: a partition's Kafka offset is committed only once every row it covers is
durable in PostgreSQL, whatever order the parallel writers' transactions finish in.

Batches are numbered as the consumer thread hands them to the writers, per assignment *generation*
(a rebalance that takes the partitions starts a new one). The writers hand committed batches back in
any order; only the unbroken prefix of committed numbers is released, and its newest offset per
partition is committed in one call. A partition's offsets grow with the batch number, so a batch
that is not committed (the database down, a writer that gave up at stop) holds back every later
batch's offsets: nothing after it can be lost. A batch of an earlier generation is in the database
but its offsets are left to the re-delivery (the new owner reads from the group's committed offset,
and every write is idempotent on natural keys).

The numbering lives here and only here (the pattern of Quix Streams' checkpoint: the sinks write
batches, one module decides when their source offsets may be committed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from confluent_kafka import TopicPartition


class Numbered(Protocol):
    """What the checkpoint needs of a batch: its number and, per (topic, partition), the offset to commit
    (the next one to read) once it is in the database."""

    seq: tuple[int, int]
    offsets: dict[tuple[str, int], int]


class OffsetCheckpoint:
    """The offset watermark of one consumer (used from its consumer thread only)."""

    def __init__(self) -> None:
        self.generation = 0
        self._next_seq = 0  # number of the next batch handed to the writers
        self._next_commit = 0  # lowest number whose offsets are not committed yet
        self._finished: dict[int, Numbered] = {}  # in the database, waiting for earlier batches

    def stamp(self, batch: Numbered) -> None:
        """Give ``batch`` the next number (again, if a rebalance happened while it waited to be handed over)."""
        batch.seq = (self.generation, self._next_seq)

    def handed(self) -> None:
        """The stamped batch reached the writers: the next one gets the next number."""
        self._next_seq += 1

    def written(self, batch: Numbered) -> None:
        """A writer committed ``batch`` to the database."""
        generation, number = batch.seq
        if generation == self.generation:
            self._finished[number] = batch

    def ready(self) -> list[Numbered]:
        """The batches whose offsets may be committed now: the unbroken prefix, in number order."""
        out = []
        while self._next_commit in self._finished:
            out.append(self._finished.pop(self._next_commit))
            self._next_commit += 1
        return out

    def reset(self) -> None:
        """The partitions were revoked: a new generation, numbering starts again."""
        self.generation += 1
        self._next_seq = self._next_commit = 0
        self._finished.clear()


def newest_offsets(batches: Iterable[Numbered]) -> list[TopicPartition]:
    """The offsets to commit for consecutive ``batches``: the newest per partition (later batches hold
    later offsets of a partition)."""
    newest: dict[tuple[str, int], int] = {}
    for batch in batches:
        newest.update(batch.offsets)
    return [TopicPartition(t, p, o) for (t, p), o in newest.items()]
