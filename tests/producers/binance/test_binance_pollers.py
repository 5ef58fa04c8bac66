"""The md.indicators REST pollers, against the fake exchange over real HTTP on 127.0.0.1.

Expected values are read straight from the bodies the fake serves (fetched here independently of the
poller; the fake's clock is frozen so both see the same bodies) and premiums are recomputed here from
the two prices; the pure parse functions are checked on literal bodies with hand-computed results.
Every published record goes through the strict Avro serde and back.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web

from fake_exchange import FakeExchange, FakeExchangeConfig, generate_session
from producers.binance.indicator_parse import (
    IndicatorParseError,
    PricePoint,
    coinbase_last_price,
    coinbase_premium,
    parse_funding_rate,
    parse_long_short_account_ratio,
    parse_open_interest,
    parse_open_interest_hist,
    parse_taker_buy_sell_ratio,
    parse_top_trader_position_ratio,
    perp_mark_price,
    spot_mid_price,
    spot_perp_divergence,
)
from producers.binance.pollers import IndicatorPoller
from producers.binance.rest import RestClient
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde

pytestmark = pytest.mark.timeout(60)

NOW = 1_700_000_123.456  # the fake exchange's frozen wall clock
NOW_MS = 1_700_000_123_456
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
HISTORY = 3
SERIES_KINDS = ("open_interest_hist", "long_short_account_ratio", "top_trader_position_ratio", "taker_buy_sell_ratio")
POINT_KINDS = ("funding_rate", "spot_perp_divergence", "open_interest")
SERDE = AvroSerde(FileSchemaRegistry(), strict=True)


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture
async def exchange_clock():
    """A mutable frozen clock for the fake exchange: tests move it by hand."""
    return [NOW]


@pytest.fixture
async def exchange(exchange_clock):
    session = generate_session(seed=5, symbols=SYMBOLS, duration_s=2)
    config = FakeExchangeConfig(session=session, speed="max", start="manual", weight_limit_1m=1_000_000)
    fake = await FakeExchange(config, wall_clock=lambda: exchange_clock[0]).start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


class Published:
    """The poller's publish callable: strict Avro encode + decode, then keep the record."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict, int]] = []

    def __call__(self, topic: str, key: str, record: dict, receive_time_ms: int) -> None:
        decoded = SERDE.decode(SERDE.encode(topic, record), topic=topic)
        assert decoded == record
        self.records.append((topic, key, record, receive_time_ms))

    def by(self, symbol: str, kind: str) -> list[dict]:
        return [r for _, _, r, _ in self.records if r["symbol"] == symbol and r["kind"] == kind]

    def pairs(self) -> set[tuple[str, str]]:
        return {(r["symbol"], r["kind"]) for _, _, r, _ in self.records}


@pytest.fixture
def make_poller(exchange, http):
    def make(*, base_urls: dict[str, str] | None = None, **kwargs):
        metrics = kwargs.pop("metrics", None) or ProducerMetrics()
        published = Published()
        urls = {"futures_url": exchange.rest_url, "spot_url": exchange.rest_url, "coinbase_url": exchange.rest_url}
        urls.update(base_urls or {})
        kwargs.setdefault("stagger_s", 0.0)
        poller = IndicatorPoller(
            RestClient(http, metrics, give_up_after_s=1.0, max_backoff_s=0.2),
            symbols=SYMBOLS,
            publish=published,
            metrics=metrics,
            history_limit=HISTORY,
            **urls,
            **kwargs,
        )
        return poller, published, metrics

    return make


async def fetch(http, url: str, **params):
    async with http.get(url, params=params) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json(content_type=None)


async def set_faults(http, exchange, **changes):
    async with http.post(f"{exchange.rest_url}/_control/faults", json=changes) as resp:
        assert resp.status == 200, await resp.text()


def errors(metrics: ProducerMetrics, endpoint: str) -> float:
    return metrics.registry.get_sample_value("tapeflow_producer_poll_errors_total", {"endpoint": endpoint}) or 0.0


def all_errors(metrics: ProducerMetrics) -> dict[str, float]:
    return {
        s.labels["endpoint"]: s.value
        for m in metrics.registry.collect()
        if m.name == "tapeflow_producer_poll_errors"
        for s in m.samples
        if s.name.endswith("_total") and s.value
    }


