"""`run_backfill` end to end on a real broker: archives in, md.trades records out, read back and decoded.

The archives are generated here (tests.support.backfill) with known anomalies; expected records and
counts are derived from how the archives were built, never from the backfill's own output.
"""

from __future__ import annotations

import hashlib
import json
import time
import zipfile
from datetime import date
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from producers.backfill import (
    BackfillError,
    ChecksumMismatchError,
    format_summary,
    run_backfill,
)
from producers.backfill.checkpoint import Checkpoint
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import admin_client, consumer_config
from tests.support.backfill import (
    HEADER,
    ArchiveServer,
    csv_row,
    expected_record,
    stem,
    write_csv,
    write_zip,
)

pytestmark = pytest.mark.integration

SYMBOL = "BTCUSDT"
D1, D2, D3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)
RECEIVE_TIME = 1_720_000_000_000
SERDE = AvroSerde(FileSchemaRegistry())


def clock() -> int:
    return RECEIVE_TIME


# --- archives with known anomalies ----------------------------------------------------------------
# Day 1 (zip, header): ids 1000..1019; a bad row (price "abc") at line 7; id 1007 repeated after 1008.
# Day 2 (zip, no header): ids 1020..1039 without 1030..1032 (a gap of 3); 1026 before 1025 (swapped);
#        a 6-field row at line 15.
# Day 3 (plain csv, header): ids 1045..1054, so 1040..1044 are missing across the day boundary.
DAY1_IDS = list(range(1000, 1020))
DAY2_IDS = [i for i in range(1020, 1040) if not 1030 <= i <= 1032]
DAY3_IDS = list(range(1045, 1055))
BAD_DAY1 = "1006,abc,0.010,5003018,5003018,1704067206017,false"
BAD_DAY2 = "1500,42000.10,0.010,5004500,5004500,1704153600017"


def day1_lines() -> list[str]:
    rows = [csv_row(i, D1) for i in DAY1_IDS]
    rows.insert(DAY1_IDS.index(1009), csv_row(1007, D1))  # duplicate after 1008
    rows.insert(5, BAD_DAY1)  # header is line 1, so this is line 7
    return [HEADER, *rows]


def day2_lines() -> list[str]:
    ids = list(DAY2_IDS)
    a, b = ids.index(1025), ids.index(1026)
    ids[a], ids[b] = ids[b], ids[a]
    rows = [csv_row(i, D2) for i in ids]
    rows.insert(14, BAD_DAY2)  # no header: line 15
    return rows


def day3_lines() -> list[str]:
    return [HEADER, *(csv_row(i, D3) for i in DAY3_IDS)]


def expected_all() -> list[dict]:
    return (
        [expected_record(i, D1, RECEIVE_TIME) for i in DAY1_IDS]
        + [expected_record(i, D2, RECEIVE_TIME) for i in DAY2_IDS]
        + [expected_record(i, D3, RECEIVE_TIME) for i in DAY3_IDS]
    )


@pytest.fixture
def archive_dir(tmp_path) -> Path:
    d = tmp_path / "archives"
    d.mkdir()
    write_zip(d, SYMBOL, D1, day1_lines())
    write_zip(d, SYMBOL, D2, day2_lines(), checksum=None)
    write_csv(d, SYMBOL, D3, day3_lines())
    return d


# --- reading topics back -----------------------------------------------------------------------------
def consume(bootstrap: str, topic: str) -> list:
    """Every record of `topic`, per partition in offset order: read until every partition reported its
    end (the high watermark: everything the backfill had delivered when it returned)."""
    consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        assert md.error is None, md.error
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(md.partitions)])
        out, at_end = [], set()
        deadline = time.monotonic() + 60
        while len(at_end) < len(md.partitions):
            assert time.monotonic() < deadline, f"{topic}: not at the end of {sorted(md.partitions)} in 60 s"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                at_end.add(msg.partition())
                continue
            out.append(msg)
        return out
    finally:
        consumer.close()


def trades_in(bootstrap: str, topic: str) -> list[dict]:
    msgs = consume(bootstrap, topic)
    assert {m.key() for m in msgs} <= {f"binance:{SYMBOL}".encode()}
    assert len({m.partition() for m in msgs}) <= 1, "one key, one partition"
    return [SERDE.decode(m.value()) for m in msgs]


def run(kafka_bootstrap, topic_prefix, home, start=D1, end=D3, **kw):
    kw.setdefault("directory", None)
    return run_backfill(
        bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        home=home,
        symbol=SYMBOL,
        start=start,
        end=end,
        progress=False,
        clock=clock,
        **kw,
    )


