"""The fake exchange on an event-loop thread of its own, for tests of blocking clients (the Binance broker).

Market prices are posted to its control API so every fill price is known in advance; the symbol
filters come from the real 2021 exchangeInfo in the bundled recording.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import orjson

from fake_exchange import FakeExchange, FakeExchangeConfig
from fake_exchange.recording import build_recording, parse_rest_line
from tests.support.paths import RECORDING

DATA = RECORDING / "session_config_and_rest.txt"
SYM = "BTCUSDT"


class FakeOnThread:
    """The fake exchange on an event-loop thread of its own (the broker under test is blocking)."""

    control_timeout_s = 5.0

    def __init__(self) -> None:
        session = build_recording([], [parse_rest_line(DATA.read_text().splitlines()[0])])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        config = FakeExchangeConfig(session=session, speed="max", start="manual", weight_limit_1m=1_000_000)
        self.fake = asyncio.run_coroutine_threadsafe(FakeExchange(config).start(), self.loop).result(10)
        self.rest_url = self.fake.rest_url
        self.ws_url = self.rest_url.replace("http://", "ws://")

    def control(self, path: str, body: dict | None = None):
        req = urllib.request.Request(
            f"{self.rest_url}/_control/orders/{path}",
            data=None if body is None else orjson.dumps(body),
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(req, timeout=self.control_timeout_s) as resp:
            return orjson.loads(resp.read())

    def market(self, symbol: str = SYM, **kw):
        return self.control("market", {"symbol": symbol, **kw})

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
