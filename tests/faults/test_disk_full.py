"""Fault suite, disk full.

For TAPEFLOW_HOME: the producer's checkpoint (the last agg id
delivered per symbol, `<home>/producer/binance-<prefix>.json`, saved every second) on a small tmpfs that
fills up. The producer must say so (an error log, once, and its status) and go on producing; the
checkpoint already saved must stay whole (what a restart resumes from); saving resumes when space
is back.

For the database: the embedded PostgreSQL's cluster on a tmpfs filled to its last byte for 8 s while
trades flow (`tests.support.faults_disk.database_disk_full`; 120 s in `benchmarks/bench_faults.py`): the
sink says so in its status with PostgreSQL's error, retries the batch, and once the space is back
every trade is in the table exactly once. Mounting needs root: skipped elsewhere."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from producers.binance.producer import BinanceProducer, ProducerConfig
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.publisher import Publisher
from tests.support import faults_disk
from tests.support.faults_disk import fill


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "64k"):
    try:
        with faults_disk.small_tmpfs(path, size) as mounted:
            yield mounted
    except faults_disk.NoMount as exc:
        pytest.skip(str(exc))


def test_a_full_home_is_reported_and_the_saved_checkpoint_survives(tmp_path):
    with small_tmpfs(tmp_path / "home") as home:
        checkpoint = home / "producer" / "binance-default.json"
        publisher = Publisher("127.0.0.1:9", AvroSerde(FileSchemaRegistry(), strict=True), ProducerMetrics())
        # nothing is published: the broker address is never reached
        producer = BinanceProducer(
            ProducerConfig(symbols=["BTCUSDT"], checkpoint_path=checkpoint), publisher, ProducerMetrics()
        )
        producer.status.set("connected", "4 streams")
        producer.delivered_agg_id["BTCUSDT"] = 100
        producer._every_second()
        assert json.loads(checkpoint.read_text())["last_agg_id"] == {"BTCUSDT": 100}

        filler = fill(home)
        with capture_logs() as logs:
            for agg_id in (200, 300, 400):  # three housekeeping ticks with the disk full
                producer.delivered_agg_id["BTCUSDT"] = agg_id
                producer._every_second()  # must not raise: it would end the housekeeping task
        errors = [e for e in logs if e["log_level"] == "error"]
        assert len(errors) == 1 and "checkpoint" in errors[0]["event"], logs  # said once, clearly
        assert "No space left on device" in errors[0]["error"]
        assert "checkpoint not saved" in producer.status.detail and producer.status.state == "connected"
        # what was saved is whole (a restart resumes from it); no half-written temporary file left
        assert json.loads(checkpoint.read_text())["last_agg_id"] == {"BTCUSDT": 100}
        assert sorted(p.name for p in checkpoint.parent.iterdir()) == [checkpoint.name]

        filler.unlink()
        with capture_logs() as logs:
            producer._every_second()
        assert json.loads(checkpoint.read_text())["last_agg_id"] == {"BTCUSDT": 400}
        assert [e["event"] for e in logs if e["log_level"] == "info"] == ["checkpoint saved again"]
        assert "checkpoint not saved" not in producer.status.detail


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_full_database_disk_is_reported_retried_and_loses_nothing():
    root = Path(tempfile.mkdtemp(prefix="tapeflow-dbfull-"))  # short: PostgreSQL's socket path
    try:
        try:
            (full,) = faults_disk.database_disk_full(root / "home", full_s=8.0, duration_s=32.0)
        except faults_disk.NoMount as exc:
            pytest.skip(str(exc))
        d = full["detail"]
        assert d["filler_bytes"] > 0
        # said while the disk was full, with the reason. The disk stays full until the sink has said so
        # (`faults_disk.SINK_SAYS_S`): when the first write fails depends on when PostgreSQL next extends
        # a file, not on the sink (CI, loaded: 11.1 s after the fill)
        assert "sink" in d["status_full"], d
        _, detail = d["status_full"]["sink"]
        assert "database writes failing for" in detail and "No space left on device" in detail, d
        assert d["sink_retries"] > 0 and d["sink_full_lines"], d
        assert full["recover_s"] is not None and full["recover_s"] < 30, d
        assert all(ok for ok, _ in d["status_after"].values()), d["status_after"]
        count, first, last = d["expected"]
        assert d["rows"] == d["distinct"] == count and d["missing"] == 0, (d["missing_ranges"], d["log"][-20:])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_full_broker_log_disk_holds_the_broker_not_the_stack_and_loses_nothing():
    """Kafka's log directory on a 64 MB tmpfs, filled to its last byte while trades flow live.
    Kafka fails the append, marks its only log directory offline and shuts down; the supervisor holds
    its restart (not a crash: the stack is not given up) and says "log disk full"; the producer says
    "broker unavailable" and keeps its records; a client that dies with the broker waits for it instead of
    being restarted into a missing broker (one whose death the supervisor sees after the broker is back
    is restarted then, once). Once the filler is gone the
    broker is restarted and every trade of the session is in md.trades once and in the table."""
    from tests.support.faults_broker import broker_disk_full

    root = Path(tempfile.mkdtemp(prefix="tapeflow-kfull-"))  # short: PostgreSQL's socket path
    try:
        try:
            (full,) = broker_disk_full(root / "home", size="64m", full_s=8.0, duration_s=60.0)
        except faults_disk.NoMount as exc:
            pytest.skip(str(exc))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    d = full["detail"]
    log = "\n".join(d["log"])
    assert d["broker_exit"] is not None, d["status_full"]  # Kafka 4.4 shuts down with its only log dir failed
    assert any("No space left on device" in ln for ln in d["broker_full_lines"]), d["broker_full_lines"]
    broker_ok, broker_said = d["status_full"]["broker"]
    assert not broker_ok and "log disk full (" in broker_said and "MB free" in broker_said, d["status_full"]
    producer_ok, producer_said = d["status_full"]["producer"]
    assert not producer_ok and producer_said.startswith("broker unavailable"), d["status_full"]
    assert d["status_full"]["supervisor"][0], d["status_full"]
    assert "broker: log disk full (" in log and "stopping the stack" not in log, (log, d["stopped_lines"])
    _assert_no_client_restarted_into_a_missing_broker(d)
    states = {(name, state) for _, name, state, _, _ in d["states"]}
    assert ("broker", "disk-full") in states and ("producer", "broker-unavailable") in states, d["states"]
    assert any("broker unavailable" in ln for ln in d["producer_broker_lines"]), d["producer_broker_lines"]
    assert any("broker available again" in ln for ln in d["producer_broker_lines"]), d["producer_broker_lines"]
    assert full["recover_s"] is not None and full["recover_s"] < 60, d
    # asked once the broker is back, while the session still plays (at its end the producer says the
    # exchange went silent)
    assert all(ok for ok, _ in d["status_after"].values()), (d["status_after"], d["session_at_status_after"])
    count, first, last = d["expected"]
    assert d["topic_records"] == d["topic_distinct"] == count and d["topic_missing"] == 0, d["expected"]
    assert d["rows"] == d["distinct"] == count and d["missing"] == 0, (d["missing_ranges"], log)
    assert d["topic_equals_table"]


def _assert_no_client_restarted_into_a_missing_broker(d: dict) -> None:
    """No crash loop anywhere: a service that died with the broker (an exactly-once engine or executor
    whose open transaction the dead broker could not take) was restarted once, after the broker was
    back: held while it was missing ("waiting for broker"), or, when the supervisor saw its exit only
    once the broker was healthy again (the executor exits when it finds its transaction aborted on the
    broker's return; at load 15 the supervisor saw it 10 s later, after restarting the held engine), with
    the first restart's backoff. Nothing else restarted."""
    before, after = d["others_pids"]
    said = [(float(at), ln) for at, ln in (line.split(" ", 1) for line in d["log"])]  # (monotonic time, line)
    cleared = next(at for at, ln in said if ln.startswith("broker: log disk full: cleared"))
    back = next(at for at, ln in said if at >= cleared and ln.startswith("broker     pid "))
    changed = [n for n in before if after[n] != before[n]]
    for name in changed:
        died = [(at, ln) for at, ln in said if ln.startswith(f"{name} exited with code")]
        waited = [ln for _, ln in died if "waiting for broker" in ln]
        restarted_after = [ln for at, ln in died if "; restarting in 1s" in ln and at >= back]
        about = "\n".join(ln for _, ln in said if ln.startswith(name))
        assert len(died) == 1 and len(waited) + len(restarted_after) == 1, (
            f"{name} pid {before[name]} -> {after[name]}; the broker was back at {back}; the supervisor said:\n"
            + about
            + "\n"
            + "\n".join(d["stopped_lines"].get(name) or [])
        )
    restarts = [ln for _, ln in said if "; restarting in " in ln]
    assert all(any(ln.startswith(f"{name} exited") for name in changed) for ln in restarts), restarts
