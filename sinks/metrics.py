"""Prometheus metrics of a sink process (`tapeflow_sink_<what>_<unit>`; names used by deploy/prometheus/alerts.yml).

Labels are what the alert rules group by: errors per table and kind, dead letters per DLQ topic and
reason, lag per consumer group and partition. The error counters of every table the sink writes are
created at 0 (`expect_tables`), so `increase()` sees the first error.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ERROR_KINDS = ("decode", "map", "database")


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rows = Counter("tapeflow_sink_rows_written_total", "New rows committed per table", ["table"], registry=r)
        self.records = Counter("tapeflow_sink_records_total", "Records consumed (new or re-delivered)", registry=r)
        self.batch_size = Histogram(
            "tapeflow_sink_batch_records",
            "Records per committed batch",
            buckets=(1, 10, 100, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000),
            registry=r,
        )
        self.commit_latency = Histogram(
            "tapeflow_sink_commit_seconds",
            "COPY + insert + commit time per batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.dlq = Counter(
            "tapeflow_sink_dlq_messages_total",
            "Records sent to a dead-letter topic (dlq.<topic>)",
            ["topic", "reason"],
            registry=r,
        )
        self.errors = Counter(
            "tapeflow_sink_errors_total",
            "Records that failed to decode or map, and failed "
            "batch writes (kind=database, per table of the batch, retried or not)",
            ["table", "kind"],
            registry=r,
        )
        self.db_retries = Counter(
            "tapeflow_sink_db_retries_total", "Batch retries while the database was down", registry=r
        )
        self.database_state = Gauge(
            "tapeflow_sink_database_state", "1 while a batch waits for an unreachable database, else 0", registry=r
        )
        self.lag = Gauge(
            "tapeflow_sink_consumer_lag_messages",
            "High watermark minus committed offset",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.last_event_time = Gauge(
            "tapeflow_sink_last_committed_event_time_seconds",
            "Newest event time committed per table (freshness)",
            ["table"],
            registry=r,
        )

    def expect_tables(self, tables: list[str]) -> None:
        for table in tables:
            for kind in ERROR_KINDS:
                self.errors.labels(table, kind)

    def observe_batch(
        self, records: int, commit_s: float, written: dict[str, int], max_time_ms: dict[str, int]
    ) -> None:
        self.records.inc(records)
        self.batch_size.observe(records)
        self.commit_latency.observe(commit_s)
        for table, n in written.items():
            self.rows.labels(table).inc(max(0, n))
        for table, t in max_time_ms.items():
            self.last_event_time.labels(table).set(t / 1000)
