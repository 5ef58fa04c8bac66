"""Hot reload in the engine worker, without a broker: the processor follows a rollout state, chooses
each symbol's switch point, records it on config.applied with the outputs and the snapshot of the same
transaction, and a worker killed during the switch (before its transaction commits) leaves committed
outputs in which every evaluation appears once and is made by one revision: the one in force at its
time per the committed config.applied records. A direct engine given those recorded points (a replay)
reproduces the committed outputs exactly."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import yaml

from stream_apps.core.engine import Engine, EngineParams
from stream_apps.core.engine_rollout import Switch
from stream_apps.core.rollout import Canary, Revision, RolloutState
from stream_apps.core.strategy import parse_strategy
from stream_apps.faust_app.processor import Effects
from stream_apps.faust_app.session import engine_inputs
from tests.stream_apps.faust_app.test_engine_app_units import (  # noqa: F401 - fixtures
    FAST,
    STRATEGIES,
    Clock,
    FakeBroker,
    by_id,
    make_processor,
    partitions,
    serde,
    session,
)


def _revision(rev: int, **changes) -> Revision:
    content = yaml.safe_dump({**FAST.model_dump(mode="json"), **changes}, sort_keys=False)
    return Revision(rev, parse_strategy(yaml.safe_load(content)).config_hash, content)


ACTIVE, CANDIDATE = _revision(1), _revision(2, version="2")
STATE = RolloutState(
    "fast_test", 1, ACTIVE, Canary(2, CANDIDATE.config_hash, CANDIDATE.content, ("ETHUSDT",)), "canary", "t", "", 0
)


class Transactions:
    """Exactly-once as the worker has it: effects accumulate in an open transaction per input
    partition; a commit (after a checkpoint) makes its outputs visible, its snapshots the table and its
    acks the committed offsets, but, as Faust does, only for the partitions whose offsets advance (the
    others stay open); a crash aborts them all."""

    def __init__(self, logs) -> None:
        self.open: list[Effects] = []
        self.outputs: list = []  # committed OutRecords
        self.table: dict[str, bytes] = {}
        self.acked: dict[tuple[str, int], set[int]] = defaultdict(set)
        self.committed = {tp: 0 for tp in logs}

    def add(self, effects: Effects) -> None:
        self.open.append(effects)

    def commit(self, processor) -> None:
        self.add(processor.checkpoint())
        moving = {partition for e in self.open for (_, partition), offsets in e.acks.items() if offsets}
        still = Effects()
        for e in self.open:
            for r in e.outputs:
                source = r.partition if r.source_partition is None else r.source_partition
                (self.outputs if source in moving else still.outputs).append(r)
            for snapshot in e.snapshots:
                if snapshot[0] in moving:
                    self.table[snapshot[1]] = snapshot[2]
                else:
                    still.snapshots.append(snapshot)
            for tp, offsets in e.acks.items():
                self.acked[tp].update(offsets)
        self.open = [still] if still else []
        for tp in self.committed:
            while self.committed[tp] in self.acked[tp]:
                self.committed[tp] += 1

    def abort(self) -> None:
        self.open = []

    def decoded(self, codec, topic: str) -> list[dict]:
        return [codec.decode(r.value) for r in self.outputs if r.topic == topic]


def _follow(processor, codec, applied: list[dict]) -> None:
    processor.rollouts.ready = True  # both topics read to their end
    processor.rollouts.add("config.rollouts", codec.encode("config.rollouts", STATE.as_record()))
    for record in applied:
        processor.rollouts.add("config.applied", codec.encode("config.applied", record))


def _step(processor, broker, tx, clock) -> None:
    tx.add(processor.on_records(broker.fetch(150), broker.caught_up))
    clock.now += 0.5
    tx.add(processor.tick(broker.caught_up))


@pytest.mark.parametrize("killed", [True, False])
def test_a_worker_killed_during_the_switch_leaves_each_evaluation_once_and_of_one_revision(
    serde,  # noqa: F811 - the fixture
    partitions,  # noqa: F811 - the fixture
    session,  # noqa: F811 - the fixture
    killed,
):
    clock = Clock()
    tx = Transactions(partitions)
    first = make_processor(serde, clock, snapshot_interval_s=2.0)
    broker = FakeBroker(partitions, 21)
    for i in range(60):  # about a third of the session, committed every 5 steps
        _step(first, broker, tx, clock)
        if i % 5 == 4:
            tx.commit(first)
    tx.commit(first)
    _follow(first, serde, [])
    for _ in range(8):  # each symbol's next input chooses its switch; evaluations under the new revisions
        _step(first, broker, tx, clock)
    switching = [r for e in tx.open for r in e.outputs if r.topic.endswith("config.applied")]
    assert len(switching) == 2  # one per symbol owned, in the open transaction
    if killed:  # SIGKILL: the open transaction is aborted, its successor restores the committed state
        tx.abort()
        worker = make_processor(serde, clock, load=tx.table.get, snapshot_interval_s=2.0)
        _follow(worker, serde, tx.decoded(serde, "config.applied"))  # what is committed (nothing yet)
        broker = FakeBroker(partitions, 22, start=tx.committed)
    else:
        worker = first
    step = 0
    while not broker.done():
        _step(worker, broker, tx, clock)
        step += 1
        if step % 5 == 0:
            tx.commit(worker)
    tx.commit(worker)

    applied = tx.decoded(serde, "config.applied")
    assert sorted(a["market"] for a in applied) == ["binance:BTCUSDT", "binance:ETHUSDT"]  # once per symbol
    point = {a["market"]: a["applied_from"] for a in applied}
    features = tx.decoded(serde, "features")
    fast = [f for f in features if f["strategy"] == "fast_test"]
    # every evaluation once: no (strategy, symbol, time) twice, whichever revision made it
    assert max(Counter((f["strategy"], f["symbol"], f["eval_time"]) for f in features).values()) == 1
    # and by the revision in force at its time: the started file (unregistered: 0) before the switch,
    # then the active revision 1 (the same content) or, on the canary's symbol, the candidate
    for f in fast:
        switched = f["eval_time"] >= point[f"binance:{f['symbol']}"]
        rev = (2 if f["symbol"] == "ETHUSDT" else 1) if switched else 0
        assert (f["config_rev"], f["config_hash"]) == (rev, CANDIDATE.config_hash if rev == 2 else ACTIVE.config_hash)
    assert {f["config_rev"] for f in fast if f["symbol"] == "ETHUSDT"} == {0, 2}
    assert {f["config_rev"] for f in fast if f["symbol"] == "BTCUSDT"} == {0, 1}

    # a replay: a direct engine per symbol with the recorded switch scheduled up front
    expected: dict[str, list[dict]] = {"features": [], "signals": []}
    for market, applied_from in point.items():
        records = [r for r in session if r.key == market]
        engine = Engine(STRATEGIES, EngineParams())
        engine.schedule_switch(Switch("fast_test", 1, applied_from, STATE.active, STATE.canary))
        out = engine.process(*engine_inputs(records))
        newest = max(r.time_ms for r in records)
        expected["features"] += [f for f in out.features if f["eval_time"] <= newest]
        expected["signals"] += [s for s in out.signals if s["eval_time"] <= newest]
    assert by_id(features, "eval_time") == by_id(expected["features"], "eval_time")
    assert by_id(tx.decoded(serde, "signals"), "eval_time") == by_id(expected["signals"], "eval_time")
