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


async def _burst(n: int, gate: RateLimitGate) -> tuple[int, int]:
    """``n`` requests at once to an origin never answered yet, the first to arrive met by a 418
    (Retry-After 1 s). Returns (requests the exchange saw inside the ban, requests answered 200)."""
    session = generate_session(seed=1, duration_s=1, trades_per_s=1)
    fake = await serve(FakeExchangeConfig(session=session, speed="max", start="manual",
                                          faults={"rest_418_count": 1, "retry_after_s": 1}))
    try:
        async with aiohttp.ClientSession() as http:
            clients = [RestClient(http, ProducerMetrics(), gate=gate) for _ in range(n)]
            answers = await asyncio.gather(*(c.get_json(f"{fake.rest_url}/fapi/v1/time") for c in clients))
        return fake.status()["rest_requests_in_ban"], len(answers)
    finally:
        await fake.stop()


async def test_a_start_up_burst_meets_a_ban_with_one_request():
    """A producer's start: every symbol's catch-up from the checkpoint, the depth snapshots and the
    first poll leave together. Until the origin has answered once they go one at a time, so the 418
    finds one request, not the burst; every request is still answered once the ban is over."""
    in_ban, answered = await _burst(4, RateLimitGate())
    assert (in_ban, answered) == (0, 4)


async def test_once_the_origin_answered_requests_go_concurrently():
    gate = RateLimitGate()
    url = "http://127.0.0.1:9/fapi/v1/time"
    gate.answered(url)
    inside = 0
    most = 0

    async def request():
        nonlocal inside, most
        async with gate.turn(url):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    await asyncio.gather(*(request() for _ in range(3)))
    assert most == 3
    gate.block(url, time.monotonic() + 0.01)  # a 429/418 (or the weight brake): one at a time again
    most = 0
    await asyncio.gather(*(request() for _ in range(3)))
    assert most == 1
