"""The embedded Apache Kafka: bad inputs said in one line with nothing left running, and topics that
survive the broker's restart. Real Kafka, real processes (`tapeflow up` as a user runs it)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import pytest

from tapeflow.stack.broker import KafkaBroker
from tapeflow.stack.kafka_libs import kafka_version
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.kafka_client import ensure_topics, kafka_protocol_problem
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.paths import RECORDING

pytestmark = pytest.mark.integration


def up(home: Path, env_extra: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update({"TAPEFLOW_HOME": str(home), "TAPEFLOW_SOURCE": f"replay:{RECORDING}", **env_extra})
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", "up", "--detach"],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=home.parent,
    )


def nothing_running(home: Path) -> list[str]:
    """Processes a failed `up` left behind: recorded ones, and any JVM or PostgreSQL under ``home``."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(str(home) in part for part in proc.info["cmdline"] or []):
                left.append(f"{proc.info['pid']}: {' '.join(proc.info['cmdline'])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return left


def one_line_error(res: subprocess.CompletedProcess) -> str:
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:") or "error:" in line]
    assert errors, out
    return out


@pytest.fixture
def home():
    root = Path(tempfile.mkdtemp(prefix="tapeflow-kafka-"))
    yield root / "home"
    subprocess.run(
        [sys.executable, "-m", "tapeflow", "down"],
        capture_output=True,
        env={**os.environ, "TAPEFLOW_HOME": str(root / "home")},
        timeout=120,
    )
    shutil.rmtree(root, ignore_errors=True)


def test_no_java_is_one_line_and_nothing_starts(home):
    res = up(home, {"JAVA_HOME": str(home.parent / "no-jdk")})
    out = one_line_error(res)
    assert "no Java runtime found" in out and "Java >= 17" in out and "JAVA_HOME" in out
    assert nothing_running(home) == []


def test_maven_central_unreachable_names_the_cache_to_fill(home):
    """A first run without the jars and without Maven Central: an empty local repository and every
    repository mirrored to a closed loopback port (what a machine that cannot reach the registry
    sees) must fail in one line that names the directory to fill from another machine. Maven reads
    its settings from the JVM's user.home (the passwd entry, not $HOME), hence MAVEN_OPTS."""
    user = home.parent / "user"
    (user / ".m2").mkdir(parents=True)
    (user / ".m2" / "settings.xml").write_text(
        f"<settings><localRepository>{user / 'repo'}</localRepository><mirrors><mirror><id>none</id>"
        "<mirrorOf>*</mirrorOf><url>http://127.0.0.1:9/</url></mirror></mirrors></settings>"
    )
    cache = home.parent / "cache"
    res = up(home, {"HOME": str(user), "XDG_CACHE_HOME": str(cache), "MAVEN_OPTS": f"-Duser.home={user}"}, timeout=300)
    out = one_line_error(res)
    assert f"could not download Apache Kafka {kafka_version()} from Maven Central" in out, out
    assert str(cache / "tapeflow") in out, out
    assert "TAPEFLOW_KAFKA_LIBS" in out
    assert not any((cache / "tapeflow").glob("kafka-*/*.jar")), "a half download left as the cache"
    assert nothing_running(home) == []


def test_a_home_formatted_by_another_cluster_is_refused_not_reformatted(home):
    settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
    paths = StackPaths(home)
    paths.ensure()
    sup = Supervisor(settings, paths, say=lambda m: None, services=[KafkaBroker(settings, paths)], steps=[])
    sup.start_all()
    sup.stop_all()
    meta = home / "kafka" / "data" / "meta.properties"
    formatted = meta.read_text()
    (home / "kafka" / "cluster.id").write_text("AAAAAAAAAAAAAAAAAAAAAA\n")

    out = one_line_error(up(home, {}))
    assert "was formatted for Kafka cluster" in out and "AAAAAAAAAAAAAAAAAAAAAA" in out, out
    assert meta.read_text() == formatted, "the data directory was touched"
    assert nothing_running(home) == []


def test_a_port_in_use_is_named(home):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = one_line_error(up(home, {"TAPEFLOW_BROKER_PORT": str(port)}))
    assert f"broker port 127.0.0.1:{port} is already in use" in out and "TAPEFLOW_BROKER_PORT" in out
    assert nothing_running(home) == []


def test_an_external_broker_that_is_not_kafka_is_named(home):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        out = one_line_error(up(home, {"TAPEFLOW_BROKER": address}))
    finally:
        server.shutdown()
    assert f"{address} answers, but not as a Kafka broker" in out, out
    assert nothing_running(home) == []


def test_an_old_kafka_is_refused_by_its_api_versions(kafka_bootstrap):
    """The embedded Kafka passes the check; a broker that answers ApiVersions without the
    transactional APIs (here: a loopback server answering as Kafka 0.10 would, with Produce v2 at
    most and no InitProducerId) is named as too old."""
    assert kafka_protocol_problem(kafka_bootstrap) is None

    def serve(listener):
        conn, _ = listener.accept()
        with conn:
            conn.recv(1024)
            import struct

            apis = [(0, 0, 2), (1, 0, 3), (2, 0, 1), (3, 0, 2), (18, 0, 0)]  # Kafka 0.10.1's
            body = struct.pack(">ihi", 1, 0, len(apis)) + b"".join(struct.pack(">hhh", *a) for a in apis)
            conn.sendall(struct.pack(">i", len(body)) + body)

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=serve, args=(listener,), daemon=True).start()
        problem = kafka_protocol_problem(f"127.0.0.1:{listener.getsockname()[1]}")
    assert problem is not None and "older than 2.8" in problem and "InitProducerId v3" in problem, problem


