"""Carry the executor's state from one topic epoch to the next (``tapeflow_runtime.epochs``).

The executor's state is its own output topics (``execution.service``: positions, orders and
risk.events are read back on every assignment) plus the ``signals`` of unfinished entries (their exit
plans). A new epoch's topics start empty, so before the new epoch's executor starts, the old epoch's
records of those topics are copied into the new ones: same partition, key, value and timestamp, in
offset order. The copy is small (records per signal, not per trade) and the new executor restores
from it exactly as after a restart: the same open positions, the same signals recognised as handled,
the same risk-guard state.

The copied ``signals`` are history, not input: the new executor group starts after them
(``tapeflow_runtime.offsets.commit_group_start``), so no old signal is evaluated again. Each record is its own batch (flushed one
by one) so that on the embedded broker end offsets count records, which the executor's restore and
input ordering rely on.

Idempotent for a rollover that is killed and resumed: a target partition that already holds records
is left as it is (the copy into it completed or is taken over record by record: see ``carry_executor_state``).
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Producer

from tapeflow_runtime.epochs import CARRIED_TOPICS
from tapeflow_runtime.kafka_client import producer_config
from tapeflow_runtime.topic_reader import read_to_end

#: what is carried; readers of a rolling epoch wait for the carry on exactly these topics
STATE_TOPICS: tuple[str, ...] = CARRIED_TOPICS


def carry_executor_state(bootstrap: str, from_prefix: str, to_prefix: str,
                         topics: Sequence[str] = STATE_TOPICS, *, timeout_s: float = 60.0) -> dict[str, dict[int, int]]:
    """Copy ``topics`` from ``from_prefix`` to ``to_prefix``; returns, per catalogue topic, each target
    partition's end offset after the copy. Records the target already holds (a copy that was
    interrupted) are not copied again: per partition the copy resumes after them."""
    sources = {from_prefix + t: None for t in topics}
    old = read_to_end(bootstrap, sources, None, timeout_s=timeout_s)
    already = read_to_end(bootstrap, {to_prefix + t: None for t in topics}, None, timeout_s=timeout_s)
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
    ends: dict[str, dict[int, int]] = {}
    for name in topics:
        held: dict[int, int] = {}
        for record in already[to_prefix + name].records:
            held[record.partition] = held.get(record.partition, 0) + 1
        ends[name] = dict(already[to_prefix + name].next_offsets)
        seen: dict[int, int] = {}
        for record in old[from_prefix + name].records:
            n = seen[record.partition] = seen.get(record.partition, 0) + 1
            if n <= held.get(record.partition, 0):
                continue  # copied before the interruption
            delivered: list[int] = []
            producer.produce(to_prefix + name, value=record.value, key=record.key, partition=record.partition,
                             timestamp=record.timestamp_ms,
                             on_delivery=lambda err, msg, out=delivered: out.append(-1 if err else msg.offset()))
            if producer.flush(30) != 0 or not delivered or delivered[0] < 0:
                raise RuntimeError(f"carrying executor state into {to_prefix + name}: not acknowledged")
            ends[name][record.partition] = delivered[0] + 1
    return ends
