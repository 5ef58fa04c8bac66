"""The config service against a real migrated database and a real broker: revisions are monotonic and
idempotent; `strategy promote` (canary, finish), `strategy rollback` publish config.rollouts and write
audit rows with who and why; bad steps are one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.strategy import default_strategy_dir, load_strategy
from tapeflow.rollout import audit_rows, read_states, register, revisions
from tests.support.cli_fork import tapeflow_forked
from tests.support.rollout import V53_TEXT, v53_variant


def test_revisions_are_monotonic_per_name_and_idempotent(migrated_database, tmp_path):
    v53 = load_strategy("v53")
    slower = load_strategy(v53_variant(tmp_path, "slower", "cooldown: 10m", "cooldown: 15m"))
    v51 = load_strategy("v51_baseline")
    with psycopg.connect(migrated_database) as conn:
        first = register(conn, v53, V53_TEXT, "ana", 1_000, "base")
        second = register(conn, slower, "slower text", "bo", 2_000)
        again = register(conn, v53, V53_TEXT, "cy", 3_000, "ignored")
        other = register(conn, v51, "v51 text", "ana", 4_000)
        conn.commit()
        assert (first.rev, first.new, second.rev, second.new) == (1, True, 2, True)
        assert (again.rev, again.new, again.created_by, again.note) == (1, False, "ana", "base")
        assert other.rev == 1  # numbered per name
        assert [(r.name, r.rev, r.config_hash) for r in revisions(conn)] == [
            ("v51_baseline", 1, v51.config_hash),
            ("v53", 1, v53.config_hash),
            ("v53", 2, slower.config_hash),
        ]
        assert [r.created_at_ms for r in revisions(conn, "v53")] == [1_000, 2_000]
        rows = audit_rows(conn, "v53")
    # re-registering identical content writes no row
    assert [(r["action"], r["actor"], r["to_rev"], r["time"]) for r in rows] == [
        ("register", "ana", 1, 1_000),
        ("register", "bo", 2, 2_000),
    ]


#: what `strategy promote` and `rollback` import before they refuse a step (the fork server imports it once)
ROLLOUT_MODULES = (
    "tapeflow.rollout",
    "stream_apps.core.strategy",
    "schemas.registry",
    "schemas.serde",
    "tapeflow_runtime.kafka_client",
    "backtest.research.model_health_job",
    "psycopg",
)


def _cli(tmp_path: Path, kafka: str, prefix: str, *args: str, forked: bool = False) -> subprocess.CompletedProcess:
    """`tapeflow strategy ARGS`; `forked`: the same entry point in a process forked from one that imported it
    (tests/support/cli_fork.py: a refused step costs ~0.05 CPU-s instead of ~0.3-0.5)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(
        TAPEFLOW_HOME=str(tmp_path / "home"),
        TAPEFLOW_BROKER=kafka,
        TAPEFLOW_TOPIC_PREFIX=prefix,
        TAPEFLOW_STRATEGIES=str(tmp_path / "v53.yaml"),
        TAPEFLOW_SYMBOLS="BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT",
        PYTHONUNBUFFERED="1",
    )
    if forked:
        return tapeflow_forked("strategy", *args, env=env, cwd=tmp_path, timeout=120, preload=ROLLOUT_MODULES)
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", "strategy", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )


def _error(proc: subprocess.CompletedProcess, code: int) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ")
    return line


@pytest.fixture
def files(tmp_path):
    (tmp_path / "v53.yaml").write_text(V53_TEXT, encoding="utf-8")  # the running file
    return {
        "slower": v53_variant(tmp_path, "slower", "cooldown: 10m", "cooldown: 15m"),
        "faster": v53_variant(tmp_path, "faster", "cooldown: 10m", "cooldown: 5m"),
        "windows": v53_variant(tmp_path, "windows", "cvd_fast: 30m", "cvd_fast: 20m"),
    }


