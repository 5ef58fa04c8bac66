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
