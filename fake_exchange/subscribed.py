"""What the fakes of subscription-protocol venues (Bybit, OKX) share: one websocket path whose clients
choose their channels by messages, and the start-up of such an exchange.

The Binance fake names its streams in the URL; Bybit and OKX take one path (``/v5/public/linear``,
``/ws/v5/public``) and answer ``subscribe``/``unsubscribe``/``ping`` messages on the connection. A venue
gives :class:`SubscribedHandlers` its path, its connection class and :meth:`~SubscribedHandlers.answer`
(the texts to send back for one client message); the connection bookkeeping (the exchange's connection
set, the per-connection sender, auto-start on the first subscription, clean teardown) is here once.
:class:`SubscribedExchange` starts the websocket, the venue's REST routes (if any) and the control API
around the shared replay, as :meth:`fake_exchange.exchange.FakeExchange.start` does for Binance.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress
from typing import Any, ClassVar

import structlog
from aiohttp import web
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .control_api import add_control_routes
from .exchange import FakeExchange, _bound_socket
from .recording import RecordedFrame
from .rest_api import STATE_KEY
from .state import ExchangeState
from .ws_server import StreamConnection

log = structlog.get_logger(__name__)


class SubscribedConnection(StreamConnection):
    """A client of a subscription-protocol path: no streams until it subscribes; the garbage fault sends
    the exchange-wide rotation of non-JSON text, JSON of an unknown shape and (`_hollow`) a known
    channel with an empty payload, in the venue's own envelope."""

    def __init__(self, ws: ServerConnection, state: ExchangeState) -> None:
        super().__init__(ws, state, combined=False, streams=())

    def _hollow(self, frame: RecordedFrame) -> str:
        raise NotImplementedError

    def _garbage(self, frame: RecordedFrame) -> str:
        kind = self.state.garbage_sent % 3  # the exchange's rotation, across reconnects (see the Binance fake)
        if kind == 0:
            return "}{ this frame is not JSON"
        if kind == 1:
            return '{"unexpected":true,"values":[1,2,3]}'
        return self._hollow(frame)


class SubscribedHandlers:
    """``process_request`` and connection handler of one subscription-protocol websocket path."""

    path: ClassVar[str]

    def __init__(self, state: ExchangeState, market: Any, auto_start: bool) -> None:
        self.state = state
        self.market = market
        self.auto_start = auto_start

    def new_connection(self, ws: ServerConnection) -> StreamConnection:
        raise NotImplementedError

    def answer(self, conn: StreamConnection, message: str | bytes) -> list[str]:
        """Texts to send back for one client message, in order."""
        raise NotImplementedError

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0].rstrip("/") != self.path:
            return Response(404, "Not Found", Headers([("Content-Type", "text/plain")]), b"Not Found\n")
        return None

    async def handle(self, ws: ServerConnection) -> None:
        state = self.state
        conn = self.new_connection(ws)
        state.connections.add(conn)
        state.connections_total += 1
        if state.finished.is_set():
            # connected after the end (a reconnect slower than the rest of the replay): nothing more
            # will come, so the marker now; without it the client waited for an end that never came
            conn.end_replay()
        sender = asyncio.create_task(conn.run_sender(), name=f"fake-sender-{conn.conn_id}")
        try:
            async for message in ws:
                for text in self.answer(conn, message):
                    conn.enqueue_text(text)
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


class SubscribedExchange(FakeExchange):
    """A fake exchange whose websocket is a :class:`SubscribedHandlers` path (plus its REST routes)."""

    handlers_class: ClassVar[type[SubscribedHandlers]]
    market: Any

    def add_routes(self, app: web.Application) -> None:
        """The venue's REST routes (none by default)."""

    @property
    def venue_url(self) -> str:
        """The websocket URL a client connects to."""
        return f"{self.ws_url}{self.handlers_class.path}"

    async def start(self) -> SubscribedExchange:
        config = self.config
        handlers = self.handlers_class(self.state, self.market, auto_start=config.start == "first_subscriber")
        ws_sock = _bound_socket(config.host, config.ws_port)
        self._ws_server = await ws_serve(
            handlers.handle,
            sock=ws_sock,
            process_request=handlers.process_request,
            compression=None,
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_timeout_s,
            close_timeout=2,
            max_queue=None,
        )
        self.ws_port = ws_sock.getsockname()[1]
        app = web.Application()
        app[STATE_KEY] = self.state
        self.add_routes(app)
        add_control_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        rest_sock = _bound_socket(config.host, config.rest_port)
        await web.SockSite(self._runner, rest_sock).start()
        self.rest_port = rest_sock.getsockname()[1]
        self.state.urls = {"ws_url": self.venue_url, "rest_url": self.rest_url}
        self._replay_task = asyncio.create_task(self.replay.run(), name=f"fake-{type(self).__name__}-replay")
        self._replay_task.add_done_callback(self._replay_done)
        if config.start == "immediate":
            self.state.request_start()
        log.info("fake exchange serving %s on %s", self.recording.source, self.venue_url)
        return self
