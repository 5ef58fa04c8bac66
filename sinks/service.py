"""`tapeflow sink`: run the topic → table sink as a process (metrics/health port, clean stop on SIGTERM).

The consumer loop is blocking (confluent-kafka, psycopg), so it runs in a worker thread while the
event loop serves `/metrics` and `/health`; SIGINT/SIGTERM finish the current batch and stop.
"""

from __future__ import annotations

import asyncio
import signal
import time

import structlog

from schemas.catalogue import all_topics
from schemas.registry import registry_from_url
from schemas.serde import AvroSerde
from sinks.consumer import SinkConfig, TopicSink
from sinks.metrics import SinkMetrics
from sinks.retention import resolve_policies
from sinks.tables import sinkable_topics
from tapeflow_runtime.endpoints import resolve_broker, resolve_database
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.service_http import build_app, serve
from tapeflow_runtime.settings import Settings

log = structlog.get_logger("sink")


def default_topics() -> list[str]:
    """Every catalogue topic that has a table (DLQ topics land in pipeline_errors via their own rows)."""
    return [t.name for t in all_topics() if t.name in sinkable_topics()]


async def run_sink(settings: Settings, topics: list[str] | None, metrics_port: int, metrics_host: str) -> int:
    paths = StackPaths(settings.home)
    # the group carries the prefix like the engine's and executor's: sinks of two prefixes on one
    # cluster must not share (and split) one group
    config = SinkConfig(
        topics=topics or default_topics(),
        topic_prefix=settings.topic_prefix,
        group_id=f"{settings.topic_prefix}tapeflow-sink",
        retention=resolve_policies(settings.retention),
        writers=settings.sink_writers,
        fetch_wait_ms=settings.sink_fetch_wait_ms,
        raw_fetch=settings.sink_raw_fetch,
    )
    metrics = SinkMetrics()
    sink = TopicSink(
        config,
        resolve_broker(settings, paths),
        resolve_database(settings, paths).writer,
        AvroSerde(registry_from_url(settings.schema_registry_url)),
        metrics,
    )
    started = time.time()

    def health() -> dict:
        # "starting" (not healthy) until the sink consumes: its start (the consumer, the first partition
        # maintenance) does not look at a stop request, so a stack called healthy and stopped at once
        # waited it out, past the supervisor's stop timeout, and the sink was killed
        ok = sink.committed_batches > 0 or time.time() - started < 60 or bool(sink.assignment)
        status = (
            "database-down" if sink.database_down else "starting" if not sink.consuming else "running" if ok else "idle"
        )
        detail = f"{sink.committed_batches} batches committed, {len(sink.assignment)} partitions assigned"
        if sink.database_down:
            down_s = time.monotonic() - (sink.database_down_since or time.monotonic())
            detail = f"database writes failing for {down_s:.0f} s ({sink.database_error}); {detail}"
        return {"status": status, "detail": detail}

    runner, port = await serve(
        build_app(metrics.registry, health, frozenset({"running", "idle"})), metrics_host, metrics_port
    )
    log.info("sink started", topics=config.topics, metrics_port=port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(sink, "stop_requested", True))
    try:
        await asyncio.to_thread(sink.run)
    finally:
        await runner.cleanup()
    log.info("sink stopped", batches=sink.committed_batches)
    return 0
