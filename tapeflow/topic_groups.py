"""`tapeflow topics lag` and the consumer-group part of `topics describe`: committed offsets and lag.

Lag of a group on a partition = the partition's end offset (high watermark) minus the offset the
group committed there; a partition the group never committed to is not the group's yet and is not
listed. Everything comes from the admin API (ListGroups, DescribeGroups, OffsetFetch, ListOffsets), so
inspecting a group never joins it or moves its offsets, and a stopped consumer's lag keeps growing
while producers write.

A lag is never shown below 0 (a topic deleted and created again starts its offsets over, below what an
old group committed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from tapeflow.stack.process import StackError
from tapeflow_runtime.kafka_client import admin_client

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


@dataclass(frozen=True)
class GroupLag:
    group: str
    state: str
    members: int
    partitions: list[PartitionLag] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    def on_topic(self, topic: str) -> GroupLag:
        """The group's partitions on ``topic`` only."""
        return GroupLag(self.group, self.state, self.members, [p for p in self.partitions if p.topic == topic])

    def as_dict(self) -> dict:
        return {
            "group": self.group,
            "state": self.state,
            "members": self.members,
            "total_lag": self.total,
            "partitions": [{**asdict(p), "lag": p.lag} for p in self.partitions],
        }


def list_groups(admin: AdminClient) -> list[str]:
    result = admin.list_consumer_groups(request_timeout=TIMEOUT_S).result(TIMEOUT_S)
    return sorted(g.group_id for g in result.valid)


def _committed(admin: AdminClient, group: str) -> list[TopicPartition]:
    request = [ConsumerGroupTopicPartitions(group)]
    result = admin.list_consumer_group_offsets(request, request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)
    return [tp for tp in result.topic_partitions if tp.offset >= 0 and tp.error is None]


def _ends(admin: AdminClient, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
    if not partitions:
        return {}
    specs = {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in partitions}
    futures = admin.list_offsets(specs, request_timeout=TIMEOUT_S)
    return {(tp.topic, tp.partition): fut.result(TIMEOUT_S).offset for tp, fut in futures.items()}


def _describe(admin: AdminClient, group: str) -> tuple[str, int]:
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group].result(TIMEOUT_S)
    except KafkaException:
        return "unknown", 0
    return desc.state.name.lower(), len(desc.members)


def group_lag(bootstrap: str, group: str, admin: AdminClient | None = None) -> GroupLag:
    """Committed offset, end offset and lag of every partition `group` committed to."""
    admin = admin or admin_client(bootstrap)
    committed = _committed(admin, group)
    ends = _ends(admin, committed)
    state, members = _describe(admin, group)
    parts = sorted(
        (PartitionLag(tp.topic, tp.partition, tp.offset, ends[(tp.topic, tp.partition)]) for tp in committed),
        key=lambda p: (p.topic, p.partition),
    )
    return GroupLag(group, state, members, parts)


def groups_lag(bootstrap: str, group: str | None = None, prefix: str = "") -> list[GroupLag]:
    """One group (an error naming the known ones when it has no committed offset), or every group
    whose name starts with the topic prefix (the groups of this deployment)."""
    admin = admin_client(bootstrap)
    known = list_groups(admin)
    if group is not None:
        found = group_lag(bootstrap, group, admin)
        if not found.partitions:
            mine = [g for g in known if g.startswith(prefix)]
            raise StackError(f"consumer group {group!r} has no committed offsets (groups: {', '.join(mine) or 'none'})")
        return [found]
    return [group_lag(bootstrap, g, admin) for g in known if g.startswith(prefix)]


def render(groups: list[GroupLag], echo) -> None:
    """Per group: one line per partition, then the total."""
    for g in groups:
        echo(f"{g.group} ({g.state}, {g.members} member{'s' if g.members != 1 else ''})")
        echo(f"  {'TOPIC':<32}{'PART':>5}{'COMMITTED':>12}{'END':>12}{'LAG':>10}")
        for p in g.partitions:
            echo(f"  {p.topic:<32}{p.partition:>5}{p.committed:>12}{p.end:>12}{p.lag:>10}")
        echo(f"  total lag {g.total}")
