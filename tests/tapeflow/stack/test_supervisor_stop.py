"""`down` while the supervisor waits for a restarted service to become ready: a stop, not a failure.

Found in CI: the test of a service held behind a full disk stopped the supervisor just after a
restart had launched its process; the start's readiness wait ended on the stop, the supervisor took
that for a failed restart ("restart failed", exit code 1), so a user's `down` during a restart would
have reported the stack as failed."""

from __future__ import annotations

import sys

from tapeflow.stack.service import Launch, Service
from tapeflow_runtime.health import Health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.supervising import supervising
from tests.support.waiting import wait_until


class SlowRestart(Service):
    """Dies 0.3 s after its first start; its restart runs but never becomes ready (a broker still
    replaying its log), so the supervisor waits in the restart's readiness check."""

    name = "slow"

    def __init__(self, settings, paths) -> None:
        super().__init__(settings, paths)
        self.starts = 0

    def prepare(self) -> Launch:
        life = 0.3 if self.starts == 0 else 600
        self.starts += 1
        return Launch(argv=[sys.executable, "-c", f"import time; time.sleep({life}); raise SystemExit(1)"], address="-")

    def health(self, address: str) -> Health:
        return Health(self.starts < 2, "ready" if self.starts < 2 else "replaying its log")


def test_a_stop_during_a_restarts_readiness_wait_ends_the_stack_cleanly(tmp_path):
    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=paths.home, broker=None, database_url=None, startup_timeout_s=60)
    service = SlowRestart(settings, paths)
    with supervising(settings, paths, [service]) as run:
        # the restart's process is launched and the supervisor is inside its readiness wait (60 s)
        wait_until(lambda: service.starts == 2, 15, lambda: str(run.said), interval=0.05)
        assert not run.result, run.said
    result, said = run.result, run.said
    assert result == [0], said
    assert not any("restart failed" in line for line in said), said
