"""The executor service feeds its SLO monitor (execution.service_slo) through a real broker: a market
trade gives a stream-lag sample, the entry's order intent and its answer a round trip, the signal a
gate decision; the flags in force reach the health endpoint. One paper executor, a few records."""

from __future__ import annotations

import json
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from execution.service import ExecuteOptions, run_executor
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.settings import Settings
from tests.support.executor_io import Feed, Watcher, free_port, wait_consumed
from tests.support.services import ServiceThread, metrics_text
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def _samples(port: int) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics_text(port)):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_the_paper_executor_measures_round_trips_stream_lag_and_publishes_the_flags(
    kafka_bootstrap, topic_prefix, tmp_path
):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    settings = Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix)  # no database
    watcher = Watcher(kafka_bootstrap, topic_prefix, ["orders"])
    feed = Feed(kafka_bootstrap, topic_prefix)
    port = free_port()
    service = ServiceThread(
        lambda stop: run_executor(
            settings, "paper", ExecuteOptions(start_from="earliest", stop=stop, restore_idle_s=0.3, metrics_port=port)
        )
    )
    try:
        feed.trade(100.0)
        # the executor is up and has the market before the signal comes (a signal it handled late, on a
        # loaded machine, would be refused as stale)
        wait_consumed(kafka_bootstrap, topic_prefix, "md.trades", 1)
        feed.trade(100.0)  # fresh, however long the start took
        a = feed.signal(strategy="a")
        watcher.wait("orders", lambda o: o["signal_id"] == a["signal_id"] and o["state"] == "NEW", timeout=60)
        wait_until(
            lambda: _samples(port).get("tapeflow_executor_order_round_trip_seconds_count", 0) >= 1,
            30,
            "a round trip measured",
        )
        m = _samples(port)
        # the paper broker answers inside submit: far under the 500 ms that would degrade (a loaded
        # machine may pause a few ms, so not the first bucket)
        assert (
            m["tapeflow_executor_order_round_trip_seconds_bucket{le=0.5}"]
            == m["tapeflow_executor_order_round_trip_seconds_count"]
        )
        assert m["tapeflow_executor_stream_lag_seconds_count"] >= 1
        for sli in ("order_round_trip_p95_ms", "maker_fill_ratio"):
            assert m[f"tapeflow_executor_slo_breached_seconds{{sli={sli}}}"] == 0
        assert m["tapeflow_executor_slo_objective{sli=order_round_trip_p95_ms}"] == 500
        assert m["tapeflow_executor_degradation_state{rule=round_trip_slow}"] == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            health = json.loads(resp.read())
        assert health["degradation"] is None
    finally:
        assert service.close() == 0
        watcher.close()
