"""Fault suite (issue 23), disk full for TAPEFLOW_HOME: the producer's checkpoint (the last agg id
delivered per symbol, `<home>/producer/binance-<prefix>.json`, saved every second) on a small tmpfs that
fills up. The producer must say so (an error log, once, and its status) and go on producing; the
checkpoint already saved must stay whole (what a restart resumes from); saving resumes when space
is back. Mounting needs root: skipped elsewhere."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from producers.binance.producer import BinanceProducer, ProducerConfig
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.publisher import Publisher


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "64k"):
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Fill the filesystem up to its last byte."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_a_full_home_is_reported_and_the_saved_checkpoint_survives(tmp_path):
    with small_tmpfs(tmp_path / "home") as home:
        checkpoint = home / "producer" / "binance-default.json"
        publisher = Publisher("127.0.0.1:9", AvroSerde(FileSchemaRegistry(), strict=True), ProducerMetrics())
        # nothing is published: the broker address is never reached
        producer = BinanceProducer(ProducerConfig(symbols=["BTCUSDT"], checkpoint_path=checkpoint),
                                   publisher, ProducerMetrics())
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
