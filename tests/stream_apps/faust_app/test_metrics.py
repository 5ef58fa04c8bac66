"""`EngineAppMetrics.forget_group`: a stopped worker's consumer-lag series leave the registry.

On the embedded stack the engine follows the topic epochs in one process, with a consumer group per
epoch; every rollover used to leave the old group's 36 lag series (6 topics x 6 partitions) in the
registry for good: memory that grew by every rollover and stale series in every scrape."""

from __future__ import annotations

from prometheus_client import generate_latest

from stream_apps.faust_app.metrics import EngineAppMetrics


def lag_series(metrics: EngineAppMetrics) -> set[tuple[str, str, str]]:
    return {(s.labels["group"], s.labels["topic"], s.labels["partition"])
            for family in metrics.lag.collect() for s in family.samples}


def test_forgetting_a_group_removes_its_lag_series_and_keeps_the_others():
    metrics = EngineAppMetrics()
    for group in ("e1.tapeflow-engine", "e2.tapeflow-engine"):
        for topic in ("md.trades", "md.book"):
            for partition in range(3):
                metrics.lag.labels(group, group[:3] + topic, str(partition)).set(partition + 1)

    assert metrics.forget_group("e1.tapeflow-engine") == 6

    assert lag_series(metrics) == {("e2.tapeflow-engine", "e2." + topic, str(p))
                                   for topic in ("md.trades", "md.book") for p in range(3)}
    scrape = generate_latest(metrics.registry).decode()
    assert 'group="e1.tapeflow-engine"' not in scrape and 'group="e2.tapeflow-engine"' in scrape
    assert metrics.forget_group("e1.tapeflow-engine") == 0  # nothing left of it: idempotent


def test_a_stopped_worker_leaves_no_lag_series_of_its_group(tmp_path):
    """What a rollover does with the old epoch's worker (``worker.run_worker``): ``stop`` forgets its
    group's series and no other (the next epoch's worker shares the metrics). No broker is needed: the
    app was never started."""
    import asyncio

    from stream_apps.faust_app.app import EngineWorker
    from stream_apps.faust_app.config import EngineAppConfig

    metrics = EngineAppMetrics()
    old = EngineWorker(EngineAppConfig(bootstrap="127.0.0.1:9", app_id="e1.tapeflow-engine", topic_prefix="e1.",
                                       datadir=tmp_path / "e1", metrics_port=None), metrics=metrics)
    metrics.lag.labels("e1.tapeflow-engine", "e1.md.trades", "0").set(3)
    metrics.lag.labels("e2.tapeflow-engine", "e2.md.trades", "0").set(5)

    asyncio.run(old.stop())

    assert lag_series(metrics) == {("e2.tapeflow-engine", "e2.md.trades", "0")}
