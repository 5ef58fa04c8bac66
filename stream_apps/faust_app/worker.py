"""Run one engine worker until SIGINT/SIGTERM: topics ensured, Faust app started, ``/metrics`` and
``/health`` served, state flushed and offsets committed on the way out.

``python -m stream_apps.faust_app --config FILE.json`` (an ``EngineAppConfig`` as JSON) is the
process entry the tests, benchmarks and compose use; ``tapeflow engine`` goes through
``stream_apps.service.run_engine``. The worker prints one ``engine worker ready ...`` line with its
metrics port once the app has started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from pathlib import Path

import structlog

from schemas.catalogue import TOPICS
from stream_apps.core.strategy import load_strategy
from stream_apps.core.warmup import warm_up
from tapeflow_runtime.batch import streaming_gc
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.logs import configure_logging
from tapeflow_runtime.service_http import build_app, serve

from .app import EngineWorker
from .config import DEAD_LETTER_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS, PROGRESS_TOPIC, EngineAppConfig
from .metrics import EngineAppMetrics

log = structlog.get_logger("engine")
HEALTHY = frozenset({"running", "rebalancing"})


def ensure_engine_topics(config: EngineAppConfig) -> None:
    """The catalogue topics the worker reads and writes (Faust creates its own changelog)."""
    from schemas.catalogue import DLQ_TOPICS

    names = (*INPUT_TOPICS, PROGRESS_TOPIC, *OUTPUT_TOPICS, "config.rollouts", "config.applied")
    specs = [TOPICS[name] for name in names] + [DLQ_TOPICS[DEAD_LETTER_TOPIC]]
    ensure_topics(config.bootstrap, prefix=config.topic_prefix, specs=specs)


async def run_worker(
    config: EngineAppConfig, metrics: EngineAppMetrics | None = None, stop: asyncio.Event | None = None
) -> int:
    """Run until ``stop`` is set (or SIGINT/SIGTERM); returns 0, or 1 when the app crashed."""
    await asyncio.to_thread(ensure_engine_topics, config)
    began = time.monotonic()
    # numba compiles a kernel at its first call (seconds in a fresh checkout): done here, before the
    # group join, not in the first fetch of a member whose session is already running
    await asyncio.to_thread(warm_up, [load_strategy(path) for path in config.strategy_files])
    log.info("engine kernels ready", seconds=round(time.monotonic() - began, 2))
    metrics = metrics or EngineAppMetrics()
    worker = EngineWorker(config, metrics=metrics)
    streaming_gc()  # a container per record read: the default thresholds cost half of reading them
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def health() -> dict:
        return {**worker.health(), "topic_prefix": config.topic_prefix}

    runner = None
    port = None
    if config.metrics_port is not None:
        runner, port = await serve(
            build_app(metrics.registry, health, HEALTHY), config.metrics_host, config.metrics_port
        )
    try:
        await worker.start()
    except BaseException:
        if runner is not None:
            await runner.cleanup()
        raise
    print(f"engine worker ready app_id={config.app_id} metrics_port={port}", flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    crashed = asyncio.ensure_future(_wait_crash(worker))
    try:
        await asyncio.wait([stopping, crashed], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        crashed.cancel()
        await worker.stop()
        if runner is not None:
            await runner.cleanup()
    failed = worker.app.crash_reason is not None or worker.crashed is not None
    print(f"engine worker stopped batches={worker.batches} crashed={failed}", flush=True)
    return 1 if failed else 0


async def _wait_crash(worker: EngineWorker) -> None:
    """Until the worker or its Faust app crashes: the worker's own crashes set ``crash_seen`` at once;
    a crash inside Faust only sets the app's reason, looked at every few seconds (an idle worker's
    timers are its CPU, and a crashed app stops consuming, so a late look loses nothing)."""
    while worker.app.crash_reason is None and worker.crashed is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.crash_seen.wait(), 5.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream_apps.faust_app", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="EngineAppConfig as a JSON file")
    args = parser.parse_args(argv)
    config = EngineAppConfig.model_validate_json(args.config.read_text())
    configure_logging(config.log_level)
    try:
        return asyncio.run(run_worker(config))
    except TapeflowError as exc:
        print(f"engine worker refused: {exc}", flush=True)
        return 2
