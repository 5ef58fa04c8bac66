"""The fake exchange's real-rate profile: history generated an hour at a time that agrees with
itself (REST aggTrades pages, 1m klines with taker-buy volume, Vision day files) and with the live session
it ends at (ids and the clock), a clock set to any UTC hour, Vision files that end yesterday.

Low rates here (the sums are the same code at any rate); the benchmark runs the real ones."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import aiohttp
import pytest

from fake_exchange.cli import REAL_PROFILE_DAY_S, config_from_args, real_profile_spec
from fake_exchange.config import FakeExchangeConfig
from fake_exchange.exchange import serve
from fake_exchange.real_history import REAL_RATES, RealHistory

END_MS = 1_795_651_200_000 + 23 * 3_600_000 + 300_000  # 2026-11-26 23:05 UTC


def _history(rate: float = 0.5) -> RealHistory:
    return RealHistory(
        ["BTCUSDT"],
        END_MS,
        {"BTCUSDT": 5_000_000},
        {"BTCUSDT": 300_000},
        {"BTCUSDT": 1},
        hours=26,
        seed=3,
        rates={"BTCUSDT": rate},
    )


def test_the_history_reaches_back_to_yesterday_s_midnight_and_ends_right_before_the_live_ids():
    h = _history()
    assert h.start_ms == 1_795_651_200_000 - 86_400_000  # 2026-11-25 00:00: yesterday's archive is whole
    assert h.last_id("BTCUSDT") == 4_999_999
    pages, from_id = [], h.first_id("BTCUSDT")
    while True:  # page it as a warm start does, across every hour boundary
        rows = h.agg_trades("BTCUSDT", from_id=from_id, limit=1000)
        pages += rows
        if len(rows) < 1000:
            break
        from_id = rows[-1]["a"] + 1
    ids = [r["a"] for r in pages]
    assert ids == list(range(h.first_id("BTCUSDT"), 5_000_000))
    times = [r["T"] for r in pages]
    assert times == sorted(times) and h.start_ms <= times[0] and times[-1] < END_MS
    # about the rate asked for (47 h at 0.5/s: 84,600 expected; the bursts make it vary)
    assert 0.7 < len(ids) / (0.5 * 47 * 3600) < 1.3
    # by time: the first trade at or after a moment
    moment = h.start_ms + 5 * 3_600_000 + 123_456
    first = h.agg_trades("BTCUSDT", start_time=moment, end_time=moment + 3_600_000 - 1, limit=1)[0]
    assert first == next(r for r in pages if r["T"] >= moment)


def test_klines_sum_the_trades_of_their_minute():
    h = _history(rate=3.0)
    start = h.start_ms + 30 * 3_600_000 - 120_000  # three minutes across an hour boundary
    rows = h.klines("BTCUSDT", start, start + 120_000, 1500)
    assert [r[0] for r in rows] == [start, start + 60_000, start + 120_000]
    trades = h.agg_trades("BTCUSDT", start_time=start, end_time=start + 180_000 - 1, limit=1000)
    for row in rows:
        mine = [t for t in trades if row[0] <= t["T"] < row[0] + 60_000]
        buys = [t for t in mine if not t["m"]]
        assert row[8] == len(mine) > 0
        assert Decimal(row[5]) == sum(Decimal(t["q"]) for t in mine)
        assert Decimal(row[9]) == sum(Decimal(t["q"]) for t in buys)
        assert (row[1], row[4]) == (mine[0]["p"], mine[-1]["p"])
        assert Decimal(row[2]) == max(Decimal(t["p"]) for t in mine)
        assert Decimal(row[3]) == min(Decimal(t["p"]) for t in mine)
        assert float(row[10]) == pytest.approx(float(sum(Decimal(t["p"]) * Decimal(t["q"]) for t in buys)), rel=1e-9)


def test_a_vision_day_holds_exactly_the_trades_rest_serves_for_it():
    h = _history()
    day = datetime(2026, 11, 25, tzinfo=UTC).date()
    assert h.day_zip("BTCUSDT", day + timedelta(days=1)) is None  # today: not over
    with zipfile.ZipFile(io.BytesIO(h.day_zip("BTCUSDT", day))) as archive:
        rows = list(csv.DictReader(io.StringIO(archive.read("BTCUSDT-aggTrades-2026-11-25.csv").decode())))
    day_ms = 1_795_564_800_000
    rest = h.agg_trades("BTCUSDT", from_id=int(rows[0]["agg_trade_id"]), limit=1000)
    assert int(rows[0]["transact_time"]) >= day_ms and int(rows[-1]["transact_time"]) < day_ms + 86_400_000
    assert [int(r["agg_trade_id"]) for r in rows] == list(
        range(int(rows[0]["agg_trade_id"]), int(rows[-1]["agg_trade_id"]) + 1)
    )
    for r, t in zip(rows, rest, strict=False):
        assert (
            int(r["agg_trade_id"]),
            r["price"],
            r["quantity"],
            int(r["transact_time"]),
            r["is_buyer_maker"] == "true",
        ) == (t["a"], t["p"], t["q"], t["T"], t["m"])


def test_the_cli_s_real_profile():
    config = config_from_args(
        [
            "--synthetic-seed",
            "5",
            "--profile",
            "real",
            "--utc-hour",
            "1",
            "--synthetic-symbols",
            "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT",
            "--synthetic-duration",
            "60",
        ]
    )
    assert config.synthetic.rates == REAL_RATES and config.synthetic.burstiness == 1.0
    assert config.synthetic.start_time == REAL_PROFILE_DAY_S + 3600 and config.rest_clock == "recording"
    assert config.real_history_hours == 26.0
    plain = config_from_args(
        [
            "--synthetic-seed",
            "5",
            "--synthetic-rates",
            "BTCUSDT=30,ETHUSDT=2.5",
            "--synthetic-symbols",
            "BTCUSDT,ETHUSDT",
        ]
    )
    assert plain.synthetic.rates == {"BTCUSDT": 30.0, "ETHUSDT": 2.5} and plain.real_history_hours == 0


async def test_served_at_a_set_utc_hour_rest_pages_from_the_history_into_the_live_session():
    spec = real_profile_spec(7, ("BTCUSDT",), 60.0, utc_hour=23).model_copy(
        update={"rates": {"BTCUSDT": 0.5}, "depth_interval_ms": 1000}
    )
    fake = await serve(
        FakeExchangeConfig(synthetic=spec, speed=1.0, start="manual", rest_clock="recording", real_history_hours=26)
    )
    try:
        history = fake.state.history
        live_ids = [f.payload["a"] for f in fake.recording.frames if f.event == "aggTrade"]
        async with aiohttp.ClientSession() as http:

            async def get(path, **params):
                async with http.get(f"{fake.rest_url}{path}", params=params) as resp:
                    if resp.status != 200 or resp.content_type != "application/json":
                        return resp.status, None
                    return resp.status, await resp.json()

            _, now = await get("/fapi/v1/time")
            assert datetime.fromtimestamp(now["serverTime"] / 1000, UTC).hour == 23  # the clock as set
            status, rows = await get(
                "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=history.last_id("BTCUSDT") - 4, limit=10
            )
            assert [r["a"] for r in rows] == list(range(history.last_id("BTCUSDT") - 4, live_ids[0] + 5))
            _, klines = await get(
                "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", startTime=history.start_ms, limit=1500
            )
            assert len(klines) == 1500 and klines[0][0] == history.start_ms
            vision = "/data/futures/um/daily/aggTrades/BTCUSDT/BTCUSDT-aggTrades-{}.zip.CHECKSUM"
            assert (await get(vision.format("2026-11-25")))[0] == 200  # yesterday
            assert (await get(vision.format("2026-11-26")))[0] == 404  # today: not published
            assert (await get(vision.format("2026-11-24")))[0] == 404  # before the history
    finally:
        await fake.stop()