def test_canary_finish_and_rollback_publish_states_and_audit_rows(
    migrated_database, kafka_bootstrap, topic_prefix, tmp_path, files
):
    def cli(*args: str, forked: bool = False) -> subprocess.CompletedProcess:
        return _cli(tmp_path, kafka_bootstrap, topic_prefix, *args, "--database", migrated_database, forked=forked)

    proc = cli("promote", str(files["slower"]), "--symbols", "ETHUSDT", "--reason", "try 15m", "--as", "ana")
    assert proc.returncode == 0, proc.stderr
    assert "rev 2 runs as a canary on ETHUSDT beside rev 1" in proc.stdout
    serde = AvroSerde(FileSchemaRegistry())
    state = read_states(kafka_bootstrap, topic_prefix, serde)["v53"]
    assert (state.seq, state.action, state.active.rev, state.canary.rev, state.canary.symbols) == (
        1, "canary", 1, 2, ("ETHUSDT",)
    )  # fmt: skip
    assert state.active.content == V53_TEXT and state.canary.content == files["slower"].read_text()
    assert state.active.config_hash == load_strategy("v53").config_hash

    # a second candidate while the canary runs is refused; so is a file that would need a restart
    assert "a canary (rev 2) is running" in _error(
        cli("promote", str(files["faster"]), "--canary", "25%", forked=True), 1
    )
    line = _error(cli("promote", str(files["windows"]), "--canary", "25%", forked=True), 2)
    assert "a restart is needed: windows.cvd_fast differ" in line

    assert cli("promote", "v53", "--finish", "--reason", "looks good", "--as", "bo").returncode == 0
    state = read_states(kafka_bootstrap, topic_prefix, serde)["v53"]
    assert (state.seq, state.action, state.active.rev, state.canary) == (2, "finish", 2, None)
    assert "no canary to finish" in _error(cli("promote", "v53", "--finish", forked=True), 1)

    proc = cli("promote", str(files["faster"]), "--canary", "25%", "--reason", "5m", "--as", "cy")
    assert proc.returncode == 0, proc.stderr
    assert cli("rollback", "v53", "--reason", "drawdown", "--as", "dee").returncode == 0
    assert cli("rollback", "v53", "--reason", "back to 10m", "--as", "dee").returncode == 0
    state = read_states(kafka_bootstrap, topic_prefix, serde)["v53"]
    assert (state.seq, state.action, state.active.rev, state.canary) == (5, "rollback", 1, None)

    # a canary by size: the candidate beside the active revision on every symbol, at 10 % of the size
    proc = cli("promote", str(files["faster"]), "--canary-size", "10%", "--reason", "5m small", "--as", "cy")
    assert proc.returncode == 0, proc.stderr
    assert "runs as a canary at 10% of the size beside rev 1 at 90%" in proc.stdout
    state = read_states(kafka_bootstrap, topic_prefix, serde)["v53"]
    everywhere = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")  # v53 names none: the settings' four
    assert (state.seq, state.action, state.canary.rev, state.canary.size_pct) == (6, "canary", 3, 10.0)
    assert state.canary.symbols == everywhere

    with psycopg.connect(migrated_database) as conn:
        rows = audit_rows(conn, "v53")
    assert (rows[-1]["action"], rows[-1]["scope"]) == ("canary", "size=10%;symbols=" + ",".join(everywhere))
    rows = rows[:-1]
    got = [(r["actor"], r["action"], r["from_rev"], r["to_rev"], r["scope"], r["reason"], r["seq"]) for r in rows]
    assert got == [
        ("ana", "register", None, 1, "", "running file", None),
        ("ana", "register", None, 2, "", "try 15m", None),
        ("ana", "canary", 1, 2, "symbols=ETHUSDT", "try 15m", 1),
        ("bo", "finish", 1, 2, "", "looks good", 2),
        ("cy", "register", None, 3, "", "5m", None),
        ("cy", "canary", 2, 3, got[5][4], "5m", 3),
        ("dee", "rollback", 3, 2, "", "drawdown", 4),
        ("dee", "rollback", 2, 1, "", "back to 10m", 5),
    ]
    # 25 % of four symbols is one
    assert got[5][4].startswith("symbols=") and len(got[5][4].split(",")) == 1
    listing = cli("revisions", "v53")
    assert [line.split()[:3] for line in listing.stdout.splitlines()] == [
        ["v53", "rev", "1"],
        ["v53", "rev", "2"],
        ["v53", "rev", "3"],
    ]


def test_one_line_errors(migrated_database, kafka_bootstrap, topic_prefix, tmp_path, files):
    def cli(*args: str, forked: bool = True) -> subprocess.CompletedProcess:
        return _cli(tmp_path, kafka_bootstrap, topic_prefix, *args, "--database", migrated_database, forked=forked)

    shipped = default_strategy_dir() / "v51_baseline.yaml"
    # the first through `python -m tapeflow` itself, the others forked from a process that imported it
    assert "v51_baseline is not a running strategy (running: v53)" in _error(
        cli("promote", str(shipped), forked=False), 2
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text(V53_TEXT.replace("cooldown: 10m", "cooldown: soon"), encoding="utf-8")
    assert "broken.yaml" in _error(cli("promote", str(broken)), 2)
    assert "no such file" in _error(cli("promote", str(tmp_path / "missing.yaml")), 2)
    assert "give one" in _error(cli("promote", str(files["slower"]), "--canary", "10%", "--symbols", "BTCUSDT"), 2)
    assert "DOTUSDT not among" in _error(cli("promote", str(files["slower"]), "--symbols", "DOTUSDT"), 2)
    assert "a percentage" in _error(cli("promote", str(files["slower"]), "--canary", "200%"), 2)
    assert "--canary-size '100%': a percentage in (0, 100)" in _error(
        cli("promote", str(files["slower"]), "--canary-size", "100%"), 2
    )
    assert "needs --reason" in _error(cli("rollback", "v53"), 2)
    assert "nothing to roll back" in _error(cli("rollback", "v53", "--reason", "x"), 1)
    assert "no canary to finish" in _error(cli("promote", "v53", "--finish"), 1)
    assert "already the active revision" in _error(cli("promote", str(tmp_path / "v53.yaml")), 1)
