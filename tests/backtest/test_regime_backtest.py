"""The regime strategies (``stream_apps/strategies/regimes``) through `tapeflow backtest` on the synthetic
source, as a user runs it: the run completes and the report has their trades with fees and slippage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
REGIMES = sorted((REPO / "stream_apps" / "strategies" / "regimes").glob("*.yaml"))


@pytest.mark.timeout(600)
def test_regime_strategies_backtest_on_synthetic_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")}
    env.update(TAPEFLOW_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    strategies = [arg for path in REGIMES for arg in ("--strategy", str(path))]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tapeflow",
            "backtest",
            *strategies,
            "--source",
            "synthetic:7",
            "--symbols",
            "BTCUSDT,ETHUSDT",
            "--from",
            "2024-03-01T00:00",
            "--to",
            "2024-03-01T09:00",
            "--format",
            "json",
            "--no-progress",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("backtest complete: synthetic:7, BTCUSDT,ETHUSDT"), proc.stdout
    for path in REGIMES:  # every strategy has its line in the summary
        assert f"regime_{path.stem} 1.0.0: " in proc.stdout, proc.stdout
    result = orjson.loads((tmp_path / "out" / "result.json").read_bytes())
    assert result["signals"] > 0
    trades = result["trades"]
    assert len({t["strategy"] for t in trades}) >= 3, proc.stdout
    for t in trades:
        assert t["strategy"].startswith("regime_") and t["score"] in (75.0, 85.0)
        assert t["tier"] == ("heavy" if t["score"] == 85.0 else "standard")
        assert t["fees_r"] > 0  # judged with costs like any strategy
        assert t["pnl_r_net"] == pytest.approx(t["pnl_r_gross"] - t["fees_r"] - t["slippage_r"] - t["funding_r"])


def test_regime_signals_do_not_depend_on_how_the_stream_is_cut():
    """Minute slices (as the live worker's small batches) and hour slices give the same regime signals
    and trades: the rules read only the engine's frame, whatever the batching."""
    from backtest.runner import BacktestRunner
    from backtest.sources.synthetic import SyntheticSource
    from stream_apps.core.strategy import load_strategy

    start = 1_709_251_200_000  # 2024-03-01
    runs = []
    for slice_ms in (3_600_000, 60_000):
        source = SyntheticSource(["BTCUSDT"], start, start + 7 * 3_600_000, seed=7, trades_per_s=10, slice_ms=slice_ms)
        runner = BacktestRunner([load_strategy(p) for p in REGIMES])
        runs.append((runner, runner.run(source)))
    (a, result_a), (b, result_b) = runs
    assert len(a.signals) > 0
    assert a.signals == b.signals and result_a.trades == result_b.trades
