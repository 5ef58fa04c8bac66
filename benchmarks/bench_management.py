"""Position management by ROE against today's exits, on the synthetic benchmark session.

What runs: ``tapeflow backtest --source synthetic:7`` over BTCUSDT and ETHUSDT for ``--days`` days with the
three shipped strategies, each in its own paper account, twice: the default executor config (TP1 half and
break-even, TP2: the baseline) and the same with ``management.enabled`` at ``--leverage``
(`execution.management`: add-ons at ROE 5/10 %, trailing at 10/20 %, partial at 12 %). Printed per run:
closed trades, net R (sum of pnl_r_net), win rate, exit reasons, per strategy, the run's wall time and
trades/s, and the difference in net R to the baseline. The target is "not worse than the baseline"
(the rule for enabling management in a shipped strategy).

Run: ``.venv/bin/python -m benchmarks.bench_management [--days 2] [--leverage 10]``
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from backtest.runner import BacktestRunner
from backtest.sources.synthetic import SyntheticSource
from execution.config import ExecutorConfig
from execution.management import Management
from stream_apps.core.strategy import default_strategy_dir, load_strategies

DAY = 86_400_000
START = 1_704_067_200_000  # 2024-01-01 UTC
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


def run(config: ExecutorConfig, days: float) -> tuple[float, list]:
    source = SyntheticSource(SYMBOLS, START, START + int(days * DAY), seed=7)
    began = time.perf_counter()
    result = BacktestRunner(load_strategies(default_strategy_dir()), config).run(source)
    wall = time.perf_counter() - began
    print(f"  {wall:.1f} s wall, {result.trades_processed / wall:,.0f} trades/s")
    return wall, result.trades


def summary(name: str, trades: list) -> float:
    net = sum(t.pnl_r_net for t in trades)
    wins = sum(1 for t in trades if t.pnl_r_net > 0)
    print(f"{name}: {len(trades)} trades, net {net:+.3f} R, win rate {wins}/{len(trades)}")
    for strategy in sorted({t.strategy for t in trades}):
        mine = [t.pnl_r_net for t in trades if t.strategy == strategy]
        print(f"  {strategy}: {len(mine)} trades, net {sum(mine):+.3f} R")
    print(f"  exits: {dict(Counter(t.exit_reason for t in trades))}")
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=2.0)
    parser.add_argument("--leverage", type=float, default=10.0)
    args = parser.parse_args()
    print("baseline: today's exits (management off)")
    _, base_trades = run(ExecutorConfig(), args.days)
    base = summary("baseline", base_trades)
    print(f"managed: leverage {args.leverage}")
    managed = Management(enabled=True, leverage=args.leverage)
    _, trades = run(ExecutorConfig(management=managed), args.days)
    net = summary("managed", trades)
    verdict = "not worse" if net >= base else "worse"
    print(f"net R managed - baseline: {net - base:+.3f} R ({verdict}; target: not worse than the baseline)")


if __name__ == "__main__":
    main()
