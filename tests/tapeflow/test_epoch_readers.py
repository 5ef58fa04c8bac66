"""Readers of a running embedded stack's topics follow its epochs: after an odd number of rollovers
the stack's md.* live under ``e1.``, and `tapeflow topics tail/describe` and `tapeflow backtest
--source topics` read those, not whatever is left under the plain names (before: they read the plain
names, so a backtest from topics found "no market data" every other epoch).

The stack is stood in for by its two files a reader looks at: the broker's process record (pointing at
this suite's broker, alive as this process) and ``epochs.json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest
from confluent_kafka import Producer

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.epochs import EPOCHS_FILE, EpochsFileError, EpochState, current_prefix, reader_chain
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.process_records import ProcessRecord
from tapeflow_runtime.settings import Settings

pytestmark = pytest.mark.integration


def test_current_prefix_is_the_current_epochs_on_the_embedded_broker_only(tmp_path):
    settings = Settings(home=tmp_path, topic_prefix="team.", broker=None)
    assert current_prefix(settings) == "team."  # never rolled over: no file
    for epoch, want in ((1, "team.e1."), (2, "team."), (7, "team.e1.")):
        EpochState(epoch=epoch).save(tmp_path / EPOCHS_FILE)
        assert current_prefix(settings) == want
    EpochState(epoch=1, step="sink").save(tmp_path / EPOCHS_FILE)  # mid-rollover: the epoch being drained
    assert current_prefix(settings) == "team.e1."
    kafka = Settings(home=tmp_path, topic_prefix="team.", broker="kafka:9092")
    assert current_prefix(kafka) == "team."  # a file left from an embedded run does not count on Kafka
    rehearsal = Settings(home=tmp_path, topic_prefix="team.dry.", namespace="dry", broker=None)
    assert current_prefix(rehearsal) == "team.dry."  # a rehearsal's topics never roll over
    (tmp_path / EPOCHS_FILE).write_text("{not json")
    assert current_prefix(settings) == "team."
    # a reader of history is told, never handed the plain names in place of the segments
    with pytest.raises(EpochsFileError, match="cannot read the stack's topic segments"):
        reader_chain(settings)
    assert reader_chain(kafka).prefixes == ["team."]


def trade(i: int) -> dict:
    return {"exchange": "binance", "symbol": "BTCUSDT", "agg_id": 1_000 + i, "price": 67_000.5 + i, "qty": 0.012,
            "first_trade_id": i, "last_trade_id": i, "event_time": 1_700_000_000_000 + i,
            "trade_time": 1_700_000_000_000 + i, "receive_time": 1_700_000_000_050 + i, "taker_side": "BUY"}


@pytest.fixture
def stack_in_epoch_1(kafka_bootstrap, topic_prefix, tmp_path):
    """A home whose embedded stack is in epoch 1, with its broker = this suite's broker."""
    return _stack_home(tmp_path, kafka_bootstrap, topic_prefix, EpochState(epoch=1, rollovers=1))


