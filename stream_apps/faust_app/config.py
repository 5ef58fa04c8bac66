"""``EngineAppConfig``: every knob of the engine worker, validated once, passable to a subprocess as JSON.

Why one model: the CLI (`tapeflow engine`), the stack supervisor, the tests and the benchmarks all
start the same worker; a single validated model (pydantic, unknown keys rejected) keeps their
settings from drifting, and ``model_dump_json`` / ``model_validate_json`` carry it across a process
boundary unchanged.

Group timeouts default low (like ``tapeflow_runtime.kafka_client.FAST_GROUP_CONFIG``) because every
consumer-group join waits for the rebalance timeout; on a production cluster raise them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.catalogue import ENGINE_INPUTS, PROGRESS_TOPIC  # noqa: F401 - PROGRESS_TOPIC: the engine modules read their topics here
from stream_apps.core.strategy import default_strategy_dir

INPUT_TOPICS = ENGINE_INPUTS
OUTPUT_TOPICS = ("bars.1m", "features", "signals")
DEAD_LETTER_TOPIC = "dlq.md"
STATE_TABLE = "engine-state"


def shipped_strategy_files() -> list[Path]:
    return sorted(p for p in default_strategy_dir().iterdir() if p.suffix in (".yaml", ".yml", ".json"))


class EngineAppConfig(BaseModel):
    """Settings of one engine worker (all workers of a group must share them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap: str = Field(description="Kafka bootstrap servers host:port[,host:port]")
    app_id: str = Field(
        default="tapeflow-engine",
        pattern=r"^[A-Za-z0-9._-]+$",
        description="Faust app id = consumer group id = prefix of the changelog topic",
    )
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$")
    strategy_files: list[Path] = Field(default_factory=shipped_strategy_files, min_length=1)
    schema_registry_url: str | None = None
    datadir: Path = Field(description="Faust's local data directory (tables, offsets)")

    # engine cadence (EngineParams)
    eval_interval_ms: int = Field(default=15_000, gt=0, description="evaluate every symbol at least this often")
    allowed_lateness_ms: int = Field(default=0, ge=0, description="evaluate this long after a second closes")

    # batching, state persistence and input alignment
    snapshot_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="write a changed symbol's engine state to the table at most this often; "
        "input offsets become committable only once a snapshot holds them",
    )
    max_hold_s: float = Field(
        default=5.0,
        gt=0,
        description="release inputs held for event-time alignment after this long without "
        "progress on the topic that holds them back",
    )
    wait_for_progress: bool = Field(
        default=False,
        description="hold every key's inputs until md.progress markers release them (a new group "
        "reading a replay or a warm start); a key also waits once a marker for it arrives",
    )
    follow_rollouts: bool = Field(
        default=True,
        description="follow config.rollouts and switch strategy revisions without a restart (hot reload, "
        "stream_apps.faust_app.rollouts): each symbol switches at its next input, recorded on "
        "config.applied with that input's outputs",
    )
    progress_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="a key waiting for markers whose source sent none this long is released by the caught-up rule",
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        default="at_least_once",
        description="exactly_once (what the stack runs: `tapeflow engine --exactly-once`): outputs, "
        "state snapshots and input offsets commit in one Kafka transaction per input partition every "
        "commit_interval_s (the broker must serve transactions); at_least_once: idempotent outputs that a "
        "crash may write twice",
    )
    signal_max_age_ms: int | None = Field(
        default=None,
        gt=0,
        description="do not publish signals whose eval_time is older than this (wall clock); "
        "None publishes every signal (replays, tests)",
    )

    # Faust / consumer group
    commit_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Faust's commit timer; with exactly_once also the transaction length: "
        "outputs become visible to read_committed readers at the next commit, and every changed key is "
        "snapshotted at each commit",
    )
    broker_session_timeout_s: float = Field(default=6.0, gt=0)
    broker_heartbeat_interval_s: float = Field(
        default=2.0, gt=0, description="a third of the session: each heartbeat is a request the idle broker answers"
    )
    broker_rebalance_timeout_s: float = Field(default=6.0, gt=0)
    # Kafka's default. One fetch is handled before the next is asked for, and a new group catching up
    # on hours of md.* on a loaded machine took more than 30 s for one: aiokafka then left the group and,
    # since it does not rejoin while its fetcher is idle and Faust does not fetch while rebalancing,
    # the worker stayed "rebalancing" for good (parity test, 2026-11-23). This is no join wait.
    broker_max_poll_interval_s: float = Field(default=300.0, gt=0)
    max_fetch_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="per partition and fetch")
    fetch_max_wait_ms: int = Field(
        default=100,
        gt=0,
        le=1500,
        description="longest a fetch waits for data (Faust: 1500): lower = lower latency, more CPU on "
        "empty fetches (benchmarks/RESULTS.md)",
    )

    # observability
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=0, ge=0, le=65535, description="None: no HTTP endpoint; 0: any free port")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check(self) -> EngineAppConfig:
        if self.eval_interval_ms % 1000:
            raise ValueError("eval_interval_ms must be a whole number of seconds")
        if self.broker_heartbeat_interval_s >= self.broker_session_timeout_s:
            raise ValueError("broker_heartbeat_interval_s must be below broker_session_timeout_s")
        return self

    def topic(self, name: str) -> str:
        return self.topic_prefix + name
