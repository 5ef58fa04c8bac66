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
import signal
import time
from pathlib import Path
from typing import Any

import structlog

from schemas.catalogue import TOPICS
from stream_apps.core.strategy import load_strategy
from stream_apps.core.warmup import warm_up
from tapeflow_runtime.errors import TapeflowError
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.logs import configure_logging
from tapeflow_runtime.native_memory import release_freed_memory
from tapeflow_runtime.service_http import build_app, serve

from .app import EngineWorker
from .following import EngineEpochs, engine_config_for
from .config import DEAD_LETTER_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS, PROGRESS_TOPIC, EngineAppConfig
from .metrics import EngineAppMetrics

log = structlog.get_logger("engine")
HEALTHY = frozenset({"running", "rebalancing"})


def ensure_engine_topics(config: EngineAppConfig) -> None:
    """The catalogue topics the worker reads and writes (Faust creates its own changelog)."""
    from schemas.catalogue import DLQ_TOPICS

    specs = [TOPICS[name] for name in (*INPUT_TOPICS, PROGRESS_TOPIC, *OUTPUT_TOPICS)] + [DLQ_TOPICS[DEAD_LETTER_TOPIC]]
    ensure_topics(config.bootstrap, prefix=config.topic_prefix, specs=specs)


async def run_worker(config: EngineAppConfig, metrics: EngineAppMetrics | None = None,
                     stop: asyncio.Event | None = None, epochs: EngineEpochs | None = None,
                     epoch: int = 0) -> int:
    """Run until ``stop`` is set (or SIGINT/SIGTERM); returns 0, or 1 when the app crashed. With
    ``epochs`` (the embedded stack's topic epochs; ``config`` is then epoch ``epoch``'s) the worker
    moves on from epoch to epoch in this process (``following``): one endpoint, one set of compiled
    kernels, a new Faust app per epoch."""
    await asyncio.to_thread(ensure_engine_topics, config)
    began = time.monotonic()
    # numba compiles a kernel at its first call (seconds in a fresh checkout): done here, before the
    # group join, not in the first fetch of a member whose session is already running
    await asyncio.to_thread(warm_up, [load_strategy(path) for path in config.strategy_files])
    log.info("engine kernels ready", seconds=round(time.monotonic() - began, 2))
    metrics = metrics or EngineAppMetrics()
    worker = EngineWorker(config, metrics=metrics)
    current: dict[str, Any] = {"worker": worker, "moving": None, "next": None}
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def health() -> dict:
        moving = current["moving"]
        body = ({"status": "running", "detail": f"moving on to the next topic epoch ({moving})"} if moving
                else current["worker"].health())
        # ``next_prefix``: the next epoch's app has joined its group (gated); the rollover holds the
        # producers' switch until then, so that join costs no features (``tapeflow.stack.epochs``)
        return {**body, "topic_prefix": current["worker"].config.topic_prefix, "next_prefix": current["next"]}

    runner = None
    port = None
    if config.metrics_port is not None:
        runner, port = await serve(build_app(metrics.registry, health, HEALTHY), config.metrics_host,
                                   config.metrics_port)
    try:
        await worker.start()
    except BaseException:
        if runner is not None:
            await runner.cleanup()
        raise
    print(f"engine worker ready app_id={config.app_id} metrics_port={port}", flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    upcoming: EngineWorker | None = None
    try:
        while True:
            if epochs is None:
                await _race(stopping, _wait_crash(worker))
                break
            nxt = await _race(stopping, _wait_crash(worker), epochs.opening(epoch))
            if nxt is None:
                break
            # the next epoch's app joins its group as soon as the rollover opens, gated, while this one
            # still reads and then drains (module doc of ``following``: a new group's join is the slow
            # part of a start)
            next_epoch, prefix = nxt
            new = engine_config_for(worker.config, prefix, wait_for_progress=False)
            new.datadir.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(ensure_engine_topics, new)
            upcoming = EngineWorker(new, metrics=metrics, gate=asyncio.Event())
            starting = asyncio.ensure_future(upcoming.start())
            starting.add_done_callback(
                lambda task, prefix=prefix: current.update(next=prefix) if not task.cancelled()
                and task.exception() is None else None)
            if await _race(stopping, _wait_crash(worker), epochs.finished(epoch)) != nxt:
                break  # stopped, crashed, or (never seen) another next epoch: a restart finds its way
            worker.finish_inputs()  # the producers switched: its md.* and md.progress are final
            drained = await _race(stopping, _wait_crash(worker),
                                  epochs.drained(epoch, worker.config, worker.snapshot_now))
            if drained is None or not _alive(worker):
                break
            if await _race(stopping, starting) is None and not starting.done():
                break
            starting.result()  # a failed start raises here
            paused = time.monotonic()
            current["moving"] = f"epoch {next_epoch}"
            # the drained app applies nothing more (its inputs are final and applied) and its timers
            # stop; it leaves its group after the gate opens, so its stop costs the features nothing
            old = worker
            await old.freeze()
            newest = old.snapshots()
            carried = await asyncio.to_thread(epochs.carry, old.config, new, next_epoch, newest)
            carry_s = time.monotonic() - paused
            upcoming.adopt(carried)
            worker, upcoming, epoch = upcoming, None, next_epoch
            current.update(worker=worker, moving=None, next=None)
            assert worker.gate is not None
            worker.gate.set()
            paused_s = time.monotonic() - paused
            await old.stop()
            print(f"engine worker stopped batches={old.batches} crashed=False", flush=True)
            # the old app, its clients and buffers are gone: what glibc keeps free of them goes back
            # to the OS (native_memory: without it the process grew ~0.5 MB per rollover)
            await asyncio.to_thread(release_freed_memory)
            log.info("engine moved on to the next topic epoch", epoch=epoch, group=new.app_id, keys_carried=len(carried),
                     paused_s=round(paused_s, 2), carry_s=round(carry_s, 2),
                     carried_from="changelog" if newest is None else "memory",
                     old_stop_s=round(time.monotonic() - paused - paused_s, 2))
            print(f"engine worker ready app_id={new.app_id} metrics_port={port}", flush=True)
    finally:
        stopping.cancel()
        if upcoming is not None:  # never opened: it applied nothing
            await upcoming.stop()
        await worker.stop()
        if runner is not None:
            await runner.cleanup()
    failed = worker.app.crash_reason is not None or worker.crashed is not None
    print(f"engine worker stopped batches={worker.batches} crashed={failed}", flush=True)
    return 1 if failed else 0


async def _race(stopping: asyncio.Future, crashed: Any, *work: Any) -> Any:
    """Wait for the first of ``work`` (its result), or a stop or a crash (None). The other tasks
    made here are cancelled; ``stopping`` is kept (it is the caller's)."""
    tasks = [asyncio.ensure_future(w) for w in (crashed, *work)]
    try:
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
    for task in tasks[1:]:
        if task.done() and not task.cancelled():
            return task.result()
    return None


def _alive(worker: EngineWorker) -> bool:
    return worker.app.crash_reason is None and worker.crashed is None


async def _wait_crash(worker: EngineWorker) -> None:
    while worker.app.crash_reason is None and worker.crashed is None:
        await asyncio.sleep(0.5)


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
