"""Unit tests of the fake exchange's pure parts: recording parser, synthetic generator, depth
timeline, aggTrades queries, replay schedule, fault countdowns, generated REST bodies, CLI parsing.

Reference values come from an independent reading of the recording with the standard ``json``
module, from Binance's own bookTicker frames (best bid/ask at a given update id) and from hand
computation.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path

import pytest
from pydantic import ValidationError

from fake_exchange import generate_session, load_recording
from fake_exchange.agg_trades import AggTradeIndex
from fake_exchange.cli import config_from_args
from fake_exchange.config import FakeExchangeConfig
from fake_exchange.depth_book import build_timelines
from fake_exchange.faults import (
    FaultSettings,
    FaultState,
    parse_fault_assignments,
)
from fake_exchange.generated_bodies import (
    long_short_ratio,
    open_interest_hist,
    period_stamps,
)
from fake_exchange.recording import RecordingError, parse_ws_lines
from fake_exchange.replay import ReplayEngine, due_offsets
from fake_exchange.state import ExchangeState
from fake_exchange.synthetic import format_fixed
from fake_exchange.weights import MinuteWeightCounter, WeightLimiter, request_weight

DATA = Path("/work/shared/data/binance_futures_ws")


# -- independent reading of the recording ---------------------------------------------------------
def read_frames_with_json() -> list[tuple[float, str, str, dict]]:
    """(receive time, stream, raw frame text, data) straight from the file with the json module."""
    out = []
    lines = (DATA / "ws_frames.txt").read_text().splitlines()
    for line in lines[1:]:
        if not line.strip():
            continue
        stamp, text = line.split(": ", 1)
        doc = json.loads(text)
        out.append((float(stamp), doc["stream"], text, doc["data"]))
    return out


def read_snapshots_with_json() -> dict[str, dict]:
    snaps = {}
    for line in (DATA / "rest_responses.txt").read_text().splitlines():
        if " -> " in line and "/fapi/v1/depth" in line:
            url, rest = line.split(" -> ", 1)
            symbol = url.split("symbol=")[1].split("&")[0]
            snaps[symbol] = json.loads(rest.split(": ", 1)[1])
    return snaps


def apply_levels(book: dict[str, str], levels: list[list[str]]) -> None:
    for price, qty in levels:
        if float(qty) == 0:
            book.pop(price, None)
        else:
            book[price] = qty


@pytest.fixture(scope="module")
def recording():
    return load_recording(DATA)


# -- recording ------------------------------------------------------------------------------------
def test_recording_frames_match_independent_parse(recording):
    reference = read_frames_with_json()
    assert len(recording.frames) == len(reference) == 1535
    for frame, (stamp, stream, text, data) in zip(recording.frames, reference, strict=True):
        assert frame.receive_time == stamp
        assert frame.stream == stream
        assert frame.combined_text() == text  # byte-identical envelope
        assert json.loads(frame.data) == data
        assert frame.enveloped
    assert [f.index for f in recording.frames] == list(range(1535))


def test_recording_metadata(recording):
    assert set(recording.symbols) == {"SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"}
    assert recording.stream_url.startswith("wss://fstream.binance.com/stream?streams=sushiusdt@aggTrade")
    assert set(recording.streams) == set(recording.stream_url.split("streams=")[1].split("/"))
    assert recording.configuration["trades"][0] == "SUSHI-USDT-PERP"
    assert json.loads(recording.exchange_info)["futuresType"] == "U_MARGINED"
    body = recording.rest_body("/fapi/v1/depth", {"limit": "1000", "symbol": "SUSHIUSDT"})
    assert json.loads(body)["lastUpdateId"] == 600859605926
    assert {s: b.last_update_id for s, b in recording.initial_books.items()} == {
        s: d["lastUpdateId"] for s, d in read_snapshots_with_json().items()
    }


def test_raw_frames_get_their_stream_inferred(tmp_path):
    trade = '{"e":"aggTrade","E":1,"a":5,"s":"BTCUSDT","p":"1.0","q":"2","f":1,"l":1,"T":1,"m":true}'
    diff = '{"e":"depthUpdate","E":2,"T":2,"s":"BTCUSDT","U":10,"u":11,"pu":9,"b":[],"a":[]}'
    kline = '{"e":"kline","E":3,"s":"ETHUSDT","k":{"i":"1m","o":"1"}}'
    liq = '{"e":"forceOrder","E":4,"o":{"s":"ETHUSDT","S":"SELL"}}'
    url = (
        "wss://fstream.binance.com/stream?streams=btcusdt@aggTrade/btcusdt@depth@100ms/"
        "ethusdt@kline_1m/!forceOrder@arr <-> 1.0"
    )
    lines = [url, f"1.5: {trade}", f"2.5: {diff}", f"3.5: {kline}", f"4.5: {liq}", ""]
    (tmp_path / "ws_frames.txt").write_text("\n".join(lines))
    rec = load_recording(tmp_path)
    assert [f.stream for f in rec.frames] == [
        "btcusdt@aggTrade",
        "btcusdt@depth@100ms",
        "ethusdt@kline_1m",
        "!forceOrder@arr",
    ]
    assert [f.data for f in rec.frames] == [trade, diff, kline, liq]
    assert not any(f.enveloped for f in rec.frames)
    assert set(rec.symbols) == {"BTCUSDT", "ETHUSDT"}
    # a single-stream /ws URL owns every frame
    _, frames = parse_ws_lines(["wss://x/ws/btcusdt@aggTrade <-> 1", f"1: {trade}"])
    assert frames[0].stream == "btcusdt@aggTrade"


def test_malformed_frame_line_is_rejected():
    with pytest.raises(RecordingError):
        parse_ws_lines(["1.0: {not json"])
    with pytest.raises(RecordingError):
        parse_ws_lines(["1.0: {}", "garbage line"])


# -- synthetic sessions ---------------------------------------------------------------------------
def test_synthetic_is_deterministic_per_seed():
    a = generate_session(seed=11, symbols=("BTCUSDT", "ETHUSDT"), duration_s=5)
    b = generate_session(seed=11, symbols=("BTCUSDT", "ETHUSDT"), duration_s=5)
    c = generate_session(seed=12, symbols=("BTCUSDT", "ETHUSDT"), duration_s=5)
    assert [(f.receive_time, f.stream, f.data) for f in a.frames] == [
        (f.receive_time, f.stream, f.data) for f in b.frames
    ]
    assert [f.data for f in a.frames] != [f.data for f in c.frames]


def test_synthetic_chains_are_consistent():
    rec = generate_session(seed=5, symbols=("BTCUSDT", "ETHUSDT", "XRPUSDT"), duration_s=20, liquidations_per_min=30)
    times = [f.receive_time for f in rec.frames]
    assert times == sorted(times)
    books = {s: ({p: q for p, q in b.bids}, {p: q for p, q in b.asks}) for s, b in rec.initial_books.items()}
    last_u = {s: b.last_update_id for s, b in rec.initial_books.items()}
    last_agg: dict[str, dict] = {}
    book_at_u: dict[tuple[str, int], tuple[str, str]] = {}
    tickers: list[dict] = []
    counts = defaultdict(int)
    for frame in rec.frames:
        d = frame.payload
        counts[d["e"]] += 1
        if d["e"] == "depthUpdate":
            s = d["s"]
            assert frame.stream == f"{s.lower()}@depth@100ms"
            assert d["pu"] == last_u[s], "pu must equal the previous u"
            assert d["pu"] < d["U"] <= d["u"]
            last_u[s] = d["u"]
            bids, asks = books[s]
            apply_levels(bids, d["b"])
            apply_levels(asks, d["a"])
            best_bid = max(bids, key=float)
            best_ask = min(asks, key=float)
            assert float(best_bid) < float(best_ask), "book crossed"
            book_at_u[(s, d["u"])] = (best_bid, best_ask)
        elif d["e"] == "aggTrade":
            prev = last_agg.get(d["s"])
            if prev is not None:
                assert d["a"] == prev["a"] + 1, "agg ids must be consecutive"
                assert d["f"] == prev["l"] + 1, "trade ids must be consecutive"
            assert d["f"] <= d["l"]
            last_agg[d["s"]] = d
        elif d["e"] == "bookTicker":
            tickers.append(d)
        elif d["e"] == "markPriceUpdate":
            assert frame.stream == f"{d['s'].lower()}@markPrice@1s"
            assert all(isinstance(d[k], str) for k in ("p", "i", "P", "r"))
        elif d["e"] == "forceOrder":
            assert frame.stream == "!forceOrder@arr"
            assert d["o"]["S"] in ("BUY", "SELL") and d["o"]["X"] == "FILLED"
    assert counts["depthUpdate"] == 3 * 200  # 20 s at 100 ms for 3 symbols
    assert counts["markPriceUpdate"] == 3 * 20
    assert counts["aggTrade"] > 100 and counts["forceOrder"] > 0
    assert len(tickers) == counts["depthUpdate"]
    for t in tickers:  # every bookTicker shows the book exactly as of its u
        assert (t["b"], t["a"]) == book_at_u[(t["s"], t["u"])]


def _trades_per_second(rec) -> list[int]:
    counts = defaultdict(int)
    for frame in rec.frames:
        if frame.payload["e"] == "aggTrade":
            counts[frame.payload["T"] // 1000] += 1
    first, last = min(counts), max(counts)
    return [counts.get(sec, 0) for sec in range(first, last + 1)]


def test_synthetic_bursts_keep_the_mean_rate_and_cluster_the_seconds():
    """burstiness=1: about the same trades overall, but the busiest seconds several times the mean and
    busy seconds following busy seconds (autocorrelated), where the Poisson stream has neither."""
    import statistics

    kwargs = dict(
        seed=3,
        symbols=("BTCUSDT",),
        duration_s=3600,
        trades_per_s=10,
        book_ticker=False,
        depth_interval_ms=5_000,
        mark_interval_s=60,
        liquidations_per_min=0,
    )  # trades are what counts
    calm = _trades_per_second(generate_session(**kwargs))
    bursty = _trades_per_second(generate_session(**kwargs, burstiness=1.0))

    def p99_over_mean(xs):
        return sorted(xs)[int(len(xs) * 0.99)] / statistics.mean(xs)

    def lag1(xs):
        m = statistics.mean(xs)
        return sum((a - m) * (b - m) for a, b in zip(xs, xs[1:])) / sum((a - m) ** 2 for a in xs)

    # a mean over ~360 memory spans of a log-normal of std 1.3: within 30 %
    assert abs(statistics.mean(bursty) / statistics.mean(calm) - 1) < 0.3
    assert p99_over_mean(calm) < 2.2 and p99_over_mean(bursty) > 4
    assert abs(lag1(calm)) < 0.1 and lag1(bursty) > 0.6
    # the bursts draw from their own stream: everything but the trade counts starts out the same
    again = generate_session(**kwargs, burstiness=0.0)
    assert _trades_per_second(again) == calm


def test_format_fixed():
    assert format_fixed(12345, 2) == "123.45"
    assert format_fixed(5, 3) == "0.005"
    assert format_fixed(7, 0) == "7"
    assert format_fixed(-150, 2) == "-1.50"


# -- depth timeline -------------------------------------------------------------------------------
def test_depth_timeline_matches_all_recorded_book_tickers(recording):
    """README: 50 bookTicker frames share their u with a diff; the synced book must match them exactly."""
    tickers = {
        (f.payload["s"], f.payload["u"]): (f.payload["b"], f.payload["a"])
        for f in recording.frames
        if f.event == "bookTicker"
    }
    compared = 0
    for symbol, timeline in build_timelines(recording).items():
        for j, diff in enumerate(timeline.diffs):
            key = (symbol, diff.final_id)
            if key in tickers and diff.final_id >= timeline.base.last_update_id:
                snap = timeline.book_after(j)
                assert (snap.bids[0][0], snap.asks[0][0]) == tickers[key]
                compared += 1
    assert compared == 50


def test_depth_timeline_serves_recorded_then_live_book(recording):
    timeline = build_timelines(recording)["SUSHIUSDT"]
    recorded = read_snapshots_with_json()["SUSHIUSDT"]
    assert timeline.snapshot_at(0).raw == recording.rest_body(
        "/fapi/v1/depth", {"symbol": "SUSHIUSDT", "limit": "1000"}
    )
    # after the whole replay: recorded snapshot + every later diff, lastUpdateId = last u
    bids = {p: q for p, q in recorded["bids"]}
    asks = {p: q for p, q in recorded["asks"]}
    last_u = None
    for _, stream, _, data in read_frames_with_json():
        if stream == "sushiusdt@depth@100ms" and data["u"] >= recorded["lastUpdateId"]:
            apply_levels(bids, data["b"])
            apply_levels(asks, data["a"])
            last_u = data["u"]
    live = timeline.snapshot_at(len(recording.frames))
    assert live.last_update_id == last_u
    assert dict(live.bids) == bids and dict(live.asks) == asks
    assert [float(p) for p, _ in live.bids] == sorted((float(p) for p in bids), reverse=True)
    assert [float(p) for p, _ in live.asks] == sorted(float(p) for p in asks)
    body = json.loads(live.to_body(5))
    assert len(body["bids"]) == len(body["asks"]) == 5 and body["lastUpdateId"] == last_u


def test_synthetic_snapshot_straddles_next_diff():
    rec = generate_session(seed=2, duration_s=3)
    timeline = build_timelines(rec)["BTCUSDT"]
    for position in (0, len(rec.frames) // 3, len(rec.frames) // 2):
        snap = timeline.snapshot_at(position)
        nxt = next(d for d in timeline.diffs if d.frame_index >= position)
        assert nxt.first_id <= snap.last_update_id <= nxt.final_id


# -- aggTrades ------------------------------------------------------------------------------------
def test_agg_trade_queries(recording):
    index = AggTradeIndex(recording)
    expected = [d for _, s, _, d in read_frames_with_json() if s == "sushiusdt@aggTrade"]
    ids = [d["a"] for d in expected]
    page = index.query("SUSHIUSDT", from_id=ids[3], limit=5)
    assert [r["a"] for r in page] == ids[3:8]
    assert page[0] == {k: expected[3][k] for k in ("a", "p", "q", "f", "l", "T", "m")}
    assert [r["a"] for r in index.query("SUSHIUSDT", limit=4)] == ids[-4:]  # most recent, ascending
    assert index.query("SUSHIUSDT", from_id=ids[-1] + 1) == []
    t = expected[10]["T"]
    assert all(r["T"] >= t for r in index.query("SUSHIUSDT", start_time=t, limit=1000))
    assert [r["a"] for r in index.query("SUSHIUSDT", end_time=expected[5]["T"], limit=2)][-1] >= ids[5]
    # replayed-only visibility hides trades whose frame has not been dispatched
    first_frame = next(f.index for f in recording.frames if f.stream == "sushiusdt@aggTrade")
    assert index.query("SUSHIUSDT", from_id=0, visible_before=first_frame) == []
    assert len(index.query("SUSHIUSDT", from_id=0, visible_before=first_frame + 1)) == 1


# -- replay schedule ------------------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder:
    """A subscriber that wants every stream and hands each frame (and the end of the replay) to callbacks."""

    conn_id = 1

    def __init__(self, on_frame, on_end=lambda: None) -> None:
        self.idle = asyncio.Event()
        self.idle.set()
        self.enqueue_frame, self.end_replay = on_frame, on_end

    def wants(self, stream):
        return True


async def test_replay_schedule_scales_gaps_by_speed():
    rec = generate_session(seed=1, duration_s=2, trades_per_s=0, liquidations_per_min=0)
    clock = FakeClock()
    state = ExchangeState(rec, clock=clock)
    dispatched: list[tuple[int, float]] = []
    ended: list[int] = []
    state.connections.add(
        Recorder(lambda frame: dispatched.append((frame.index, clock.now)), lambda: ended.append(len(dispatched)))
    )
    state.request_start()
    await ReplayEngine(state, 10.0, clock=clock, sleep=clock.sleep).run()
    assert [i for i, _ in dispatched] == list(range(len(rec.frames)))
    assert ended == [len(rec.frames)]  # the end-of-replay marker once, after the last frame
    t0 = rec.frames[0].receive_time
    for (_, at), frame in zip(dispatched, rec.frames, strict=True):
        assert at - 100.0 == pytest.approx((frame.receive_time - t0) / 10, abs=1e-9)
    assert sum(clock.sleeps) == pytest.approx(rec.duration_s / 10)
    assert state.finished.is_set() and state.position == len(rec.frames)


async def test_a_paused_replay_holds_its_next_frame_and_goes_on_with_the_spacing_moved_by_the_pause():
    rec = generate_session(seed=1, duration_s=2, trades_per_s=0, liquidations_per_min=0)
    clock = FakeClock()
    state = ExchangeState(rec, clock=clock)
    dispatched: list[float] = []
    paused_at = len(rec.frames) // 2

    state.connections.add(Recorder(lambda frame: dispatched.append(clock.now)))
    state.pause(before=paused_at)  # frame `paused_at` waits: `paused_at` frames are out
    state.request_start()
    replay = asyncio.create_task(ReplayEngine(state, 10.0, clock=clock, sleep=clock.sleep).run())
    for _ in range(1000):  # the replay reaches the pause and waits there, whatever the event loop does
        await asyncio.sleep(0)
        if len(dispatched) == paused_at and not state.running.is_set():
            break
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(dispatched) == paused_at and state.position == paused_at and not replay.done()
    clock.now += 30.0  # the session stands still for 30 s
    state.resume()
    await replay
    assert len(dispatched) == len(rec.frames) and state.finished.is_set()
    t0 = rec.frames[0].receive_time
    for i, (at, frame) in enumerate(zip(dispatched, rec.frames, strict=True)):
        moved = 30.0 if i >= paused_at else 0.0
        assert at - 100.0 == pytest.approx((frame.receive_time - t0) / 10 + moved, abs=1e-9)


@pytest.mark.parametrize("wall_at_start", [-5.0, 3.0])
async def test_replay_at_session_time_plays_each_frame_when_the_wall_clock_reaches_it(wall_at_start):
    """5 s before the session (relative to its first frame): the first frame 5 s later, then each at
    its own receive time; 3 s late: everything from the start, as at speed 1 (never in a burst)."""
    rec = generate_session(seed=1, duration_s=2, trades_per_s=0, liquidations_per_min=0, start_time=1_700_000_000)
    clock = FakeClock()
    first = rec.frames[0].receive_time
    state = ExchangeState(rec, clock=clock, wall_clock=lambda: first + wall_at_start + clock.now - 100.0)
    dispatched: list[float] = []
    state.connections.add(Recorder(lambda frame: dispatched.append(state.wall_clock() - frame.receive_time)))
    state.request_start()
    await ReplayEngine(state, 1.0, clock=clock, sleep=clock.sleep, at_session_time=True).run()
    assert len(dispatched) == len(rec.frames)
    assert dispatched == pytest.approx([max(0.0, wall_at_start)] * len(rec.frames), abs=1e-6)
    with pytest.raises(ValueError, match="speed 1"):
        ReplayEngine(state, 10.0, at_session_time=True)


async def test_replay_at_max_speed_never_sleeps_and_skip_fault_withholds():
    rec = generate_session(seed=1, duration_s=1)
    clock = FakeClock()
    state = ExchangeState(rec, FaultSettings(skip_frames=2, skip_stream="btcusdt@aggTrade"), clock=clock)
    await_offsets = due_offsets(rec.frames, None)
    assert set(await_offsets) == {0.0}
    state.request_start()
    await ReplayEngine(state, None, clock=clock, sleep=clock.sleep).run()
    assert set(clock.sleeps) == {0}
    assert state.frames_skipped == {"btcusdt@aggTrade": 2}
    assert state.faults.settings.skip_frames == 0


# -- faults ---------------------------------------------------------------------------------------
def test_fault_countdowns():
    clock = FakeClock()
    faults = FaultState(
        FaultSettings(drop_after_frames=2, rest_429_count=1, rest_418_count=1, retry_after_s=7), clock=clock
    )
    assert [faults.frame_sent() for _ in range(4)] == [False, True, False, False]  # one-shot
    first, second = faults.rest_fault("1.2.3.4"), faults.rest_fault("1.2.3.4")
    assert (first.status, second.status) == (418, 429)
    assert first.retry_after_s == second.retry_after_s == 7
    assert first.code == second.code == -1003
    assert faults.rest_fault("1.2.3.4") is None
    faults.update({"rest_fail_for_s": 5})
    assert faults.rest_fault("x").status == 503
    assert faults.snapshot().rest_fail_for_s == 5
    clock.now += 5.01
    assert faults.rest_fault("x") is None
    assert faults.garbage_due(3) is False
    faults.update({"garbage_every": 3})
    assert faults.garbage_due(3) and faults.garbage_due(6) and not faults.garbage_due(4)


def test_invalid_fault_update_changes_nothing():
    faults = FaultState(FaultSettings(skip_frames=4))
    with pytest.raises(ValidationError):
        faults.update({"skip_frames": -1})
    with pytest.raises(ValidationError):
        faults.update({"no_such_fault": 1})
    assert faults.settings.skip_frames == 4


def test_fault_assignments_and_cli_config():
    assert parse_fault_assignments(["skip_frames=3", "skip_stream=btcusdt@aggTrade"]) == {
        "skip_frames": 3,
        "skip_stream": "btcusdt@aggTrade",
    }
    config = config_from_args(
        ["--recording", str(DATA), "--speed", "max", "--fault", "garbage_every=10", "--ws-port", "0"]
    )
    assert config.speed is None and config.faults.garbage_every == 10
    assert config.model_dump()["speed"] == "max"
    assert FakeExchangeConfig(recording=DATA, speed="10").speed == 10.0
    with pytest.raises(ValidationError):
        FakeExchangeConfig(recording=DATA, speed=0)
    with pytest.raises(ValidationError):
        FakeExchangeConfig()  # no session source


# -- generated bodies and weights -----------------------------------------------------------------
def test_period_stamps():
    five = 300_000
    assert period_stamps(five, 1_000_000, None, None, 3) == [300_000, 600_000, 900_000]
    assert period_stamps(five, 10_000_000, 250_000, None, 2) == [300_000, 600_000]
    assert period_stamps(five, 10_000_000, None, 1_000_000, 2) == [600_000, 900_000]


def test_generated_series_formats():
    rows = long_short_ratio("BTCUSDT", "global-account", [300_000, 600_000])
    for row in rows:
        assert set(row) == {"symbol", "longShortRatio", "longAccount", "shortAccount", "timestamp"}
        long_, short = float(row["longAccount"]), float(row["shortAccount"])
        assert long_ + short == pytest.approx(1.0)
        assert float(row["longShortRatio"]) == pytest.approx(long_ / short, abs=1e-4)
    assert rows == long_short_ratio("BTCUSDT", "global-account", [300_000, 600_000])  # deterministic
    oi = open_interest_hist("BTCUSDT", 30000.0, [300_000])[0]
    assert float(oi["sumOpenInterestValue"]) == pytest.approx(float(oi["sumOpenInterest"]) * 30000.0, rel=1e-9)
    assert isinstance(oi["timestamp"], int) and isinstance(oi["sumOpenInterest"], str)


def test_weights():
    now = [120.0]
    counter = MinuteWeightCounter(lambda: now[0])
    assert counter.add(request_weight("/fapi/v1/depth", {"limit": "1000"})) == 20
    assert counter.add(request_weight("/fapi/v1/aggTrades", {})) == 40
    assert counter.add(request_weight("/fapi/v1/premiumIndex", {})) == 50
    now[0] = 180.0  # next minute
    assert counter.add(request_weight("/fapi/v1/depth", {"limit": "5"})) == 2


def test_the_weight_limit_answers_429_then_bans_a_client_that_does_not_back_off():
    """Binance: over the limit a 429 with the seconds to the minute's end; a request inside that
    Retry-After earns a 418 ban, 2 minutes the first time, doubled for each repeat; every request inside
    a ban is a 418 with the ban's remaining seconds."""
    now = [600.0]  # 00:10:00 UTC
    limiter = WeightLimiter(100, lambda: now[0])
    assert [limiter.admit(20) for _ in range(5)] == [
        (20, 200, 0),
        (40, 200, 0),
        (60, 200, 0),
        (80, 200, 0),
        (100, 200, 0),
    ]
    now[0] = 630.0
    assert limiter.admit(20) == (120, 429, 30)  # 30 s to the minute's end
    now[0] = 640.0
    assert limiter.admit(1) == (121, 418, 120)  # did not wait: banned for 2 minutes
    now[0] = 700.0
    assert limiter.admit(1) == (0, 418, 60)  # inside the ban (a new minute: nothing metered)
    assert (limiter.requests_in_ban, limiter.http_429, limiter.http_418) == (1, 1, 2)
    now[0] = 760.0  # the ban is over
    assert limiter.admit(100) == (100, 200, 0)
    assert limiter.admit(1) == (101, 429, 20)  # 00:12:40: 20 s to the minute's end
    assert limiter.admit(1) == (102, 418, 240)  # the second ban is twice as long
    assert limiter.max_per_minute == 121 and limiter.by_minute == {10: 121, 12: 102}  # minute 11: banned
