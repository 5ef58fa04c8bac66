"""An exchange that cannot be reached, or refuses this machine, during the warm start.

Found by a new user on a machine without network: the warm start's first request failed for two minutes
while `status` said `ok priming ... waiting`, then the producer died with a traceback and was restarted
in a loop. Now each way of failing (a name that does not resolve, a refused connection, HTTP 451 for a
restricted location, 403 for a blocked client) is one line that says what to do, shown as the status
word `unreachable` or `restricted` (the producer's /health, what `tapeflow status` and the foreground
`up` print), retried with backoff in the process, and the warm start completes once the exchange
answers: every trade of the window published once, then the live stream.

In process against the fake exchange (a 10-minute generated session: 6 minutes of history, the
rest streamed at `max`) and the test broker; the backoff is shortened to tenths of a second.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from fake_exchange.config import FakeExchangeConfig
from fake_exchange.exchange import serve
from fake_exchange.replay import history_end
from fake_exchange.synthetic import SyntheticSpec, generate_session
from producers.binance.producer import BinanceProducer, ProducerConfig
from producers.binance.warm_start import WarmStartConfig
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.publisher import Publisher
from tests.support.staging import until

pytestmark = pytest.mark.integration

START_S = 1_700_049_600.0  # 2023-11-15 12:00 UTC: the window stays inside one UTC day (REST only)
HISTORY_S = 360.0
SPEC = SyntheticSpec(
    seed=37,
    symbols=("BTCUSDT",),
    duration_s=600,
    trades_per_s=2.0,
    depth_interval_ms=5_000,
    mark_interval_s=5,
    book_ticker=False,
    binance_stream_names=True,
    start_time=START_S,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_config(session, rest_port: int = 0, ws_port: int = 0, **faults) -> FakeExchangeConfig:
    return FakeExchangeConfig(
        session=session,
        speed="max",
        history_s=HISTORY_S,
        rest_clock="recording",
        aggtrades_visibility="replayed",
        rest_port=rest_port,
        ws_port=ws_port,
        faults=faults,
    )


def _producer(bootstrap: str, prefix: str, rest_url: str, ws_url: str) -> BinanceProducer:
    ensure_topics(bootstrap, prefix=prefix)
    metrics = ProducerMetrics()
    publisher = Publisher(bootstrap, AvroSerde(FileSchemaRegistry(), strict=True), metrics, topic_prefix=prefix)
    warm = WarmStartConfig(
        hours=HISTORY_S / 3600 - 0.01, vision_url=rest_url, retry_first_s=0.05, retry_max_s=0.2, request_budget_s=0.5
    )
    return BinanceProducer(
        ProducerConfig(
            symbols=["BTCUSDT"],
            ws_base_url=ws_url,
            rest_base_url=rest_url,
            spot_base_url=rest_url,
            coinbase_base_url=rest_url,
            replay_control_url=rest_url,
            warm_start=warm,
            poll_interval_s=0.0,
        ),
        publisher,
        metrics,
    )


def _assert_one_line(producer: BinanceProducer, word: str, *needles: str) -> None:
    health = producer.health()
    assert health["status"] == word and health["priming"] is True
    detail = health["detail"]
    assert "\n" not in detail and "Traceback" not in detail
    for needle in ("tapeflow up --source replay:DIR", "--rest-url", *needles):
        assert needle in detail, (needle, detail)


async def _complete(
    producer: BinanceProducer, task: asyncio.Task, session, read_topic, bootstrap: str, prefix: str
) -> None:
    """The warm start finished and the replay ended: every trade of the session published exactly once."""
    assert await asyncio.wait_for(task, 120) == "replay-finished"
    assert producer.warm_start is not None and producer.warm_start.done
    assert all(p.phase == "done" for p in producer.warm_start.progress.values())
    trades = [r["value"] for r in read_topic(bootstrap, prefix + "md.trades", settled=True) if "agg_id" in r["value"]]
    ids = [r["agg_id"] for r in trades]
    session_ids = [f.payload["a"] for f in session.frames if f.event == "aggTrade"]
    assert ids == list(range(ids[0], session_ids[-1] + 1))  # once each, in order, no hole to the end
    live_ms = session.frames[history_end(session.frames, HISTORY_S)].receive_time * 1000
    assert trades[0]["trade_time"] <= live_ms - 300_000  # the history came first (5 of the 6 minutes at least)


async def test_a_refused_connection_says_unreachable_then_the_warm_start_completes(
    kafka_bootstrap, topic_prefix, read_topic
):
    session = generate_session(SPEC)
    rest_port, ws_port = _free_port(), _free_port()
    producer = _producer(kafka_bootstrap, topic_prefix, f"http://127.0.0.1:{rest_port}", f"ws://127.0.0.1:{ws_port}")
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    fake = None
    try:
        await until(lambda: producer.status.state == "unreachable" or task.done(), 60)
        _assert_one_line(producer, "unreachable", f"127.0.0.1:{rest_port}", "ClientConnectorError")
        await until(lambda: producer.warm_start.retries >= 3 or task.done(), 30)
        assert not task.done()  # retried, not crashed
        fake = await serve(_fake_config(session, rest_port, ws_port))  # the exchange answers again
        assert producer.warm_start.retries >= 3
        await _complete(producer, task, session, read_topic, kafka_bootstrap, topic_prefix)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        if fake is not None:
            await fake.stop()


@pytest.mark.parametrize(("status", "needle"), [(451, "HTTP 451"), (403, "HTTP 403")])
async def test_a_restricted_location_or_blocked_client_says_restricted_then_the_warm_start_completes(
    kafka_bootstrap, topic_prefix, read_topic, status, needle
):
    session = generate_session(SPEC)
    fake = await serve(_fake_config(session, rest_fail_for_s=3.0, rest_fail_status=status))
    producer = _producer(kafka_bootstrap, topic_prefix, fake.rest_url, fake.ws_url)
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    try:
        await until(lambda: producer.status.state == "restricted" or task.done(), 60)
        _assert_one_line(producer, "restricted", needle, "use a venue you may use")
        await _complete(
            producer, task, session, read_topic, kafka_bootstrap, topic_prefix
        )  # once the window has passed
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()


async def test_a_name_that_does_not_resolve_says_unreachable_and_stops_cleanly(kafka_bootstrap, topic_prefix):
    producer = _producer(
        kafka_bootstrap, topic_prefix, "http://fapi.tapeflow-test.invalid", "ws://fapi.tapeflow-test.invalid"
    )
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    try:
        await until(lambda: producer.status.state == "unreachable" or task.done(), 60)
        _assert_one_line(producer, "unreachable", "fapi.tapeflow-test.invalid")
        await until(lambda: producer.warm_start.retries >= 2 or task.done(), 30)
        assert not task.done()
    finally:
        stop.set()
    assert await asyncio.wait_for(task, 30) == "stopped"


async def test_a_429_and_418_storm_during_the_warm_start_ends_with_the_whole_history_and_nothing_sent_in_a_ban(
    kafka_bootstrap, topic_prefix, read_topic
):
    session = generate_session(SPEC)
    fake = await serve(_fake_config(session, rest_429_count=4, rest_418_count=2, retry_after_s=1))
    producer = _producer(kafka_bootstrap, topic_prefix, fake.rest_url, fake.ws_url)
    stop = asyncio.Event()
    task = asyncio.create_task(producer.run(stop))
    try:
        await _complete(producer, task, session, read_topic, kafka_bootstrap, topic_prefix)
        status = fake.status()
        assert (status["rest_http_429"], status["rest_http_418"], status["rest_requests_in_ban"]) == (4, 2, 0)
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await fake.stop()
