"""`tapeflow backtest --warm-start-approximation`: a backtest that starts the way the live warm
start does computes, at the first valid evaluation, exactly what the warm-started engine computes.

Live side: the producer's warm start (`WarmStart`, in process) against the fake exchange serving a
generated session (80 minutes of history, 1 trade/s), priming 75 minutes with the default 62 minutes of
detail: 1m klines, then REST aggTrades, marks and the history series, published to the test broker;
the engine over what it published (`--source topics`, the records a stack's engine consumed).

Backtest side: the session's trades, every one (what a stack that had been running stored), and the
warm start's marks and series in PostgreSQL (the sink's table writer); `--source db` from the window's
start wrapped in `WarmStartApproximation`, which takes the live warm start's own span and makes its minute
bars from the stored trades with `minute_bars_from_trades`.

The window starts 30 s into a minute (the first 1m kline holds that whole minute) and the feature records
are compared field by field with `==`: every input, `approx_until_ms` (the coverage record) included.
Without the approximation the same backtest differs only in what `approx_until_ms` says is approximated
(`tests/stream_apps/core/test_minute_bars.py` checks that for the engine itself over a 26-hour session)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from backtest.runner import BacktestRunner
from backtest.sources.database import DatabaseSource
from backtest.sources.topics import TopicSource
from backtest.sources.warm_start import WarmStartApproximation, approximation_span
from fake_exchange.config import FakeExchangeConfig
from fake_exchange.exchange import serve
from fake_exchange.synthetic import SyntheticSpec, generate_session
from producers.binance.rest import RestClient
from producers.binance.warm_start import WarmStart, WarmStartConfig
from producers.metrics import ProducerMetrics
from schemas.catalogue import ENGINE_INPUTS
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.features import DETAIL_NEEDED_MS
from stream_apps.core.strategy import parse_strategy
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.progress import ProgressMarkers
from tapeflow_runtime.publisher import Publisher
from tests.stream_apps.core.test_minute_bars import APPROXIMATED
from tests.support.stored_sources import store_rows

pytestmark = pytest.mark.integration

START_S = 1_700_049_630.0  # 2023-11-15 12:00:30 UTC
HISTORY_S = 80 * 60
HOURS, DETAIL_MIN = 1.25, 62.0
SPEC = SyntheticSpec(
    seed=37,
    symbols=("BTCUSDT",),
    duration_s=HISTORY_S + 30,
    trades_per_s=1.0,
    depth_interval_ms=5_000,
    mark_interval_s=5,
    book_ticker=False,
    binance_stream_names=True,
    liquidations_per_min=0.0,
    start_time=START_S,
)
STRATEGY = parse_strategy(
    {
        "name": "warm_parity",
        "version": "1",
        "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
        "warmup": "1h",
        "weights": {"direction": 55, "crowding": 0, "environment": 0, "auxiliary": 0},
        "thresholds": {"entry": 40, "heavy": 50, "flip": 50},
        "cooldown": "10m",
        "exits": {"sl_atr_mult": 1.0, "tp1_r": 0.5, "tp2_r": 1.0, "timeout_min": 30},
    }
)


async def _warm_start(bootstrap: str, prefix: str, session) -> WarmStart:
    fake = await serve(
        FakeExchangeConfig(
            session=session, speed="max", history_s=HISTORY_S, rest_clock="recording", aggtrades_visibility="replayed"
        )
    )
    ensure_topics(bootstrap, prefix=prefix)
    metrics = ProducerMetrics()
    publisher = Publisher(bootstrap, AvroSerde(FileSchemaRegistry(), strict=True), metrics, topic_prefix=prefix)
    try:
        async with aiohttp.ClientSession() as http:
            warm = WarmStart(
                WarmStartConfig(hours=HOURS, detail_minutes=DETAIL_MIN),
                RestClient(http, metrics),
                fake.rest_url,
                publisher,
                ProgressMarkers(publisher, "warm-start", ENGINE_INPUTS),
                ["BTCUSDT"],
            )
            await warm.run()
    finally:
        await fake.stop()
    return warm


def _valid_features(source) -> dict[int, dict]:
    """The feature records (by evaluation time) of the evaluations past the warm-up."""
    out: dict[int, dict] = {}

    def keep(table) -> None:
        for record in table.records():
            if record["block_reason"] != "warmup":
                out[record["eval_time"]] = record

    BacktestRunner([STRATEGY], on_features=keep).run(source)
    return out


def test_the_backtest_with_the_approximation_computes_what_the_warm_started_engine_computed(
    kafka_bootstrap, topic_prefix, database, read_topic
):
    session = generate_session(SPEC)
    warm = asyncio.run(_warm_start(kafka_bootstrap, topic_prefix, session))
    span = warm.span
    assert warm.progress["BTCUSDT"].phase == "done" and warm.progress["BTCUSDT"].minute_bars >= 10
    assert span.bars_from_ms < span.since_ms  # the first kline holds the minute the window starts in

    live = _valid_features(
        TopicSource(kafka_bootstrap, ["BTCUSDT"], span.bars_from_ms, span.now_ms, topic_prefix=topic_prefix)
    )

    trades = [
        {
            "exchange": "binance",
            "symbol": t["s"],
            "agg_id": t["a"],
            "price": float(t["p"]),
            "qty": float(t["q"]),
            "first_trade_id": t["f"],
            "last_trade_id": t["l"],
            "event_time": t["E"],
            "trade_time": t["T"],
            "receive_time": t["T"],
            "taker_side": "SELL" if t["m"] else "BUY",
        }
        for t in (f.payload for f in session.frames if f.event == "aggTrade")
    ]
    published = {
        topic: [r["value"] for r in read_topic(kafka_bootstrap, topic_prefix + topic, settled=True)]
        for topic in ("md.mark", "md.indicators")
    }
    bars = [r for r in published["md.indicators"] if r["kind"] == "kline_1m"]
    published["md.indicators"] = [r for r in published["md.indicators"] if r["kind"] != "kline_1m"]
    assert len(bars) == len(span.bar_minutes()) and published["md.mark"] and published["md.indicators"]
    store_rows(database, {"md.trades": trades, **published})

    approximation = approximation_span(span.since_ms, HOURS, DETAIL_MIN)
    assert approximation == span  # the live warm start's own span
    source = WarmStartApproximation(
        DatabaseSource(database, ["BTCUSDT"], span.bars_from_ms, span.now_ms), approximation
    )
    backtest = _valid_features(source)
    assert source.bars == len(bars)
    assert "minute bars" in source.report.notes["trades"] and "approx_until_ms" in source.report.notes["trades"]

    # valid once trades cover the 1-hour window and its slope steps after the bars: the same first evaluation
    first = min(live)
    assert len(live) > 30  # valid evaluations from the first until the live start
    assert span.detail_from_ms + DETAIL_NEEDED_MS <= first < span.now_ms and first == min(backtest)
    assert live[first]["inputs"]["approx_until_ms"] == span.detail_from_ms
    assert backtest[first] == live[first]  # bit for bit: every input, the coverage record, score and reason
    assert sorted(backtest) == sorted(live) and all(backtest[t] == live[t] for t in live)

    # without the approximation (every stored trade from the same minute on) only what the record says is
    # approximated differs, and that record is absent
    every_trade = _valid_features(DatabaseSource(database, ["BTCUSDT"], span.bars_from_ms, span.now_ms))
    assert set(live) <= set(every_trade)
    differs = set()
    for t in live:
        a, b = every_trade[t]["inputs"], live[t]["inputs"]
        assert "approx_until_ms" not in a and set(a) | {"approx_until_ms"} == set(b)
        differs |= {name for name in a if a[name] != b[name]}
    assert differs <= APPROXIMATED and differs, differs
