"""`tapeflow topics tail/describe` decode real Avro records from a real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.durations import format_duration_ms
from tapeflow_runtime.kafka_client import ensure_topics, producer_config

pytestmark = pytest.mark.integration


def trade(i: int, symbol: str) -> dict:
    return {
        "exchange": "binance",
        "symbol": symbol,
        "agg_id": 1_000 + i,
        "price": 67_000.5 + i,
        "qty": 0.012,
        "first_trade_id": 5_000 + i,
        "last_trade_id": 5_000 + i,
        "event_time": 1_700_000_000_000 + i,
        "trade_time": 1_700_000_000_000 + i,
        "receive_time": 1_700_000_000_050 + i,
        "taker_side": "BUY" if i % 2 else "SELL",
    }


def cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
def populated(kafka_bootstrap, topic_prefix, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    serde = AvroSerde(FileSchemaRegistry())
    p = Producer(producer_config(kafka_bootstrap))
    sent = [trade(i, "BTCUSDT" if i % 3 else "ETHUSDT") for i in range(12)]
    for rec in sent:
        p.produce(
            topic_prefix + "md.trades", key=f"binance:{rec['symbol']}".encode(), value=serde.encode("md.trades", rec)
        )
    p.produce(topic_prefix + "md.trades", key=b"binance:BTCUSDT", value=b"not avro at all")
    assert p.flush(10) == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_BROKER=kafka_bootstrap, TAPEFLOW_TOPIC_PREFIX=topic_prefix, TAPEFLOW_HOME=str(tmp_path))
    return env, sent


def test_tail_json_decodes_every_record(populated):
    env, sent = populated
    res = cli(env, "topics", "tail", "md.trades", "--from-beginning", "--max", "13", "--timeout", "5", "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(rows) == 13
    decoded = sorted((r["value"] for r in rows if "error" not in r), key=lambda v: v["agg_id"])
    assert decoded == sent  # every field round-trips, timestamps stay Unix ms
    bad = [r for r in rows if "error" in r]
    assert len(bad) == 1 and bad[0]["value"] == "not avro at all" and "magic byte" in bad[0]["error"]


def test_tail_symbol_filter_and_max(populated):
    env, sent = populated
    res = cli(env, "topics", "tail", "md.trades", "--from-beginning", "--symbol", "ETHUSDT", "--timeout", "3", "--json")
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["value"]["agg_id"] for r in sorted(rows, key=lambda r: r["value"]["agg_id"])] == [
        s["agg_id"] for s in sent if s["symbol"] == "ETHUSDT"
    ]
    res = cli(env, "topics", "tail", "md.trades", "--from-beginning", "--max", "2", "--json")
    assert len(res.stdout.splitlines()) == 2


def test_tail_from_end_with_timeout_prints_nothing_old(populated):
    env, _ = populated
    res = cli(env, "topics", "tail", "md.trades", "--timeout", "1.5", "--json")
    assert res.returncode == 0 and res.stdout == ""


def test_tail_unknown_topic_is_a_clear_error(populated):
    env, _ = populated
    res = cli(env, "topics", "tail", "md.nope", "--timeout", "1")
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_describe_shows_offsets_and_catalogue(populated, topic_prefix):
    env, sent = populated
    res = cli(env, "topics", "describe", topic_prefix + "md.trades", "--json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["messages"] == len(sent) + 1 and len(info["partitions"]) == info["catalogue"]["partitions"]
    assert info["catalogue"]["key"] == "exchange:symbol" and info["catalogue"]["value_schema"]
    assert info["config"]["cleanup.policy"] == "delete"
    # the broker stamps records on arrival: the first and last record times lie within this test's run
    now_ms = time.time() * 1000
    assert now_ms - 600_000 < info["first_record_ms"] <= info["last_record_ms"] <= now_ms
    text = cli(env, "topics", "describe", "md.trades")
    assert text.returncode == 0, text.stderr
    retention = format_duration_ms(int(info["config"]["retention.ms"]))
    assert f"retention {retention}, {len(sent) + 1} record(s), first " in text.stdout
    assert text.stdout.count(" UTC") >= 2  # the first and last record times
