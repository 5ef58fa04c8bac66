"""Lifecycle of one fake Bybit exchange: the Binance fake's machinery with Bybit's websocket in front.

Reused as they are: :class:`~fake_exchange.exchange.FakeExchange` (addresses, status, fault
switches, drops, ``stop()``/``async with``), :class:`~fake_exchange.state.ExchangeState` and
:class:`~fake_exchange.replay.ReplayEngine` (frames replayed on the session's clock scaled
by ``speed``, the skip fault, ``finished``), :class:`~fake_exchange.faults.FaultSettings` and
the HTTP control API (``GET /_control/status``, ``POST /_control/faults``, ``POST /_control/start``).
What differs: the websocket speaks Bybit v5 (:mod:`.ws_server`) and the replayed state is Bybit's
(:class:`~.market.BybitMarket`, which answers subscriptions with snapshots). There are no market REST
endpoints: the Bybit producer needs none.

``await serve_bybit(session, speed=10.0, faults={...})`` returns a started exchange; its
``linear_url`` is what the producer connects to; ``run_bybit(...)`` is the blocking entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import orjson
import structlog
from aiohttp import web
from websockets.asyncio.server import serve as ws_serve

from ..config import FakeExchangeConfig
from ..control_api import add_control_routes
from ..exchange import FakeExchange, _bound_socket
from ..rest_api import STATE_KEY
from .market import BybitMarket
from .synthetic import BybitSession, BybitSyntheticSpec, generate_bybit_session
from .ws_server import LINEAR_PATH, BybitHandlers

log = structlog.get_logger(__name__)


class FakeBybitExchange(FakeExchange):
    """A running fake Bybit v5 linear exchange (websocket + control API)."""

    def __init__(self, session: BybitSession, config: FakeExchangeConfig) -> None:
        super().__init__(config, session.recording)
        self.session = session
        self.market = BybitMarket(session)
        self.state.market = self.market  # type: ignore[assignment]  # the replay feeds it every frame

    @property
    def linear_url(self) -> str:
        return f"{self.ws_url}{LINEAR_PATH}"

    async def start(self) -> FakeBybitExchange:
        config = self.config
        handlers = BybitHandlers(self.state, self.market, auto_start=config.start == "first_subscriber")
        ws_sock = _bound_socket(config.host, config.ws_port)
        self._ws_server = await ws_serve(handlers.handle, sock=ws_sock, process_request=handlers.process_request,
                                         compression=None, ping_interval=config.ping_interval_s,
                                         ping_timeout=config.ping_timeout_s, close_timeout=2,
                                         max_queue=None)
        self.ws_port = ws_sock.getsockname()[1]
        app = web.Application()
        app[STATE_KEY] = self.state
        add_control_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        rest_sock = _bound_socket(config.host, config.rest_port)
        await web.SockSite(self._runner, rest_sock).start()
        self.rest_port = rest_sock.getsockname()[1]
        self.state.urls = {"ws_url": self.linear_url, "rest_url": self.rest_url}
        self._replay_task = asyncio.create_task(self.replay.run(), name="fake-bybit-replay")
        self._replay_task.add_done_callback(self._replay_done)
        if config.start == "immediate":
            self.state.request_start()
        log.info("fake bybit serving %s on %s", self.recording.source, self.linear_url)
        return self


async def serve_bybit(session: BybitSession | BybitSyntheticSpec | None = None, **config: Any) -> FakeBybitExchange:
    """Start a fake Bybit exchange (ports bound, replay armed); ``config`` are `FakeExchangeConfig` fields."""
    if not isinstance(session, BybitSession):
        session = generate_bybit_session(session)
    return await FakeBybitExchange(session, FakeExchangeConfig(session=session.recording, **config)).start()


async def _serve_until_signalled(spec: BybitSyntheticSpec, config: dict[str, Any]) -> None:
    exchange = await serve_bybit(spec, **config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(orjson.dumps({"ws_url": exchange.linear_url, "control_url": exchange.rest_url,
                        "source": exchange.recording.source}).decode(), flush=True)
    try:
        await stop.wait()
    finally:
        await exchange.stop()


def run_bybit(spec: BybitSyntheticSpec | None = None, **config: Any) -> None:
    """Blocking entry point: serve a synthetic session until SIGINT/SIGTERM (prints the URLs as JSON)."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(spec or BybitSyntheticSpec(), config))
