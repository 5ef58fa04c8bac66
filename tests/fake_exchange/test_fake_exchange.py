"""The fake Binance USD-M exchange over real sockets on 127.0.0.1.

Clients are the ``websockets`` client and ``aiohttp``; the expected frames and REST data come from
reading the recording files independently with the standard ``json`` module. Timing is measured and
printed (run with ``-s``), never asserted beyond what the schedule guarantees by construction.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from fake_exchange import (
    FakeExchange,
    FakeExchangeConfig,
    generate_session,
    serve,
)
from tests.support.paths import REPO

DATA = Path("/work/shared/data/binance_futures_ws")
AGG_FIELDS = ("a", "p", "q", "f", "l", "T", "m")
pytestmark = pytest.mark.timeout(30)


# -- independent reading of the recording ---------------------------------------------------------
def recorded_frames() -> list[tuple[str, str, dict]]:
    """(stream, raw frame text, data) per recorded frame, via the json module."""
    out = []
    for line in (DATA / "ws_frames.txt").read_text().splitlines()[1:]:
        if line.strip():
            text = line.split(": ", 1)[1]
            doc = json.loads(text)
            out.append((doc["stream"], text, doc["data"]))
    return out


def recorded_rest() -> dict[str, str]:
    """Path+query (as recorded) -> raw body."""
    out = {}
    for name in ("rest_responses.txt", "session_config_and_rest.txt"):
        for line in (DATA / name).read_text().splitlines():
            if " -> " in line:
                url, rest = line.split(" -> ", 1)
                out[url.split("binance.com", 1)[1]] = rest.split(": ", 1)[1]
    return out


FRAMES = recorded_frames()
REST = recorded_rest()


def data_of(stream: str) -> list[dict]:
    return [d for s, _, d in FRAMES if s == stream]


# -- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture
async def make_exchange():
    started: list[FakeExchange] = []

    async def make(wall_clock=None, **kwargs) -> FakeExchange:
        if "session" not in kwargs and "synthetic" not in kwargs:
            kwargs.setdefault("recording", DATA)
        kwargs.setdefault("speed", "max")
        config = FakeExchangeConfig(**kwargs)
        if wall_clock is None:
            exchange = await serve(config)
        else:
            exchange = await FakeExchange(config, wall_clock=wall_clock).start()
        started.append(exchange)
        return exchange

    yield make
    for exchange in started:
        await exchange.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def recv_n(ws, n: int, timeout: float = 10.0) -> list[str]:
    async def collect():
        return [await ws.recv() for _ in range(n)]

    return await asyncio.wait_for(collect(), timeout)


async def assert_quiet(ws, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        extra = await asyncio.wait_for(ws.recv(), seconds)
        pytest.fail(f"unexpected frame after the end: {extra[:80]}")


async def get_json(http, url: str, **params):
    async with http.get(url, params=params) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


async def post_faults(http, exchange: FakeExchange, **changes):
    async with http.post(f"{exchange.rest_url}/_control/faults", json=changes) as resp:
        return resp.status, await resp.json()


# -- websocket replay -----------------------------------------------------------------------------
async def test_combined_stream_replays_every_frame_once_in_order(make_exchange, http):
    exchange = await make_exchange()
    streams = list(dict.fromkeys(s for s, _, _ in FRAMES))
    t0 = time.perf_counter()
    async with websockets.connect(exchange.stream_url(streams), max_queue=None) as ws:
        received = await recv_n(ws, len(FRAMES))
        elapsed = time.perf_counter() - t0
        assert received == [text for _, text, _ in FRAMES]  # byte-identical, once each, in order
        await exchange.wait_finished(5)
        await assert_quiet(ws)
        pong = await ws.ping()  # still open and answering pings after the end
        await asyncio.wait_for(pong, 2)
        status, _, body = await get_json(http, f"{exchange.rest_url}/_control/status")
        assert status == 200 and body["finished"] is True
        assert body["frames_sent_total"] == len(FRAMES) == body["frames_total"]
        assert body["frames_sent"]["sushiusdt@aggTrade"] == len(data_of("sushiusdt@aggTrade"))
        assert len(body["connections"]) == 1
    span = exchange.recording.duration_s
    print(f"\nmax-speed replay of {len(FRAMES)} frames ({span:.1f} s recorded): {elapsed * 1000:.0f} ms")


async def test_stream_filtering_and_raw_paths(make_exchange, http):
    exchange = await make_exchange(start="manual")
    wanted = ["sushiusdt@aggTrade", "ctkusdt@depth@100ms"]
    expected_combined = [text for s, text, _ in FRAMES if s in wanted]
    expected_raw = [json.dumps(d, separators=(",", ":")) for d in data_of("akrousdt@bookTicker")]
    async with (
        websockets.connect(exchange.stream_url(wanted), max_queue=None) as combined,
        websockets.connect(f"{exchange.ws_url}/ws/akrousdt@bookTicker", max_queue=None) as raw,
    ):
        await asyncio.sleep(0.05)
        assert exchange.state.started is False  # manual start: connecting does not start the replay
        async with http.post(f"{exchange.rest_url}/_control/start") as resp:
            assert resp.status == 200
        assert await recv_n(combined, len(expected_combined)) == expected_combined
        raw_frames = await recv_n(raw, len(expected_raw))
        assert [json.loads(f) for f in raw_frames] == data_of("akrousdt@bookTicker")
        assert all('"stream"' not in f for f in raw_frames)
        await exchange.wait_finished(5)
        await assert_quiet(combined, 0.2)
        await assert_quiet(raw, 0.1)


async def test_subscribe_unsubscribe_and_list(make_exchange, http):
    exchange = await make_exchange(start="manual")
    async with websockets.connect(f"{exchange.ws_url}/ws", max_queue=None) as ws:
        await ws.send(
            json.dumps({"method": "SUBSCRIBE", "params": ["sushiusdt@aggTrade", "KEEPUSDT@aggTrade"], "id": 1})
        )
        assert json.loads(await ws.recv()) == {"result": None, "id": 1}
        await ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["keepusdt@aggTrade"], "id": 2}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 2}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 3}))
        assert json.loads(await ws.recv()) == {"result": ["sushiusdt@aggTrade"], "id": 3}
        await ws.send(json.dumps({"method": "SUBSCRIBEX", "params": [], "id": 4}))
        error = json.loads(await ws.recv())
        assert error["id"] == 4 and error["error"]["code"] == 2
        await ws.send("not json")
        assert json.loads(await ws.recv())["error"]["code"] == 3
        async with http.post(f"{exchange.rest_url}/_control/start"):
            pass
        trades = [json.loads(f) for f in await recv_n(ws, len(data_of("sushiusdt@aggTrade")))]
        assert trades == data_of("sushiusdt@aggTrade")
        await exchange.wait_finished(5)
        await assert_quiet(ws, 0.2)
    # /stream without streams + SUBSCRIBE gets envelopes, and the subscription starts the replay
    exchange = await make_exchange()
    async with websockets.connect(f"{exchange.ws_url}/stream", max_queue=None) as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["keepusdt@aggTrade"], "id": 7}))
        assert json.loads(await ws.recv()) == {"result": None, "id": 7}
        frames = await recv_n(ws, len(data_of("keepusdt@aggTrade")))
        assert frames == [text for s, text, _ in FRAMES if s == "keepusdt@aggTrade"]


async def test_unknown_websocket_path_is_404(make_exchange):
    exchange = await make_exchange()
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"{exchange.ws_url}/nope"):
            pass
    assert info.value.response.status_code == 404


# -- REST -----------------------------------------------------------------------------------------
async def test_rest_depth_snapshot_and_errors(make_exchange, http):
    exchange = await make_exchange(wall_clock=lambda: 1_700_000_030.0, start="manual")
    url = f"{exchange.rest_url}/fapi/v1/depth"
    async with http.get(url, params={"symbol": "SUSHIUSDT", "limit": "1000"}) as resp:
        assert resp.status == 200
        assert await resp.text() == REST["/fapi/v1/depth?symbol=SUSHIUSDT&limit=1000"]  # verbatim
        assert resp.headers["X-MBX-USED-WEIGHT-1M"] == "20"
    recorded = json.loads(REST["/fapi/v1/depth?symbol=AKROUSDT&limit=1000"])
    status, headers, body = await get_json(http, url, symbol="AKROUSDT", limit="5")
    assert status == 200 and headers["X-MBX-USED-WEIGHT-1M"] == "22"
    assert body["lastUpdateId"] == recorded["lastUpdateId"]
    assert body["bids"] == recorded["bids"][:5] and body["asks"] == recorded["asks"][:5]
    assert (await get_json(http, url, symbol="BTCUSDT"))[2] == {"code": -1121, "msg": "Invalid symbol."}
    status, _, body = await get_json(http, url)
    assert status == 400 and body["code"] == -1102
    status, _, body = await get_json(http, url, symbol="SUSHIUSDT", limit="7")
    assert status == 400 and body["code"] == -1130


async def test_rest_depth_follows_the_replay(make_exchange, http):
    exchange = await make_exchange()
    async with websockets.connect(exchange.stream_url(["ctkusdt@depth@100ms"]), max_queue=None) as ws:
        await recv_n(ws, len(data_of("ctkusdt@depth@100ms")))
        await exchange.wait_finished(5)
    recorded = json.loads(REST["/fapi/v1/depth?symbol=CTKUSDT&limit=1000"])
    bids = {p: q for p, q in recorded["bids"]}
    asks = {p: q for p, q in recorded["asks"]}
    for diff in data_of("ctkusdt@depth@100ms"):
        if diff["u"] >= recorded["lastUpdateId"]:
            for side, levels in ((bids, diff["b"]), (asks, diff["a"])):
                for price, qty in levels:
                    side.pop(price, None) if float(qty) == 0 else side.__setitem__(price, qty)
    status, _, body = await get_json(http, f"{exchange.rest_url}/fapi/v1/depth", symbol="CTKUSDT", limit="1000")
    assert status == 200
    assert body["lastUpdateId"] == data_of("ctkusdt@depth@100ms")[-1]["u"]
    assert dict(map(tuple, body["bids"])) == bids and dict(map(tuple, body["asks"])) == asks


async def test_rest_agg_trades_paging(make_exchange, http):
    exchange = await make_exchange(start="manual")  # REST answers from the whole session, replay or not
    url = f"{exchange.rest_url}/fapi/v1/aggTrades"
    for symbol in ("SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"):
        expected = [{k: d[k] for k in AGG_FIELDS} for d in data_of(f"{symbol.lower()}@aggTrade")]
        pages, from_id = [], expected[0]["a"]
        while True:
            status, headers, page = await get_json(http, url, symbol=symbol, fromId=str(from_id), limit="7")
            assert status == 200 and "X-MBX-USED-WEIGHT-1M" in headers
            if not page:
                break
            assert len(page) <= 7 and page[0]["a"] == from_id
            pages.append(page)
            from_id = page[-1]["a"] + 1
        got = [row for page in pages for row in page]
        assert got == expected
        assert len(pages) == -(-len(expected) // 7)
    status, _, latest = await get_json(http, url, symbol="SUSHIUSDT", limit="3")
    assert [r["a"] for r in latest] == [d["a"] for d in data_of("sushiusdt@aggTrade")[-3:]]
    assert (await get_json(http, url, symbol="NOPEUSDT"))[2]["code"] == -1121
    assert (await get_json(http, url, symbol="SUSHIUSDT", fromId="abc"))[2]["code"] == -1100


async def test_rest_agg_trades_limit_is_capped_at_1000(make_exchange, http):
    session = generate_session(seed=3, duration_s=30, trades_per_s=60, liquidations_per_min=0)
    exchange = await make_exchange(session=session, start="manual")
    first = next(f.payload["a"] for f in session.frames if f.event == "aggTrade")
    total = sum(1 for f in session.frames if f.event == "aggTrade")
    assert total > 1000
    for limit in ("1000", "5000"):
        _, _, page = await get_json(
            http, f"{exchange.rest_url}/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=str(first), limit=limit
        )
        assert [r["a"] for r in page] == list(range(first, first + 1000))


async def test_synthetic_session_rest_matches_its_streams(make_exchange, http):
    session = generate_session(seed=8, symbols=("ETHUSDT",), duration_s=2)
    exchange = await make_exchange(session=session)
    diffs = [f.payload for f in session.frames if f.event == "depthUpdate"]
    _, _, snap = await get_json(http, f"{exchange.rest_url}/fapi/v1/depth", symbol="ETHUSDT", limit="1000")
    assert diffs[0]["U"] <= snap["lastUpdateId"] <= diffs[0]["u"]  # the first diff straddles the snapshot
    bids, asks = {p: q for p, q in snap["bids"]}, {p: q for p, q in snap["asks"]}
    async with websockets.connect(exchange.stream_url(["ethusdt@depth@100ms"]), max_queue=None) as ws:
        streamed = [json.loads(m)["data"] for m in await recv_n(ws, len(diffs))]
    assert streamed == diffs
    for diff in streamed:  # a client syncing from that snapshot ends with the exchange's final book
        for side, levels in ((bids, diff["b"]), (asks, diff["a"])):
            for price, qty in levels:
                side.pop(price, None) if float(qty) == 0 else side.__setitem__(price, qty)
    await exchange.wait_finished(5)
    _, _, final = await get_json(http, f"{exchange.rest_url}/fapi/v1/depth", symbol="ETHUSDT", limit="1000")
    assert final["lastUpdateId"] == diffs[-1]["u"]
    assert dict(map(tuple, final["bids"])) == bids and dict(map(tuple, final["asks"])) == asks
    _, _, info = await get_json(http, f"{exchange.rest_url}/fapi/v1/exchangeInfo")
    assert [s["symbol"] for s in info["symbols"]] == ["ETHUSDT"] and info["symbols"][0]["pricePrecision"] == 2


async def test_rest_recorded_and_generated_endpoints(make_exchange, http):
    now = 1_700_000_123.456
    exchange = await make_exchange(wall_clock=lambda: now, start="manual")
    base = exchange.rest_url
    async with http.get(f"{base}/fapi/v1/exchangeInfo") as resp:
        assert await resp.text() == REST["/fapi/v1/exchangeInfo"]
    assert (await get_json(http, f"{base}/fapi/v1/time"))[2] == {"serverTime": int(now * 1000)}
    _, _, premium = await get_json(http, f"{base}/fapi/v1/premiumIndex", symbol="SUSHIUSDT")
    assert set(premium) == {
        "symbol",
        "markPrice",
        "indexPrice",
        "estimatedSettlePrice",
        "lastFundingRate",
        "interestRate",
        "nextFundingTime",
        "time",
    }
    assert all(isinstance(premium[k], str) for k in ("markPrice", "indexPrice", "lastFundingRate", "interestRate"))
    assert premium["nextFundingTime"] % (8 * 3_600_000) == 0 and premium["nextFundingTime"] > premium["time"]
    _, headers, everything = await get_json(http, f"{base}/fapi/v1/premiumIndex")
    assert {p["symbol"] for p in everything} == {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}
    _, _, oi = await get_json(http, f"{base}/fapi/v1/openInterest", symbol="CTKUSDT")
    assert oi["symbol"] == "CTKUSDT" and float(oi["openInterest"]) > 0 and oi["time"] == int(now * 1000)
    endpoints = {
        "openInterestHist": {"symbol", "sumOpenInterest", "sumOpenInterestValue", "CMCCirculatingSupply", "timestamp"},
        "globalLongShortAccountRatio": {"symbol", "longShortRatio", "longAccount", "shortAccount", "timestamp"},
        "topLongShortPositionRatio": {"symbol", "longShortRatio", "longAccount", "shortAccount", "timestamp"},
        "takerlongshortRatio": {"buySellRatio", "buyVol", "sellVol", "timestamp"},
    }
    for name, fields in endpoints.items():
        status, _, rows = await get_json(
            http, f"{base}/futures/data/{name}", symbol="SUSHIUSDT", period="5m", limit="3"
        )
        assert status == 200 and len(rows) == 3, name
        stamps = [r["timestamp"] for r in rows]
        assert stamps == [stamps[0], stamps[0] + 300_000, stamps[0] + 600_000] and stamps[-1] <= now * 1000
        assert all(s % 300_000 == 0 for s in stamps)
        for row in rows:
            assert set(row) == fields
            assert all(isinstance(v, str) for k, v in row.items() if k != "timestamp")
        status, _, body = await get_json(http, f"{base}/futures/data/{name}", symbol="SUSHIUSDT", period="7m")
        assert status == 400 and body["code"] == -1130
    _, _, funding = await get_json(http, f"{base}/fapi/v1/fundingRate", symbol="SUSHIUSDT", limit="2")
    assert [f["fundingTime"] % (8 * 3_600_000) for f in funding] == [0, 0]
    _, _, spot = await get_json(http, f"{base}/api/v3/ticker/bookTicker", symbol="SUSHIUSDT")
    assert float(spot["bidPrice"]) < float(spot["askPrice"])
    assert abs(float(spot["bidPrice"]) / float(premium["markPrice"]) - 1) < 0.01
    status, headers, coinbase = await get_json(http, f"{base}/products/SUSHI-USD/ticker")
    assert status == 200 and "X-MBX-USED-WEIGHT-1M" not in headers
    assert {"ask", "bid", "price", "size", "volume", "trade_id", "time"} <= set(coinbase)
    assert abs(float(coinbase["price"]) / float(premium["markPrice"]) - 1) < 0.01
    status, _, body = await get_json(http, f"{base}/products/BTC-USD/ticker")
    assert status == 404 and body == {"message": "NotFound"}


# -- faults ---------------------------------------------------------------------------------------
async def test_drop_after_frames_closes_the_socket(make_exchange, http):
    exchange = await make_exchange(faults={"drop_after_frames": 5})
    async with websockets.connect(exchange.stream_url(), max_queue=None) as ws:
        frames = await recv_n(ws, 5)
        assert frames == [text for _, text, _ in FRAMES[:5]]
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is None  # no close frame: an abrupt TCP close
    _, _, status = await get_json(http, f"{exchange.rest_url}/_control/status")
    assert status["drops"] == 1 and status["faults"]["drop_after_frames"] is None  # one-shot
    await exchange.wait_finished(5)
    async with websockets.connect(exchange.stream_url(["sushiusdt@aggTrade"])) as ws:  # reconnect works
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"result": ["sushiusdt@aggTrade"], "id": 1}


async def test_drop_now_via_control_api(make_exchange, http):
    exchange = await make_exchange(start="manual")
    async with websockets.connect(exchange.stream_url()) as ws:
        await asyncio.sleep(0.05)
        status, body = await post_faults(http, exchange, drop_now=True)
        assert status == 200 and body["dropped"] == 1
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    async with websockets.connect(exchange.stream_url()) as ws:
        await asyncio.sleep(0.05)
        await post_faults(http, exchange, drop_mode="ws_close", drop_now=True)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001


async def test_skip_creates_an_agg_id_gap_that_rest_fills(make_exchange, http):
    session = generate_session(seed=9, duration_s=3, trades_per_s=25, liquidations_per_min=0)
    exchange = await make_exchange(session=session, speed=3)
    stream = "btcusdt@aggTrade"
    all_ids = [f.payload["a"] for f in session.frames if f.stream == stream]
    received = []
    async with websockets.connect(exchange.stream_url([stream]), max_queue=None) as ws:
        received += [json.loads(m)["data"]["a"] for m in await recv_n(ws, 5)]
        status, body = await post_faults(http, exchange, skip_stream=stream, skip_frames=3)
        assert status == 200 and body["faults"]["skip_frames"] == 3
        await exchange.wait_finished(10)
        while True:
            try:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 0.2))["data"]["a"])
            except TimeoutError:
                break
    gaps = [(a, b) for a, b in itertools.pairwise(received) if b != a + 1]
    assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] == 4  # exactly three ids missing
    assert len(received) == len(all_ids) - 3
    missing_from = gaps[0][0] + 1
    _, _, fill = await get_json(
        http, f"{exchange.rest_url}/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=str(missing_from), limit="3"
    )
    assert [r["a"] for r in fill] == [missing_from, missing_from + 1, missing_from + 2]
    _, _, status = await get_json(http, f"{exchange.rest_url}/_control/status")
    assert status["frames_skipped"] == {stream: 3}


async def test_end_of_replay_marker_counts_every_message_sent_and_only_when_asked(make_exchange):
    exchange = await make_exchange(faults={"garbage_every": 10}, start="manual")
    stream = "sushiusdt@aggTrade"
    expected = [text for s, text, _ in FRAMES if s == stream]
    url = exchange.stream_url([stream])
    async with (
        websockets.connect(url + "&replayEnd=true", max_queue=None) as asking,
        websockets.connect(url, max_queue=None) as plain,
    ):
        await asyncio.sleep(0.1)  # both connected before the replay starts
        await asking.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))  # a reply is a message too
        await asyncio.sleep(0.1)
        exchange.start_replay()
        await exchange.wait_finished(10)
        got = await recv_n(asking, 1 + len(expected) + len(expected) // 10 + 1)
        await assert_quiet(asking, 0.2)
        plain_got = await recv_n(plain, len(expected) + len(expected) // 10)
        await assert_quiet(plain, 0.2)  # a client that did not ask gets no marker
    marker = json.loads(got[-1])
    assert marker["stream"] == "tapeflow@replayEnd" and marker["data"]["e"] == "replayEnd"
    assert marker["data"]["messages"] == len(got) - 1  # the reply, every frame and every garbage frame
    assert marker["data"]["frames"] == len(expected)
    assert all("tapeflow@replayEnd" not in m for m in plain_got)
    # a client connecting after the end gets the marker at once, with nothing before it
    async with websockets.connect(url + "&replayEnd=true", max_queue=None) as late:
        late_marker = json.loads(await asyncio.wait_for(late.recv(), 5))
    assert late_marker["data"]["messages"] == 0 and late_marker["data"]["frames_sent_total"] == 2 * len(expected)


async def test_garbage_frames_arrive_between_real_ones(make_exchange):
    exchange = await make_exchange(faults={"garbage_every": 10})
    stream = "sushiusdt@aggTrade"
    expected = [text for s, text, _ in FRAMES if s == stream]
    async with websockets.connect(exchange.stream_url([stream]), max_queue=None) as ws:
        frames = await recv_n(ws, len(expected) + len(expected) // 10)
        await exchange.wait_finished(5)
        await assert_quiet(ws, 0.2)
    real, not_json, odd_shape = [], [], []
    for frame in frames:
        try:
            doc = json.loads(frame)
        except ValueError:
            not_json.append(frame)
            continue
        if doc.get("stream") == stream and "a" in doc.get("data", {}):
            real.append(frame)
        else:
            odd_shape.append(doc)
    assert real == expected
    assert len(not_json) >= 1 and len(odd_shape) >= 1 and len(not_json) + len(odd_shape) == 4
    assert all(frames[i * 11 + 10] not in real for i in range(4))  # one garbage frame after every 10
    assert exchange.status()["garbage_sent"] == 4


async def test_delay_fault_holds_frames_back(make_exchange, http):
    exchange = await make_exchange(start="manual", faults={"delay_ms": 200})
    async with websockets.connect(exchange.stream_url(["sushiusdt@bookTicker"]), max_queue=None) as ws:
        t0 = time.perf_counter()
        async with http.post(f"{exchange.rest_url}/_control/start"):
            pass
        first = await asyncio.wait_for(ws.recv(), 5)
        waited = time.perf_counter() - t0
    assert first == next(text for s, text, _ in FRAMES if s == "sushiusdt@bookTicker")
    assert waited >= 0.2
    print(f"\nfirst frame with delay_ms=200 after {waited * 1000:.0f} ms")


async def test_rest_rate_limit_and_failure_faults(make_exchange, http):
    exchange = await make_exchange(start="manual")
    url = f"{exchange.rest_url}/fapi/v1/time"
    status, body = await post_faults(http, exchange, rest_429_count=2, retry_after_s=3)
    assert status == 200 and body["faults"]["rest_429_count"] == 2
    for _ in range(2):
        async with http.get(url) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "3"
            assert (await resp.json())["code"] == -1003
            assert "X-MBX-USED-WEIGHT-1M" in resp.headers
    assert (await get_json(http, f"{exchange.rest_url}/_control/status"))[0] == 200  # control is exempt
    assert (await get_json(http, url))[0] == 200  # recovered
    await post_faults(http, exchange, rest_418_count=1)
    async with http.get(url) as resp:
        assert resp.status == 418 and "Retry-After" in resp.headers
    assert (await get_json(http, url))[0] == 200
    await post_faults(http, exchange, rest_fail_for_s=0.3)
    status, _, body = await get_json(http, f"{exchange.rest_url}/fapi/v1/depth", symbol="SUSHIUSDT")
    assert status == 503 and body["code"] == -1001
    await asyncio.sleep(0.35)
    assert (await get_json(http, url))[0] == 200


async def test_weight_limit_answers_429(make_exchange, http):
    exchange = await make_exchange(start="manual", weight_limit_1m=45, wall_clock=lambda: 1_700_000_010.0)
    url = f"{exchange.rest_url}/fapi/v1/aggTrades"
    statuses = [(await get_json(http, url, symbol="SUSHIUSDT", limit="1"))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]  # 20 + 20 <= 45 < 60


async def test_invalid_fault_update_is_rejected(make_exchange, http):
    exchange = await make_exchange(start="manual")
    status, body = await post_faults(http, exchange, skip_frames=-2)
    assert status == 400 and "error" in body
    status, body = await post_faults(http, exchange, bogus=1)
    assert status == 400
    assert exchange.status()["faults"]["skip_frames"] == 0


# -- speed, lifecycle, CLI ------------------------------------------------------------------------
async def test_speed_ten_sleeps_a_tenth_of_the_recorded_time(make_exchange):
    session = generate_session(seed=4, duration_s=2, trades_per_s=2, liquidations_per_min=0)
    exchange = await make_exchange(session=session, speed=10)
    expected = [f.combined_text() for f in session.frames]
    t0 = time.perf_counter()
    async with websockets.connect(exchange.stream_url(), max_queue=None) as ws:
        got = await recv_n(ws, len(expected))
        await exchange.wait_finished(5)
    elapsed = time.perf_counter() - t0
    assert got == expected
    replay_span = exchange.state.finished_at - exchange.state.started_at
    assert replay_span >= session.duration_s / 10  # the schedule never runs ahead of the scaled clock
    print(
        f"\nspeed 10: {session.duration_s:.2f} s session replayed in {replay_span:.3f} s (client saw {elapsed:.3f} s)"
    )


async def test_stop_is_clean(make_exchange):
    exchange = await make_exchange(start="manual")
    ws = await websockets.connect(exchange.stream_url())
    await asyncio.sleep(0.05)
    await exchange.stop()
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    await ws.close()
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("fake-exchange")]
    assert leftovers == []
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", exchange.rest_port)


async def test_module_entry_point_serves_and_exits_on_sigterm(http):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fake_exchange",
        "--recording",
        str(DATA),
        "--speed",
        "max",
        "--fault",
        "rest_429_count=1",
        "--log-level",
        "WARNING",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        urls = json.loads(line)
        assert (await get_json(http, urls["rest_url"] + "/fapi/v1/time"))[0] == 429
        status, _, body = await get_json(http, urls["rest_url"] + "/fapi/v1/time")
        assert status == 200 and "serverTime" in body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


# -- history for warm starts: Vision archives, REST history, as-of answers ---------------------------
async def test_history_is_served_by_vision_and_rest_but_not_replayed(make_exchange, http):
    import hashlib
    import io
    import zipfile

    session = generate_session(
        seed=4,
        symbols=("BTCUSDT",),
        duration_s=2 * 86_400 + 600,
        trades_per_s=0.02,
        depth_interval_ms=60_000,
        start_time=1_699_920_000.0,
    )  # 2023-11-14 00:00 UTC
    trades = [f.payload for f in session.frames if f.event == "aggTrade"]
    history_s = 2 * 86_400 + 300  # the replay begins on day 3, five minutes in
    exchange = await make_exchange(
        session=session, start="manual", history_s=history_s, aggtrades_visibility="replayed", rest_clock="recording"
    )
    base = f"{exchange.rest_url}/data/futures/um/daily/aggTrades/BTCUSDT/"
    day1 = [t for t in trades if t["T"] < 1_699_920_000_000 + 86_400_000]
    async with http.get(base + "BTCUSDT-aggTrades-2023-11-14.zip") as resp:
        assert resp.status == 200
        body = await resp.read()
    async with http.get(base + "BTCUSDT-aggTrades-2023-11-14.zip.CHECKSUM") as resp:
        digest, name = (await resp.text()).split()
    assert digest == hashlib.sha256(body).hexdigest() and name == "BTCUSDT-aggTrades-2023-11-14.zip"
    rows = zipfile.ZipFile(io.BytesIO(body)).read("BTCUSDT-aggTrades-2023-11-14.csv").decode().splitlines()
    assert rows[0] == "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker"
    assert [int(r.split(",")[0]) for r in rows[1:]] == [t["a"] for t in day1]
    async with http.get(base + "BTCUSDT-aggTrades-2023-11-16.zip") as resp:
        assert resp.status == 404  # today: not published before the day is over
    # REST pages the history up to "now" (the replay's start), nothing after it
    status, _, page = await get_json(
        http, f"{exchange.rest_url}/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=day1[-1]["a"] + 1, limit=1000
    )
    cut = session.frames[0].receive_time + history_s
    seen = [f.payload["a"] for f in session.frames if f.event == "aggTrade" and f.receive_time < cut]
    assert status == 200 and [r["a"] for r in page] == seen[len(day1) :][:1000]
    status, _, tail = await get_json(
        http, f"{exchange.rest_url}/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=seen[-1], limit=1000
    )
    assert [r["a"] for r in tail] == [seen[-1]]  # the next trade is not visible before it is replayed
    # the history endpoints end at "now" too, and their rows do not depend on when they are asked
    now = int(
        session.frames[next(i for i, f in enumerate(session.frames) if f.receive_time >= cut) - 1].receive_time * 1000
    )
    status, _, hist = await get_json(
        http,
        f"{exchange.rest_url}/futures/data/openInterestHist",
        symbol="BTCUSDT",
        period="5m",
        startTime=now - 3_600_000,
        limit=500,
    )
    assert status == 200 and len(hist) == 12 and hist[-1]["timestamp"] <= now
    status, _, klines = await get_json(
        http,
        f"{exchange.rest_url}/fapi/v1/markPriceKlines",
        symbol="BTCUSDT",
        interval="1m",
        startTime=now - 600_000,
        limit=1500,
    )
    marks = [f.payload for f in session.frames if f.event == "markPriceUpdate"]
    assert status == 200 and len(klines) == 10 and klines[-1][0] <= now
    first = next(m for m in marks if m["E"] >= klines[0][0])
    assert klines[0][1] == first["p"]  # the open is the interval's first mark price
    exchange.start_replay()
    await exchange.wait_finished(30)
    status, _, later = await get_json(
        http,
        f"{exchange.rest_url}/futures/data/openInterestHist",
        symbol="BTCUSDT",
        period="5m",
        startTime=now - 3_600_000,
        limit=12,
    )
    assert later == hist


async def test_a_slow_vision_link_delays_every_archive_answer_and_changes_no_byte(make_exchange, http):
    """`vision_delay_ms` (a slow download link): each archive and checksum answer leaves that much
    later, with the same bytes; switched off, answers come at once again."""
    import time as _time

    session = generate_session(
        seed=4,
        symbols=("BTCUSDT",),
        duration_s=86_400 + 600,
        trades_per_s=0.01,
        depth_interval_ms=60_000,
        start_time=1_699_920_000.0,
    )
    exchange = await make_exchange(
        session=session, start="manual", history_s=86_400 + 300, aggtrades_visibility="replayed", rest_clock="recording"
    )
    url = f"{exchange.rest_url}/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-2023-11-14.zip"

    async def timed(suffix: str = "") -> tuple[float, bytes]:
        began = _time.monotonic()
        async with http.get(url + suffix) as resp:
            assert resp.status == 200
            return _time.monotonic() - began, await resp.read()

    _, body = await timed()
    exchange.set_faults(vision_delay_ms=400)
    slow, slow_body = await timed()
    slow_sum, digest = await timed(".CHECKSUM")
    assert (
        slow >= 0.4
        and slow_sum >= 0.4
        and slow_body == body
        and digest.split()[0].decode() == __import__("hashlib").sha256(body).hexdigest()
    )
    assert exchange.set_faults(vision_delay_ms=0).vision_delay_ms == 0
    assert (await timed())[1] == body


async def test_rest_answers_as_of_a_clients_clock(make_exchange, http):
    session = generate_session(seed=6, symbols=("BTCUSDT",), duration_s=120)
    mid = session.frames[len(session.frames) // 2]
    as_of = {"X-Tapeflow-As-Of": str(mid.payload["E"])}
    exchange = await make_exchange(session=session, start="manual")

    async def ask(path, **params):
        async with http.get(f"{exchange.rest_url}{path}", params=params, headers=as_of) as resp:
            return resp.status, await resp.json(content_type=None)

    before = [
        await ask("/fapi/v1/depth", symbol="BTCUSDT", limit=1000),
        await ask("/fapi/v1/premiumIndex", symbol="BTCUSDT"),
        await ask("/fapi/v1/time"),
    ]
    exchange.start_replay()
    await exchange.wait_finished(30)
    after = [
        await ask("/fapi/v1/depth", symbol="BTCUSDT", limit=1000),
        await ask("/fapi/v1/premiumIndex", symbol="BTCUSDT"),
        await ask("/fapi/v1/time"),
    ]
    assert before == after  # the same answers before and after the replay ran past that time
    depth = before[0][1]
    diffs = [f.payload for f in session.frames if f.event == "depthUpdate" and f.payload["E"] <= mid.payload["E"]]
    assert depth["lastUpdateId"] == diffs[-1]["u"]  # the book after the last diff at or before the clock
    assert before[2][1]["serverTime"] == mid.payload["E"]
