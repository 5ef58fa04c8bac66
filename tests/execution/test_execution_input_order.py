"""The executor's input order (`execution.input_order`): event time across topics, offset order within one."""

from __future__ import annotations

from execution.input_order import InputAligner

TOPICS = ("signals", "md.trades", "md.book", "md.mark")


def drained(aligner: InputAligner, partition: int = 0, force: bool = False) -> list[tuple[str, int]]:
    return [(h.topic, h.time) for h in aligner.release(partition, force=force)]


def test_a_signal_goes_before_the_trades_at_and_after_its_time_however_it_was_read():
    a = InputAligner(TOPICS)
    for i, t in enumerate((900, 1000, 1000, 1500, 2500)):  # an hour of trades read before the signal
        a.add("md.trades", 0, t, i, f"trade{t}")
    a.add("md.mark", 0, 950, 0, "mark")
    assert drained(a) == []  # the signals and book topics have said nothing yet
    a.at_end("md.book", 0)
    a.add("signals", 0, 1000, 0, "signal")
    # md.mark has said nothing newer than 950: up to there
    assert drained(a) == [("md.trades", 900), ("md.mark", 950)]
    a.at_end("md.mark", 0)
    # now signals' newest (1000) bounds it: in time order, the signal first among equal times
    assert drained(a) == [("signals", 1000), ("md.trades", 1000), ("md.trades", 1000)]
    a.at_end("signals", 0)
    assert drained(a) == [("md.trades", 1500), ("md.trades", 2500)]  # every other topic at its end


def test_within_a_topic_partition_offsets_leave_in_order_and_partitions_are_independent():
    a = InputAligner(TOPICS)
    a.add("md.trades", 0, 2000, 0, "later symbol A")  # two symbols share the partition
    a.add("md.trades", 0, 1000, 1, "earlier symbol B")
    a.add("md.trades", 1, 500, 0, "other partition")
    for topic in ("signals", "md.book", "md.mark"):
        a.add(topic, 0, 1500, 0, topic)
    out = a.release(0)
    # the trade at 1000 sits behind the one at 2000 (offset order): neither is due before 2000 is
    assert [(h.topic, h.offset) for h in out] == [("signals", 0), ("md.mark", 0), ("md.book", 0)]  # equal times: rank
    assert a.held(0) == 2 and a.held(1) == 1
    assert [h.offset for h in a.release(0, force=True)] == [0, 1]
    assert a.release(1) == [] and [h.item for h in a.release(1, force=True)] == ["other partition"]


def test_live_nothing_is_held_once_every_topic_is_at_its_end():
    a = InputAligner(TOPICS)
    for topic in TOPICS:
        a.at_end(topic, 3)
    a.add("md.trades", 3, 7000, 10, "fresh trade")
    a.at_end("md.trades", 3)
    assert drained(a, 3) == [("md.trades", 7000)]
