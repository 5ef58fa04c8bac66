"""One HTTP port per service process: `/metrics` (Prometheus) and `/health` (JSON).

Shared by every long-running component so the supervisor, Prometheus and docker-compose probe them
the same way. `/health` answers 200 when the component says it is healthy and 503 otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

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
