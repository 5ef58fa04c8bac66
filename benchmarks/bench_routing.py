"""Backtest speed with routed entries (``entry.kind: routed``, the executor's default) against market
entries (``taker``, the default before it; target: routed >= 0.8x taker).

What runs is ``benchmarks.bench_backtest``'s re-run on cached data (the synthetic session, 100 trades/s
over 4 symbols, 10-level books every 2 s, the three shipped strategies, one paper account per
strategy), timed end to end per entry kind, alternating ``--repeat`` times so both see the same machine
load. Routed entries cost the backtest in two places: every book counted by the router's spread mean
(the sparse feed shows it each book it holds: ``backtest.held.HeldRecords.observe_book``), and entries
worked over seconds (maker wait, slices) during which the market is busy, so its trades are fed. Printed
per kind: best and median wall, median CPU, signals and closed positions; the
ratio is of the best wall times and of the median CPU times (the lower is compared to the target).
Every repeat must give the same trades (deterministic), else the run stops. The frame (arguments, session,
timed runs, summary) is ``benchmarks.backtest_ab``'s, shared with ``bench_backtest_fills``.

Run: ``.venv/bin/python -m benchmarks.bench_routing [--hours 30] [--repeat 3] [--quick]``
"""

from __future__ import annotations

from typing import Literal

from benchmarks.backtest_ab import Arms, parse_args, session
from execution.config import EntryPolicy, ExecutorConfig

TARGET_RATIO = 0.8
KINDS: tuple[Literal["taker", "routed"], ...] = ("taker", "routed")


def main() -> None:
    hours, repeat = parse_args(__doc__ or "", "runs per entry kind")
    arms = Arms(KINDS)
    with session(hours) as data:
        for _ in range(repeat):
            for kind in KINDS:
                result, _runner, first = arms.run(kind, data, ExecutorConfig(entry=EntryPolicy(kind=kind)))
                if first:
                    print(f"  {kind}: {result.signals} signals, {len(result.trades)} closed positions")
        arms.report(data.trades, "taker", "routed", TARGET_RATIO, indent="")


if __name__ == "__main__":
    main()
