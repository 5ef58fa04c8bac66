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

The pair actions (open a hedged pair at the swept spread shown, close an open pair) go through the
watchlist trader, the code that opens and closes the strategy's own pairs: the endpoint publishes one
command on ``xv.commands`` (``execution.watchlist_commands``; its id is the action id, so a pair opened
by hand has a signal id, pair id and client order ids derived from the form's nonce), acknowledged by
the broker before the action is ``done``; the watchlist service hands it to the strategy's trader,
which applies it once and answers on the same topic (``done`` or ``rejected`` with the reason: the
desk shows the answer beside the audit row, from ``xv_commands``). An open is reviewed first
(``GET /api/desk/quote``: the newest evaluation's swept spread, the strategy's four taker fees, the net,
the sweep cost, the break-even hours of funding, the size) and confirmed with the evaluation time it
showed, so a double click is the same command and the trader never acts on books older than those the
operator saw. Paper unless the trader's executor is live: the UI has no trading code of its own.

Writing the audit row needs a writing role: the actions get their own connection (the stack's writer
login) used for ``ui_actions`` only; every view still reads through the read-only pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from execution.client_ids import pair_id
from execution.domain import MODES
from execution.kill_switch import kill_switch_record
from execution.watchlist_commands import command_record
from execution.watchlist_trader import manual_signal_id
from tapeflow_ui import desk

NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
COIN = re.compile(r"^[A-Z0-9]{2,20}$")
VENUE = re.compile(r"^[a-z0-9]{2,20}$")
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
    """What the actions need: the writer's conninfo (for ``ui_actions`` only), the kill switch's
    publisher (``publish(on, modes, flatten) -> records``, the broker's acknowledgement awaited), and for
    the pair actions the watchlist strategies the stack trades (by name) and the command publisher
    (``publish(record)``, acknowledged)."""

    writer: str
    publish_kill_switch: Callable[[bool, Sequence[str], bool], list[dict[str, Any]]]
    strategies: Mapping[str, Any] = field(default_factory=dict)
    publish_command: Callable[[dict[str, Any]], None] | None = None


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


def run_once(
    writer: str, kind: str, nonce: str, params: dict[str, Any], who_: str, reason: str, act: Callable[[], str]
) -> tuple[dict[str, Any], bool]:
    """Insert the action's row; if this call made it, ``act()`` and record its outcome. Returns the row
    and whether it was a duplicate (a row for this action id existed: nothing was done)."""
    aid = action_id(kind, nonce)
    with psycopg.connect(writer, autocommit=True) as conn:
        made = conn.execute(
            "INSERT INTO ui_actions (action_id, kind, params, who, reason, requested_time, status) "
            "VALUES (%s, %s, %s, %s, %s, now(), 'pending') ON CONFLICT (action_id) DO NOTHING RETURNING action_id",
            (aid, kind, Jsonb(params), who_, reason),
        ).fetchone()
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
    endpoints = _Endpoints(actions, pool)
    return [
        Route("/api/actions/kill-switch", endpoints.kill_switch, methods=["POST"]),
        Route("/api/actions/pair-open", endpoints.pair_open, methods=["POST"]),
        Route("/api/actions/pair-close", endpoints.pair_close, methods=["POST"]),
        Route("/api/desk/quote", endpoints.quote),
        Route("/api/actions", endpoints.recent),
    ]


class _Endpoints:
    """The handlers `action_routes` serves, over one `Actions` and the read-only pool."""

    def __init__(self, actions: Actions, pool) -> None:
        self.actions, self.pool = actions, pool

    # --- the kill switch ------------------------------------------------------------------------
    async def kill_switch(self, request: Request) -> Response:
        body = await _json(request)
        nonce, reason = _nonce(body), _reason(body)
        params = _kill_switch_params(body)
        on, flatten, modes = params["on"], params["flatten"], params["modes"]

        def act() -> str:
            records = self.actions.publish_kill_switch(on, modes, flatten)
            return "; ".join(f"{r['mode']}: {r['decision']}" for r in records) + " (acknowledged by the broker)"

        return await _once(self.actions, "kill_switch", nonce, params, who(request), reason, act)

    # --- the pair actions -----------------------------------------------------------------------
    def quote(self, request: Request) -> Response:
        strategy = self._strategy(request.query_params.get("strategy"))
        coin, sell, buy = _pair_venues(request.query_params)
        with self.pool.connection() as conn:
            shown = desk.quote(conn, strategy, coin, sell, buy)
        if shown is None:
            raise HTTPException(404, f"no evaluation of {coin} {sell} -> {buy}")
        return JSONResponse(shown | {"pair_id": None})

    async def pair_open(self, request: Request) -> Response:
        self._commands_on()
        body = await _json(request)
        nonce, reason = _nonce(body), _reason(body)
        strategy = self._strategy(body.get("strategy"))
        coin, sell, buy = _pair_venues(body)
        at = body.get("shown_time")
        if not isinstance(at, int) or isinstance(at, bool):
            raise HTTPException(400, "shown_time: the evaluation time (Unix ms) the review showed")
        with self.pool.connection() as conn:
            shown = desk.quote(conn, strategy, coin, sell, buy, at)
        if shown is None:
            raise HTTPException(404, f"no evaluation of {coin} {sell} -> {buy} at {at}")
        aid = action_id("pair_open", nonce)
        pid = pair_id(manual_signal_id(strategy, aid))
        params = {
            "strategy": strategy.name,
            "coin": coin,
            "sell_venue": sell,
            "buy_venue": buy,
            "shown_time": at,
            "spread_sweep": shown["spread_sweep"],
            "four_fees": shown["four_fees"],
            "break_even_hours": shown["break_even_hours"],
            "notional_usd": shown["notional_usd"],
            "pair_id": pid,
        }
        who_ = who(request)

        def act() -> str:
            self._publish(
                command_record(
                    aid,
                    "open",
                    strategy.name,
                    coin,
                    who_,
                    reason,
                    sell_venue=sell,
                    sell_symbol=shown["sell_symbol"],
                    buy_venue=buy,
                    buy_symbol=shown["buy_symbol"],
                    notional_usd=shown["notional_usd"],
                    shown_spread=shown["spread_sweep"],
                    shown_time=at,
                )
            )
            return (
                f"open command sent to {strategy.name} on xv.commands (acknowledged by the broker): pair {pid} "
                "at its newest books"
            )

        return await _once(self.actions, "pair_open", nonce, params, who_, reason, act)

    async def pair_close(self, request: Request) -> Response:
        self._commands_on()
        body = await _json(request)
        nonce, reason = _nonce(body), _reason(body)
        pid = body.get("pair_id")
        if not isinstance(pid, str) or not re.fullmatch(r"pair-[a-z0-9]{10,40}", pid):
            raise HTTPException(400, "pair_id: a pair's id (pair-...)")
        with self.pool.connection() as conn:
            pair = desk.pair_for_close(conn, pid)
        if pair is None or pair["strategy"] is None:
            raise HTTPException(404, f"no pair {pid} with its signal stored")
        params = {"pair_id": pid, "strategy": pair["strategy"], "coin": pair["coin"]}
        who_ = who(request)

        def act() -> str:
            self._publish(
                command_record(
                    action_id("pair_close", nonce),
                    "close",
                    pair["strategy"],
                    pair["coin"],
                    who_,
                    reason,
                    sell_venue=pair["short_venue"],
                    sell_symbol=pair["short_symbol"],
                    buy_venue=pair["long_venue"],
                    buy_symbol=pair["long_symbol"],
                    pair_id=pid,
                )
            )
            return f"close command sent to {pair['strategy']} on xv.commands (acknowledged by the broker): pair {pid}"

        return await _once(self.actions, "pair_close", nonce, params, who_, reason, act)

    def _strategy(self, name: Any):
        strategy = self.actions.strategies.get(name) if isinstance(name, str) else None
        if strategy is None:
            raise HTTPException(
                400,
                "strategy: one the stack trades ("
                + (", ".join(self.actions.strategies) or "none: set TAPEFLOW_WATCHLIST_STRATEGIES")
                + ")",
            )
        return strategy

    def _commands_on(self) -> None:
        if self.actions.publish_command is None:
            raise HTTPException(503, "pair actions are off: this UI has no broker to send commands to")

    def _publish(self, record: dict[str, Any]) -> None:
        assert self.actions.publish_command is not None  # checked by the endpoints before any row is written
        self.actions.publish_command(record)

    # --- the audit list -------------------------------------------------------------------------
    def recent(self, request: Request) -> Response:
        with self.pool.connection() as conn:
            query = f"SELECT {_COLUMNS} FROM ui_actions ORDER BY requested_time DESC LIMIT 50"  # nosec B608 # a constant column list
            rows = conn.execute(query).fetchall()
            answers = {
                cid: {"status": st, "detail": d, "acted_time": t}
                for cid, st, d, t in conn.execute(
                    "SELECT command_id, status, detail, extract(epoch FROM acted_time)::float8 FROM xv_commands "
                    "WHERE status <> 'requested' AND command_id = ANY(%s)",
                    ([r[0] for r in rows],),
                ).fetchall()
            }
            switch = conn.execute(
                "SELECT DISTINCT ON (mode) mode, decision, extract(epoch FROM event_time)::bigint "
                "FROM risk_events WHERE scope = 'kill_switch' ORDER BY mode, event_time DESC"
            ).fetchall()
        return JSONResponse(
            {
                "actions": [_row(r) | {"answer": answers.get(r[0])} for r in rows],
                "kill_switch": {m: {"decision": d, "time": t} for m, d, t in switch},
            }
        )


def _kill_switch_params(body: dict) -> dict[str, Any]:
    """The kill switch form's on, flatten and modes, checked as `tapeflow kill-switch` checks them."""
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
    return {"on": on, "flatten": flatten, "modes": modes}


def _pair_venues(params) -> tuple[str, str, str]:
    coin, sell, buy = (params.get(k) for k in ("coin", "sell_venue", "buy_venue"))
    if not (
        isinstance(coin, str)
        and COIN.match(coin)
        and isinstance(sell, str)
        and VENUE.match(sell)
        and isinstance(buy, str)
        and VENUE.match(buy)
        and sell != buy
    ):
        raise HTTPException(400, "coin, sell_venue and buy_venue: a coin (BTC) and two different venues")
    return coin, sell, buy


async def _once(
    actions: Actions, kind: str, nonce: str, params: dict[str, Any], who_: str, reason: str, act: Callable[[], str]
) -> Response:
    row, duplicate = await asyncio.to_thread(run_once, actions.writer, kind, nonce, params, who_, reason, act)
    if duplicate and row["params"] != params:
        raise HTTPException(409, "this form's nonce was already used for another action")
    return JSONResponse(row | {"duplicate": duplicate}, status_code=200 if row["status"] != "failed" else 502)


async def _json(request: Request) -> dict:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise HTTPException(400, "a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "a JSON object")
    return body
