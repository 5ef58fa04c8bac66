"""Topic history survives the stack: a session replayed at max speed, `down`, `up`, and every trade is
in `md.trades` once; a backtest over the topics equals one over the database. `tapeflow` processes
as a user runs them, on the embedded Apache Kafka and PostgreSQL, with the services the history passes
through (`up --only sink,producer`: the producer, its fake exchange and the sink; the engine, executor,
labels, guardrail and web UI read none of it and took ~12 CPU-s per stack to start, run and stop). While it waits (the replay finished, the trades stored) it asks the stack's status in this
process and the database directly (`tests.support.stack_cli`: each `tapeflow` process costs ~1.5
CPU-s), and runs `db audit` once per symbol when they are there."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support import stack_cli
from tests.support.paths import RECORDING

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: the recording's day (July 2021), whole
FROM, TO = "2021-07-22", "2021-07-24"


NO_UI = {"TAPEFLOW_UI": "false"}
#: the services the recorded trades pass through on their way to md.trades and the trades table
HISTORY_PATH = ("--only", "sink,producer")


def cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return stack_cli.cli(home, *args, env_extra=NO_UI, timeout=timeout)


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
    """Until every symbol's trades are stored, then `db audit` finds them all, without gaps or duplicates."""
    for symbol in sorted({s for s, _ in want}):
        count = sum(1 for s, _ in want if s == symbol)
        stack_cli.wait_for(
            lambda: stack_cli.stored_trades(home, symbol) >= count,  # noqa: B023 - called before the next symbol
            timeout,
            f"the sink had not stored {count} {symbol} trades",
        )
        res = cli(home, "db", "audit", "--symbol", symbol, "--from", FROM, "--to", TO, "--json")
        report = json.loads(res.stdout) if res.stdout.strip() else {}
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
    res = cli(home, "up", "--detach", *HISTORY_PATH)
    assert res.returncode == 0, res.stdout + res.stderr
    stack_cli.wait_for(
        lambda: stack_cli.components(home, NO_UI, ("producer",))["producer"]["state"] == "finished",
        120,
        "the replay had not finished",
    )
    wait_stored(home, want)
    assert cli(home, "down").returncode == 0

    res = cli(home, "up", "--detach", *HISTORY_PATH)
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
