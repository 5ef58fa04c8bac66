"""`tapeflow strategy list|new|check` as a user runs them (real `python -m tapeflow` processes): a new
strategy is its base under another name, the first backtest of it trades exactly as its base does,
and every mistake is one `error:` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import yaml

from stream_apps.core.strategy import default_strategy_dir, load_strategy
from tests.support.cli_fork import tapeflow_forked

SHIPPED = sorted(default_strategy_dir().glob("*.yaml"))
OWN = {"name", "version", "description"}  # what a new strategy changes of its base


def tapeflow(*args: str, cwd: Path, timeout: float = 120, forked: bool = False) -> subprocess.CompletedProcess:
    """`tapeflow ARGS`; `forked`: the same entry point in a process forked from one that imported it
    (tests/support/cli_fork.py: ~0.03 CPU-s instead of ~0.4)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(cwd / "home"), PYTHONUNBUFFERED="1")
    if forked:
        return tapeflow_forked(*args, env=env, cwd=cwd, timeout=timeout, preload=("stream_apps.core.strategy",))
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    [line] = [line for line in proc.stderr.splitlines() if line.strip()]
    assert line.startswith("error: ")
    return line


def test_a_strategy_is_a_file_or_a_shipped_strategys_name(tmp_path, monkeypatch):
    from stream_apps.core.strategy import StrategyConfigError, strategy_path

    monkeypatch.chdir(tmp_path)
    assert strategy_path("v53") == default_strategy_dir() / "v53.yaml"
    assert load_strategy("v53").name == "v53"
    (tmp_path / "v53").write_text("a file of that name wins")
    assert strategy_path("v53") == Path("v53")
    with pytest.raises(StrategyConfigError, match=r"v99: neither a strategy file nor a shipped strategy \(v51"):
        strategy_path("v99")
    assert strategy_path("dir/v99") == Path("dir/v99")  # a path is a path: its absence is the reader's error


def test_list_shows_every_shipped_strategy_with_the_hash_the_engine_stamps(tmp_path):
    proc = tapeflow("strategy", "list", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SHIPPED) >= 3
    for path, line in zip(SHIPPED, lines):
        cfg = load_strategy(path)
        assert line.split()[:3] == [cfg.name, cfg.version, cfg.config_hash[:12]]


@pytest.mark.parametrize("base", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_new_is_its_base_under_its_own_name(tmp_path, base):
    proc = tapeflow("strategy", "new", "mine", "--from", base.stem, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "mine.yaml"
    assert f"wrote {written.name}: mine 0.1.0" in proc.stdout
    new, old = load_strategy(written), load_strategy(base)
    assert (new.name, new.version) == ("mine", "0.1.0") and new.config_hash != old.config_hash
    assert {k: v for k, v in new.model_dump().items() if k not in OWN} == {
        k: v for k, v in old.model_dump().items() if k not in OWN
    }
    text = written.read_text()
    assert text.startswith("# mine: started with `tapeflow strategy new`") and "DESIGN" not in text
    assert f"--strategy {base.stem}\n" in text  # the header's backtest line names the base to compare with
    checked = tapeflow("strategy", "check", str(written), cwd=tmp_path)
    assert checked.returncode == 0 and new.config_hash in checked.stdout


def test_a_json_base_becomes_a_yaml_strategy(tmp_path):
    data = yaml.safe_load(SHIPPED[0].read_text())
    (tmp_path / "base.json").write_text(json.dumps(data))
    proc = tapeflow("strategy", "new", "from_json", "--from", "base.json", "--out", "sub/s.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    new = load_strategy(tmp_path / "sub" / "s.yaml")
    assert new.name == "from_json" and new.exits == load_strategy(SHIPPED[0]).exits


def test_mistakes_are_one_line_errors_and_nothing_is_overwritten(tmp_path):
    # the first through `python -m tapeflow` itself, the others forked from a process that imported it
    assert "is not a strategy name" in one_error(tapeflow("strategy", "new", "My-Edge", cwd=tmp_path))
    missing = one_error(tapeflow("strategy", "new", "x", "--from", "v99", cwd=tmp_path, forked=True))
    assert "not a shipped strategy (" in missing and "v53" in missing
    assert tapeflow("strategy", "new", "x", cwd=tmp_path, forked=True).returncode == 0
    before = (tmp_path / "x.yaml").read_text()
    (tmp_path / "x.yaml").write_text(before + "# my notes\n")
    assert "x.yaml exists (--force overwrites it)" in one_error(
        tapeflow("strategy", "new", "x", cwd=tmp_path, forked=True)
    )
    assert (tmp_path / "x.yaml").read_text().endswith("# my notes\n")
    assert tapeflow("strategy", "new", "x", "--force", cwd=tmp_path, forked=True).returncode == 0
    assert (tmp_path / "x.yaml").read_text() == before


def test_check_reports_each_file_and_fails_on_an_invalid_one(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHIPPED[0].read_text().replace("entry:", "entri:", 1))
    proc = tapeflow("strategy", "check", str(SHIPPED[0]), str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{SHIPPED[0]}: ok, " in proc.stdout and load_strategy(SHIPPED[0]).config_hash in proc.stdout
    assert proc.stderr.startswith(f"error: {bad}: ") and "entri" in proc.stderr


def test_a_new_strategy_backtests_exactly_as_its_base(tmp_path):
    """Beside its base in one backtest, the copy takes the same trades with the same net R: a user who
    changes one key of it sees that key's effect and nothing else."""
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "name": "quick_base",
                "version": "1",
                "windows": {"cvd_fast": "5m", "cvd_mid": "30m"},
                "warmup": "10m",
                "weights": {"direction": 55, "crowding": 25, "environment": 15, "auxiliary": 5},
                "thresholds": {"entry": 55, "heavy": 70, "flip": 70},
                "cooldown": "3m",
                "exits": {"sl_atr_mult": 2.0, "tp1_r": 0.75, "tp2_r": 1.5, "timeout_min": 240},
            }
        )
    )
    assert tapeflow("strategy", "new", "quick_copy", "--from", str(base), cwd=tmp_path).returncode == 0
    out = tmp_path / "report"
    proc = tapeflow(
        "backtest",
        "--strategy",
        "quick_copy.yaml",
        "--strategy",
        str(base),
        "--source",
        "synthetic:3",
        "--symbols",
        "BTCUSDT",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-01T06:00",
        "--out",
        str(out),
        "--no-progress",
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    trades = orjson.loads((out / "result.json").read_bytes())["trades"]

    def taken(name):
        return [
            (t["direction"], t["entry_time"], t["exit_time"], t["exit_reason"], t["pnl_r_net"])
            for t in trades
            if t["strategy"] == name
        ]

    assert taken("quick_base") and taken("quick_copy") == taken("quick_base")
