"""The consumer-lag light (``tapeflow_ui.overview.lag_light``) from hand-made lag snapshots: the states
at the documented limits, a figure that stopped refreshing, a broker that does not answer; the funding
heatmap and the freshness lights on a real PostgreSQL with hand-computed answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sinks.partitions import ensure_partitions
from tapeflow_ui.overview import LAG_BAD, LAG_STALE_S, LAG_WARN, LagWatch, data_quality, funding_heatmap, lag_light


def group(name: str, lag: int, state: str = "stable", members: int = 1) -> dict:
    return {"group": name, "state": state, "members": members, "total_lag": lag, "partitions": []}


def snap(groups, at: float = 1000.0, error: str | None = None) -> dict:
    return {"groups": groups, "fetched_at": at, "error": error, "warn": LAG_WARN, "bad": LAG_BAD}


def test_the_worst_group_sets_the_light_at_the_documented_limits():
    assert lag_light(snap([group("a", 0), group("b", LAG_WARN)]), 1000.0)["state"] == "ok"
    warn = lag_light(snap([group("a", LAG_WARN + 1), group("b", 3)]), 1000.0)
    assert warn["state"] == "warn" and warn["detail"] == f"a: {LAG_WARN + 1:,} behind (stable, 1 members)"
    bad = lag_light(snap([group("a", LAG_WARN + 1), group("sink", LAG_BAD + 1, "empty", 0)]), 1000.0)
    assert bad["state"] == "bad" and bad["detail"].startswith(f"sink: {LAG_BAD + 1:,} behind (empty, 0 members); a: ")
    assert bad["link"] == "/api/quality/lag"
    assert lag_light(snap([]), 1000.0) | {"link": None} == {
        "check": "consumer lag",
        "state": "ok",
        "detail": "0 groups, at most 0 records behind",
        "link": None,
    }


def test_an_old_figure_or_a_silent_broker_is_not_ok():
    stale = lag_light(snap([group("a", 0)]), 1000.0 + LAG_STALE_S + 1)
    assert stale["state"] == "warn" and stale["detail"].endswith(f"figure {LAG_STALE_S + 1:.0f} s old")
    assert lag_light(snap([group("a", LAG_BAD + 1)]), 1000.0 + LAG_STALE_S + 1)["state"] == "bad"
    never = lag_light({"groups": None, "fetched_at": None, "error": "KafkaException: timed out"}, 1000.0)
    assert never["state"] == "bad" and "timed out" in never["detail"]
    assert lag_light(None, 1000.0)["state"] == "info"


def test_the_watch_keeps_the_last_answer_and_says_when_the_broker_fails():
    answers = [[group("a", 7)], RuntimeError("no broker")]

    def fetch():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    watch = LagWatch(fetch, clock=lambda: 50.0)
    watch.refresh()
    assert watch.snapshot()["groups"] == [group("a", 7)] and watch.snapshot()["fetched_at"] == 50.0
    watch.refresh()
    snapshot = watch.snapshot()
    assert snapshot["groups"] == [group("a", 7)] and snapshot["error"] == "RuntimeError: no broker"
    assert lag_light(snapshot, 55.0)["state"] == "warn"  # the last figure, not trusted any more


def test_the_lag_watch_asks_the_broker_only_while_a_page_shows_the_light():
    """Each lag figure costs the embedded broker a listing of every batch: nobody looking, no asking."""
    import threading

    from tapeflow_ui.overview import LAG_ACTIVE_S

    now = [1_000.0]
    asked = threading.Event()
    calls = []

    def fetch():
        calls.append(now[0])
        asked.set()
        return []

    watch = LagWatch(fetch, refresh_s=0.05, clock=lambda: now[0])
    watch.start()
    try:
        assert not asked.wait(0.5) and calls == []  # started, never looked at: silent
        watch.snapshot()  # a page shows the light: asked at once, then every period
        assert asked.wait(5)
        asked.clear()
        assert asked.wait(5)
        now[0] += LAG_ACTIVE_S + 1  # nobody looked since
        while asked.wait(0.3):  # the period in flight may still ask once
            asked.clear()
        assert not asked.wait(0.5)
        watch.snapshot()
        assert asked.wait(5)  # woken by the next look
    finally:
        watch.stop()


# --- the overview's SQL on a real PostgreSQL, with hand-computed answers ---------------------------------

T = datetime(2024, 3, 1, 11, 30, tzinfo=UTC)  # the data's "now": the newest bar's close


def _mark(conn, exchange: str, symbol: str, at: datetime, rate: float) -> None:
    conn.execute(
        "INSERT INTO mark_prices VALUES (%s, %s, 100, 100, %s, %s, %s, %s)",
        (exchange, symbol, rate, at + timedelta(hours=8), at, at),
    )


def _bar(conn, symbol: str, open_time: datetime) -> None:
    conn.execute(
        "INSERT INTO bars_1m VALUES ('binance', %s, %s, %s, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1)",
        (symbol, open_time, open_time + timedelta(minutes=1)),
    )


def _trade(conn, agg_id: int, at: datetime) -> None:
    conn.execute(
        "INSERT INTO trades VALUES ('binance', 'BTCUSDT', %s, 100, 1, %s, %s, %s, %s, %s, 'BUY')",
        (agg_id, agg_id, agg_id, at, at, at),
    )


@pytest.fixture
def db(migrated_database) -> str:
    with psycopg.connect(migrated_database) as conn:
        for table in ("trades", "bars_1m", "mark_prices"):
            ensure_partitions(conn, table, T - timedelta(days=1), T + timedelta(days=1))
        for symbol in ("BTCUSDT", "ETHUSDT"):
            _bar(conn, symbol, T - timedelta(minutes=1))
        _mark(conn, "binance", "BTCUSDT", T - timedelta(hours=2, minutes=1), 0.0009)  # before the 2 h asked for
        _mark(conn, "binance", "BTCUSDT", T - timedelta(minutes=90), 0.0001)  # 10:00
        _mark(conn, "binance", "BTCUSDT", T - timedelta(minutes=60), 0.0003)  # 10:30
        _mark(conn, "binance", "BTCUSDT", T - timedelta(minutes=15), 0.0002)  # 11:15
        _mark(conn, "binance", "ETHUSDT", T - timedelta(minutes=31), -0.0001)  # 10:59
        _mark(conn, "bybit", "BTCUSDT", T - timedelta(minutes=60), 0.5)  # another venue: not in the overview
        _mark(conn, "binance", "BTCUSDT", T + timedelta(seconds=1), 0.7)  # after the newest bar
        _trade(conn, 1, T - timedelta(minutes=2))
        _trade(conn, 2, T - timedelta(seconds=10))
        _trade(conn, 3, T + timedelta(seconds=20))  # in the open minute, after the newest bar
    return migrated_database


def test_funding_heatmap_averages_each_symbols_marks_per_utc_hour(db):
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tapeflow_readonly")
        cells = funding_heatmap(conn, T, hours=2)["cells"]
        assert funding_heatmap(conn, T, hours=2, symbols=["BTCUSDT", "ETHUSDT"])["cells"] == cells
    h10, h11 = int(T.replace(hour=10, minute=0).timestamp()), int(T.replace(minute=0).timestamp())
    assert [c[:2] for c in cells] == [["BTCUSDT", h10], ["BTCUSDT", h11], ["ETHUSDT", h10]]
    assert [c[2] for c in cells] == pytest.approx([0.0002, 0.0002, -0.0001])


def test_freshness_lights_take_each_symbols_newest_row_up_to_the_newest_bar(db):
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tapeflow_readonly")
        lights = {li["check"]: (li["state"], li["detail"]) for li in data_quality(conn, T, now_s=0.0)}
    assert lights["trades fresh"] == ("ok", "newest row 10 s before the newest bar")  # agg 3 is after it
    assert lights["mark_prices fresh"] == ("warn", "newest row 900 s before the newest bar")  # > 120 s
    assert lights["bars_1m fresh"] == ("ok", "newest row 0 s before the newest bar")
    assert lights["features fresh"] == ("bad", "nothing in the 30 min before the newest bar")
    assert lights["depth_snapshots fresh"][0] == "bad"
