"""The paper executor service on event time, through a real broker: over the same records, routed entries
(maker waits, TWAP slices, the maker -> taker fallback) give the backtest's orders, fills and positions,
whether the records are in the broker before the executor starts (a replay at max: it catches up) or
reach it one by one while it runs (a paced replay, the live case).

The session (tests/execution/event_clock_session.py): BTCUSDT and ETHUSDT (input partitions 1 and 4,
so inputs are ordered across partitions), 6 minutes of trades, books, marks and 17 signals, with the
executor's default age and freshness limits: its event times are in 2026-09 and hours from the wall
clock, which the paper executor no longer reads. Paced, each record is produced once the one before
it is acknowledged, in the executor's order (event time; at equal times signal, mark, book, trade), so
every fetch holds a prefix of the session, as a live feed's records come; in the broker before the
start, the executor's inputs wait for each other (`execution.input_order`). The session's makers fill
little: the maker-fill-ratio rule on event time sends its later entries to market, in the service as in
the backtest (`execution.maker_fill_rule`).

Cost (2026-11-29, load ~15): ~25 s wall for both runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer, TopicPartition

from execution.input_order import RANK, TIME_FIELD
from execution.service import INPUTS, OUTPUTS, ExecuteOptions, run_executor
from schemas.catalogue import topic as topic_spec
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.settings import Settings
from tapeflow_runtime.topic_reader import read_to_end
from tests.execution.event_clock_session import ROUTED, backtest, comparable, key, session
from tests.support.execution import SERDE
from tests.support.kafka import group_consumer
from tests.support.services import ServiceThread

pytestmark = pytest.mark.integration

Record = dict[str, Any]


def by_market(records: list[tuple[str, Record]]) -> dict[tuple[str, str], list[Record]]:
    """Orders, fills and positions per (topic, symbol) in emission order (a market's records share a
    partition of each output topic, so its order is there; markets interleave by partition)."""
    out: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for topic, recs in comparable(records).items():
        for r in recs:
            out[(topic, r["symbol"])].append(r)
    return dict(out)


class Run:
    """One paper executor service (in process, `run_executor` as `tapeflow execute --mode paper` runs it)
    on topics of its own."""

    def __init__(self, bootstrap: str, prefix: str, tmp_path) -> None:
        self.bootstrap, self.prefix = bootstrap, prefix
        ensure_topics(bootstrap, prefix=prefix, specs=[topic_spec(n) for n in INPUTS + OUTPUTS])
        config = tmp_path / f"{prefix}executor.yaml"
        config.write_text(yaml.safe_dump({"entry": {"kind": ROUTED.entry.kind}}))
        self.settings = Settings(home=tmp_path, broker=bootstrap, topic_prefix=prefix)
        self.options = ExecuteOptions(config_path=config, start_from="earliest", restore_idle_s=0.3)
        self.producer = Producer(producer_config(bootstrap))
        self.service: ServiceThread | None = None
        self.counts: dict[str, int] = defaultdict(int)

    def start(self) -> None:
        self.service = ServiceThread(lambda stop: run_executor(self.settings, "paper", _with(self.options, stop)))

    def produce(self, records: list[tuple[str, Record]], one_by_one: bool) -> None:
        for topic, record in records:
            self.producer.produce(self.prefix + topic, key=key(record), value=SERDE.encode(topic, record))
            self.counts[topic] += 1
            if one_by_one:
                assert self.producer.flush(10) == 0
        assert self.producer.flush(30) == 0

    def finish(self, timeout: float = 120.0) -> list[tuple[str, Record]]:
        """Once every input is handled and committed: stop the executor, read what it published."""
        consumer = group_consumer(self.bootstrap, f"{self.prefix}tapeflow-executor-paper")
        deadline = time.monotonic() + timeout
        try:
            while True:
                done = {t: _committed(consumer, self.prefix + t) for t in self.counts}
                if done == dict(self.counts):
                    break
                assert time.monotonic() < deadline, f"inputs handled {done}, produced {dict(self.counts)}"
                time.sleep(0.2)
        finally:
            consumer.close()
        assert self.service is not None and self.service.close() == 0
        snap = read_to_end(self.bootstrap, {self.prefix + t: None for t in ("orders", "fills", "positions")}, SERDE)
        return [(t, r) for t in ("orders", "fills", "positions") for r in snap[self.prefix + t].records]


def _with(options: ExecuteOptions, stop) -> ExecuteOptions:
    return ExecuteOptions(**{**options.__dict__, "stop": stop})


def _committed(consumer, topic: str) -> int:
    parts = [TopicPartition(topic, p) for p in range(6)]
    return sum(max(tp.offset, 0) for tp in consumer.committed(parts, timeout=10))


def test_paper_routed_entries_equal_the_backtest_at_max_speed_and_paced(kafka_bootstrap, topic_prefix, tmp_path):
    records = sorted(session(), key=lambda item: (item[1][TIME_FIELD[item[0]]], RANK[item[0]]))
    want = by_market(backtest(records))
    kinds = {r["type"] for (topic, _), recs in want.items() if topic == "orders" for r in recs}
    assert kinds == {"LIMIT", "MARKET"} and len(want) == 6  # maker and taker orders, fills, positions of both
    # and entries the maker-fill-ratio rule sent to market: the service routes by it on event time too
    reasons = [r["reason"] or "" for (topic, _), recs in want.items() if topic == "orders" for r in recs]
    assert any(reason.endswith("degraded:market_only") for reason in reasons)

    at_max = Run(kafka_bootstrap, topic_prefix + "max.", tmp_path)
    at_max.produce(records, one_by_one=False)  # all in the broker before the executor starts
    at_max.start()
    paced = Run(kafka_bootstrap, topic_prefix + "paced.", tmp_path)
    paced.start()
    paced.produce(records, one_by_one=True)  # one by one while it runs

    assert by_market(at_max.finish()) == want
    assert by_market(paced.finish()) == want
