"""Lifecycle of one fake exchange: bind the sockets, run the replay, shut down cleanly.

:func:`serve` returns a started :class:`FakeExchange` (ports bound, replay waiting for its start
trigger); ``await exchange.stop()`` (or ``async with``) closes the websocket server with its
connections, the HTTP server and the replay task, leaving no task behind. :func:`run` is the
blocking entry point for the CLI: it prints one JSON line with the bound URLs, then serves until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from websockets.asyncio.server import Server
from websockets.asyncio.server import serve as ws_serve

from .config import FakeExchangeConfig
from .control_api import add_control_routes
from .faults import FaultSettings
from .orders import add_order_routes
from .real_history import real_history_for
from .recording import Recording
from .replay import ReplayEngine
from .rest_api import (
    STATE_KEY,
    WEIGHTS_KEY,
    add_market_routes,
    exchange_middleware,
)
from .state import ExchangeState
from .vision import add_vision_routes
from .weights import WeightLimiter
from .ws_server import StreamServerHandlers, cancel_background, drop_connections

log = structlog.get_logger(__name__)


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


class FakeExchange:
    """A running fake Binance USD-M exchange (websocket + REST + control API)."""

    def __init__(
        self,
        config: FakeExchangeConfig,
        recording: Recording | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.recording = recording or config.load_session()
        self.state = ExchangeState(
            self.recording,
            config.faults,
            clock=clock,
            wall_clock=wall_clock,
            aggtrades_visibility=config.aggtrades_visibility,
            rest_clock=config.rest_clock,
        )
        if config.real_history_hours > 0:
            spec = config.synthetic
            self.state.history = real_history_for(
                self.recording, config.real_history_hours, spec.seed if spec else 0, spec.rates if spec else None
            )
        self.replay = ReplayEngine(
            self.state,
            config.speed,
            clock=clock,
            history_s=config.history_s,
            at_session_time=config.start == "session_time",
        )
        self.ws_port = 0
        self.rest_port = 0
        self._ws_server: Server | None = None
        self._runner: web.AppRunner | None = None
        self._replay_task: asyncio.Task[None] | None = None

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.config.host

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    def stream_url(self, streams: list[str] | tuple[str, ...] | None = None) -> str:
        """Combined-stream URL for ``streams`` (default: every stream of the session)."""
        names = list(streams if streams is not None else self.recording.streams)
        return f"{self.ws_url}/stream?streams=" + "/".join(names)

    # -- state shortcuts ---------------------------------------------------------------------------
    @property
    def finished(self) -> asyncio.Event:
        return self.state.finished

    @property
    def frames_sent(self) -> dict[str, int]:
        return dict(self.state.frames_sent)

    def status(self) -> dict[str, Any]:
        return self.state.status()

    def set_faults(self, **changes: Any) -> FaultSettings:
        return self.state.faults.update(changes)

    def drop_connections(self) -> int:
        return drop_connections(self.state, self.state.faults.settings.drop_mode)

    def pause_replay(self, before: int | None = None) -> None:
        self.state.pause(before)

    def resume_replay(self) -> None:
        self.state.resume()

    def start_replay(self) -> None:
        self.state.request_start()

    async def wait_finished(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.state.finished.wait(), timeout)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> FakeExchange:
        config = self.config
        handlers = StreamServerHandlers(self.state, auto_start=config.start == "first_subscriber")
        ws_sock = _bound_socket(config.host, config.ws_port)
        self._ws_server = await ws_serve(
            handlers.handle,
            sock=ws_sock,
            process_request=handlers.process_request,
            compression=None,
            ping_interval=config.ping_interval_s,
            ping_timeout=config.ping_timeout_s,
            close_timeout=2,  # a client that stopped reading must not stall stop() for long
            max_queue=None,
        )
        self.ws_port = ws_sock.getsockname()[1]

        app = web.Application(middlewares=[exchange_middleware])
        app[STATE_KEY] = self.state
        app[WEIGHTS_KEY] = self.state.limiter = WeightLimiter(config.weight_limit_1m, self.state.wall_clock)
        add_market_routes(app)
        add_control_routes(app)
        add_order_routes(app)  # signed order API + user-data stream (fake_exchange/orders)
        add_vision_routes(app)  # daily aggTrades archives (a warm start's history)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        rest_sock = _bound_socket(config.host, config.rest_port)
        await web.SockSite(self._runner, rest_sock).start()
        self.rest_port = rest_sock.getsockname()[1]

        self.state.urls = {"ws_url": self.ws_url, "rest_url": self.rest_url}
        self._replay_task = asyncio.create_task(self.replay.run(), name="fake-exchange-replay")
        self._replay_task.add_done_callback(self._replay_done)
        if config.start in ("immediate", "session_time"):
            self.state.request_start()
        log.info("fake exchange serving %s on %s and %s", self.recording.source, self.ws_url, self.rest_url)
        return self

    @staticmethod
    def _replay_done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("replay failed", exc_info=task.exception())

    #: how long each step of `stop()` may take before it is abandoned (and the stuck tasks logged)
    STOP_STEP_S = 10.0

    async def stop(self) -> None:
        """Stop replaying and serving. Every step is bounded: a suite run once hung here for the rest of
        its 120 s after an OKX replay whose connection had been aborted; a step that overruns logs
        the stacks of the tasks still running and the stop carries on."""
        if self._replay_task is not None:
            self._replay_task.cancel()
            await self._bounded("replay task", asyncio.wait({self._replay_task}))
            self._replay_task = None
        if self._ws_server is not None:
            self._ws_server.close()
            await self._bounded("websocket server close", self._ws_server.wait_closed())
            self._ws_server = None
        await self._bounded("background close handshakes", cancel_background(self.state))
        if self._runner is not None:
            await self._bounded("REST server cleanup", self._runner.cleanup())
            self._runner = None

    async def _bounded(self, step: str, awaitable) -> None:
        try:
            await asyncio.wait_for(awaitable, self.STOP_STEP_S)
        except TimeoutError:
            stuck = {
                t.get_name(): [f"{f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}" for f in t.get_stack()]
                for t in asyncio.all_tasks()
                if t is not asyncio.current_task() and not t.done()
            }
            log.error("fake exchange stop: step overran, abandoned", step=step, seconds=self.STOP_STEP_S, tasks=stuck)

    async def __aenter__(self) -> FakeExchange:
        return self if self._runner is not None else await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(config: FakeExchangeConfig) -> FakeExchange:
    """Start a fake exchange and return it (ports bound, replay armed)."""
    return await FakeExchange(config).start()


async def _serve_until_signalled(config: FakeExchangeConfig) -> None:
    exchange = await serve(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        orjson.dumps(
            {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url, "source": exchange.recording.source}
        ).decode(),
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await exchange.stop()


def run(config: FakeExchangeConfig) -> None:
    """Blocking entry point: serve until SIGINT/SIGTERM."""
    try:
        asyncio.run(_serve_until_signalled(config))
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally wins
        sys.exit(130)
