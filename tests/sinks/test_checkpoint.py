"""The sink's checkpoint alone (`sinks.checkpoint`): offsets only for the unbroken prefix of batches in
the database, per assignment generation; the newest offset per partition."""

from __future__ import annotations

from dataclasses import dataclass, field

from sinks.checkpoint import OffsetCheckpoint, newest_offsets


@dataclass
class B:
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    seq: tuple[int, int] = (0, -1)


def handed(cp: OffsetCheckpoint, n: int) -> list[B]:
    out = []
    for _ in range(n):
        b = B()
        cp.stamp(b)
        cp.handed()
        out.append(b)
    return out


def test_only_the_unbroken_prefix_is_released_in_number_order():
    cp = OffsetCheckpoint()
    b0, b1, b2, b3 = handed(cp, 4)
    assert [b.seq for b in (b0, b1, b2, b3)] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    cp.written(b2)
    cp.written(b1)
    assert cp.ready() == []  # batch 0 is not in the database: nothing after it may be committed
    cp.written(b0)
    assert cp.ready() == [b0, b1, b2]
    assert cp.ready() == []  # released once
    cp.written(b3)
    assert cp.ready() == [b3]


def test_a_rebalance_starts_a_new_generation_and_leaves_the_old_ones_offsets_alone():
    cp = OffsetCheckpoint()
    (old,) = handed(cp, 1)
    cp.reset()
    (new,) = handed(cp, 1)
    assert old.seq == (0, 0) and new.seq == (1, 0)
    cp.written(old)  # in the table, but its partitions were taken: the re-delivery commits them
    assert cp.ready() == []
    cp.written(new)
    assert cp.ready() == [new]


def test_a_batch_stamped_again_after_a_rebalance_takes_the_new_generations_number():
    cp = OffsetCheckpoint()
    waiting = B()
    cp.stamp(waiting)  # the queue was full: not handed yet
    cp.reset()
    cp.stamp(waiting)
    cp.handed()
    assert waiting.seq == (1, 0)


def test_the_newest_offset_per_partition_is_committed():
    batches = [B({("t", 0): 10, ("t", 1): 7}), B({("t", 0): 20}), B({("u", 0): 3})]
    got = {(tp.topic, tp.partition): tp.offset for tp in newest_offsets(batches)}
    assert got == {("t", 0): 20, ("t", 1): 7, ("u", 0): 3}
    assert newest_offsets([B()]) == []
