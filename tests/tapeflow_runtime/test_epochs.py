"""Topic epochs: names, the state file the supervisor writes and producers follow."""

from __future__ import annotations

import pytest

from tapeflow_runtime.epochs import (
    STEPS,
    ChainLink,
    EpochCursor,
    EpochState,
    ProducePrefix,
    ReadPositions,
    epoch_slot,
    load_carried,
    save_carried,
    slot_prefix,
)


def epoch_prefix(base: str, epoch: int) -> str:
    return slot_prefix(base, epoch_slot(epoch))


def test_epochs_take_turns_on_the_plain_names_and_one_other_set():
    assert epoch_prefix("", 0) == "" and epoch_prefix("team.", 0) == "team."
    assert [epoch_prefix("", e) for e in range(1, 7)] == ["e1.", "", "e1.", "", "e1.", ""]
    assert epoch_prefix("team.", 12) == "team." and epoch_prefix("team.", 13) == "team.e1."
    for epoch in range(50):  # a rollover's new epoch never has the names of the one it drains
        assert epoch_prefix("s.", epoch + 1) != epoch_prefix("s.", epoch)
    with pytest.raises(ValueError):
        epoch_prefix("", -1)


def test_producers_move_to_the_next_epoch_from_the_switch_step_on():
    state = EpochState(epoch=4)
    assert state.produce_epoch() == 4 and not state.rolling
    for step in STEPS:
        state.step = step
        expected = 4 if STEPS.index(step) < STEPS.index("switch") else 5
        assert state.produce_epoch() == expected, step


def test_the_state_file_round_trips_and_a_missing_file_is_epoch_zero(tmp_path):
    path = tmp_path / "epochs.json"
    assert EpochState.load(path) == EpochState()
    state = EpochState(epoch=2, step="engine", started_at=1.5, rollovers=2)
    state.save(path)
    assert EpochState.load(path) == state
    path.write_text('{"epoch": 1, "step": "teleport"}')
    with pytest.raises(ValueError, match="teleport"):
        EpochState.load(path)


def test_produce_prefix_follows_the_file_and_reads_it_at_most_every_interval(tmp_path):
    path = tmp_path / "epochs.json"
    clock = [0.0]
    follow = ProducePrefix(path, "s.", interval_s=1.0, monotonic=lambda: clock[0])
    assert follow() == "s."
    EpochState(epoch=0, step="switch").save(path)
    assert follow() == "s."  # not looked at again within the interval
    clock[0] = 1.0
    assert follow() == "s.e1."
    EpochState(epoch=1, step="engine").save(path)  # the producer's epoch from here: 2
    clock[0] = 1.5
    assert follow() == "s.e1."
    clock[0] = 2.0
    assert follow() == "s."  # epoch 2 takes the plain names again


def test_slots_go_to_the_lowest_name_no_kept_segment_holds_and_come_back_once_it_is_deleted():
    """With retention, finished epochs keep their names as segments; a new epoch takes the lowest free
    slot (Tansu keeps a little of every deleted name for ever, so names are reused, not invented)."""
    state = EpochState()
    slots = [state.current_slot]
    for i in range(4):  # four rollovers, every finished epoch kept
        state.step, state.next_slot = "open", state.free_slot()
        state.close_current({"md.trades": {0: 10 * (i + 1)}}, closed_at=100.0 + i, last_ms=None, keep=True)
        slots.append(state.current_slot)
    assert slots == [0, 1, 2, 3, 4]
    assert [s.slot for s in state.segments] == [0, 1, 2, 3] and state.epoch == 4
    # logical offsets count every segment's records: 10 + 20 + 30 + 40
    assert state.bases == {"md.trades": {0: 100}}
    assert [s.bases for s in state.segments] == [{}, {"md.trades": {0: 10}}, {"md.trades": {0: 30}},
                                                 {"md.trades": {0: 60}}]
    # the retention takes epochs 0 and 1: their slots are the lowest free ones again
    assert [s.epoch for s in state.expired(now=101.5 + 3600, retention_s=3600)] == [0, 1]
    state.segments = state.segments[2:]
    assert state.free_slot() == 0
    state.step, state.next_slot = "open", state.free_slot()
    assert state.prefix("team.", state.next_epoch) == "team." and state.prefix("team.") == "team.e4."
    assert state.prefix("team.", 2) == "team.e2."  # a kept segment keeps its name
    with pytest.raises(ValueError):
        state.prefix("team.", 0)  # deleted: no name any more
    assert state.expired(now=1e12, retention_s=None) == []  # retention forever


