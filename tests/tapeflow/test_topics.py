"""Topic creation from the catalogue against a real broker: complete, configured, idempotent."""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from schemas.catalogue import all_topics
from tapeflow_runtime.kafka_client import admin_client, describe_topics, ensure_topics

pytestmark = pytest.mark.integration


def test_every_catalogue_topic_is_created_with_its_partitions_and_policy(kafka_bootstrap, topic_prefix):
    results = ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    specs = {topic_prefix + t.name: t for t in all_topics()}
    assert {r.name for r in results} == set(specs)
    assert all(r.action == "created" for r in results)

    admin = admin_client(kafka_bootstrap)
    md = admin.list_topics(timeout=10).topics
    for name, spec in specs.items():
        assert len(md[name].partitions) == spec.partitions, name
    sample = [n for n in specs if n.endswith("md.trades") or n.endswith("risk.events")]
    futures = admin.describe_configs([ConfigResource("topic", n) for n in sample])
    for res, fut in futures.items():
        cfg = {k: v.value for k, v in fut.result(10).items()}
        assert cfg["cleanup.policy"] == specs[res.name].cleanup_policy


def test_topic_creation_is_idempotent(kafka_bootstrap, topic_prefix):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    again = ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    assert {r.action for r in again} == {"exists"}


def test_partition_mismatch_is_reported_not_altered(kafka_bootstrap, topic_prefix):
    spec = next(t for t in all_topics() if t.name == "md.trades")
    name = topic_prefix + spec.name
    admin = admin_client(kafka_bootstrap)
    admin.create_topics([NewTopic(name, num_partitions=spec.partitions + 1, replication_factor=1)])[name].result(10)
    # the controller has created it; the broker's metadata shows it a moment later (until then a create
    # request is answered "already exists", not with the partition count this test is about)
    deadline = time.monotonic() + 30
    while len(getattr(admin.list_topics(name, timeout=10).topics.get(name), "partitions", {})) != spec.partitions + 1:
        assert time.monotonic() < deadline, f"{name} not in the broker's metadata"
        time.sleep(0.05)
    results = {r.name: r for r in ensure_topics(kafka_bootstrap, prefix=topic_prefix, specs=[spec])}
    assert results[name].action == "mismatch" and f"{spec.partitions + 1} partitions" in results[name].detail
    described = describe_topics(kafka_bootstrap, [name])[0]
    assert len(described["partitions"]) == spec.partitions + 1


def test_describe_shows_an_open_transaction_and_the_last_stable_offset(kafka_bootstrap, topic_prefix):
    """A transaction left open on a partition: the last stable offset stays at its start while the high
    watermark counts its records; once committed, the two agree (plus the commit marker)."""
    from confluent_kafka import Producer

    from tapeflow_runtime.kafka_client import producer_config

    name = topic_prefix + "md.trades"
    ensure_topics(kafka_bootstrap, prefix=topic_prefix, specs=[next(t for t in all_topics() if t.name == "md.trades")])
    plain = Producer(producer_config(kafka_bootstrap))
    for _ in range(3):
        plain.produce(name, key=b"k", value=b"v", partition=0)
    assert plain.flush(15) == 0
    tx = Producer(producer_config(kafka_bootstrap, **{"transactional.id": topic_prefix + "describe-test"}))
    tx.init_transactions(30)
    tx.begin_transaction()
    for _ in range(5):
        tx.produce(name, key=b"k", value=b"v", partition=0)
    assert tx.flush(15) == 0

    [during] = describe_topics(kafka_bootstrap, [name])
    p0 = during["partitions"][0]
    assert (p0["low"], p0["last_stable"], p0["high"], p0["open_transaction"]) == (0, 3, 8, True)
    assert not any(p["open_transaction"] for p in during["partitions"][1:])

    tx.commit_transaction(30)
    [after] = describe_topics(kafka_bootstrap, [name])
    p0 = after["partitions"][0]
    assert p0["last_stable"] == p0["high"] == 9 and not p0["open_transaction"]  # 8 records + the marker
