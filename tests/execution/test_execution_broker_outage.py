"""The transactional executor through a broker outage longer than its commit's patience, then through
a broker restart.

A broker that stops answering (here: SIGSTOPped, as a long GC pause or a slow restart looks to its
clients) while the executor holds handled inputs whose offsets are not committed yet: the commit of
those offsets cannot finish. Nothing was published in that transaction, so nothing of the executor's
state needs rolling back: it must ride the outage out and commit the offsets with its next transaction,
not exit (before the fix it exited with code 1 once its 30-s commit deadline passed, and the stack
restarted it: the disk-full fault test saw that under the suite's load, when the broker's restart took
30 s).

Then the broker is SIGKILLed and restarted by its supervisor (as `tapeflow up` runs it, same address):
every connection of the executor's clients is refused for a while, its group rejoins, and the
assignment's fencing check sends offsets to a transaction. The executor must trade the next signal
(once) and stop promptly. Before the fix it stalled for good: librdkafka (2.16) re-bootstraps a
client whose brokers are all down, decommissioning the learned broker while it is still cached as
the group coordinator, and `send_offsets_to_transaction` then waited on that dead broker past its
timeout (librdkafka issues 5511 and 5456); the consumer left the group ("maximum poll interval
exceeded") and the executor neither traded nor stopped (`tapeflow down` killed it). The transactional
producer now never re-bootstraps (`tapeflow_runtime.publisher`).
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
from schemas.catalogue import symbol_key
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.settings import Settings
from tests.support.execution import SERDE, signal_record, trade_record
from tests.support.executor_io import Feed, Watcher, free_port, wait_consumed
from tests.support.faults_broker import broker_alone, status_of
from tests.support.services import ServiceThread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

OUTAGE_S = 45.0  # past the commit's 30-s deadline and the group's 30-s max poll interval


def trades_handled(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    m = re.search(r'^tapeflow_executor_messages_in_total\{topic="md\.trades"\} (\S+)$', body, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.timeout(400)  # over the default: scheduled with the long tests, first (tests/conftest.py)
def test_an_executor_rides_out_a_broker_outage_and_a_broker_restart(tmp_path: Path):
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
            restart_broker(sup)
            # another symbol (BTCUSDT has the position of the first signal); a fresh producer of the test's own
            feed = Feed(boot, prefix)
            send(feed, "md.trades", trade_record(50.0, feed.now(), symbol="ETHUSDT"))
            sig2 = send(feed, "signals", signal_record(eval_time=feed.now(), symbol="ETHUSDT", price=50.0))
            watcher.wait("orders", lambda o: o["signal_id"] == sig2["signal_id"] and o["state"] == "NEW", timeout=90)
            assert ex.thread.is_alive() and not ex.code
            watcher.pump(1.0)  # anything published after it (a second entry of either signal) is seen too
            entries = sorted(o["signal_id"] for o in watcher.seen["orders"] if o["state"] == "PENDING_NEW")
            assert entries == sorted([sig["signal_id"], sig2["signal_id"]]), entries  # one entry per signal, once
        finally:
            if watcher is not None:
                watcher.close()
            code = ex.close()  # within ServiceThread's 30 s (the stalled executor never stopped)
        assert code == 0


def send(feed: Feed, topic: str, record: dict) -> dict:
    """`record` to `topic` under ETHUSDT's key (`Feed` sends everything under BTCUSDT's)."""
    feed.p.produce(feed.prefix + topic, key=symbol_key("binance", "ETHUSDT"), value=SERDE.encode(topic, record))
    assert feed.p.flush(10) == 0
    return record


def restart_broker(sup) -> None:
    """SIGKILL the broker and wait until its supervisor has it healthy again (same address, same log)."""
    old = sup.running["broker"].proc.pid
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (s := sup.running.get("broker")) is not None and s.proc.pid != old, 60, "broker not restarted")
    wait_until(
        lambda: (c := status_of(sup, "broker")) is not None and c.healthy, 120, "broker not healthy", interval=0.5
    )
