"""The executor service through a real broker: signals and md.trades in, orders/fills/positions out,
state kept across a restart, kill switch obeyed.

Inputs are produced step by step and each step waits for the executor's output, because the executor
consumes several topics and only per-partition order is guaranteed. Trade and signal times are the
wall clock, since the service judges freshness by it. Expected P&L comes from the hand computations in
test_execution_pnl.py (same prices, same defaults).
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException

from execution.kill_switch import publish_kill_switch
from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.kafka_client import (
    ensure_topics,
)
from tapeflow_runtime.settings import Settings
from tests.support.execution import SERDE
from tests.support.executor_io import KEY, Feed, Watcher, free_port
from tests.support.executor_io import wait_consumed as wait_committed
from tests.support.services import ServiceThread

pytestmark = pytest.mark.integration
NOT_READY = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE)


def wait_consumed(bootstrap: str, prefix: str, topic: str, count: int) -> None:
    """`executor_io.wait_consumed`, asked again when the group coordinator is not ready: with the
    transactional executor, its offset fetch in the first test here was answered NOT_COORDINATOR in
    two of three full runs of tests/execution (on a broker the session had just started)."""
    for attempt in range(5):
        try:
            return wait_committed(bootstrap, prefix, topic, count)
        except KafkaException as exc:
            if exc.args[0].code() not in NOT_READY or attempt == 4:
                raise
            time.sleep(0.5)


class RunningExecutor(ServiceThread):
    """The paper executor with market entries (`entry.kind: taker`): the expectations here are hand
    computations of one market entry filled whole at the next trade, whatever the default kind is."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = Path(settings.home) / "executor-taker.yaml"
        config.write_text("entry:\n  kind: taker\n")
        options = ExecuteOptions(config_path=config, start_from="earliest", restore_idle_s=0.3, metrics_port=self.port)
        super().__init__(lambda stop: run_executor(settings, "paper", _stopping(options, stop)))


def _stopping(options: ExecuteOptions, stop) -> ExecuteOptions:
    options.stop = stop
    return options


@pytest.fixture
def env(kafka_bootstrap, topic_prefix, tmp_path):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    settings = Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix)
    watcher = Watcher(kafka_bootstrap, topic_prefix, ["orders", "fills", "positions", "risk.events"])
    yield settings, Feed(kafka_bootstrap, topic_prefix), watcher
    watcher.close()


def test_paper_trades_through_the_broker_and_survives_a_restart(env):
    settings, feed, w = env
    boot, prefix = settings.broker, settings.topic_prefix
    ex = RunningExecutor(settings)
    feed.trade(100.0)  # fresh market data
    wait_consumed(boot, prefix, "md.trades", 1)
    a = feed.signal(strategy="a")
    feed.send("signals", dict(a))  # duplicate delivery
    w.wait("orders", lambda o: o["signal_id"] == a["signal_id"] and o["state"] == "NEW")
    w.wait("risk.events", lambda r: r["reason"] == "duplicate_signal")
    feed.trade(100.0)  # entry
    w.wait("positions", lambda p: p["signal_id"] == a["signal_id"] and p["event"] == "opened")
    feed.trade(97.9)  # SL crossed
    feed.trade(97.8)  # stop fills
    closed_a = w.wait("positions", lambda p: p["signal_id"] == a["signal_id"] and p["event"] == "closed")
    assert closed_a["exit_reason"] == "sl"
    assert closed_a["pnl_r_gross"] == pytest.approx(-1.0) and closed_a["pnl_r_net"] == pytest.approx(-1.14945)

    b = feed.signal(strategy="b")
    w.wait("orders", lambda o: o["signal_id"] == b["signal_id"] and o["state"] == "NEW")
    feed.trade(100.0)
    w.wait("positions", lambda p: p["signal_id"] == b["signal_id"] and p["event"] == "opened")
    feed.trade(102.0)  # TP1 crossed
    feed.trade(102.1)  # TP1 fills
    w.wait("positions", lambda p: p["signal_id"] == b["signal_id"] and p["event"] == "tp1")
    assert ex.close() == 0

    # --- restart: the open position and the handled signals come back from the output topics ---------
    # (the paper executor's clock is event time: a refusal is stamped with the newest input's time, so
    # the refusals after the restart are told from the one before by count)
    w.pump(0.5)
    before = sum(1 for r in w.seen["risk.events"] if r["reason"] == "duplicate_signal")
    assert before == 1
    ex = RunningExecutor(settings)
    feed.send("signals", dict(a))  # both old signals delivered again
    feed.send("signals", dict(b))

    def duplicates_after_restart() -> int:
        return sum(1 for r in w.seen["risk.events"] if r["reason"] == "duplicate_signal") - before

    end = time.monotonic() + 60
    while duplicates_after_restart() < 2 and time.monotonic() < end:
        w.pump(0.2)
    assert duplicates_after_restart() == 2
    feed.trade(104.0)  # TP2 crossed (position b restored in state tp1)
    feed.trade(103.9)  # TP2 fills
    closed_b = w.wait("positions", lambda p: p["signal_id"] == b["signal_id"] and p["event"] == "closed")
    assert ex.close() == 0

    assert closed_b["exit_reason"] == "tp"
    assert closed_b["pnl_r_gross"] == pytest.approx(1.5) and closed_b["pnl_r_net"] == pytest.approx(1.44925)
    w.pump(1.0)
    opened = [p for p in w.seen["positions"] if p["event"] == "opened"]
    assert sorted(p["strategy"] for p in opened) == ["a", "b"]  # one position per signal, across the restart
    entries = [o for o in w.seen["orders"] if o["leg"] == "entry" and o["state"] == "PENDING_NEW"]
    assert len(entries) == 2 and len({o["client_order_id"] for o in entries}) == 2
    # fills match the paper broker's model: next trade, taker fee 0.05 %
    fills = {
        f["client_order_id"][-2:]: f
        for f in w.seen["fills"]
        if f["client_order_id"].startswith(entries[1]["client_order_id"][:-3])
    }
    assert fills["t2"]["price"] == 103.9 and fills["t2"]["fee"] == pytest.approx(0.0005 * 103.9 * 50)
    assert w.keys == {KEY}


