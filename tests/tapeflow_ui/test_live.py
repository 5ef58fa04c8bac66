"""The pages' live updates follow the topics (``tapeflow_ui.live``), against this suite's broker and
PostgreSQL, the UI served by uvicorn: a bar published on ``bars.1m`` reaches a page with no database
row for it; a higher timeframe's pushed bar equals the stored candle once its minute is stored; a
topic created after the page connected is read from its first record; with no page listening it holds no consumer; a broker
that cannot be reached makes the pages poll the database.

One database, one server and one follower for the module; each test its own symbol (the follower's
topics are the module's, under its own prefix and home)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
import structlog
import structlog.testing
from confluent_kafka import Producer
from psycopg import sql

from schemas.catalogue import topic as topic_spec
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.migrate import migrate
from sinks.tables import table_for_topic, write_rows
from tapeflow_runtime.endpoints import resolve_broker
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings
from tapeflow_ui import live as live_module
from tapeflow_ui import queries as q
from tapeflow_ui.live import VIEWS, BarFold, LiveFollower, Throttle
from tests.support.ui_session import pair_event_record, signal_record
from tests.support.waiting import wait_until

MINUTE = 60_000
T0 = int(datetime(2024, 5, 6, 12, 0, tzinfo=UTC).timestamp() * 1000)  # a 5-minute (and hour) boundary
LINGER_S = 0.3
SPECS = [topic_spec(t) for t in ("bars.1m", "signals", "xv.features", "xv.pairs", "xv.orders", "xv.funding")]
XV = sorted(VIEWS["desk"])


def bar(symbol: str, open_ms: int, o: float, h: float, lo: float, c: float, buy: float, sell: float) -> dict:
    """A closed 1-minute bar as the engine publishes it (values hand-picked)."""
    vol = buy + sell
    return {
        "exchange": "binance",
        "symbol": symbol,
        "open_time": open_ms,
        "close_time": open_ms + MINUTE,
        "open": o,
        "high": h,
        "low": lo,
        "close": c,
        "volume": vol,
        "buy_volume": buy,
        "sell_volume": sell,
        "quote_volume": vol * c,
        "vwap": c,
        "trade_count": 3,
        "first_agg_id": open_ms // 1000,
        "last_agg_id": open_ms // 1000 + 2,
    }


# --- the fold, pure ------------------------------------------------------------------------------
def test_the_fold_builds_the_bar_as_the_candles_query_groups_minutes():
    fold = BarFold(300, int(q.ORIGIN.timestamp()))
    t = T0 // 1000
    m = [
        {"time": t + 60 * i, "open": o, "high": h, "low": lo, "close": c, "volume": b + s, "bought": b, "sold": s}
        for i, (o, h, lo, c, b, s) in enumerate(
            [(10, 12, 9, 11, 1.0, 2.0), (11, 15, 10, 14, 3.0, 0.5), (14, 14, 8, 9, 0.25, 4.0)]
        )
    ]
    assert fold.add(m[1]) and fold.add(m[0])  # out of order: the fold orders minutes by time
    assert fold.bar() == {
        "time": t,
        "open": 10,
        "high": 15,
        "low": 9,
        "close": 14,
        "volume": 6.5,
        "bought": 4.0,
        "sold": 2.5,
        "delta": 1.5,
    }
    assert fold.add({**m[1], "close": 13})  # the same minute again replaces it (the sink upserts)
    assert fold.bar()["close"] == 13
    assert fold.add(m[2])
    assert fold.bar() == {
        "time": t,
        "open": 10,
        "high": 15,
        "low": 8,
        "close": 9,
        "volume": 10.75,
        "bought": 4.25,
        "sold": 6.5,
        "delta": -2.25,
    }
    nxt = {**m[0], "time": t + 300}
    assert fold.is_new(nxt) and not fold.is_new(m[2])
    assert fold.add(nxt) and fold.bar()["time"] == t + 300 and fold.bar()["volume"] == 3.0
    assert not fold.add(m[2])  # older than the current bar (a re-delivered record): ignored
    assert fold.bar()["time"] == t + 300


def test_the_throttle_tells_a_change_once_settled_and_at_most_every_refresh():
    th = Throttle(refresh_s=5.0, settle_s=1.5)
    assert th.take(100.0) is None  # nothing changed
    th.note("bars.1m", 100.0)
    th.note("bars.1m", 100.4)  # the same burst: one change
    assert th.take(101.4) is None  # not settled: the sink may not have stored it
    assert th.take(101.5) == ["bars.1m"]
    assert th.take(101.6) is None
    th.note("xv.pairs", 102.0)  # settled at 103.5, but told at 101.5: not before 106.5
    th.note("xv.features", 104.0)
    assert th.take(106.4) is None
    assert th.take(106.5) == ["xv.features", "xv.pairs"]
    th.note("xv.pairs", 120.0)  # long after: settle only
    assert th.take(121.4) is None and th.take(121.5) == ["xv.pairs"]


# --- the follower against the broker --------------------------------------------------------------
class Site:
    def __init__(self, base, token, owner, follower, bootstrap, prefix, home, settings) -> None:
        self.base, self.token, self.owner, self.follower = base, token, owner, follower
        self.bootstrap, self.prefix, self.home, self.settings = bootstrap, prefix, home, settings
        self.serde = AvroSerde(FileSchemaRegistry())
        self.producer: Producer | None = None

    def publish(self, topic: str, record: dict, prefix: str | None = None) -> None:
        self.producer = self.producer or Producer(producer_config(self.bootstrap))
        key = record["coin"] if topic.startswith("xv.") else f"binance:{record['symbol']}"
        self.producer.produce(
            (prefix or self.prefix) + topic, key=key.encode(), value=self.serde.encode(topic, record), partition=0
        )
        assert self.producer.flush(10) == 0

    def store(self, *records: dict) -> None:
        spec = table_for_topic("bars.1m")
        with psycopg.connect(self.owner) as conn:
            write_rows(conn, spec, [spec.to_row(r) for r in records])

    def stream(self, symbol: str, tf: str = "1m") -> Events:
        return Events(self, f"/api/stream?symbol={symbol}&tf={tf}")

    def view(self, name: str) -> Events:
        """The overview's or the desk's stream."""
        return Events(self, f"/api/{name}/stream")


class Events:
    """A page's server-sent events, read line by line."""

    def __init__(self, site: Site, path: str) -> None:
        req = urllib.request.Request(site.base + path, headers={"Authorization": f"Bearer {site.token}"})
        self.resp = urllib.request.urlopen(req, timeout=30)
        assert self.resp.headers["content-type"].startswith("text/event-stream")

    def next(self, kind: str | None = None) -> tuple[str, dict]:
        event = None
        while True:
            line = self.resp.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            line = line.rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and (kind is None or event == kind):
                return event, json.loads(line[6:])

    def close(self) -> None:
        self.resp.close()

    def __enter__(self) -> Events:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(app):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn did not start", interval=0.02)
    assert server.started
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


