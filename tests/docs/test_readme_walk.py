"""A new user follows the README alone: `make run` is `tapeflow up`, and its runnable blocks reach a running
stack, a topic tail and a backtest report (on the bundled recording: offline, like CI). The same blocks stand
in Getting started ("Your first replay", "Your first backtest"), which test_runnable.py therefore skips."""

from __future__ import annotations

import json
import re
import subprocess

import psutil
import pytest

from tests.docs.runnable import README_BLOCKS, REPO, Session

pytestmark = pytest.mark.integration


def test_make_run_is_tapeflow_up_with_the_readme_source():
    """`make -n` prints what `make run SOURCE=...` would do, without doing it (bootstrap included)."""
    res = subprocess.run(
        ["make", "-n", "run", "SOURCE=replay:tests/data/binance_futures_ws"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert "bash deploy/bootstrap.sh" in res.stdout
    assert ".venv/bin/tapeflow up --source replay:tests/data/binance_futures_ws" in res.stdout
    readme = (REPO / "README.md").read_text()
    assert "make run SOURCE=replay:tests/data/binance_futures_ws" in readme and "make test" in readme
    assert len(readme.splitlines()) <= 150


@pytest.mark.timeout(600)
def test_the_readme_walk_reaches_a_stack_a_topic_tail_and_a_backtest_report():
    commands = [c for b in README_BLOCKS for c in b.commands]
    assert [c.split()[:3] for c in commands] == [
        ["tapeflow", "up", "--detach"],
        ["tapeflow", "status"],
        ["tapeflow", "topics", "list"],
        ["tapeflow", "topics", "tail"],
        ["tapeflow", "down"],
        ["tapeflow", "backtest", "--demo"],
        ["ls", "backtest-report"],
    ]
    session = Session()
    try:
        results = session.run_blocks(README_BLOCKS)
        assert [r.returncode for r in results] == [0] * len(commands), session.report()
        up, status, topics, tail, down, backtest, ls = results
        assert "stack healthy" in up.stdout + up.stderr, session.report()
        assert re.search(r"\bproducer\b", status.stdout) and "md.trades" in topics.stdout
        assert "-- 5 record(s)" in tail.stdout + tail.stderr and tail.stdout.count('"agg_id"') == 5, tail.stdout
        pids = [json.loads(f.read_text())["pid"] for f in (session.home / "run").glob("*.json")]
        assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        assert "backtest complete" in backtest.stdout + backtest.stderr
        assert {"report.html", "report.md", "report.json", "equity.png"} <= set(ls.stdout.split())
        assert "<html" in (session.work / "backtest-report" / "report.html").read_text()[:2000].lower()
    finally:
        session.close()