# --- tests -----------------------------------------------------------------------------------------------
def test_directory_backfill_publishes_every_row_once_in_order(kafka_bootstrap, topic_prefix, tmp_path, archive_dir):
    summary = run(kafka_bootstrap, topic_prefix, tmp_path / "home", directory=archive_dir)

    got = trades_in(kafka_bootstrap, topic_prefix + "md.trades")
    assert got == expected_all()  # every field, agg-id order, the swapped pair repaired, duplicate dropped

    assert summary.days_done == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert summary.days_skipped == [] and summary.days_missing == []
    assert summary.rows_published == 20 + 17 + 10
    assert summary.rows_read == 21 + 17 + 10  # the duplicate is read, not published
    assert summary.duplicates == 1 and summary.late == 0
    assert summary.gaps == 2 and summary.missing_ids == 3 + 5
    assert summary.gap_ranges == [(1030, 1032), (1040, 1044)]
    assert summary.bad_rows == 2
    assert [(b.source, b.line) for b in summary.bad_row_samples] == [
        (f"{stem(SYMBOL, D1)}.zip", 7),
        (f"{stem(SYMBOL, D2)}.zip", 15),
    ]
    assert summary.bad_row_samples[0].text == BAD_DAY1

    dead = [SERDE.decode(m.value()) for m in consume(kafka_bootstrap, topic_prefix + "dlq.md")]
    assert [d["value"].decode() for d in dead] == [BAD_DAY1, BAD_DAY2]
    assert all(
        d["stage"] == "producer.backfill:parse" and d["source_topic"] == topic_prefix + "md.trades" for d in dead
    )
    assert ":7:" in dead[0]["error"] and ":15:" in dead[1]["error"]

    as_json = json.loads(summary.to_json())
    assert as_json["days"] == {"done": 3, "skipped": 0, "missing": 0, "resumed": 0}
    assert as_json["gap_ranges"] == [[1030, 1032], [1040, 1044]]
    text = format_summary(summary)
    assert "gaps: 2 (8 agg ids missing)" in text and "bad rows: 2" in text


def test_rerun_resumes_after_completed_days(kafka_bootstrap, topic_prefix, tmp_path, archive_dir):
    home = tmp_path / "home"
    first = run(kafka_bootstrap, topic_prefix, home, end=D1, directory=archive_dir)
    assert first.days_done == ["2024-01-01"] and first.rows_published == 20

    second = run(kafka_bootstrap, topic_prefix, home, directory=archive_dir)
    assert second.days_skipped == ["2024-01-01"]
    assert second.days_done == ["2024-01-02", "2024-01-03"]
    assert second.rows_published == 17 + 10 and second.duplicates == 0
    # the chain continued from day 1's last id (1019) through the checkpoint: no gap at the day boundary
    assert second.gap_ranges == [(1030, 1032), (1040, 1044)]

    got = trades_in(kafka_bootstrap, topic_prefix + "md.trades")
    assert got == expected_all()  # nothing published twice

    third = run(kafka_bootstrap, topic_prefix, home, directory=archive_dir)
    assert third.days_skipped == ["2024-01-01", "2024-01-02", "2024-01-03"] and third.rows_published == 0


def test_unreadable_archive_checkpoints_confirmed_rows_and_resume_repeats_none(kafka_bootstrap, topic_prefix, tmp_path):
    """A day whose zip fails its CRC at the end: what was delivered is checkpointed, the re-run
    with a good file publishes only the rest."""
    directory = tmp_path / "archives"
    directory.mkdir()
    ids = list(range(50_000, 56_000))  # ~ 300 kB of CSV: several read chunks before the CRC check fails
    lines = [HEADER, *(csv_row(i, D1) for i in ids)]
    path = write_zip(directory, SYMBOL, D1, lines, compression=zipfile.ZIP_STORED, checksum=None)
    data = bytearray(path.read_bytes())
    at = data.rindex(csv_row(ids[-1], D1).encode())
    data[at] = ord("6")  # 55999 -> 65999, same length
    path.write_bytes(bytes(data))  # stored data altered: the CRC check fails only at the end of the member
    home = tmp_path / "home"

    with pytest.raises(BackfillError, match=f"{stem(SYMBOL, D1)}.zip: archive unreadable") as failed:
        run(kafka_bootstrap, topic_prefix, home, end=D1, directory=directory, checkpoint_every=1_000)
    assert failed.value.summary.days_done == []  # the partial summary travels with the error
    ckpt = Checkpoint.load(home, SYMBOL, topic_prefix + "md.trades")
    assert not ckpt.is_complete(D1) and ckpt.partial_day == "2024-01-01"
    confirmed = ckpt.partial_last_agg_id
    assert ids[0] < confirmed < ids[-1]

    write_zip(directory, SYMBOL, D1, lines)  # the good archive
    summary = run(kafka_bootstrap, topic_prefix, home, end=D1, directory=directory, checkpoint_every=1_000)
    assert summary.days_resumed == ["2024-01-01"]
    assert summary.rows_already_published == confirmed - ids[0] + 1
    assert summary.rows_published == ids[-1] - confirmed
    assert summary.duplicates == 0 and summary.gaps == 0

    got = trades_in(kafka_bootstrap, topic_prefix + "md.trades")
    assert [t["agg_id"] for t in got] == ids
    assert got[-1] == expected_record(ids[-1], D1, RECEIVE_TIME)
    assert Checkpoint.load(home, SYMBOL, topic_prefix + "md.trades").is_complete(D1)


