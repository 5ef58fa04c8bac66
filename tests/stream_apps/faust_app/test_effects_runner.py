"""``EffectsRunner``: a set of effects is performed to its end even when its caller is cancelled, sets
run in call order, and ``settle`` waits for the last one (what the worker's flush relies on)."""

from __future__ import annotations

import asyncio

import pytest

from stream_apps.faust_app.effects_runner import EffectsRunner


class Steps:
    """Performs a set (a list of step names) one awaited step at a time; each step waits for a go."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def perform(self, steps: list[str]) -> None:
        for step in steps:
            await self.gate.wait()
            await asyncio.sleep(0)
            if step == "boom":
                raise RuntimeError("producer gone")
            self.done.append(step)


def test_a_cancelled_caller_does_not_cut_a_set_between_snapshot_and_acks():
    async def scenario():
        steps = Steps()
        runner = EffectsRunner(steps.perform)
        steps.gate.clear()
        caller = asyncio.ensure_future(runner.run(["output", "snapshot", "ack"]))
        await asyncio.sleep(0.01)
        caller.cancel()  # what stopping the worker does to its timer task
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert steps.done == []
        steps.gate.set()
        await runner.settle()  # what the flush before the final commit does
        return steps.done

    assert asyncio.run(scenario()) == ["output", "snapshot", "ack"]


def test_sets_are_performed_in_call_order_even_after_a_cancellation():
    async def scenario():
        steps = Steps()
        runner = EffectsRunner(steps.perform)
        steps.gate.clear()
        first = asyncio.ensure_future(runner.run(["snapshot 1", "ack 1"]))
        await asyncio.sleep(0.01)
        first.cancel()
        second = asyncio.ensure_future(runner.run(["snapshot 2", "ack 2"]))
        await asyncio.sleep(0.01)
        steps.gate.set()
        await second
        return steps.done

    # the older snapshot of a key never lands after the newer one
    assert asyncio.run(scenario()) == ["snapshot 1", "ack 1", "snapshot 2", "ack 2"]


def test_empty_sets_do_nothing_and_a_failure_is_raised_once():
    async def scenario():
        steps = Steps()
        runner = EffectsRunner(steps.perform)
        await runner.run([])
        steps.gate.clear()
        caller = asyncio.ensure_future(runner.run(["output", "boom", "ack"]))
        await asyncio.sleep(0.01)
        caller.cancel()
        steps.gate.set()
        with pytest.raises(RuntimeError, match="producer gone"):
            await runner.settle()
        await runner.settle()  # reported once
        await runner.run(["next"])
        return steps.done

    assert asyncio.run(scenario()) == ["output", "next"]
