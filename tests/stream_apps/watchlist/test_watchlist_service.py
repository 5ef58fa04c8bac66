"""The watchlist service through the real broker and database: two venues' books and marks in,
xv.features out with spreads equal to a hand computation from those books, a stale leg's pairs
missing with the reason, the same records after a restart from a checkpoint and from a fresh group,
and re-delivered records stored once by the sink."""

from __future__ import annotations

import math
import threading
import time

import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from sinks.consumer import SinkConfig, TopicSink
from sinks.migrate import migrate
from stream_apps.cross_venue.state import CrossVenueParams
from stream_apps.watchlist.service import WatchlistOptions, WatchlistService
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics, producer_config
from tapeflow_runtime.settings import Settings
from tests.support.cross_venue import T, book, mark, running_watchlist
from tests.support.execution import SERDE
from tests.support.executor_io import Watcher

pytestmark = pytest.mark.integration

BINANCE = dict(bids=[(100.0, 50.0), (99.9, 100.0)], asks=[(100.1, 50.0), (100.2, 100.0)])
OKX = dict(bids=[(100.3, 30.0), (100.2, 100.0)], asks=[(100.4, 40.0), (100.5, 100.0)])
NOTIONAL = 10_000.0


def _produce(bootstrap: str, prefix: str, items: list[tuple[str, str, dict]]) -> None:
    producer = Producer(producer_config(bootstrap))
    for topic, key, record in items:
        producer.produce(prefix + topic, key=key.encode(), value=SERDE.encode(topic, record))
    assert producer.flush(30) == 0


def _books(k_range, venues=("binance", "okx")) -> list[tuple[str, str, dict]]:
    out = []
    for k in k_range:
        for venue, offset, levels in (("binance", 100, BINANCE), ("okx", 200, OKX)):
            if venue in venues:
                out.append(("md.book", f"{venue}:BTCUSDT", book(venue, "BTCUSDT", T + offset + k * 1000, **levels)))
    return out


def _vwap(levels: list[tuple[float, float]]) -> float:
    """Hand sweep of NOTIONAL through `levels` (enough depth in the second level)."""
    (p1, q1), (p2, _) = levels
    return NOTIONAL / (q1 + (NOTIONAL - p1 * q1) / p2)


def _wait_count(watcher: Watcher, n: int, timeout: float = 40.0) -> list[dict]:
    end = time.monotonic() + timeout
    while len(watcher.seen["xv.features"]) < n and time.monotonic() < end:
        watcher.pump(0.2)
    assert len(watcher.seen["xv.features"]) >= n, watcher.seen["xv.features"][-3:]
    return watcher.seen["xv.features"]