@pytest.fixture(scope="module")
def site(pg_server, kafka_bootstrap, tmp_path_factory):
    from tapeflow_ui.app import create_app

    name = f"t_live_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    owner = pg_server.conninfo(name)
    migrate(owner)
    home = tmp_path_factory.mktemp("live-home")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings(home=home, broker=kafka_bootstrap, topic_prefix=prefix)
    ensure_topics(kafka_bootstrap, prefix=prefix, specs=SPECS)
    follower = LiveFollower(
        lambda: kafka_bootstrap, AvroSerde(FileSchemaRegistry()), prefix, linger_s=LINGER_S, check_s=0.2
    )
    token = "t" * 40
    server, thread, base = serve(create_app(owner, token, live=follower))
    try:
        yield Site(base, token, owner, follower, kafka_bootstrap, prefix, home, settings)
    finally:
        server.should_exit = True
        thread.join(30)
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_published_bar_reaches_the_page_without_a_database_row(site):
    stored = bar("LIVEAUSDT", T0, 100.0, 101.0, 99.5, 100.5, 2.0, 1.0)
    site.store(stored)
    with site.stream("LIVEAUSDT") as page:
        assert page.next("bar")[1] == {
            "time": T0 // 1000,
            "open": 100.0,
            "high": 101.0,
            "low": 99.5,
            "close": 100.5,
            "volume": 3.0,
            "bought": 2.0,
            "sold": 1.0,
            "delta": 1.0,
        }  # the stored bar first
        assert page.next("live")[1] == {"source": "topics"}
        published = bar("LIVEAUSDT", T0 + MINUTE, 100.5, 103.25, 100.0, 102.0, 4.5, 0.75)
        sent = time.monotonic()
        site.publish("bars.1m", published)
        got = page.next("bar")[1]
        print(f"bars.1m record -> page: {1000 * (time.monotonic() - sent):.0f} ms")
        assert got == {
            "time": (T0 + MINUTE) // 1000,
            "open": 100.5,
            "high": 103.25,
            "low": 100.0,
            "close": 102.0,
            "volume": 5.25,
            "bought": 4.5,
            "sold": 0.75,
            "delta": 3.75,
        }
        with psycopg.connect(site.owner) as conn:  # it came from the topic: the database never had it
            assert conn.execute("SELECT count(*) FROM bars_1m WHERE symbol = 'LIVEAUSDT'").fetchone()[0] == 1
        signal = signal_record("LIVEAUSDT", T0 + MINUTE + 5_000, "LONG", 102.0, 1)
        site.publish("signals", signal)
        assert page.next("signal")[1] == {
            "time": (T0 + MINUTE + 5_000) // 1000,
            "symbol": "LIVEAUSDT",
            "direction": "LONG",
            "tier": "standard",
            "score": 61.5,
            "price": 102.0,
            "strategy": "flow_scalper",
            "signal_id": "ui-test-LIVEAUSDT-1",
        }
        site.publish("bars.1m", {**published, "symbol": "OTHERUSDT"})  # another symbol's: not this page's
        sent = time.monotonic()
        site.publish("bars.1m", bar("LIVEAUSDT", T0 + 2 * MINUTE, 102.0, 102.5, 101.0, 101.5, 1.0, 1.0))
        assert page.next("bar")[1]["time"] == (T0 + 2 * MINUTE) // 1000
        print(f"bars.1m record -> page, the producer connected: {1000 * (time.monotonic() - sent):.0f} ms")


