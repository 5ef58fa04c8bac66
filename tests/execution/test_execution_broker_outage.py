"""The transactional executor through a broker outage longer than its commit's patience.

A broker that stops answering (here: SIGSTOPped, as a long GC pause or a slow restart looks to its
clients) while the executor holds handled inputs whose offsets are not committed yet: the commit of
those offsets cannot finish. Nothing was published in that transaction, so nothing of the executor's
state needs rolling back: it must ride the outage out and commit the offsets with its next transaction,
not exit (before the fix it exited with code 1 once its 30-s commit deadline passed, and the stack
restarted it: the disk-full fault test saw that under the suite's load, when the broker's restart took
30 s).
"""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.settings import Settings
from tests.support.executor_io import Feed, Watcher, free_port, wait_consumed
from tests.support.faults_broker import broker_alone
from tests.support.services import ServiceThread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

OUTAGE_S = 45.0  # past the commit's 30-s deadline and the group's 30-s max poll interval


def trades_handled(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r'^tapeflow_executor_messages_in_total\{topic="md\.trades"\} (\S+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.timeout(400)  # over the default: scheduled with the long tests, first (tests/conftest.py)
def test_an_executor_rides_out_a_broker_outage_with_uncommitted_offsets(tmp_path: Path):
    with broker_alone(tmp_path / "home") as sup:
        boot = sup.addresses["broker"]
        prefix = "outage-"
        ensure_topics(boot, prefix=prefix)
        settings = Settings(home=tmp_path / "exec", broker=boot, topic_prefix=prefix)
        port = free_port()
        ex = ServiceThread(
            lambda stop: run_executor(
                settings,
                "paper",
                ExecuteOptions(
                    start_from="earliest", stop=stop, restore_idle_s=0.3, metrics_port=port, commit_interval_ms=10_000
                ),
            )
        )
        feed = Feed(boot, prefix)
        watcher = None
        try:
            feed.trade(100.0)
            wait_consumed(boot, prefix, "md.trades", 1)  # the first commit: the group is up
            feed.trade(100.1)
            wait_until(lambda: trades_handled(port) >= 2, 30, "second trade not handled", interval=0.05)
            # handled, its offset not committed (the next commit is up to 10 s away): that commit meets the outage
            broker_pid = sup.running["broker"].proc.pid
            os.kill(broker_pid, signal.SIGSTOP)
            try:
                time.sleep(OUTAGE_S)  # the fault's length is the point here, not a wait for a condition
                assert ex.thread.is_alive() and not ex.code, f"the executor exited during the outage: {ex.code}"
            finally:
                os.kill(broker_pid, signal.SIGCONT)
            wait_consumed(boot, prefix, "md.trades", 2, timeout=120)  # the offsets commit after all
            watcher = Watcher(boot, prefix, ["orders", "risk.events"])
            feed.trade(100.0)  # fresh market data, then a signal: the executor still trades
            sig = feed.signal(strategy="after-outage")
            watcher.wait("orders", lambda o: o["signal_id"] == sig["signal_id"] and o["state"] == "NEW", timeout=60)
            assert ex.thread.is_alive() and not ex.code
            orders = [o for o in watcher.seen["orders"] if o["state"] == "PENDING_NEW"]
            assert len(orders) == 1, orders  # one entry, once
        finally:
            if watcher is not None:
                watcher.close()
            code = ex.close()
        assert code == 0
