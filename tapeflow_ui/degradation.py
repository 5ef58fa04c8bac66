"""The execution degradations on the trades page: each SLO rule's state per mode (the latest row of
``execution_degradations``, written by the executor service, ``execution.service_slo``) and the newest
changes, each with when, the SLI value and the threshold it passed. A rule never changed is shown clear.
"""

from __future__ import annotations

from typing import Any

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from execution.slo import RULES

CHANGES_LIMIT = 50
MODES = ("paper", "testnet", "live")
_COLUMNS = ("mode", "rule", "changed_time", "active", "sli", "value", "threshold", "samples", "detail")
#: the latest change of each (mode, rule), and the newest changes; both for one mode or all (%(m)s NULL)
_LATEST = (
    "SELECT DISTINCT ON (mode, rule) mode, rule, extract(epoch FROM changed_time)::float8, active, sli, value,"
    " threshold, samples, detail FROM execution_degradations WHERE (%(m)s::text IS NULL OR mode = %(m)s)"
    " ORDER BY mode, rule, changed_time DESC, active"
)
_NEWEST = (
    "SELECT mode, rule, extract(epoch FROM changed_time)::float8, active, sli, value, threshold, samples, detail"
    " FROM execution_degradations WHERE (%(m)s::text IS NULL OR mode = %(m)s)"
    " ORDER BY changed_time DESC, rule LIMIT %(n)s"
)


def degradation_view(conn: psycopg.Connection, mode: str | None) -> dict[str, Any]:
    """``state``: one row per (mode, rule) (every rule of ``execution.slo.RULES`` for each mode seen,
    clear when it never changed); ``changes``: the newest first, at most ``CHANGES_LIMIT``."""
    params = {"m": mode, "n": CHANGES_LIMIT}
    latest = conn.execute(_LATEST, params).fetchall()
    changes = conn.execute(_NEWEST, params).fetchall()
    last = {(r[0], r[1]): dict(zip(_COLUMNS, r)) for r in latest}
    modes = sorted({m for m, _ in last} | ({mode} if mode else set()))
    state = []
    for m in modes:
        for rule in RULES:
            row = last.get((m, rule.name))
            state.append(
                row
                if row is not None
                else dict(zip(_COLUMNS, (m, rule.name, None, False, rule.sli, None, rule.trigger, 0, "never set")))
            )
    return {"state": state, "changes": [dict(zip(_COLUMNS, r)) for r in changes]}


def checked_mode(raw: str | None) -> str | None:
    if raw in (None, ""):
        return None
    if raw not in MODES:
        raise HTTPException(400, "mode: paper, testnet or live")
    return raw


def degradation_routes(pool, respond) -> list[Route]:
    """``/api/execution/degradation`` (``mode``) over the UI's read-only ``pool``."""

    def view(request: Request) -> Response:
        mode = checked_mode(request.query_params.get("mode"))
        with pool.connection() as conn:
            return respond(degradation_view(conn, mode))

    return [Route("/api/execution/degradation", view)]
