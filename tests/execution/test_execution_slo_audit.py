"""Degradation changes audited in a real PostgreSQL (execution_degradations, migration 0029) by the
executor service's writer thread (execution.service_slo.DegradationAudit), and read back on a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client import generate_latest

from execution.metrics import ExecutorMetrics
from execution.service_slo import DegradationAudit, SloFeed
from execution.slo import DegradationChange, SloMonitor
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

W = 300_000
T0 = 1_780_000_200_000  # a multiple of the 5-minute window


def _rows(conninfo: str) -> list[tuple]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            "SELECT mode, rule, changed_time, active, sli, value, threshold, samples, market_only, no_twap_no_maker,"
            " detail FROM execution_degradations ORDER BY changed_time, rule"
        ).fetchall()


def test_a_rule_set_and_cleared_is_two_audited_rows_and_a_restart_resumes_what_is_active(migrated_database):
    audit = DegradationAudit(migrated_database, "paper", retry_s=0.1)
    metrics = ExecutorMetrics()
    feed = SloFeed(SloMonitor(T0), metrics, audit, "paper")
    for ms in (100, 200, 600, 700):  # p95 700 > 500: round_trip_slow set at T0 + W
        feed.monitor.round_trip(ms, T0 + 1)
    for ratio in (0.0, 0.0, 0.5, 0.0):  # mean 0.125 < 0.25 over 4 maker orders: maker_fill_ratio_low set
        feed.monitor.maker_order(ratio, T0 + 2)
    feed.tick(T0 + W, None)
    for ms in (100, 390, 300):  # p95 390 <= 400: round_trip_slow cleared at T0 + 2W
        feed.monitor.round_trip(ms, T0 + W + 1)
    feed.tick(T0 + 2 * W, None)
    wait_until(lambda: audit.written == 3, 30, lambda: f"{audit.written} of 3 rows written")
    at = datetime.fromtimestamp((T0 + W) / 1000, UTC)
    later = datetime.fromtimestamp((T0 + 2 * W) / 1000, UTC)
    assert [r[:10] for r in _rows(migrated_database)] == [
        # rules are evaluated in order: the maker rule's row has the round-trip one not set yet
        ("paper", "maker_fill_ratio_low", at, True, "maker_fill_ratio", 0.125, 0.25, 4, True, False),
        ("paper", "round_trip_slow", at, True, "order_round_trip_p95_ms", 700.0, 500.0, 4, True, True),
        ("paper", "round_trip_slow", later, False, "order_round_trip_p95_ms", 390.0, 400.0, 3, True, False),
    ]
    assert (
        _rows(migrated_database)[2][10]
        == "round_trip_slow cleared: order_round_trip_p95_ms 390 over 3 samples (threshold 400)"
    )
    scrape = generate_latest(metrics.registry).decode()
    assert 'tapeflow_executor_degradation_state{rule="maker_fill_ratio_low"} 1.0' in scrape
    assert 'tapeflow_executor_degradation_state{rule="round_trip_slow"} 0.0' in scrape
    assert 'tapeflow_executor_degradation_changes_total{change="set",rule="round_trip_slow"} 1.0' in scrape
    # the same change again (a retry after an outage) is the same row
    again = DegradationChange(
        T0 + 2 * W, "round_trip_slow", "order_round_trip_p95_ms", False, 390.0, 400.0, 3, feed.monitor.flags
    )
    feed.audit.record(again)
    wait_until(lambda: audit.written == 4, 30, "the retried change")
    audit.close()
    assert len(_rows(migrated_database)) == 3
    # a restarted executor resumes the rule still in force, and none of another mode's
    restored = DegradationAudit(migrated_database, "paper")
    assert restored.last_active() == ["maker_fill_ratio_low"]
    assert SloMonitor(T0 + 3 * W, active=restored.last_active()).flags.market_only
    assert DegradationAudit(migrated_database, "live").last_active() == []
    restored.close()


def test_an_unreachable_database_never_blocks_the_loop():
    audit = DegradationAudit("host=127.0.0.1 port=9 dbname=x user=x connect_timeout=1", "paper", retry_s=0.05)
    assert audit.last_active() == []
    t = time.monotonic()
    feed = SloFeed(SloMonitor(0), ExecutorMetrics(), audit, "paper")
    for ms in (600, 600, 600):
        feed.monitor.round_trip(ms, 1)
    feed.tick(W, None)  # the change is queued, the writer retries in its own thread
    assert feed.flags().no_twap_no_maker and audit.written == 0
    audit.close(timeout_s=2)
    assert time.monotonic() - t < 5
