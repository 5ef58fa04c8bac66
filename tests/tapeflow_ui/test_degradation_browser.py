"""The execution degradations on the trades page, in headless Chromium over a real PostgreSQL: changes a
real SLO monitor made (execution.slo), stored as the executor's audit writes them
(execution.service_slo), served by the UI app as the read-only role. Each rule's state is its latest
change, with when, the value and the threshold; the changes are listed newest first."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid

import psycopg
import pytest
from psycopg import sql

from execution.service_slo import INSERT, change_row
from execution.slo import SloMonitor
from tapeflow_runtime.paths import StackPaths
from tapeflow_ui.security import load_token
from tests.support.chromium import CHROMIUM, DevTools
from tests.support.ui_server import readonly_login, serving

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (deploy/bootstrap.sh)"),
]

W = 300_000
T0 = 1_780_000_200_000  # a multiple of the 5-minute window


def _changes():
    """round_trip_slow set at T0 + W (p95 700 ms > 500 over 4); maker_fill_ratio_low set at T0 + W (mean
    0.125 < 0.25 over 4 orders) and cleared at T0 + 13 W after an hour without maker orders."""
    m = SloMonitor(T0)
    for ms in (100, 200, 600, 700):
        m.round_trip(ms, T0 + 1)
    for ratio in (0.0, 0.0, 0.5, 0.0):
        m.maker_order(ratio, T0 + 2)
    first = m.advance(T0 + W)
    for ms in (450, 450, 450):  # keeps the round trips slow enough not to clear (> 400) all along
        m.round_trip(ms, T0 + 12 * W + 1)
    return first + m.advance(T0 + 13 * W)


@pytest.fixture(scope="module")
def site(pg_server, migrated_templates, tmp_path_factory):
    from tapeflow_ui.app import create_app

    name = f"t_degr_{uuid.uuid4().hex[:10]}"
    role, password = f"dg_ro_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    migrated_templates.create(name)  # a copy of the session's migrated template
    owner = pg_server.conninfo(name)
    changes = _changes()
    with psycopg.connect(owner, autocommit=True) as conn:
        for change in changes:
            conn.execute(INSERT, change_row("paper", change))
    readonly = readonly_login(owner, role, password)
    token = load_token(StackPaths(tmp_path_factory.mktemp("degradation-ui-home")))
    try:
        with serving(create_app(readonly, token)) as base:
            yield {"base": base, "token": token, "changes": changes}
    finally:
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_the_trades_page_shows_each_rule_state_and_the_changes(site):
    assert [(c.rule, c.active, c.time_ms) for c in site["changes"]] == [
        ("maker_fill_ratio_low", True, T0 + W),
        ("round_trip_slow", True, T0 + W),
        ("maker_fill_ratio_low", False, T0 + 13 * W),
    ]
    with DevTools(width=1500, height=1100) as browser:
        browser.goto(f"{site['base']}/trades?token={site['token']}")
        assert browser.wait_for("window.tapeflowUI.ready.degradation !== undefined || window.tapeflowUI.errors.length")
        assert browser.evaluate("window.tapeflowUI.errors") == []
        state = browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('#degradation tbody tr')].map(tr =>"
            " [tr.dataset.mode + '/' + tr.dataset.rule, [...tr.children].map(td => td.textContent)]))"
        )
        changes = browser.evaluate(
            "[...document.querySelectorAll('#degradation-changes tbody tr')].map(tr =>"
            " [...tr.children].slice(0, 6).map(td => td.textContent))"
        )
        note = browser.evaluate("document.getElementById('degradation-note').textContent")

    def utc(ms: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))

    # mode, rule, state, since, SLI, value, threshold, samples
    assert state == {
        "paper/maker_fill_ratio_low": [
            "paper",
            "maker_fill_ratio_low",
            "clear",
            utc(T0 + 13 * W),
            "maker_fill_ratio",
            "–",  # an hour without maker orders: no value
            "0.35",
            "0",
        ],
        "paper/round_trip_slow": [
            "paper",
            "round_trip_slow",
            "in force",
            utc(T0 + W),
            "order_round_trip_p95_ms",
            "700",
            "500",
            "4",
        ],
    }
    assert changes == [
        [utc(T0 + 13 * W), "paper", "maker_fill_ratio_low", "cleared", "–", "0.35"],
        [utc(T0 + W), "paper", "maker_fill_ratio_low", "set", "0.125", "0.25"],
        [utc(T0 + W), "paper", "round_trip_slow", "set", "700", "500"],
    ]
    assert note == "1 rule(s) in force"


def test_the_api_needs_the_token_and_a_known_mode(site):
    def status(path: str, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(site["base"] + path, headers=headers), timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("/api/execution/degradation", None) == 401
    assert status("/api/execution/degradation?mode=demo", site["token"]) == 400
    assert status("/api/execution/degradation?mode=live", site["token"]) == 200
