"""Prometheus metrics of the producer process (`tapeflow_producer_<what>_<unit>`).

Names match deploy/prometheus/alerts.yml. Each process exposes one HTTP port (`--metrics-port`).
A private registry per producer keeps tests (several producers in one interpreter) independent.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter("tapeflow_producer_messages_in_total", "Frames/rows received", ["stream"], registry=r)
        self.messages_out = Counter("tapeflow_producer_messages_out_total", "Records delivered to Kafka", ["topic"],
                                    registry=r)
        self.delivery_errors = Counter("tapeflow_producer_delivery_errors_total",
                                       "Kafka delivery failures (each is retried)", ["topic"], registry=r)
        self.gaps_detected = Counter("tapeflow_producer_gaps_detected_total", "aggTrade holes seen", ["symbol"],
                                     registry=r)
        self.gaps_filled = Counter("tapeflow_producer_gaps_filled_total", "aggTrade holes filled from REST",
                                   ["symbol"], registry=r)
        self.gaps_unfilled = Counter("tapeflow_producer_gaps_unfilled_total",
                                     "aggTrade holes given up and published on md.gaps", ["symbol"], registry=r)
        self.book_resyncs = Counter("tapeflow_producer_book_resyncs_total", "Order-book resynchronisations",
                                    ["symbol", "reason"], registry=r)
        self.reconnects = Counter("tapeflow_producer_reconnects_total", "Websocket reconnects", ["reason"],
                                  registry=r)
        self.dlq = Counter("tapeflow_producer_dlq_messages_total", "Frames sent to the dead-letter topic",
                           ["stream"], registry=r)
        self.rest_backoffs = Counter("tapeflow_producer_rest_backoffs_total", "REST 429/418/5xx back-offs",
                                     ["status"], registry=r)
        self.last_event_age = Gauge("tapeflow_producer_last_event_age_seconds",
                                    "Seconds since the last event per exchange, symbol and stream (freshness)",
                                    ["exchange", "symbol", "stream"], registry=r)
        self.clock_drift = Gauge("tapeflow_producer_clock_drift_seconds",
                                 "Local clock minus exchange server time", registry=r)
        self.produce_latency = Histogram(
            "tapeflow_producer_produce_latency_seconds", "Receive-to-Kafka-acknowledgement latency",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r)
        self._last_event: dict[tuple[str, str, str], float] = {}

    def saw_event(self, stream: str, exchange: str = "", symbol: str = "") -> None:
        """One frame of ``stream`` (a kind: aggTrade, depth, ...); freshness is kept per exchange and
        symbol too, which is what the stale-data alert and the risk guard care about."""
        self.messages_in.labels(stream).inc()
        self._last_event[(exchange, symbol, stream)] = time.time()

    def refresh_freshness(self) -> None:
        now = time.time()
        for (exchange, symbol, stream), t in self._last_event.items():
            self.last_event_age.labels(exchange, symbol, stream).set(now - t)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint; returns the bound port (0 = pick a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_address[1]
