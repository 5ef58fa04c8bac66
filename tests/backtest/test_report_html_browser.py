"""The HTML report in headless Chromium: charts and tables render, hover/zoom/sort work, no network.

Set TAPEFLOW_REPORT_SHOTS=DIR to keep the screenshots (to look at them).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from backtest.report import document, fmt, write_report
from tests.support.backtest_runs import HOSTILE_STRATEGY, make_run
from tests.support.chromium import CHROMIUM, DevTools, dump_dom, screenshot

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian chromium is not installed (deploy/bootstrap.sh installs it as root: apt-get install chromium)",
)
STRATEGY_COLOURS = [(0x1F, 0x77, 0xB4), (0xD6, 0x27, 0x28)]  # report.js COLORS[0], COLORS[1]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("reports")
    return {
        name: write_report(run, base / name, ["html"])["html"]
        for name, run in {"full": make_run(), "partial": make_run(partial=True, hostile=True)}.items()
    }


def _keep(path: Path) -> None:
    if os.environ.get("TAPEFLOW_REPORT_SHOTS"):
        Path(os.environ["TAPEFLOW_REPORT_SHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["TAPEFLOW_REPORT_SHOTS"]) / path.name)


def test_dump_dom_shows_rendered_charts_and_every_table_row(reports):
    run = make_run()
    doc = document.build(run)
    dom = dump_dom(reports["full"])
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="yes"' in body and 'data-charts="2"' in body and "data-errors" not in body
    for chart in ("chart-equity", "chart-drawdown"):
        block = re.search(rf'<div id="{chart}" class="chart">(.*?)(?:<div id="chart-|<h2>)', dom, flags=re.S)
        assert block and 'class="uplot' in block.group(1) and "<canvas" in block.group(1), chart
        # the legend names each strategy
        assert all(f">{s.name}<" in block.group(1) for s in run.strategies)
    trades = re.search(r'<table id="trades-table".*?<tbody>(.*?)</tbody>', dom, flags=re.S).group(1)
    assert trades.count("<tr") == len(run.trades)
    for dim in ("symbol", "tier", "utc_hour", "exit_reason", "score_band"):
        rows = re.search(rf'<table id="breakdown-{dim}".*?<tbody>(.*?)</tbody>', dom, flags=re.S).group(1)
        assert rows.count("<tr") == len(doc["breakdowns"][dim]), dim
    assert re.search(r'<table id="coverage-table".*?</table>', dom, flags=re.S).group(0).count('class="lacking"') == 7
    assert 'id="partial-banner"' not in dom


def test_partial_run_shows_its_banner_and_hostile_names_stay_text(reports):
    dom = dump_dom(reports["partial"])
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="yes"' in body and "data-errors" not in body
    assert re.search(r'id="partial-banner"[^>]*>PARTIAL RUN — interrupted at 2024-03-02T13:00:00.000Z', dom)
    assert "<img" not in dom  # the strategy named "</script><img ...>" is text, in tables and chart legends
    assert dom.count("&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;") >= 4


def _colour_pixels(pixels, colour, tolerance: int = 12) -> int:
    import numpy as np

    rgb = (pixels[..., :3] * 255).round().astype(int)
    return int((np.abs(rgb - np.array(colour)).max(axis=-1) <= tolerance).sum())


def test_screenshot_shows_both_strategies_curves(reports, tmp_path):
    from matplotlib import image

    for name, path in reports.items():
        shot = screenshot(path, tmp_path / f"report-{name}.png", 1400, 1300)
        _keep(shot)
        pixels = image.imread(shot)
        assert pixels.shape[:2] == (1300, 1400)
        for colour in STRATEGY_COLOURS:
            assert _colour_pixels(pixels, colour) > 400, (name, colour)


def _equity_at(curve: dict, t_s: float) -> float:
    value = None
    for t, e in zip(curve["time_ms"], curve["equity_r"], strict=True):
        if t / 1000 <= t_s:
            value = e
    return value


def test_hover_shows_values_drag_zooms_both_charts_and_headers_sort(reports):
    doc = document.build(make_run())
    with DevTools() as dt:
        dt.open(reports["full"])
        assert dt.evaluate("document.body.dataset.rendered") == "yes"

        # hover the middle of the equity chart: the legends of both charts show the values there
        r = dt.rect("#chart-equity .u-over")
        dt.mouse("mouseMoved", r["x"] + r["width"] * 0.55, r["y"] + r["height"] / 2)
        legend = dt.evaluate(
            "Array.from(document.querySelectorAll('#chart-equity .u-legend .u-value')).map(e => e.textContent)"
        )
        x_s = dt.evaluate("reportCharts[0].data[0][reportCharts[0].cursor.idx]")
        assert re.fullmatch(r"2024-03-0\d \d\d:\d\d", legend[0])
        for s, text in zip(doc["strategies"], legend[1:], strict=True):
            assert text == f"{_equity_at(s['curve'], x_s):+.3f} R", s["name"]
        dd_legend = dt.evaluate(
            "Array.from(document.querySelectorAll('#chart-drawdown .u-legend .u-value')).map(e => e.textContent)"
        )
        assert dd_legend[0] == legend[0] and all(re.fullmatch(r"[+-]\d+\.\d{3} R", v) for v in dd_legend[1:])

        # drag from 30 % to 60 % of the width: both charts zoom to the same, narrower range
        full = dt.evaluate("reportCharts.map(c => [c.scales.x.min, c.scales.x.max])")
        y = r["y"] + r["height"] / 2
        dt.mouse("mousePressed", r["x"] + r["width"] * 0.3, y, buttons=1, button="left")
        dt.mouse("mouseMoved", r["x"] + r["width"] * 0.45, y, buttons=1)
        dt.mouse("mouseMoved", r["x"] + r["width"] * 0.6, y, buttons=1)
        dt.mouse("mouseReleased", r["x"] + r["width"] * 0.6, y, button="left")
        zoomed = dt.evaluate("reportCharts.map(c => [c.scales.x.min, c.scales.x.max])")
        assert zoomed[0] == zoomed[1]
        span, full_span = zoomed[0][1] - zoomed[0][0], full[0][1] - full[0][0]
        assert 0.2 * full_span < span < 0.4 * full_span and zoomed[0][0] > full[0][0]
        dt.evaluate("document.getElementById('reset-zoom').click()")
        assert dt.evaluate("reportCharts.map(c => [c.scales.x.min, c.scales.x.max])") == full

        # sort the trades by net R, ascending then descending; then by symbol
        net_col = [h for _k, h, _ in fmt.TRADE_COLUMNS].index("net R")
        read = f"Array.from(document.querySelectorAll('#trades-table tbody tr')).map(r => r.cells[{net_col}].dataset.v)"
        header = f"document.querySelectorAll('#trades-table thead th')[{net_col}]"
        dt.evaluate(f"{header}.click()")
        values = [float(v) for v in dt.evaluate(read)]
        assert values == sorted(t["pnl_r_net"] for t in doc["trades"])
        assert dt.evaluate(f"{header}.getAttribute('aria-sort')") == "ascending"
        dt.evaluate(f"{header}.click()")
        assert [float(v) for v in dt.evaluate(read)] == sorted(values, reverse=True)
        dt.evaluate("document.querySelectorAll('#trades-table thead th')[1].click()")
        symbols = dt.evaluate(
            "Array.from(document.querySelectorAll('#trades-table tbody tr')).map(r => r.cells[1].textContent)"
        )
        assert symbols == sorted(t["symbol"] for t in doc["trades"])

        assert dt.problems() == []
        assert dt.requests() == [reports["full"].resolve().as_uri()]  # the page itself, nothing else


def test_the_page_cannot_fetch_anything(reports, tmp_path):
    """The policy blocks what a script would load: an injected image and fetch() are refused."""
    with DevTools() as dt:
        dt.open(reports["partial"])
        result = dt.evaluate("""(async () => {
            const img = new Image(); img.src = 'http://127.0.0.1:9/x.png'; document.body.appendChild(img);
            try { await fetch('http://127.0.0.1:9/y'); return 'fetched'; } catch (e) { return 'refused'; }
        })()""")
        assert result == "refused"
        dt.evaluate("new Promise(r => setTimeout(r, 300))")  # let the image's request be reported
        page = reports["partial"].resolve().as_uri()
        # the image request is announced and then refused by the policy; fetch() never gets that far
        assert dt.requests() == [page, "http://127.0.0.1:9/x.png"]
        assert dt.blocked() == {"http://127.0.0.1:9/x.png": "csp"}
        problems = dt.problems()
        assert any(p.startswith("Connecting to 'http://127.0.0.1:9/y' violates") for p in problems), problems
        assert any(p.startswith("Loading the image 'http://127.0.0.1:9/x.png' violates") for p in problems), problems
        legend = dt.evaluate(
            "Array.from(document.querySelectorAll('#chart-equity .u-legend .u-label')).map(e => e.textContent)"
        )
        assert HOSTILE_STRATEGY in legend  # the name is shown as text, exactly
