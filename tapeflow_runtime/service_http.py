"""One HTTP port per service process: `/metrics` (Prometheus) and `/health` (JSON).

Shared by every long-running component so the supervisor, Prometheus and docker-compose probe them
the same way. `/health` answers 200 when the component says it is healthy and 503 otherwise.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

HealthFn = Callable[[], dict]


def build_app(registry: CollectorRegistry, health: HealthFn, healthy_states: frozenset[str]) -> web.Application:
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def health_handler(_request: web.Request) -> web.Response:
        body = health()
        ok = body.get("status") in healthy_states
        return web.Response(body=orjson.dumps(body), status=200 if ok else 503, content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health_handler)
    return app


async def serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the endpoint; returns the runner (to clean up) and the bound port (0 = a free one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # aiohttp exposes no public accessor for it
    return runner, bound


async def run_thread_with_endpoint(
    run: Callable[[threading.Event], None],
    app: web.Application,
    host: str,
    port: int,
    log: Any,
    stop: threading.Event | None = None,
    started: Callable[[int], None] | None = None,
) -> bool:
    """Serve ``app`` (`/metrics`, `/health`), call ``started(bound port)``, then ``run(stop)`` in a thread
    until it returns; SIGINT/SIGTERM set ``stop`` (when this is the main thread). The endpoint is closed
    after. Returns False when ``run`` raised (logged on ``log``): the services with a blocking consumer
    loop (executor, watchlist) share this shell."""
    runner, bound = await serve(app, host, port)
    if started is not None:
        started(bound)
    stop = stop or threading.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread (tests, embedding)
            pass
    try:
        await asyncio.to_thread(run, stop)
        return True
    except Exception:
        log.exception("service failed")
        return False
    finally:
        await runner.cleanup()


async def run_until_signalled(
    run: Callable[[asyncio.Event], Awaitable[None]],
    app: web.Application,
    host: str,
    port: int,
    started: Callable[[int], None] | None = None,
) -> int:
    """Serve ``app`` (`/metrics`, `/health`), call ``started(bound port)``, then await ``run(stop)``;
    SIGINT/SIGTERM set ``stop``. The endpoint is closed after. Returns 0: the periodic services
    (the label writer, the guardrail controller) share this shell and report a failed pass on `/health`
    instead of exiting."""
    runner, bound = await serve(app, host, port)
    if started is not None:
        started(bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run(stop)
    finally:
        await runner.cleanup()
    return 0
