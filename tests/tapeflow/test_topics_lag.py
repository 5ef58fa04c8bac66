"""`tapeflow topics lag`, `topics describe` (groups) and `topics tail --from/--key/--follow` against the
real Kafka broker; the lag is exact (end offset minus committed offset, in records).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import admin_client, consumer_config, ensure_topics

pytestmark = pytest.mark.integration

SERDE = AvroSerde(FileSchemaRegistry())
T0 = 1_700_000_000_000  # trade times: one minute apart from here


def trade(i: int, symbol: str) -> dict:
    t = T0 + i * 60_000
    return {
        "exchange": "binance",
        "symbol": symbol,
        "agg_id": 1_000 + i,
        "price": 100.0 + i,
        "qty": 1.0,
        "first_trade_id": i,
        "last_trade_id": i,
        "event_time": t,
        "trade_time": t,
        "receive_time": t,
        "taker_side": "BUY",
    }


def cli(env, *args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def produce(bootstrap: str, topic: str, records: list[tuple[int, dict]], timestamp=None) -> None:
    """Each record alone, on the given partition, with ``timestamp`` (the trade time unless given; a
    catalogue topic's broker replaces it with the arrival time)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for partition, rec in records:
        p.produce(
            topic,
            key=f"binance:{rec['symbol']}".encode(),
            value=SERDE.encode("md.trades", rec),
            partition=partition,
            timestamp=timestamp or rec["trade_time"],
        )
        assert p.flush(10) == 0


@pytest.fixture
def env(kafka_bootstrap, topic_prefix, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    e = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    e.update(TAPEFLOW_BROKER=kafka_bootstrap, TAPEFLOW_TOPIC_PREFIX=topic_prefix, TAPEFLOW_HOME=str(tmp_path))
    return e


def consume_and_commit(bootstrap: str, group: str, topic: str, partition: int, count: int) -> None:
    """A consumer of `group` reads `count` records of one partition, commits, and stops."""
    c = Consumer(consumer_config(bootstrap, group))
    c.assign([TopicPartition(topic, partition, 0)])
    got = 0
    deadline = time.monotonic() + 30
    while got < count and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got += 1
    assert got == count
    c.commit(offsets=[TopicPartition(topic, partition, count)], asynchronous=False)
    c.close()


def test_lag_of_a_stopped_consumer_grows_per_partition_and_in_total(env, kafka_bootstrap, topic_prefix):
    topic = topic_prefix + "md.trades"
    group = topic_prefix + "reader"
    produce(
        kafka_bootstrap,
        topic,
        [(0, trade(i, "BTCUSDT")) for i in range(5)] + [(1, trade(i, "ETHUSDT")) for i in range(5, 8)],
    )
    consume_and_commit(kafka_bootstrap, group, topic, 0, 3)
    consume_and_commit(kafka_bootstrap, group, topic, 1, 3)

    res = cli(env, "topics", "lag", group, "--json")
    assert res.returncode == 0, res.stderr
    before = json.loads(res.stdout)
    assert [(p["partition"], p["committed"], p["end"], p["lag"]) for p in before["partitions"]] == [
        (0, 3, 5, 2),
        (1, 3, 3, 0),
    ]
    assert before["total_lag"] == 2 and before["group"] == group

    # the consumer is gone: what producers write now is all lag
    produce(kafka_bootstrap, topic, [(1, trade(i, "ETHUSDT")) for i in range(8, 12)])
    res = cli(env, "topics", "lag", group)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(group)
    rows = [line.split() for line in lines[2:-1]]
    assert rows == [[topic, "0", "3", "5", "2"], [topic, "1", "3", "7", "4"]]
    assert lines[-1].strip() == "total lag 6"

    # without a group: every group of this prefix, ours among them
    res = cli(env, "topics", "lag", "--json")
    assert res.returncode == 0, res.stderr
    groups = {g["group"]: g for g in map(json.loads, res.stdout.splitlines())}
    assert set(groups) == {group} and groups[group]["total_lag"] == 6


def test_lag_of_an_unknown_group_is_a_one_line_error(env, topic_prefix):
    res = cli(env, "topics", "lag", topic_prefix + "nobody")
    assert res.returncode == 1
    assert res.stderr.startswith("error: consumer group") and "Traceback" not in res.stderr


def test_describe_shows_the_groups_reading_a_topic_and_their_lag(env, kafka_bootstrap, topic_prefix):
    topic = topic_prefix + "md.trades"
    produce(kafka_bootstrap, topic, [(2, trade(i, "SOLUSDT")) for i in range(4)])
    consume_and_commit(kafka_bootstrap, topic_prefix + "slow", topic, 2, 1)
    res = cli(env, "topics", "describe", topic, "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert [(g["group"], g["total_lag"]) for g in info["groups"]] == [(topic_prefix + "slow", 3)]
    res = cli(env, "topics", "describe", topic)
    assert f"group {topic_prefix}slow (" in res.stdout and "lag 3 (2:3)" in res.stdout
    res = cli(env, "topics", "describe", topic_prefix + "md.book")
    assert "no consumer group has committed offsets here" in res.stdout


def _after_the_next_second() -> int:
    """Wait until the wall clock is past the next whole second; return that second (Unix ms)."""
    boundary = (int(time.time()) + 1) * 1000
    while time.time() * 1000 <= boundary:
        time.sleep(0.01)
    return boundary


def test_tail_from_a_time_starts_there_and_stops_at_the_end(env, kafka_bootstrap, topic_prefix):
    """md.trades is stamped by the broker on arrival (LogAppendTime): --from finds the records that
    arrived from that time on, whatever their event times."""
    topic = topic_prefix + "md.trades"
    produce(kafka_bootstrap, topic, [(i % 3, trade(i, "BTCUSDT")) for i in range(6)])
    boundary = _after_the_next_second()
    produce(kafka_bootstrap, topic, [(i % 3, trade(i, "BTCUSDT")) for i in range(6, 10)])
    start = datetime.fromtimestamp(boundary / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    res = cli(env, "topics", "tail", "md.trades", "--from", start, "--json")  # no --timeout: ends by itself
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert sorted(r["value"]["agg_id"] for r in rows) == [1006, 1007, 1008, 1009]
    assert all(r["timestamp"] >= boundary for r in rows)  # arrival stamps, not the trades' event times
    # an ISO time without a zone is UTC; one with an offset is honoured
    naive = start.removesuffix("Z")
    same = datetime.fromisoformat(naive).replace(tzinfo=UTC).astimezone().isoformat()
    for text in (naive, same):
        res = cli(env, "topics", "tail", "md.trades", "--from", text, "--json")
        assert len(res.stdout.splitlines()) == 4, (text, res.stdout, res.stderr)


def test_tail_from_a_relative_time_and_by_key(env, kafka_bootstrap, topic_prefix):
    """A relative --from is a time back from now, looked up by record timestamp; on a topic whose
    producer sets the timestamps (CreateTime, as a copy made by another tool may be) those count."""
    topic = topic_prefix + "created.md.trades"
    admin = admin_client(kafka_bootstrap)  # kept while the request runs: a freed client cancels it
    admin.create_topics([NewTopic(topic, 2, 1, config={"message.timestamp.type": "CreateTime"})])[topic].result(15)
    now = int(time.time() * 1000)
    produce(kafka_bootstrap, topic, [(0, trade(0, "BTCUSDT"))], timestamp=now - 3_600_000)  # an hour ago
    produce(
        kafka_bootstrap,
        topic,
        [(0, trade(1, "BTCUSDT")), (1, trade(2, "ETHUSDT")), (0, trade(3, "BTCUSDT"))],
        timestamp=now - 60_000,
    )  # a minute ago
    res = cli(env, "topics", "tail", "created.md.trades", "--from", "10m", "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(json.loads(line)["value"]["agg_id"] for line in res.stdout.splitlines()) == [1001, 1002, 1003]
    res = cli(env, "topics", "tail", "created.md.trades", "--from-beginning", "--key", "binance:BTCUSDT", "--json")
    assert sorted(json.loads(line)["value"]["agg_id"] for line in res.stdout.splitlines()) == [1000, 1001, 1003]
    res = cli(env, "topics", "tail", "md.trades", "--from", "10m", "--from-beginning")
    assert res.returncode == 2 and "exclude each other" in res.stderr
    res = cli(env, "topics", "tail", "md.trades", "--from", "yesterday")
    assert res.returncode == 1 and res.stderr.startswith("error: --from 'yesterday'")


def test_tail_follow_prints_records_written_after_it_reached_the_end(env, kafka_bootstrap, topic_prefix):
    topic = topic_prefix + "md.trades"
    produce(kafka_bootstrap, topic, [(0, trade(0, "BTCUSDT"))])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "topics",
            "tail",
            "md.trades",
            "--from-beginning",
            "--follow",
            "--json",
            "--max",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = json.loads(proc.stdout.readline())
        assert first["value"]["agg_id"] == 1000
        time.sleep(1.0)  # past the end now; without --follow it would have exited
        assert proc.poll() is None
        produce(kafka_bootstrap, topic, [(4, trade(1, "BTCUSDT"))])
        assert json.loads(proc.stdout.readline())["value"]["agg_id"] == 1001
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.communicate()
