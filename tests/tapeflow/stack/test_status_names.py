"""`stack_status(..., names=...)`: only the named components, each exactly as the whole status reports it
(the fault and stack tests poll a few components several times a second; a whole status costs ~120 ms of
CPU). Pure code: a home with the records a crashed stack leaves, no broker, no database."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psutil

from tapeflow.stack.supervisor import stack_status
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.process_records import ProcessRecord
from tapeflow_runtime.settings import Settings


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_named_components_are_reported_as_in_the_whole_status(tmp_path):
    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=paths.home, broker=None, database_url=None)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for name, pid, created in (
            ("sink", alive.pid, psutil.Process(alive.pid).create_time()),  # running, its endpoint refusing
            ("engine", 999_999, 1.0),  # a stale record
            ("database", 999_998, 1.0),  # the infrastructure's stale record
        ):
            ProcessRecord(
                name,
                pid,
                created,
                "127.0.0.1:1",
                time.time(),
                str(paths.log_file(name)),
                {"health_url": f"http://127.0.0.1:{closed_port()}/health"},
            ).save(paths.state_file(name))
        whole = {c.name: c.as_dict() for c in stack_status(settings, paths)}
        assert set(whole) == {"supervisor", "broker", "database", "sink", "engine", "migrations", "topics"}
        for names in (("sink",), ("engine", "database"), ("migrations",), ("broker", "topics", "supervisor")):
            some = [c.as_dict() for c in stack_status(settings, paths, names=names)]
            assert sorted(c["name"] for c in some) == sorted(names)
            for c in some:  # the uptime of a running one moves between the two calls
                assert {**c, "uptime_s": None} == {**whole[c["name"]], "uptime_s": None}, c["name"]
        assert stack_status(settings, paths, names=()) == []
    finally:
        alive.kill()
        alive.wait()
