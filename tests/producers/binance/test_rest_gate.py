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
from producers.binance.rest import RateLimitGate, RestClient, WeightBudget, binance_weight
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
    fake = await serve(
        FakeExchangeConfig(
            session=session, speed="max", start="manual", faults={"rest_418_count": 1, "retry_after_s": 1}
        )
    )
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
    fake = await serve(
        FakeExchangeConfig(
            session=session, speed="max", start="manual", faults={"rest_418_count": 1, "retry_after_s": 1}
        )
    )
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


def test_the_weight_budget_spends_before_sending_within_a_share_of_the_utc_minute():
    """Binance counts weight per UTC minute: a request that would take the minute past the client's share
    waits for the next minute (with a quarter-second margin); what an answer reports for the same
    minute (other users of the IP) counts too, a report of the previous minute does not."""
    now = [600.0]  # 00:10:00
    budget = WeightBudget(limit=100, clock=lambda: now[0])
    assert [budget.spend(20, 0.6) for _ in range(3)] == [0.0, 0.0, 0.0]  # 60 = 0.6 x 100
    now[0] = 615.0
    assert budget.spend(1, 0.6) == 45.25 and budget.used == 60  # refused: not counted
    assert budget.spend(30, 0.9) == 0.0 and budget.used == 90  # a bigger share (the live repairs) still fits
    budget.observe(95, sent_at=614.0)
    assert budget.used == 95 and budget.spend(1, 0.9) == 45.25
    now[0] = 660.0  # the next minute
    budget.observe(99, sent_at=659.5)  # answered now, but counted in the minute before
    assert budget.used == 0 and budget.spend(20, 0.6) == 0.0


def test_request_weights_are_binance_s():
    base = "https://fapi.binance.com"
    assert binance_weight(f"{base}/fapi/v1/aggTrades", {"fromId": 1, "limit": 1000}) == 20
    assert binance_weight(f"{base}/fapi/v1/klines", {"interval": "1m", "limit": 1500}) == 10
    assert binance_weight(f"{base}/fapi/v1/klines", {"interval": "1m", "limit": 499}) == 2
    assert binance_weight(f"{base}/fapi/v1/depth", {"limit": 1000}) == 20
    assert binance_weight(f"{base}/fapi/v1/premiumIndex", {}) == 10
    assert binance_weight(f"{base}/futures/data/openInterestHist", {}) == 0
    assert binance_weight("https://api.exchange.coinbase.com/products/BTC-USD/ticker") == 0


async def test_a_429_and_418_storm_is_waited_out_with_no_request_inside_a_ban():
    """Three 429s then two 418s (Retry-After 1 s each) in front of six requests of clients sharing a gate:
    every request is answered and none arrives inside a ban."""
    session = generate_session(seed=1, duration_s=1, trades_per_s=1)
    fake = await serve(
        FakeExchangeConfig(
            session=session,
            speed="max",
            start="manual",
            faults={"rest_429_count": 3, "rest_418_count": 2, "retry_after_s": 1},
        )
    )
    try:
        gate = RateLimitGate()
        async with aiohttp.ClientSession() as http:
            clients = [RestClient(http, ProducerMetrics(), gate=gate) for _ in range(3)]
            answers = await asyncio.gather(*(c.get_json(f"{fake.rest_url}/fapi/v1/time") for c in clients * 2))
        status = fake.status()
        assert len(answers) == 6
        assert (status["rest_http_429"], status["rest_http_418"], status["rest_requests_in_ban"]) == (3, 2, 0)
    finally:
        await fake.stop()