def cli(env, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "tapeflow", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_topics_tail_and_describe_read_the_current_epoch(kafka_bootstrap, topic_prefix, stack_in_epoch_1):
    current, stale = topic_prefix + "e1.", topic_prefix
    serde = AvroSerde(FileSchemaRegistry())
    p = Producer(producer_config(kafka_bootstrap))
    for prefix, ids in ((current, range(5)), (stale, range(100, 103))):
        ensure_topics(kafka_bootstrap, prefix=prefix)
        for i in ids:
            p.produce(prefix + "md.trades", key=b"binance:BTCUSDT", value=serde.encode("md.trades", trade(i)))
    assert p.flush(10) == 0
    res = cli(stack_in_epoch_1, "topics", "tail", "md.trades", "--from-beginning", "--timeout", "3", "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(line)["value"]["agg_id"] for line in res.stdout.splitlines()) == [1_000 + i for i in range(5)]
    res = cli(stack_in_epoch_1, "topics", "describe", "md.trades", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = [json.loads(line) for line in res.stdout.splitlines()]
    # the logical topic, behind it the current epoch's segment only (not the stale plain names)
    assert row["topic"] == topic_prefix + "md.trades" and row["catalogue"]["key"]
    assert [s["topic"] for s in row["segments"]] == [current + "md.trades"]


def test_backtest_from_topics_reads_the_current_epoch(kafka_bootstrap, topic_prefix, stack_in_epoch_1, tmp_path):
    from backtest.runner import BacktestRunner
    from tests.backtest.test_backtest_stored_sources import END, START, STRATEGY, SYMBOLS, all_records, session
    from tapeflow_runtime.publisher import Publisher
    from producers.metrics import ProducerMetrics

    reference = BacktestRunner([STRATEGY]).run(session())
    assert reference.signals >= 3
    prefix = topic_prefix + "e1."
    ensure_topics(kafka_bootstrap, prefix=prefix)
    publisher = Publisher(kafka_bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=prefix)
    for topic, records in all_records().items():
        for r in records:
            publisher.publish(topic, f"{r['exchange']}:{r['symbol']}", r, r["receive_time"])
    assert publisher.flush(60) == 0 and not publisher.failed
    result = backtest_from_topics(stack_in_epoch_1, tmp_path)
    assert result["trades_processed"] == reference.trades_processed
    assert result["signals"] == reference.signals


def backtest_from_topics(env: dict, tmp_path) -> dict:
    """`tapeflow backtest --source topics` over the stored-sources session with its strategy: result.json."""
    from tests.backtest.test_backtest_stored_sources import END, START, STRATEGY, SYMBOLS

    strategy = tmp_path / "stored.json"
    strategy.write_text(json.dumps(STRATEGY.model_dump(mode="json")))
    fmt = "%Y-%m-%dT%H:%M"
    res = cli(env, "backtest", "--source", "topics", "--symbols", ",".join(SYMBOLS), "--strategy",
              str(strategy), "--from", time.strftime(fmt, time.gmtime(START / 1000)),
              "--to", time.strftime(fmt, time.gmtime(END / 1000)), "--out", str(tmp_path / "out"),
              "--no-progress", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((tmp_path / "out" / "result.json").read_text())


def test_backtest_from_topics_that_do_not_exist_is_a_one_line_error(topic_prefix, stack_in_epoch_1, tmp_path):
    res = cli(stack_in_epoch_1, "backtest", "--source", "topics", "--symbols", "BTCUSDT", "--from", "2024-01-01",
              "--to", "2024-01-01", "--out", str(tmp_path / "out"), "--no-progress")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"cannot read {topic_prefix}e1.md.trades" in res.stderr.strip().splitlines()[-1]


def _stack_home(tmp_path, kafka_bootstrap, topic_prefix, state: EpochState) -> dict:
    home = tmp_path / "home"
    paths = StackPaths(home)
    paths.ensure()
    me = psutil.Process()
    ProcessRecord("broker", me.pid, me.create_time(), kafka_bootstrap, time.time(),
                  str(paths.log_file("broker"))).save(paths.state_file("broker"))
    state.save(home / EPOCHS_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(home), TAPEFLOW_TOPIC_PREFIX=topic_prefix)
    return env


def _close(kafka_bootstrap, prefix: str, epoch: int, slot: int, bases: dict) -> "Segment":
    """The segment the rollover's delete step records for ``prefix``'s catalogue topics (real ends)."""
    from schemas.catalogue import all_topics
    from tapeflow_runtime.offsets import true_ends
    from tapeflow_runtime.epochs import Segment
    from tapeflow_runtime.kafka_client import admin_client

    existing = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    stamps: dict = {}
    ends = true_ends(kafka_bootstrap, [(prefix + t.name, p) for t in all_topics() for p in existing[prefix + t.name].partitions],
                     last_ms=stamps)
    by_topic: dict = {}
    for (topic, partition), end in ends.items():
        by_topic.setdefault(topic[len(prefix):], {})[partition] = end
    return Segment(epoch, slot, time.time(), by_topic, {}, bases, max(stamps.values(), default=None))


def _three_segments(kafka_bootstrap, topic_prefix, tmp_path, plan, slots) -> dict:
    """md.trades written under each (prefix, agg ids) of ``plan``; the first two closed as segments in
    name slots ``slots``, the third the current epoch; returns the env of a home in that state."""
    from tapeflow_runtime.epochs import Segment, _next_bases

    serde = AvroSerde(FileSchemaRegistry())
    p = Producer(producer_config(kafka_bootstrap))
    segments: list[Segment] = []
    bases: dict = {}
    for n, (prefix, ids) in enumerate(plan):
        ensure_topics(kafka_bootstrap, prefix=prefix)
        for i in ids:
            p.produce(prefix + "md.trades", key=b"binance:BTCUSDT", value=serde.encode("md.trades", trade(i)),
                      timestamp=1_700_000_000_000 + i * 60_000)
        assert p.flush(10) == 0
        if n < 2:
            segment = _close(kafka_bootstrap, prefix, n, slots[n], bases)
            segments.append(segment)
            bases = _next_bases(bases, {}, segment.ends)
    state = EpochState(epoch=2, slot=1, rollovers=2, segments=segments, bases=bases, history_since=time.time() - 60)
    return _stack_home(tmp_path, kafka_bootstrap, topic_prefix, state)


def test_readers_see_one_logical_topic_over_the_kept_segments(kafka_bootstrap, topic_prefix, tmp_path):
    """Two finished segments and the current one: `topics tail --from-beginning` prints every trade once,
    in order, with logical offsets that run on across segments; `topics list` counts the logical topic;
    `--from` skips a segment wholly older than the start."""
    plan = ((topic_prefix + "e2.", range(0, 4)), (topic_prefix, range(4, 10)), (topic_prefix + "e1.", range(10, 13)))
    env = _three_segments(kafka_bootstrap, topic_prefix, tmp_path, plan, (2, 0))
    res = cli(env, "topics", "tail", "md.trades", "--from-beginning", "--timeout", "3", "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["value"]["agg_id"] for r in rows] == [1_000 + i for i in range(13)]  # once each, in order
    assert {r["topic"] for r in rows} == {topic_prefix + "md.trades"} and len({r["partition"] for r in rows}) == 1
    assert [r["offset"] for r in rows] == list(range(13))  # logical: 0..12 across the three segments
    assert "hold nothing from before" in res.stderr and "backtest --source db" in res.stderr
    # --from: the first segment (ids 0-3, minutes 0-3) is wholly older than minute 5
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + 5 * 60))
    res = cli(env, "topics", "tail", "md.trades", "--from", start, "--timeout", "3", "--json")
    assert [json.loads(line)["value"]["agg_id"] for line in res.stdout.splitlines()] == [1_000 + i for i in range(5, 13)]
    res = cli(env, "topics", "list", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = [r for r in map(json.loads, res.stdout.splitlines()) if r["topic"] == topic_prefix + "md.trades"]
    assert row["catalogue"] and [s["topic"] for s in row["segments"]] == [prefix + "md.trades" for prefix, _ in plan]
    # finished segments: their recorded record counts; the open one: its offsets (Tansu's count batches)
    assert [s["messages"] for s in row["segments"][:2]] == [4, 6] and 1 <= row["segments"][2]["messages"] <= 3
    assert row["messages"] == sum(s["messages"] for s in row["segments"])
    # describe: the same logical topic, its offsets those tail printed, segments contiguous oldest first
    res = cli(env, "topics", "describe", "md.trades", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = [json.loads(line) for line in res.stdout.splitlines()]
    assert row["topic"] == topic_prefix + "md.trades"
    assert [s["topic"] for s in row["segments"]] == [prefix + "md.trades" for prefix, _ in plan]
    (busy,) = {r["partition"] for r in rows}
    spans = [next(p for p in s["partitions"] if p["partition"] == busy) for s in row["segments"]]
    assert (spans[0]["low"], spans[0]["high"]) == (0, 4) and (spans[1]["low"], spans[1]["high"]) == (4, 10)
    assert (spans[2]["low"], spans[2]["high"]) == (10, 13)  # the open one up to its last record
    whole = next(p for p in row["partitions"] if p["partition"] == busy)
    assert (whole["low"], whole["high"]) == (0, 13)
    # lag: a group reading the kept segments is listed with its lag there; one left on a topic outside
    # the chain (a deleted segment's name) is not
    from confluent_kafka import Consumer, TopicPartition

    from schemas.catalogue import topic as topic_spec
    from tapeflow_runtime.kafka_client import consumer_config

    stale_topic = topic_prefix + "e3.md.trades"
    ensure_topics(kafka_bootstrap, prefix=topic_prefix + "e3.", specs=[topic_spec("md.trades")])
    for group, topic, offset in ((topic_prefix + "reader", plan[0][0] + "md.trades", 2),
                                 (topic_prefix + "stale", stale_topic, 0)):
        c = Consumer(consumer_config(kafka_bootstrap, group))
        c.commit(offsets=[TopicPartition(topic, busy, offset)], asynchronous=False)
        c.close()
    res = cli(env, "topics", "lag", "--json")
    assert res.returncode == 0, res.stderr
    lags = {g["group"]: g for g in map(json.loads, res.stdout.splitlines())}
    assert topic_prefix + "stale" not in lags
    assert [(p["topic"], p["committed"], p["lag"]) for p in lags[topic_prefix + "reader"]["partitions"]] == \
        [(plan[0][0] + "md.trades", 2, 2)]
    res = cli(env, "topics", "describe", "md.trades")
    assert res.returncode == 0, res.stderr
    assert f"segment {plan[0][0]}md.trades (epoch" in res.stdout and f"group {topic_prefix}reader" in res.stdout


def test_backtest_from_topics_over_segments_equals_the_whole_session(kafka_bootstrap, topic_prefix, tmp_path):
    """A session split over a finished segment and the current one backtests as the whole session."""
    from backtest.runner import BacktestRunner
    from producers.metrics import ProducerMetrics
    from tapeflow_runtime.publisher import Publisher
    from tests.backtest.test_backtest_stored_sources import END, START, STRATEGY, all_records, session

    reference = BacktestRunner([STRATEGY]).run(session())
    assert reference.signals >= 3
    middle = (START + END) // 2
    old, new = topic_prefix + "e3.", topic_prefix + "e1."
    for prefix, keep in ((old, lambda t: t < middle), (new, lambda t: t >= middle)):
        ensure_topics(kafka_bootstrap, prefix=prefix)
        publisher = Publisher(kafka_bootstrap, AvroSerde(FileSchemaRegistry()), ProducerMetrics(), topic_prefix=prefix)
        for topic, records in all_records().items():
            for r in records:
                if keep(r["receive_time"]):
                    publisher.publish(topic, f"{r['exchange']}:{r['symbol']}", r, r["receive_time"])
        assert publisher.flush(60) == 0 and not publisher.failed
    segment = _close(kafka_bootstrap, old, 4, 3, {})
    assert segment.records("md.trades") > 0
    env = _stack_home(tmp_path, kafka_bootstrap, topic_prefix, EpochState(epoch=5, slot=1, segments=[segment]))
    result = backtest_from_topics(env, tmp_path)
    assert result["trades_processed"] == reference.trades_processed
    assert result["signals"] == reference.signals


def test_a_segment_deleted_while_listed_is_skipped_and_the_rest_is_read(kafka_bootstrap, topic_prefix, tmp_path):
    """Retention deletes the oldest segment while a reader has it in its chain (the 65-minute endurance:
    `topics tail --from-beginning` read part of the oldest segment, then stopped with nothing of the
    others). The reader says the segment is gone and reads every later one to the end."""
    from confluent_kafka.admin import AdminClient

    plan = ((topic_prefix + "e2.", range(0, 4)), (topic_prefix + "e3.", range(4, 10)), (topic_prefix + "e1.", range(10, 13)))
    env = _three_segments(kafka_bootstrap, topic_prefix, tmp_path, plan, (2, 3))
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_topics([plan[0][0] + "md.trades"]).values():
        future.result(30)
    res = cli(env, "topics", "tail", "md.trades", "--from-beginning", "--timeout", "5", "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["value"]["agg_id"] for r in rows] == [1_000 + i for i in range(4, 13)], res.stderr  # the later segments, whole
    assert [r["offset"] for r in rows] == list(range(4, 13))
    assert "deleted" in res.stderr
