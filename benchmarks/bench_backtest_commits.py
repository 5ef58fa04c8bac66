"""The research benchmark's backtest (``benchmarks.bench_backtest``'s re-run on cached data: the 30 h
synthetic session, 14.4 M trades, the shipped strategies, each tree's DEFAULT executor config) timed in
this checkout against another commit, e.g. the code before book fills and routed entries (target: >= 0.8x its speed with
today's defaults, routed entries and book fills, against its defaults, taker entries and tape fills).

The other commit is checked out as a git worktree (``--tree``, made with ``git worktree add`` if it
does not exist) and each side runs in a process of its own with ``PYTHONPATH`` set to its tree (the
child checks that ``backtest`` was imported from there). The sides alternate ``--rounds`` times, each
process timing ``--repeat`` runs, so both see the same load on a shared machine. Printed: each side's
runs, best wall and median CPU, and the ratio baseline/this (speed of this checkout relative to the
baseline; the lower of the two is compared to the target). Also checked: every run of a side gives the
same signals and closed positions (each tree is deterministic; the two trees differ by their defaults).

Run: ``.venv/bin/python -m benchmarks.bench_backtest_commits [--baseline e2513db] [--hours 30]
[--rounds 2] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess  # nosec B404 # runs this interpreter on this script in another tree
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.8
IDEAL = 0.9
HERE = Path(__file__).resolve().parents[1]
START = 1_704_067_200_000  # as benchmarks.bench_backtest
H = 3_600_000
RATES = {"BTCUSDT": 40.0, "ETHUSDT": 28.0, "SOLUSDT": 18.0, "XRPUSDT": 14.0}


def child(hours: float, repeat: int, tree: str) -> None:
    """In a process whose ``PYTHONPATH`` is ``tree``: the cached session, then ``repeat`` timed runs with
    the tree's default executor config; one JSON line per run."""
    import backtest

    if not Path(backtest.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"backtest imported from {backtest.__file__}, not from {tree}")
    from backtest.runner import BacktestRunner
    from backtest.sources.synthetic import SyntheticSource
    from stream_apps.core.strategy import default_strategy_dir, load_strategies
    from stream_apps.core.warmup import warm_up
    from tapeflow_runtime.batch import batch_gc

    strategies = load_strategies(default_strategy_dir())
    warm_up()
    try:  # the runner's own warm-up (compiled kernels), where the tree has one
        from backtest.runner import warm_up as warm_up_runner

        warm_up_runner()
    except ImportError:
        pass
    src = SyntheticSource(list(RATES), START, START + int(hours * H), seed=1, trades_per_s=RATES)
    with batch_gc():
        pieces = list(src.slices())

        class Cached:  # as benchmarks.bench_backtest.CachedSource
            def __getattr__(self, name: str):
                return getattr(src, name)

            def slices(self):
                for piece in pieces:
                    piece._columns.clear()
                    yield piece

        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            result = BacktestRunner(strategies).run(Cached())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            row = {"wall": wall, "cpu": cpu, "signals": result.signals, "trades": len(result.trades)}
            print(json.dumps(row), flush=True)


def side(tree: Path, hours: float, repeat: int) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, __file__, "--child", str(tree), "--hours", str(hours), "--repeat", str(repeat)]
    out = subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True).stdout  # nosec B603
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--baseline",
        default="e2513db",
        help="commit to compare with (default: the last before book fills and routed entries)",
    )
    parser.add_argument("--tree", default=None, help="its worktree (default <temp dir>/tapeflow-<commit>)")
    parser.add_argument("--hours", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternations baseline / this checkout")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per process")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.hours, args.repeat, args.child)
        return
    tree = Path(args.tree) if args.tree else Path(tempfile.gettempdir()) / f"tapeflow-{args.baseline}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], cwd=HERE, check=True)  # nosec B603 B607
    sides = {"baseline": tree, "this": HERE}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for r in range(max(args.rounds, 1)):
        for name, path in sides.items():
            got = side(path, args.hours, args.repeat)
            runs[name] += got
            print(
                f"round {r + 1} {name} ({path}): "
                + ", ".join(f"{x['wall']:.2f} s wall {x['cpu']:.2f} s CPU" for x in got)
            )
    best, cpu = {}, {}
    for name, rows in runs.items():
        if len({(x["signals"], x["trades"]) for x in rows}) != 1:
            raise SystemExit(f"{name}: runs gave other signals or trades")
        best[name], cpu[name] = min(x["wall"] for x in rows), statistics.median(x["cpu"] for x in rows)
        print(
            f"{name}: {rows[0]['signals']} signals, {rows[0]['trades']} closed positions; best {best[name]:.2f} s "
            f"wall, median {cpu[name]:.2f} s CPU over {len(rows)} runs"
        )
    wall_ratio, cpu_ratio = best["baseline"] / best["this"], cpu["baseline"] / cpu["this"]
    low = min(wall_ratio, cpu_ratio)
    print(
        f"this checkout / {args.baseline} speed: {wall_ratio:.3f} best wall, {cpu_ratio:.3f} median CPU; "
        f"target >= {TARGET}: {'met' if low >= TARGET else 'NOT met'} ({low / TARGET:.2f}x of it), ideal >= {IDEAL}: "
        f"{'met' if low >= IDEAL else 'not met'}"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
