"""`tapeflow model train` end to end: the export with every detector on, the dataset, both learners, the
model file and its HTML report (opened in headless Chromium), and one-line errors.

Data: two UTC days of XRPUSDT from the offline synthetic source at 0.5 trades/s with a book every 10 s
(as tests/backtest/research/test_export.py runs it: the default rates cost minutes of CPU on this shared
machine), one evaluation per 10 s kept (``--every 10s``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

import backtest.sources as sources
import backtest.sources.synthetic as synthetic
from backtest.research.model_train import load_model
from tests.support.built_once import built_once
from tests.support.chromium import CHROMIUM, dump_dom, screenshot
from tests.support.cli_fork import tapeflow_forked

REAL_OPEN_SOURCE = sources.open_source
ARGS = ["--from", "2024-01-01", "--to", "2024-01-03", "--symbols", "XRPUSDT", "--every", "10s", "--folds", "3"]


def _slow_source(spec, symbols, from_ms, to_ms, **options):
    return REAL_OPEN_SOURCE(spec, symbols, from_ms, to_ms, **{**options, "trades_per_s": 0.5})


def train(tmp: Path, *extra: str):
    from tapeflow.cli import app

    args = ["model", "train", *ARGS, "--export-dir", str(tmp / "data"), "--out", str(tmp / "models")]
    result = CliRunner().invoke(app, [*args, "--threads", "2", "--no-progress", *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def _train_twice(tmp: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "open_source", _slow_source)
        patch.setattr(synthetic, "BOOK_INTERVAL_MS", 10_000)
        (tmp / "first.out").write_text(train(tmp))
        (tmp / "second.out").write_text(train(tmp))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # trained once per run, not once per worker that gets one of this module's tests (about a minute
    # each); the tests only read it
    tmp = built_once(tmp_path_factory, "model-cli-train", _train_twice)
    first, second = (tmp / "first.out").read_text(), (tmp / "second.out").read_text()
    path = Path(re.search(r"^model: (\S+)$", first, flags=re.M).group(1))
    return {"tmp": tmp, "output": first, "again": second, "path": path, "doc": json.loads(path.read_text())}


def expected_rows(root: Path) -> tuple[int, int]:
    """Rows with a direction and a label, the first of each 10 s: counted here from the Parquet files."""
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table(
        columns=["eval_time", "direction", "y_binary_60m"]
    )
    t = table.column("eval_time").cast(pa.int64()).to_numpy()
    y = table.column("y_binary_60m").to_numpy(zero_copy_only=False)
    direction = np.asarray(table.column("direction").to_pylist(), dtype=object)
    seen, rows, wins = set(), 0, 0
    for k in np.argsort(t, kind="stable"):
        if direction[k] is None or np.isnan(y[k]) or t[k] // 10_000 in seen:
            continue
        seen.add(t[k] // 10_000)
        rows += 1
        wins += int(y[k])
    return rows, wins


def test_train_writes_a_model_file_named_by_its_content_and_a_report(run):
    doc, path, output = run["doc"], run["path"], run["output"]
    assert f"report: {path.with_suffix('.html')}" in output
    text = path.read_text().rstrip("\n")
    assert path.name == f"model-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    rows, wins = expected_rows(run["tmp"] / "data" / "v53")
    assert (doc["data"]["rows"], doc["data"]["positives"]) == (rows, wins)
    assert f"dataset: {rows:,} evaluations ({wins:,} wins)" in output
    # every detector was on: the data has their columns, and the AUC with and without them is reported
    assert {"in_vpin", "in_kyle_lambda", "in_amihud"} <= set(doc["features"]) | set(doc["dropped_features"])
    assert doc["detector_features"] and set(doc["detector_features"]) <= set(doc["features"])
    for name, report in doc["learners"].items():
        assert len(report["folds"]) == 3 and sum(f["rows"] for f in report["folds"]) == rows
        assert [f["test_from_ms"] for f in report["folds"]] == sorted(f["test_from_ms"] for f in report["folds"])
        assert all(f["purged_rows"] > 0 for f in report["folds"])
        d = report["detectors"]
        assert d["auc_difference"] == pytest.approx(d["auc_with"] - d["auc_without"])
        folds = ", ".join(f"{f['auc']:.3f}" for f in report["folds"])
        assert f"{name}: out-of-fold AUC {report['pooled']['auc']:.3f} pooled (folds {folds})" in output
        assert report["walk_forward"]
    assert doc["strategy"]["name"] == "v53" and doc["validation"]["embargo_ms"] == 3_600_000
    # the same data and settings: the export is reused and the model is the same file
    assert "2 reused" in run["again"] or "0 symbol-days exported" in run["again"]
    assert f"model: {path}" in run["again"]
    model = load_model(path)
    p = model.predict(np.zeros((4, len(model.features))), np.array([1.0, -1.0, 1.0, -1.0]))
    assert np.all((p >= 0.001) & (p <= 0.999))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed (deploy/bootstrap.sh installs it)")
def test_the_report_in_headless_chromium_shows_the_model_files_numbers(run, tmp_path):
    doc, page = run["doc"], run["path"].with_suffix(".html")
    dom = dump_dom(page)
    summary = re.search(r'<table id="summary">.*?</table>', dom, flags=re.S).group(0)
    for name, report in doc["learners"].items():
        row = re.search(rf'<tr[^>]*data-learner="{name}">(.*?)</tr>', summary, flags=re.S).group(1)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        assert cells[:4] == [
            name,
            f"{report['pooled']['auc']:.3f}",
            f"{report['pooled']['brier']:.4f}",
            f"{report['pooled']['log_loss']:.4f}",
        ]
        assert cells[8] == f"{report['detectors']['auc_difference']:+.3f}"
        folds = re.search(rf'<table id="folds-{name}">.*?<tbody>(.*?)</tbody>', dom, flags=re.S).group(1)
        assert folds.count("<tr") == 3
        for fold, tr in zip(report["folds"], re.findall(r"<tr>(.*?)</tr>", folds, flags=re.S)):
            assert re.findall(r"<td[^>]*>(.*?)</td>", tr)[7] == f"{fold['auc']:.3f}"
        chart = re.search(rf'<div id="reliability-chart-{name}">(.*?)</div>', dom, flags=re.S).group(1)
        assert chart.count('class="calibrated"') == len(report["reliability_calibrated"])
        shap = re.search(rf'<table id="shap-{name}">.*?<tbody>(.*?)</tbody>', dom, flags=re.S).group(1)
        assert shap.count("<tr") == len(doc["features"])
        assert re.search(rf'<div id="shap-chart-{name}">(.*?)</div>', dom, flags=re.S).group(1).count(
            'class="bar"'
        ) == min(20, len(doc["features"]))
    assert re.search(r'<span id="chosen">(\w+)</span>', dom).group(1) == doc["chosen"]
    assert "<script" not in dom  # nothing to run: the page is tables and inline SVG
    shot = screenshot(page, tmp_path / "report.png")
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def tapeflow(*args: str, cwd: Path, forked: bool = False) -> subprocess.CompletedProcess:
    """`tapeflow model train ARGS`; `forked`: the same entry point in a process forked from one that imported
    it (tests/support/cli_fork.py: ~0.03 CPU-s instead of ~0.8 for a refused input)."""
    if forked:
        env = dict(os.environ)
        preload = ("backtest.research.model_data",)
        return tapeflow_forked("model", "train", *args, "--no-progress", env=env, cwd=cwd, preload=preload)
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", "model", "train", *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_bad_input_is_one_error_line(run, tmp_path):
    data = run["tmp"] / "data" / "v53"
    cases = {
        ("--strategy", "v99", "--from", "2024-01-01", "--to", "2024-01-03"): "not a file or a shipped strategy",
        ("--from", "2024-01-03", "--to", "2024-01-01"): "empty range",
        ("--data", str(tmp_path / "none"), "--from", "2024-01-01", "--to", "2024-01-03"): "not an export folder",
        ("--data", str(data), "--from", "2024-03-01", "--to", "2024-03-03"): "no evaluations in",
        ("--data", str(data), *ARGS[:4], "--min-rows", "100000000"): "too few labels",
        ("--data", str(data), *ARGS[:4], "--target", "y_nothing", "--horizon", "1h"): "no such column",
        ("--data", str(data), *ARGS[:4], "--target", "fwd_return_5m"): "is not a 0/1 label",
        ("--data", str(data), *ARGS[:4], "--calibration", "magic"): "--calibration 'magic'",
        # the export folder holds the strategy with its detectors on; without them it is another configuration
        (
            "--no-detectors",
            *ARGS[:6],
            "--export-dir",
            str(run["tmp"] / "data"),
        ): "use another --export-dir or --overwrite",
    }
    for n, (args, message) in enumerate(cases.items()):
        res = tapeflow(*args, cwd=tmp_path, forked=n > 0)  # the first through `python -m tapeflow` itself
        assert res.returncode != 0, args
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, res.stderr)
