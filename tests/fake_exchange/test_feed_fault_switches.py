"""The fake exchange's feed-fault switches added for the fault suite (tests/faults): duplicated and
reordered frames, the stall window, the half-open ("stall") drop, and the count of REST requests
that arrive inside a 418/429's Retry-After window.

Pure parts with an injected clock; the websocket behaviour against a real local server.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
import websockets
from pydantic import ValidationError

from fake_exchange import generate_session
from fake_exchange.config import FakeExchangeConfig
from fake_exchange.exchange import serve
from fake_exchange.faults import FaultSettings, FaultState, parse_fault_assignments
from fake_exchange.replay import ReplayEngine
from fake_exchange.state import ExchangeState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    conn_id = 1

    def __init__(self) -> None:
        self.idle = asyncio.Event()
        self.idle.set()
        self.frames: list = []

    def wants(self, stream: str) -> bool:
        return True

    def enqueue_frame(self, frame) -> None:
        self.frames.append(frame)

    def end_replay(self) -> None:
        pass

    def describe(self) -> dict:
        return {"id": self.conn_id}


def test_new_switches_are_validated_and_parsed():
    assert parse_fault_assignments(
        [
            "duplicate_frames=3",
            "disorder_stream=btcusdt@aggTrade",
            "stall_for_s=2.5",
            "reorder_frames=1",
            "drop_mode=stall",
        ]
    ) == {
        "duplicate_frames": 3,
        "disorder_stream": "btcusdt@aggTrade",
        "stall_for_s": 2.5,
        "reorder_frames": 1,
        "drop_mode": "stall",
    }
    for bad in ({"duplicate_frames": -1}, {"reorder_frames": -2}, {"stall_for_s": -0.1}, {"drop_mode": "hang"}):
        with pytest.raises(ValidationError):
            FaultSettings(**bad)


def test_stall_window_counts_down_and_clears():
    clock = Clock()
    faults = FaultState(clock=clock)
    assert faults.stall_remaining_s() == 0
    faults.update({"stall_for_s": 3})
    clock.now += 1
    assert faults.stall_remaining_s() == pytest.approx(2) and faults.snapshot().stall_for_s == pytest.approx(2)
    faults.update({"garbage_every": 5})  # another switch does not end the window early... nor restart it
    assert faults.stall_remaining_s() == pytest.approx(2)
    clock.now += 2.01
    assert faults.stall_remaining_s() == 0 and faults.snapshot().stall_for_s == 0
    faults.update({"stall_for_s": 9})
    faults.clear()
    assert faults.stall_remaining_s() == 0


def test_requests_inside_a_retry_after_window_are_counted():
    clock = Clock()
    faults = FaultState(FaultSettings(rest_418_count=1, rest_429_count=1, retry_after_s=3), clock=clock)
    assert faults.ban_remaining_s() == 0
    assert faults.rest_fault("x").status == 418  # ban until 103
    assert faults.ban_remaining_s() == pytest.approx(3)
    clock.now += 1
    assert faults.rest_fault("x").status == 429 and faults.requests_in_ban == 1  # inside; extends to 104
    clock.now += 2.5
    assert faults.rest_fault("x") is None and faults.requests_in_ban == 2  # 103.5 < 104
    clock.now += 0.6
    assert faults.rest_fault("x") is None and faults.requests_in_ban == 2  # after the window
    faults.update({"rest_429_count": 1, "retry_after_s": 0})  # Retry-After 0: no window
    faults.rest_fault("x")
    faults.rest_fault("x")
    assert faults.requests_in_ban == 2


async def test_duplicated_and_reordered_frames_at_dispatch():
    rec = generate_session(seed=4, duration_s=2, trades_per_s=10, liquidations_per_min=0)
    stream = "btcusdt@aggTrade"
    clock = Clock()
    state = ExchangeState(rec, FaultSettings(duplicate_frames=2, reorder_frames=2, disorder_stream=stream), clock=clock)
    recorder = Recorder()
    state.connections.add(recorder)
    state.request_start()
    await ReplayEngine(state, None, clock=clock, sleep=clock.sleep).run()
    want = [f.payload["a"] for f in rec.frames if f.stream == stream]
    got = [f.payload["a"] for f in recorder.frames if f.stream == stream]
    a0, a1, a2, a3, a4 = want[:5]
    # frame 0 held, frame 1 sent (and duplicated), then 0; frame 2 held, 3 sent (duplicated), then 2
    assert got[:8] == [a1, a1, a0, a3, a3, a2, a4, want[5]]
    assert sorted(set(got)) == want and len(got) == len(want) + 2
    others = [f.index for f in recorder.frames if f.stream != stream]
    assert others == [f.index for f in rec.frames if f.stream != stream]  # other streams untouched
    assert state.frames_duplicated == {stream: 2} and state.frames_reordered == {stream: 2}
    assert state.status()["frames_duplicated"] == {stream: 2}


async def test_every_pair_swapped_and_a_last_held_frame_still_sent():
    rec = generate_session(seed=4, duration_s=1, trades_per_s=10, liquidations_per_min=0)
    stream = "btcusdt@aggTrade"
    want = [f.payload["a"] for f in rec.frames if f.stream == stream]
    if len(want) % 2 == 0:  # an odd count leaves the last one held when the replay ends
        rec = generate_session(seed=5, duration_s=1, trades_per_s=10, liquidations_per_min=0)
        want = [f.payload["a"] for f in rec.frames if f.stream == stream]
    assert len(want) % 2 == 1
    clock = Clock()
    state = ExchangeState(rec, FaultSettings(reorder_frames=len(want), disorder_stream=stream), clock=clock)
    recorder = Recorder()
    state.connections.add(recorder)
    state.request_start()
    await ReplayEngine(state, None, clock=clock, sleep=clock.sleep).run()
    got = [f.payload["a"] for f in recorder.frames if f.stream == stream]
    swapped = [x for i in range(0, len(want) - 1, 2) for x in (want[i + 1], want[i])] + [want[-1]]
    assert got == swapped and state.held_frames == {}


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def post_faults(http, exchange, **changes) -> dict:
    async with http.post(f"{exchange.rest_url}/_control/faults", json=changes) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_stall_window_holds_every_frame_then_releases_them_in_order(http):
    session = generate_session(seed=2, duration_s=1.5, trades_per_s=20, liquidations_per_min=0)
    exchange = await serve(FakeExchangeConfig(session=session, speed=1.0, start="manual"))
    try:
        async with websockets.connect(exchange.stream_url(["btcusdt@aggTrade"]), max_queue=None) as ws:
            await post_faults(http, exchange, stall_for_s=1.0)
            exchange.start_replay()
            t0 = time.monotonic()
            first = await asyncio.wait_for(ws.recv(), 5)
            assert time.monotonic() - t0 >= 0.95  # nothing left during the window
            ids = [json.loads(first)["data"]["a"]]
            want = [f.payload["a"] for f in session.frames if f.stream == "btcusdt@aggTrade"]
            while len(ids) < len(want):
                ids.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["data"]["a"])
            assert ids == want  # all of them, in order, once
    finally:
        await exchange.stop()


async def test_stall_drop_leaves_a_silent_open_connection_and_serves_new_ones(http):
    session = generate_session(seed=2, duration_s=4, trades_per_s=20, liquidations_per_min=0)
    exchange = await serve(FakeExchangeConfig(session=session, speed=1.0, start="immediate"))
    try:
        async with websockets.connect(
            exchange.stream_url(["btcusdt@aggTrade"]), max_queue=None, close_timeout=0.2
        ) as dead:
            await asyncio.wait_for(dead.recv(), 5)
            body = await post_faults(http, exchange, drop_mode="stall", drop_now=True)
            assert body["dropped"] == 1
            with pytest.raises(TimeoutError):  # open (no close, no reset) and silent
                while True:
                    await asyncio.wait_for(dead.recv(), 0.5)
            with pytest.raises(TimeoutError):  # pings go unanswered: the peer reads nothing either
                await asyncio.wait_for(await dead.ping(), 0.5)
            async with websockets.connect(exchange.stream_url(["btcusdt@aggTrade"])) as fresh:
                assert json.loads(await asyncio.wait_for(fresh.recv(), 5))["data"]["e"] == "aggTrade"
            async with http.get(f"{exchange.rest_url}/_control/status") as resp:
                status = await resp.json()
            assert status["drops"] == 1
    finally:
        await exchange.stop()