def test_features_from_two_venues_by_hand_stale_leg_restart_and_sink(kafka_bootstrap, topic_prefix, tmp_path, database):
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    settings = Settings(home=tmp_path / "a", broker=kafka_bootstrap, topic_prefix=topic_prefix)

    def options(group: str) -> WatchlistOptions:
        return WatchlistOptions(
            params=CrossVenueParams(venues=("binance", "okx"), sweep_notional_usd=NOTIONAL),
            publish_interval_ms=1_000,
            lateness_ms=1_000,
            prime_history_ms=None,
            start_from="earliest",
            group_id=topic_prefix + group,
            checkpoint_interval_s=1.0,
        )

    # the first half: marks, then books of both venues every second from T+100 (binance) / T+200 (okx)
    _produce(
        kafka_bootstrap,
        topic_prefix,
        [
            ("md.mark", "binance:BTCUSDT", mark("binance", "BTCUSDT", T + 50, 0.0001, T + 3_600_000)),
            ("md.mark", "okx:BTCUSDT", mark("okx", "BTCUSDT", T + 60, 0.0003, T + 3_600_000)),
        ]
        + _books(range(5)),
    )
    watcher = Watcher(kafka_bootstrap, topic_prefix, ["xv.features"])
    run = fresh = None
    try:
        run = running_watchlist(settings, options("w"))
        # held for lateness: up to T+4200-1000 -> evaluations T+1000..T+3000, two pairs each
        _wait_count(watcher, 6)
        assert run.close() == 0
        # the second half: binance goes on to T+9100, okx stops at T+4200 (stale from T+7000 on)
        _produce(kafka_bootstrap, topic_prefix, _books(range(5, 10), venues=("binance",)))
        run = running_watchlist(settings, options("w"))  # restored from its checkpoint
        _wait_count(watcher, 16)  # evaluations T+1000..T+8000 (released up to T+9100-1000)
        assert run.close() == 0
        # a fresh group and home computes the same records from scratch, in one go
        fresh = running_watchlist(
            Settings(home=tmp_path / "b", broker=kafka_bootstrap, topic_prefix=topic_prefix), options("fresh")
        )
        seen = _wait_count(watcher, 32)
        assert fresh.close() == 0
        watcher.pump(1.0)
    finally:
        for service in (run, fresh):
            if service is not None and service.thread.is_alive():
                service.close()
        watcher.close()
    seen = watcher.seen["xv.features"]
    assert len(seen) == 32 and watcher.keys == {b"BTC"}
    by_id: dict[str, dict] = {}
    for record in seen:
        assert by_id.setdefault(record["feature_id"], record) == record  # same id, same values
    assert len(by_id) == 16
    assert sorted({r["eval_time"] for r in by_id.values()}) == [T + k * 1000 for k in range(1, 9)]

    # by hand, from the books: sell on okx, buy on binance, and the other way
    ok = by_id[f"BTC:{T + 3000}:okx:binance"]
    assert ok["spread_top"] == pytest.approx(math.log(100.3 / 100.1), rel=1e-12)
    assert ok["sell_sweep_bid"] == pytest.approx(_vwap(OKX["bids"]), rel=1e-12)
    assert ok["buy_sweep_ask"] == pytest.approx(_vwap(BINANCE["asks"]), rel=1e-12)
    assert ok["spread_sweep"] == pytest.approx(math.log(_vwap(OKX["bids"]) / _vwap(BINANCE["asks"])), rel=1e-12)
    assert ok["funding_diff"] == pytest.approx(0.0003 - 0.0001) and ok["funding_diff_8h"] is None
    assert ok["missing"]["funding_diff_8h"].startswith("funding interval of ")
    assert ok["sell_book_age_ms"] == 800 and ok["buy_book_age_ms"] == 900 and ok["leg_skew_ms"] == 100
    back = by_id[f"BTC:{T + 3000}:binance:okx"]
    assert back["spread_top"] == pytest.approx(math.log(100.0 / 100.4), rel=1e-12)
    assert back["spread_sweep"] == pytest.approx(math.log(_vwap(BINANCE["bids"]) / _vwap(OKX["asks"])), rel=1e-12)
    assert "spread_sweep" not in back["missing"] and back["stats"]["sweep_1h_n"] is not None
    # okx's last book is T+4200: fresh at T+6000 (1.8 s), stale at T+7000 (2.8 s > 2 s)
    assert by_id[f"BTC:{T + 6000}:okx:binance"]["spread_sweep"] is not None
    for e, age in ((7000, "2.8"), (8000, "3.8")):
        stale = by_id[f"BTC:{T + e}:okx:binance"]
        assert stale["spread_top"] is None and stale["spread_sweep"] is None
        assert stale["missing"]["spread_top"] == f"stale leg okx: {age} s old"

    # the sink stores the 32 deliveries (16 re-delivered) as 16 rows
    migrate(database)
    sink = TopicSink(
        SinkConfig(
            topics=["xv.features"],
            topic_prefix=topic_prefix,
            group_id=f"{topic_prefix}sink",
            batch_rows=500,
            batch_ms=100,
            max_backoff_s=1.0,
        ),
        kafka_bootstrap,
        database,
        SERDE,
    )
    done = threading.Event()
    thread = threading.Thread(target=sink.run, kwargs={"should_stop": done.is_set}, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with psycopg.connect(database) as conn:
                rows = conn.execute("SELECT count(*), count(DISTINCT feature_id) FROM xv_features").fetchone()
            if rows[0] >= 16:
                break
            time.sleep(0.3)
        time.sleep(1.0)  # the re-delivered half, if it came later, would be here now
        with psycopg.connect(database) as conn:
            rows = conn.execute("SELECT count(*), count(DISTINCT feature_id) FROM xv_features").fetchone()
            spread = conn.execute(
                "SELECT spread_sweep FROM xv_features WHERE feature_id = %s", (ok["feature_id"],)
            ).fetchone()[0]
    finally:
        done.set()
        thread.join(30)
    assert rows == (16, 16)
    assert spread == ok["spread_sweep"]


def test_checkpoint_positions_the_group_never_committed_are_not_used(kafka_bootstrap, topic_prefix, tmp_path):
    """Topics deleted and created again under the same names start at offset 0: a checkpoint's offsets
    would point into other data. They are used only where the group committed them; the state is kept."""
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    settings = Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix)
    options = WatchlistOptions(group_id=topic_prefix + "w")
    service = WatchlistService(settings, kafka_bootstrap, SERDE, options)
    service.merge.assign({("md.book", 0): 5, ("md.mark", 2): 7})
    assert service.checkpoint()  # no consumer: written, nothing committed
    again = WatchlistService(settings, kafka_bootstrap, SERDE, options)
    assert again.positions == {("md.book", 0): 5, ("md.mark", 2): 7}
    consumer = Consumer(consumer_config(kafka_bootstrap, topic_prefix + "w"))
    consumer.commit(offsets=[TopicPartition(topic_prefix + "md.book", 0, 5)], asynchronous=False)
    consumer.close()
    assert again.forget_foreign_positions() == 1
    assert again.positions == {("md.book", 0): 5}


