"""`tapeflow kill-switch on|off [--flatten] [--mode ...]`: stop new trading from outside the executor.

The switch is a record on risk.events (scope `kill_switch`, key `<mode>:kill_switch`), not a flag in a
file or a database row, so every executor of that mode obeys it wherever it runs, and because the topic
is compacted the latest record per mode is the switch's durable position: an executor that starts while
the switch is on starts blocked. `on` cancels open entry orders and blocks entries (positions keep
their exits); `on --flatten` also closes every position at market (exit reason `kill_switch`); `off`
lets entries resume. The command waits for the broker's acknowledgement and fails if there is none:
a kill switch that silently did not arrive is worse than an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import structlog
from confluent_kafka import KafkaError, Producer

from execution.domain import MODES
from execution.risk_guard import KILL_SWITCH, risk_key
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import producer_config

log = structlog.get_logger("kill_switch")


class KillSwitchNotDelivered(RuntimeError):
    """The broker did not acknowledge the kill-switch record."""


def kill_switch_record(on: bool, mode: str, now_ms: int, *, flatten: bool = False) -> dict[str, Any]:
    if flatten and not on:
        raise ValueError("--flatten only goes with `on`")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    decision = ("flatten" if flatten else "halt") if on else "resume"
    return {
        "scope": KILL_SWITCH,
        "mode": mode,
        "decision": decision,
        "state": "halted" if on else "active",
        "reason": KILL_SWITCH if on else "kill_switch_off",
        "daily_pnl_r": None,
        "consecutive_losses": None,
        "paused_until": None,
        "event_time": now_ms,
    }


def publish_kill_switch(
    bootstrap: str,
    topic_prefix: str,
    serde: AvroSerde,
    on: bool,
    *,
    modes: Iterable[str] = MODES,
    flatten: bool = False,
    now_ms: int | None = None,
    timeout_s: float = 10.0,
) -> list[dict[str, Any]]:
    """Produce one kill-switch record per mode and wait until the broker has them all."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    records = [kill_switch_record(on, mode, now_ms, flatten=flatten) for mode in modes]
    errors: list[str] = []

    def delivered(err: KafkaError | None, _msg) -> None:
        if err is not None:
            errors.append(err.str())

    producer = Producer(producer_config(bootstrap, **{"message.timeout.ms": int(timeout_s * 1000)}))
    for rec in records:
        producer.produce(
            topic_prefix + "risk.events",
            key=risk_key(rec["mode"], KILL_SWITCH).encode(),
            value=serde.encode("risk.events", rec),
            on_delivery=delivered,
        )
    remaining = producer.flush(timeout_s + 1)
    if remaining or errors:
        raise KillSwitchNotDelivered(f"kill switch not acknowledged: {remaining} pending, errors {errors}")
    return records


def run_kill_switch(settings, on: bool, *, flatten: bool = False, modes: Iterable[str] = MODES) -> int:
    """Entry point of `tapeflow kill-switch`; returns the exit code (0 delivered, 1 not, 2 bad use)."""
    from schemas.catalogue import topic as topic_spec
    from schemas.registry import registry_from_url
    from tapeflow_runtime.endpoints import resolve_broker
    from tapeflow_runtime.errors import TapeflowError
    from tapeflow_runtime.kafka_client import ensure_topics
    from tapeflow_runtime.paths import StackPaths

    modes = list(modes)
    try:
        records = [kill_switch_record(on, mode, 0, flatten=flatten) for mode in modes]  # validate first
    except ValueError as exc:
        log.error("kill switch refused", error=str(exc))
        return 2
    try:
        bootstrap = resolve_broker(settings, StackPaths(settings.home))
        ensure_topics(bootstrap, prefix=settings.topic_prefix, specs=[topic_spec("risk.events")])
        records = publish_kill_switch(
            bootstrap,
            settings.topic_prefix,
            AvroSerde(registry_from_url(settings.schema_registry_url)),
            on,
            modes=modes,
            flatten=flatten,
        )
    except (TapeflowError, KillSwitchNotDelivered) as exc:
        log.error("kill switch NOT set", error=str(exc))
        return 1
    for rec in records:
        log.warning("kill switch set", mode=rec["mode"], decision=rec["decision"])
    return 0
