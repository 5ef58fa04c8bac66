"""A finite service (a replay) that ends during its own start-up: finished, not a failed start.

Found by the lifecycle test: after the embedded broker was SIGKILLed, the supervisor restarted its
clients, and the restarted replay producer found the fake exchange's recording already played, ended
at once with code 0, and the supervisor took that for a failed restart and stopped the whole stack."""

from __future__ import annotations

import sys

import pytest

from tapeflow.stack.service import Launch, Service
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.health import Health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings


class QuickReplay(Service):
    name = "replay"
    finite = True

    def __init__(self, settings, paths, code: int) -> None:
        super().__init__(settings, paths)
        self.code = code

    def prepare(self) -> Launch:
        return Launch(
            [sys.executable, "-c", f"print('replay-finished: 0 frames in'); raise SystemExit({self.code})"],
            "127.0.0.1:1",
        )

    def health(self, address: str) -> Health:
        return Health(False, "no health endpoint before the process ends")


def supervisor(tmp_path, code: int) -> Supervisor:
    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=paths.home, broker=None, database_url=None, startup_timeout_s=30)
    said: list[str] = []
    sup = Supervisor(settings, paths, say=said.append, services=[QuickReplay(settings, paths, code)], steps=[])
    sup.said = said
    return sup


def test_a_replay_that_ends_at_once_is_finished_not_a_failed_start(tmp_path):
    sup = supervisor(tmp_path, 0)
    try:
        sup.start_all()
        assert any("finished during startup: replay-finished: 0 frames in" in line for line in sup.said), sup.said
    finally:
        sup.stop_all()


def test_a_replay_that_fails_at_once_is_still_a_failed_start(tmp_path):
    sup = supervisor(tmp_path, 3)
    try:
        with pytest.raises(TapeflowError, match="exited with code 3 during startup"):
            sup.start_all()
    finally:
        sup.stop_all()