def full_tick_pairs() -> set[tuple[str, str]]:
    pairs = {(s, k) for s in SYMBOLS for k in POINT_KINDS + SERIES_KINDS}
    return pairs | {("BTCUSDT", "coinbase_premium"), ("ETHUSDT", "coinbase_premium")}


# -- pure parsing on literal bodies -------------------------------------------------------------------
def test_point_bodies_parse_to_hand_checked_records():
    # Binance's documented openInterest example
    [oi] = parse_open_interest({"openInterest": "10659.509", "symbol": "BTCUSDT", "time": 1589437530011}, "BTCUSDT", 7)
    assert oi == {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "kind": "open_interest",
        "value": 10659.509,
        "period": None,
        "extra": {},
        "event_time": 1589437530011,
        "receive_time": 7,
    }
    premium_index = {
        "symbol": "BTCUSDT",
        "markPrice": "11793.63104562",
        "indexPrice": "11781.80495970",
        "estimatedSettlePrice": "11781.16138815",
        "lastFundingRate": "0.00038246",
        "interestRate": "0.00010000",
        "nextFundingTime": 1597392000000,
        "time": 1597370495002,
    }
    [funding] = parse_funding_rate(premium_index, "BTCUSDT", 9)
    assert funding["kind"] == "funding_rate" and funding["value"] == 0.00038246
    assert funding["event_time"] == 1597370495002 and funding["period"] is None
    assert funding["extra"] == {
        "mark_price": 11793.63104562,
        "index_price": 11781.8049597,
        "next_funding_time": 1597392000000.0,
        "interest_rate": 0.0001,
    }


def test_series_bodies_parse_every_row():
    rows = [
        {
            "symbol": "ETHUSDT",
            "longShortRatio": "1.5000",
            "longAccount": "0.6000",
            "shortAccount": "0.4000",
            "timestamp": 1_700_000_100_000,
        },
        {
            "symbol": "ETHUSDT",
            "longShortRatio": "0.2500",
            "longAccount": "0.2000",
            "shortAccount": "0.8000",
            "timestamp": 1_700_000_400_000,
        },
    ]
    for parse, kind in (
        (parse_long_short_account_ratio, "long_short_account_ratio"),
        (parse_top_trader_position_ratio, "top_trader_position_ratio"),
    ):
        got = parse(rows, "ETHUSDT", "5m", 11)
        assert [(r["kind"], r["value"], r["extra"], r["event_time"], r["period"]) for r in got] == [
            (kind, 1.5, {"long_account": 0.6, "short_account": 0.4}, 1_700_000_100_000, "5m"),
            (kind, 0.25, {"long_account": 0.2, "short_account": 0.8}, 1_700_000_400_000, "5m"),
        ]
    [oih] = parse_open_interest_hist(
        [
            {
                "symbol": "ETHUSDT",
                "sumOpenInterest": "20403.63700000",
                "sumOpenInterestValue": "150570784.07809979",
                "timestamp": 1583127900000,
            }
        ],
        "ETHUSDT",
        "5m",
        1,
    )
    assert (oih["value"], oih["extra"]) == (20403.637, {"sum_open_interest_value": 150570784.07809979})
    [taker] = parse_taker_buy_sell_ratio(
        [{"buySellRatio": "1.5586", "buyVol": "387.3300", "sellVol": "248.5030", "timestamp": 1585614900000}],
        "ETHUSDT",
        "5m",
        1,
    )
    assert (taker["value"], taker["extra"], taker["event_time"]) == (
        1.5586,
        {"buy_vol": 387.33, "sell_vol": 248.503},
        1585614900000,
    )
    assert parse_open_interest_hist([], "ETHUSDT", "5m", 1) == []  # a new listing has no history yet


