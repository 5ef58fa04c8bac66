"""Lifecycle of one fake Bybit exchange: the Binance fake's machinery with Bybit's websocket in front.

Reused as they are: :class:`~fake_exchange.subscribed.SubscribedExchange` (start-up and connection
handling shared with the OKX fake) on :class:`~fake_exchange.exchange.FakeExchange` (addresses, status, fault
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

from ..config import FakeExchangeConfig
from ..subscribed import SubscribedExchange
from .market import BybitMarket
from .synthetic import BybitSession, BybitSyntheticSpec, generate_bybit_session
from .ws_server import BybitHandlers


class FakeBybitExchange(SubscribedExchange):
    """A running fake Bybit v5 linear exchange (websocket + control API)."""

    handlers_class = BybitHandlers

    def __init__(self, session: BybitSession, config: FakeExchangeConfig) -> None:
        super().__init__(config, session.recording)
        self.session = session
        self.market = BybitMarket(session)
        self.state.market = self.market  # type: ignore[assignment]  # the replay feeds it every frame

    @property
    def linear_url(self) -> str:
        return self.venue_url


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
