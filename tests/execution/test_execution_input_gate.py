"""The executor service's input gate (`execution.service_inputs.InputGate`) on a consumer whose figures the
test sets: when a topic holding a partition back counts as at its end before its partition EOF arrives.

Seen in the parity test (tests/backtest/test_backtest_parity.py) on a loaded machine: a partition's
signals, trades, books and marks were all read to their high watermarks, but librdkafka queues a
partition EOF behind every record already in its one local queue (up to `queued.min.messages`, here the
other partitions' records), so no EOF had come; the signals topic bounded the partition at its last
signal, the trades, books and marks after it waited, and after `max_hold_s` without news they were
released "without event-time order" (signals newest=1704099505000 held=0, md.trades held=318, md.book
held=47, md.mark held=94). A topic read to its high watermark is at its end, as its EOF will say.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition
from structlog.testing import capture_logs

from execution.input_order import TIME_FIELD, Held
from execution.metrics import ExecutorMetrics
from execution.service_inputs import InputGate

PREFIX = "t."
P = 1  # the partition of the case; the consumer's figures are per topic of it
UNKNOWN = -1001  # librdkafka's "no offset"


class Record:
    """A consumed record as `InputGate.hold` reads it (its value is the decoded record)."""

    def __init__(self, name: str, offset: int, when: int) -> None:
        self.name, self._offset = name, offset
        self._value = {TIME_FIELD[name]: when}

    def topic(self) -> str:
        return PREFIX + self.name

    def partition(self) -> int:
        return P

    def offset(self) -> int:
        return self._offset

    def value(self) -> dict[str, Any]:
        return self._value


class Decoded:
    def decode(self, value: dict[str, Any]) -> dict[str, Any]:
        return value


class Consumer:
    """The figures `InputGate` asks of its consumer: the next offset of each topic of partition `P` (its
    position) and the watermarks of its last fetch; the broker is never asked."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        self.marks: dict[str, tuple[int, int]] = {}

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get(tp.topic, UNKNOWN)) for tp in tps]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        return self.marks.get(tp.topic, (UNKNOWN, UNKNOWN))

    def pause(self, tps: list[TopicPartition]) -> None:
        pass

    def resume(self, tps: list[TopicPartition]) -> None:
        pass


def gate(max_hold_s: float) -> tuple[InputGate, Consumer]:
    g = InputGate(PREFIX, Decoded(), ExecutorMetrics(), max_hold_s=max_hold_s, start_from="earliest")  # type: ignore[arg-type]
    consumer = Consumer()
    g.consumer = consumer  # type: ignore[assignment]
    return g, consumer


def consumed(g: InputGate, consumer: Consumer, name: str, times: list[int], high: int, position: int) -> None:
    """`consume` returned `times` of topic `name` (offsets from 0), the consumer's next offset there is
    `position` and its last fetch answered the high watermark `high`; no partition EOF."""
    for offset, when in enumerate(times):
        g.hold(Record(name, offset, when))
    consumer.positions[PREFIX + name] = position
    consumer.marks[PREFIX + name] = (0, high)


def released(g: InputGate) -> list[tuple[str, int]]:
    out: list[Held] = []
    g.release(out.append)
    return [(h.topic, h.time) for h in out]


def test_a_partition_read_to_its_high_watermarks_is_released_in_order_before_its_eofs():
    g, consumer = gate(max_hold_s=3600)  # no release for want of news: only what the topics say
    # the end of the session: the engine's transactional signals end with a commit marker (offset 1 after
    # the one signal; librdkafka moves the position past it), the market data goes on after the signal
    consumed(g, consumer, "signals", [1000], high=2, position=2)
    consumed(g, consumer, "md.trades", [900, 1100, 1200], high=3, position=3)
    consumed(g, consumer, "md.book", [950, 1150], high=2, position=2)
    consumed(g, consumer, "md.mark", [1000, 1300], high=2, position=2)
    with capture_logs() as logs:
        assert released(g) == [
            ("md.trades", 900),
            ("md.book", 950),
            ("signals", 1000),
            ("md.mark", 1000),
            ("md.trades", 1100),
            ("md.book", 1150),
            ("md.trades", 1200),
            ("md.mark", 1300),
        ]
    assert g.aligner.held(P) == 0 and set(g.aligner.describe(P).values()) == {"at end"}
    assert not [e for e in logs if e["log_level"] == "warning"]
    # the EOFs that arrive later change nothing; a new record makes its topic hold again
    for name in ("signals", "md.trades", "md.book", "md.mark"):
        g.at_end(Record(name, 0, 0))
    g.hold(Record("md.trades", 3, 1400))
    consumer.positions[PREFIX + "md.trades"], consumer.marks[PREFIX + "md.trades"] = 4, (0, 5)  # one more to read
    assert released(g) == [("md.trades", 1400)]  # every other topic at its end


def test_a_topic_with_records_left_to_read_holds_however_long_it_is_silent():
    g, consumer = gate(max_hold_s=0)  # a partition without news is released as soon as nothing is left to read
    consumed(g, consumer, "signals", [1000], high=2, position=2)
    # the trade at 1200 is fetched and queued behind other partitions' records
    consumed(g, consumer, "md.trades", [900, 1100], high=3, position=2)
    consumed(g, consumer, "md.book", [950, 1150], high=2, position=2)
    consumed(g, consumer, "md.mark", [1000, 1300], high=2, position=2)
    with capture_logs() as logs:
        first = released(g)
        assert released(g) == []  # nothing forced: md.trades has a record left to read
    assert first == [("md.trades", 900), ("md.book", 950), ("signals", 1000), ("md.mark", 1000), ("md.trades", 1100)]
    assert g.aligner.describe(P)["md.trades"] == "newest=1100 held=0"
    assert not [e for e in logs if e["log_level"] == "warning"]
    g.hold(Record("md.trades", 2, 1200))
    consumer.positions[PREFIX + "md.trades"] = 3
    assert released(g) == [("md.book", 1150), ("md.trades", 1200), ("md.mark", 1300)]


@pytest.mark.parametrize(
    ("marks", "start", "at_end"),
    [
        ((0, 0), None, True),  # an empty partition: wherever the group starts, nothing to read
        ((4, 4), None, True),  # emptied by retention
        ((0, 5), None, False),  # records not delivered yet (their fetch queued behind other partitions')
        ((0, 5), 5, True),  # the group's committed offset is its end (asked by `catching_up`)
        ((0, 5), 3, False),  # two records after the committed offset
        ((UNKNOWN, UNKNOWN), None, False),  # not fetched yet: the broker is not asked here
    ],
)
def test_a_topic_that_delivered_nothing_yet_is_at_its_end_only_when_its_figures_say_so(marks, start, at_end):
    g, consumer = gate(max_hold_s=3600)
    for name in ("md.book", "md.mark"):
        g.at_end(Record(name, 0, 0))
    consumed(g, consumer, "signals", [1000], high=1, position=1)  # read to its end; md.trades delivered nothing
    consumer.marks[PREFIX + "md.trades"] = marks
    if start is not None:
        g.start[(PREFIX + "md.trades", P)] = start
    assert released(g) == ([("signals", 1000)] if at_end else [])
    assert (g.aligner.describe(P)["md.trades"] == "at end") is at_end