def test_premium_and_divergence_from_two_known_prices():
    coinbase = coinbase_last_price(
        {"price": "30030.00", "time": "2023-11-14T22:15:24.500000Z"}, "BTC-USD", 1_700_000_125_000
    )
    assert coinbase == PricePoint(30030.0, 1_700_000_124_500, 1_700_000_125_000)
    binance = PricePoint(30000.0, 1_700_000_124_000, 1_700_000_124_900)
    [premium] = coinbase_premium("BTCUSDT", coinbase, binance)
    assert premium["value"] == pytest.approx(30.0 / 30000.0, rel=1e-12)  # +0.1 %
    assert premium["extra"] == {"coinbase_price": 30030.0, "binance_price": 30000.0}
    assert (premium["event_time"], premium["receive_time"]) == (1_700_000_124_500, 1_700_000_125_000)

    spot = spot_mid_price(
        {"symbol": "BTCUSDT", "bidPrice": "29999.00", "bidQty": "1", "askPrice": "30001.00", "askQty": "2"},
        "BTCUSDT",
        1_700_000_126_000,
    )
    assert spot == PricePoint(30000.0, 1_700_000_126_000, 1_700_000_126_000)  # mid; no exchange time in the body
    perp = perp_mark_price(
        {"symbol": "BTCUSDT", "markPrice": "30015.0", "time": 1_700_000_124_000}, "BTCUSDT", 1_700_000_124_100
    )
    [div] = spot_perp_divergence("BTCUSDT", perp, spot)
    assert div["value"] == pytest.approx(15.0 / 30000.0, rel=1e-12)  # perp rich to spot: positive
    assert div["extra"] == {"perp_price": 30015.0, "spot_price": 30000.0}
    for record in (premium, div):
        SERDE.encode("md.indicators", record)


GOOD_OI = {"openInterest": "1.5", "symbol": "BTCUSDT", "time": 1}
MALFORMED = [
    pytest.param(lambda: parse_open_interest({"code": -1121, "msg": "Invalid symbol."}, "BTCUSDT", 1), id="error-body"),
    pytest.param(lambda: parse_open_interest([GOOD_OI], "BTCUSDT", 1), id="array-for-object"),
    pytest.param(lambda: parse_open_interest({**GOOD_OI, "openInterest": "abc"}, "BTCUSDT", 1), id="not-a-number"),
    pytest.param(lambda: parse_open_interest({**GOOD_OI, "openInterest": "NaN"}, "BTCUSDT", 1), id="nan"),
    pytest.param(lambda: parse_open_interest({**GOOD_OI, "openInterest": True}, "BTCUSDT", 1), id="bool"),
    pytest.param(lambda: parse_open_interest({**GOOD_OI, "time": "1"}, "BTCUSDT", 1), id="time-as-string"),
    pytest.param(lambda: parse_open_interest(GOOD_OI, "ETHUSDT", 1), id="other-symbol"),
    pytest.param(lambda: parse_open_interest_hist({"symbol": "BTCUSDT"}, "BTCUSDT", "5m", 1), id="object-for-array"),
    pytest.param(
        lambda: parse_taker_buy_sell_ratio([{"buySellRatio": "1", "buyVol": "1", "timestamp": 1}], "BTCUSDT", "5m", 1),
        id="missing-sellVol",
    ),
    pytest.param(lambda: parse_long_short_account_ratio([None], "BTCUSDT", "5m", 1), id="null-row"),
    pytest.param(
        lambda: parse_funding_rate(
            {"symbol": "BTCUSDT", "markPrice": "1", "indexPrice": "1", "nextFundingTime": 1, "time": 1}, "BTCUSDT", 1
        ),
        id="no-lastFundingRate",
    ),
    pytest.param(
        lambda: perp_mark_price({"symbol": "BTCUSDT", "markPrice": "0", "time": 1}, "BTCUSDT", 1), id="zero-price"
    ),
    pytest.param(
        lambda: spot_mid_price({"symbol": "BTCUSDT", "bidPrice": "2", "askPrice": "1"}, "BTCUSDT", 1),
        id="crossed-touch",
    ),
    pytest.param(
        lambda: coinbase_last_price({"price": "1", "time": "2023-11-14T22:15:24"}, "BTC-USD", 1), id="naive-time"
    ),
    pytest.param(lambda: coinbase_last_price({"message": "NotFound"}, "BTC-USD", 1), id="coinbase-error"),
]


@pytest.mark.parametrize("parse", MALFORMED)
def test_malformed_bodies_raise_a_clear_error(parse):
    with pytest.raises(IndicatorParseError):
        parse()


