"""The executor's stall watchdog (`ExecutorService.health`): a loop pass that does not end (a call stuck
inside librdkafka, as `send_offsets_to_transaction` was after a broker restart) turns `/health` from
"running" to "stalled" and stops the last-pass gauge; the pass ending turns it back. One paper executor
on the session's broker; the stuck call is a pass held on an event."""

from __future__ import annotations

import threading

import pytest

from execution.service import ExecuteOptions
from tapeflow_runtime.kafka_client import ensure_topics
from tests.execution.test_execution_service_catching_up import paper_service
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_a_pass_stuck_past_the_limit_reports_stalled_and_recovers(kafka_bootstrap, topic_prefix, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    service = paper_service(
        kafka_bootstrap, topic_prefix, tmp_path, ExecuteOptions(stall_after_s=1.0, restore_idle_s=0.3)
    )
    stuck, release = threading.Event(), threading.Event()
    loop_once = service._loop_once

    def maybe_stuck() -> None:
        loop_once()
        if stuck.is_set():
            release.wait(60)  # never returns until the test releases it: a call that hangs

    service._loop_once = maybe_stuck
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: service.health()["status"] == "running", 60, "the executor running")
        gauge = service.metrics.last_pass
        wait_until(lambda: service.health()["loop_pass_s"] < 0.5, 10, "passes ending")

        stuck.set()
        wait_until(lambda: service.health()["status"] == "stalled", 10, "a stuck pass reported")
        held = gauge.collect()[0].samples[0].value
        assert service.health()["loop_pass_s"] > 1.0
        assert service.status == "running"  # what the loop itself still believes

        stuck.clear()
        release.set()
        wait_until(lambda: service.health()["status"] == "running", 10, "the pass ended")
        wait_until(lambda: gauge.collect()[0].samples[0].value > held, 10, "the gauge moving again")
    finally:
        stop.set()
        release.set()
        thread.join(30)
    assert not thread.is_alive()
    assert service.health()["status"] == "stopped"  # a stopped executor is stopped, not stalled