def test_without_retention_the_slots_alternate_as_before():
    state = EpochState()
    for _ in range(5):
        state.step, state.next_slot = "open", state.free_slot()
        state.close_current({}, closed_at=1.0, last_ms=None, keep=False)
    assert state.epoch == 5 and state.current_slot == 1 and state.segments == []


def test_a_file_from_before_slots_keeps_its_names_and_the_chain_reads_segments_then_current_then_next(tmp_path):
    path = tmp_path / "epochs.json"
    path.write_text('{"epoch": 3, "step": null, "started_at": null, "rollovers": 3}')
    old = EpochState.load(path)
    assert old.current_slot == 1 and old.prefix("") == "e1."  # epoch % 2, as the two-slot scheme named it
    from tapeflow_runtime.epochs import Segment

    state = EpochState(epoch=7, slot=0, step="engine", next_slot=2, starts={"signals": {0: 4}},
                       bases={"md.trades": {0: 50}}, next_starts={"signals": {0: 9}},
                       segments=[Segment(6, 1, 10.0, ends={"md.trades": {0: 50}}, last_ms=123)])
    state.save(path)
    assert EpochState.load(path) == state  # partitions round-trip as ints
    chain = state.chain("t.")
    assert chain.prefixes == ["t.e1.", "t.", "t.e2."]
    assert [link.closed for link in chain.links] == [True, False, False]
    names = ["md.trades", "signals"]
    assert chain.locate("t.e2.md.trades", names)[1] == "md.trades" and chain.locate("t.md.trades", names)[0].epoch == 7
    assert chain.locate("t.e3.md.trades", names) is None and chain.locate("t.md.book", names) is None
    # the next epoch's md.* are readable from the switch on; its carried topics once the executor's
    # state is carried into it; nothing before the switch
    assert chain.links[2].readable("md.trades") and not chain.links[2].readable("signals")
    assert [n for n in ("md.trades", "features", "positions", "orders", "fills", "risk.events", "signals")
            if chain.links[2].readable(n)] == ["md.trades", "features"]
    state.step = "open"
    assert not state.chain("t.").links[2].readable("md.trades")
    state.step = "sink"
    assert state.chain("t.").links[2].readable("signals") and state.chain("t.").links[2].readable("md.trades")
    assert chain.links[1].logical("md.trades", 0, 5) == 55 and chain.links[1].start("signals", 0) == 4


def test_a_follower_adds_the_next_segment_once_readable_and_leaves_a_finished_one_once_read_to_its_end():
    from tapeflow_runtime.epochs import ChainFollower

    state = EpochState(epoch=0, slot=0)
    clock = [0.0]
    follower = ChainFollower(["signals"], lambda: state.chain(""), interval_s=1.0, monotonic=lambda: clock[0])
    assert follower.reading == ["signals"] and not follower.due()
    clock[0] = 1.0
    assert follower.due() and not follower.due()
    positions = {("signals", 0): 3}
    ask = lambda topics, link: {tp: off for tp, off in positions.items() if tp[0] in topics}  # noqa: E731
    state.step, state.next_slot = "engine", 1
    assert follower.update(ask) is None  # the next epoch's signals are not readable before the carry
    state.step, state.next_starts = "sink", {"signals": {0: 2}}
    assert follower.update(ask) == (["signals", "e1.signals"], ["e1.signals"])
    assert follower.link_of("e1.signals").start("signals", 0) == 2 and follower.catalogue_name("e1.signals") == "signals"
    state.close_current({"signals": {0: 5}}, closed_at=1.0, last_ms=None, keep=True)
    assert follower.update(ask) is None  # position 3 of 5: the finished segment is still read
    positions[("signals", 0)] = 5
    assert follower.update(ask) == (["e1.signals"], [])
    assert follower.reading == ["e1.signals"]


def test_a_follower_retargeted_reads_the_open_segments_of_new_names_and_drops_the_old_names_topics():
    """The UI's follower: the names it reads change with the open pages, mid-rollover too."""
    from tapeflow_runtime.epochs import ChainFollower

    state = EpochState(epoch=0, slot=0, step="sink", next_slot=1, next_starts={"signals": {0: 2}})
    follower = ChainFollower([], lambda: state.chain(""), interval_s=0.0)
    assert follower.reading == []
    assert follower.retarget(["signals"]) == ["signals", "e1.signals"]  # both open segments: the rolling one too
    assert follower.reading == ["signals", "e1.signals"]
    assert follower.retarget(["signals", "xv.pairs"]) == ["xv.pairs", "e1.xv.pairs"]
    assert follower.reading == ["signals", "e1.signals", "xv.pairs", "e1.xv.pairs"]
    assert follower.retarget(["xv.pairs"]) == []
    assert follower.reading == ["xv.pairs", "e1.xv.pairs"] and follower.catalogue_name("e1.xv.pairs") == "xv.pairs"
    assert follower.catalogue_name("e1.signals") is None


