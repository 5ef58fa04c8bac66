"""The worker's side of hot reload: it follows config.rollouts and switches each symbol's engine to a
new rollout state at a point it chooses and records (``stream_apps.core.engine_rollout``).

For every owned symbol and every rollout state newer than what its engine has scheduled, the switch
point is the first evaluation boundary after what that engine has evaluated (``Engine.switch_point``)
unless config.applied already holds one for that symbol and state: then the recorded point is used, so a
replay, or a worker taking over the symbol, switches where the first one did. The config.applied
record is an output of the symbol's partition: with exactly-once it commits in the same transaction
as the snapshot that holds the schedule (the key is marked for a snapshot) and the outputs evaluated
under it. A switch is chosen only when the symbol has input to apply (``EngineProcessor._process``),
never from an idle timer: Faust commits the transaction of a partition only when its input offsets
advance, so the record and its snapshot must travel with acknowledged input, or they would sit in an
open transaction that also holds back every read-committed reader of config.applied. A worker
applies no input before its first read of both topics reached their end (``ready``, bounded by
``CATCH_UP_S``): a recorded point not read yet would be chosen again, elsewhere. A worker killed
before the commit leaves neither the record nor any output made under the switch; its successor restores the earlier snapshot and chooses again. Every evaluation is made by
one revision, the one in force at its time.

Both topics are read by every worker from their beginning (one partition each, small: the latest
state per strategy, one record per symbol and switch), outside the consumer group, with read
committed so an aborted switch is never seen. Idle, the reader asks the broker once every
``IDLE_FETCH_MS`` (5 s): a new state is read within about 5 s, which a promotion (a person's step) does
not notice, while a 1-s poll cost the idle stack ~0.6 % of a core (engine and broker together,
`bench_broker_cpu`). A long poll is not relied on to return early: with a 30-s wait, a state
published to an idle worker was read 30 s later."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from schemas.serde import AvroSerde
from stream_apps.core.engine import Engine
from stream_apps.core.engine_rollout import Switch, SwitchRefused
from stream_apps.core.rollout import RolloutState

from .outputs import OutRecord

log = structlog.get_logger("engine")
ROLLOUTS, APPLIED = "config.rollouts", "config.applied"
IDLE_FETCH_MS = 5_000
CATCH_UP_S = 30.0


class RolloutFollower:
    """The rollout states and recorded switch points the worker knows, and the switches they imply."""

    def __init__(self, serde: AvroSerde, topic_prefix: str = "") -> None:
        self.serde = serde
        self.prefix = topic_prefix
        self.states: dict[str, RolloutState] = {}
        self.recorded: dict[tuple[str, str, int], int] = {}  # (strategy, exchange:symbol, seq) -> applied_from
        self._refused: set[tuple[str, str, int]] = set()
        # set once both topics were read to their end (or the catch-up gave up): before that a
        # recorded point may still be unread, and a switch chosen then could differ from it
        self.ready = False

    def add(self, topic: str, value: bytes | None) -> None:
        """One record of config.rollouts or config.applied (catalogue names)."""
        if value is None:
            return
        record = self.serde.decode(value)
        if topic == ROLLOUTS:
            state = RolloutState.from_record(record)
            known = self.states.get(state.strategy)
            if known is None or state.seq > known.seq:
                self.states[state.strategy] = state
                log.info(
                    "rollout state read: each symbol switches at its next input", strategy=state.strategy, seq=state.seq
                )
        elif topic == APPLIED and record.get("market"):
            self.recorded.setdefault(
                (record["strategy"], record["market"], int(record["seq"])), int(record["applied_from"])
            )

    def schedule(self, engine: Engine, key: str, partition: int) -> list[OutRecord]:
        """Schedule in ``engine`` (the engine of symbol ``key``) every state it has not; the config.applied
        records of the switches it chose itself."""
        out: list[OutRecord] = []
        for name, state in sorted(self.states.items()):
            if not engine.revisions.runs(name) or engine.revisions.known_seq(name) >= state.seq:
                continue
            if (name, key, state.seq) in self._refused:
                continue
            recorded = self.recorded.get((name, key, state.seq))
            applied_from = recorded if recorded is not None else engine.switch_point()
            try:
                engine.schedule_switch(Switch(name, state.seq, applied_from, state.active, state.canary))
            except SwitchRefused as exc:
                self._refused.add((name, key, state.seq))
                log.error("rollout refused: the engine keeps its revision", strategy=name, key=key, error=str(exc))
                continue
            if recorded is not None:
                continue
            self.recorded[(name, key, state.seq)] = applied_from
            record = {
                "strategy": name,
                "seq": state.seq,
                "active_rev": state.active.rev,
                "canary_rev": None if state.canary is None else state.canary.rev,
                "canary_symbols": [] if state.canary is None else list(state.canary.symbols),
                "partition": partition,
                "applied_from": applied_from,
                "market": key,
            }
            value = self.serde.encode(APPLIED, record)
            out.append(OutRecord(self.prefix + APPLIED, 0, f"{name}:{key}".encode(), value, None, partition))
            log.info("rollout scheduled", strategy=name, key=key, seq=state.seq, applied_from=applied_from)
        return out


async def follow_topics(
    bootstrap: str, follower: RolloutFollower, changed: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Read config.applied and config.rollouts from their beginning into ``follower``, then keep reading;
    ``changed`` runs after every fetch that brought records (and once the first read reached the end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = {follower.prefix + ROLLOUTS: ROLLOUTS, follower.prefix + APPLIED: APPLIED}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
        fetch_max_wait_ms=IDLE_FETCH_MS,
        # aiokafka's fetch routine re-plans every consumer_timeout_ms (0.2 s by default) while a fetch is
        # out, waking the worker 5 times a second for two topics that change when a person promotes;
        # everything that needs a new plan (an answered fetch, records consumed) wakes it anyway
        consumer_timeout_ms=IDLE_FETCH_MS,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(name, 0) for name in topics]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        # what is recorded comes first: a state already applied somewhere is never re-decided here
        # (bounded: a predecessor's transaction still open holds read committed back until it is aborted)
        deadline = asyncio.get_running_loop().time() + CATCH_UP_S
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("config topics not read to their end in time: following from here")
                break
            _take(follower, topics, await consumer.getmany(timeout_ms=1000))
        follower.ready = True
        await changed()
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=IDLE_FETCH_MS)
            if _take(follower, topics, fetched):
                await changed()
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


def _take(follower: RolloutFollower, topics: dict[str, str], fetched: dict[Any, list[Any]]) -> bool:
    got = False
    for tp, messages in fetched.items():
        for msg in messages:
            follower.add(topics[tp.topic], msg.value)
            got = True
    return got