def test_topics_and_records_survive_a_broker_restart(tmp_path):
    """The log is on disk: a stopped and restarted broker has every topic and record it had."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from tapeflow_runtime.kafka_client import consumer_config, producer_config

    home = Path(tempfile.mkdtemp(prefix="tapeflow-kafka-restart-"))
    try:
        settings = Settings(home=home, broker=None, database_url=None, broker_port=0, database_port=0)
        paths = StackPaths(home)
        paths.ensure()

        def started() -> Supervisor:
            sup = Supervisor(settings, paths, say=lambda m: None, services=[KafkaBroker(settings, paths)], steps=[])
            sup.start_all()
            return sup

        sup = started()
        bootstrap = sup.addresses["broker"]
        ensure_topics(bootstrap)
        producer = Producer(producer_config(bootstrap))
        for i in range(1000):
            producer.produce("md.trades", key=b"binance:BTCUSDT", value=json.dumps({"i": i}).encode())
        assert producer.flush(30) == 0
        # the broker decompressed our lz4 batches to validate them: lz4-java's native library was
        # unpacked under the broker's own directory, not into the system's /tmp
        assert list((home / "kafka" / "tmp").glob("liblz4-java*.so")), sorted(os.listdir(home / "kafka"))
        sup.stop_all()

        sup = started()
        try:
            bootstrap = sup.addresses["broker"]
            assert {r.action for r in ensure_topics(bootstrap)} == {"exists"}
            consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
            partitions = consumer.list_topics("md.trades", timeout=10).topics["md.trades"].partitions
            consumer.assign([TopicPartition("md.trades", p, -2) for p in partitions])
            got, ends = [], set()
            while len(ends) < len(partitions):
                m = consumer.poll(10)
                assert m is not None, "no answer from the restarted broker"
                if m.error():
                    ends.add(m.partition())
                    continue
                got.append(json.loads(m.value())["i"])
            consumer.close()
            assert got == list(range(1000))
        finally:
            sup.stop_all()
    finally:
        shutil.rmtree(home, ignore_errors=True)
