"""Broker faults in the supervisor and `tapeflow status`: a killed Kafka is "restarting", then
"recovering" while it loads its log (read from its own log), then running, and every acknowledged
record is there once; a service whose restart is held (the broker on a full log disk) is not a crash:
it is never counted against the restart limit, `status` says why, and it is restarted when the reason
is gone. The full-disk case on a real Kafka is tests/faults/test_disk_full.py."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from tapeflow.stack.broker import died_of_full_disk, recovery_detail
from tapeflow.stack.process import StackError
from tapeflow.stack.service import Launch, Service
from tapeflow.stack.supervisor import RESTART_LIMIT, Supervisor, stack_status
from tapeflow_runtime.health import Health
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tests.support.supervising import supervising
from tests.support.waiting import wait_until

RUN_1 = """
--- 2026-11-28T15:54:31+0000 starting: java kafka.Kafka server.properties
[2026-11-28 15:54:34,159] INFO [LogLoader partition=md.trades-0, dir=/d] Loading producer state till offset 0 (org.apache.kafka.storage.internals.log.UnifiedLog)
[2026-11-28 15:54:35,000] INFO [KafkaRaftServer nodeId=1] Kafka Server started (kafka.server.KafkaRaftServer)
"""
RUN_2 = """
--- 2026-11-28T15:58:57+0000 starting: java kafka.Kafka server.properties
[2026-11-28 15:59:01,097] INFO [LogLoader partition=__cluster_metadata-0, dir=/d] Recovering unflushed segment 0. 0 recovered for __cluster_metadata-0. (org.apache.kafka.storage.internals.log.LogLoader)
[2026-11-28 15:59:04,302] INFO [BrokerServer id=1] Waiting for the controller to acknowledge that we are caught up (kafka.server.BrokerServer)
[2026-11-28 15:59:04,376] INFO [LogLoader partition=md.trades-4, dir=/d] Recovering unflushed segment 0. 0 recovered for md.trades-4. (org.apache.kafka.storage.internals.log.LogLoader)
"""


def test_recovery_detail_reads_the_current_run_of_the_broker_log(tmp_path):
    log = tmp_path / "broker.log"
    log.write_text(RUN_1)
    assert recovery_detail(log, 42) is None  # started: running (or unhealthy), not recovering
    log.write_text(RUN_1 + RUN_2)
    detail = recovery_detail(log, 42)
    assert detail is not None and detail.startswith("pid 42, not serving yet: ")
    assert "Recovering unflushed segment 0. 0 recovered for md.trades-4." in detail, detail
    assert "2 segment recoveries so far" in detail, detail
    log.write_text(
        RUN_1 + RUN_2 + "[2026-11-28 15:59:13,656] INFO [KafkaRaftServer nodeId=1] Kafka Server started "
        "(kafka.server.KafkaRaftServer)\n"
    )
    assert recovery_detail(log, 42) is None
    fresh = tmp_path / "fresh.log"
    fresh.write_text("\n--- 2026-11-28T16:00:00+0000 starting: java kafka.Kafka\n")
    assert recovery_detail(fresh, 7) == "pid 7, not serving yet: starting"


def test_a_full_disk_death_is_read_from_the_current_run_only(tmp_path):
    log = tmp_path / "broker.log"
    full = (
        "java.io.IOException: No space left on device\n[2026-11-28 15:54:50,640] ERROR Shutdown broker because "
        "all log dirs in /d have failed (org.apache.kafka.storage.internals.log.LogManager)\n"
    )
    log.write_text(RUN_1 + full)
    assert died_of_full_disk(log)
    log.write_text(RUN_1 + full + RUN_2)
    assert not died_of_full_disk(log)


class Dying(Service):
    """A real process that exits with code 1 after ``life_s`` (``later_s`` from its second start on); its
    restart is held while ``flag`` exists."""

    name = "dying"

    def __init__(self, settings, paths, flag: Path, life_s: float, later_s: float | None = None) -> None:
        super().__init__(settings, paths)
        self.flag, self.life_s, self.later_s = flag, life_s, life_s if later_s is None else later_s
        self.starts = 0

    def prepare(self) -> Launch:
        life = self.life_s if self.starts == 0 else self.later_s
        self.starts += 1
        return Launch(argv=[sys.executable, "-c", f"import time; time.sleep({life}); raise SystemExit(1)"], address="-")

    def health(self, address: str) -> Health:
        return Health(True, "alive")

    def hold_restart(self) -> str | None:
        return f"log disk full ({self.flag.parent}, 0.0 MB free)" if self.flag.exists() else None


def _component(sup, name):
    return next(iter(stack_status(sup.settings, sup.paths, names=(name,))), None)


def test_a_held_restart_is_not_a_crash_and_status_says_why(tmp_path):
    home = tmp_path / "home"
    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None)
    flag = tmp_path / "full"
    flag.touch()
    service = Dying(settings, paths, flag, life_s=1.0)
    with supervising(settings, paths, [service]) as run:
        sup, said, result = run.sup, run.said, run.result
        held = wait_until(
            lambda: (c := _component(sup, "dying")) and c.state == "disk-full" and c,
            10,
            lambda: str(said),
            interval=0.05,
        )
        assert not held.healthy and held.detail == f"dying: log disk full ({tmp_path}, 0.0 MB free)", held
        time.sleep(1.0)  # held: no restart however long, never counted, the stack not given up
        assert service.starts == 1 and not result, said
        assert any(line.startswith("dying: log disk full (") for line in said), said
        for _ in range(RESTART_LIMIT + 2):  # every death while the disk is full is held, none is a crash
            flag.unlink(missing_ok=True)
            starts = service.starts
            wait_until(lambda: service.starts > starts, 10, lambda: str(said), interval=0.05)  # noqa: B023 - waited on at once
            flag.touch()
            wait_until(lambda: "dying" in sup.held, 10, lambda: str(said), interval=0.05)
        assert not result and not any("stopping the stack" in line for line in said), said
        assert any("cleared after" in line and "restarting" in line for line in said), said
    assert result == [0]


class Client(Dying):
    """A ``Dying`` that is never held itself but cannot start while ``flag`` exists (as the engine
    cannot while its broker is down: "no broker")."""

    name = "client"

    def prepare(self) -> Launch:
        if self.flag.exists():
            raise StackError("client: no broker")
        return super().prepare()

    def hold_restart(self) -> str | None:
        return None


def test_a_service_that_dies_while_another_is_held_waits_for_it_instead_of_stopping_the_stack(tmp_path):
    """The CI's disk-full run: the broker held on a full disk, the engine died meanwhile, its restart
    found no broker and the failed restart stopped the whole stack, so the broker never came back."""
    home = tmp_path / "home"
    paths = StackPaths(home)
    paths.ensure()
    settings = Settings(home=home, broker=None, database_url=None)
    flag = tmp_path / "full"
    flag.touch()
    # restarted once space is back, both live on: a process still dying every second would make the
    # stack's exit code depend on whether a restart was in progress when the test stops it
    held = Dying(settings, paths, flag, life_s=0.5, later_s=600)
    client = Client(settings, paths, flag, life_s=1.5, later_s=600)
    flag.unlink()  # both start
    said: list[str] = []
    sup = Supervisor(settings, paths, say=said.append, services=[held, client], steps=[])
    sup.acquire_lock()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(sup.supervise(poll_s=0.05)), daemon=True)
    try:
        sup.start_all()
        flag.touch()  # the disk fills: "dying" is held at its death, "client" dies after it
        thread.start()
        waiting = wait_until(
            lambda: (c := _component(sup, "client")) and c.state == "waiting" and c,
            15,
            lambda: str(said),
            interval=0.05,
        )
        assert waiting.detail == f"client: waiting for dying (log disk full ({tmp_path}, 0.0 MB free))", waiting
        assert _component(sup, "dying").state == "disk-full"
        time.sleep(0.5)
        assert client.starts == 1 and not result, said  # not restarted into a missing broker, stack not stopped
        flag.unlink()  # space again: the held one first, then the one waiting for it
        wait_until(lambda: held.starts > 1 and client.starts > 1, 15, lambda: str(said), interval=0.05)
        assert not result and not any("restart failed" in line or "stopping the stack" in line for line in said), said
    finally:
        sup.stop_requested.set()
        thread.join(10)
        sup.stop_all()
        sup.release()
    assert result == [0]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_a_killed_kafka_says_recovering_and_keeps_every_acknowledged_record(tmp_path):
    from tests.support.faults_broker import broker_restart_after_sigkill

    r = broker_restart_after_sigkill(tmp_path / "home", preload=50_000, during=50_000)
    d = r["detail"]
    states = [s for _, name, s, _, _ in d["states"] if name == "broker"]
    assert "recovering" in states and states[-1] == "running", d["states"]
    assert not {"stale", "stopped"} & set(states), d["states"]  # the supervisor is alive: it is restarting it
    assert d["acked_at_kill"] < d["preload"] + 50_000, "the kill was not mid-write"
    assert r["lost"] == 0 and r["duplicates"] == 0 and d["in_topic"] == d["acked"], d
    assert d["unflushed_after"] == 0 and d["failed_deliveries"] == 0, d
    assert r["recover_s"] < 60, d
