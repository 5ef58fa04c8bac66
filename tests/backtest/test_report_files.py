"""The report document and its JSON, Markdown, PNG and HTML files (the browser test opens the HTML)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import replace

import orjson
import pytest

from backtest import metrics
from backtest.model import CoverageRow
from backtest.report import FILES, document, write_report
from backtest.report import html as html_report
from backtest.report import markdown as md_report
from tests.support.backtest_runs import (
    DAY,
    HOSTILE_STRATEGY,
    HOSTILE_SYMBOL,
    HOUR,
    T0,
    make_result,
    make_run,
    make_trade,
)


def test_document_numbers_match_the_metrics_per_strategy():
    run = make_run()
    doc = document.build(run)
    assert [s["name"] for s in doc["strategies"]] == ["v53", "v54_tight"]
    for s in doc["strategies"]:
        mine = [t for t in run.trades if t.strategy == s["name"]]
        assert s["summary"]["trades"] == len(mine)
        assert s["summary"]["net_r"] == pytest.approx(sum(t.pnl_r_net for t in mine))
        assert s["summary"]["final_balance"] == pytest.approx(10_000 + sum(t.pnl_usd_net for t in mine))
        # the curve starts at (from, 0) and ends at the strategy's net R
        assert s["curve"]["time_ms"][0] == run.from_ms and s["curve"]["equity_r"][0] == 0.0
        assert s["curve"]["equity_r"][-1] == pytest.approx(s["summary"]["net_r"])
        assert min(s["curve"]["drawdown_r"]) == pytest.approx(-s["summary"]["max_drawdown_r"])
        assert len(s["daily"]) == 3 and sum(d["net_r"] for d in s["daily"]) == pytest.approx(s["summary"]["net_r"])
    # every breakdown partitions each strategy's trades
    for dim, rows in doc["breakdowns"].items():
        for s in doc["strategies"]:
            assert sum(r["trades"] for r in rows if r["strategy"] == s["name"]) == s["summary"]["trades"], dim
    reasons = {r["key"] for r in doc["breakdowns"]["exit_reason"]}
    assert reasons == {"sl", "sl_be", "tp", "timeout", "signal_flip"}
    assert len(doc["trades"]) == len(run.trades)


def test_the_funding_payment_is_its_own_column_in_r_and_usdt():
    doc = document.build(make_run())
    funded = [t for t in doc["trades"] if t["funding_r"] != 0]
    assert [t["position_id"] for t in funded] == ["v53:funded"]
    # LONG across 08:00 UTC at a +0.01 % rate pays 0.0001 x entry / R = 0.0001 / 0.004 R; 1R = 200 USDT
    assert funded[0]["funding_r"] == pytest.approx(0.025) and funded[0]["funding_usd"] == pytest.approx(5.0)
    t = funded[0]
    assert t["pnl_r_net"] == pytest.approx(t["pnl_r_gross"] - t["fees_r"] - t["slippage_r"] - t["funding_r"])
    assert doc["strategies"][0]["summary"]["funding_r"] == pytest.approx(0.025)


def test_coverage_counts_evaluations_that_lacked_inputs():
    doc = document.build(make_run(days=1))
    rows = {(c["layer"], c["symbol"], c["input"]): c for c in doc["coverage"]}
    premium = rows[("auxiliary", "BTCUSDT", "coinbase_premium")]
    assert premium["present"] == 0 and premium["lacking"] == 17_280 and premium["share"] == 0.0
    assert premium["note"] == "no public history (Coinbase premium)"
    assert rows[("crowding", "ETHUSDT", "long_short_ratio")]["lacking"] == 288
    assert rows[("direction", "ETHUSDT", "aggTrades")]["lacking"] == 0
    # 3 symbols x (crowding, gates) + the premium row
    assert doc["coverage_incomplete"] == 7
    assert doc["evaluations_lacking_inputs"] == sum(c["lacking"] for c in doc["coverage"])


def test_a_partial_run_covers_only_the_time_it_reached():
    full, part = make_run(), make_run(partial=True)
    dp = document.build(part)
    assert dp["run"]["partial"] is True and dp["run"]["end_ms"] == T0 + DAY + 13 * HOUR
    assert len(dp["strategies"][0]["daily"]) == 2  # day 1 and the day of the stop, not the whole range
    assert len(part.trades) < len(full.trades)
    assert document.build(full)["run"]["end_ms"] == full.to_ms


def test_trades_of_an_unknown_strategy_are_refused():
    run = make_result([make_trade(strategy="a")], strategies=["b"])
    with pytest.raises(ValueError, match="strategies not in the run: a"):
        document.build(run)


def test_write_report_writes_every_format_and_refuses_unknown_ones(tmp_path):
    run = make_run()
    paths = write_report(run, tmp_path / "out")
    assert {k: p.name for k, p in paths.items()} == FILES and all(p.stat().st_size > 0 for p in paths.values())
    doc = orjson.loads(paths["json"].read_bytes())
    assert doc["format"] == "tapeflow-backtest-report" and doc["format_version"] == 1
    assert list(doc) == [
        "format",
        "format_version",
        "run",
        "definitions",
        "strategies",
        "breakdowns",
        "coverage",
        "coverage_incomplete",
        "evaluations_lacking_inputs",
        "missing",
        "bad_rows",
        "routing_tca",
        "trades",
    ]
    assert set(doc["strategies"][0]["summary"]) >= {
        "trades",
        "wins",
        "losses",
        "win_rate",
        "gross_r",
        "fees_r",
        "slippage_r",
        "funding_r",
        "net_r",
        "net_usd",
        "fees_usd",
        "slippage_usd",
        "funding_usd",
        "profit_factor",
        "expectancy_r",
        "avg_win_r",
        "avg_loss_r",
        "max_drawdown_r",
        "sharpe_per_day",
        "sharpe_annualised",
        "final_balance",
    }
    assert doc["missing"] == run.missing and doc["bad_rows"] == run.bad_rows
    assert write_report(run, tmp_path / "only", ["json"]).keys() == {"json"}
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["report.json"]
    with pytest.raises(ValueError, match="unknown report format.*pdf"):
        write_report(run, tmp_path / "x", ["json", "pdf"])


def _md_cells(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_markdown_lists_everything_and_escapes_names():
    run = make_run(hostile=True, partial=True)
    text = md_report.render(document.build(run))
    assert text.count("PARTIAL RUN") == 1
    assert re.search(r"(?<!\\)<", text) is None  # no raw HTML: every "<" is escaped
    assert "\\</script\\>\\<img src=x onerror=alert(1)\\>" in text
    # every row of a table has as many cells as its header, whatever the names hold
    tables = re.findall(r"((?:^\|.*\|$\n)+)", text, flags=re.M)
    assert len(tables) >= 9
    for table in tables:
        lines = table.splitlines()
        assert {len(_md_cells(line)) for line in lines} == {len(_md_cells(lines[0]))}, lines[0]
    assert "no public history (Coinbase premium)" in text
    assert all(m in text for m in ["metrics: no file (404)", "quantity is not a number"])
    assert "PARTIAL" not in md_report.render(document.build(make_run()))


def test_png_is_an_image_with_drawn_curves(tmp_path):
    from matplotlib import image

    path = write_report(make_run(), tmp_path, ["png"])["png"]
    pixels = image.imread(path)
    assert pixels.shape[:2] == (650, 1100)
    # the two strategies' default colours (tab:blue, tab:orange) are both drawn
    rgb = (pixels[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in rgb[::7]}
    assert (31, 119, 180) in colours and (255, 127, 14) in colours


def _inline_scripts(page: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", page, flags=re.S)


def test_html_is_self_contained_with_a_strict_policy():
    page = html_report.render(document.build(make_run()))
    csp = html.unescape(re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1))
    assert "default-src 'none'" in csp and "connect-src" not in csp and "unsafe-eval" not in csp
    script_src = re.search(r"script-src ([^;]+);", csp).group(1).split()
    scripts = _inline_scripts(page)
    assert len(scripts) == 2  # uPlot and the page's own script
    assert sorted(script_src) == sorted(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts
    )
    # nothing to load: no src/href other than in-page anchors
    assert re.findall(r'\s(?:src|href)="(?!#)[^"]*"', page) == []
    assert "<link" not in page and "@import" not in page


def test_html_escapes_names_everywhere():
    run = make_run(hostile=True)
    page = html_report.render(document.build(run))
    assert HOSTILE_STRATEGY not in page and "<img" not in page and HOSTILE_SYMBOL not in page
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;&#34;&#39;$x$" in page
    assert "X|Y&lt;b&gt;&amp;$" in page
    # the chart data names the strategy through JSON escapes that cannot close the script element
    data = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, flags=re.S).group(1)
    assert "<" not in data and ">" not in data
    assert [s["name"] for s in orjson.loads(data)["strategies"]] == [run.strategies[0].name, HOSTILE_STRATEGY]


def test_html_tables_hold_every_trade_and_breakdown_row():
    run = make_run()
    doc = document.build(run)
    page = html_report.render(doc)
    body = re.search(r'<table id="trades-table".*?<tbody>(.*?)</tbody>', page, flags=re.S).group(1)
    assert body.count("<tr") == len(run.trades)
    for dim in ("symbol", "tier", "utc_hour", "exit_reason", "score_band"):
        rows = re.search(rf'<table id="breakdown-{dim}".*?<tbody>(.*?)</tbody>', page, flags=re.S).group(1)
        assert rows.count("<tr") == len(doc["breakdowns"][dim]), dim
    assert 'id="partial-banner"' not in page
    assert 'id="partial-banner"' in html_report.render(document.build(make_run(partial=True)))


def test_empty_run_renders(tmp_path):
    run = replace(
        make_result([], strategies=["v53"]), coverage=[CoverageRow("direction", "BTCUSDT", "aggTrades", 0, 0)]
    )
    paths = write_report(run, tmp_path)
    doc = orjson.loads(paths["json"].read_bytes())
    assert doc["strategies"][0]["summary"]["trades"] == 0 and doc["trades"] == []
    assert doc["strategies"][0]["summary"]["sharpe_per_day"] is None
    assert metrics.summarise([]).max_drawdown_r == 0.0
