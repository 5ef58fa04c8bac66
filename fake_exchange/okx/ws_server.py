"""OKX's v5 public websocket protocol on the fake exchange's connection machinery.

One path (``/ws/v5/public``); channels are chosen after connecting with
``{"op":"subscribe","args":[{"channel":..,"instId":..}]}`` and dropped with ``unsubscribe``; each arg is
answered ``{"event":"subscribe","arg":{..},"connId":..}`` (with the request's ``id`` when it had one),
then, for ``books``, ``mark-price``, ``index-tickers`` and ``funding-rate``, the current state's push
(:class:`~.market.OkxMarket`). An unknown channel or instrument, an unknown op or a malformed request
gets OKX's ``{"event":"error","code":"60012"|"60018",..}``. The text ``ping`` is answered ``pong``.

Per-connection queueing, the skip/garbage/delay/drop faults and drops are the Binance fake's
:class:`~fake_exchange.ws_server.StreamConnection` (``streams`` holds ``channel:instId`` keys); only
the garbage is OKX-shaped (non-JSON text, JSON of an unknown shape, a known channel with a hollow row).
"""

from __future__ import annotations

from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection

from ..recording import RecordedFrame
from ..subscribed import SubscribedConnection, SubscribedHandlers
from ..ws_server import StreamConnection
from .market import OkxMarket

PUBLIC_PATH = "/ws/v5/public"
SWAP_CHANNELS = ("trades", "books", "mark-price", "funding-rate")
INDEX_CHANNELS = ("index-tickers", "tickers")  # on BASE-QUOTE: the index, and the spot pair's ticker


class OkxConnection(SubscribedConnection):
    """A public-channel client: its channels, queue and counters."""

    @property
    def okx_conn_id(self) -> str:
        return f"fake{self.conn_id:04d}"

    def _hollow(self, frame: RecordedFrame) -> str:
        channel, inst_id = frame.stream.split(":", 1)
        return orjson.dumps({"arg": {"channel": channel, "instId": inst_id}, "data": [{}]}).decode()


def known_arg(arg: Any, market: OkxMarket) -> str | None:
    """The ``channel:instId`` key of a valid subscription arg, else None."""
    if not isinstance(arg, dict):
        return None
    channel, inst_id = arg.get("channel"), arg.get("instId")
    st = market.by_inst.get(inst_id) if isinstance(inst_id, str) else None
    if st is None:
        return None
    if (channel in SWAP_CHANNELS and inst_id == st.inst_id) or (channel in INDEX_CHANNELS and inst_id == st.index_id):
        return f"{channel}:{inst_id}"
    return None


def _event(conn: OkxConnection, event: str, request_id: Any, **fields: Any) -> str:
    body: dict[str, Any] = {"event": event, **fields, "connId": conn.okx_conn_id}
    if request_id is not None:
        body = {"id": request_id, **body}
    return orjson.dumps(body).decode()


def handle_op(conn: OkxConnection, message: str | bytes, market: OkxMarket) -> list[str]:
    """Texts to send back for one client message, in order (answers first, then the current pushes)."""
    if message in ("ping", b"ping"):
        return ["pong"]
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError:
        return [_event(conn, "error", None, code="60012", msg=f"Invalid request: {str(message)[:200]}")]
    if not isinstance(request, dict):
        return [_event(conn, "error", None, code="60012", msg="Invalid request: not a JSON object")]
    op, request_id, args = request.get("op"), request.get("id"), request.get("args")
    if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
        return [
            _event(
                conn, "error", request_id, code="60012", msg=f"Invalid request: {orjson.dumps(request).decode()}"[:300]
            )
        ]
    keys = [known_arg(a, market) for a in args]
    for arg, key in zip(args, keys, strict=True):
        if key is None:
            return [
                _event(
                    conn,
                    "error",
                    request_id,
                    code="60018",
                    msg=f"Wrong URL or channel:{orjson.dumps(arg).decode()}, doesn't exist"[:300],
                )
            ]
    out = []
    for arg, key in zip(args, keys, strict=True):
        assert key is not None
        if op == "unsubscribe":
            conn.streams.discard(key)
            out.append(_event(conn, "unsubscribe", request_id, arg=arg))
            continue
        conn.streams.add(key)
        out.append(_event(conn, "subscribe", request_id, arg=arg))
        push = market.subscribe_push(arg["channel"], arg["instId"])
        if push is not None:
            out.append(push)
    return out


class OkxHandlers(SubscribedHandlers):
    """The public path: OKX's ops on the shared subscription-protocol connection handling."""

    path = PUBLIC_PATH
    market: OkxMarket

    def new_connection(self, ws: ServerConnection) -> OkxConnection:
        return OkxConnection(ws, self.state)

    def answer(self, conn: StreamConnection, message: str | bytes) -> list[str]:
        assert isinstance(conn, OkxConnection)
        return handle_op(conn, message, self.market)
