"""``StarvationWatch``: a partition whose end offset moves while its consumer's position does not is
starving; progress, idleness and being caught up are not."""

from __future__ import annotations

import pytest

from tapeflow_runtime.starvation import StarvationWatch

P = "md.trades[1]"


def feed(watch, samples):
    for now, position, end in samples:
        watch.observe(now, {P: (position, end)})


def test_end_moving_while_the_position_stands_still_is_starving_after_the_window():
    watch = StarvationWatch(window_s=30)
    feed(watch, [(0, 28_216, 28_300), (10, 28_216, 35_000), (29, 28_216, 41_000)])
    assert watch.starving() == []  # not yet 30 s
    feed(watch, [(30, 28_216, 56_756)])
    (found,) = watch.starving()
    assert (found.position, found.end_then, found.end_now, found.for_s) == (28_216, 28_300, 56_756, 30)
    assert watch.reason() == ("md.trades[1] not receiving: position 28,216 for 30 s while the end offset "
                              "moved 28,300 -> 56,756")
    feed(watch, [(31, 28_400, 56_800)])  # it moves again: receiving
    assert watch.reason() is None


def test_a_slow_consumer_that_keeps_moving_is_not_starving():
    watch = StarvationWatch(window_s=30)
    feed(watch, [(t, 1_000 + t, 100_000 + 1_000 * t) for t in range(0, 300, 5)])
    assert watch.starving() == []


@pytest.mark.parametrize("samples", [
    [(0, 500, 500), (100, 500, 500)],  # caught up, nothing new
    [(0, 500, 400), (100, 500, 490)],  # Tansu: the end counts batches, a reader of everything is past it
    [(0, 400, 500), (100, 400, 500)],  # behind, but the end does not move (a consumer paused by rebalance)
])
def test_idle_or_caught_up_partitions_are_not_starving(samples):
    watch = StarvationWatch(window_s=30)
    feed(watch, samples)
    assert watch.reason() is None


def test_unknown_values_keep_the_last_and_revoked_partitions_are_forgotten():
    watch = StarvationWatch(window_s=30)
    watch.observe(0, {P: (10, 20), "md.book[1]": (None, None)})
    watch.observe(40, {P: (None, 90), "md.book[1]": (5, None)})  # broker answered the end only
    assert [s.partition for s in watch.starving()] == [P]
    watch.observe(41, {"md.book[1]": (5, 7)})  # P revoked
    assert watch.starving() == []


def test_the_worst_partition_is_named_and_the_others_counted():
    watch = StarvationWatch(window_s=10)
    watch.observe(0, {"a[0]": (1, 2), "b[0]": (1, 2), "c[0]": (1, 2)})
    watch.observe(20, {"a[0]": (1, 50), "b[0]": (1, 9_000), "c[0]": (30, 60)})
    assert watch.reason().startswith("b[0] not receiving") and watch.reason().endswith("(and 1 more partitions)")


def test_the_window_must_be_positive():
    with pytest.raises(ValueError, match="window_s"):
        StarvationWatch(window_s=0)


def test_a_fetch_position_below_a_standing_end_is_starving_after_the_window():
    """The takeover stall: every record was produced before the worker took the partition over, so
    the end offset never moves. A fetch position passes transaction markers, so one that stays below
    the end has records it is not given; a delivered/committed position may sit below a marker."""
    watch = StarvationWatch(window_s=30)
    watch.observe(0, {P: (4_100, 6_000)}, fetch_positioned={P})
    watch.observe(29, {P: (4_100, 6_000)}, fetch_positioned={P})
    assert watch.starving() == []  # not yet 30 s
    watch.observe(30, {P: (4_100, 6_000)}, fetch_positioned={P})
    assert watch.reason() == "md.trades[1] not receiving: fetch position 4,100 below the end offset 6,000 for 30 s"
    watch.observe(31, {P: (4_100, 6_000)})  # the same numbers as a committed position: idle, not starving
    assert watch.reason() is None
    watch.observe(32, {P: (5_000, 6_000)}, fetch_positioned={P})  # it moves: receiving
    assert watch.reason() is None


@pytest.mark.parametrize("position", [6_000, 6_050])
def test_a_fetch_position_at_or_past_its_end_is_not_starving(position):
    watch = StarvationWatch(window_s=30)
    for now in (0, 40, 80):
        watch.observe(now, {P: (position, 6_000)}, fetch_positioned={P})
    assert watch.reason() is None


def test_a_phase_without_progress_for_the_window_is_stuck_and_progress_or_its_end_clears_it():
    from tapeflow_runtime.starvation import StuckPhaseWatch

    watch = StuckPhaseWatch(window_s=60, what="rebalancing")
    watch.observe(0, True, (7, 0))
    watch.observe(59, True, (7, 0))
    assert watch.reason() is None
    watch.observe(60, True, (7, 0))
    assert watch.reason() == "rebalancing for 60 s, no progress for 60 s"
    watch.observe(65, True, (7, 12))  # recovery read something
    assert watch.reason() is None
    watch.observe(130, True, (7, 12))
    assert watch.reason() == "rebalancing for 130 s, no progress for 65 s"
    watch.observe(131, False)
    watch.observe(500, False)
    assert watch.reason() is None
    watch.observe(501, True, (8, 0))  # a new phase starts its own clock
    watch.observe(560, True, (8, 0))
    assert watch.reason() is None


def test_a_long_phase_that_keeps_progressing_is_never_stuck():
    from tapeflow_runtime.starvation import StuckPhaseWatch

    watch = StuckPhaseWatch(window_s=30)
    for now in range(0, 600, 10):
        watch.observe(now, True, now // 20)
        assert watch.reason() is None
