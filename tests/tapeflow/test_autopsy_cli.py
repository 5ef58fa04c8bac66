"""`tapeflow autopsy` against a real migrated database: one trade's sections, its JSON, the strategy
report, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.review.stored import store
from tests.review.test_autopsy_db import MIN, _with_book
from tests.support.cli_fork import tapeflow_forked
from tests.support.execution import T0


def tapeflow(*args: str, cwd: Path, forked: bool = False) -> subprocess.CompletedProcess:
    """`tapeflow ARGS`; `forked`: the same entry point in a process forked from one that imported it
    (tests/support/cli_fork.py: a refused input costs ~0.05 CPU-s instead of ~0.9)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(cwd / "home"), PYTHONUNBUFFERED="1")
    if forked:
        return tapeflow_forked(*args, env=env, cwd=cwd, preload=("review.autopsy_db",))
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


def one_error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ")
    return line


def test_autopsy_of_a_trade_and_the_strategy_report(migrated_database, tmp_path):
    loser, winner = _with_book(T0, 97.5), _with_book(T0 + 60 * MIN, 104.5)
    store(migrated_database, loser, winner)
    pid = loser.closed()["position_id"]
    proc = tapeflow("autopsy", pid, "--database", migrated_database, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for section in ("costs", "peers", "counterfactuals", "narrative"):
        assert f"\n{section}" in text
    assert "x1 reproduces the actual trade" in text
    assert f"net {loser.closed()['pnl_r_net']:+.2f}R" in text
    assert sum(1 for line in text.splitlines() if line.strip().startswith(("tp x", "sl x", "size x"))) == 12

    doc = json.loads(tapeflow("autopsy", pid, "--database", migrated_database, "--json", cwd=tmp_path).stdout)
    assert doc["trade"]["position_id"] == pid and doc["counterfactuals"]["replay_matches_actual"] is True
    assert doc["narrative"] and len(doc["counterfactuals"]["scenarios"]) == 12

    report = tapeflow(
        "autopsy",
        "--strategy",
        "v53",
        "--from",
        "2026-09-21T00:00:00Z",
        "--to",
        "2026-09-22T00:00:00Z",
        "--database",
        migrated_database,
        "--json",
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr
    r = json.loads(report.stdout)
    assert r["total"]["trades"] == 2
    assert r["total"]["net_r"] == pytest.approx(loser.closed()["pnl_r_net"] + winner.closed()["pnl_r_net"])
    assert set(r["by"]["exit_reason"]) == {"sl", "tp"}
    shown = tapeflow(
        "autopsy",
        "--strategy",
        "v53",
        "--from",
        "2026-09-21",
        "--to",
        "2026-09-22",
        "--database",
        migrated_database,
        cwd=tmp_path,
    )
    assert "by exit reason" in shown.stdout and "by hour" in shown.stdout
    assert pid in shown.stdout.split("worst trades")[1]  # the loser is listed to dissect


def test_one_line_errors(migrated_database, tmp_path):
    # the first through `python -m tapeflow` itself, the others forked from a process that imported it
    assert "no closed trade" in one_error(tapeflow("autopsy", "nope", "--database", migrated_database, cwd=tmp_path), 1)
    assert "no database" in one_error(tapeflow("autopsy", "nope", cwd=tmp_path, forked=True), 1)
    assert "TRADE_ID" in one_error(tapeflow("autopsy", cwd=tmp_path, forked=True), 2)
    bad = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"
    failed = tapeflow("autopsy", "x", "--database", bad, cwd=tmp_path, forked=True)
    assert "cannot reach the database" in one_error(failed, 1)
