"""The backtest report's routing TCA section: the routed entries a run kept (``RunResult.routed_orders``)
through ``review.routing_tca`` per strategy and bucket of its table, in the JSON document, the Markdown
and the HTML page (headless Chromium); a run without routed entries has no section."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from backtest.report import document, write_report
from backtest.result_io import read_result_json, write_result_json
from backtest.routed_orders import collect
from tests.review.test_routing_tca import _orders
from tests.support.backtest_runs import make_run
from tests.support.chromium import CHROMIUM, dump_dom


def routed_run():
    """make_run's two strategies; v53's entries are the hand-built routed orders of the TCA unit test
    (tests/review/test_routing_tca.py: A and B in 200-500, C in 0-200 the next day, X not routed),
    v54_tight routed none."""
    orders, fills = _orders()
    rows = [
        [o.client_order_id, f"v53:{o.signal_id}", o.side, o.qty, o.sent_time, o.mid_at_send, "book", o.reason, 0]
        for o in orders
    ]
    fill_rows = [
        {"client_order_id": f.client_order_id, "price": f.price, "qty": f.qty, "fee": f.fee}
        | {"liquidity": f.liquidity, "event_time": f.event_time}
        for f in fills
    ]
    return replace(make_run(), routed_orders=collect(rows, fill_rows))


def test_the_section_per_bucket_by_hand(tmp_path):
    run = routed_run()
    path = write_result_json(run, tmp_path)  # the orders beside result.json, unindented
    assert read_result_json(path).routed_orders == run.routed_orders and b"routed_orders" not in path.read_bytes()
    assert (tmp_path / "routed_orders.json").read_bytes().count(b"\n") == 1
    write_result_json(make_run(), tmp_path)  # a run without routed orders in the same directory: none read back
    assert not (tmp_path / "routed_orders.json").exists() and read_result_json(path).routed_orders == {}
    [section] = document.build(run)["routing_tca"]  # v54_tight routed nothing: no section
    assert (section["strategy"], section["orders"]) == ("v53", 5)  # X is not a routed order
    small, mid, *rest = section["buckets"]
    assert [b["bucket"] for b in section["buckets"]] == ["0-200", "200-500", "500-1000", "1000+"]  # the default table
    assert (mid["entries"], mid["maker_orders"], mid["taker_orders"]) == (2, 2, 2)
    assert mid["maker_fill_ratio"] == pytest.approx(5 / 8) and mid["maker_share"] == pytest.approx(5 / 8)
    assert mid["maker_slip_bps"] == pytest.approx(-10.0) and mid["taker_slip_bps"] == pytest.approx(5.0)
    assert mid["maker_fill_p50_ms"] == pytest.approx(1150) and mid["maker_fill_p90_ms"] == pytest.approx(1430)
    assert (small["entries"], small["maker_fill_ratio"], small["taker_slip_bps"]) == (1, 1.0, None)
    assert small["maker_fill_p50_ms"] == small["maker_fill_p90_ms"] == 300
    assert all(b["entries"] == 0 for b in rest)
    assert document.build(make_run())["routing_tca"] == []


def test_markdown_and_html_show_the_section(tmp_path):
    paths = write_report(routed_run(), tmp_path / "routed", ["md", "html"])
    text = paths["md"].read_text()
    assert "## Routing TCA" in text and "### v53 (5 routed orders)" in text
    [row] = [line for line in text.splitlines() if line.startswith("| 200-500 |")]
    assert [c.strip() for c in row.strip("|").split("|")] == [
        *("200-500", "2", "2", "2", "62.5%", "62.5%", "-10.00", "5.00", "1,150", "1,430")
    ]
    plain = write_report(make_run(), tmp_path / "plain", ["md", "html"])
    assert "Routing TCA" not in plain["md"].read_text() and "routing-tca" not in plain["html"].read_text()
    if CHROMIUM is None:
        pytest.skip("Debian chromium is not installed (deploy/bootstrap.sh installs it as root)")
    dom = dump_dom(paths["html"])
    body_tag = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="yes"' in body_tag and "data-errors" not in body_tag  # the page's script ran cleanly
    assert re.search(r'<h2 id="routing-tca">Routing TCA</h2>', dom)
    body = re.search(r'<table id="routing-tca-0".*?<tbody>(.*?)</tbody>', dom, flags=re.S).group(1)
    rows = re.findall(r"<tr.*?</tr>", body, flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert [c[0] for c in cells] == ["0-200", "200-500", "500-1000", "1000+"]
    assert cells[1] == ["200-500", "2", "2", "2", "62.5%", "62.5%", "-10.00", "5.00", "1,150", "1,430"]
