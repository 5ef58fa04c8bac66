"""Prometheus metrics of the executor process (`tapeflow_executor_<what>_<unit>`).

They are derived from the records the executor emits (orders, fills, positions, risk decisions), so
what Grafana counts is exactly what the topics say. A private registry per service keeps in-process
tests independent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from execution.slo import OBJECTIVES, RULES, SLIS, WindowResult

_STATE_VALUE = {"active": 0, "paused": 1, "halted": 2}


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages_in = Counter(
            "tapeflow_executor_messages_in_total", "Input records consumed", ["topic"], registry=r
        )
        self.decode_errors = Counter(
            "tapeflow_executor_decode_errors_total",
            "Input records that could not be decoded (dead-lettered)",
            ["topic"],
            registry=r,
        )
        self.decisions = Counter(
            "tapeflow_executor_risk_decisions_total",
            "Risk-guard and signal decisions",
            ["decision", "reason"],
            registry=r,
        )
        self.orders = Counter("tapeflow_executor_orders_total", "Order state transitions", ["leg", "state"], registry=r)
        self.fills = Counter("tapeflow_executor_fills_total", "Executions", ["liquidity"], registry=r)
        self.closed = Counter(
            "tapeflow_executor_positions_closed_total", "Closed positions", ["exit_reason"], registry=r
        )
        self.pnl_r = Gauge(
            "tapeflow_executor_realised_pnl_r", "Net pnl_r summed over positions closed by this process", registry=r
        )
        self.open_positions = Gauge("tapeflow_executor_open_positions", "Open positions", registry=r)
        self.risk_state = Gauge(
            "tapeflow_executor_risk_state", "Risk guard state: 0 active, 1 paused, 2 halted", registry=r
        )
        self.signal_to_order = Histogram(
            "tapeflow_executor_signal_to_order_seconds",
            "Signal produced (Kafka timestamp) to entry order intent emitted",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.lag = Gauge(
            "tapeflow_executor_consumer_lag_messages",
            "High watermark minus committed offset of the executor's input partitions",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.data_age = Gauge(
            "tapeflow_executor_market_data_age_seconds",
            "Age of the newest trade or book record per market",
            ["market"],
            registry=r,
        )
        self.last_pass = Gauge(
            "tapeflow_executor_last_pass_time_seconds",
            "Unix time the consumer loop last finished a pass (a stuck loop stops it; the process still answers)",
            registry=r,
        )
        self._slo_metrics(r)

    def _slo_metrics(self, r: CollectorRegistry) -> None:
        """The execution SLOs (`execution.slo`): raw latencies, each SLI of the last closed window, its
        objective, the consecutive windows that breached it, and the degradation rules in force. The
        labelled series exist from the start (every SLI and rule at 0), so the alerts see them at once."""
        self.round_trip = Histogram(
            "tapeflow_executor_order_round_trip_seconds",
            "Order sent to its first answer (NEW or REJECTED)",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5),
            registry=r,
        )
        self.stream_lag = Histogram(
            "tapeflow_executor_stream_lag_seconds",
            "Market trade handled minus its exchange event time",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.sli = Gauge(
            "tapeflow_executor_sli",
            "Each execution SLI over the last closed SLO window (NaN: no sample)",
            ["sli"],
            registry=r,
        )
        self.slo_objective = Gauge(
            "tapeflow_executor_slo_objective", "Each execution SLI's objective", ["sli"], registry=r
        )
        self.slo_breached = Gauge(
            "tapeflow_executor_slo_breached_seconds",
            "Time the SLI has missed its objective: consecutive breached closed windows x the window length",
            ["sli"],
            registry=r,
        )
        self.degradation = Gauge(
            "tapeflow_executor_degradation_state",
            "1 while the degradation rule is in force, else 0",
            ["rule"],
            registry=r,
        )
        self.degradation_changes = Counter(
            "tapeflow_executor_degradation_changes_total",
            "Degradation rules set or cleared",
            ["rule", "change"],
            registry=r,
        )
        for o in OBJECTIVES:
            self.slo_objective.labels(o.sli).set(o.limit)
        for name in SLIS:
            self.sli.labels(name).set(float("nan"))
            self.slo_breached.labels(name).set(0)
        for rule in RULES:
            self.degradation.labels(rule.name).set(0)
            for change in ("set", "cleared"):
                self.degradation_changes.labels(rule.name, change)

    def set_slo(self, last: WindowResult, breached_windows: Mapping[str, int]) -> None:
        window_s = (last.end_ms - last.start_ms) / 1000
        for name, value in last.values.items():
            self.sli.labels(name).set(float("nan") if value is None else value)
        for name, n in breached_windows.items():
            self.slo_breached.labels(name).set(n * window_s)

    def set_degradation(self, active: frozenset[str]) -> None:
        for rule in RULES:
            self.degradation.labels(rule.name).set(1 if rule.name in active else 0)

    def observe_record(self, topic: str, record: dict[str, Any]) -> None:
        if topic == "orders":
            self.orders.labels(record["leg"], record["state"]).inc()
        elif topic == "fills":
            self.fills.labels(record["liquidity"]).inc()
        elif topic == "positions":
            if record["event"] == "closed":
                self.closed.labels(record["exit_reason"]).inc()
                self.pnl_r.inc(record["pnl_r_net"])
        elif topic == "risk.events":
            self.decisions.labels(record["decision"], record["reason"]).inc()
            self.set_risk_state(record["state"])

    def set_risk_state(self, state: str) -> None:
        self.risk_state.set(_STATE_VALUE.get(state, 2))
