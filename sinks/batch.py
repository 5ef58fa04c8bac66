"""A sink batch: what the consumer thread gathered, the decoder turned into rows and COPY data, a
writer stored in one transaction, and the checkpoint commits the offsets of."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from confluent_kafka import Message


@dataclass
class Batch:
    rows: dict[str, list[tuple]] = field(default_factory=lambda: defaultdict(list))  # table -> rows
    copies: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))  # table -> COPY row data
    copy_rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dlq: list[tuple[str, bytes | None, dict]] = field(default_factory=list)  # (topic, key, dead letter)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset to commit
    max_time: dict[str, int] = field(default_factory=dict)  # table -> newest event time (ms)
    min_time: dict[str, int] = field(default_factory=dict)  # table -> oldest event time (ms)
    days: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))  # table -> UTC days written
    # topic -> its flat-topic records not decoded yet: encoded into `copies` once per batch by
    # the sealer thread (sinks.decoding), since each encode call has a fixed cost of ~2 ms
    columnar: dict[str, list[Message]] = field(default_factory=lambda: defaultdict(list))
    count: int = 0
    written: dict[str, int] = field(default_factory=dict)
    commit_s: float = 0.0
    seq: tuple[int, int] = (0, -1)  # (assignment generation, number): set when handed to the writers

    def clear(self) -> None:
        """Empty in place (a rebalance took the partitions: whoever holds this batch sees it empty)."""
        for name in ("rows", "copies", "copy_rows", "days", "columnar"):
            getattr(self, name).clear()
        self.dlq.clear()
        self.offsets.clear()
        self.max_time.clear()
        self.min_time.clear()
        self.count = 0

    def note_time(self, table: str, lo: int, hi: int) -> None:
        if hi > self.max_time.get(table, -1):
            self.max_time[table] = hi
        if lo < self.min_time.get(table, 1 << 62):
            self.min_time[table] = lo
