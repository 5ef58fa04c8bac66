"""Backtest report: a run's metrics written as JSON, Markdown, PNG and a self-contained HTML page,
and stored in `backtest_runs`/`backtest_trades`.

Why a package: the formats share one document (`document.build`) and differ only in rendering;
the runner calls `write_report` and, when a database is configured, `store_run`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from backtest.model import RunResult
from backtest.report import document
from backtest.report.store import store_run

FILES = {"json": "report.json", "md": "report.md", "png": "equity.png", "html": "report.html"}
FORMATS = tuple(FILES)

__all__ = ["FILES", "FORMATS", "store_run", "write_report"]


def write_report(
    result: RunResult, out_dir: Path, formats: Iterable[str] = ("json", "md", "png", "html")
) -> dict[str, Path]:
    """Write the chosen formats into `out_dir` (created); returns {format: path}."""
    wanted = list(dict.fromkeys(formats))
    unknown = [f for f in wanted if f not in FILES]
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = document.build(result)
    written: dict[str, Path] = {}
    for fmt in wanted:
        path = out_dir / FILES[fmt]
        if fmt == "json":
            path.write_bytes(
                orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str) + b"\n"
            )
        elif fmt == "md":
            from backtest.report import markdown

            path.write_text(markdown.render(doc, FILES["png"] if "png" in wanted else None), encoding="utf-8")
        elif fmt == "png":
            from backtest.report import (
                png,  # matplotlib is imported only when a picture is wanted
            )

            png.render(doc, path)
        else:
            from backtest.report import html

            html.write(doc, path)
        written[fmt] = path
    return written
