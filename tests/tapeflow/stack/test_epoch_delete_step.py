"""The rollover's last step: the old epoch's topics must go; its consumer groups go when the broker
lets them, and a refused or failed group deletion is logged, never holds the rollover (issue 21)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from tapeflow.stack import epochs as epochs_module
from tapeflow.stack.epochs import EPOCH_GROUPS, EpochRoller
from tapeflow_runtime.epochs import EpochState


def done(error: Exception | None = None) -> Future:
    future: Future = Future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
    return future


class FakeAdmin:
    def __init__(self, topics: list[str], groups_error: Exception | None = None, raise_now: bool = False):
        self.topics = {t: SimpleNamespace(partitions={0: None}) for t in topics}
        self.groups_error, self.raise_now = groups_error, raise_now
        self.deleted_topics: list[str] = []
        self.deleted_groups: list[str] = []

    def list_topics(self, timeout=None):
        return SimpleNamespace(topics=dict(self.topics))

    def delete_topics(self, names, operation_timeout=None):
        self.deleted_topics += names
        for name in names:
            self.topics.pop(name, None)
        return {n: done() for n in names}

    def delete_consumer_groups(self, groups, request_timeout=None):
        if self.raise_now:
            raise KafkaException(KafkaError(KafkaError._UNSUPPORTED_FEATURE))
        self.deleted_groups += groups
        return {g: done(self.groups_error) for g in groups}


def roller_on_delete_step(tmp_path, monkeypatch, admin: FakeAdmin, retention_s: float | None = 0.0,
                          retention: str = "0") -> tuple[EpochRoller, list[str]]:
    """A roller at the delete step of the rollover from epoch 1 (slot 1) to 2; ``retention_s`` 0 keeps
    no finished segment (the catalogue topics go too)."""
    said: list[str] = []
    settings = SimpleNamespace(topic_prefix="s.", epoch_check_s=1.0, topic_retention=retention,
                               topic_retention_s=lambda: retention_s, topic_memory_mb=0)
    sup = SimpleNamespace(settings=settings, paths=SimpleNamespace(home=tmp_path), addresses={"broker": "fake:9092"},
                          running={})
    roller = EpochRoller(sup, said.append)
    roller.state = EpochState(epoch=1, step="delete", slot=1, next_slot=0)
    monkeypatch.setattr(epochs_module, "admin_client", lambda bootstrap: admin)
    return roller, said


def test_with_retention_the_catalogue_topics_stay_as_a_segment_and_go_once_it_expires(tmp_path, monkeypatch):
    admin = FakeAdmin(["s.e1.md.trades", "s.e1.signals", "s.e1.tapeflow-engine-changelog", "s.md.trades"])
    roller, said = roller_on_delete_step(tmp_path, monkeypatch, admin, retention_s=3600.0, retention="1h")
    ends = {("s.e1.md.trades", 0): 120, ("s.e1.signals", 0): 7}
    monkeypatch.setattr(epochs_module, "true_ends", lambda bootstrap, tps, last_ms=None: (
        last_ms.update({tp: 1_700_000_000_000 for tp in tps}) if last_ms is not None else None) or
        {tp: ends[tp] for tp in tps})
    roller.state.starts = {"signals": {0: 5}}  # the carried executor state opens the epoch
    roller.state.bases = {"md.trades": {0: 1_000}, "signals": {0: 3}}
    assert roller._step_delete("fake:9092")
    assert admin.deleted_topics == ["s.e1.tapeflow-engine-changelog"]  # the engine's own topics only
    assert admin.deleted_groups == [f"s.e1.{g}" for g in EPOCH_GROUPS]
    roller._advance()
    state = EpochState.load(tmp_path / "epochs.json")
    assert (state.epoch, state.slot, state.step, state.rollovers) == (2, 0, None, 1)
    (segment,) = state.segments
    assert (segment.epoch, segment.slot, segment.last_ms) == (1, 1, 1_700_000_000_000)
    assert segment.ends == {"md.trades": {0: 120}, "signals": {0: 7}} and segment.records() == 120 + 2
    # logical offsets go on from the segment's: its own records only (the carried 5 signals are not)
    assert state.bases == {"md.trades": {0: 1_120}, "signals": {0: 5}}
    assert state.free_slot() == 1 + 1  # slot 1 is held by the segment, 0 by the current epoch
    chain = state.chain("s.")
    assert chain.prefixes == ["s.e1.", "s."] and chain.links[0].closed and not chain.links[1].closed
    # within the hour it stays (retention counts from the close); an hour later it goes, topics and
    # all, and its slot is free again
    roller.state = state
    monkeypatch.setattr(epochs_module.time, "time", lambda: segment.closed_at + 3_599)
    roller._prune("fake:9092")
    assert admin.deleted_topics == ["s.e1.tapeflow-engine-changelog"] and len(roller.state.segments) == 1
    monkeypatch.setattr(epochs_module.time, "time", lambda: segment.closed_at + 3_601)
    roller._next_prune = 0.0
    roller._prune("fake:9092")
    assert sorted(admin.deleted_topics[1:]) == ["s.e1.md.trades", "s.e1.signals"]
    assert EpochState.load(tmp_path / "epochs.json").segments == [] and roller.state.free_slot() == 1
    assert "past the retention of 1h" in said[-1]


def test_the_memory_budget_deletes_the_oldest_segment_first_and_says_so(tmp_path, monkeypatch):
    from tapeflow_runtime.epochs import Segment

    admin = FakeAdmin(["s.e1.md.trades", "s.e2.md.trades", "s.md.trades"])
    roller, said = roller_on_delete_step(tmp_path, monkeypatch, admin, retention_s=None, retention="forever")
    roller.settings.topic_memory_mb = 100
    roller.state = EpochState(epoch=5, slot=0, segments=[Segment(3, 2, 1.0), Segment(4, 1, 2.0)])
    monkeypatch.setattr(roller, "_broker_rss_mb", lambda: 150.0)
    roller._prune("fake:9092")
    assert admin.deleted_topics == ["s.e2.md.trades"] and [s.epoch for s in roller.state.segments] == [4]
    assert "over the memory budget" in said[-1]
    assert "budget 100 MB" in roller.state.cut and "history cut to" in roller.state.cut
    monkeypatch.setattr(roller, "_broker_rss_mb", lambda: 90.0)
    roller._next_prune = 0.0
    roller._prune("fake:9092")
    assert [s.epoch for s in roller.state.segments] == [4]  # under the budget: kept (retention: forever)


def test_the_delete_step_removes_the_old_epochs_topics_and_groups(tmp_path, monkeypatch):
    admin = FakeAdmin(["s.e1.md.trades", "s.e1.signals", "s.e2.md.trades", "s.md.trades"])
    roller, said = roller_on_delete_step(tmp_path, monkeypatch, admin)
    assert roller._step_delete("fake:9092")
    assert sorted(admin.deleted_topics) == ["s.e1.md.trades", "s.e1.signals"]
    assert admin.deleted_groups == [f"s.e1.{g}" for g in EPOCH_GROUPS]
    assert said[-1] == f"epochs     deleted 2 topics and {len(EPOCH_GROUPS)} consumer groups of epoch 1"


@pytest.mark.parametrize("raise_now", [False, True], ids=["a group's future fails", "the request is refused"])
def test_a_failed_group_deletion_is_logged_and_the_rollover_goes_on(tmp_path, monkeypatch, raise_now):
    error = KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))
    admin = FakeAdmin(["s.e1.md.trades"], groups_error=error, raise_now=raise_now)
    roller, said = roller_on_delete_step(tmp_path, monkeypatch, admin)
    assert roller._step_delete("fake:9092")
    assert admin.deleted_topics == ["s.e1.md.trades"]
    assert any("could not delete the consumer groups of epoch 1" in line for line in said), said
    assert said[-1] == "epochs     deleted 1 topics and 0 consumer groups of epoch 1"


def test_a_failed_topic_deletion_still_fails_the_step_so_it_is_retried(tmp_path, monkeypatch):
    admin = FakeAdmin(["s.e1.md.trades"])
    admin.delete_topics = lambda names, operation_timeout=None: {  # type: ignore[method-assign]
        n: done(KafkaException(KafkaError(KafkaError.REQUEST_TIMED_OUT))) for n in names}
    roller, _said = roller_on_delete_step(tmp_path, monkeypatch, admin)
    with pytest.raises(KafkaException):
        roller._step_delete("fake:9092")


@pytest.mark.integration
def test_a_live_producer_does_not_bring_a_deleted_epoch_topic_back(kafka_bootstrap, topic_prefix):
    """The live producer outlives epochs. With librdkafka's producer default (auto-create allowed),
    its periodic metadata refresh re-created every deleted topic it had written, as an empty
    4-partition topic on Tansu, undoing the delete step within 5 minutes (bench_broker_epochs);
    ``producers.service`` gives it ``EPOCH_PRODUCER_CONFIG``."""
    import time

    from confluent_kafka import Producer
    from confluent_kafka.admin import NewTopic

    from tapeflow_runtime.epochs import EPOCH_PRODUCER_CONFIG
    from tapeflow_runtime.kafka_client import admin_client, producer_config

    topic = topic_prefix + "e1.md.trades"
    admin = admin_client(kafka_bootstrap)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])[topic].result(30)
    producer = Producer(producer_config(kafka_bootstrap, **EPOCH_PRODUCER_CONFIG,
                                        **{"topic.metadata.refresh.interval.ms": 500}))
    producer.produce(topic, value=b"x")
    assert producer.flush(30) == 0
    admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # several metadata refreshes
        producer.poll(0.2)
        assert topic not in admin.list_topics(timeout=10).topics


@pytest.mark.integration
def test_a_name_two_epochs_old_comes_back_empty_with_no_offsets_and_the_live_producer_writes_to_it(
        kafka_bootstrap, topic_prefix):
    """What the two name slots (``tapeflow_runtime.epochs``) rely on, on the broker itself: a topic
    deleted by one rollover and created again by the next starts at offset 0 with no committed offset
    left from its last life (else the new sink would skip that many records), and the live producer,
    an idempotent one that outlives epochs, writes to it again without a sequence error, whether or
    not a metadata refresh saw the deletion in between."""
    import time

    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    from tapeflow_runtime.epochs import EPOCH_PRODUCER_CONFIG
    from tapeflow_runtime.kafka_client import admin_client, consumer_config, end_offsets, producer_config

    slot, other = topic_prefix + "e1.md.trades", topic_prefix + "md.trades"
    admin = admin_client(kafka_bootstrap)
    errors: list[str] = []
    producer = Producer(producer_config(kafka_bootstrap, **EPOCH_PRODUCER_CONFIG, **{
        "topic.metadata.refresh.interval.ms": 300, "error_cb": lambda e: errors.append(str(e))}))

    def life(topic: str, records: int, settle_s: float) -> tuple[int, int]:
        """Create ``topic``, write ``records`` one batch each, commit a group at the end, delete it;
        returns (end offset before the writes, committed offset before the commit)."""
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=-1)])[topic].result(30)
        consumer = Consumer(consumer_config(kafka_bootstrap, topic_prefix + "tapeflow-sink"))
        try:
            start = end_offsets(consumer, [(topic, 0)], 10)[(topic, 0)]
            before = consumer.committed([TopicPartition(topic, 0)], 10)[0].offset
            for i in range(records):
                producer.produce(topic, value=b"r%d" % i)
                assert producer.flush(30) == 0
            assert end_offsets(consumer, [(topic, 0)], 10)[(topic, 0)] == records
            consumer.commit(offsets=[TopicPartition(topic, 0, records)], asynchronous=False)
        finally:
            consumer.close()
        admin.delete_topics([topic], operation_timeout=30)[topic].result(60)
        deadline = time.monotonic() + settle_s  # a refresh may (or not) see it gone
        while time.monotonic() < deadline:
            producer.poll(0.1)
        return start, before

    lives = [life(slot if n % 2 else other, 40 + n, settle_s=1.0 if n < 3 else 0.0) for n in range(6)]
    assert lives == [(0, -1001)] * 6  # every life: empty, and no offset of the group's last life
    assert not errors, errors
