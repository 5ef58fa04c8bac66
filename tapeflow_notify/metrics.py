"""Prometheus metrics of the notifier (`tapeflow_notify_<what>_<unit>`), on its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("tapeflow_notify_events_total", "Records read, per topic", ["topic"], registry=r)
        self.sent = Counter(
            "tapeflow_notify_sent_total", "Messages delivered, per channel and kind", ["channel", "kind"], registry=r
        )
        self.failures = Counter(
            "tapeflow_notify_failures_total",
            "Messages a channel did not accept (HTTP error, timeout, unreachable)",
            ["channel"],
            registry=r,
        )
        self.suppressed = Counter(
            "tapeflow_notify_suppressed_total",
            "Events held back and summarised instead (rate_limit, queue_full)",
            ["channel", "kind", "reason"],
            registry=r,
        )
        self.queued = Gauge("tapeflow_notify_queued_messages", "Messages waiting to be sent", ["channel"], registry=r)

    def expect_channels(self, names: list[str]) -> None:
        for name in names:
            self.failures.labels(name)
            self.queued.labels(name).set(0)
