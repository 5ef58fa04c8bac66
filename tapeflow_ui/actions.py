"""The desk's manual actions: POST endpoints that act once per form nonce and leave an audit row.

Every action is one row of ``ui_actions`` (migration 0019) keyed by an action id derived from the kind
of action and the nonce the page generated when the operator opened the form (``action_id``). The
endpoint inserts that row first (``ON CONFLICT DO NOTHING``) and acts only when its insert made it: a
double click, a retried request, or two tabs replaying one form all send the same nonce, so the second
request finds the row and answers with the first one's outcome (``duplicate: true``) instead of acting
again. The row records who (the UI session: how it authenticated and from which client; the UI has one
shared token, not users) and why (the reason the form requires), what was asked, and what came of it.

The kill switch goes through ``execution.kill_switch.publish_kill_switch``, the code `tapeflow
kill-switch` runs: one ``kill_switch`` record per mode on the compacted ``risk.events``, which every
executor of that mode obeys (``RiskGuard``) wherever it runs, acknowledged by the broker before the
action is ``done`` (an unacknowledged switch is ``failed``, and says so). Nothing about it lives in the
UI: the page only asks.

Writing the audit row needs a writing role: the actions get their own connection (the stack's writer
login) used for ``ui_actions`` only; every view still reads through the read-only pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from execution.domain import MODES
from execution.kill_switch import kill_switch_record

NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
MAX_REASON = 500


def action_id(kind: str, nonce: str) -> str:
    """The action's id: the same form (its nonce) gives the same id, so it acts once."""
    return hashlib.sha256(f"tapeflow-ui action\x00{kind}\x00{nonce}".encode()).hexdigest()[:32]


def who(request: Request) -> str:
    """The UI session behind a request: how it authenticated and from where (no secret in it)."""
    auth = "bearer" if request.headers.get("authorization", "").lower().startswith("bearer ") else "cookie"
    client = request.client.host if request.client else "?"
    agent = request.headers.get("user-agent", "")[:80]
    return f"ui {auth} session from {client}" + (f" ({agent})" if agent else "")


@dataclass(frozen=True)
class Actions:
    """What the actions need: the writer's conninfo (for ``ui_actions`` only) and the kill switch's
    publisher (``publish(on, modes, flatten) -> records``, the broker's acknowledgement awaited)."""

    writer: str
    publish_kill_switch: Callable[[bool, Sequence[str], bool], list[dict[str, Any]]]


class ActionError(Exception):
    """The action was asked for but could not be carried out (its row says why)."""


def _reason(body: dict) -> str:
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise HTTPException(400, "reason: say why (it is kept in the audit table)")
    if len(reason) > MAX_REASON:
        raise HTTPException(400, f"reason: at most {MAX_REASON} characters")
    return reason.strip()


def _nonce(body: dict) -> str:
    nonce = body.get("nonce")
    if not isinstance(nonce, str) or not NONCE.match(nonce):
        raise HTTPException(400, "nonce: the form's 16-64 letters, digits, - or _")
    return nonce


def _row(row) -> dict[str, Any]:
    keys = ("action_id", "kind", "params", "who", "reason", "requested_time", "status", "detail", "completed_time")
    out = dict(zip(keys, row))
    for k in ("requested_time", "completed_time"):
        out[k] = out[k].isoformat() if out[k] is not None else None
    return out


_COLUMNS = "action_id, kind, params, who, reason, requested_time, status, detail, completed_time"


def run_once(writer: str, kind: str, nonce: str, params: dict[str, Any], who_: str, reason: str,
             act: Callable[[], str]) -> tuple[dict[str, Any], bool]:
    """Insert the action's row; if this call made it, ``act()`` and record its outcome. Returns the row
    and whether it was a duplicate (a row for this action id existed: nothing was done)."""
    aid = action_id(kind, nonce)
    with psycopg.connect(writer, autocommit=True) as conn:
        made = conn.execute(
            "INSERT INTO ui_actions (action_id, kind, params, who, reason, requested_time, status) "
            "VALUES (%s, %s, %s, %s, %s, now(), 'pending') ON CONFLICT (action_id) DO NOTHING RETURNING action_id",
            (aid, kind, Jsonb(params), who_, reason)).fetchone()
        if made is None:
            query = f"SELECT {_COLUMNS} FROM ui_actions WHERE action_id = %s"  # nosec B608 # a constant column list; the value is a parameter
            return _row(conn.execute(query, (aid,)).fetchone()), True
        try:
            status, detail = "done", act()
        except Exception as exc:  # noqa: BLE001 - any failure is the action's outcome, kept in its row
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
        done = "UPDATE ui_actions SET status = %s, detail = %s, completed_time = now() WHERE action_id = %s"
        query = f"{done} RETURNING {_COLUMNS}"  # nosec B608 # constant columns; the values are parameters
        row = conn.execute(query, (status, detail, aid)).fetchone()
    return _row(row), False


def action_routes(actions: Actions, pool) -> list[Route]:
    """The POST endpoints (the token guard has already checked the token, the CSRF value and the origin)
    and the audit list the desk shows (read through the read-only pool)."""

    async def kill_switch(request: Request) -> Response:
        body = await _json(request)
        nonce, reason = _nonce(body), _reason(body)
        on, flatten = body.get("on"), body.get("flatten", False)
        modes = body.get("modes") or list(MODES)
        if not isinstance(on, bool) or not isinstance(flatten, bool):
            raise HTTPException(400, "on and flatten: true or false")
        if not isinstance(modes, list) or not modes or any(m not in MODES for m in modes) or len(set(modes)) < len(modes):
            raise HTTPException(400, f"modes: some of {', '.join(MODES)}")
        try:
            kill_switch_record(on, modes[0], 0, flatten=flatten)  # the CLI's checks (flatten only with on)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        params = {"on": on, "flatten": flatten, "modes": modes}

        def act() -> str:
            records = actions.publish_kill_switch(on, modes, flatten)
            return "; ".join(f"{r['mode']}: {r['decision']}" for r in records) + " (acknowledged by the broker)"

        row, duplicate = await asyncio.to_thread(run_once, actions.writer, "kill_switch", nonce, params, who(request),
                                                 reason, act)
        if duplicate and row["params"] != params:
            raise HTTPException(409, "this form's nonce was already used for another action")
        return JSONResponse(row | {"duplicate": duplicate}, status_code=200 if row["status"] != "failed" else 502)

    def recent(request: Request) -> Response:
        with pool.connection() as conn:
            query = f"SELECT {_COLUMNS} FROM ui_actions ORDER BY requested_time DESC LIMIT 50"  # nosec B608 # a constant column list
            rows = conn.execute(query).fetchall()
            switch = conn.execute("SELECT DISTINCT ON (mode) mode, decision, extract(epoch FROM event_time)::bigint "
                                  "FROM risk_events WHERE scope = 'kill_switch' ORDER BY mode, event_time DESC").fetchall()
        return JSONResponse({"actions": [_row(r) for r in rows],
                             "kill_switch": {m: {"decision": d, "time": t} for m, d, t in switch}})

    return [Route("/api/actions/kill-switch", kill_switch, methods=["POST"]),
            Route("/api/actions", recent)]


async def _json(request: Request) -> dict:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise HTTPException(400, "a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "a JSON object")
    return body