# -- the poller against the fake exchange ------------------------------------------------------------
async def test_one_tick_publishes_every_kind_with_the_exchange_values(exchange, http, make_poller):
    poller, published, metrics = make_poller()
    count = await poller.run_once()
    assert count == len(published.records) == 3 * (3 + 4 * HISTORY) + 2
    assert published.pairs() == full_tick_pairs()  # no Coinbase premium for SOL
    for topic, key, record, receive_time in published.records:
        assert topic == "md.indicators" and key == f"binance:{record['symbol']}"
        assert receive_time == record["receive_time"] and record["receive_time"] > NOW_MS  # local clock, not frozen

    base = exchange.rest_url
    for symbol in SYMBOLS:
        index = await fetch(http, f"{base}/fapi/v1/premiumIndex", symbol=symbol)
        mark = float(index["markPrice"])
        [funding] = published.by(symbol, "funding_rate")
        assert funding["value"] == float(index["lastFundingRate"]) and funding["event_time"] == index["time"] == NOW_MS

        oi = await fetch(http, f"{base}/fapi/v1/openInterest", symbol=symbol)
        assert [(r["value"], r["event_time"]) for r in published.by(symbol, "open_interest")] == [
            (float(oi["openInterest"]), oi["time"])
        ]

        book = await fetch(http, f"{base}/api/v3/ticker/bookTicker", symbol=symbol)
        spot_mid = (float(book["bidPrice"]) + float(book["askPrice"])) / 2
        [div] = published.by(symbol, "spot_perp_divergence")
        assert div["value"] == pytest.approx((mark - spot_mid) / spot_mid, rel=1e-12, abs=1e-15)
        assert div["extra"] == pytest.approx({"perp_price": mark, "spot_price": spot_mid})

        params = {"symbol": symbol, "period": "5m", "limit": str(HISTORY)}
        hist = await fetch(http, f"{base}/futures/data/openInterestHist", **params)
        assert [
            (r["value"], r["extra"]["sum_open_interest_value"], r["event_time"], r["period"])
            for r in published.by(symbol, "open_interest_hist")
        ] == [(float(h["sumOpenInterest"]), float(h["sumOpenInterestValue"]), h["timestamp"], "5m") for h in hist]
        for path, kind in (
            ("globalLongShortAccountRatio", "long_short_account_ratio"),
            ("topLongShortPositionRatio", "top_trader_position_ratio"),
        ):
            rows = await fetch(http, f"{base}/futures/data/{path}", **params)
            assert [
                (r["value"], r["extra"]["long_account"], r["extra"]["short_account"], r["event_time"])
                for r in published.by(symbol, kind)
            ] == [
                (float(x["longShortRatio"]), float(x["longAccount"]), float(x["shortAccount"]), x["timestamp"])
                for x in rows
            ]
        taker = await fetch(http, f"{base}/futures/data/takerlongshortRatio", **params)
        assert [(r["value"], r["extra"], r["event_time"]) for r in published.by(symbol, "taker_buy_sell_ratio")] == [
            (float(t["buySellRatio"]), {"buy_vol": float(t["buyVol"]), "sell_vol": float(t["sellVol"])}, t["timestamp"])
            for t in taker
        ]

        product = {"BTCUSDT": "BTC-USD", "ETHUSDT": "ETH-USD"}.get(symbol)
        if product:
            ticker = await fetch(http, f"{base}/products/{product}/ticker")
            coinbase = float(ticker["price"])
            [premium] = published.by(symbol, "coinbase_premium")
            assert premium["value"] == pytest.approx((coinbase - mark) / mark, rel=1e-12, abs=1e-15)
            assert premium["extra"] == {"coinbase_price": coinbase, "binance_price": mark}
            assert premium["event_time"] == NOW_MS  # both venues' own times are the frozen clock
    assert all_errors(metrics) == {}


async def test_series_rows_are_published_once_and_missed_periods_caught_up(exchange_clock, make_poller):
    poller, published, _ = make_poller()
    await poller.run_once()
    first = len(published.records)
    assert await poller.run_once() == 3 * 3 + 2  # same periods again: only the point values
    assert {k for _, _, r, _ in published.records[first:] for k in [r["kind"]]} == {*POINT_KINDS, "coinbase_premium"}

    exchange_clock[0] = NOW + 600  # two periods later (one tick missed)
    second = len(published.records)
    await poller.run_once()
    for symbol in SYMBOLS:
        for kind in SERIES_KINDS:
            new = [r["event_time"] for r in published.by(symbol, kind)[HISTORY:]]
            latest_before = published.by(symbol, kind)[HISTORY - 1]["event_time"]
            assert new == [latest_before + 300_000, latest_before + 600_000], (symbol, kind)
    assert len(published.records) - second == 3 * 3 + 2 + 3 * 4 * 2


