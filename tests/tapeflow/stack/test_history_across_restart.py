"""Topic history survives the stack: a session replayed at max speed, `down`, `up`, and every trade is
in `md.trades` once; a backtest over the topics equals one over the database. `tapeflow` processes
as a user runs them, on the embedded Apache Kafka and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.paths import RECORDING

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: the recording's day (July 2021), whole
FROM, TO = "2021-07-22", "2021-07-24"


def cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update({"TAPEFLOW_HOME": str(home), "TAPEFLOW_SOURCE": f"replay:{RECORDING}", "TAPEFLOW_REPLAY_SPEED": "max"})
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=home.parent,
    )


def components(home: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(cli(home, "status", "--json").stdout)["components"]}


def recorded_trades() -> set[tuple[str, int]]:
    out = set()
    for line in (RECORDING / "ws_frames.txt").read_text().splitlines()[1:]:
        _, _, frame = line.partition(": ")
        data = json.loads(frame).get("data", {}) if "@aggTrade" in frame else {}
        if data.get("e") == "aggTrade":
            out.add((data["s"], data["a"]))
    return out


def tail_trades(home: Path) -> list[tuple[str, int]]:
    tail = cli(home, "topics", "tail", "md.trades", "--from-beginning", "--timeout", "3", "--json")
    assert tail.returncode == 0, tail.stderr
    return [(v["symbol"], v["agg_id"]) for v in (json.loads(line)["value"] for line in tail.stdout.splitlines())]


def wait_stored(home: Path, want: set[tuple[str, int]], timeout: float = 60) -> None:
    """Until `db audit` finds every symbol's trades stored, without gaps or duplicates."""
    for symbol in sorted({s for s, _ in want}):
        count = sum(1 for s, _ in want if s == symbol)
        deadline = time.monotonic() + timeout
        report: dict = {}
        while time.monotonic() < deadline:
            res = cli(home, "db", "audit", "--symbol", symbol, "--from", FROM, "--to", TO, "--json")
            report = json.loads(res.stdout) if res.stdout.strip() else {}
            if report.get("trades", {}).get("rows") == count:
                break
            time.sleep(2)
        assert report.get("trades", {}).get("rows") == count, (symbol, count, report)
        assert report["ok"], report["problems"]


def backtest(home: Path, source: str, out: Path) -> dict:
    res = cli(
        home,
        "backtest",
        "--source",
        source,
        "--symbols",
        "SUSHIUSDT,AKROUSDT,KEEPUSDT,CTKUSDT",
        "--from",
        FROM,
        "--to",
        TO,
        "--out",
        str(out),
        "--format",
        "json",
        "--no-progress",
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((out / "report.json").read_text())


@pytest.fixture
def home():
    root = Path(tempfile.mkdtemp(prefix="tapeflow-history-"))
    yield root / "home"
    cli(root / "home", "down")
    shutil.rmtree(root, ignore_errors=True)


def test_topics_survive_down_up_and_backtests_agree(home):
    want = recorded_trades()
    res = cli(home, "up", "--detach")
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 120
    while components(home)["producer"]["state"] != "finished":
        assert time.monotonic() < deadline, "the replay did not finish"
        time.sleep(1)
    wait_stored(home, want)
    assert cli(home, "down").returncode == 0

    res = cli(home, "up", "--detach")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "already present" in res.stdout  # the topics step found them: nothing recreated
    trades = tail_trades(home)
    assert len(trades) == len(set(trades)), "a trade twice in md.trades"
    assert set(trades) == want

    from_topics = backtest(home, "topics", home.parent / "bt-topics")
    from_db = backtest(home, "db", home.parent / "bt-db")
    assert from_topics["run"]["trades_processed"] == from_db["run"]["trades_processed"] == len(want)
    for key in ("evaluations", "signals"):  # events differ: the database keeps book snapshots, not every one
        assert from_topics["run"][key] == from_db["run"][key], key
    assert from_topics["trades"] == from_db["trades"]
    assert [s["summary"] for s in from_topics["strategies"]] == [s["summary"] for s in from_db["strategies"]]