def test_kill_switch_blocks_entries_and_survives_a_restart(env, kafka_bootstrap):
    settings, feed, w = env
    ex = RunningExecutor(settings)
    feed.trade(100.0)
    wait_consumed(kafka_bootstrap, settings.topic_prefix, "md.trades", 1)
    publish_kill_switch(kafka_bootstrap, settings.topic_prefix, SERDE, True, modes=["paper"])
    w.wait("risk.events", lambda r: r["scope"] == "global" and r["reason"] == "kill_switch", timeout=60)
    feed.signal(strategy="a")
    w.wait("risk.events", lambda r: r["scope"] == "strategy:a:binance:BTCUSDT" and r["reason"] == "kill_switch")
    assert ex.close() == 0

    ex = RunningExecutor(settings)  # restarts blocked: the switch is in the compacted topic
    feed.trade(100.0)
    s2 = feed.signal(strategy="b")
    w.wait("risk.events", lambda r: r["reason"] == "kill_switch" and r["event_time"] >= s2["eval_time"], timeout=60)
    publish_kill_switch(kafka_bootstrap, settings.topic_prefix, SERDE, False, modes=["paper"])
    w.wait("risk.events", lambda r: r["reason"] == "kill_switch_off")
    feed.trade(100.0)
    wait_consumed(kafka_bootstrap, settings.topic_prefix, "md.trades", 3)
    s3 = feed.signal(strategy="c")
    w.wait("orders", lambda o: o["signal_id"] == s3["signal_id"] and o["state"] == "NEW")
    with urllib.request.urlopen(f"http://127.0.0.1:{ex.port}/health", timeout=5) as resp:
        health = json.loads(resp.read())
    assert resp.status == 200 and health["status"] == "running" and health["sole_writer"] is True
    assert health["risk_state"] == "active"
    with urllib.request.urlopen(f"http://127.0.0.1:{ex.port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert 'tapeflow_executor_risk_decisions_total{decision="block",reason="kill_switch"} 1.0' in metrics
    assert 'tapeflow_executor_orders_total{leg="entry",state="NEW"} 1.0' in metrics
    assert "tapeflow_executor_signal_to_order_seconds_count 1.0" in metrics
    # what it published is counted as the executor's, not as a producer's (the stale-data alert reads
    # those); acknowledged records are counted at the publisher's next poll
    assert "tapeflow_producer_" not in metrics
    deadline = time.monotonic() + 30
    counted = f'tapeflow_executor_publish_messages_out_total{{topic="{settings.topic_prefix}orders"}}'
    # consumer lag per group and input partition (everything consumed and committed: 0)
    lag = (
        f'tapeflow_executor_consumer_lag_messages{{group="{settings.topic_prefix}tapeflow-executor-paper",'
        f'partition="0",topic="{settings.topic_prefix}signals"}} 0.0'
    )
    while counted not in metrics or lag not in metrics:
        assert time.monotonic() < deadline, "published orders never counted"
        time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{ex.port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
    assert ex.close() == 0
    assert not [o for o in w.seen["orders"] if o["signal_id"] in (s2["signal_id"],)]
