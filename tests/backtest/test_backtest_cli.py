"""`tapeflow backtest` as a user runs it: one-line errors, Ctrl-C writes a partial report, the recording
source end to end. Each case is a real `python -m tapeflow` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.support.cli_fork import tapeflow_forked

REPO = Path(__file__).resolve().parents[2]
RECORDING = REPO / "tests" / "data" / "binance_futures_ws"


def tapeflow(
    *args: str, home: Path, timeout: float = 120, forked: bool = False, **settings: str
) -> subprocess.CompletedProcess:
    """`tapeflow backtest ARGS`; `forked`: the same entry point in a process forked from one that imported it
    (tests/support/cli_fork.py: ~0.03 CPU-s instead of ~1 for a refused input; each test here that checks
    an error keeps one real `python -m tapeflow` run)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(home), PYTHONUNBUFFERED="1", **settings)
    if forked:
        return tapeflow_forked("backtest", *args, env=env, cwd=home, timeout=timeout, preload=("backtest.runner",))
    return subprocess.run(
        [sys.executable, "-m", "tapeflow", "backtest", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=timeout,
        check=False,
    )


def one_error(proc: subprocess.CompletedProcess) -> str:
    """The single `error:` line of a failed run (and no traceback)."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr
    return errors[0]


def test_bad_strategy_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nversion: '1'\nwindows: {cvd_fast: 45m, cvd_mid: 30m}\n")
    proc = tapeflow(
        "--strategy", str(bad), "--source", "synthetic", "--from", "2024-01-01", "--to", "2024-01-02", home=tmp_path
    )
    line = one_error(proc)
    assert proc.returncode == 2
    assert line.startswith(f"error: bad strategy file: {bad}: ")
    assert "cvd_fast must be shorter than cvd_mid" in line and "weights: Field required" in line
    missing = tapeflow(
        "--strategy",
        str(tmp_path / "nope.yaml"),
        "--source",
        "synthetic",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
        home=tmp_path,
        forked=True,
    )
    assert "cannot read" in one_error(missing)


def test_unknown_symbol(tmp_path):
    proc = tapeflow(
        "--symbols",
        "BTCUSDT,DOGE",
        "--source",
        "synthetic",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
        home=tmp_path,
        forked=True,
    )
    assert one_error(proc) == "error: unknown symbol 'DOGE': expected a Binance USD-M symbol such as BTCUSDT"
    proc = tapeflow("--symbols", "BTCUSDT", "--source", f"recording:{RECORDING}", home=tmp_path, forked=True)
    assert one_error(proc) == (
        f"error: unknown symbol BTCUSDT: the recording {RECORDING} has SUSHIUSDT, AKROUSDT, KEEPUSDT, CTKUSDT"
    )


def test_a_range_with_no_data(tmp_path):
    proc = tapeflow(
        "--source",
        f"recording:{RECORDING}",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
        "--out",
        str(tmp_path / "out"),
        home=tmp_path,
        forked=True,
    )
    assert proc.returncode == 1
    line = one_error(proc)
    assert line == (
        f"error: no market data for SUSHIUSDT,AKROUSDT,KEEPUSDT,CTKUSDT from 2024-01-01 00:00 to "
        f"2024-01-02 00:00 UTC in recording:{RECORDING}"
    )
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path):
    assert (
        one_error(tapeflow("--source", "synthetic", home=tmp_path, forked=True))
        == "error: --from and --to are required (or --demo for an offline example)"
    )
    assert (
        one_error(
            tapeflow("--source", "synthetic", "--from", "2024-01-02", "--to", "2024-01-01", home=tmp_path, forked=True)
        )
        == "error: --to must be after --from"
    )
    # --to is excluded: the same day twice is an empty range
    assert (
        one_error(
            tapeflow("--source", "synthetic", "--from", "2024-01-02", "--to", "2024-01-02", home=tmp_path, forked=True)
        )
        == "error: --to must be after --from"
    )
    assert one_error(
        tapeflow("--source", "parquet:x", "--from", "2024-01-01", "--to", "2024-01-02", home=tmp_path, forked=True)
    ).startswith("error: unknown source 'parquet:x'")
    assert one_error(
        tapeflow("--source", "synthetic", "--from", "yesterday", "--to", "2024-01-01", home=tmp_path, forked=True)
    ).startswith("error: --from 'yesterday': expected a date (2024-01-01)")


def test_recording_source_end_to_end(tmp_path):
    out = tmp_path / "report"
    proc = tapeflow("--source", f"recording:{RECORDING}", "--out", str(out), "--no-progress", home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"result: {out / 'result.json'}" in proc.stdout
    result = orjson.loads((out / "result.json").read_bytes())
    assert result["partial"] is False
    assert result["symbols"] == ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"]
    frames = [line for line in (RECORDING / "ws_frames.txt").read_text().splitlines()[1:] if '"e":"aggTrade"' in line]
    assert result["trades_processed"] == len(frames)  # every recorded trade reached the engine once
    assert "a websocket recording does not hold it" in result["params"]["source_notes"]["open_interest_hist"]
    coverage = {(c["layer"], c["symbol"], c["input"]): c for c in result["coverage"]}
    oi = coverage[("environment", "SUSHIUSDT", "oi_change")]
    assert oi["evaluations"] > 0 and oi["present"] == 0 and "does not hold it" in oi["note"]


def test_warm_start_approximation(tmp_path):
    """`--warm-start-approximation` takes the stack's warm-start settings: the first 30 minutes of the range
    are the window (its first minute bar holds the whole minute --from lies in), the 10 minutes before the
    live start come trade by trade; said on stderr and in the report's source notes. (What it computes:
    tests/backtest/sources/test_warm_start_approximation.py.)"""
    out = tmp_path / "report"
    warm = {"TAPEFLOW_WARM_START_HOURS": "0.5", "TAPEFLOW_WARM_START_DETAIL_MINUTES": "10"}
    proc = tapeflow(
        "--source",
        "synthetic:3",
        "--symbols",
        "BTCUSDT",
        "--from",
        "2024-01-01T00:00:30",
        "--to",
        "2024-01-01T00:40",
        "--warm-start-approximation",
        "--format",
        "json",
        "--out",
        str(out),
        "--no-progress",
        home=tmp_path,
        **warm,
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        "warm start approximation: live start 2024-01-01 00:30 UTC, minute bars before 2024-01-01 00:20, "
        "trade by trade after; no books or liquidations before the live start"
    ) in proc.stderr
    result = orjson.loads((out / "result.json").read_bytes())
    assert result["from_ms"] == 1_704_067_200_000 and result["source"] == "synthetic:3 (warm start approximation)"
    notes = result["params"]["source_notes"]
    assert "minute bars made from the trades before 2024-01-01 00:20 UTC" in notes["trades"]
    assert "none before the live start 2024-01-01 00:30 UTC" in notes["book"]
    # only the trades from 00:20 on reach the engine as trades: those of the same generated session
    from backtest.sources import open_source

    detail_from = 1_704_067_200_000 + 20 * 60_000
    times = np.concatenate(
        [
            b.time_ms
            for piece in open_source("synthetic:3", ["BTCUSDT"], 1_704_067_200_000, detail_from + 20 * 60_000).slices()
            for b in piece.trades.values()
        ]
    )
    assert result["trades_processed"] == int((times >= detail_from).sum()) and (times < detail_from).sum() > 1000
    assert "TAPEFLOW_WARM_START_HOURS is 0" in one_error(
        tapeflow(
            "--source",
            "synthetic",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-03",
            "--warm-start-approximation",
            home=tmp_path,
            TAPEFLOW_WARM_START_HOURS="0",
        )
    )
    assert (
        one_error(tapeflow("--source", f"recording:{RECORDING}", "--warm-start-approximation", home=tmp_path))
        == "error: --warm-start-approximation needs --from (the warm start's window begins there)"
    )


def test_ctrl_c_writes_a_partial_report(tmp_path):
    out = tmp_path / "report"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "backtest",
            "--source",
            "synthetic:3",
            "--symbols",
            "BTCUSDT",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-21",
            "--out",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        started = proc.stderr.readline()  # printed when the run begins
        assert started.startswith("backtest: synthetic:3, BTCUSDT"), started
        time.sleep(3.0)  # some hours of event time are done by then
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted: finishing the current slice and writing a partial report" in stderr
    assert "Traceback" not in stderr
    assert stdout.startswith("backtest PARTIAL (interrupted): synthetic:3, BTCUSDT")
    result = orjson.loads((out / "result.json").read_bytes())
    assert result["partial"] is True
    assert 0 < result["trades_processed"]
    assert result["to_ms"] - result["from_ms"] == 20 * 86_400_000  # the range asked for; partial says it stopped


@pytest.mark.timeout(600)
def test_demo_runs_offline_and_says_where_the_report_is(tmp_path):
    proc = tapeflow("--demo", "--no-progress", home=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("backtest complete: synthetic:7, BTCUSDT,ETHUSDT, 2024-03-01 00:00 to 2024-03-02 06:00")
    where = [line.split(": ", 1)[1] for line in lines if line.strip().startswith("result: ")]
    assert len(where) == 1 and Path(where[0]).is_file()
    assert Path(where[0]).parent.parent == tmp_path / "backtests"
    result = orjson.loads(Path(where[0]).read_bytes())
    assert result["signals"] > 0 and len(result["trades"]) > 0
