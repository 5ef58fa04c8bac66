"""The report as Markdown: readable in a terminal, a pull request or a wiki, with the PNG beside it.

Why hand-written tables: they are a few lines with `fmt.md` escaping every cell; a table library
would add a dependency for `"|".join`.
"""

from __future__ import annotations

from typing import Any

from backtest.report import fmt
from backtest.report.document import BREAKDOWN_TITLES

LIST_LIMIT = 200  # missing days / bad rows shown in full in the JSON; here the first ones


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _listing(title: str, items: list[str]) -> list[str]:
    out = [f"## {title} ({len(items)})", ""]
    if not items:
        return out + ["None.", ""]
    out += [f"- {fmt.md(i)}" for i in items[:LIST_LIMIT]]
    if len(items) > LIST_LIMIT:
        out.append(f"- … and {len(items) - LIST_LIMIT} more (all of them in report.json)")
    return out + [""]


def _header(run: dict[str, Any]) -> list[str]:
    """The title, the partial-run warning if any, and what was run over which range."""
    lines = [f"# Backtest {fmt.md(run['run_id'])}", ""]
    if run["partial"]:
        lines += [
            f"> **PARTIAL RUN** — interrupted at {run['end']}, before the end of its range ({run['to']}): "
            f"the numbers cover only the {run['events_processed']:,} events processed until then.",
            "",
        ]
    return lines + [
        f"- source: {fmt.md(run['source'])}, exchange {fmt.md(run['exchange'])}, "
        f"symbols {fmt.md(', '.join(run['symbols']))}",
        f"- range: {run['from']} → {run['to']}",
        f"- ran {run['started_at']} → {run['finished_at']} ({run['duration_s']:.1f} s); "
        f"{run['events_processed']:,} events, {run['trades_processed']:,} market trades"
        + (f" ({run['trades_per_s']:,.0f}/s)" if run["trades_per_s"] else "")
        + f", {run['evaluations']:,} evaluations, {run['signals']:,} signals",
        f"- initial balance {run['initial_balance']:,.2f} USDT",
        "",
    ]


def _strategies(doc: dict[str, Any], png_name: str | None) -> list[str]:
    """The strategy tables (R, then USD), the definitions, and the equity chart's link."""
    lines = ["## Strategies", ""]
    for cols in (fmt.STRATEGY_COLUMNS, fmt.USD_COLUMNS):
        lines += _table(
            ["strategy", "version", "config hash"] + [h for _k, h, _ in cols],
            [
                [fmt.md(s["name"]), fmt.md(s["version"]), f"`{fmt.md(s['config_hash'])}`"]
                + [fmt.value(s["summary"][k], kind) for k, _h, kind in cols]
                for s in doc["strategies"]
            ],
        )
        lines.append("")
    lines += [f"Definitions: {'; '.join(f'**{fmt.md(k)}**: {fmt.md(v)}' for k, v in doc['definitions'].items())}.", ""]
    if png_name:
        lines += [f"![Equity and drawdown in R]({png_name})", ""]
    return lines


def _breakdowns(doc: dict[str, Any]) -> list[str]:
    """A table per breakdown dimension except strategy (the Strategies tables show that one)."""
    lines: list[str] = []
    for dim, rows in doc["breakdowns"].items():
        if dim == "strategy":
            continue
        lines += [f"## By {BREAKDOWN_TITLES[dim].lower()}", ""]
        lines += _table(
            ["strategy", BREAKDOWN_TITLES[dim]] + [h for _k, h, _ in fmt.BREAKDOWN_COLUMNS],
            [
                [fmt.md(r["strategy"]), fmt.md(r["key"])]
                + [fmt.value(r[k], kind) for k, _h, kind in fmt.BREAKDOWN_COLUMNS]
                for r in rows
            ],
        )
        lines.append("")
    return lines


def _coverage(doc: dict[str, Any]) -> list[str]:
    lines = [
        "## Data coverage",
        "",
        f"{doc['coverage_incomplete']} of {len(doc['coverage'])} (layer, symbol, input) rows lacked inputs "
        f"for some evaluations; {doc['evaluations_lacking_inputs']:,} evaluation-inputs lacking in all.",
        "",
    ]
    lines += _table(
        ["layer", "symbol", "input", "evaluations", "present", "lacking", "share", "note"],
        [
            [
                fmt.md(c["layer"]),
                fmt.md(c["symbol"]),
                fmt.md(c["input"]),
                f"{c['evaluations']:,}",
                f"{c['present']:,}",
                f"{c['lacking']:,}",
                fmt.value(c["share"], "share"),
                fmt.md(c["note"]),
            ]
            for c in doc["coverage"]
        ],
    )
    return lines + [""]


def _routing_tca(doc: dict[str, Any]) -> list[str]:
    """One table per strategy with routed entries; nothing for a run without any."""
    if not doc["routing_tca"]:
        return []
    lines = ["## Routing TCA", "", fmt.md(fmt.ROUTING_NOTE), ""]
    for section in doc["routing_tca"]:
        lines += [f"### {fmt.md(section['strategy'])} ({section['orders']:,} routed orders)", ""]
        lines += _table(
            [h for _k, h, _ in fmt.ROUTING_COLUMNS],
            [[fmt.md(fmt.value(r[k], kind)) for k, _h, kind in fmt.ROUTING_COLUMNS] for r in section["buckets"]],
        )
        lines.append("")
    return lines


def _execution_model(run: dict[str, Any]) -> list[str]:
    lines = ["## Execution model", ""]
    return lines + ([f"- {fmt.md(k)}: {fmt.md(v)}" for k, v in sorted(run["params"].items())] or ["- (none given)"])


def _trades(trades: list[dict[str, Any]]) -> list[str]:
    lines = ["", f"## Trades ({len(trades)})", ""]
    return lines + _table(
        [h for _k, h, _ in fmt.TRADE_COLUMNS],
        [
            [
                fmt.md(fmt.value(t[k], kind)) if kind == "text" else fmt.value(t[k], kind)
                for k, _h, kind in fmt.TRADE_COLUMNS
            ]
            for t in trades
        ],
    )


def render(doc: dict[str, Any], png_name: str | None = "equity.png") -> str:
    lines = _header(doc["run"])
    lines += _strategies(doc, png_name)
    lines += _breakdowns(doc)
    lines += _coverage(doc)
    lines += _routing_tca(doc)
    lines += _listing("Missing days and files", doc["missing"])
    lines += _listing("Bad rows", doc["bad_rows"])
    lines += _execution_model(doc["run"])
    lines += _trades(doc["trades"])
    return "\n".join(lines) + "\n"