def test_a_follower_of_market_data_reads_the_next_epoch_from_the_switch_while_its_carried_topics_wait():
    """The sink must not wait for the executor's drain of the old epoch to read the new md.trades (at
    max replay speed that drain took a minute, and the sink fell that far behind at every rollover)."""
    from tapeflow_runtime.epochs import ChainFollower

    state = EpochState(epoch=0, slot=0, step="open", next_slot=1)
    follower = ChainFollower(["md.trades", "signals"], lambda: state.chain(""), interval_s=0.0)
    ask = lambda topics, link: {}  # noqa: E731 - no finished segment here
    assert follower.update(ask) is None  # created, nothing written there yet
    state.step = "switch"
    assert follower.update(ask) == (["md.trades", "signals", "e1.md.trades"], ["e1.md.trades"])
    state.step = "executor"
    assert follower.update(ask) is None
    state.step, state.next_starts = "sink", {"signals": {0: 2}}
    assert follower.update(ask) == (["md.trades", "signals", "e1.md.trades", "e1.signals"], ["e1.signals"])


def test_an_in_process_consumer_moves_on_at_its_own_step_and_a_restart_finds_where_it_stood(tmp_path):
    path = tmp_path / "epochs.json"
    clock = [0.0]
    EpochState(epoch=3, slot=1).save(path)
    engine = EpochCursor(path, "t.", "tapeflow-engine", "engine", monotonic=lambda: clock[0])
    executor = EpochCursor(path, "t.", "tapeflow-executor-paper", "executor", monotonic=lambda: clock[0])
    asked = []

    def started(group, prefix):
        asked.append((group, prefix))
        return True

    assert engine.first(started) == (3, "t.e1.") and asked == []  # no rollover: nothing to ask
    for step, engine_done, executor_done in [("open", False, False), ("switch", False, False),
                                             ("engine", True, False), ("executor", True, True)]:
        state = EpochState.load(path)
        state.step, state.next_slot = step, 0
        state.save(path)
        clock[0] += 1
        assert (engine.finished(3) == (4, "t.")) is engine_done, step
        assert (executor.finished(3) == (4, "t.")) is executor_done, step
    # restarted at the executor step: the engine runs epoch 4 once its group was started there, the
    # executor too; a group not started yet means the carry is not done: epoch 3 again
    assert engine.first(started) == (4, "t.") and asked == [("t.tapeflow-engine", "t.")]
    assert executor.first(lambda group, prefix: False) == (3, "t.e1.")
    # a rollover that was closed meanwhile: move on to the current epoch
    state = EpochState.load(path)
    state.close_current({}, 10.0, None, keep=True)
    state.save(path)
    clock[0] += 1
    assert engine.finished(3) == (4, "t.") and engine.finished(4) is None
    with pytest.raises(ValueError):
        EpochCursor(path, "", "g", "teleport")


def test_the_executors_carry_is_recorded_per_epoch(tmp_path):
    assert load_carried(tmp_path, 5) is None
    save_carried(tmp_path, 5, {"signals": {0: 3, 2: 1}, "positions": {}})
    assert load_carried(tmp_path, 5) == {"signals": {0: 3, 2: 1}, "positions": {}}
    assert load_carried(tmp_path, 6) is None and load_carried(tmp_path, 5, "engine") is None
    save_carried(tmp_path, 6, {}, "engine")
    assert load_carried(tmp_path, 6, "engine") == {} and load_carried(tmp_path, 5) is not None


def test_read_positions_answer_offsets_and_past_the_end_only_for_an_end_reached_after_the_close():
    clock = iter([100.0, 200.0])
    at = ReadPositions(now=lambda: next(clock))
    at.starts_at("e0.signals", 0, 4)
    at.starts_at("e0.signals", 1, 0)
    at.consumed("e0.signals", 1, 6)
    at.starts_at("e0.signals", 1, 3)  # an assignment behind what was read moves nothing back
    at.at_end("e0.signals", 0)  # at 100: before the close below
    at.consumed("e0.bars.1m", 0, 9)
    link = ChainLink("e0.", 0, True, {}, {}, ends={"signals": {0: 10, 1: 7}}, closed_at=150.0)
    assert at(["e0.signals"], link) == {("e0.signals", 0): 4, ("e0.signals", 1): 7}
    at.at_end("e0.signals", 0)  # at 200: after the close
    assert at(["e0.signals"], link) == {("e0.signals", 0): ReadPositions.PAST_END, ("e0.signals", 1): 7}
