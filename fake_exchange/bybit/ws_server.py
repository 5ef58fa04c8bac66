"""Bybit's v5 public websocket protocol on the fake exchange's connection machinery.

One path per category (``/v5/public/linear``); topics are chosen after connecting with
``{"op":"subscribe","args":[...]}`` and dropped with ``unsubscribe``; each request is answered
``{"success":..,"ret_msg":..,"conn_id":..,"req_id":..,"op":..}``. Subscribing to ``orderbook.50.<SYM>``
or ``tickers.<SYM>`` is followed by a snapshot of the exchange's state at that moment
(:class:`~.market.BybitMarket`), then deltas. ``{"op":"ping"}`` is answered with Bybit's pong
(``ret_msg: "pong"``). Unknown topics, a second subscription to the same topic and unknown ops get
Bybit's error answers.

Per-connection queueing, the skip/garbage/delay/drop faults and drops are the Binance fake's
:class:`~fake_exchange.ws_server.StreamConnection`; only the garbage is Bybit-shaped here
(non-JSON text, JSON of an unknown shape, a known topic with a hollow payload).
"""

from __future__ import annotations

from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection

from ..recording import RecordedFrame
from ..subscribed import SubscribedConnection, SubscribedHandlers
from ..ws_server import StreamConnection
from .market import BybitMarket

LINEAR_PATH = "/v5/public/linear"
TOPIC_KINDS = {"publicTrade": 2, "orderbook": 3, "allLiquidation": 2, "tickers": 2}  # kind -> parts in the name
ORDERBOOK_DEPTHS = ("50",)  # the depth the sessions carry


class BybitConnection(SubscribedConnection):
    """A linear-category client: its topics, queue and counters (``streams`` holds the topics)."""

    @property
    def bybit_conn_id(self) -> str:
        return f"fake-{self.conn_id}"

    def _hollow(self, frame: RecordedFrame) -> str:
        hollow = {} if frame.stream.startswith(("orderbook.", "tickers.")) else [{}]
        return orjson.dumps({"topic": frame.stream, "type": "snapshot", "ts": 0, "data": hollow}).decode()


def known_topic(topic: Any, symbols: set[str]) -> bool:
    if not isinstance(topic, str):
        return False
    parts = topic.split(".")
    if TOPIC_KINDS.get(parts[0]) != len(parts) or parts[-1] not in symbols:
        return False
    return parts[0] != "orderbook" or parts[1] in ORDERBOOK_DEPTHS


def _answer(conn: BybitConnection, op: str, success: bool, ret_msg: str, req_id: Any) -> str:
    body = {"success": success, "ret_msg": ret_msg, "conn_id": conn.bybit_conn_id, "op": op}
    if req_id is not None:
        body["req_id"] = req_id
    return orjson.dumps(body).decode()


def handle_op(conn: BybitConnection, message: str | bytes, market: BybitMarket, symbols: set[str]) -> list[str]:
    """Texts to send back for one client message, in order (answer first, then any snapshots)."""
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError:
        return [_answer(conn, "", False, "error:invalid JSON", None)]
    if not isinstance(request, dict):
        return [_answer(conn, "", False, "error:request must be a JSON object", None)]
    op, req_id, args = request.get("op"), request.get("req_id"), request.get("args", [])
    if op == "ping":
        return [_answer(conn, "ping", True, "pong", req_id)]
    if op not in ("subscribe", "unsubscribe"):
        return [_answer(conn, str(op), False, f"error:unknown op {op!r}", req_id)]
    if not isinstance(args, list):
        return [_answer(conn, op, False, "error:args must be a list of topics", req_id)]
    for topic in args:
        if not known_topic(topic, symbols):
            return [_answer(conn, op, False, f"error:handler not found,topic:{topic}", req_id)]
    if op == "unsubscribe":
        conn.streams.difference_update(args)
        return [_answer(conn, op, True, "", req_id)]
    already = [t for t in args if t in conn.streams]
    if already:
        return [_answer(conn, op, False, f"error:already subscribed,topic:{already[0]}", req_id)]
    conn.streams.update(args)
    snapshots = [market.snapshot_message(t) for t in args]
    return [_answer(conn, op, True, "", req_id), *(s for s in snapshots if s is not None)]


class BybitHandlers(SubscribedHandlers):
    """The linear category's path: Bybit's ops on the shared subscription-protocol connection handling."""

    path = LINEAR_PATH
    market: BybitMarket

    def new_connection(self, ws: ServerConnection) -> BybitConnection:
        return BybitConnection(ws, self.state)

    def answer(self, conn: StreamConnection, message: str | bytes) -> list[str]:
        assert isinstance(conn, BybitConnection)
        return handle_op(conn, message, self.market, self.state.symbols)
