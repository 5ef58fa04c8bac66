"""`tapeflow strategy simulate` as a user runs it (real `python -m tapeflow` processes) over inputs
stored as a stack stores them: a generated session written to a real migrated PostgreSQL by the sink's
own table writer and published to md.* on the real broker (tests/support/stored_sources.py, as the
`db`/`topics` source tests do). A candidate identical to the active strategy reports zero deltas from
either source; a stricter one reports the differences of two separate `tapeflow backtest` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.backtest.test_backtest_stored_sources import END, START, STRATEGY, SYMBOLS, all_records
from tests.support.cli_fork import tapeflow_forked
from tests.support.services import database_url
from tests.support.stored_sources import store_rows, store_session

pytestmark = pytest.mark.integration

DAYS = "0.125"  # 3 h: the stored session
DAY_MS = 86_400_000


def tapeflow(
    *args: str, cwd: Path, env: dict[str, str], timeout: float = 300, forked: bool = False
) -> subprocess.CompletedProcess:
    """`tapeflow ARGS`; `forked`: the same entry point in a process forked from one that imported it
    (tests/support/cli_fork.py: a refused input costs ~0.05 CPU-s instead of ~1)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    base.update(TAPEFLOW_HOME=str(cwd / "home"), TAPEFLOW_SYMBOLS=",".join(SYMBOLS), PYTHONUNBUFFERED="1", **env)
    if forked:
        return tapeflow_forked(*args, env=base, cwd=cwd, timeout=timeout, preload=("backtest.runner",))
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args],
        capture_output=True,
        text=True,
        env=base,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def strategy_file(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**STRATEGY.model_dump(mode="json"), **changes}, sort_keys=False))
    return path


