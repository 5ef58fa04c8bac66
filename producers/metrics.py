"""Prometheus metrics of the producer process (`tapeflow_producer_<what>_<unit>`).

Names match deploy/prometheus/alerts.yml. Each process exposes one HTTP port (`--metrics-port`).
A private registry per producer keeps tests (several producers in one interpreter) independent.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    start_http_server,
)

from tapeflow_runtime.publisher import PublishMetrics


class ProducerMetrics(PublishMetrics):
    """The publisher's delivery metrics plus what only a market-data producer measures."""

    def __init__(self, registry: CollectorRegistry | None = None, prefix: str = "tapeflow_producer") -> None:
        super().__init__(registry, prefix)
        r = self.registry
        self.messages_in = Counter(f"{prefix}_messages_in_total", "Frames/rows received", ["stream"], registry=r)
        self.gaps_detected = Counter(f"{prefix}_gaps_detected_total", "aggTrade holes seen", ["symbol"], registry=r)
        self.gaps_filled = Counter(
            f"{prefix}_gaps_filled_total", "aggTrade holes filled from REST", ["symbol"], registry=r
        )
        self.gaps_unfilled = Counter(
            f"{prefix}_gaps_unfilled_total", "aggTrade holes given up and published on md.gaps", ["symbol"], registry=r
        )
        self.duplicates_dropped = Counter(
            f"{prefix}_duplicates_dropped_total",
            "Stream trades dropped as already published (repeated frames, reconnect overlap)",
            ["symbol"],
            registry=r,
        )
        self.book_resyncs = Counter(
            f"{prefix}_book_resyncs_total", "Order-book resynchronisations", ["symbol", "reason"], registry=r
        )
        self.reconnects = Counter(f"{prefix}_reconnects_total", "Websocket reconnects", ["reason"], registry=r)
        self.rest_backoffs = Counter(
            f"{prefix}_rest_backoffs_total", "REST 429/418/5xx back-offs", ["status"], registry=r
        )
        self.last_event_age = Gauge(
            f"{prefix}_last_event_age_seconds",
            "Seconds since the last event per exchange, symbol and stream (freshness)",
            ["exchange", "symbol", "stream"],
            registry=r,
        )
        self.clock_drift = Gauge(f"{prefix}_clock_drift_seconds", "Local clock minus exchange server time", registry=r)
        self._last_event: dict[tuple[str, str, str], float] = {}

    def expect_symbols(self, symbols: list[str]) -> None:
        """The gap counters of every configured symbol exist from the start at 0, so `increase()` and
        the dashboards see the first gap, and a symbol without gaps reads 0 rather than nothing."""
        for symbol in symbols:
            for counter in (self.gaps_detected, self.gaps_filled, self.gaps_unfilled, self.duplicates_dropped):
                counter.labels(symbol)

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
