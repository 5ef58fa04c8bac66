"""The report as one self-contained HTML page: interactive equity/drawdown, sortable tables, offline.

Why this shape:
- Everything is inline (styles, scripts, data) and a Content-Security-Policy meta tag forbids every
  fetch (`default-src 'none'`; scripts only by their SHA-256 hashes): the file works offline, from an
  e-mail attachment or a CI artifact, and provably loads nothing from anywhere.
- Charts: uPlot (MIT, ~50 KB, vendored unchanged in `vendor/`, inlined). It gives what a reader
  needs and a hand-written SVG chart would have to re-implement and test: values of every strategy
  under the cursor in the legend, drag-to-zoom with the equity and drawdown charts' cursors and
  zoom kept in sync, UTC time axes, and canvas drawing that stays fast with tens of thousands of
  points. The rest of the page's script (`templates/report.js`, table sorting and chart set-up) is
  small and has no dependency.
- Text: rendered by Jinja2 with autoescaping, so symbols and strategy names can hold any character;
  the chart data is JSON with `<`, `>` and `&` as \\u escapes inside a non-executed
  `application/json` script block.
- Tables are rendered on the server side (readable without scripts); a script only reorders rows.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import orjson
from markupsafe import Markup

from backtest.report import fmt
from backtest.report.document import BREAKDOWN_TITLES

LIST_LIMIT = 1000  # missing days / bad rows listed on the page (the JSON keeps all)


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    v: str | None = None  # sort key for numeric columns
    cls: str = ""


@dataclass(frozen=True, slots=True)
class Header:
    text: str
    type: str  # num | text
    cls: str = ""


@dataclass
class Table:
    id: str
    headers: list[Header]
    rows: list[Any] = field(default_factory=list)
    sortable: bool = True


@dataclass(frozen=True, slots=True)
class Row:
    cells: list[Cell]
    cls: str = ""


def _num(v: Any, kind: str) -> Cell:
    cls = ""
    if kind in fmt.SIGNED_KINDS and isinstance(v, int | float):
        cls = "pos" if v > 0 else "neg" if v < 0 else ""
    return Cell(fmt.value(v, kind), None if v is None else repr(float(v)), cls)


def _text(v: Any) -> Cell:
    return Cell(str(v), None, "t")


def _cell(v: Any, kind: str) -> Cell:
    return _text(fmt.value(v, kind)) if kind in fmt.TEXT_KINDS else _num(v, kind)


def _header(text: str, kind: str) -> Header:
    text_kind = kind in fmt.TEXT_KINDS
    return Header(text, "text" if text_kind else "num", "t" if text_kind else "")


def _strategy_table(doc: dict[str, Any], table_id: str, cols: list[fmt.Column]) -> Table:
    t = Table(
        table_id,
        [_header("strategy", "text"), _header("version", "text"), _header("config hash", "text")]
        + [_header(h, k) for _c, h, k in cols],
    )
    t.rows = [
        Row(
            [_text(s["name"]), _text(s["version"]), _text(s["config_hash"])]
            + [_cell(s["summary"][c], k) for c, _h, k in cols]
        )
        for s in doc["strategies"]
    ]
    return t


def _tables(doc: dict[str, Any]) -> dict[str, Any]:
    cols = fmt.BREAKDOWN_COLUMNS
    breakdowns = []
    for dim, rows in doc["breakdowns"].items():
        if dim == "strategy":
            continue
        t = Table(
            f"breakdown-{dim}",
            [_header("strategy", "text"), _header(BREAKDOWN_TITLES[dim], "text")]
            + [_header(h, k) for _c, h, k in cols],
        )
        t.rows = [Row([_text(r["strategy"]), _text(r["key"])] + [_cell(r[c], k) for c, _h, k in cols]) for r in rows]
        breakdowns.append({"dimension": dim, "title": BREAKDOWN_TITLES[dim].lower(), "table": t})
    coverage = Table(
        "coverage-table",
        [
            _header(h, k)
            for h, k in (
                ("layer", "text"),
                ("symbol", "text"),
                ("input", "text"),
                ("evaluations", "int"),
                ("present", "int"),
                ("lacking", "int"),
                ("share", "share"),
                ("note", "text"),
            )
        ],
    )
    coverage.rows = [
        Row(
            [
                _text(c["layer"]),
                _text(c["symbol"]),
                _text(c["input"]),
                _cell(c["evaluations"], "int"),
                _cell(c["present"], "int"),
                _cell(c["lacking"], "int"),
                _cell(c["share"], "share"),
                _text(c["note"]),
            ],
            "lacking" if c["lacking"] else "",
        )
        for c in doc["coverage"]
    ]
    routing = []
    for n, section in enumerate(doc["routing_tca"]):
        t = Table(f"routing-tca-{n}", [_header(h, k) for _c, h, k in fmt.ROUTING_COLUMNS])
        t.rows = [Row([_cell(r[c], k) for c, _h, k in fmt.ROUTING_COLUMNS]) for r in section["buckets"]]
        routing.append({"strategy": section["strategy"], "orders": section["orders"], "table": t})
    trades = Table("trades-table", [_header(h, k) for _c, h, k in fmt.TRADE_COLUMNS])
    trades.rows = [Row([_cell(t[c], k) for c, _h, k in fmt.TRADE_COLUMNS]) for t in doc["trades"]]
    return {
        "strategies_table": _strategy_table(doc, "strategies-table", fmt.STRATEGY_COLUMNS),
        "usd_table": _strategy_table(doc, "strategies-usd-table", fmt.USD_COLUMNS),
        "breakdowns": breakdowns,
        "coverage_table": coverage,
        "routing_tca": routing,
        "routing_note": fmt.ROUTING_NOTE,
        "trades_table": trades,
    }


def _script_safe_json(obj: Any) -> str:
    text = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _inline(text: str, tag: str) -> Markup:
    """Raw text for a <script>/<style> element: must not be able to close the element early."""
    if f"</{tag}" in text.lower() or "<!--" in text:
        raise ValueError(f"inline {tag} text contains a closing tag")
    return Markup(text)  # nosec B704 # the text is checked just above: it cannot close its element


@cache
def _assets() -> dict[str, str]:
    pkg = resources.files("backtest.report")
    return {
        "uplot_js": pkg.joinpath("vendor/uPlot.iife.min.js").read_text(encoding="utf-8"),
        "uplot_css": pkg.joinpath("vendor/uPlot.min.css").read_text(encoding="utf-8"),
        "page_js": pkg.joinpath("templates/report.js").read_text(encoding="utf-8"),
        "page_css": pkg.joinpath("templates/report.css").read_text(encoding="utf-8"),
    }


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("backtest.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


def render(doc: dict[str, Any]) -> str:
    a = _assets()
    run = doc["run"]
    chart_data = {"end_ms": run["end_ms"], "strategies": [{"name": s["name"], **s["curve"]} for s in doc["strategies"]]}
    csp = (
        "default-src 'none'; "
        f"script-src {_sha256(a['uplot_js'])} {_sha256(a['page_js'])}; "
        "style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    )
    return _template().render(
        csp=csp,
        run=run,
        strategies=doc["strategies"],
        definitions=doc["definitions"],
        params=[(k, orjson.dumps(v, default=str).decode()) for k, v in sorted(run["params"].items())],
        coverage_incomplete=doc["coverage_incomplete"],
        coverage_rows=len(doc["coverage"]),
        evaluations_lacking=doc["evaluations_lacking_inputs"],
        missing=doc["missing"][:LIST_LIMIT],
        missing_count=len(doc["missing"]),
        missing_more=max(len(doc["missing"]) - LIST_LIMIT, 0),
        bad_rows=doc["bad_rows"][:LIST_LIMIT],
        bad_rows_count=len(doc["bad_rows"]),
        bad_rows_more=max(len(doc["bad_rows"]) - LIST_LIMIT, 0),
        chart_data=_inline(_script_safe_json(chart_data), "script"),
        uplot_js=_inline(a["uplot_js"], "script"),
        page_js=_inline(a["page_js"], "script"),
        uplot_css=_inline(a["uplot_css"], "style"),
        page_css=_inline(a["page_css"], "style"),
        **_tables(doc),
    )


def write(doc: dict[str, Any], path: Path) -> Path:
    path.write_text(render(doc), encoding="utf-8")
    return path
