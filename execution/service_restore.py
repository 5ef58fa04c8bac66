"""What the executor service reads on an assignment: its output topics (`read_outputs`), the inputs
handled last before the group's committed offsets (`Executor.warm_market`) and the signals of
unfinished entries (`Executor.restore`). All read committed records only; the inputs and signals do not
fail the assignment (a market then starts without data, an entry without its signal is left to
reconciliation).
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import consumer_config
from tapeflow_runtime.offsets import CommittedOffsetError, committed_offsets
from tapeflow_runtime.topic_reader import StateReadError, TopicSnapshot, read_to_end

log = structlog.get_logger("executor")

#: records read back per md.trades / md.book partition before the committed offsets on assignment
#: (`Executor.warm_market`): a market quieter than that in its partition starts without data, as before
WARM_RECORDS = 5_000


def read_outputs(
    bootstrap: str, serde: AvroSerde, prefix: str, partitions: list[int], idle_s: float
) -> tuple[TopicSnapshot, TopicSnapshot, TopicSnapshot, TopicSnapshot]:
    """What the executor restores from (`Executor.restore`): positions, orders and fills of the assigned
    partitions (co-partitioned with signals), and risk.events whole. The fills too, so what an order put
    back had filled is replayed from them one by one, bit-identical (`routed_restore.OrderFills`)."""
    mine = ("positions", "orders", "fills")
    state = read_to_end(
        bootstrap, {**{prefix + name: partitions for name in mine}, prefix + "risk.events": None}, serde, idle_s=idle_s
    )
    positions, orders, fills, risk = (state[prefix + n] for n in (*mine, "risk.events"))
    return positions, orders, fills, risk


def read_before_committed(
    consumer: Consumer, bootstrap: str, group: str, serde: AvroSerde, prefix: str, partitions: list[int]
) -> tuple[list[dict], list[dict]]:
    """The last `WARM_RECORDS` committed records of each assigned md.trades and md.book partition
    before the group's committed offset (the inputs the previous run handled last); none for a
    partition without a committed offset. Undecodable records are skipped (they were dead-lettered)."""
    names = (prefix + "md.trades", prefix + "md.book")
    try:
        committed = committed_offsets(consumer, [TopicPartition(t, p) for t in names for p in partitions], 10)
    except (KafkaException, CommittedOffsetError) as exc:
        log.warning("inputs before the committed offsets not read: markets start without data", error=str(exc))
        return [], []
    ends = {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset > 0}
    out: dict[str, list[dict]] = {name: [] for name in names}
    if not ends:
        return [], []
    reader = Consumer(
        consumer_config(
            bootstrap,
            group_id=f"{group}-warm",
            **{"enable.partition.eof": True, "isolation.level": "read_committed"},
        )
    )
    try:
        reader.assign([TopicPartition(t, p, max(0, end - WARM_RECORDS)) for (t, p), end in ends.items()])
        pending, deadline = set(ends), time.monotonic() + 30
        while pending and time.monotonic() < deadline:
            batch: list[Any] = reader.consume(1000, 0.2)  # Message's getters are Optional: set on a fetched record
            for msg in batch:
                tp = (msg.topic(), msg.partition())
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(tp)
                    continue
                if msg.offset() >= ends[tp]:
                    pending.discard(tp)
                    continue
                try:
                    out[msg.topic()].append(serde.decode(msg.value()))
                except Exception:  # noqa: BLE001 # nosec B110 # an undecodable record was dead-lettered when it was handled
                    pass
                if msg.offset() >= ends[tp] - 1:
                    pending.discard(tp)
        if pending:
            log.warning("inputs before the committed offsets not read to the end", partitions=sorted(pending))
    finally:
        reader.close()
    return out[names[0]], out[names[1]]


def read_signals(
    bootstrap: str, serde: AvroSerde, topic: str, partitions: list[int], ids: set[str], idle_s: float
) -> dict[str, dict[str, Any]]:
    """The signal records of `ids` still on the assigned partitions of `topic` (for unfinished entries)."""
    try:
        snap = read_to_end(bootstrap, {topic: partitions}, serde, idle_s=idle_s)
    except StateReadError as exc:
        log.error("signals of unfinished entries not readable", error=str(exc))
        return {}
    return {r["signal_id"]: r for r in snap[topic].records if r.get("signal_id") in ids}
