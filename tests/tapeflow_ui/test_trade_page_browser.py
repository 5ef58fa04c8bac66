"""The trade pages in headless Chromium over a real PostgreSQL: two paper trades the real executor made
(``tests.review.planted``), stored with the sink's row mappings, served by the UI app as the
read-only role. The list shows each stored trade's R; the trade page's numbers equal the stored
position, its chart draws one candle per bucket the trades table holds and the levels the position
opened with, and its counterfactual table is the autopsy's."""

from __future__ import annotations

import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
from psycopg import sql

from sinks.migrate import migrate
from tapeflow_runtime.paths import StackPaths
from tapeflow_ui.security import load_token
from tapeflow_ui.trade import candle_seconds, window
from tests.review.planted import S
from tests.review.stored import store
from tests.review.test_autopsy_db import _with_book
from tests.support.chromium import CHROMIUM, DevTools
from tests.support.execution import T0
from tests.support.ui_server import readonly_login, serving

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (deploy/bootstrap.sh)"),
]

MIN = 60 * S
READY = "window.tapeflowUI.ready.all || window.tapeflowUI.errors.length"


@pytest.fixture(scope="module")
def site(pg_server, tmp_path_factory):
    from tapeflow_ui.app import create_app

    name = f"t_trade_{uuid.uuid4().hex[:10]}"
    role, password = f"tr_ro_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    owner = pg_server.conninfo(name)
    migrate(owner)
    loss, win = _with_book(T0, 97.5), _with_book(T0 + 60 * MIN, 104.5)  # through the stop; TP1 and TP2 in one jump
    store(owner, loss, win)
    readonly = readonly_login(owner, role, password)
    token = load_token(StackPaths(tmp_path_factory.mktemp("trade-ui-home")))
    try:
        with serving(create_app(readonly, token)) as base:
            yield {
                "base": base,
                "token": token,
                "owner": owner,
                "trades": (loss, win),
                "shots": tmp_path_factory.mktemp("trade-ui-screenshots"),
            }
    finally:
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def browser(site):
    with DevTools(width=1500, height=1100) as dt:
        dt.goto(f"{site['base']}/trades?token={site['token']}")  # the login: a cookie, then the page
        yield dt


def _stored(owner: str, position_id: str) -> dict:
    with psycopg.connect(owner) as conn:
        cur = conn.execute(
            "SELECT pnl_r_gross::float8, fees_r::float8, slippage_r::float8, funding_r::float8, pnl_r_net::float8,"
            " exit_reason FROM trades_closed WHERE position_id = %s",
            (position_id,),
        )
        row = cur.fetchone()
        assert row is not None
        return dict(zip(("gross", "fees", "slippage", "funding", "net", "exit_reason"), row))


def test_the_trades_list_shows_every_stored_trade(site, browser):
    browser.goto(f"{site['base']}/trades")
    assert browser.wait_for("window.tapeflowUI.ready.trades !== undefined || window.tapeflowUI.errors.length")
    assert browser.evaluate("window.tapeflowUI.errors") == []
    rows = browser.evaluate(
        "[...document.querySelectorAll('#trades tbody tr')].map(tr => [tr.querySelector('a').getAttribute('href'),"
        " tr.lastElementChild.textContent])"
    )
    loss, win = (p.closed() for p in site["trades"])
    # newest exit first
    assert [href.split("?")[0] for href, _ in rows] == [f"/trade/{win['position_id']}", f"/trade/{loss['position_id']}"]
    for (_, net), trade in zip(rows, (win, loss)):
        assert float(net) == pytest.approx(_stored(site["owner"], trade["position_id"])["net"], abs=0.005)


@pytest.mark.parametrize("which", [0, 1], ids=["stopped", "take-profit"])
def test_the_trade_page_equals_the_database(site, browser, which):
    trade = site["trades"][which].closed()
    pid = trade["position_id"]
    stored = _stored(site["owner"], pid)
    browser.goto(f"{site['base']}/trade/{pid}?mode=paper")
    assert browser.wait_for(READY) is True, browser.evaluate("window.tapeflowUI.errors")
    # where the money went, as stored (costs shown as what they took)
    costs = browser.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#costs tr')].map(tr =>"
        " [tr.children[0].textContent, parseFloat(tr.children[1].textContent.replace(/,/g, ''))]))"
    )
    assert costs["gross"] == pytest.approx(stored["gross"], abs=5e-4)
    assert costs["fees"] == pytest.approx(-stored["fees"], abs=5e-4)
    assert costs["slippage"] == pytest.approx(-stored["slippage"], abs=5e-4)
    assert costs["net"] == pytest.approx(stored["net"], abs=5e-4)
    assert stored["exit_reason"] in browser.evaluate("document.getElementById('trade-title').textContent")
    # the replay as traded first, then one row per scenario of the autopsy
    cf = browser.evaluate(
        "[...document.querySelectorAll('#counterfactuals tbody tr')].map(tr => [...tr.children].map(td => td.textContent))"
    )
    data = browser.evaluate("window.tapeflowUI.tradeData.autopsy.counterfactuals")
    assert cf[0][0] == "as traded" and cf[0][2] == stored["exit_reason"]
    assert float(cf[0][3]) == pytest.approx(stored["net"], abs=5e-4)
    assert len(cf) == 1 + len(data["scenarios"]) and len(data["scenarios"]) >= 8
    assert data["replay_matches_actual"] is True
    # the entry's slippage against the mid at send: a buy at 100.0 moved 3 bp, the book's mid 100.0
    entry = browser.evaluate(
        "[...document.querySelectorAll('#tca tbody tr')].map(tr => [...tr.children].map(td => td.textContent))"
        ".find(r => r[0] === 'entry')"
    )
    assert entry[3] == "book" and float(entry[5]) == pytest.approx(3.0, abs=0.05)
    # the chart: one candle per bucket of stored trades in the window, the levels the position opened with
    drawn = browser.evaluate("window.tapeflowUI.trade")
    opened = next(e for e in site["trades"][which].of("positions") if e["event"] == "opened")
    start_s, end_s = window(opened["event_time"], trade["event_time"])
    bucket = candle_seconds(end_s - start_s)
    with psycopg.connect(site["owner"]) as conn:
        (buckets,) = conn.execute(
            "SELECT count(DISTINCT floor(extract(epoch FROM trade_time) / %s)) FROM trades"
            " WHERE trade_time >= to_timestamp(%s) AND trade_time < to_timestamp(%s)",
            (bucket, start_s, end_s),
        ).fetchone()
    assert drawn["candle_s"] == bucket and drawn["candles"] == buckets > 0
    assert {line["name"]: line["price"] for line in drawn["lines"]} == pytest.approx(
        {"sl": opened["sl_price"], "tp1": opened["tp1_price"], "tp2": opened["tp2_price"]}
    )
    assert [m["text"].split()[0] for m in drawn["markers"]] == ["entry", stored["exit_reason"]]
    shot = browser.screenshot(site["shots"] / f"trade-{which}.png")
    assert shot.stat().st_size > 10_000
    print(f"screenshot of the trade page: {shot}")


def test_an_unknown_trade_is_a_404_and_a_bad_mode_a_400(site):
    def status(path: str) -> int:
        req = urllib.request.Request(site["base"] + path, headers={"Authorization": f"Bearer {site['token']}"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("/api/trade/nope") == 404
    assert status(f"/api/trade/{site['trades'][0].closed()['position_id']}?mode=demo") == 400
    assert status("/api/trades?strategy=Bad%20Name") == 400