REQUEST_ORDER_CASES = [
    # (request index the fault hits, status, endpoint expected to fail, (symbol, kind) pairs expected missing)
    pytest.param(0, 400, "time", set(), id="time-rejected"),
    pytest.param(
        1,
        503,
        "premiumIndex",
        {("BTCUSDT", "funding_rate"), ("BTCUSDT", "spot_perp_divergence"), ("BTCUSDT", "coinbase_premium")},
        id="premiumIndex-unavailable",
    ),
    pytest.param(3, 404, "coinbase_ticker", {("BTCUSDT", "coinbase_premium")}, id="coinbase-rejected"),
    pytest.param(
        14, 400, "globalLongShortAccountRatio", {("ETHUSDT", "long_short_account_ratio")}, id="ratio-rejected"
    ),
]


@pytest.mark.parametrize(("index", "status", "endpoint", "missing"), REQUEST_ORDER_CASES)
async def test_one_failing_endpoint_is_counted_and_the_rest_published(
    exchange, http, make_poller, index, status, endpoint, missing
):
    """The fault is armed just before request `index` and cleared before the next one (via the stagger
    sleep, which runs before every request but the first): exactly one request fails."""
    calls = 0

    async def sleep(_delay: float) -> None:
        nonlocal calls
        calls += 1
        if calls == index:
            await set_faults(http, exchange, rest_fail_status=status, rest_fail_for_s=60)
        elif calls == index + 1:
            await set_faults(http, exchange, clear=True)

    poller, published, metrics = make_poller(sleep=sleep, stagger_s=0.01)
    if index == 0:
        await set_faults(http, exchange, rest_fail_status=status, rest_fail_for_s=60)
    await poller.run_once()
    assert all_errors(metrics) == {endpoint: 1.0}
    assert published.pairs() == full_tick_pairs() - missing
    if endpoint == "time":
        assert poller.last_clock_drift_s is None
    if status >= 500:
        assert metrics.registry.get_sample_value("tapeflow_producer_rest_backoffs_total", {"status": "503"}) >= 1


async def test_rate_limit_answers_are_waited_out_without_losing_data(exchange, http, make_poller):
    await set_faults(http, exchange, rest_429_count=2, retry_after_s=0)
    poller, published, metrics = make_poller()
    await poller.run_once()
    assert published.pairs() == full_tick_pairs()
    assert all_errors(metrics) == {}
    assert metrics.registry.get_sample_value("tapeflow_producer_rest_backoffs_total", {"status": "429"}) == 2


async def test_malformed_body_is_counted_and_skipped():
    """A Coinbase stand-in on loopback answering 200 with a body missing `price`."""

    async def ticker(_request):
        return web.json_response({"bid": "1", "ask": "2", "time": "2023-11-14T22:15:24.5Z"})

    app = web.Application()
    app.router.add_get("/products/{product}/ticker", ticker)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = generate_session(seed=5, symbols=SYMBOLS, duration_s=2)
    fake = await FakeExchange(
        FakeExchangeConfig(session=session, speed="max", start="manual"), wall_clock=lambda: NOW
    ).start()
    try:
        async with aiohttp.ClientSession() as http:
            metrics = ProducerMetrics()
            published = Published()
            poller = IndicatorPoller(
                RestClient(http, metrics, give_up_after_s=1.0),
                symbols=SYMBOLS,
                publish=published,
                metrics=metrics,
                futures_url=fake.rest_url,
                spot_url=fake.rest_url,
                coinbase_url=f"http://127.0.0.1:{port}",
                history_limit=HISTORY,
                stagger_s=0.0,
            )
            await poller.run_once()
    finally:
        await fake.stop()
        await runner.cleanup()
    assert all_errors(metrics) == {"coinbase_ticker": 2.0}  # BTC and ETH
    assert published.pairs() == full_tick_pairs() - {("BTCUSDT", "coinbase_premium"), ("ETHUSDT", "coinbase_premium")}