def test_named_replay_topic_uses_md_trades_schema(kafka_bootstrap, topic_prefix, tmp_path, archive_dir):
    summary = run(
        kafka_bootstrap, topic_prefix, tmp_path / "home", end=D1, directory=archive_dir, topic="replay.btc-jan"
    )
    assert summary.topic == topic_prefix + "replay.btc-jan"
    md = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    assert len(md[topic_prefix + "replay.btc-jan"].partitions) == 6  # co-partitioned like md.trades
    msgs = consume(kafka_bootstrap, topic_prefix + "replay.btc-jan")
    assert {SERDE.schema_id("md.trades")} == {int.from_bytes(m.value()[1:5], "big") for m in msgs}
    assert [SERDE.decode(m.value()) for m in msgs] == [expected_record(i, D1, RECEIVE_TIME) for i in DAY1_IDS]


def test_local_checksum_mismatch_is_rejected(kafka_bootstrap, topic_prefix, tmp_path):
    directory = tmp_path / "archives"
    directory.mkdir()
    write_zip(directory, SYMBOL, D1, day1_lines(), checksum="0" * 64)
    with pytest.raises(ChecksumMismatchError, match=f"{stem(SYMBOL, D1)}.zip"):
        run(kafka_bootstrap, topic_prefix, tmp_path / "home", end=D1, directory=directory)


# --- download path -----------------------------------------------------------------------------------------
def published_files(directory: Path, days: list[date]) -> dict[str, bytes]:
    files = {}
    for day in days:
        name = f"{stem(SYMBOL, day)}.zip"
        files[ArchiveServer.path(name)] = (directory / name).read_bytes()
        files[ArchiveServer.path(name + ".CHECKSUM")] = (directory / f"{name}.CHECKSUM").read_bytes()
    return files


def test_download_verifies_caches_and_reports_missing_days(kafka_bootstrap, topic_prefix, tmp_path):
    src = tmp_path / "published"
    src.mkdir()
    write_zip(src, SYMBOL, D1, day1_lines())
    write_zip(src, SYMBOL, D3, day3_lines())
    cache = tmp_path / "cache"
    with ArchiveServer(published_files(src, [D1, D3])) as server:  # day 2: 404
        summary = run(kafka_bootstrap, topic_prefix, tmp_path / "home", base_url=server.url, cache_dir=cache)
        assert summary.days_done == ["2024-01-01", "2024-01-03"] and summary.days_missing == ["2024-01-02"]
        # the chain runs on from day 1 (1019) to day 3 (1045): the missing day is one gap
        assert summary.gap_ranges == [(1020, 1044)] and summary.missing_ids == 25
        got = trades_in(kafka_bootstrap, topic_prefix + "md.trades")
        assert got == (
            [expected_record(i, D1, RECEIVE_TIME) for i in DAY1_IDS]
            + [expected_record(i, D3, RECEIVE_TIME) for i in DAY3_IDS]
        )
        for day in (D1, D3):
            cached = cache / SYMBOL / f"{stem(SYMBOL, day)}.zip"
            assert cached.read_bytes() == (src / cached.name).read_bytes()
        assert not list(cache.rglob("*.part"))

        # a second backfill (another topic, fresh checkpoint) verifies the cache and downloads no zip again
        zips_before = [p for p in server.requests if p.endswith(".zip")]
        again = run(
            kafka_bootstrap,
            topic_prefix,
            tmp_path / "home",
            base_url=server.url,
            cache_dir=cache,
            topic="replay.cached",
        )
        assert again.rows_published == summary.rows_published
        assert [p for p in server.requests if p.endswith(".zip")] == zips_before
        assert zips_before == [ArchiveServer.path(f"{stem(SYMBOL, d)}.zip") for d in (D1, D3)]


def test_download_checksum_mismatch_is_rejected_and_not_cached(kafka_bootstrap, topic_prefix, tmp_path):
    src = tmp_path / "published"
    src.mkdir()
    write_zip(src, SYMBOL, D1, day1_lines())
    files = published_files(src, [D1])
    name = f"{stem(SYMBOL, D1)}.zip"
    wrong = hashlib.sha256(b"something else").hexdigest()
    files[ArchiveServer.path(name + ".CHECKSUM")] = f"{wrong}  {name}\n".encode()
    cache = tmp_path / "cache"
    with ArchiveServer(files) as server:
        with pytest.raises(ChecksumMismatchError, match=name):
            run(kafka_bootstrap, topic_prefix, tmp_path / "home", end=D1, base_url=server.url, cache_dir=cache)
    assert not [p for p in cache.rglob("*") if p.is_file()]
    ckpt = Checkpoint.load(tmp_path / "home", SYMBOL, topic_prefix + "md.trades")
    assert not ckpt.is_complete(D1)
