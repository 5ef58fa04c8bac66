"""The fake Bybit v5 linear exchange: its synthetic sessions and its websocket protocol, over real sockets.

The expected books are rebuilt here independently from the session's frames (plain dicts of strings),
so a snapshot served on subscribe is checked against what the replayed deltas imply.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from fake_exchange.bybit import (
    BybitSyntheticSpec,
    generate_bybit_session,
    serve_bybit,
)

pytestmark = pytest.mark.timeout(30)
BOOK = "orderbook.50.BTCUSDT"


def expected_books(session, symbol):
    """{u: (bids, asks)} after every orderbook message of `symbol`, rebuilt with plain dicts."""
    init = session.recording.initial_books[symbol]
    bids, asks = dict(init.bids), dict(init.asks)
    out = {init.last_update_id: (dict(bids), dict(asks))}
    for f in session.frames:
        if f.stream != f"orderbook.50.{symbol}":
            continue
        msg = json.loads(f.data)
        if msg["type"] == "snapshot":
            bids, asks = {}, {}
        for side, levels in ((bids, msg["data"]["b"]), (asks, msg["data"]["a"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        out[msg["data"]["u"]] = (dict(bids), dict(asks))
    return out


def as_levels(side_levels):
    return {p: q for p, q in side_levels}


def test_sessions_are_deterministic_chained_and_never_crossed():
    spec = BybitSyntheticSpec(seed=11, symbols=("BTCUSDT", "ETHUSDT"), duration_s=8, restart_at_s=5)
    a, b = generate_bybit_session(spec), generate_bybit_session(spec)
    assert [f.data for f in a.frames] == [f.data for f in b.frames]
    assert [f.data for f in generate_bybit_session(spec, seed=12).frames] != [f.data for f in a.frames]
    for sym in ("BTCUSDT", "ETHUSDT"):
        msgs = [json.loads(f.data) for f in a.frames if f.stream == f"orderbook.50.{sym}"]
        us = [m["data"]["u"] for m in msgs]
        restart = us.index(1)
        assert msgs[restart]["type"] == "snapshot" and restart > 0
        start = a.recording.initial_books[sym].last_update_id
        assert us[:restart] == list(range(start + 1, start + 1 + restart))
        assert us[restart:] == list(range(1, len(us) - restart + 1))
        for bids, asks in expected_books(a, sym).values():
            assert max(map(Decimal, bids)) < min(map(Decimal, asks))
        trades = [json.loads(f.data) for f in a.frames if f.stream == f"publicTrade.{sym}"]
        ids = [t["i"] for m in trades for t in m["data"]]
        assert len(ids) == len(set(ids)) > 20
        assert all(len({t["seq"] for t in m["data"]}) == 1 and len({t["S"] for t in m["data"]}) == 1 for m in trades)
        seqs = [m["data"][0]["seq"] for m in trades]
        assert seqs == sorted(seqs)
    times = [f.receive_time for f in a.frames]
    assert times == sorted(times)


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_subscribe_ping_errors_and_snapshot_then_chained_deltas():
    session = generate_bybit_session(seed=3, duration_s=3)
    fake = await serve_bybit(session, speed=None, start="manual")
    try:
        async with websockets.connect(fake.linear_url, close_timeout=0.5) as ws:
            await ws.send(json.dumps({"op": "subscribe", "req_id": "r1", "args": ["kline.1.BTCUSDT"]}))
            answer = await recv_json(ws)
            assert answer["success"] is False and "kline.1.BTCUSDT" in answer["ret_msg"] and answer["req_id"] == "r1"
            await ws.send(json.dumps({"op": "subscribe", "args": [BOOK, "tickers.BTCUSDT"]}))
            assert (await recv_json(ws))["success"] is True
            snap, ticker = await recv_json(ws), await recv_json(ws)
            init = session.recording.initial_books["BTCUSDT"]
            assert snap["type"] == "snapshot" and snap["data"]["u"] == init.last_update_id
            assert as_levels(snap["data"]["b"]) == dict(init.bids) and as_levels(snap["data"]["a"]) == dict(init.asks)
            assert ticker["type"] == "snapshot" and ticker["data"] == session.initial_tickers["BTCUSDT"]
            await ws.send(json.dumps({"op": "subscribe", "args": [BOOK]}))
            assert "already subscribed" in (await recv_json(ws))["ret_msg"]
            await ws.send(json.dumps({"op": "ping", "req_id": "p"}))
            pong = await recv_json(ws)
            assert (pong["op"], pong["ret_msg"], pong["success"], pong["req_id"]) == ("ping", "pong", True, "p")
            await ws.send(json.dumps({"op": "dance"}))
            assert (await recv_json(ws))["success"] is False
            fake.start_replay()
            us = []
            n_book = sum(f.stream == BOOK for f in session.frames)
            while len(us) < n_book:
                msg = await recv_json(ws)
                assert msg["topic"] in (BOOK, "tickers.BTCUSDT")
                if msg["topic"] == BOOK:
                    us.append(msg["data"]["u"])
            assert us == list(range(init.last_update_id + 1, init.last_update_id + 1 + n_book))
            await fake.wait_finished(5)
    finally:
        await fake.stop()


async def test_resubscribe_after_skipped_deltas_gives_a_snapshot_the_next_deltas_continue():
    session = generate_bybit_session(seed=5, duration_s=6)
    books = expected_books(session, "BTCUSDT")
    fake = await serve_bybit(session, speed=4.0)
    try:
        async with websockets.connect(fake.linear_url, close_timeout=0.5) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": [BOOK]}))
            await recv_json(ws)
            first = await recv_json(ws)
            last_u = first["data"]["u"]
            for _ in range(3):
                last_u = (await recv_json(ws))["data"]["u"]
            fake.set_faults(skip_frames=2, skip_stream=BOOK)
            jumped = (await recv_json(ws))["data"]["u"]
            assert jumped == last_u + 3  # two deltas were withheld
            await ws.send(json.dumps({"op": "unsubscribe", "args": [BOOK]}))
            await ws.send(json.dumps({"op": "subscribe", "args": [BOOK]}))
            msgs = []
            while True:  # deltas in flight before the unsubscribe, two answers, then the snapshot
                msg = await recv_json(ws)
                msgs.append(msg)
                if msg.get("type") == "snapshot":
                    break
            assert [m["success"] for m in msgs if "op" in m] == [True, True]
            snap_u = msg["data"]["u"]
            bids, asks = books[snap_u]
            assert as_levels(msg["data"]["b"]) == bids and as_levels(msg["data"]["a"]) == asks
            assert (await recv_json(ws))["data"]["u"] == snap_u + 1
            assert fake.status()["frames_skipped"] == {BOOK: 2}
    finally:
        await fake.stop()


async def test_garbage_frames_and_drop_and_unknown_path():
    session = generate_bybit_session(seed=8, duration_s=4, trades_per_s=20)
    fake = await serve_bybit(session, speed=None, faults={"garbage_every": 10})
    try:
        with pytest.raises(InvalidStatus):
            async with websockets.connect(fake.ws_url + "/v5/public/spot"):
                pass
        async with websockets.connect(fake.linear_url, close_timeout=0.5) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}))
            await recv_json(ws)
            texts = [await asyncio.wait_for(ws.recv(), 5) for _ in range(33)]
        garbage = [t for t in texts if not t.startswith('{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1')]
        # after every 10th real frame one garbage frame: non-JSON, unknown shape, hollow payload in turn
        assert len(garbage) == 3 and garbage[0] == "}{ this frame is not JSON"
        assert json.loads(garbage[1]) == {"unexpected": True, "values": [1, 2, 3]}
        assert json.loads(garbage[2]) == {"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 0, "data": [{}]}
        async with websockets.connect(fake.linear_url, close_timeout=0.5) as ws:
            await ws.send(json.dumps({"op": "subscribe", "args": ["publicTrade.BTCUSDT"]}))
            await recv_json(ws)
            async with aiohttp.ClientSession() as http:
                async with http.post(fake.rest_url + "/_control/faults", json={"drop_now": True}) as resp:
                    assert (await resp.json())["dropped"] == 1
                async with http.get(fake.rest_url + "/_control/status") as resp:
                    status = await resp.json()
            with pytest.raises(ConnectionClosed):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
        assert status["drops"] == 1 and status["ws_url"] == fake.linear_url
    finally:
        await fake.stop()


async def test_a_client_connecting_after_the_end_gets_the_end_marker_at_once():
    """A reconnect slower than the rest of the replay (a loaded machine) must still learn that the
    replay ended: without the marker the producer waited for an end that never came (it hung the Bybit
    producer's forced-drop test in two full suite runs)."""
    session = generate_bybit_session(seed=4, duration_s=2)
    fake = await serve_bybit(session, speed=None, start="manual")
    try:
        fake.start_replay()
        await fake.wait_finished(5)
        async with websockets.connect(fake.linear_url + "?replayEnd=true", close_timeout=0.5) as ws:
            marker = await recv_json(ws)
            assert marker["stream"] == "tapeflow@replayEnd" and marker["data"]["messages"] == 0, marker
            assert marker["data"]["frames_total"] == len(session.frames)
        async with websockets.connect(fake.linear_url, close_timeout=0.5) as ws:  # did not ask: no marker
            with pytest.raises(TimeoutError):
                await recv_json(ws, timeout=0.3)
    finally:
        await fake.stop()


async def test_instruments_info_is_shaped_like_bybits_documented_answer_and_pages():
    from tests.support.paths import DATA_DIR

    documented = json.loads((DATA_DIR / "instrument_rules" / "bybit_instruments_linear.json").read_text())
    fake = await serve_bybit(
        generate_bybit_session(seed=3, duration_s=1, symbols=("BTCUSDT", "ETHUSDT")), speed=None, start="manual"
    )
    url = f"{fake.rest_url}/v5/market/instruments-info"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, params={"category": "linear"}) as r:
                body = await r.json()
            async with http.get(url, params={"category": "linear", "limit": "1"}) as r:
                first = await r.json()
            async with http.get(
                url, params={"category": "linear", "limit": "1", "cursor": first["result"]["nextPageCursor"]}
            ) as r:
                second = await r.json()
            async with http.get(url, params={"category": "spot"}) as r:
                refused = await r.json()
    finally:
        await fake.stop()
    assert set(body) == set(documented) and body["retCode"] == 0 and body["result"]["nextPageCursor"] == ""
    row, doc_row = body["result"]["list"][0], documented["result"]["list"][0]
    assert set(row) == set(doc_row) and set(row["lotSizeFilter"]) == set(doc_row["lotSizeFilter"])
    assert [r["symbol"] for r in body["result"]["list"]] == ["BTCUSDT", "ETHUSDT"]
    assert [r["symbol"] for r in first["result"]["list"] + second["result"]["list"]] == ["BTCUSDT", "ETHUSDT"]
    assert second["result"]["nextPageCursor"] == "" and refused["retCode"] == 10001
