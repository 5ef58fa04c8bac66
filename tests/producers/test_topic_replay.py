"""`tapeflow replay`: a time range of the md.* topics copied into a namespace, and the pipeline rehearsed on it.

The original run is a generated session replayed through the fake exchange, producer and engine (the
engine's signals are the ones to reproduce). `tapeflow replay --to-prefix NAME` then copies the range
into `<prefix>NAME.*` and `tapeflow engine --input-prefix NAME` runs on the copy: its bars, features and
signals equal the original run's, the copies keep their bytes, keys and timestamps (so their event
times), and nothing is written into the live topics. A second copy of a sub-range takes exactly the
records stamped inside it. Pacing (`--speed`) is checked on an injected clock.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from producers.topic_replay import TopicReplay
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tests.support.replay_runs import (
    OUTPUTS,
    assert_same,
    drain_engine,
    read_outputs,
    replay,
    service_env,
    start_engine,
)

pytestmark = pytest.mark.integration

INPUTS = ("md.trades", "md.book", "md.mark", "md.liquidations", "md.indicators")


def raw_records(read_topic, bootstrap: str, topic: str) -> list[tuple[int, bytes, bytes, int]]:
    """(partition, key, value bytes, timestamp) of every record."""
    return [(r["partition"], r["key"], r["value"], r["timestamp"])
            for r in read_topic(bootstrap, topic, raw=True, settled=True)]


def cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tapeflow", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.timeout(1200)
def test_replaying_a_range_into_a_namespace_reproduces_the_original_signals(kafka_bootstrap, topic_prefix,
                                                                            read_topic, tmp_path):
    original, _, _ = replay(kafka_bootstrap, topic_prefix, read_topic, tmp_path / "original", seed=31,
                            duration_s=240, speed="max")
    assert original["signals"], "the original run must have signals to reproduce"
    live = {t: raw_records(read_topic, kafka_bootstrap, topic_prefix + t) for t in INPUTS}
    stamps = sorted(ts for records in live.values() for *_, ts in records)
    env = service_env(kafka_bootstrap, topic_prefix, tmp_path / "rehearsal")
    (tmp_path / "rehearsal").mkdir()

    res = cli(env, "replay", "--to-prefix", "rehearsal", "--from", str(stamps[0]), "--to", str(stamps[-1] + 1),
              "--speed", "max", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert summary["copied"] == {t: len(live[t]) for t in INPUTS if live[t]}, "the replay's own count"
    assert summary["undelivered"] == 0 and summary["skipped_before"] == 0
    namespace = topic_prefix + "rehearsal."
    copies = {t: raw_records(read_topic, kafka_bootstrap, namespace + t) for t in INPUTS}
    for t in INPUTS:  # every record once, same partition, key, bytes and timestamp (hence event times)
        assert sorted(copies[t]) == sorted(live[t]), t

    engine = start_engine(env, tmp_path / "rehearsal", "--input-prefix", "rehearsal")
    try:
        drain_engine(engine, kafka_bootstrap, namespace, read_topic)
    finally:
        engine.kill()
    assert_same(read_outputs(kafka_bootstrap, namespace, read_topic), original, "rehearsal vs original")
    assert read_outputs(kafka_bootstrap, topic_prefix, read_topic) == original  # the live outputs untouched
    for t in OUTPUTS:
        assert len(raw_records(read_topic, kafka_bootstrap, topic_prefix + t)) == len(original[t]), t

    # a sub-range: exactly the records stamped inside it
    middle = stamps[len(stamps) // 2]
    res = cli(env, "replay", "--to-prefix", "half", "--from", str(middle), "--to", str(stamps[-1] + 1),
              "--topics", "md.trades,md.mark", "--symbols", "BTCUSDT", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    serde = AvroSerde(FileSchemaRegistry())
    for t in ("md.trades", "md.mark"):
        want = sorted(r for r in live[t] if r[3] >= middle and serde.decode(r[2])["symbol"] == "BTCUSDT")
        assert json.loads(res.stdout)["copied"][t] == len(want), f"{t}: the replay's own count"
        assert sorted(raw_records(read_topic, kafka_bootstrap, topic_prefix + "half." + t)) == want, t
    assert raw_records(read_topic, kafka_bootstrap, topic_prefix + "half.md.book") == []

    # into the live topics themselves, or an unknown topic: refused with one line
    res = cli(env, "replay", "--to-prefix", "bad name", "--from", str(middle), "--to", str(stamps[-1]))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    res = cli(env, "replay", "--to-prefix", "x", "--from", str(middle), "--to", str(stamps[-1]), "--topics", "orders")
    assert res.returncode == 2 and "cannot replay orders" in res.stderr


def test_replay_paces_on_event_time(kafka_bootstrap, topic_prefix, read_topic, tmp_path):
    """At 10x a range spanning S seconds of event time takes S/10 s on the (injected) clock."""
    from stream_apps.faust_app.session import SessionProducer, synthetic_session

    serde = AvroSerde(FileSchemaRegistry())
    session = synthetic_session(duration_ms=120_000, trades_per_s=2.0, seed=5)
    producer = SessionProducer(kafka_bootstrap, serde, topic_prefix)
    producer.produce_all(session)
    producer.flush()

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    job = TopicReplay(kafka_bootstrap, serde, source_prefix=topic_prefix, target_prefix=topic_prefix + "paced.",
                      topics=["md.trades", "md.mark"], from_ms=0, to_ms=2**62, speed=10.0, sleep=sleep,
                      pace_clock=lambda: now[0])
    summary = job.run()
    span_s = (summary.last_event_ms - summary.first_event_ms) / 1000
    assert summary.copied["md.trades"] == sum(1 for r in session if r.topic == "md.trades")
    assert span_s > 100 and now[0] == pytest.approx(span_s / 10, rel=0.02)


def test_replay_copies_exactly_the_records_stamped_in_the_range(kafka_bootstrap, topic_prefix, read_topic):
    """Record timestamps in a partition are only nearly ordered (several keys, several writers): the
    start offset found by timestamp may be followed by a record stamped before `--from`, and the
    copy must skip it; the partition ends at its end offset, not at a silence."""
    from confluent_kafka import Producer

    from stream_apps.faust_app.session import synthetic_session
    from tapeflow_runtime.kafka_client import ensure_topics, producer_config

    serde = AvroSerde(FileSchemaRegistry())
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    trades = [r for r in synthetic_session(duration_ms=60_000, trades_per_s=1.0, seed=9) if r.topic == "md.trades"]
    trades = [r for r in trades if r.key == trades[0].key][:6]
    stamps = [1_000, 3_000, 2_000, 4_000, 1_500, 5_000]  # out of order, as two writers would leave them
    producer = Producer(producer_config(kafka_bootstrap, **{"linger.ms": 0}))
    for record, stamp in zip(trades, stamps, strict=True):
        value = serde.encode("md.trades", record.value)
        producer.produce(topic_prefix + "md.trades", key=record.key.encode(), value=value, partition=0, timestamp=stamp)
        producer.flush(10)
    job = TopicReplay(kafka_bootstrap, serde, source_prefix=topic_prefix, target_prefix=topic_prefix + "range.",
                      topics=["md.trades"], from_ms=2_000, to_ms=4_500, stall_s=60)
    summary = job.run()
    copied = sorted(ts for *_, ts in raw_records(read_topic, kafka_bootstrap, topic_prefix + "range.md.trades"))
    assert copied == [2_000, 3_000, 4_000]
    assert summary.copied == {"md.trades": 3} and summary.skipped_before == 1 and summary.undelivered == 0
