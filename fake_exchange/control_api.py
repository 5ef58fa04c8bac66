"""HTTP control API: inspect the replay and flip fault switches while it runs.

- ``GET  /_control/status``  replay position, finished flag, frames sent/skipped per stream,
  connections, drops, REST request count, current faults;
- ``POST /_control/faults``  partial :class:`~.faults.FaultSettings` update as JSON; the extra keys
  ``{"drop_now": true}`` (drop every connection now) and ``{"clear": true}`` (reset all switches);
- ``DELETE /_control/faults`` reset all switches;
- ``POST /_control/start``   start the replay (``start="manual"``).

A rejected update answers 400 with pydantic's error list and changes nothing.
"""

from __future__ import annotations

import orjson
from aiohttp import web
from pydantic import ValidationError

from .rest_api import STATE_KEY, json_response
from .ws_server import drop_connections


async def status(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].status())


async def set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        return json_response({"error": f"invalid JSON: {exc}"}, 400)
    if not isinstance(body, dict):
        return json_response({"error": "expected a JSON object"}, 400)
    drop_now = bool(body.pop("drop_now", False))
    if body.pop("clear", False):
        state.faults.clear()
    try:
        faults = state.faults.update(body)
    except ValidationError as exc:
        return json_response({"error": orjson.loads(exc.json(include_url=False))}, 400)
    dropped = drop_connections(state, faults.drop_mode) if drop_now else 0
    return json_response({"faults": faults.model_dump(), "dropped": dropped})


async def clear_faults(request: web.Request) -> web.Response:
    return json_response({"faults": request.app[STATE_KEY].faults.clear().model_dump()})


async def start(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    state.request_start()
    return json_response({"started": True})


def add_control_routes(app: web.Application) -> None:
    app.router.add_get("/_control/status", status)
    app.router.add_post("/_control/faults", set_faults)
    app.router.add_delete("/_control/faults", clear_faults)
    app.router.add_post("/_control/start", start)
