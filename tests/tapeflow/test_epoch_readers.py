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
from tapeflow_runtime.epochs import EPOCHS_FILE, EpochState, current_prefix
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


def trade(i: int) -> dict:
    return {"exchange": "binance", "symbol": "BTCUSDT", "agg_id": 1_000 + i, "price": 67_000.5 + i, "qty": 0.012,
            "first_trade_id": i, "last_trade_id": i, "event_time": 1_700_000_000_000 + i,
            "trade_time": 1_700_000_000_000 + i, "receive_time": 1_700_000_000_050 + i, "taker_side": "BUY"}


@pytest.fixture
def stack_in_epoch_1(kafka_bootstrap, topic_prefix, tmp_path):
    """A home whose embedded stack is in epoch 1, with its broker = this suite's broker."""
    home = tmp_path / "home"
    paths = StackPaths(home)
    paths.ensure()
    me = psutil.Process()
    ProcessRecord("broker", me.pid, me.create_time(), kafka_bootstrap, time.time(),
                  str(paths.log_file("broker"))).save(paths.state_file("broker"))
    EpochState(epoch=1, rollovers=1).save(home / EPOCHS_FILE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(home), TAPEFLOW_TOPIC_PREFIX=topic_prefix)
    return env


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
    assert row["topic"] == current + "md.trades" and row["catalogue"]["key"]


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
    strategy = tmp_path / "stored.json"
    strategy.write_text(json.dumps(STRATEGY.model_dump(mode="json")))
    fmt = "%Y-%m-%dT%H:%M"
    res = cli(stack_in_epoch_1, "backtest", "--source", "topics", "--symbols", ",".join(SYMBOLS), "--strategy",
              str(strategy), "--from", time.strftime(fmt, time.gmtime(START / 1000)),
              "--to", time.strftime(fmt, time.gmtime(END / 1000)), "--out", str(tmp_path / "out"),
              "--no-progress", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["trades_processed"] == reference.trades_processed
    assert result["signals"] == reference.signals


def test_backtest_from_topics_that_do_not_exist_is_a_one_line_error(topic_prefix, stack_in_epoch_1, tmp_path):
    res = cli(stack_in_epoch_1, "backtest", "--source", "topics", "--symbols", "BTCUSDT", "--from", "2024-01-01",
              "--to", "2024-01-01", "--out", str(tmp_path / "out"), "--no-progress")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    assert f"cannot read {topic_prefix}e1.md.trades" in res.stderr.strip().splitlines()[-1]
