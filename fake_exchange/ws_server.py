"""Binance's websocket market-stream protocol on a local ``websockets`` server.

Paths: ``/stream?streams=a/b`` (combined: every frame wrapped as ``{"stream":..,"data":..}``),
``/ws/<stream>[/<stream>...]`` and bare ``/ws`` (raw payloads). Streams can be added and removed
with Binance's JSON-RPC messages (``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``); replies
travel through the same per-connection queue as market frames, so a reply is never overtaken by the
frames it enabled. Ping/pong is the websockets library's keepalive.

Each connection owns an unbounded queue and one sender task: the replay never blocks on a slow
client, per-connection faults (garbage, latency) are applied where the frame leaves, and ``idle``
tells the replay when everything queued has gone out.

End of replay (a fake-only extension, never sent unless asked for): a client that adds
``replayEnd=true`` to its URL gets one last message once the replay has sent everything,
``{"stream":"tapeflow@replayEnd","data":{"e":"replayEnd","messages":N,...}}``, where ``N`` counts every
message this connection sent before it (frames, garbage, replies). A client that has read ``N``
messages before the marker has read all of them; nothing is still in a socket buffer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .faults import DropMode
from .recording import RecordedFrame
from .state import ExchangeState
from .stream_names import normalise_stream

log = structlog.get_logger(__name__)
_ids = itertools.count(1)
_END_MARKER = "<end of replay>"  # queue sentinel, compared by identity


REPLAY_END_STREAM = "tapeflow@replayEnd"
REPLAY_END_PARAM = "replayEnd"


def wants_replay_end(path: str) -> bool:
    """Did the client ask for the end-of-replay marker (``?replayEnd=true``)?"""
    return parse_qs(urlsplit(path).query).get(REPLAY_END_PARAM, [""])[-1].lower() in ("1", "true")


def parse_path(path: str) -> tuple[bool, list[str]] | None:
    """(combined?, initial streams) for a Binance websocket path, ``None`` if not a stream path."""
    parts = urlsplit(path)
    route = parts.path.rstrip("/") or "/"
    if route == "/stream":
        values = parse_qs(parts.query).get("streams", [])
        return True, [normalise_stream(s) for v in values for s in v.split("/") if s]
    if route == "/ws" or route.startswith("/ws/"):
        return False, [normalise_stream(s) for s in route[3:].split("/") if s]
    return None


class StreamConnection:
    """One client connection: its subscriptions, its outbound queue and its counters."""

    def __init__(self, ws: ServerConnection, state: ExchangeState, combined: bool, streams: Iterable[str]) -> None:
        self.conn_id = next(_ids)
        self.ws = ws
        self.state = state
        self.combined = combined
        self.path = ws.request.path if ws.request else ""
        self.streams: set[str] = set(streams)
        self.frames_sent = 0
        self.messages_sent = 0  # everything sent: frames, garbage, replies (the end marker's count)
        self.wants_end_marker = wants_replay_end(self.path)
        self.end_marker_queued = False
        self.idle = asyncio.Event()
        self.idle.set()
        self.stalled = False  # drop_mode "stall": half-open, never sends again
        self._queue: asyncio.Queue[tuple[float, RecordedFrame | str]] = asyncio.Queue()

    def wants(self, stream: str) -> bool:
        return not self.stalled and stream in self.streams

    def enqueue_frame(self, frame: RecordedFrame) -> None:
        self.idle.clear()
        self._queue.put_nowait((self.state.clock(), frame))

    def enqueue_text(self, text: str) -> None:
        self.idle.clear()
        self._queue.put_nowait((self.state.clock(), text))

    def end_replay(self) -> None:
        """Queue the end-of-replay marker (once, and only for a client that asked for it)."""
        if not self.wants_end_marker or self.end_marker_queued or self.stalled:
            return
        self.end_marker_queued = True
        self.idle.clear()
        self._queue.put_nowait((self.state.clock(), _END_MARKER))

    def end_marker_text(self) -> str:
        state = self.state
        data = {
            "e": "replayEnd",
            "messages": self.messages_sent,
            "frames": self.frames_sent,
            "frames_total": len(state.recording.frames),
            "frames_sent_total": sum(state.frames_sent.values()),
            "frames_skipped_total": sum(state.frames_skipped.values()),
        }
        return orjson.dumps({"stream": REPLAY_END_STREAM, "data": data}).decode()

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.conn_id,
            "path": self.path,
            "combined": self.combined,
            "streams": sorted(self.streams),
            "frames_sent": self.frames_sent,
            "queued": self._queue.qsize(),
        }

    async def run_sender(self) -> None:
        """Send queued items in order until the connection closes."""
        try:
            while True:
                queued_at, item = await self._queue.get()
                if self.stalled:
                    pass  # a half-open connection: whatever was queued never leaves
                elif isinstance(item, RecordedFrame):
                    await self._send_frame(queued_at, item)
                elif item is _END_MARKER:
                    await self.ws.send(self.end_marker_text())
                else:
                    await self.ws.send(item)
                    self.messages_sent += 1
                if self._queue.empty():
                    self.idle.set()
        except ConnectionClosed:
            pass
        finally:
            self.idle.set()

    async def _send_frame(self, queued_at: float, frame: RecordedFrame) -> None:
        state = self.state
        delay = queued_at + state.faults.delay_s - state.clock()
        if delay > 0:
            await asyncio.sleep(delay)
        while (stalled_s := state.faults.stall_remaining_s()) > 0:  # the stall window holds every frame
            await asyncio.sleep(stalled_s)
        if self.stalled:
            return
        await self.ws.send(frame.combined_text() if self.combined else frame.data)
        self.frames_sent += 1
        self.messages_sent += 1
        state.frames_sent[frame.stream] += 1
        if state.faults.garbage_due(self.frames_sent):
            await self.ws.send(self._garbage(frame))
            self.messages_sent += 1
            state.garbage_sent += 1
        if state.faults.frame_sent():
            drop_connections(state, state.faults.settings.drop_mode)

    def _garbage(self, frame: RecordedFrame) -> str:
        """Rotate through: non-JSON text, JSON of an unknown shape, a known stream with a hollow payload.

        The rotation is the exchange's, not the connection's: per connection it restarted at "not JSON"
        after every reconnect, and a client dropped early never saw the third kind (a producer test
        failed so on a loaded machine)."""
        kind = self.state.garbage_sent % 3
        if kind == 0:
            return "}{ this frame is not JSON"
        if kind == 1:
            return '{"unexpected":true,"values":[1,2,3]}'
        hollow = orjson.dumps({"e": frame.event or "unknown", "E": 0}).decode()
        return f'{{"stream":"{frame.stream}","data":{hollow}}}' if self.combined else hollow

    def drop(self, mode: DropMode) -> None:
        """Cut the connection without ceremony (see :mod:`.faults` for the modes)."""
        transport = self.ws.transport
        if mode == "abort":
            transport.abort()
        elif mode == "tcp_close":
            transport.close()
        elif mode == "stall":
            # half-open: no FIN, no RST, no more frames, and the client's pings go unanswered (nothing is
            # read); only the client's read timeout tells (the fake's stop() closes it eventually)
            self.stalled = True
            transport.pause_reading()
        else:
            task = asyncio.get_running_loop().create_task(self.ws.close(1001, "going away"))
            self.state.background.add(task)
            task.add_done_callback(self.state.background.discard)


def drop_connections(state: ExchangeState, mode: DropMode) -> int:
    """Drop every open connection; returns how many were dropped."""
    dropped = list(state.connections)
    for conn in dropped:
        conn.drop(mode)
    state.drops += len(dropped)
    return len(dropped)


def _reply(request_id: Any, result: Any) -> str:
    return orjson.dumps({"result": result, "id": request_id}).decode()


def _error(request_id: Any, code: int, msg: str) -> str:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id}).decode()


def handle_method(conn: StreamConnection, message: str | bytes) -> str:
    """Answer one JSON-RPC message (SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS)."""
    try:
        request = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        return _error(None, 3, f"Invalid JSON: {exc}")
    if not isinstance(request, dict):
        return _error(None, 2, "Invalid request: expected a JSON object")
    request_id = request.get("id")
    if request_id is not None and not (
        (isinstance(request_id, int) and not isinstance(request_id, bool) and request_id >= 0)
        or isinstance(request_id, str)
    ):
        return _error(None, 2, "Invalid request: request ID must be an unsigned integer")
    method = request.get("method")
    params = request.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return _error(request_id, 2, "Invalid request: params must be a list of stream names")
        names = [normalise_stream(p) for p in params]
        if method == "SUBSCRIBE":
            conn.streams.update(names)
        else:
            conn.streams.difference_update(names)
        return _reply(request_id, None)
    if method == "LIST_SUBSCRIPTIONS":
        return _reply(request_id, sorted(conn.streams))
    return _error(
        request_id,
        2,
        f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
        "`LIST_SUBSCRIPTIONS`",
    )


class StreamServerHandlers:
    """``process_request`` and connection handler bound to one exchange state."""

    def __init__(self, state: ExchangeState, auto_start: bool) -> None:
        self.state = state
        self.auto_start = auto_start

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if parse_path(request.path) is None:
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain")]), b"Not Found\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        parsed = parse_path(ws.request.path if ws.request else "")
        if parsed is None:  # process_request already refused; defensive
            return
        combined, streams = parsed
        state = self.state
        conn = StreamConnection(ws, state, combined, streams)
        state.connections.add(conn)
        state.connections_total += 1
        if streams and self.auto_start:
            state.request_start()
        if state.finished.is_set():
            conn.end_replay()  # connected after the end: nothing more will come
        sender = asyncio.create_task(conn.run_sender(), name=f"fake-exchange-sender-{conn.conn_id}")
        try:
            async for message in ws:
                conn.enqueue_text(handle_method(conn, message))
                if conn.streams and self.auto_start:
                    state.request_start()
        except ConnectionClosed:
            pass
        finally:
            state.connections.discard(conn)
            sender.cancel()
            with suppress(asyncio.CancelledError):
                await sender
            conn.idle.set()


async def cancel_background(state: ExchangeState) -> None:
    """Cancel close handshakes still pending from ``ws_close`` drops."""
    tasks = list(state.background)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with suppress(asyncio.CancelledError, ConnectionClosed):
            await task