def test_an_indicator_timed_far_ahead_of_the_books_is_dropped(kafka_bootstrap, topic_prefix, tmp_path):
    """A replayed or synthetic session's polled indicators carry the wall clock as receive time, years
    after the books: fed, one would move the grid past every later book. Dropped (and counted), the
    books after it are evaluated as usual, also by a restart from the checkpoint.

    The later books are produced while the service is stopped: the far-ahead indicator is the merge's
    newest time, so its lateness cap holds nothing back, and a running service that had read both
    venues to their end could fetch one venue's new books before the other's (CI saw that once)."""
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    settings = Settings(home=tmp_path, broker=kafka_bootstrap, topic_prefix=topic_prefix)
    options = WatchlistOptions(
        params=CrossVenueParams(venues=("binance", "okx"), sweep_notional_usd=NOTIONAL),
        publish_interval_ms=1_000,
        lateness_ms=0,
        prime_history_ms=None,
        start_from="earliest",
    )
    future = {
        "exchange": "okx",
        "symbol": "BTCUSDT",
        "kind": "funding_rate",
        "value": 0.0001,
        "period": None,
        "extra": {"next_funding_time": float(T + 3_600_000)},
        "event_time": T,
        "receive_time": T + 3_600_000,
    }
    _produce(kafka_bootstrap, topic_prefix, _books(range(5)) + [("md.indicators", "okx:BTCUSDT", future)])
    watcher = Watcher(kafka_bootstrap, topic_prefix, ["xv.features"])
    run = running_watchlist(settings, options)
    try:
        _wait_count(watcher, 8)  # T+1000..T+4000: nothing held back, the indicator's time is the newest
        assert run.close() == 0
        _produce(kafka_bootstrap, topic_prefix, _books(range(5, 7)))
        run = running_watchlist(settings, options)  # restored from its checkpoint
        seen = _wait_count(watcher, 12)  # T+5000, T+6000 from the later books
    finally:
        if run.thread.is_alive():
            assert run.close() == 0
        watcher.close()
    at = {(r["eval_time"], r["sell_venue"]): r for r in seen}
    assert at[(T + 6000, "okx")]["sell_book_age_ms"] == 800 and at[(T + 6000, "okx")]["buy_book_age_ms"] == 900
    checkpoint = orjson.loads(next((tmp_path / "watchlist").iterdir()).read_bytes())
    assert checkpoint["ahead"] == 1 and checkpoint["state"]["counters"]["late"] == 0
