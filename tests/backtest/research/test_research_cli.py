"""`tapeflow research`: a small search end to end (strategy file with its hash, report, one-line errors)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from stream_apps.core.strategy import load_strategy
from tests.support.cli_fork import tapeflow_forked


def tapeflow(*args: str, cwd, forked: bool = False) -> subprocess.CompletedProcess:
    """`tapeflow ARGS`; `forked`: the same entry point in a process forked from one that imported it
    (tests/support/cli_fork.py: a refused input costs ~0.05 CPU-s instead of ~1)."""
    env = {**os.environ, "COLUMNS": "200"}
    if forked:
        preload = ("backtest.research.search",)
        return tapeflow_forked(*args, env=env, cwd=cwd, timeout=600, preload=preload)
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_search_writes_a_strategy_ready_for_the_engine(tmp_path):
    res = tapeflow(
        "research",
        "search",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
        "--symbols",
        "XRPUSDT",
        "--trials",
        "4",
        "--batch",
        "2",
        "--min-trades",
        "1",
        "--sampler",
        "grid",
        "--holdout",
        "6h",
        "--workers",
        "1",
        "--no-progress",
        "--out",
        str(tmp_path / "out"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    strategy_line = next(line for line in lines if line.startswith("strategy: "))
    path = strategy_line.split(" ")[1]
    config_hash = strategy_line.split("config_hash ")[1].rstrip(")")
    assert load_strategy(path).config_hash == config_hash
    assert any(line.startswith("hold-out ") for line in lines)
    assert f"run it live: tapeflow engine --strategy {path}" in lines
    report = json.loads((tmp_path / "out" / "research.json").read_text())
    assert report["trials"] == 4 and report["best"]["config_hash"] == config_hash
    assert {"deflated_sharpe_ratio", "pbo", "holdout"} <= set(report)
    # the chosen exits.timeout_min travels in the strategy's signals and the executor runs it: no
    # executor setting to copy any more
    assert "executor_config" not in report and not [line for line in lines if line.startswith("executor: ")]


def test_backtest_walk_forward_runs_the_research_walk_forward(tmp_path):
    res = tapeflow(
        "backtest",
        "--walk-forward",
        "train=1d,test=6h,embargo=1h",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-03",
        "--symbols",
        "XRPUSDT",
        "--source",
        "synthetic:3",
        "--trials",
        "3",
        "--no-progress",
        "--out",
        str(tmp_path / "wf"),
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "window 0: train 2024-01-01 00:00 .. 2024-01-02 00:00" in res.stdout
    assert "out of sample:" in res.stdout
    report = json.loads((tmp_path / "wf" / "walk-forward.json").read_text())
    assert report["spec"] == "train=1d,test=6h,step=6h,embargo=1h" and len(report["windows"]) >= 1


def test_bad_arguments_are_one_error_line(tmp_path):
    for n, (args, message) in enumerate(
        (
            (("walk-forward", "--windows", "train=30d", "--from", "2024-01-01", "--to", "2024-01-05"), "test=DURATION"),
            (("search", "--from", "2024-13-01", "--to", "2024-01-05"), "--from '2024-13-01'"),
            # one day: --to is excluded
            (("search", "--from", "2024-01-01", "--to", "2024-01-02"), "at least two days"),
            (("search", "--from", "2024-01-01", "--to", "2024-01-05", "--source", "db"), "synthetic[:SEED]"),
        )
    ):
        # the first through `python -m tapeflow` itself, the others forked from a process that imported it
        res = tapeflow("research", *args, "--no-progress", "--out", str(tmp_path / "o"), cwd=tmp_path, forked=n > 0)
        assert res.returncode != 0
        assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith("error: "), res.stderr
        assert message in res.stderr
