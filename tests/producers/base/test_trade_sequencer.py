"""aggTrade continuity: ordered, gap-free publication, explicit give-up, duplicates dropped."""

from __future__ import annotations

from producers.base.sequencer import AggTradeSequencer, Gap


def t(i: int) -> dict:
    return {"agg_id": i, "symbol": "BTCUSDT"}


def ids(trades):
    return [x["agg_id"] for x in trades]


def test_consecutive_trades_pass_straight_through():
    s = AggTradeSequencer("BTCUSDT")
    assert ids(s.offer_many([t(100), t(101), t(102)])) == [100, 101, 102]
    assert s.gap is None and s.counters.published == 3


def test_gap_holds_newer_trades_until_rest_fills_it():
    s = AggTradeSequencer("BTCUSDT", last_id=99)
    assert ids(s.offer(t(100))) == [100]
    assert s.offer(t(104)) == [] and s.offer(t(105)) == []
    assert s.gap == Gap("BTCUSDT", 101, 103)
    # REST answers from fromId=101, overlapping the held trades (104, 105 are duplicates)
    released = s.offer_many([t(101), t(102), t(103), t(104), t(105)])
    assert ids(released) == [101, 102, 103, 104, 105]
    assert s.gap is None
    assert (s.counters.gaps_detected, s.counters.gaps_filled, s.counters.duplicates) == (1, 1, 2)


def test_partial_fill_then_second_gap_counts_two_gaps():
    s = AggTradeSequencer("BTCUSDT", last_id=0)
    s.offer(t(5))  # gap 1..4
    s.offer(t(9))  # held behind a second hole 6..8
    assert ids(s.offer_many([t(1), t(2)])) == [1, 2]  # partial REST page
    assert s.gap == Gap("BTCUSDT", 3, 4)
    assert ids(s.offer_many([t(3), t(4)])) == [3, 4, 5]
    assert s.gap == Gap("BTCUSDT", 6, 8)
    assert s.counters.gaps_detected == 2 and s.counters.gaps_filled == 1


def test_unfillable_gap_is_given_up_explicitly():
    s = AggTradeSequencer("BTCUSDT", last_id=10)
    s.offer(t(15))
    gap, released = s.give_up(s.gap)
    assert gap == Gap("BTCUSDT", 11, 14) and ids(released) == [15]
    assert s.counters.gaps_given_up == 1 and s.counters.ids_given_up == 4
    assert ids(s.offer(t(16))) == [16]


def test_duplicates_and_old_ids_are_dropped():
    s = AggTradeSequencer("BTCUSDT")
    s.offer_many([t(1), t(2)])
    assert s.offer(t(2)) == [] and s.offer(t(1)) == []
    assert s.counters.duplicates == 2


def test_held_trades_are_bounded():
    s = AggTradeSequencer("BTCUSDT", last_id=0, max_held=3)
    for i in range(10, 13):
        assert s.offer(t(i)) == []
    released = s.offer(t(13))  # the 4th held trade exceeds the bound: the hole 1..9 is given up
    assert ids(released) == [10, 11, 12, 13] and s.counters.ids_given_up == 9


def test_an_anchored_chain_starts_at_the_first_trade_since_the_start_and_fills_up_to_the_first_frame():
    """A live start whose first frames came late (the first connection timed out before the session
    began): REST says the first trade since the start was 1,000, the stream's first is 1,060."""
    s = AggTradeSequencer("BTCUSDT", anchoring=True)
    assert s.offer_many([t(1_060), t(1_061), t(1_063)]) == []  # held, not published, until anchored
    assert s.gap is None
    assert s.anchor(1_000) == []
    assert s.gap == Gap("BTCUSDT", 1_000, 1_059) and s.counters.gaps_detected == 1
    released = s.offer_many([t(i) for i in range(1_000, 1_063)])  # REST pages from fromId=1000
    assert ids(released) == list(range(1_000, 1_064))
    assert s.gap is None and s.counters.duplicates == 2  # 1060 and 1061 came twice


def test_an_anchor_at_or_after_the_first_frame_changes_nothing_and_none_starts_at_the_first_held():
    s = AggTradeSequencer("BTCUSDT", anchoring=True)
    s.offer_many([t(500), t(501)])
    assert ids(s.anchor(500)) == [500, 501] and s.gap is None
    s = AggTradeSequencer("BTCUSDT", anchoring=True)
    s.offer_many([t(500), t(502)])
    assert ids(s.anchor(None)) == [500]  # REST did not answer: as without an anchor
    assert s.gap == Gap("BTCUSDT", 501, 501)
    s = AggTradeSequencer("BTCUSDT", anchoring=True)
    assert s.anchor(42) == [] and s.last_id == 41  # anchored before any frame: the chain starts at 42
    assert ids(s.offer(t(42))) == [42]
