"""`tapeflow engine`: run one engine worker (Faust) as a process — the CLI's entry point.

Builds the worker's ``EngineAppConfig`` from the shared ``Settings`` (broker, topic prefix, schema
registry, metrics host) plus the engine's own options, primes a brand-new consumer group from the
last 25 h of input (see ``faust_app.priming``), and runs until SIGINT/SIGTERM. Start it more than
once with the same settings to share the partitions between workers.

Exit codes: 0 after a clean stop, 1 when the worker crashed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Literal

import structlog

from stream_apps.faust_app.bulk_consumer import check_tested_releases
from stream_apps.faust_app.config import (
    INPUT_TOPICS,
    PROGRESS_TOPIC,
    EngineAppConfig,
    shipped_strategy_files,
)
from stream_apps.faust_app.priming import prime_group_offsets
from stream_apps.faust_app.worker import ensure_engine_topics, run_worker
from tapeflow_runtime.endpoints import resolve_broker
from tapeflow_runtime.logs import quiet_library_loggers
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings

log = structlog.get_logger("engine")

PRIME_HISTORY_MS = 25 * 3_600_000


def engine_config(
    settings: Settings,
    *,
    metrics_port: int | None,
    strategies: list[Path] | None = None,
    metrics_host: str | None = None,
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "exactly_once",
    eval_interval_ms: int = 15_000,
    allowed_lateness_ms: int = 0,
    signal_max_age_ms: int | None = None,
    app_id: str | None = None,
    wait_for_progress: bool = False,
) -> EngineAppConfig:
    paths = StackPaths(settings.home)
    group = app_id or f"{settings.topic_prefix}tapeflow-engine"
    return EngineAppConfig(
        bootstrap=resolve_broker(settings, paths),
        app_id=group,
        topic_prefix=settings.topic_prefix,
        strategy_files=strategies or shipped_strategy_files(),
        schema_registry_url=settings.schema_registry_url,
        datadir=paths.home / "engine" / group,
        eval_interval_ms=eval_interval_ms,
        allowed_lateness_ms=allowed_lateness_ms,
        processing_guarantee=processing_guarantee,
        signal_max_age_ms=signal_max_age_ms,
        wait_for_progress=wait_for_progress,
        metrics_host=metrics_host or settings.metrics_host,
        metrics_port=metrics_port,
        log_level=settings.log_level,
        fetch_max_wait_ms=settings.engine_fetch_wait_ms,
        follow_rollouts=settings.engine_follow_rollouts,
    )


async def run_engine(settings: Settings, *, prime_history_ms: int | None = PRIME_HISTORY_MS, **options: Any) -> int:
    """Run one worker until SIGINT/SIGTERM; ``options`` are ``engine_config``'s. ``signal_max_age_ms``
    keeps signals evaluated more than that long ago (wall clock; e.g. while priming) off ``signals`` —
    leave it None when replaying recorded sessions, whose event times are in the past.
    ``prime_history_ms`` None disables priming. ``wait_for_progress`` (a replay, a warm start) holds
    every key until its source's md.progress markers release it, but only for a new group: a
    restarted group resumes from its own offsets and state."""
    check_tested_releases()  # before anything is created: the engine relies on their internals
    config = engine_config(settings, **options)
    config.datadir.mkdir(parents=True, exist_ok=True)
    quiet_library_loggers(config.log_level)
    await asyncio.to_thread(ensure_engine_topics, config)
    if prime_history_ms is not None:
        primed = await asyncio.to_thread(
            prime_group_offsets,
            config.bootstrap,
            config.app_id,
            [config.topic(t) for t in (*INPUT_TOPICS, PROGRESS_TOPIC)],
            int(time.time() * 1000) - prime_history_ms,
        )
        if primed:
            log.info(
                "new engine group primed from history",
                group=config.app_id,
                partitions=len(primed),
                hours=prime_history_ms / 3_600_000,
            )
        elif config.wait_for_progress:
            config = config.model_copy(update={"wait_for_progress": False})  # not new: resume, do not wait
    log.info(
        "engine starting",
        group=config.app_id,
        strategies=[p.name for p in config.strategy_files],
        guarantee=config.processing_guarantee,
    )
    return await run_worker(config)  # compiles the kernels before it joins its group
