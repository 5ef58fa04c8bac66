"""A producer that cannot reach its exchange, or is refused by it, is shown as `unreachable` /
`restricted` in `tapeflow status` and said once per change in the foreground output of `up`, with
its one line of what to do, and is not restarted for it (a warm start without network ended
in a traceback and a restart loop while `status` said `ok priming`).

The producer here is a small real process serving /health as the producer does; its status is read
from a file the test writes."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from tapeflow.stack.app_services import HttpHealthService
from tapeflow.stack.process import free_port
from tapeflow.stack.service import Launch
from tapeflow.stack.supervisor import Supervisor, _app_status
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.waiting import wait_until

SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
port, state_file = int(sys.argv[1]), sys.argv[2]
class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        status, _, detail = open(state_file).read().partition(" ")
        body = json.dumps({"status": status, "detail": detail, "priming": status != "connected"}).encode()
        self.send_response(200 if status in ("connected", "priming") else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass  # the supervisor's probes are not this test's output
HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""

UNREACHABLE = (
    "unreachable: the warm start cannot reach the exchange at https://fapi.binance.com (...); check this "
    "machine's network, ..., or run offline from a recording: tapeflow up --source replay:DIR."
)
RESTRICTED = "restricted: the exchange at https://fapi.binance.com refuses this location (HTTP 451: ...)"


class FakeProducer(HttpHealthService):
    name = "producer"
    ready_when_answering = True

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.state_file = paths.home / "producer.state"
        self.set("priming", "warm start: BTCUSDT waiting")

    def set(self, status: str, detail: str) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(f"{status} {detail}")
        tmp.replace(self.state_file)

    def prepare(self) -> Launch:
        port = free_port()
        return Launch([sys.executable, "-c", SERVER, str(port), str(self.state_file)], f"127.0.0.1:{port}")


def test_unreachable_and_restricted_are_said_once_shown_in_status_and_never_restarted(tmp_path: Path):
    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=paths.home, broker=None, database_url=None, startup_timeout_s=30, stop_timeout_s=3.0)
    producer = FakeProducer(settings, paths)
    said: list[str] = []
    sup = Supervisor(settings, paths, say=said.append, services=[producer], steps=[])
    sup.start_all()
    pid = sup.running["producer"].proc.pid
    loop = threading.Thread(target=sup.supervise, kwargs={"poll_s": 0.05}, daemon=True)
    loop.start()
    try:
        record = sup.running["producer"].record
        producer.set("unreachable", UNREACHABLE)
        wait_until(
            lambda: any(UNREACHABLE in line for line in said),
            30,
            lambda: f"{UNREACHABLE!r} never said: {said}",
            interval=0.05,
        )
        row = _app_status(record, time.time())
        assert (row.state, row.detail) == ("unreachable", UNREACHABLE)
        producer.set("restricted", RESTRICTED)
        wait_until(
            lambda: any(RESTRICTED in line for line in said),
            30,
            lambda: f"{RESTRICTED!r} never said: {said}",
            interval=0.05,
        )
        assert _app_status(record, time.time()).state == "restricted"
        producer.set("priming", "warm start: BTCUSDT rest 1,000 trades")
        wait_until(
            lambda: any("answers again" in line for line in said),
            30,
            lambda: f"'answers again' never said: {said}",
            interval=0.05,
        )
        assert _app_status(record, time.time()).state == "priming"
        time.sleep(0.5)  # several more supervision rounds: nothing is said twice
        assert sum(UNREACHABLE in line for line in said) == 1 and sum(RESTRICTED in line for line in said) == 1
        assert sup.running["producer"].proc.pid == pid and not any("restart" in line for line in said)
    finally:
        sup.stop_requested.set()
        loop.join(10)
        sup.stop_all()
