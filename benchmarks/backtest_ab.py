"""The frame shared by the A/B backtest benchmarks (``bench_backtest_fills``: book against tape fills;
``bench_routing``: routed against taker entries): their arguments, the warmed-up session on cached
data, the alternated timed runs with their determinism check, and the per-arm summary with the ratio
to the target.

Why one frame: both time ``BacktestRunner.run`` over the same cached synthetic session
(``benchmarks.bench_backtest``) with two executor configs, alternating them ``--repeat`` times so both
see the same machine load; what differs is only the configs and what each prints of a run. The ratio
is of the best wall times (on a shared 2-core machine the median wall swings by 2x with the
neighbours' load) and of the median CPU times (the work itself); the lower of the two is compared to
the target.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from backtest.model import RunResult
from backtest.runner import BacktestRunner
from backtest.runner import warm_up as warm_up_runner
from benchmarks.bench_backtest import CachedSource, source
from execution.config import ExecutorConfig
from stream_apps.core.strategy import StrategyConfig, default_strategy_dir, load_strategies
from stream_apps.core.warmup import warm_up
from tapeflow_runtime.batch import batch_gc


def parse_args(doc: str, repeat_help: str) -> tuple[float, int]:
    """(session hours, repeats) from the command line: ``--hours``, ``--quick`` (8 h), ``--repeat``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--hours", type=float, default=30.0, help="session length (100 trades/s over 4 symbols)")
    parser.add_argument("--quick", action="store_true", help="8 hours (warm-up is 24 h: few signals)")
    parser.add_argument("--repeat", type=int, default=3, help=repeat_help)
    args = parser.parse_args()
    return (8.0 if args.quick else args.hours), max(args.repeat, 1)


def _load_average(when: str) -> None:
    print(f"load average at {when}: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


@dataclass(frozen=True, slots=True)
class Session:
    """The shipped strategies and the cached session they are run over (``trades`` in it)."""

    strategies: list[StrategyConfig]
    cached: CachedSource
    trades: int


@contextmanager
def session(hours: float) -> Iterator[Session]:
    """The warmed-up engine and runner and the session's data generated once, the timed runs inside
    ``batch_gc`` (as a replay runs); the load average is printed before and after."""
    strategies = load_strategies(default_strategy_dir())
    _load_average("start")
    warm_up()
    warm_up_runner()
    with batch_gc():
        began = time.perf_counter()
        cached = CachedSource(source(hours))
        n = sum(p.trade_count for p in cached.pieces)
        print(f"cached data: {n:,} trades over {hours:g} h generated once in {time.perf_counter() - began:.1f} s")
        yield Session(strategies, cached, n)
    _load_average("end")


@dataclass(slots=True)
class Arms:
    """Wall and CPU times of the runs per arm (a named executor config), and each arm's first trades,
    which every repeat must give again (the backtest is deterministic)."""

    names: tuple[str, ...]
    walls: dict[str, list[float]] = field(default_factory=dict)
    cpus: dict[str, list[float]] = field(default_factory=dict)
    seen: dict[str, tuple] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.walls = {name: [] for name in self.names}
        self.cpus = {name: [] for name in self.names}

    def run(self, name: str, data: Session, config: ExecutorConfig) -> tuple[RunResult, BacktestRunner, bool]:
        """One timed run of arm ``name``: its result, its runner and whether it was the arm's first."""
        runner = BacktestRunner(data.strategies, config)
        wall, cpu = time.perf_counter(), time.process_time()
        result = runner.run(data.cached)
        self.walls[name].append(time.perf_counter() - wall)
        self.cpus[name].append(time.process_time() - cpu)
        key = (result.signals, tuple(result.trades))
        if self.seen.setdefault(name, key) != key:
            raise SystemExit(f"{name}: a repeat gave other trades than the first run")
        return result, runner, len(self.walls[name]) == 1

    def alternate(
        self,
        data: Session,
        config: ExecutorConfig,
        baseline: str,
        candidate: str,
        repeat: int,
        as_baseline: Callable[[], AbstractContextManager[object]],
    ) -> Iterator[tuple[RunResult, RunResult, bool]]:
        """``repeat`` rounds of a run of ``baseline`` (inside ``as_baseline()``, which switches the feature
        off) then one of ``candidate``, alternated so a load change hits both arms; yields each round's
        (baseline result, candidate result, whether it was the first round)."""
        for _ in range(repeat):
            with as_baseline():
                before, _, _ = self.run(baseline, data, config)
            after, _, first = self.run(candidate, data, config)
            yield before, after, first

    def report(self, n: int, baseline: str, candidate: str, target: float, indent: str = "  ") -> float:
        """Prints each arm's times and ``candidate``'s speed against ``baseline`` (best wall and median
        CPU) with the verdict on ``target``; returns the lower of the two ratios."""
        best = {k: min(v) for k, v in self.walls.items()}
        med = {k: sorted(v)[len(v) // 2] for k, v in self.walls.items()}
        med_cpu = {k: sorted(v)[len(v) // 2] for k, v in self.cpus.items()}
        for name in self.names:
            print(
                f"  {name}: best {best[name]:.2f} s wall ({n / best[name]:,.0f} trades/s), median {med[name]:.2f} s "
                f"wall, median {med_cpu[name]:.2f} s CPU ({n / med_cpu[name]:,.0f} trades per CPU s) over "
                f"{len(self.walls[name])} runs (wall: {', '.join(f'{w:.2f}' for w in self.walls[name])} s)"
            )
        ratio, cpu_ratio = best[baseline] / best[candidate], med_cpu[baseline] / med_cpu[candidate]
        verdict = "met" if min(ratio, cpu_ratio) >= target else "NOT met"
        print(
            f"{indent}{candidate} / {baseline} speed: {ratio:.3f} best wall, {cpu_ratio:.3f} median CPU; "
            f"target >= {target}: {verdict}"
        )
        return min(ratio, cpu_ratio)
