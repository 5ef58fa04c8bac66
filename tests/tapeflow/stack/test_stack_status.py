"""`tapeflow status` for a service that ends by itself (the producer of a replay)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import psutil

from tapeflow.stack.supervisor import _app_status
from tapeflow_runtime.process_records import ProcessRecord


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_finite_service_caught_between_closing_its_endpoint_and_exiting_is_reported_finished(tmp_path):
    """The replay's producer closes its /health endpoint, then exits, then the supervisor records it
    as finished. A status taken in between once said "unhealthy: connection refused" (a fresh-clone
    CI run failed on it); it must wait for the exit and report what the supervisor records."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    path = tmp_path / "producer.json"
    record = ProcessRecord(
        "producer",
        proc.pid,
        psutil.Process(proc.pid).create_time(),
        "127.0.0.1:0",
        time.time(),
        str(tmp_path / "producer.log"),
        {"finite": True, "health_url": f"http://127.0.0.1:{closed_port()}/health"},
    )
    record.save(path)

    def supervisor() -> None:  # records the outcome once the process has exited
        proc.wait()
        record.extra.update(finished=True, detail="replay ended, exit 0")
        record.save(path)

    watcher = threading.Thread(target=supervisor)
    watcher.start()
    status = _app_status(record, time.time(), path)
    watcher.join()
    assert (status.healthy, status.state) == (True, "finished"), status
    assert "replay ended" in status.detail


def test_a_long_running_service_whose_endpoint_refuses_is_unhealthy(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = ProcessRecord(
            "sink",
            proc.pid,
            psutil.Process(proc.pid).create_time(),
            "127.0.0.1:0",
            time.time(),
            str(tmp_path / "sink.log"),
            {"health_url": f"http://127.0.0.1:{closed_port()}/health"},
        )
        status = _app_status(record, time.time(), tmp_path / "sink.json")
        assert (status.healthy, status.state) == (False, "running")
    finally:
        proc.kill()
        proc.wait()
