"""``RunResult`` to and from plain JSON (``result.json``), and handing a result to the report writer.

Why here: the report package (``backtest.report``: metrics, Markdown, PNG, HTML, the database rows)
is built separately; until it is importable the CLI still leaves the run's full result on disk, and
``--verify-against-topics`` and the tests read runs back from it. orjson: fast, and it writes the
floats exactly (shortest round-trip form).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import orjson

from backtest.model import BacktestTrade, CoverageRow, RunResult, StrategyInfo

RESULT_FILE = "result.json"


def result_to_dict(result: RunResult) -> dict[str, Any]:
    data = {f.name: getattr(result, f.name) for f in fields(result)}
    data["strategies"] = [asdict(s) for s in result.strategies]
    data["trades"] = [t.as_dict() for t in result.trades]
    data["coverage"] = [asdict(c) | {"share": c.share} for c in result.coverage]
    return data


def result_from_dict(data: dict[str, Any]) -> RunResult:
    trade_fields = {f.name for f in fields(BacktestTrade)}
    coverage_fields = {f.name for f in fields(CoverageRow)}
    values = dict(data)
    values["strategies"] = [StrategyInfo(**s) for s in data["strategies"]]
    values["trades"] = [BacktestTrade(**{k: v for k, v in t.items() if k in trade_fields}) for t in data["trades"]]
    values["coverage"] = [CoverageRow(**{k: v for k, v in c.items() if k in coverage_fields}) for c in data["coverage"]]
    known = {f.name for f in fields(RunResult)}
    return RunResult(**{k: v for k, v in values.items() if k in known})


def write_result_json(result: RunResult, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULT_FILE
    path.write_bytes(orjson.dumps(result_to_dict(result), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    return path


def read_result_json(path: Path) -> RunResult:
    return result_from_dict(orjson.loads(path.read_bytes()))


def write_outputs(result: RunResult, out_dir: Path, formats: tuple[str, ...] | None = None) -> dict[str, Path]:
    """The report (``backtest.report.write_report``) when that package is installed, always ``result.json``."""
    written = {"result": write_result_json(result, out_dir)}
    try:
        from backtest.report import write_report  # type: ignore[import-not-found]
    except ImportError:
        return written
    kwargs = {"formats": formats} if formats else {}
    written.update(write_report(result, out_dir, **kwargs))
    return written
