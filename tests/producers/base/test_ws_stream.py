"""The websocket client: rotation before the 24 h cut loses nothing; no network is reported once."""

from __future__ import annotations

import asyncio
import socket

from fake_exchange.config import FakeExchangeConfig
from fake_exchange.exchange import serve
from fake_exchange.synthetic import SyntheticSpec, generate_session
from producers.base.stream import CombinedStream
from producers.binance.ws_stream import BinanceStreamConfig


async def test_rotation_overlaps_connections_so_no_frame_is_lost():
    session = generate_session(SyntheticSpec(seed=11, symbols=("BTCUSDT",), duration_s=3, trades_per_s=40))
    fake = await serve(FakeExchangeConfig(session=session, speed=1.0))
    seen: list[int] = []
    reconnects: list[str] = []
    stop = asyncio.Event()
    # 0.4 s: about 5 rotations in the 3 s session (0.7 s once gave only 1 on a loaded machine)
    cfg = BinanceStreamConfig(fake.ws_url, ["btcusdt@aggTrade"], max_age_s=0.4)
    stream = CombinedStream(
        cfg,
        lambda s, d, r, raw: seen.append(d["a"]),
        lambda raw, why: None,
        lambda state, detail: None,
        reconnects.append,
    )
    task = asyncio.create_task(stream.run(stop))
    try:
        await asyncio.wait_for(fake.wait_finished(), 20)
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await task
        await fake.stop()
    sent = [f.payload["a"] for f in session.frames if f.event == "aggTrade"]
    assert reconnects.count("rotation") >= 2 and stream.connections >= 3
    assert set(sent) <= set(seen)  # every trade arrived at least once (overlap may duplicate)


async def test_unreachable_exchange_is_reported_once_with_the_offline_hint():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    statuses: list[tuple[str, str]] = []
    reconnects: list[str] = []
    stop = asyncio.Event()
    cfg = BinanceStreamConfig(
        f"ws://127.0.0.1:{port}", ["btcusdt@aggTrade"], backoff_initial_s=0.01, backoff_max_s=0.05
    )
    stream = CombinedStream(
        cfg,
        lambda *a: None,
        lambda raw, why: None,
        lambda state, detail: statuses.append((state, detail)),
        reconnects.append,
    )
    task = asyncio.create_task(stream.run(stop))
    await asyncio.sleep(1.0)
    stop.set()
    await task
    assert len(reconnects) >= 3  # it kept retrying...
    unreachable = [d for st, d in statuses if st == "unreachable"]
    assert len(unreachable) == 1 and "--source replay:DIR" in unreachable[0]  # ...but said so once


async def test_a_websocket_that_opens_but_stays_silent_is_reported_silent_not_unreachable():
    """A server that accepts the handshake and never sends (a stalled upstream; the fake exchange once its
    session has ended): `silent` with the address and the read timeout, once, not the offline hint."""
    import websockets

    async def never_send(ws) -> None:
        await ws.wait_closed()

    async with websockets.serve(never_send, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        statuses: list[tuple[str, str]] = []
        reconnects: list[str] = []
        stop = asyncio.Event()
        cfg = BinanceStreamConfig(
            f"ws://127.0.0.1:{port}",
            ["btcusdt@aggTrade"],
            read_timeout_s=0.2,
            backoff_initial_s=0.01,
            backoff_max_s=0.05,
        )
        stream = CombinedStream(
            cfg,
            lambda *a: None,
            lambda raw, why: None,
            lambda state, detail: statuses.append((state, detail)),
            reconnects.append,
        )
        task = asyncio.create_task(stream.run(stop))
        deadline = asyncio.get_running_loop().time() + 20
        while len(reconnects) < 3 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        stop.set()
        await task
    assert len(reconnects) >= 3 and stream.connections >= 3  # it opened each time, and kept retrying
    assert [st for st, _ in statuses] == ["silent"], statuses
    assert f"127.0.0.1:{port}" in statuses[0][1] and "nothing for 0.2 s" in statuses[0][1]
    assert "--source replay:DIR" not in statuses[0][1]


async def test_a_client_far_behind_a_flooded_connection_is_not_cut_by_keepalive():
    """At max speed on a busy machine the producer reads frames seconds after they were sent, so every
    pong (ours and the server's ping) waits behind them. Neither side may take that for a dead link:
    with pings every 0.2 s the client here stalls 1.5 s at a time (the server keeps queueing), and the
    one connection still delivers every frame. (With websockets' default ping timeouts this cut a
    2-hour replay after 40 s under load and lost 43,551 frames.)"""
    import time as _time

    session = generate_session(SyntheticSpec(seed=12, symbols=("BTCUSDT",), duration_s=30, trades_per_s=100))
    fake = await serve(FakeExchangeConfig(session=session, speed=None, ping_interval_s=0.2, ping_timeout_s=600.0))
    seen: list[int] = []
    reconnects: list[str] = []
    stop = asyncio.Event()
    cfg = BinanceStreamConfig(fake.ws_url, ["btcusdt@aggTrade"], ping_interval_s=0.2, read_timeout_s=30.0)

    def on_frame(stream, data, received, raw) -> None:
        seen.append(data["a"])
        if len(seen) % 1000 == 1:
            _time.sleep(1.5)  # the loop is starved: no frame, ping or pong is read meanwhile

    stream = CombinedStream(cfg, on_frame, lambda raw, why: None, lambda state, detail: None, reconnects.append)
    task = asyncio.create_task(stream.run(stop))
    sent = [f.payload["a"] for f in session.frames if f.event == "aggTrade"]
    try:
        for _ in range(600):
            if len(seen) >= len(sent):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
        await fake.stop()
    assert reconnects == [] and stream.connections == 1
    assert seen == sent
