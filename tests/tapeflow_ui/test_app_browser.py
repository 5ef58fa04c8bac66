"""The web UI against a real PostgreSQL holding a generated session (``tests.support.ui_session``: the
rows the sink writes), served by uvicorn and opened in headless Chromium over the DevTools protocol.

One fixture for the module (database, server, browser): each view renders with data; the footprint of
a chosen bar equals the per-price bought/sold volume summed here from the trades table; the volume
profile's POC equals a SQL recomputation; the heatmap's cells equal the stored book sizes; requests
without the token are refused. Screenshots of each view go to the module's tmp dir (paths printed).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from sinks.migrate import migrate
from sinks.tables import table_for_topic, write_rows
from tapeflow_runtime.paths import StackPaths
from tapeflow_ui.security import COOKIE, csrf_value, load_token
from tests.support.chromium import CHROMIUM, DevTools
from tests.support.ui_server import serving
from tests.support.ui_session import (
    UI_STRATEGY,
    UI_WINDOWS,
    WALL_STRATEGIES,
    floor_index,
    signal_record,
    store_signals,
    store_synthetic,
    store_wall_features,
    store_watchlist_session,
    watchlist_events,
)
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (deploy/bootstrap.sh)"),
]

START = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
HOURS = 2
SYMBOLS = ["BTCUSDT", "ETHUSDT"]
#: a book resync as the producer records it on md.gaps (``VenueProducer._count_resync``)
RESYNC = {
    "exchange": "binance",
    "symbol": "BTCUSDT",
    "stream": "md.depth",
    "from_id": 123_457,
    "to_id": 123_457,
    "detected_time": int((START + timedelta(minutes=70)).timestamp() * 1000),
    "reason": "resync: pu=123460 != last u=123456",
}
#: the consumer-lag light's limits in this module (records behind: warn above, bad above)
LAG_LIMITS = (3, 1_000)


class Site:
    def __init__(self, base: str, token: str, conninfo: str, shots, bootstrap: str, prefix: str, settings) -> None:
        self.base, self.token, self.conninfo, self.shots = base, token, conninfo, shots
        self.bootstrap, self.prefix, self.settings = bootstrap, prefix, settings

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET", data: bytes | None = None):
        req = urllib.request.Request(self.base + path, headers=headers or {}, method=method, data=data)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=30) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.fixture(scope="module")
def site(pg_server, kafka_bootstrap, tmp_path_factory):
    from tapeflow.cli import _ui_consumer_lag
    from tapeflow_runtime.settings import Settings
    from tapeflow_ui.app import create_app
    from tapeflow_ui.service import desk_actions, live_follower

    name = f"t_ui_{uuid.uuid4().hex[:10]}"
    role, password = f"ui_ro_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    writer_role = f"ui_w_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    owner = pg_server.conninfo(name)
    migrate(owner)
    from_ms = int(START.timestamp() * 1000)
    store_synthetic(owner, SYMBOLS, from_ms, from_ms + HOURS * 3_600_000, seed=11, trades_per_s=6.0)
    with psycopg.connect(owner) as conn:
        closes = dict(
            conn.execute("SELECT DISTINCT ON (symbol) symbol, close FROM bars_1m ORDER BY symbol, open_time").fetchall()
        )
    signals = [
        signal_record("BTCUSDT", from_ms + 30 * 60_000 + 5_000, "LONG", closes["BTCUSDT"], 1),
        signal_record("BTCUSDT", from_ms + 75 * 60_000 + 5_000, "SHORT", closes["BTCUSDT"], 2),
        signal_record("ETHUSDT", from_ms + 50 * 60_000 + 5_000, "LONG", closes["ETHUSDT"], 3),
    ]
    assert store_signals(owner, signals) == 3
    spec = table_for_topic("md.gaps")
    with psycopg.connect(owner) as conn:
        assert write_rows(conn, spec, [spec.to_row(RESYNC)]) == 1
    # the detectors' walls over the order-flow page's hour, ending before the 30 min the freshness lights look at
    assert store_wall_features(owner, "BTCUSDT", from_ms + 30 * 60_000, from_ms + 90 * 60_000 - 1_000) > 3000
    stored = store_watchlist_session(owner)
    assert stored["xv_pair_events"] >= 4 and stored["xv_features"] > 1000, stored
    with psycopg.connect(owner, autocommit=True) as conn:  # a login of the read-only role, for this module only
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE tapeflow_readonly").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE tapeflow_writer").format(  # the actions' audit rows
                sql.Identifier(writer_role), sql.Literal(password)
            )
        )
    readonly = psycopg.conninfo.make_conninfo(owner, user=role, password=password)
    home = tmp_path_factory.mktemp("ui-home")
    token = load_token(StackPaths(home))
    prefix = f"t{uuid.uuid4().hex[:10]}."
    strategy_file = home / "xv_ui.yaml"  # the watchlist strategy the stack trades (the desk's pair actions)
    strategy_file.write_text(json.dumps(UI_STRATEGY))  # JSON is YAML
    settings = Settings(
        home=home,
        broker=kafka_bootstrap,
        topic_prefix=prefix,
        watchlist_strategies=[str(strategy_file)],
        database_url="postgresql://" + writer_role + ":" + password + "@" + f"{pg_server.host}:{pg_server.port}/{name}",
    )
    actions = desk_actions(settings, StackPaths(home))  # what `tapeflow ui` wires: the writer login, the kill switch
    app = create_app(
        readonly,
        token,
        actions=actions,
        consumer_lag=_ui_consumer_lag(settings, StackPaths(home)),
        lag_limits=LAG_LIMITS,
        lag_refresh_s=0.3,  # the lag source `tapeflow ui` wires
        live=live_follower(settings, StackPaths(home)),
    )  # and its live updates
    shots = tmp_path_factory.mktemp("ui-screenshots")
    try:
        with serving(app) as url:
            yield Site(url, token, owner, shots, kafka_bootstrap, prefix, settings)
    finally:
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(writer_role)))


@pytest.fixture(scope="module")
def browser(site):
    with DevTools(width=1500, height=1100) as dt:
        dt.goto(f"{site.base}/?token={site.token}")  # the login: a cookie, then the page without the token
        yield dt


def shoot(browser, site, name: str) -> None:
    path = browser.screenshot(site.shots / f"{name}.png")
    assert path.stat().st_size > 10_000
    print(f"screenshot of the {name} view: {path}")


def painted(browser, selector: str) -> int:
    """Pixels of a canvas that are not its background."""
    return browser.evaluate(f"""(() => {{ const c = document.querySelector({selector!r});
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== 11 || d[i + 1] !== 15 || d[i + 2] !== 20) n++;
        return n; }})()""")


# --- security ------------------------------------------------------------------------------------
def test_requests_without_the_token_are_refused(site):
    for path in (
        "/",
        "/symbol/BTCUSDT",
        "/api/overview",
        "/api/chart?symbol=BTCUSDT",
        "/health",
        "/static/common.js",
        "/api/stream?symbol=BTCUSDT",
    ):
        status, _, body = site.get(path)
        assert status == 401, path
        assert b"BTCUSDT" not in body and b"price" not in body
        assert site.get(path, {"Authorization": "Bearer " + "x" * 32})[0] == 401
        assert site.get(path, {"Cookie": f"{COOKIE}={site.token}"})[0] == 401  # the cookie holds an HMAC, not the token
    # one character changed (a token ending in "x" made "[:-1] + 'x'" the right token: 1 run in 64)
    wrong = site.token[:-1] + ("y" if site.token.endswith("x") else "x")
    assert site.get(f"/?token={wrong}")[0] == 401
    assert site.get("/health", {"Authorization": f"Bearer {site.token}"})[0] == 200


def test_login_sets_a_strict_httponly_cookie_and_drops_the_token_from_the_url(site):
    status, headers, _ = site.get(f"/symbol/BTCUSDT?tf=5m&token={site.token}")
    assert status == 303 and headers["location"] == "/symbol/BTCUSDT?tf=5m"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and site.token not in cookie
    session = cookie.split(";")[0]
    status, headers, body = site.get("/symbol/BTCUSDT", {"Cookie": session})
    assert status == 200 and site.token.encode() not in body
    assert csrf_value(site.token).encode() in body  # the page's CSRF value: an HMAC of the token, not it
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"


def test_actions_need_the_csrf_value_and_the_same_origin(site):
    auth = {"Authorization": f"Bearer {site.token}", "Content-Type": "application/json"}
    assert site.get("/api/overview", auth, method="POST", data=b"{}")[0] == 403
    wrong = {**auth, "X-CSRF-Token": csrf_value(site.token), "Origin": "http://evil.example"}
    assert site.get("/api/overview", wrong, method="POST", data=b"{}")[0] == 403
    right = {**auth, "X-CSRF-Token": csrf_value(site.token)}
    assert site.get("/api/overview", right, method="POST", data=b"{}")[0] == 405  # past the guard: no such action


def test_a_foreign_host_name_is_refused(site):
    """DNS rebinding: a page of another site resolving its name to 127.0.0.1 gets nothing."""
    assert site.get("/health", {"Authorization": f"Bearer {site.token}", "Host": "evil.example"})[0] == 400


# --- views ---------------------------------------------------------------------------------------
def test_overview_renders_every_panel_with_data(site, browser):
    browser.goto(f"{site.base}/")
    assert browser.wait_for("window.tapeflowUI.ready.all || window.tapeflowUI.errors.length") is True
    rows = browser.evaluate("[...document.querySelectorAll('#market tbody tr')].map(r => r.dataset.symbol)")
    with psycopg.connect(site.conninfo) as conn:
        by_volume = [
            r[0] for r in conn.execute("SELECT symbol FROM bars_1m GROUP BY symbol ORDER BY sum(quote_volume) DESC")
        ]
    assert rows == by_volume
    ready = browser.evaluate("window.tapeflowUI.ready")
    assert ready["signals"] == 3 and ready["funding"] > 0 and ready["quality"] >= 5
    lights = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#quality li')].map(l => [l.dataset.check, l.className]))"
    )
    assert lights["gaps"] == "ok" and lights["trades fresh"] == "ok" and lights["features fresh"] == "bad"
    assert lights["book resyncs"] == "warn"  # the planted resync
    assert painted(browser, "#funding") > 1000 and painted(browser, "#timeline") > 50
    assert browser.problems() == []
    shoot(browser, site, "overview")


def overview_lights(site, browser) -> dict[str, dict]:
    browser.goto(f"{site.base}/")
    assert browser.wait_for("window.tapeflowUI.ready.all || window.tapeflowUI.errors.length") is True
    return browser.evaluate("""Object.fromEntries([...document.querySelectorAll('#quality li')].map(l => [l.dataset.check,
        {state: l.className, text: l.textContent, link: l.querySelector('a') && l.querySelector('a').getAttribute('href')}]))""")


def test_quality_lights_link_to_the_book_resyncs_and_to_a_lagging_consumer_group(site, browser):
    from confluent_kafka import Consumer, Producer, TopicPartition

    from schemas.catalogue import topic as topic_spec
    from tapeflow_runtime.kafka_client import consumer_config, ensure_topics

    auth = {"Authorization": f"Bearer {site.token}"}
    lights = overview_lights(site, browser)
    resync = lights["book resyncs"]
    assert resync["state"] == "warn" and "BTCUSDT: 1 resync" in resync["text"]
    status, _, body = site.get(resync["link"], auth)
    assert status == 200 and [(r["symbol"], r["stream"], r["from_id"], r["reason"]) for r in json.loads(body)] == [
        ("BTCUSDT", "md.depth", RESYNC["from_id"], RESYNC["reason"])
    ]
    assert json.loads(site.get(lights["gaps"]["link"], auth)[2]) == []  # no trade-id hole: the gaps light is ok

    # a consumer group of this deployment (the topic prefix): caught up, then 5 records behind
    topic, group = site.prefix + "md.trades", site.prefix + "ui-lag-probe"
    ensure_topics(site.bootstrap, prefix=site.prefix, specs=[topic_spec("md.trades")])
    producer = Producer({"bootstrap.servers": site.bootstrap})
    for i in range(5):
        producer.produce(topic, value=b"x%d" % i, partition=0)
    assert producer.flush(10) == 0

    def commit(offset: int) -> None:
        c = Consumer(consumer_config(site.bootstrap, group))
        c.assign([TopicPartition(topic, 0, 0)])
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
        c.close()

    def lag_of_probe() -> int | None:
        snapshot = json.loads(site.get("/api/quality/lag", auth)[2])
        found = [g["total_lag"] for g in snapshot["groups"] or [] if g["group"] == group]
        return found[0] if found else None

    for offset, lag, state in ((5, 0, "ok"), (0, 5, "warn")):
        commit(offset)
        wait_until(lambda: lag_of_probe() == lag, 30, "the UI's background refresh saw the lag")  # noqa: B023 - called within this iteration
        light = overview_lights(site, browser)["consumer lag"]
        assert light["state"] == state and light["link"] == "/api/quality/lag", light
        if state == "warn":  # the light names the group behind, with its lag
            assert f"{group}: 5 behind" in light["text"]
    assert browser.problems() == []
    shoot(browser, site, "overview-quality-lights")


@pytest.fixture(scope="module")
def orderflow(site, browser):
    """The BTCUSDT page on a fixed hour at 1 m bars and a price step of 5, with bar 10:42 chosen."""
    frm, to = START + timedelta(minutes=30), START + timedelta(minutes=90)
    bar = START + timedelta(minutes=42)
    browser.goto(
        f"{site.base}/symbol/BTCUSDT?tf=1m&step=5&from={int(frm.timestamp())}&to={int(to.timestamp())}"
        f"&bar={int(bar.timestamp())}"
    )
    assert browser.wait_for("window.tapeflowUI.ready.all || window.tapeflowUI.errors.length", 60) is True
    return {"from": frm, "to": to, "bar": bar, "step": 5.0}


def test_order_flow_chart_renders_candles_cvd_vwap_signals_and_liquidations(site, browser, orderflow):
    chart = browser.evaluate("window.tapeflowUI.chart")
    c = chart["candles"]
    assert len(c["time"]) == 60 and c["time"][0] == int(orderflow["from"].timestamp())
    with psycopg.connect(site.conninfo) as conn:
        bars = conn.execute(
            "SELECT open, close, buy_volume - sell_volume, quote_volume, volume FROM bars_1m "
            "WHERE symbol = 'BTCUSDT' AND open_time >= %s AND open_time < %s ORDER BY open_time",
            (orderflow["from"], orderflow["to"]),
        ).fetchall()
    assert c["open"] == [b[0] for b in bars] and c["close"] == [b[1] for b in bars]
    assert c["cvd"][-1] == pytest.approx(sum(b[2] for b in bars), rel=1e-12)
    assert c["vwap"][-1] == pytest.approx(sum(b[3] for b in bars) / sum(b[4] for b in bars), rel=1e-12)
    assert [s["direction"] for s in chart["signals"]] == ["LONG", "SHORT"]
    assert "lower bound" in browser.evaluate("document.getElementById('liq-note').textContent")
    assert painted(browser, "#candles canvas") > 20_000  # the candle pane: candles, VWAP, markers over the background
    assert painted(browser, "#cvd canvas") > 2_000
    assert browser.problems() == []
    shoot(browser, site, "orderflow")


def test_footprint_of_the_chosen_bar_equals_the_trades_summed_per_price(site, browser, orderflow):
    table = browser.evaluate("""(() => { const t = document.getElementById('bar-table');
        return {time: Number(t.dataset.time), rows: [...t.tBodies[0].rows].map(r =>
            [Number(r.dataset.level), Number(r.dataset.bought), Number(r.dataset.sold)])}; })()""")
    bar = orderflow["bar"]
    assert table["time"] == int(bar.timestamp())
    expected: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])
    with psycopg.connect(site.conninfo) as conn:
        trades = conn.execute(
            "SELECT price, qty, taker_side FROM trades WHERE symbol = 'BTCUSDT' AND trade_time >= %s "
            "AND trade_time < %s",
            (bar, bar + timedelta(minutes=1)),
        ).fetchall()
    assert len(trades) > 50
    for price, qty, side in trades:
        expected[floor_index(price, orderflow["step"])][0 if side == "BUY" else 1] += qty
    shown = {level: (bought, sold) for level, bought, sold in table["rows"]}
    assert sorted(shown) == sorted(expected)
    for level, (bought, sold) in expected.items():
        assert shown[level] == (pytest.approx(bought, rel=1e-9, abs=1e-12), pytest.approx(sold, rel=1e-9, abs=1e-12))
    assert painted(browser, "#footprint") > 5000


def test_volume_profile_poc_equals_a_sql_recomputation(site, browser, orderflow):
    summary = browser.evaluate("({...document.getElementById('profile-summary').dataset})")
    with psycopg.connect(site.conninfo) as conn:
        poc = conn.execute(
            "SELECT floor(price / %s)::bigint AS level FROM trades WHERE symbol = 'BTCUSDT' "
            "AND trade_time >= %s AND trade_time < %s GROUP BY 1 ORDER BY sum(qty) DESC, 1 LIMIT 1",
            (orderflow["step"], orderflow["from"], orderflow["to"]),
        ).fetchone()[0]
    assert int(summary["pocLevel"]) == poc
    assert int(summary["vaLow"]) <= poc <= int(summary["vaHigh"])
    assert painted(browser, "#profile") > 2000


def test_heatmap_cells_equal_the_stored_book_sizes(site, browser, orderflow):
    heat = browser.evaluate("window.tapeflowUI.heatmap")
    step, width = heat["step"], heat["column_s"]
    columns: dict[int, dict] = defaultdict(dict)
    for col, book_ms, side, level, qty in heat["cells"]:
        columns[col][(side, level)] = (book_ms, qty)
    assert len(columns) >= 50
    with psycopg.connect(site.conninfo) as conn:
        for col, cells in columns.items():
            start = datetime.fromtimestamp(col, tz=UTC)
            book = conn.execute(
                "SELECT event_time, bid_prices, bid_qtys, ask_prices, ask_qtys FROM depth_snapshots "
                "WHERE symbol = 'BTCUSDT' AND event_time >= %s AND event_time < %s "
                "ORDER BY event_time DESC LIMIT 1",
                (start, start + timedelta(seconds=width)),
            ).fetchone()
            expected: dict[tuple[str, int], float] = defaultdict(float)
            for side, prices, qtys in (("bid", book[1], book[2]), ("ask", book[3], book[4])):
                for p, q in zip(prices, qtys):
                    expected[(side, floor_index(p, step))] += q
            assert {k: v[1] for k, v in cells.items()} == pytest.approx(dict(expected), rel=1e-12)
            assert {v[0] for v in cells.values()} == {round(book[0].timestamp() * 1000)}
    assert painted(browser, "#heatmap") > 20_000
    assert browser.problems() == []
    shoot(browser, site, "heatmap-and-footprint")


def expected_walls(conn, frm: datetime, to: datetime, width: int) -> dict[tuple[int, str, str], tuple[float, float]]:
    """For each heatmap column and strategy the last evaluation in its final 10 s; each wall it reports
    at the mid of the latest stored book at or before it (at most 10 s older) moved by the wall's
    distance (and that is the price of the book's largest level on the side, where it was planted)."""
    from tapeflow_ui.queries import ORIGIN

    last: dict[tuple[int, str], tuple[datetime, dict]] = {}
    for strategy, t, inputs in conn.execute(
        "SELECT strategy, eval_time, inputs FROM features WHERE symbol = 'BTCUSDT' AND eval_time >= %s "
        "AND eval_time < %s ORDER BY eval_time",
        (frm, to),
    ):
        col = int(ORIGIN.timestamp()) + int((t - ORIGIN).total_seconds() // width) * width
        if t.timestamp() >= min(col + width, to.timestamp()) - 10:
            last[(col, strategy)] = (t, inputs)
    expected = {}
    for (col, strategy), (t, inputs) in last.items():
        book = conn.execute(
            "SELECT bid_prices, bid_qtys, ask_prices, ask_qtys FROM depth_snapshots "
            "WHERE symbol = 'BTCUSDT' AND event_time <= %s AND event_time >= %s "
            "ORDER BY event_time DESC LIMIT 1",
            (t, t - timedelta(seconds=10)),
        ).fetchone()
        mid = (book[0][0] + book[2][0]) / 2
        for side, sign, prices, qtys in (("bid", -1, book[0], book[1]), ("ask", 1, book[2], book[3])):
            if f"wall_{side}_distance_bps" in inputs:
                price = mid * (1 + sign * inputs[f"wall_{side}_distance_bps"] / 10_000)
                assert price == pytest.approx(prices[qtys.index(max(qtys))], rel=1e-12)  # the largest level
                expected[(col, strategy, side)] = (price, inputs[f"wall_{side}_usd"])
    return expected


def test_heatmap_walls_equal_a_recomputation_from_the_stored_features_and_books(site, browser, orderflow):
    heat = browser.evaluate("window.tapeflowUI.heatmap")
    drawn = browser.evaluate("window.tapeflowUI.wallsDrawn")
    step, width = heat["step"], heat["column_s"]
    with psycopg.connect(site.conninfo) as conn:
        expected = expected_walls(conn, orderflow["from"], orderflow["to"], width)
        # the session's two hours: 30 s columns, where the query reads only the columns' final books
        frm, to = int(START.timestamp()), int((START + timedelta(hours=HOURS)).timestamp())
        status, _, body = site.get(
            f"/api/heatmap?symbol=BTCUSDT&tf=1m&step=5&from={frm}&to={to}", {"Authorization": f"Bearer {site.token}"}
        )
        wide = json.loads(body)
        assert status == 200 and wide["column_s"] == 30
        wide_expected = expected_walls(conn, START, START + timedelta(hours=HOURS), 30)
    for walls, want in ((heat["walls"], expected), (wide["walls"], wide_expected)):
        served = {(w[0], w[6], w[2]): (w[3], w[4]) for w in walls}
        assert len(served) == len(walls) and served.keys() == want.keys()
        assert served == {k: (pytest.approx(p, rel=1e-12), pytest.approx(u, rel=1e-12)) for k, (p, u) in want.items()}
    asks = {s: sum(1 for c, st, side in expected if st == s and side == "ask") for s in WALL_STRATEGIES}
    assert len(expected) > 300 and 0 < asks["book_walls"] < asks["flow_scalper"]  # a side without a wall: not drawn
    assert len(wide_expected) > 150
    levels = [lv for _, _, _, lv, _ in heat["cells"]]
    lo, hi = min(levels), max(levels)
    want = {(c, s, side, int((p / step + 1e-6) // 1)) for (c, s, side), (p, _) in expected.items()}
    assert {(w["col"], w["strategy"], w["side"], w["level"]) for w in drawn} == {w for w in want if lo <= w[3] <= hi}
    assert len(drawn) > 300
    green = browser.evaluate("""(() => { const c = document.getElementById('heatmap');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] === 0 && d[i + 1] === 230 && d[i + 2] === 118) n++;
        return n; })()""")
    assert green > 500  # the bid walls' colour is on the canvas
    assert "wall marks from the detectors" in browser.evaluate("document.getElementById('heatmap-summary').textContent")
    shoot(browser, site, "heatmap-walls")


def test_watchlist_desk_shows_the_ranking_the_pairs_and_a_spread_history(site, browser):
    from stream_apps.watchlist.ranking import ranking

    browser.goto(f"{site.base}/watchlist")
    assert browser.wait_for("window.tapeflowUI.ready.all || window.tapeflowUI.errors.length", 60) is True
    shown = browser.evaluate(
        "[...document.querySelectorAll('#ranking tbody tr')].map(r => [r.dataset.coin, r.dataset.sell, r.dataset.buy])"
    )
    with psycopg.connect(site.conninfo) as conn:
        expected = [[p.coin, p.sell_venue, p.buy_venue] for p in ranking(conn) if p.spread_sweep is not None]
        pairs = conn.execute("SELECT pair_id, status, net_usd FROM xv_pairs_latest").fetchall()
        legs = conn.execute("SELECT count(*) FROM xv_leg_orders").fetchone()[0]
    assert shown == expected[:50] and len(shown) >= 6  # `tapeflow watchlist`'s rows, in its order
    desk = browser.evaluate("window.tapeflowUI.desk")
    assert sorted(p["pair_id"] for p in desk["pairs"]) == sorted(p[0] for p in pairs)
    assert {p["pair_id"]: (p["status"], p["net_usd"]) for p in desk["pairs"]} == {
        p[0]: (p[1], float(p[2])) for p in pairs
    }
    assert sum(len(p["orders"]) for p in desk["pairs"]) == legs
    spread = browser.evaluate("window.tapeflowUI.spread")
    assert [spread["coin"], spread["sell_venue"], spread["buy_venue"]] == shown[0] and len(spread["points"]) > 100
    assert painted(browser, "#spread canvas") > 5_000
    assert browser.problems() == []
    shoot(browser, site, "watchlist-desk")


def test_the_live_stream_sends_the_newest_bar(site):
    """Server-sent events: the first ``bar`` event is the symbol's newest stored bar at the timeframe."""
    import json

    req = urllib.request.Request(
        f"{site.base}/api/stream?symbol=ETHUSDT&tf=5m", headers={"Authorization": f"Bearer {site.token}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = []
        while not lines or not lines[-1].startswith("data: "):
            lines.append(resp.readline().decode().strip())
    assert lines[-2] == "event: bar"
    bar = json.loads(lines[-1][6:])
    with psycopg.connect(site.conninfo) as conn:
        t, close, volume = conn.execute(
            "SELECT extract(epoch FROM date_bin('5 min', open_time, TIMESTAMPTZ '2000-01-03 00:00:00+00'))::bigint AS t, "
            "(array_agg(close ORDER BY open_time DESC))[1], sum(volume) FROM bars_1m WHERE symbol = 'ETHUSDT' "
            "GROUP BY 1 ORDER BY 1 DESC LIMIT 1"
        ).fetchone()
    assert (bar["time"], bar["close"], bar["volume"]) == (t, close, pytest.approx(volume, rel=1e-12))


def test_without_a_range_or_step_the_chart_shows_the_last_180_bars_at_a_step_from_the_price(site):
    import json

    from tapeflow_ui.orderflow import nice_step

    status, _, body = site.get("/api/chart?symbol=ethusdt&tf=1m", {"Authorization": f"Bearer {site.token}"})
    assert status == 200
    chart = json.loads(body)
    with psycopg.connect(site.conninfo) as conn:
        (end,) = conn.execute("SELECT max(close_time) FROM bars_1m WHERE symbol = 'ETHUSDT'").fetchone()
        (avg,) = conn.execute(
            "SELECT avg(close) FROM bars_1m WHERE symbol = 'ETHUSDT' AND open_time >= %s",
            (end - timedelta(minutes=180),),
        ).fetchone()
    assert chart["symbol"] == "ETHUSDT" and chart["to"] == int(end.timestamp())
    assert len(chart["candles"]["time"]) == 120  # the session's two hours: fewer than 180 bars exist
    assert chart["step"] == nice_step(avg) == 0.2
    for bad in (
        "/api/chart?symbol=ETH-USDT",
        "/api/chart?symbol=ETHUSDT&tf=2m",
        "/api/chart?symbol=ETHUSDT&step=-1",
        "/api/chart?symbol=ETHUSDT&from=10&to=5",
        "/api/chart?symbol=ETHUSDT&step=nan",
    ):
        assert site.get(bad, {"Authorization": f"Bearer {site.token}"})[0] == 400, bad
    assert site.get("/api/chart?symbol=DOGEUSDT", {"Authorization": f"Bearer {site.token}"})[0] == 404


# --- manual actions ------------------------------------------------------------------------------
def kill_switch_guard(site, read_topic, mode: str):
    """A paper executor's risk guard as it starts: restored from every record on risk.events."""
    from execution.config import RiskLimits
    from execution.risk_guard import RiskGuard

    records = [r["value"] for r in read_topic(site.bootstrap, site.prefix + "risk.events", settled=True)]
    now = max(r["event_time"] for r in records) + 1
    return records, RiskGuard.restore(RiskLimits(), mode, records, now).check_entry(
        now_ms=now, scope="global", market_data_age_ms=0.0, venue_up=True, output_up=True, open_positions=0
    )


def click_kill_switch(browser, state: str, reason: str, mode: str = "paper", clicks: int = 2) -> dict:
    """Fill the desk's kill-switch form, review it, and click Confirm `clicks` times at once (a double
    click: the second click is sent before the first is answered)."""
    before = browser.evaluate("window.tapeflowUI.actions.results.length")
    browser.evaluate(f"""(() => {{ const f = document.getElementById('kill-switch');
        f.mode.value = {mode!r}; f.querySelector('input[name=state][value={state}]').checked = true;
        f.reason.value = {reason!r}; document.getElementById('ks-review').click();
        for (let i = 0; i < {clicks}; i++) document.getElementById('ks-go').click(); }})()""")
    assert browser.wait_for(f"window.tapeflowUI.actions.results.length >= {before + clicks}", 60) is True
    results = browser.evaluate(f"window.tapeflowUI.actions.results.slice({before})")
    assert browser.wait_for(
        f"document.querySelector('#actions tbody tr[data-action-id=\"{results[0]['action_id']}\"]') !== null", 30
    )
    return results


def test_the_kill_switch_set_from_the_desk_blocks_entries_once_per_click_and_is_audited(site, browser, read_topic):
    browser.goto(f"{site.base}/watchlist")
    assert (
        browser.wait_for("window.tapeflowUI.ready.actions !== undefined || window.tapeflowUI.errors.length", 60) is True
    )
    assert browser.evaluate("document.getElementById('switch-state').textContent") == "never set (entries allowed)"

    on = click_kill_switch(browser, "on", "desk test: venue outage")
    assert [r["http"] for r in on] == [200, 200] and sorted(r["duplicate"] for r in on) == [False, True]
    assert {r["action_id"] for r in on} == {on[0]["action_id"]}  # one form, one action
    records, decision = kill_switch_guard(site, read_topic, "paper")
    assert [(r["mode"], r["decision"]) for r in records] == [("paper", "halt")]  # published once, paper only
    assert decision.decision == "block" and decision.reason == "kill_switch"
    shoot(browser, site, "watchlist-kill-switch")

    off = click_kill_switch(browser, "off", "desk test: venue back")
    assert sorted(r["duplicate"] for r in off) == [False, True] and off[0]["action_id"] != on[0]["action_id"]
    records, decision = kill_switch_guard(site, read_topic, "paper")
    assert [r["decision"] for r in records] == ["halt", "resume"]
    assert decision.decision == "allow"
    with psycopg.connect(site.conninfo) as conn:  # the sink stores risk.events: the desk's state line reads them
        spec = table_for_topic("risk.events")
        assert write_rows(conn, spec, (spec.to_row(r) for r in records)) == 2
    browser.goto(f"{site.base}/watchlist")
    assert browser.wait_for("window.tapeflowUI.ready.actions === 2", 60) is True
    assert browser.evaluate("document.getElementById('switch-state').textContent").startswith("paper: off since ")

    with psycopg.connect(site.conninfo) as conn:
        rows = conn.execute(
            "SELECT action_id, kind, params, who, reason, status, detail FROM ui_actions ORDER BY requested_time"
        ).fetchall()
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in rows] == [
        (
            on[0]["action_id"],
            "kill_switch",
            {"on": True, "flatten": False, "modes": ["paper"]},
            "desk test: venue outage",
            "done",
        ),
        (
            off[0]["action_id"],
            "kill_switch",
            {"on": False, "flatten": False, "modes": ["paper"]},
            "desk test: venue back",
            "done",
        ),
    ]
    assert all(r[3].startswith("ui cookie session from 127.0.0.1") for r in rows)
    assert rows[0][6] == "paper: halt (acknowledged by the broker)"
    assert browser.problems() == []


def test_actions_without_the_token_csrf_or_a_reason_are_refused_and_act_never(site):
    import json

    body = {"nonce": uuid.uuid4().hex, "on": True, "modes": ["testnet"], "reason": "refused"}
    data = json.dumps(body).encode()
    csrf = {"X-CSRF-Token": csrf_value(site.token), "Content-Type": "application/json"}
    bearer = {"Authorization": f"Bearer {site.token}", "Content-Type": "application/json"}
    assert site.get("/api/actions/kill-switch", csrf, method="POST", data=data)[0] == 401  # no token
    assert site.get("/api/actions/kill-switch", bearer, method="POST", data=data)[0] == 403  # no CSRF value
    assert (
        site.get(
            "/api/actions/kill-switch", {**bearer, **csrf, "Origin": "http://evil.example"}, method="POST", data=data
        )[0]
        == 403
    )
    for bad in (
        {**body, "reason": "  "},
        {k: v for k, v in body.items() if k != "reason"},
        {**body, "nonce": "short"},
        {**body, "modes": ["prod"]},
        {**body, "on": False, "flatten": True},
    ):
        assert (
            site.get("/api/actions/kill-switch", {**bearer, **csrf}, method="POST", data=json.dumps(bad).encode())[0]
            == 400
        ), bad
    assert site.get("/api/actions", {"Content-Type": "application/json"})[0] == 401
    with psycopg.connect(site.conninfo) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM ui_actions WHERE reason = 'refused' OR params->'modes' ? 'testnet'"
            ).fetchone()[0]
            == 0
        )  # refused before the audit row, so before any publish


# --- manual pair actions: through the watchlist service's trader ------------------------------------
class Trading:
    def __init__(self, trader, run, checkpoint) -> None:
        self.trader, self.run, self.checkpoint = trader, run, checkpoint

    def applied(self, command_id: str, timeout_s: float = 120.0) -> None:
        """Wait until the service's checkpoint holds the trader's state after the command: its outputs
        were flushed to the broker before the checkpoint was written."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.run.thread.is_alive():
            if self.checkpoint.exists():
                state = json.loads(self.checkpoint.read_bytes())["traders"][self.trader.name]["state"]
                if command_id in state["commands"] and not state["pending_commands"]:
                    return
            time.sleep(0.1)
        raise AssertionError(f"command {command_id} not applied by the watchlist service")


@pytest.fixture(scope="module")
def trading(site):
    """The module's stack trading: the generated watchlist session the database holds, published to
    md.book and md.mark as the producers publish it, and the watchlist service (`tapeflow cross-venue
    --strategy`) trading the session's strategy on it and reading the desk's commands."""
    from confluent_kafka import Producer

    from execution.watchlist_trader import WatchlistTrader, cross_venue_params
    from schemas.catalogue import topic as topic_spec
    from stream_apps.cross_venue.events import BookEvent, FundingEvent
    from stream_apps.cross_venue.state import CrossVenueParams
    from stream_apps.watchlist.service import WatchlistOptions
    from stream_apps.watchlist.strategy import parse_watchlist_strategy
    from tapeflow_runtime.kafka_client import ensure_topics, producer_config
    from tests.support.cross_venue import book, mark, running_watchlist
    from tests.support.execution import SERDE

    ensure_topics(site.bootstrap, prefix=site.prefix, specs=[topic_spec(t) for t in ("md.book", "md.mark")])
    producer = Producer(producer_config(site.bootstrap, **{"linger.ms": 50}))
    last, books = 0, {}
    for e in watchlist_events():
        if isinstance(e, BookEvent):
            topic, record = "md.book", book(e.exchange, e.symbol, e.time_ms, list(e.bids), list(e.asks))
            books[(e.exchange, e.symbol)] = e
        elif isinstance(e, FundingEvent):
            topic, record = "md.mark", mark(e.exchange, e.symbol, e.time_ms, e.funding_rate, e.next_funding_time_ms)
        else:
            continue
        producer.produce(
            site.prefix + topic, key=f"{e.exchange}:{e.symbol}".encode(), value=SERDE.encode(topic, record)
        )
        producer.poll(0)
        last = max(last, e.time_ms)
    lateness = 1_000
    for e in books.values():  # each book once more, past the merge's lateness: every input before is released
        producer.produce(
            site.prefix + "md.book",
            key=f"{e.exchange}:{e.symbol}".encode(),
            value=SERDE.encode("md.book", book(e.exchange, e.symbol, last + lateness + 1, list(e.bids), list(e.asks))),
        )
    assert producer.flush(60) == 0
    strategy = parse_watchlist_strategy(UI_STRATEGY)
    trader = WatchlistTrader(strategy, params=cross_venue_params(strategy, **UI_WINDOWS))
    group = site.prefix + "wl"
    options = WatchlistOptions(
        params=CrossVenueParams(),
        lateness_ms=lateness,
        prime_history_ms=None,
        start_from="earliest",
        group_id=group,
        checkpoint_interval_s=1.0,
        traders=(trader,),
    )
    run = running_watchlist(site.settings, options)
    try:
        deadline = time.monotonic() + 120
        while (trader.clock or 0) < last and run.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert trader.clock == last, (trader.clock, last)  # every input traded: the desk's commands act at its end
        yield Trading(trader, run, site.settings.home / "watchlist" / f"{group}.json")
    finally:
        assert run.close() == 0


def store_topics(site, read_topic, keep) -> dict[str, list[dict]]:
    """What the service published for the desk's commands (`keep(topic, record)`), written through the
    sink's table specs as the sink stores it; returns the records by topic."""
    out = {}
    with psycopg.connect(site.conninfo) as conn:
        for topic in ("xv.signals", "xv.orders", "xv.pairs", "xv.commands"):
            out[topic] = [
                r["value"]
                for r in read_topic(site.bootstrap, site.prefix + topic, settled=True)  # flushed before the checkpoint
                if keep(topic, r["value"])
            ]
            spec = table_for_topic(topic)
            write_rows(conn, spec, (spec.to_row(r) for r in out[topic]))
    return out


def click_twice(browser, go: str) -> list[dict]:
    """Click a reviewed form's Confirm twice at once (the second click is sent before the first is
    answered) and wait for both answers and the audit row."""
    before = browser.evaluate("window.tapeflowUI.actions.results.length")
    browser.evaluate(f"(() => {{ const b = document.getElementById({go!r}); b.click(); b.click(); }})()")
    assert browser.wait_for(f"window.tapeflowUI.actions.results.length >= {before + 2}", 60) is True
    results = browser.evaluate(f"window.tapeflowUI.actions.results.slice({before})")
    assert [r["http"] for r in results] == [200, 200] and sorted(r["duplicate"] for r in results) == [False, True]
    assert {r["action_id"] for r in results} == {results[0]["action_id"]}  # one form, one action
    return sorted(results, key=lambda r: r["duplicate"])  # the one that acted first (the other may see it pending)


def test_a_pair_opened_and_closed_from_the_desk_is_traded_once_per_click_by_the_strategys_trader(
    site, browser, trading, read_topic
):
    from execution.client_ids import client_order_id, pair_id
    from execution.watchlist_trader import manual_signal_id
    from stream_apps.watchlist.ranking import ranking
    from stream_apps.watchlist.strategy import parse_watchlist_strategy

    strategy = parse_watchlist_strategy(UI_STRATEGY)
    with psycopg.connect(site.conninfo) as conn:  # an ordered venue pair with no active pair on its key
        active = {
            k
            for (k,) in conn.execute(
                "SELECT pair_key FROM xv_pairs_latest WHERE status IN ('open', 'opening', 'unwinding', 'closing')"
            ).fetchall()
        }
        pick = next(
            p
            for p in ranking(conn)
            if p.spread_sweep is not None and f"{p.coin}:{'/'.join(sorted((p.sell_venue, p.buy_venue)))}" not in active
        )
        row = conn.execute(
            "SELECT eval_time, spread_sweep, sell_bid, sell_sweep_bid, buy_ask, buy_sweep_ask, "
            "funding_diff_8h FROM xv_features WHERE coin = %s AND sell_venue = %s AND buy_venue = %s "
            "ORDER BY eval_time DESC LIMIT 1",
            (pick.coin, pick.sell_venue, pick.buy_venue),
        ).fetchone()
    browser.goto(f"{site.base}/watchlist")
    assert (
        browser.wait_for(
            "window.tapeflowUI.ready.all && window.tapeflowUI.ready.actions !== undefined "
            "|| window.tapeflowUI.errors.length",
            60,
        )
        is True
    )
    # review: the ranking row fills the form; the quote is the row's newest evaluation, costed by hand
    browser.evaluate(f"""(() => {{ document.querySelector('#ranking tbody tr[data-coin="{pick.coin}"][data-sell="{pick.sell_venue}"][data-buy="{pick.buy_venue}"]').click();
        const f = document.getElementById('pair-open'); f.reason.value = 'desk test: spread wide';
        document.getElementById('po-review').click(); }})()""")
    assert browser.wait_for("!document.getElementById('po-confirm').hidden", 30) is True
    quote = browser.evaluate("window.tapeflowUI.actions.quote")
    fee = strategy.fees.of(pick.sell_venue), strategy.fees.of(pick.buy_venue)
    four = 2 * (fee[0] + fee[1])
    sweep = (row[2] - row[3]) / row[2] + (row[5] - row[4]) / row[4]
    assert quote["shown_time"] == round(row[0].timestamp() * 1000) and quote["spread_sweep"] == row[1]
    assert quote["four_fees"] == pytest.approx(four) and quote["net_spread"] == pytest.approx(row[1] - four)
    assert quote["sweep_cost"] == pytest.approx(sweep, rel=1e-12) and quote["fees_usd"] == pytest.approx(four * 10_000)
    assert quote["break_even_hours"] == (pytest.approx((four + sweep) / row[6] * 8) if row[6] and row[6] > 0 else None)
    shown = browser.evaluate("[...document.querySelectorAll('#po-quote td[data-field]')].map(td => td.dataset.field)")
    assert shown == [
        "Swept spread shown",
        "Four taker fees",
        "Net of fees",
        "Sweep cost (both legs)",
        "Funding 8 h (forecast)",
        "Break-even",
        "Size",
    ]
    shoot(browser, site, "watchlist-pair-review")

    opened = click_twice(browser, "po-go")
    aid = opened[0]["action_id"]
    sid = manual_signal_id(strategy, aid)
    pid = pair_id(sid)
    assert opened[0]["params"]["pair_id"] == pid and opened[0]["status"] == "done"
    trading.applied(aid)
    ours = {aid}

    def keep(topic, r):
        return r.get("pair_id") == pid or r.get("signal_id") == sid or r.get("command_id") in ours

    got = store_topics(site, read_topic, keep)
    assert [(r["signal_id"], r["status"], r["reason"]) for r in got["xv.signals"]] == [(sid, "signal", "manual")]
    assert [(p["seq"], p["status"]) for p in got["xv.pairs"]] == [(1, "open")]  # once, though clicked twice
    assert sorted(o["client_order_id"] for o in got["xv.orders"]) == sorted(
        client_order_id(sid, f"pair_{leg}_entry") for leg in ("short", "long")
    )
    pair = got["xv.pairs"][0]
    assert (pair["short_venue"], pair["long_venue"], pair["coin"]) == (pick.sell_venue, pick.buy_venue, pick.coin)
    assert [
        (c["status"], c["who"].startswith("ui cookie session from 127.0.0.1"), c["reason"]) for c in got["xv.commands"]
    ] == [("requested", True, "desk test: spread wide"), ("done", True, "desk test: spread wide")]
    assert (
        got["xv.commands"][1]["acted_time"] == trading.trader.clock
        and got["xv.commands"][1]["detail"] == f"pair {pid} open"
    )

    # the desk shows the pair with its close button; close it the same way
    browser.goto(f"{site.base}/watchlist")
    assert (
        browser.wait_for(
            f"document.querySelector('#pairs tr[data-pair-id=\"{pid}\"] button.close-pair') !== null "
            "&& window.tapeflowUI.ready.actions !== undefined || window.tapeflowUI.errors.length",
            60,
        )
        is True
    )
    assert browser.evaluate(f"document.querySelector('#actions tr[data-action-id=\"{aid}\"]').dataset.answer") == "done"
    browser.evaluate(f"""(() => {{ document.querySelector('#pairs tr[data-pair-id="{pid}"] button.close-pair').click();
        document.getElementById('pair-close').reason.value = 'desk test: take it off';
        document.getElementById('pc-review').click(); }})()""")
    assert browser.wait_for("!document.getElementById('pc-confirm').hidden", 30) is True
    closed = click_twice(browser, "pc-go")
    cid = closed[0]["action_id"]
    assert closed[0]["params"] == {"pair_id": pid, "strategy": "xv_ui", "coin": pick.coin} and cid != aid
    trading.applied(cid)
    ours.add(cid)
    got = store_topics(site, read_topic, keep)
    assert [(p["seq"], p["status"], p["close_reason"]) for p in got["xv.pairs"]] == [
        (1, "open", None),
        (2, "closed", "manual"),
    ]
    assert len(got["xv.orders"]) == 4 and len(got["xv.signals"]) == 1
    assert [(c["command_id"], c["status"]) for c in got["xv.commands"]] == [
        (aid, "requested"),
        (aid, "done"),
        (cid, "requested"),
        (cid, "done"),
    ]
    assert trading.trader.counters.get("command_duplicate", 0) == 0  # the desk sent each command once

    with psycopg.connect(site.conninfo) as conn:  # and the tables hold each once
        assert conn.execute(
            "SELECT seq, status, close_reason FROM xv_pair_events WHERE pair_id = %s ORDER BY seq", (pid,)
        ).fetchall() == [(1, "open", None), (2, "closed", "manual")]
        assert conn.execute("SELECT count(*) FROM xv_leg_orders WHERE pair_id = %s", (pid,)).fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM xv_signals WHERE signal_id = %s", (sid,)).fetchone()[0] == 1
        assert conn.execute(
            "SELECT command_id, status, action, reason FROM xv_commands WHERE command_id = ANY(%s) "
            "ORDER BY requested_time, status DESC",
            ([aid, cid],),
        ).fetchall() == [
            (aid, "requested", "open", "desk test: spread wide"),
            (aid, "done", "open", "desk test: spread wide"),
            (cid, "requested", "close", "desk test: take it off"),
            (cid, "done", "close", "desk test: take it off"),
        ]
        audit = conn.execute(
            "SELECT action_id, kind, reason, status, who FROM ui_actions WHERE kind LIKE 'pair_%%' "
            "ORDER BY requested_time"
        ).fetchall()
    assert [a[:4] for a in audit] == [
        (aid, "pair_open", "desk test: spread wide", "done"),
        (cid, "pair_close", "desk test: take it off", "done"),
    ]
    assert all(a[4].startswith("ui cookie session from 127.0.0.1") for a in audit)
    browser.goto(f"{site.base}/watchlist")
    assert (
        browser.wait_for(
            f"document.querySelector('#pairs tr[data-pair-id=\"{pid}\"]') !== null "
            "&& window.tapeflowUI.ready.actions !== undefined",
            60,
        )
        is True
    )
    assert browser.evaluate(f"document.querySelector('#pairs tr[data-pair-id=\"{pid}\"] button.close-pair')") is None
    assert browser.problems() == []
    browser.evaluate("document.getElementById('pair-panel').scrollIntoView()")
    shoot(browser, site, "watchlist-pair-actions")


def test_pair_actions_without_the_token_csrf_or_a_known_pair_are_refused_and_act_never(site):
    csrf = {"X-CSRF-Token": csrf_value(site.token), "Content-Type": "application/json"}
    bearer = {"Authorization": f"Bearer {site.token}", "Content-Type": "application/json"}
    opening = {
        "nonce": uuid.uuid4().hex,
        "strategy": "xv_ui",
        "coin": "BTC",
        "sell_venue": "okx",
        "buy_venue": "bybit",
        "shown_time": 1,
        "reason": "refused",
    }
    closing = {"nonce": uuid.uuid4().hex, "pair_id": "pair-abcdefghijklmnop", "reason": "refused"}
    for path, body in (("/api/actions/pair-open", opening), ("/api/actions/pair-close", closing)):
        data = json.dumps(body).encode()
        assert site.get(path, csrf, method="POST", data=data)[0] == 401  # no token
        assert site.get(path, bearer, method="POST", data=data)[0] == 403  # no CSRF value
        assert site.get(path, {**bearer, **csrf, "Origin": "http://evil.example"}, method="POST", data=data)[0] == 403
        assert site.get(path, {**bearer, **csrf}, method="POST", data=data)[0] == 404  # no such evaluation / pair
    for bad in (
        {**opening, "strategy": "nope"},
        {**opening, "sell_venue": "okx", "buy_venue": "okx"},
        {**opening, "shown_time": "soon"},
        {**opening, "reason": " "},
        {**closing, "pair_id": "x"},
    ):
        path = "/api/actions/pair-close" if "pair_id" in bad else "/api/actions/pair-open"
        assert site.get(path, {**bearer, **csrf}, method="POST", data=json.dumps(bad).encode())[0] == 400, bad
    assert site.get("/api/desk/quote?strategy=xv_ui&coin=BTC&sell_venue=okx&buy_venue=bybit", csrf)[0] == 401
    with psycopg.connect(site.conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM ui_actions WHERE reason = 'refused'").fetchone()[0] == 0


def test_the_chart_follows_bars_and_signals_published_on_the_topics(site, browser):
    """The page without a range follows the live topics (``tapeflow_ui.live``, wired as `tapeflow ui`
    wires it: this module's broker as TAPEFLOW_BROKER): a bar published on bars.1m after the newest
    stored one is drawn as the chart's last candle, a published signal becomes a marker."""
    from confluent_kafka import Producer

    from schemas.catalogue import topic as topic_spec
    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde
    from tapeflow_runtime.kafka_client import ensure_topics, producer_config

    ensure_topics(site.bootstrap, prefix=site.prefix, specs=[topic_spec("bars.1m"), topic_spec("signals")])
    browser.goto(f"{site.base}/symbol/ETHUSDT?tf=1m")
    assert (
        browser.wait_for(
            "window.tapeflowUI.ready.candles && window.tapeflowUI.live "
            "&& window.tapeflowUI.live.source === 'topics' || window.tapeflowUI.errors.length",
            60,
        )
        is True
    )
    last, cvd = browser.evaluate(
        "[window.tapeflowUI.chart.candles.time.slice(-1)[0], window.tapeflowUI.chart.candles.cvd.slice(-1)[0]]"
    )
    t = last + 60
    published = {
        "exchange": "binance",
        "symbol": "ETHUSDT",
        "open_time": t * 1000,
        "close_time": (t + 60) * 1000,
        "open": 3001.5,
        "high": 3010.25,
        "low": 2999.0,
        "close": 3007.75,
        "volume": 12.5,
        "buy_volume": 9.0,
        "sell_volume": 3.5,
        "quote_volume": 37_500.0,
        "vwap": 3000.0,
        "trade_count": 40,
        "first_agg_id": 1,
        "last_agg_id": 40,
    }
    serde = AvroSerde(FileSchemaRegistry())
    producer = Producer(producer_config(site.bootstrap))
    producer.produce(site.prefix + "bars.1m", key=b"binance:ETHUSDT", value=serde.encode("bars.1m", published))
    producer.produce(
        site.prefix + "signals",
        key=b"binance:ETHUSDT",
        value=serde.encode("signals", signal_record("ETHUSDT", (t + 30) * 1000, "SHORT", 3007.75, 9)),
    )
    assert producer.flush(10) == 0
    assert (
        browser.wait_for(
            f"window.tapeflowUI.live.bars > 0 && window.tapeflowUI.live.bar.time === {t} "
            "&& window.tapeflowUI.live.signals === 1",
            60,
        )
        is True
    )
    assert browser.evaluate("window.tapeflowUI.live.bar") == {
        "time": t,
        "open": 3001.5,
        "high": 3010.25,
        "low": 2999.0,
        "close": 3007.75,
        "volume": 12.5,
        "bought": 9.0,
        "sold": 3.5,
        "delta": 5.5,
    }
    assert browser.evaluate("window.tapeflowUI.live.cvd") == pytest.approx(cvd + 5.5, rel=1e-12)  # CVD goes on
    assert browser.evaluate("document.getElementById('status').textContent").startswith("live: ")
    assert browser.problems() == []
    shoot(browser, site, "orderflow-live")


def _publish(site, topic: str, key: str, record: dict) -> float:
    """Publish ``record`` on this module's ``topic``; returns when it was acknowledged (monotonic)."""
    from confluent_kafka import Producer

    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde
    from tapeflow_runtime.kafka_client import producer_config

    producer = Producer(producer_config(site.bootstrap))
    producer.produce(site.prefix + topic, key=key.encode(), value=AvroSerde(FileSchemaRegistry()).encode(topic, record))
    assert producer.flush(10) == 0
    return time.monotonic()


def test_the_overview_puts_a_published_signal_on_its_timeline_and_re_reads_its_table_when_bars_change(site, browser):
    """Without a reload: a signal published on ``signals`` becomes the timeline's newest row (pushed:
    the database never has it), a bar on ``bars.1m`` makes the page re-read /api/overview (the pushed
    signal stays until a re-read has it)."""
    from schemas.catalogue import topic as topic_spec
    from tapeflow_runtime.kafka_client import ensure_topics

    ensure_topics(site.bootstrap, prefix=site.prefix, specs=[topic_spec("bars.1m"), topic_spec("signals")])
    browser.goto(f"{site.base}/")
    assert (
        browser.wait_for(
            "window.tapeflowUI.ready.all && window.tapeflowUI.live "
            "&& window.tapeflowUI.live.source === 'topics' || window.tapeflowUI.errors.length",
            60,
        )
        is True
    )
    browser.evaluate("window.sameDocument = true")  # gone if the page reloads
    now, shown = browser.evaluate("[window.tapeflowUI.overview.now, window.tapeflowUI.ready.signals]")
    assert shown == 3
    painted_before = painted(browser, "#timeline")
    first_row = "[...document.querySelectorAll('#signals tbody tr')][0]"
    latencies = []
    for k in range(3):  # a few samples of the latency
        t = now - 600 + 60 * k  # after the stored signals: the newest
        sent = _publish(
            site, "signals", "binance:ETHUSDT", signal_record("ETHUSDT", t * 1000, "SHORT", 3005.25, 21 + k)
        )
        shown_at = json.dumps(datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S"))
        assert (
            browser.wait_for(
                f"window.tapeflowUI.live.signals === {k + 1} && {first_row}.cells[0].textContent === {shown_at}", 30
            )
            is True
        )
        latencies.append(1000 * (time.monotonic() - sent))
        assert browser.evaluate(f"[...{first_row}.cells].map(c => c.textContent)") == [
            json.loads(shown_at),
            "ETHUSDT",
            "SHORT",
            "standard",
            "61.5",
            "3,005.25",
        ]
    print(f"signals record -> the overview's timeline, ms: {', '.join(f'{v:.0f}' for v in latencies)}")
    assert browser.evaluate("window.tapeflowUI.ready.signals") == 6 and painted(browser, "#timeline") > painted_before
    with psycopg.connect(site.conninfo) as conn:  # pushed: the database does not have it
        assert conn.execute("SELECT count(*) FROM signals WHERE signal_id LIKE 'ui-test-ETHUSDT-2_'").fetchone()[0] == 0
    refreshes = browser.evaluate("window.tapeflowUI.live.refreshes")
    bar = {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "open_time": (now + 60) * 1000,
        "close_time": (now + 120) * 1000,
        "open": 1.0,
        "high": 1.0,
        "low": 1.0,
        "close": 1.0,
        "volume": 1.0,
        "buy_volume": 1.0,
        "sell_volume": 0.0,
        "quote_volume": 1.0,
        "vwap": 1.0,
        "trade_count": 1,
        "first_agg_id": 1,
        "last_agg_id": 1,
    }
    _publish(site, "bars.1m", "binance:BTCUSDT", bar)
    assert browser.wait_for(f"window.tapeflowUI.live.refreshes > {refreshes}", 30) is True  # /api/overview re-read
    assert browser.evaluate(f"{first_row}.cells[1].textContent") == "ETHUSDT"  # the pushed signal stays
    assert browser.evaluate("window.tapeflowUI.ready.signals") == 6
    assert browser.evaluate("window.sameDocument") is True
    assert browser.evaluate("document.getElementById('status').textContent").endswith("· live")
    assert browser.problems() == []
    shoot(browser, site, "overview-live")


def test_the_desk_shows_a_pair_stored_after_it_loaded_once_its_topic_says_something_changed(site, browser):
    """Without a reload: a pair stored after the page loaded is not shown until a record on ``xv.pairs``
    tells the page to re-read /api/desk (the database answers, the topic says when)."""
    from schemas.catalogue import topic as topic_spec
    from tapeflow_runtime.kafka_client import ensure_topics
    from tapeflow_ui.live import VIEWS
    from tests.support.ui_session import pair_event_record

    ensure_topics(site.bootstrap, prefix=site.prefix, specs=[topic_spec(t) for t in VIEWS["desk"]])
    browser.goto(f"{site.base}/watchlist")
    assert (
        browser.wait_for(
            "window.tapeflowUI.ready.all && window.tapeflowUI.live "
            "&& window.tapeflowUI.live.source === 'topics' || window.tapeflowUI.errors.length",
            60,
        )
        is True
    )
    browser.evaluate("window.sameDocument = true")
    pid = f"ui-live-{uuid.uuid4().hex[:8]}"
    row = f"document.querySelector('#pairs tr[data-pair-id=\"{pid}\"]')"
    spec = table_for_topic("xv.pairs")
    with psycopg.connect(site.conninfo) as conn:
        opened = conn.execute("SELECT extract(epoch FROM max(opened_time))::bigint FROM xv_pairs_latest").fetchone()[0]
        record = pair_event_record(pid, "BTC", (opened + 60) * 1000, 12.5)
        assert write_rows(conn, spec, [spec.to_row(record)]) == 1  # what the sink does with the record
    assert browser.evaluate(f"{row} === null && window.tapeflowUI.live.refreshes === 0") is True
    sent = _publish(site, "xv.pairs", "BTC", record)
    assert browser.wait_for(f"{row} !== null", 30) is True
    print(f"xv.pairs record -> the desk's re-read shows the pair: {1000 * (time.monotonic() - sent):.0f} ms")
    cells = browser.evaluate(f"[...{row}.cells].map(c => c.textContent)")
    assert cells[1:5] == ["BTC", "binance BTCUSDT", "bybit BTCUSDT", "closed (target)"]
    assert cells[6:13] == ["12.00", "2.00", "18.50", "4.00", "1.50", "-0.50", "12.50"]
    assert browser.wait_for("window.tapeflowUI.live.refreshes >= 1", 30) is True  # the shown history re-read too
    assert browser.evaluate("window.sameDocument") is True
    assert "· live" in browser.evaluate("document.getElementById('status').textContent")
    assert browser.problems() == []
