"""The hourly outcome-label service's own rules: it wakes at the top of the hour, and a pass that cannot
reach the database is reported on /health as failing (the process stays up for the next hour)."""

from __future__ import annotations

from execution.config import ExecutorConfig
from review.label_service import LabelService, next_run_ms
from review.labels import HOUR_MS, LabelParams
from tapeflow.stack.process import free_port


def test_next_run_is_the_next_top_of_the_hour():
    assert next_run_ms(0) == HOUR_MS
    assert next_run_ms(HOUR_MS - 1) == HOUR_MS
    assert next_run_ms(HOUR_MS) == 2 * HOUR_MS  # strictly after: a pass at :00 does not run twice


def test_a_pass_without_a_database_is_reported_as_failing_and_the_next_one_recovers(migrated_database):
    down = f"host=127.0.0.1 port={free_port()} dbname=x connect_timeout=2"
    service = LabelService(down, ["paper"], LabelParams(), ExecutorConfig())
    assert service.health()["status"] == "starting"
    service.run_once(1_704_067_200_000)
    health = service.health()
    assert health["status"] == "failing" and "connection" in health["detail"] and health["last_run_ms"] is None
    service.conninfo = migrated_database
    service.run_once(1_704_067_200_000)
    assert service.health() == {
        "status": "running",
        "detail": "labels written 0, trade autopsies 0 at the last pass",
        "last_run_ms": 1_704_067_200_000,
    }
