"""`tapeflow replay`: a time range of the md.* topics copied into a namespace, and the pipeline rehearsed on it.

The original run is a generated session replayed through the fake exchange, producer and engine (the
engine's signals are the ones to reproduce). `tapeflow replay --to-prefix NAME` then copies the range
into `<prefix>NAME.*` and `tapeflow engine --input-prefix NAME` runs on the copy: its bars, features and
signals equal the original run's, the copies keep their bytes, keys and partitions (so their event
times; their timestamps are their own arrival in the namespace, the topics being LogAppendTime), and
nothing is written into the live topics. `--from/--to` are arrival times (record timestamps): a second
copy of a sub-range takes exactly the records that arrived inside it. Pacing (`--speed`) follows event
time, checked on an injected clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

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
    return [
        (r["partition"], r["key"], r["value"], r["timestamp"])
        for r in read_topic(bootstrap, topic, raw=True, settled=True)
    ]


def unstamped(records) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value bytes), sorted: what a copy keeps (its timestamp is its own arrival)."""
    return sorted(r[:3] for r in records)


def now_ms() -> int:
    return int(time.time() * 1000)


def cli(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args], env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.timeout(1200)
def test_replaying_a_range_into_a_namespace_reproduces_the_original_signals(
    kafka_bootstrap, topic_prefix, read_topic, tmp_path
):
    original, _, _ = replay(
        kafka_bootstrap, topic_prefix, read_topic, tmp_path / "original", seed=31, duration_s=240, speed="max"
    )
    assert original["signals"], "the original run must have signals to reproduce"
    live = {t: raw_records(read_topic, kafka_bootstrap, topic_prefix + t) for t in INPUTS}
    stamps = sorted(ts for records in live.values() for *_, ts in records)
    env = service_env(kafka_bootstrap, topic_prefix, tmp_path / "rehearsal")
    (tmp_path / "rehearsal").mkdir()

    copied_from = now_ms()
    res = cli(
        env,
        "replay",
        "--to-prefix",
        "rehearsal",
        "--from",
        str(stamps[0]),
        "--to",
        str(stamps[-1] + 1),
        "--speed",
        "max",
        "--json",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout)
    assert summary["copied"] == {t: len(live[t]) for t in INPUTS if live[t]}, "the replay's own count"
    assert summary["undelivered"] == 0 and summary["skipped_before"] == 0
    assert summary["in_range"] == summary["read"] == len(stamps)
    namespace = topic_prefix + "rehearsal."
    copies = {t: raw_records(read_topic, kafka_bootstrap, namespace + t) for t in INPUTS}
    for t in INPUTS:  # every record once, same partition, key and bytes (hence event times)
        assert unstamped(copies[t]) == unstamped(live[t]), t
        assert all(ts >= copied_from for *_, ts in copies[t]), f"{t}: copies are stamped on their own arrival"

    engine = start_engine(env, tmp_path / "rehearsal", "--input-prefix", "rehearsal")
    try:
        drain_engine(engine, kafka_bootstrap, namespace, read_topic)
    finally:
        engine.kill()
    assert_same(read_outputs(kafka_bootstrap, namespace, read_topic), original, "rehearsal vs original")
    assert read_outputs(kafka_bootstrap, topic_prefix, read_topic) == original  # the live outputs untouched
    for t in OUTPUTS:
        assert len(raw_records(read_topic, kafka_bootstrap, topic_prefix + t)) == len(original[t]), t

    # a sub-range: exactly the records that arrived inside it (by the live topics' arrival stamps)
    middle = stamps[len(stamps) // 2]
    assert stamps[0] < middle, "the original run's records arrived over more than one millisecond"
    res = cli(
        env,
        "replay",
        "--to-prefix",
        "half",
        "--from",
        str(middle),
        "--to",
        str(stamps[-1] + 1),
        "--topics",
        "md.trades,md.mark",
        "--symbols",
        "BTCUSDT",
        "--json",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    serde = AvroSerde(FileSchemaRegistry())
    for t in ("md.trades", "md.mark"):
        want = unstamped(r for r in live[t] if r[3] >= middle and serde.decode(r[2])["symbol"] == "BTCUSDT")
        assert json.loads(res.stdout)["copied"][t] == len(want), f"{t}: the replay's own count"
        assert unstamped(raw_records(read_topic, kafka_bootstrap, topic_prefix + "half." + t)) == want, t
    assert raw_records(read_topic, kafka_bootstrap, topic_prefix + "half.md.book") == []

    # into the live topics themselves, or an unknown topic: refused with one line
    res = cli(env, "replay", "--to-prefix", "bad name", "--from", str(middle), "--to", str(stamps[-1]))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    res = cli(env, "replay", "--to-prefix", "x", "--from", str(middle), "--to", str(stamps[-1]), "--topics", "orders")
    assert res.returncode == 2 and "cannot replay orders" in res.stderr


def test_replay_paces_on_event_time(kafka_bootstrap, topic_prefix, read_topic, tmp_path):
    """At 10x a range spanning S seconds of event time takes S/10 s on the (injected) clock, although
    the whole session arrived at the broker within a moment (arrival time is not what is paced)."""
    from stream_apps.faust_app.session import SessionProducer, synthetic_session
    from tapeflow_runtime.kafka_client import ensure_topics

    serde = AvroSerde(FileSchemaRegistry())
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)  # the broker creates no topic on first produce
    session = synthetic_session(duration_ms=120_000, trades_per_s=2.0, seed=5)
    producer = SessionProducer(kafka_bootstrap, serde, topic_prefix)
    producer.produce_all(session)
    producer.flush()

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    job = TopicReplay(
        kafka_bootstrap,
        serde,
        source_prefix=topic_prefix,
        target_prefix=topic_prefix + "paced.",
        topics=["md.trades", "md.mark"],
        from_ms=0,
        to_ms=2**62,
        speed=10.0,
        sleep=sleep,
        pace_clock=lambda: now[0],
    )
    summary = job.run()
    span_s = (summary.last_event_ms - summary.first_event_ms) / 1000
    assert summary.copied["md.trades"] == sum(1 for r in session if r.topic == "md.trades")
    assert span_s > 100 and now[0] == pytest.approx(span_s / 10, rel=0.02)


def _produce_one_by_one(bootstrap: str, topic: str, serde: AvroSerde, records, timestamps=None) -> list[int]:
    """Each record into partition 0, one delivery at a time, each in a later millisecond than the last
    one's stamp; the timestamps the broker kept (its arrival stamps on a LogAppendTime topic, the
    producer's on a CreateTime one), as delivered."""
    from confluent_kafka import Producer

    from tapeflow_runtime.kafka_client import producer_config

    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
    kept: list[int] = []

    def delivered(err, msg) -> None:
        assert err is None, err
        kept.append(msg.timestamp()[1])

    for i, record in enumerate(records):
        while kept and now_ms() <= kept[-1]:  # the broker's clock is this machine's
            time.sleep(0.001)
        producer.produce(
            topic,
            key=record.key.encode(),
            value=serde.encode("md.trades", record.value),
            partition=0,
            on_delivery=delivered,
            **({} if timestamps is None else {"timestamp": timestamps[i]}),
        )
        assert producer.flush(30) == 0 and len(kept) == i + 1
    return kept


def _trades(n: int):
    from stream_apps.faust_app.session import synthetic_session

    trades = [r for r in synthetic_session(duration_ms=60_000, trades_per_s=1.0, seed=9) if r.topic == "md.trades"]
    return [r for r in trades if r.key == trades[0].key][:n]


def test_replay_copies_exactly_the_records_that_arrived_in_the_range(kafka_bootstrap, topic_prefix, read_topic):
    """`--from/--to` are arrival times: on the catalogue's LogAppendTime topics the broker's own stamps
    select the records, exact at both ends; the partition ends at the range's last offset, never at a
    silence, and what arrives after `--to` is not read."""
    from tapeflow_runtime.kafka_client import ensure_topics

    serde = AvroSerde(FileSchemaRegistry())
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    trades = _trades(6)
    asked = [now_ms() - 86_400_000] * len(trades)  # a producer's own stamp, a day old: overwritten on arrival
    arrived = _produce_one_by_one(kafka_bootstrap, topic_prefix + "md.trades", serde, trades, timestamps=asked)
    assert arrived == sorted(set(arrived)) and arrived[0] > asked[0], "LogAppendTime: stamped on arrival"
    job = TopicReplay(
        kafka_bootstrap,
        serde,
        source_prefix=topic_prefix,
        target_prefix=topic_prefix + "range.",
        topics=["md.trades"],
        from_ms=arrived[1],
        to_ms=arrived[4],
        stall_s=60,
    )
    summary = job.run()
    copies = raw_records(read_topic, kafka_bootstrap, topic_prefix + "range.md.trades")
    assert [value for _, _, value, _ in copies] == [serde.encode("md.trades", t.value) for t in trades[1:4]]
    assert all(ts >= arrived[-1] for *_, ts in copies), "a copy is stamped on its own arrival"
    assert summary.copied == {"md.trades": 3} and summary.skipped_before == 0 and summary.undelivered == 0
    assert summary.in_range == summary.read == 3


def test_replay_skips_records_stamped_before_the_range_after_its_start(kafka_bootstrap, topic_prefix, read_topic):
    """Stamps in a partition only grow while the broker's clock does: after a step back (or on a topic
    stamped by its producers, CreateTime, that an external broker may hold) the start offset found by
    timestamp may be followed by a record stamped before `--from`, and the copy must skip it. Such a
    topic is made here as CreateTime (ensure_topics never alters an existing topic)."""
    from confluent_kafka.admin import NewTopic

    from tapeflow_runtime.kafka_client import admin_client, topic_metadata

    serde = AvroSerde(FileSchemaRegistry())
    source = topic_prefix + "md.trades"
    admin = admin_client(kafka_bootstrap)
    admin.create_topics(
        [NewTopic(source, num_partitions=1, replication_factor=-1, config={"message.timestamp.type": "CreateTime"})]
    )[source].result(30)
    assert topic_metadata(admin, source, timeout_s=30) is not None
    stamps = [1_000, 3_000, 2_000, 4_000, 1_500, 5_000]  # out of order, as a clock step back leaves them
    trades = _trades(6)
    assert _produce_one_by_one(kafka_bootstrap, source, serde, trades, timestamps=stamps) == stamps
    job = TopicReplay(
        kafka_bootstrap,
        serde,
        source_prefix=topic_prefix,
        target_prefix=topic_prefix + "range.",
        topics=["md.trades"],
        from_ms=2_000,
        to_ms=4_500,
        stall_s=60,
    )
    summary = job.run()
    copies = raw_records(read_topic, kafka_bootstrap, topic_prefix + "range.md.trades")
    # offsets 1..4 lie in the range by ListOffsets (first stamped >= 2000, first stamped >= 4500);
    # offset 4 (stamped 1500) is skipped
    assert [value for _, _, value, _ in copies] == [serde.encode("md.trades", t.value) for t in trades[1:4]]
    assert summary.copied == {"md.trades": 3} and summary.skipped_before == 1 and summary.undelivered == 0