async def test_clock_drift_is_local_minus_server_at_the_request_midpoint(make_poller):
    local = NOW + 2.75
    poller, _, metrics = make_poller(clock=lambda: local)
    await poller.run_once()
    expected = local - NOW_MS / 1000
    assert poller.last_clock_drift_s == pytest.approx(expected, abs=1e-9)
    assert metrics.registry.get_sample_value("tapeflow_producer_clock_drift_seconds") == pytest.approx(
        expected, abs=1e-9
    )


async def test_clock_drift_with_real_clocks(http):
    import time

    session = generate_session(seed=5, symbols=("BTCUSDT",), duration_s=2)
    fake = await FakeExchange(
        FakeExchangeConfig(session=session, speed="max", start="manual"), wall_clock=lambda: time.time() - 2.5
    ).start()  # the server is 2.5 s behind
    try:
        metrics = ProducerMetrics()
        poller = IndicatorPoller(
            RestClient(http, metrics),
            symbols=["BTCUSDT"],
            publish=Published(),
            metrics=metrics,
            futures_url=fake.rest_url,
            spot_url=fake.rest_url,
            coinbase_url=fake.rest_url,
            stagger_s=0.0,
        )
        await poller.run_once()
    finally:
        await fake.stop()
    assert metrics.registry.get_sample_value("tapeflow_producer_clock_drift_seconds") == pytest.approx(2.5, abs=0.25)


async def test_run_ticks_every_interval_and_stops_promptly(make_poller):
    """Injected clock and sleep: no real waiting. The interval is measured start to start; a stop set
    during the interval wait ends `run` although that sleep would never return."""
    now = [NOW + 1.0]
    sleeps: list[float] = []
    stop = asyncio.Event()

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay
        if delay > 1 and len([d for d in sleeps if d > 1]) == 2:  # the second interval wait
            stop.set()
            await asyncio.Event().wait()  # never returns: only the stop may end it

    poller, published, _ = make_poller(sleep=sleep, clock=lambda: now[0], stagger_s=0.5, interval_s=300.0)
    await asyncio.wait_for(poller.run(stop), 10)
    requests_per_tick = 1 + 3 * 7 + 2  # time; 7 per symbol; Coinbase for BTC and ETH
    tick_s = 0.5 * (requests_per_tick - 1)
    assert [d for d in sleeps if d > 1] == [pytest.approx(300.0 - tick_s)] * 2
    assert sleeps.count(0.5) == 2 * (requests_per_tick - 1)
    assert len(published.records) == (3 * (3 + 4 * HISTORY) + 2) + (3 * 3 + 2)  # second tick: no new series rows
    # the second tick started 300 s after the first; its time request was its first (no stagger before it)
    assert poller.last_clock_drift_s == pytest.approx(NOW + 1.0 + 300.0 - NOW_MS / 1000, abs=1e-6)


async def test_stop_between_requests_interrupts_the_tick(make_poller):
    stop = asyncio.Event()
    calls = 0

    async def sleep(_delay: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 4:
            stop.set()

    poller, published, _ = make_poller(sleep=sleep, stagger_s=0.1)
    await asyncio.wait_for(poller.run(stop), 10)
    # requests 0..3 ran (time, BTC premiumIndex, spot, coinbase); the fifth was never sent
    assert published.pairs() == {
        ("BTCUSDT", "funding_rate"),
        ("BTCUSDT", "spot_perp_divergence"),
        ("BTCUSDT", "coinbase_premium"),
    }


async def test_two_pollers_share_one_error_counter(make_poller):
    metrics = ProducerMetrics()
    first, _, _ = make_poller(metrics=metrics)
    second, _, _ = make_poller(metrics=metrics)
    assert first.poll_errors is second.poll_errors
    assert errors(metrics, "premiumIndex") == 0.0  # exported before any failure


async def test_exchange_clock_stamps_receive_times_on_the_exchange_clock(make_poller):
    """Replays: the fake exchange's clock is frozen at NOW (years before ours); with exchange_clock
    the records carry receive times on that clock, local clock minus the measured drift."""
    poller, published, _ = make_poller(exchange_clock=True)
    await poller.run_once()
    receive_times = [r["receive_time"] for _, _, r, _ in published.records]
    assert receive_times and all(NOW_MS <= t < NOW_MS + 5_000 for t in receive_times)
    plain, published_plain, _ = make_poller()
    await plain.run_once()
    assert all(r["receive_time"] > NOW_MS + 86_400_000 for _, _, r, _ in published_plain.records)
