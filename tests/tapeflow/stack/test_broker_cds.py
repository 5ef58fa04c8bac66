"""The broker's class-data-sharing archive (tapeflow/stack/broker_cds.py): the bootstrap made one for
this JVM and these jars, the broker's launch maps it, and the JVM really takes Kafka's classes from it
(``-Xshare:on`` refuses to start when the archive cannot be mapped; the class-load log says where each
class came from). The archive is only read here: the bootstrap writes it, a test never does."""

from __future__ import annotations

import subprocess

import pytest

from tapeflow.stack.broker import KafkaBroker
from tapeflow.stack.kafka_libs import cds_archive, classpath, java_binary, resolve
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings


def test_the_bootstraps_archive_is_what_the_broker_maps_and_holds_kafkas_classes(tmp_path):
    java, libs = java_binary(), resolve()
    archive = cds_archive(java, libs)
    assert archive.is_file(), f"make bootstrap did not make {archive} (python -m tapeflow.stack.broker_cds says why)"

    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=tmp_path / "home", broker=None, database_url=None, broker_port=0, database_port=0)
    argv = KafkaBroker(settings, paths).prepare().argv
    assert f"-XX:SharedArchiveFile={archive}" in argv

    done = subprocess.run(
        [java, "-Xshare:on", f"-XX:SharedArchiveFile={archive}", "-Xlog:class+load=info", "-XX:TieredStopAtLevel=1"]
        + ["-Xmx512m", "-XX:+UseSerialGC", "-cp", classpath(libs), "kafka.Kafka", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    loaded = [line for line in done.stdout.splitlines() if " kafka.Kafka " in line or line.endswith(" kafka.Kafka")]
    assert loaded and "shared objects file (top)" in loaded[0], loaded


@pytest.mark.parametrize("present", [True, False])
def test_without_an_archive_the_broker_starts_as_before(tmp_path, monkeypatch, present):
    """An archive for another JVM or jars is never named; none at all: no CDS option (the JVM's default)."""
    import tapeflow.stack.broker as broker

    fake = tmp_path / "kafka-cds-x.jsa"
    if present:
        fake.write_bytes(b"x")
    monkeypatch.setattr(broker, "cds_archive", lambda java, libs: fake)
    options = broker._cds_options("java", tmp_path)
    assert options == ([f"-XX:SharedArchiveFile={fake}"] if present else [])
