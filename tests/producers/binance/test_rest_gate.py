"""A 418/429's Retry-After binds every REST client of a producer that talks to that origin (Binance bans
the IP): the clients share one `RateLimitGate`. Found by the fault suite (tests/faults): the indicator
poller kept sending through a ban the gap-fill client had met at start-up (4 requests inside the window).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from fake_exchange import generate_session
from fake_exchange.config import FakeExchangeConfig
from fake_exchange.exchange import serve
from producers.binance.rest import RateLimitGate, RestClient
from producers.metrics import ProducerMetrics


def test_the_gate_is_per_origin():
    gate = RateLimitGate()
    gate.block("http://127.0.0.1:8000/fapi/v1/depth?symbol=BTCUSDT", 50.0)
    gate.block("http://127.0.0.1:8000/fapi/v1/time", 40.0)  # never shortens a window
    assert gate.blocked_until("http://127.0.0.1:8000/futures/data/openInterestHist") == 50.0
    assert gate.blocked_until("http://127.0.0.1:8001/fapi/v1/time") == 0.0  # another origin
    assert gate.blocked_until("https://api.exchange.coinbase.com/products/BTC-USD/ticker") == 0.0


async def _two_clients(shared: bool) -> tuple[int, float]:
    """Client A meets a 418 (Retry-After 1 s); client B asks right after. Returns (requests the exchange
    saw inside the ban, seconds B waited)."""
    session = generate_session(seed=1, duration_s=1, trades_per_s=1)
    fake = await serve(FakeExchangeConfig(session=session, speed="max", start="manual",
                                          faults={"rest_418_count": 1, "retry_after_s": 1}))
    try:
        metrics = ProducerMetrics()
        async with aiohttp.ClientSession() as http:
            gate = RateLimitGate() if shared else None
            a = RestClient(http, metrics, gate=gate)
            b = RestClient(http, metrics, gate=gate if shared else None)
            first = asyncio.create_task(a.get_json(f"{fake.rest_url}/fapi/v1/time"))
            while fake.status()["faults"]["rest_418_count"]:  # A has met the ban
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            await b.get_json(f"{fake.rest_url}/fapi/v1/premiumIndex")
            waited = time.monotonic() - t0
            await first
        return fake.status()["rest_requests_in_ban"], waited
    finally:
        await fake.stop()


async def test_clients_sharing_a_gate_send_nothing_inside_a_ban():
    in_ban, waited = await _two_clients(shared=True)
    assert in_ban == 0 and waited >= 0.8
    in_ban, waited = await _two_clients(shared=False)  # what each client alone did before
    assert in_ban >= 1 and waited < 0.8