def test_a_higher_timeframe_bar_equals_the_stored_candle_once_its_minute_is_stored(site):
    minutes = [
        bar("LIVEBUSDT", T0 + i * MINUTE, 50.0 + i, 52.0 + i, 49.0 + i, 51.0 + i, 0.5 + i, 0.25 * i) for i in range(4)
    ]
    site.store(*minutes[:2])
    with site.stream("LIVEBUSDT", "5m") as page:
        first = page.next("bar")[1]
        assert (first["time"], first["open"], first["close"], first["volume"]) == (T0 // 1000, 50.0, 52.0, 0.5 + 1.75)
        assert page.next("live")[1] == {"source": "topics"}
        site.publish("bars.1m", minutes[2])
        pushed = page.next("bar")[1]
        site.publish("bars.1m", minutes[3])
        pushed_later = page.next("bar")[1]
    site.store(minutes[2])
    with psycopg.connect(site.owner) as conn:  # what a reload would show: the REST candles
        c = q.candles(conn, "LIVEBUSDT", "5m", q.Range(q.from_ts(T0 // 1000), q.from_ts(T0 // 1000 + 300)))
    reloaded = {k: v[-1] for k, v in c.items() if k not in ("cvd", "vwap")}
    assert pushed.keys() == reloaded.keys()
    assert pushed == {k: pytest.approx(v, rel=1e-12) for k, v in reloaded.items()}
    site.store(minutes[3])
    with psycopg.connect(site.owner) as conn:
        c = q.candles(conn, "LIVEBUSDT", "5m", q.Range(q.from_ts(T0 // 1000), q.from_ts(T0 // 1000 + 300)))
    assert pushed_later == {k: pytest.approx(v[-1], rel=1e-12) for k, v in c.items() if k not in ("cvd", "vwap")}


def test_no_consumer_while_no_page_listens_and_one_when_a_page_connects(site):
    follower = site.follower
    wait_until(
        lambda: follower.listeners == 0 and not follower.consumer_open,
        30,
        "the consumer was not closed after the last page left",
        interval=0.02,
    )
    polls, starts = follower.polls, follower.starts
    assert not follower.positioned and follower.reading == []
    with site.stream("LIVEDUSDT") as page:
        assert page.next("live")[1] == {"source": "topics"}  # a new consumer, at the topics' ends
        assert follower.consumer_open and follower.starts == starts + 1 and follower.listeners == 1
        with site.stream("LIVEDUSDT", "15m") as second:  # a second page shares it
            assert second.next("live")[1] == {"source": "topics"}
            assert follower.starts == starts + 1 and follower.listeners == 2
            site.publish("bars.1m", bar("LIVEDUSDT", T0, 5.0, 6.0, 4.0, 5.5, 1.0, 2.0))
            assert page.next("bar")[1]["close"] == 5.5 and second.next("bar")[1]["close"] == 5.5
        wait_until(lambda: follower.listeners == 1, 30, "the second page's listener was not removed", interval=0.02)
        assert follower.consumer_open  # one page still listens
    wait_until(
        lambda: not follower.consumer_open, 30, "the consumer was not closed after the last page left", interval=0.02
    )
    assert follower.polls > polls
    after = follower.polls
    assert follower.listeners == 0 and follower._thread is None and follower.polls == after


def test_the_overview_gets_every_symbols_signals_and_a_change_of_the_bars(site):
    with site.view("overview") as page:
        assert page.next("live")[1] == {"source": "topics"}
        assert site.follower.following == ("bars.1m", "signals")
        site.publish("signals", signal_record("LIVEHUSDT", T0 + 5_000, "SHORT", 7.0, 1))
        assert page.next("signal")[1] == {
            "time": (T0 + 5_000) // 1000,
            "symbol": "LIVEHUSDT",
            "direction": "SHORT",
            "tier": "standard",
            "score": 61.5,
            "price": 7.0,
            "strategy": "flow_scalper",
            "signal_id": "ui-test-LIVEHUSDT-1",
        }
        site.publish("bars.1m", bar("LIVEHUSDT", T0, 7.0, 7.5, 6.5, 7.25, 1.0, 1.0))
        site.publish("bars.1m", bar("LIVEIUSDT", T0, 3.0, 3.5, 2.5, 3.25, 1.0, 1.0))
        # the bars are not pushed to the overview: it is told they changed (and re-reads its table)
        assert page.next() == ("changed", {"topics": ["bars.1m"]})


def test_the_desk_is_told_of_the_watchlist_topics_and_the_consumer_reads_what_the_open_pages_need(site):
    follower = site.follower
    with site.stream("LIVEJUSDT") as chart:
        assert chart.next("live")[1] == {"source": "topics"}
        assert follower.following == ("bars.1m", "signals")
        assert not [t for t in follower.reading if "xv." in t]
        starts = follower.starts
        with site.view("desk") as desk:
            assert desk.next("live")[1] == {"source": "topics"}  # once its topics are read, from their end
            assert follower.starts == starts  # the same consumer, the watchlist's topics added
            assert follower.following == tuple(sorted(["bars.1m", "signals", *XV]))
            assert {site.prefix + t for t in XV} <= set(follower.reading)
            site.publish("xv.pairs", pair_event_record("ui-live-pair-1", "LIVEJ", T0, 3.0))
            assert desk.next() == ("changed", {"topics": ["xv.pairs"]})
        wait_until(
            lambda: follower.following == ("bars.1m", "signals") and not [t for t in follower.reading if "xv." in t],
            30,
            lambda: f"the watchlist's topics were not dropped: {follower.reading}",
            interval=0.02,
        )
        site.publish("bars.1m", bar("LIVEJUSDT", T0, 5.0, 6.0, 4.0, 5.5, 1.0, 2.0))
        assert chart.next("bar")[1]["close"] == 5.5  # the chart's topics kept their positions


@contextlib.contextmanager
def own_site(pg_server, follower: LiveFollower, home, poll_s: float = 10.0):
    """A database and a server of their own, around ``follower``."""
    from tapeflow_ui.app import create_app

    name = f"t_live_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    owner = pg_server.conninfo(name)
    migrate(owner)
    app = create_app(owner, "t" * 40, live=follower, poll_s=poll_s)
    server, thread, base = serve(app)
    try:
        site = Site(base, "t" * 40, owner, follower, "", "", home, None)
        site.app, site.server, site.thread = app, server, thread
        yield site
    finally:
        server.should_exit = True
        thread.join(30)
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_without_a_broker_the_page_polls_the_database_and_the_log_says_so_once(pg_server, tmp_path, monkeypatch):
    """No stack running in the home (``resolve_broker`` refuses): the stored bar, polled.

    The log is read from the module's logger itself: an earlier test in the worker may have configured
    structlog to print to a stream neither ``capsys`` nor ``capfd`` sees, and loggers cache their stream.
    """
    said = structlog.testing.CapturingLogger()
    monkeypatch.setattr(
        live_module, "log", structlog.wrap_logger(said, wrapper_class=structlog.BoundLogger, processors=[])
    )
    settings = Settings(home=tmp_path, broker=None)
    follower = LiveFollower(
        lambda: resolve_broker(settings, StackPaths(tmp_path)),
        AvroSerde(FileSchemaRegistry()),
        "",
        linger_s=LINGER_S,
        retry_s=600,
    )
    with own_site(pg_server, follower, tmp_path) as site:
        site.store(bar("LIVEEUSDT", T0, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0))
        for _ in range(2):
            with site.stream("LIVEEUSDT") as page:
                assert page.next("bar")[1]["close"] == 1.5
                assert page.next("live")[1] == {"source": "database"}
                assert page.next("bar")[1]["close"] == 1.5  # the poll's first answer
        assert follower.starts == 1 and not follower.consumer_open  # the second page did not try again
        assert "EndpointError" in follower.unreachable
        warned = [c for c in said.calls if "cannot read the broker's topics" in c.kwargs.get("event", "")]
        assert [c.method_name for c in warned] == ["warning"]


def test_without_a_broker_the_overview_and_the_desk_re_read_the_database_every_poll(pg_server, tmp_path):
    settings = Settings(home=tmp_path, broker=None)
    follower = LiveFollower(
        lambda: resolve_broker(settings, StackPaths(tmp_path)),
        AvroSerde(FileSchemaRegistry()),
        "",
        linger_s=LINGER_S,
        retry_s=600,
    )
    with own_site(pg_server, follower, tmp_path, poll_s=0.5) as site:
        for view in ("overview", "desk"):
            with site.view(view) as page:
                assert page.next() == ("live", {"source": "database", "every_s": 0.5})
                assert page.next() == ("changed", {"topics": [], "poll": True})
                assert page.next() == ("changed", {"topics": [], "poll": True})
        assert follower.starts == 1 and not follower.consumer_open


def test_a_broker_that_moves_while_a_page_listens_sends_the_page_to_the_database(pg_server, kafka_bootstrap, tmp_path):
    """`down` and `up` while a page is open: the stack's broker is elsewhere now; the page polls."""
    where = [kafka_bootstrap]
    follower = LiveFollower(
        lambda: where[0],
        AvroSerde(FileSchemaRegistry()),
        f"t{uuid.uuid4().hex[:10]}.",
        linger_s=LINGER_S,
        retry_s=600,
        check_s=0.1,
    )
    with own_site(pg_server, follower, tmp_path) as site:
        site.store(bar("LIVEFUSDT", T0, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0))
        with site.stream("LIVEFUSDT") as page:
            assert page.next("bar")[1]["close"] == 1.5
            assert page.next("live")[1] == {"source": "topics"}
            where[0] = "127.0.0.1:1"
            assert page.next("live")[1] == {"source": "database"}
            assert page.next("bar")[1]["close"] == 1.5
        assert "the broker moved" in follower.unreachable
        wait_until(lambda: not follower.consumer_open, 30, "the consumer was not closed", interval=0.02)


def test_a_topic_created_after_the_page_connected_is_read_from_its_first_record(pg_server, kafka_bootstrap, tmp_path):
    """The page is live on the topics that exist (none here); ``bars.1m`` created later is found within
    ``check_s`` and read from its beginning: everything in it is newer than the page."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    follower = LiveFollower(
        lambda: kafka_bootstrap, AvroSerde(FileSchemaRegistry()), prefix, linger_s=LINGER_S, check_s=0.1
    )
    with own_site(pg_server, follower, tmp_path) as site:
        site.bootstrap, site.prefix = kafka_bootstrap, prefix
        with site.stream("LIVECUSDT") as page:
            assert page.next("live")[1] == {"source": "topics"}
            assert follower.reading == []  # nothing to read yet
            ensure_topics(kafka_bootstrap, prefix=prefix, specs=SPECS)
            site.publish("bars.1m", bar("LIVECUSDT", T0, 10.0, 11.0, 9.0, 10.5, 1.0, 1.0))
            assert page.next("bar")[1] == {
                "time": T0 // 1000,
                "open": 10.0,
                "high": 11.0,
                "low": 9.0,
                "close": 10.5,
                "volume": 2.0,
                "bought": 1.0,
                "sold": 1.0,
                "delta": 0.0,
            }
            assert follower.reading == sorted([prefix + "bars.1m", prefix + "signals"])


@pytest.mark.parametrize("live", [True, False], ids=["topics", "database-poll"])
def test_open_streams_end_when_the_server_shuts_down(pg_server, kafka_bootstrap, tmp_path, live):
    """`tapeflow ui` sets ``closing`` on SIGTERM (``service.run_ui``): a page left open does not hold the
    graceful shutdown (uvicorn waits for every response to finish)."""
    follower = (
        LiveFollower(
            lambda: kafka_bootstrap, AvroSerde(FileSchemaRegistry()), f"t{uuid.uuid4().hex[:10]}.", linger_s=LINGER_S
        )
        if live
        else None
    )
    with own_site(pg_server, follower, tmp_path) as site:
        site.store(bar("LIVEGUSDT", T0, 1.0, 2.0, 0.5, 1.5, 1.0, 1.0))
        with site.stream("LIVEGUSDT") as page:
            assert page.next("bar")[1]["close"] == 1.5
            if live:
                assert page.next("live")[1] == {"source": "topics"}
            site.app.state.closing.set()
            site.server.should_exit = True
            site.thread.join(30)
            assert not site.thread.is_alive(), "the server waited for the open page"
            with pytest.raises(EOFError):
                page.next()
        assert follower is None or not follower.consumer_open
