"""The fake OKX v5 exchange: its synthetic sessions, its websocket protocol and its REST, over real sockets.

Expected books are rebuilt here from the session's raw pushes with plain dicts of strings, so the
snapshot on subscribe and the REST book are checked against what the replayed updates imply.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pytest
import websockets

from fake_exchange.okx import OkxSyntheticSpec, generate_okx_session, serve_okx

pytestmark = pytest.mark.timeout(30)
BOOKS = "books:BTC-USDT-SWAP"


def pushes(session, stream):
    return [json.loads(f.data) for f in session.frames if f.stream == stream]


def book_after_all(session, symbol):
    st = session.initial[symbol]
    bids, asks = dict(st.bids), dict(st.asks)
    for msg in pushes(session, f"books:{st.inst_id}"):
        for side, levels in ((bids, msg["data"][0]["bids"]), (asks, msg["data"][0]["asks"])):
            for price, size, *_ in levels:
                if Decimal(size) == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
    return bids, asks


def test_sessions_are_deterministic_chained_consecutive_and_never_crossed():
    spec = OkxSyntheticSpec(
        seed=5, symbols=("BTCUSDT", "ETHUSDT"), duration_s=6, reset_at_s=3, heartbeat_probability=0.2
    )
    a, b = generate_okx_session(spec), generate_okx_session(spec)
    assert [f.data for f in a.frames] == [f.data for f in b.frames]
    assert [f.data for f in generate_okx_session(spec, seed=6).frames] != [f.data for f in a.frames]
    for sym, inst in (("BTCUSDT", "BTC-USDT-SWAP"), ("ETHUSDT", "ETH-USDT-SWAP")):
        rows = [m["data"][0] for m in pushes(a, f"books:{inst}")]
        prev = a.initial[sym].seq_id
        resets = heartbeats = 0
        for r in rows:
            assert r["prevSeqId"] == prev
            resets += r["seqId"] < r["prevSeqId"]
            heartbeats += r["seqId"] == r["prevSeqId"] and not r["bids"] and not r["asks"]
            prev = r["seqId"]
        assert resets == 1 and heartbeats > 0
        trades = [m["data"][0] for m in pushes(a, f"trades:{inst}")]
        last = a.initial[sym].trade_id
        fills = {int(f["tradeId"]): f for f in a.fills[inst]}
        for t in trades:
            assert int(t["tradeId"]) - int(t["count"]) + 1 == last + 1  # consecutive per instrument
            mine = [fills.pop(i) for i in range(last + 1, int(t["tradeId"]) + 1)]  # its individual fills
            assert sum(Decimal(f["sz"]) for f in mine) == Decimal(t["sz"])
            assert {(f["px"], f["side"], f["ts"]) for f in mine} == {(t["px"], t["side"], t["ts"])}
            last = int(t["tradeId"])
        assert not fills  # and no other fill
        assert len(trades) > 10
        bids, asks = book_after_all(a, sym)
        assert max(map(Decimal, bids)) < min(map(Decimal, asks))
        # sizes are contracts: the session's base-coin book divided by ctVal
        base = a.recording.initial_books[sym]
        ct = Decimal(a.initial[sym].ct_val)
        assert {p: Decimal(q) for p, q in a.initial[sym].bids.items()} == {p: Decimal(q) / ct for p, q in base.bids}


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def test_subscribe_snapshot_ping_errors_chain_and_rest():
    session = generate_okx_session(seed=3, duration_s=3)
    fake = await serve_okx(session, speed=None, start="manual")
    try:
        async with websockets.connect(fake.public_url, close_timeout=0.5) as ws:
            await ws.send(
                json.dumps({"id": "1", "op": "subscribe", "args": [{"channel": "books", "instId": "DOGE-USDT-SWAP"}]})
            )
            err = await recv_json(ws)
            assert (err["event"], err["code"], err["id"]) == ("error", "60018", "1")
            await ws.send(
                json.dumps(
                    {
                        "op": "subscribe",
                        "args": [
                            {"channel": "books", "instId": "BTC-USDT-SWAP"},
                            {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
                        ],
                    }
                )
            )
            ack = await recv_json(ws)
            assert ack["event"] == "subscribe" and ack["arg"] == {"channel": "books", "instId": "BTC-USDT-SWAP"}
            snap = await recv_json(ws)
            init = session.initial["BTCUSDT"]
            assert snap["action"] == "snapshot" and snap["data"][0]["prevSeqId"] == -1
            assert snap["data"][0]["seqId"] == init.seq_id
            assert {lvl[0]: lvl[1] for lvl in snap["data"][0]["bids"]} == init.bids
            assert (await recv_json(ws))["event"] == "subscribe"
            assert (await recv_json(ws))["data"] == [init.funding]
            await ws.send("ping")
            assert await asyncio.wait_for(ws.recv(), 5) == "pong"
            await ws.send(json.dumps({"op": "dance", "args": []}))
            assert (await recv_json(ws))["code"] == "60012"
            fake.start_replay()
            n_books = sum(f.stream == BOOKS for f in session.frames)
            seen, prev = 0, init.seq_id
            while seen < n_books:
                msg = await recv_json(ws)
                if msg["arg"]["channel"] == "books":
                    assert msg["data"][0]["prevSeqId"] == prev
                    prev = msg["data"][0]["seqId"]
                    seen += 1
        await fake.wait_finished(10)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fake.rest_url}/api/v5/public/instruments", params={"instType": "SWAP"}) as r:
                body = await r.json()
            assert body["code"] == "0" and [(i["instId"], i["ctVal"], i["ctType"]) for i in body["data"]] == [
                ("BTC-USDT-SWAP", "0.01", "linear")
            ]
            async with http.get(
                f"{fake.rest_url}/api/v5/market/books", params={"instId": "BTC-USDT-SWAP", "sz": "400"}
            ) as r:
                book = (await r.json())["data"][0]
            bids, asks = book_after_all(session, "BTCUSDT")
            assert book["seqId"] == prev
            assert {lvl[0]: lvl[1] for lvl in book["bids"]} == bids and {lvl[0]: lvl[1] for lvl in book["asks"]} == asks
            async with http.get(f"{fake.rest_url}/api/v5/market/books", params={"instId": "NOPE-USDT-SWAP"}) as r:
                assert (await r.json())["code"] == "51001"
            fills = [int(f["tradeId"]) for f in session.fills["BTC-USDT-SWAP"]]
            page = {"instId": "BTC-USDT-SWAP", "type": "1", "limit": "5"}
            async with http.get(f"{fake.rest_url}/api/v5/market/history-trades", params=page) as r:
                newest = [int(f["tradeId"]) for f in (await r.json())["data"]]
            async with http.get(
                f"{fake.rest_url}/api/v5/market/history-trades", params={**page, "after": str(newest[-1])}
            ) as r:
                older = [int(f["tradeId"]) for f in (await r.json())["data"]]
            assert newest + older == fills[::-1][:10]  # newest first, paged by trade id
            async with http.get(f"{fake.rest_url}/api/v5/public/funding-rate", params={"instId": "BTC-USDT-SWAP"}) as r:
                assert (await r.json())["data"][0]["fundingRate"] == pushes(session, "funding-rate:BTC-USDT-SWAP")[-1][
                    "data"
                ][0]["fundingRate"]
    finally:
        await fake.stop()