def simulate(cwd: Path, env: dict[str, str], *args: str) -> dict:
    proc = tapeflow("strategy", "simulate", *args, "--json", "--no-progress", cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ")
    return line


def test_an_identical_candidate_reports_zero_deltas_from_the_database_and_the_topics(
    tmp_path, kafka_bootstrap, database, topic_prefix
):
    records = all_records()
    store_session(kafka_bootstrap, topic_prefix, database, records)
    newest = max(r["trade_time"] for r in records["md.trades"])
    active = strategy_file(tmp_path / "active.yaml")
    candidate = strategy_file(tmp_path / "candidate.yaml")  # the same content, another file
    sources = {
        "db": {"TAPEFLOW_DATABASE_URL": database_url(database)},
        "topics": {"TAPEFLOW_BROKER": kafka_bootstrap, "TAPEFLOW_TOPIC_PREFIX": topic_prefix},
    }
    seen = {}
    for source, env in sources.items():
        report = simulate(tmp_path, env, str(candidate), "--active", str(active), "--days", DAYS, "--source", source)
        # the window: the last 3 h of what the source holds, up to just after its newest trade
        assert (report["from_ms"], report["to_ms"]) == (newest + 1 - DAY_MS // 8, newest + 1), source
        assert report["active"]["signals"] >= 3 and report["active"]["trades"] >= 2, "a session that trades"
        assert all(value == 0 for value in report["delta"].values()), (source, report["delta"])
        assert {k: v for k, v in report["candidate"].items()} == report["active"]
        sensitivity = report["sensitivity"]
        assert sensitivity["evaluations_at_a_decision"] > 0
        assert all(0 <= f["either"] <= 1 for f in sensitivity["flip_share"].values())
        seen[source] = (report["active"], sensitivity)
    assert seen["db"] == seen["topics"]  # the same inputs, whichever store they come from


def test_a_stricter_candidate_reports_the_differences_of_two_backtests(tmp_path, database):
    store_rows(database, all_records())
    env = {"TAPEFLOW_DATABASE_URL": database_url(database)}
    active = strategy_file(tmp_path / "active.yaml")
    strict = strategy_file(tmp_path / "strict.yaml", name="strict", thresholds={"entry": 62, "heavy": 75, "flip": 75})
    window = ("--to", str(END))
    report = simulate(tmp_path, env, str(strict), "--active", str(active), "--days", DAYS, *window)
    assert (report["from_ms"], report["to_ms"]) == (START, END)
    runs = {}
    for path in (active, strict):
        out = tmp_path / path.stem
        proc = tapeflow(
            "backtest",
            "--source",
            "db",
            "--strategy",
            str(path),
            "--from",
            str(START),
            *window,
            "--format",
            "json",
            "--no-progress",
            "--out",
            str(out),
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        doc = json.loads((out / "report.json").read_text())
        [strategy] = doc["strategies"]
        opened = strategy["summary"]["trades"] + len(doc["run"]["params"]["open_positions_at_end"])
        runs[path.stem] = {
            "signals": doc["run"]["signals"],
            "trades": strategy["summary"]["trades"],
            "net_r": strategy["summary"]["net_r"],
            "skip_rate": 1 - opened / doc["run"]["signals"],
        }
    assert runs["strict"]["signals"] < runs["active"]["signals"]  # stricter: a difference to compare
    for name in ("signals", "trades"):
        assert report["delta"][name] == runs["strict"][name] - runs["active"][name], name
    for name in ("net_r", "skip_rate"):
        assert report["delta"][name] == pytest.approx(runs["strict"][name] - runs["active"][name], abs=1e-9), name
    for side, stem in (("active", "active"), ("candidate", "strict")):
        assert report[side]["signals"] == runs[stem]["signals"]
        assert report[side]["net_r"] == pytest.approx(runs[stem]["net_r"], abs=1e-9)


def test_text_report_and_one_line_errors(tmp_path, database):
    store_rows(database, all_records())
    env = {"TAPEFLOW_DATABASE_URL": database_url(database)}
    active = strategy_file(tmp_path / "active.yaml")
    strict = strategy_file(tmp_path / "strict.yaml", name="strict", thresholds={"entry": 62, "heavy": 75, "flip": 75})
    proc = tapeflow("strategy", "simulate", str(strict), "--active", str(active), "--days", DAYS, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for words in ("signals", "skip rate", "size multiplier > 1", "net R", "sensitivity of the candidate", "oi_change"):
        assert words in text, words
    # the candidate names no active strategy and the shipped ones are several
    line = one_error(tapeflow("strategy", "simulate", str(strict), "--days", "1", cwd=tmp_path, env=env, forked=True))
    assert "name the one it replaces with --active" in line
    line = one_error(
        tapeflow(
            "strategy",
            "simulate",
            str(strict),
            "--active",
            str(active),
            "--days",
            "1",
            "--source",
            "vision",
            cwd=tmp_path,
            env=env,
            forked=True,
        )
    )
    assert line == "error: --source 'vision': use db or topics (the inputs a stack stores)"
    line = one_error(
        tapeflow(
            "strategy",
            "simulate",
            str(strict),
            "--active",
            str(active),
            "--days",
            "1",
            "--symbols",
            "BTC",
            cwd=tmp_path,
            env=env,
            forked=True,
        )
    )
    assert "unknown symbol 'BTC'" in line
    # a database that does not answer: nothing to simulate, exit 1
    down = {"TAPEFLOW_DATABASE_URL": "postgresql://tapeflow:x@127.0.0.1:1/tapeflow"}
    proc = tapeflow(
        "strategy", "simulate", str(strict), "--active", str(active), "--days", "1", cwd=tmp_path, env=down, forked=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: db: ")


def test_the_active_config_is_the_revision_config_rollouts_made_active(
    tmp_path, kafka_bootstrap, database, topic_prefix
):
    """TAPEFLOW_STRATEGIES names the file the engine started with; a revision promoted since is on
    config.rollouts, and that is what the engine runs, so that is what the candidate is compared with."""
    from schemas.registry import FileSchemaRegistry
    from schemas.serde import AvroSerde
    from stream_apps.core.rollout import Revision, RolloutState
    from stream_apps.core.strategy import load_strategy
    from tapeflow.rollout import Publisher
    from tapeflow_runtime.kafka_client import ensure_topics

    store_rows(database, all_records())
    started = strategy_file(tmp_path / "started.yaml")
    promoted = strategy_file(tmp_path / "promoted.yaml", version="2", thresholds={"entry": 62, "heavy": 75, "flip": 75})
    cfg = load_strategy(promoted)
    ensure_topics(kafka_bootstrap, prefix=topic_prefix)
    Publisher(kafka_bootstrap, topic_prefix, AvroSerde(FileSchemaRegistry())).publish(
        RolloutState("stored", 1, Revision(2, cfg.config_hash, promoted.read_text()), None, "promote", "ops", "", 0)
    )
    env = {
        "TAPEFLOW_DATABASE_URL": database_url(database),
        "TAPEFLOW_BROKER": kafka_bootstrap,
        "TAPEFLOW_TOPIC_PREFIX": topic_prefix,
        "TAPEFLOW_STRATEGIES": str(started),
    }
    report = simulate(tmp_path, env, str(promoted), "--days", DAYS)
    assert report["notes"] == ["active config: TAPEFLOW_STRATEGIES, with stored revision 2 from config.rollouts"]
    assert (report["active"]["version"], report["active"]["config_hash"]) == ("2", cfg.config_hash)
    assert all(value == 0 for value in report["delta"].values()), report["delta"]
    # against the file the engine started with, the promoted revision differs
    report = simulate(tmp_path, env, str(promoted), "--days", DAYS, "--active", str(started))
    assert report["notes"] == ["active config: --active"] and report["delta"]["signals"] < 0
