"""``RunResult`` to and from plain JSON (``result.json``), next to the report.

Why both: the report (``backtest.report``: metrics, Markdown, PNG, HTML) is for people; ``result.json``
is the run itself (every trade with every cost column, coverage, missing inputs, parameters), for
scripts, for comparing runs and for reading a run back (``read_result_json``). orjson: fast, and it
writes floats exactly (shortest round-trip form).

The routed entry orders a run kept (``RunResult.routed_orders``, for the routing TCA:
``backtest.routed_orders``) go to ``routed_orders.json`` beside it, without indentation: indented, each
value of their rows took a line of its own and a 30-h research run's result.json grew 2.2x (54 -> 118 KB);
``read_result_json`` reads them back from beside the file it reads.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import orjson

from backtest.model import BacktestTrade, CoverageRow, RunResult, StrategyInfo

RESULT_FILE = "result.json"
ROUTED_FILE = "routed_orders.json"


def result_to_dict(result: RunResult) -> dict[str, Any]:
    data = {f.name: getattr(result, f.name) for f in fields(result)}
    data["strategies"] = [asdict(s) for s in result.strategies]
    data["trades"] = [t.as_dict() for t in result.trades]
    data["coverage"] = [asdict(c) | {"share": c.share} for c in result.coverage]
    del data["routed_orders"]  # in ROUTED_FILE
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
    routed = out_dir / ROUTED_FILE
    if result.routed_orders:
        routed.write_bytes(orjson.dumps(result.routed_orders, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    else:
        routed.unlink(missing_ok=True)  # a run without routed entries leaves none of an earlier run's
    return path


def read_result_json(path: Path) -> RunResult:
    data = orjson.loads(path.read_bytes())
    routed = path.parent / ROUTED_FILE
    if routed.is_file():
        data["routed_orders"] = orjson.loads(routed.read_bytes())
    return result_from_dict(data)


def write_outputs(result: RunResult, out_dir: Path, formats: tuple[str, ...] | None = None) -> dict[str, Path]:
    """``result.json`` and the report (``backtest.report.write_report``; all its formats by default)."""
    from backtest.report import FORMATS, write_report

    written = {"result": write_result_json(result, out_dir)}
    written.update(write_report(result, out_dir, formats or FORMATS))
    return written
