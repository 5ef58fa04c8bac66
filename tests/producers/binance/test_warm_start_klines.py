"""The warm start from minute bars: 1m klines for all but the last `detail_minutes` of the window
and trades one by one only after, so its REST cost does not grow with the hour of the UTC day.

In process against the fake exchange (a 10-minute generated session, 6 minutes of history) and the test
broker: the window's minutes before the detail span arrive on md.indicators as `kline_1m` records whose
bought and sold volume, trade count and OHLC are those of the session's trades of the minute (computed
here from the session's frames), each before the first detail trade; md.trades holds the detail span
and the live stream, once each, and nothing before."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import pytest

from fake_exchange.exchange import serve
from fake_exchange.replay import history_end
from fake_exchange.synthetic import generate_session
from producers.binance.rest import RestClient
from producers.binance.warm_start import WarmStart, WarmStartConfig
from producers.metrics import ProducerMetrics
from schemas.catalogue import ENGINE_INPUTS
from tapeflow_runtime.progress import ProgressMarkers
from tests.producers.binance.test_warm_start_unreachable import HISTORY_S, SPEC, _fake_config, _producer

pytestmark = pytest.mark.integration


async def test_minutes_before_the_detail_span_come_as_klines_and_trades_only_after(
    kafka_bootstrap, topic_prefix, read_topic
):
    session = generate_session(SPEC)
    fake = await serve(_fake_config(session))
    producer = _producer(kafka_bootstrap, topic_prefix, fake.rest_url, fake.ws_url)
    producer.config.warm_start = WarmStartConfig(
        hours=HISTORY_S / 3600 - 0.01, vision_url=fake.rest_url, detail_minutes=2.0
    )
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    try:
        assert await asyncio.wait_for(task, 120) == "replay-finished"
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()
    warm = producer.warm_start
    now_ms = session.frames[0].receive_time * 1000 + HISTORY_S * 1000  # about: the fake's "now" at the start
    indicators = [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + "md.indicators", settled=True)]
    bars = [r for r in indicators if r["kind"] == "kline_1m"]
    trades = [
        r["value"]
        for r in read_topic(kafka_bootstrap, topic_prefix + "md.trades", settled=True)
        if "agg_id" in r["value"]
    ]
    detail_start = trades[0]["trade_time"] // 60_000 * 60_000
    assert warm.progress["BTCUSDT"].minute_bars == len(bars) >= 3
    assert [b["event_time"] for b in bars] == list(range(bars[0]["event_time"], detail_start, 60_000))
    assert abs(detail_start - (now_ms - 120_000)) <= 60_000
    session_trades = [f.payload for f in session.frames if f.event == "aggTrade"]
    for bar in bars:
        mine = [t for t in session_trades if bar["event_time"] <= t["T"] < bar["event_time"] + 60_000]
        x = bar["extra"]
        assert x["trades"] == len(mine) and bar["value"] == x["close"] == float(mine[-1]["p"])
        assert Decimal(str(x["buy_volume"])) == sum(Decimal(t["q"]) for t in mine if not t["m"])
        assert Decimal(str(x["sell_volume"])) == sum(Decimal(t["q"]) for t in mine if t["m"])
        assert (x["open"], x["high"], x["low"]) == (
            float(mine[0]["p"]),
            max(float(t["p"]) for t in mine),
            min(float(t["p"]) for t in mine),
        )
        assert bar["receive_time"] == bar["event_time"] + 59_999
    # trades: from the detail span's first on, once each, to the session's end; none before it
    ids = [t["agg_id"] for t in trades]
    assert ids == list(range(ids[0], session_trades[-1]["a"] + 1))
    first_detail = next(t for t in session_trades if t["T"] >= detail_start)
    assert ids[0] == first_detail["a"]
    # and the REST weight: one klines request (10), a few aggTrades pages, no 429
    status = fake.status()
    assert status["rest_http_429"] == 0 and status["rest_max_weight_1m"] < 200


async def test_a_restarted_stack_whose_topics_hold_the_detail_span_primes_nothing(kafka_bootstrap, topic_prefix):
    """After a start from minute bars md.trades holds trades only from the detail span on: the check of a
    restarted producer asks for that span (it asked for the window's start, so every restart primed the
    25 h again), and with the trades there nothing is fetched."""
    session = generate_session(SPEC)
    fake = await serve(_fake_config(session))
    producer = _producer(kafka_bootstrap, topic_prefix, fake.rest_url, fake.ws_url)  # its publisher
    asked: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:
            warm = WarmStart(
                WarmStartConfig(hours=0.09, detail_minutes=2.0),
                RestClient(http, ProducerMetrics()),
                fake.rest_url,
                producer.publisher,
                ProgressMarkers(producer.publisher, "warm-start", ENGINE_INPUTS),
                ["BTCUSDT"],
                in_topics=lambda symbol, since: asked.append(since) or True,
            )
            assert await warm.run() == {}
    finally:
        await fake.stop()
    now_ms = int(session.frames[history_end_index(session)].receive_time * 1000)  # the fake's "now" (rest clock)
    assert asked == [(now_ms - 120_000) // 60_000 * 60_000]  # the detail span's start, not the window's
    assert warm.progress["BTCUSDT"].source == "already in md.trades" and fake.status()["rest_requests"] == 1


def history_end_index(session) -> int:
    """The last history frame: before the replay starts, the fake's REST clock reads its time."""
    return max(0, history_end(session.frames, HISTORY_S) - 1)
