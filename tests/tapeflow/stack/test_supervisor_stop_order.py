"""`down` stops the services in the reverse of their start order, also after one was restarted.

Found measuring `tests/tapeflow/stack/test_stack_lifecycle.py`'s 29 s teardown: the supervisor stopped in
the reverse of its `running` dict, where a restarted service is inserted again, last. After the broker
was restarted it was stopped first, and the sink, engine and executor, whose clean stop needs it, each
waited out their 10 s stop timeout and were killed (`down` took 39 s, 13 s with the fix)."""

from __future__ import annotations

import sys

from tapeflow.stack.service import Launch, Service
from tapeflow_runtime.health import Health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.supervising import supervising
from tests.support.waiting import wait_until


class Sleeper(Service):
    """A process that sleeps until it is stopped (the first start of `dies_first` exits at once)."""

    def __init__(self, settings, paths, name: str, dies_first: bool = False) -> None:
        super().__init__(settings, paths)
        self.name = name
        self.starts = 0
        self.dies_first = dies_first

    def prepare(self) -> Launch:
        life = 0.2 if self.dies_first and self.starts == 0 else 600
        self.starts += 1
        return Launch(argv=[sys.executable, "-c", f"import time; time.sleep({life})"], address="-")

    def health(self, address: str) -> Health:
        return Health(True, "ready")


def test_a_restarted_service_is_still_stopped_after_the_services_started_after_it(tmp_path):
    paths = StackPaths(tmp_path / "home")
    paths.ensure()
    settings = Settings(home=paths.home, broker=None, database_url=None, startup_timeout_s=60)
    broker = Sleeper(settings, paths, "broker", dies_first=True)
    services = [broker, Sleeper(settings, paths, "sink"), Sleeper(settings, paths, "engine")]
    with supervising(settings, paths, services) as run:
        # the broker's first process exits: the supervisor restarts it (after 1 s), which re-inserts it
        # in `running`, after the services started after it
        wait_until(lambda: list(run.sup.running)[-1:] == ["broker"], 30, lambda: str(run.said), interval=0.05)
    result, said = run.result, run.said
    assert result == [0] and broker.starts == 2, said
    stopped = [line.split()[0] for line in said if line.split()[-1] in ("terminated", "killed", "gone")]
    assert stopped == ["engine", "sink", "broker"], said
