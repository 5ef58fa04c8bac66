"""Carry the engine's state from one topic epoch to the next (``tapeflow_runtime.epochs``).

A rollover gives the engine a new group on new topics whose offsets start again at 0. Its state must
not start again: the 24-h windows, the cooldowns and the pending inputs are in each key's snapshot
(``KeyedEngine.snapshot``). So once the old epoch's worker has applied every input of the old topics
and stopped (its snapshots then contain everything), the newest snapshot of every key is copied from
the old epoch's changelog into the new one's, with its per-topic offsets cleared: they count records
of topics that no longer matter, and kept they would make the new worker skip the first records of
the new topics as "already applied". The new worker's Faust table restores from that changelog as
after any restart. Replacing, not merging: the copy is the state at the end of the old epoch.

Idempotent: copying again writes the same snapshots (the newest per key wins when the table restores),
so a rollover killed in the middle of the copy simply copies again.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import orjson
from confluent_kafka import Producer

from schemas.catalogue import SYMBOL_PARTITIONS
from tapeflow_runtime.kafka_client import admin_client, producer_config
from tapeflow_runtime.topic_reader import RawRecord, read_to_end

from .config import STATE_TABLE


def changelog_topic(app_id: str) -> str:
    """Faust's name for the state table's changelog of the engine group ``app_id``."""
    return f"{app_id}-{STATE_TABLE}-changelog"


def reset_offsets(blob: bytes) -> bytes:
    """A snapshot for a new epoch: the same state, no applied offsets (see the module doc)."""
    data = orjson.loads(zlib.decompress(blob))
    data["applied"] = {}
    return zlib.compress(orjson.dumps(data), 1)


def carry_engine_snapshots(bootstrap: str, from_app_id: str, to_app_id: str, *,
                           timeout_s: float = 60.0,
                           newest: Mapping[bytes, tuple[int, bytes]] | None = None) -> dict[bytes, tuple[int, bytes]]:
    """Copy the newest snapshot of every key from ``from_app_id``'s changelog to ``to_app_id``'s
    (same partition, offsets cleared); returns what it wrote: key -> (partition, snapshot as carried).
    ``newest`` (key -> (partition, snapshot)): the old worker's own copy of every key's newest snapshot,
    when it has them all (``EngineWorker.snapshots``); the changelog is then not read back, which took
    ~1.6 s of the features' pause on Tansu (a fresh consumer's fetches each wait out their max wait).
    The target topic is created if missing, as Faust would (its partitions must match the inputs')."""
    source = changelog_topic(from_app_id)
    target = changelog_topic(to_app_id)
    admin = admin_client(bootstrap)  # kept: its futures fail ("handle is terminating") once it is collected
    existing = admin.list_topics(timeout=10).topics
    if newest is None:
        if source not in existing:
            return {}  # the old epoch's engine never wrote state (no input reached it)
        records: dict[bytes, RawRecord] = {}
        for record in read_to_end(bootstrap, {source: None}, None, timeout_s=timeout_s)[source].records:
            if record.key is not None and record.value is not None:
                records[record.key] = record
        newest = {key: (record.partition, record.value) for key, record in records.items()}
    if not newest:
        return {}
    if target not in existing:
        from confluent_kafka.admin import NewTopic

        futures = admin.create_topics(
            [NewTopic(target, num_partitions=SYMBOL_PARTITIONS, replication_factor=-1)])
        for future in futures.values():
            try:
                future.result(timeout=15)
            except Exception as exc:  # noqa: BLE001 - created meanwhile by a starting worker is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
    carried: dict[bytes, tuple[int, bytes]] = {}
    for key, (partition, blob) in sorted(newest.items()):
        # one snapshot per request, flushed, so each is its own batch: Faust's recovery reads up to
        # ListOffsets(latest), which Tansu answers with the last batch's base offset + 1
        carried[key] = (partition, reset_offsets(blob))
        producer.produce(target, value=carried[key][1], key=key, partition=partition)
        if producer.flush(30) != 0:
            raise RuntimeError(f"carrying engine state into {target}: the broker did not acknowledge")
    return carried
