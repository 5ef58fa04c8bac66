"""Topic epochs: names, the state file the supervisor writes and producers follow."""

from __future__ import annotations

import pytest

from tapeflow_runtime.epochs import STEPS, EpochState, ProducePrefix, epoch_prefix


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
