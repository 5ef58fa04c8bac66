"""A consumer that says it is not receiving is restarted once that has lasted ``stall_restart_s``; one
unhealthy for another reason is left alone (issue 21: a stalled consumer must not sit there for days).

The consumers here are small real processes serving /health as the sink, engine and executor do:
the first life of the starving one answers ``degraded: ...`` (its starvation reason), the next life
``running``; the other answers ``database-down`` for ever."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from tapeflow.stack.app_services import HttpHealthService
from tapeflow.stack.process import free_port
from tapeflow.stack.service import Launch
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings

SERVER = """
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, marker, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lives = int(open(marker).read()) + 1 if os.path.exists(marker) else 1
open(marker, "w").write(str(lives))
if mode == "starving" and lives == 1:
    status, detail = "degraded", "degraded: md.trades[3] end offset moved 4 times, position stayed at 812 for 60 s"
elif mode == "starving":
    status, detail = "running", f"life {lives}"
else:
    status, detail = "database-down", "database writes failing for 30 s (No route to host)"
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": status, "detail": detail}).encode()
        self.send_response(200 if status == "running" else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


class Consumer(HttpHealthService):
    concurrent = True
    restart_when_starving = True
    ready_when_answering = True

    def __init__(self, settings, paths, name: str, mode: str) -> None:
        super().__init__(settings, paths)
        self.name, self.mode = name, mode
        self.marker = paths.home / f"{name}.lives"

    def prepare(self) -> Launch:
        port = free_port()
        return Launch([sys.executable, "-c", SERVER, str(port), str(self.marker), self.mode], f"127.0.0.1:{port}")

    def lives(self) -> int:
        return int(self.marker.read_text()) if self.marker.exists() else 0


def test_a_starving_consumer_is_restarted_and_a_consumer_down_for_another_reason_is_not(tmp_path: Path):
    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=paths.home, broker=None, database_url=None, startup_timeout_s=30,
                        stall_restart_s=2.0, stop_timeout_s=3.0)
    starving = Consumer(settings, paths, "engine", "starving")
    waiting = Consumer(settings, paths, "sink", "database-down")
    said: list[str] = []
    sup = Supervisor(settings, paths, say=said.append, services=[starving, waiting], steps=[])
    try:
        sup.start_all()
        first_pid = sup.running["engine"].proc.pid
        sup.stall_check_s = 0.5
        loop = threading.Thread(target=sup.supervise, kwargs={"poll_s": 0.1}, daemon=True)
        loop.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (starving.lives() == 2 and "engine" in sup.running
                                                   and sup.running["engine"].service.health(
                                                       sup.running["engine"].record.address).ok):
            time.sleep(0.2)
        assert starving.lives() == 2, said
        assert sup.running["engine"].proc.pid != first_pid
        stopped = [line for line in said if "not receiving for" in line]
        assert len(stopped) == 1 and stopped[0].startswith("engine") and "position stayed at 812" in stopped[0], said
        # the restart is the supervisor's ordinary one, logged as such, and it happened once: the new
        # life is healthy, so nothing is stopped again
        assert any(line.startswith("engine exited with code") for line in said), said
        time.sleep(3 * sup.stall_check_s + 2.0)  # more checks of both, past another stall_restart_s
        assert starving.lives() == 2 and len([s for s in said if "not receiving for" in s]) == 1, said
        # the sink waiting for its database was degraded the whole time, never restarted
        assert waiting.lives() == 1, said
    finally:
        sup.stop_requested.set()
        sup.stop_all()
