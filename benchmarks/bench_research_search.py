"""A 100-configuration search over 30 days x 4 symbols of generated data (<= 10 min, <= 4 GiB).

What runs (the same code as ``tapeflow research search``): the backtest's ``synthetic:7`` source
(realistic rates: BTC 30, ETH 20, SOL 10, XRP 8 trades/s, bursty; about 240 M trades over 30 days,
every input the strategies score) goes through the
engine once per symbol to build the feature store (one process per symbol, two at a time); then 100
candidates from optuna's TPE (batches of 25) are scored and decided on the stored features with the
engine's own functions, turned into research trades, and ranked by net R; the report carries DSR and
PBO. Wall time per stage, the peak resident memory of the whole process tree (parent + workers,
sampled every 0.2 s) and CPU seconds per stage (what the stage costs whatever the neighbours do) are
printed.

Run: ``.venv/bin/python -m benchmarks.bench_research_search [--days 30] [--trials 100] [--workers 2]``
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from backtest.research.search import search
from backtest.research.store import DAY_MS, StoreSpec, build_store
from stream_apps.core.strategy import default_strategy_dir, load_strategy

TARGET_S = 600
TARGET_RSS_GIB = 4.0
START_MS = 1_704_067_200_000


class TreeMemory:
    """Peak RSS of this process and its children, sampled in a thread."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(every_s)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its finished children (the pools' workers
    are joined at the end of each stage). On a shared machine wall time measures the neighbours too;
    CPU seconds / workers is what the stage would take on an idle one."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--batch", type=int, default=25)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", type=Path, default=None, help="keep the store here (default: a temp dir)")
    args = parser.parse_args()

    base = load_strategy(default_strategy_dir() / "v53.yaml")
    symbols = tuple(args.symbols.split(","))
    spec = StoreSpec(
        "synthetic:7", symbols, START_MS, START_MS + args.days * DAY_MS, base.windows.cvd_fast, base.windows.cvd_mid
    )
    directory = args.store or Path(tempfile.mkdtemp(prefix="tapeflow-research-"))
    try:
        with TreeMemory() as memory:
            began, cpu0 = time.perf_counter(), tree_cpu_s()
            store = build_store(directory, spec, base, args.workers, show_progress=False)
            built, cpu_built = time.perf_counter() - began, tree_cpu_s() - cpu0
            report = search(
                store,
                base,
                trials=args.trials,
                from_ms=spec.from_ms,
                to_ms=spec.to_ms,
                sampler="tpe",
                objective="net_r",
                min_trades=20,
                batch=args.batch,
                workers=args.workers,
                show_progress=False,
            )
            total, cpu_total = time.perf_counter() - began, tree_cpu_s() - cpu0
        trades = store.manifest["trades"]
        best = report.best
        print(
            f"session: {args.days} days x {len(symbols)} symbols, {trades:,} trades (generated and run through "
            f"the engine once: {built:.0f} s = {trades / built:,.0f} trades/s with {args.workers} workers)"
        )
        print(f"search: {len(report.trials)} configurations (TPE, batches of {args.batch}) in {total - built:.0f} s")
        print(
            f"CPU: feature store {cpu_built:.0f} s ({trades / cpu_built:,.0f} trades per CPU-second), search "
            f"{cpu_total - cpu_built:.0f} s, total {cpu_total:.0f} s; / {args.workers} workers = "
            f"{cpu_total / args.workers:.0f} s = {cpu_total / args.workers / TARGET_S:.2f}x the budget on an idle "
            f"machine (this run got {cpu_total / total:.2f} of its {args.workers} cores)"
        )
        print(
            f"total {total:.0f} s = {total / TARGET_S:.2f}x the 10-minute budget; peak RSS (process tree) "
            f"{memory.peak / 2**30:.2f} GiB = {memory.peak / 2**30 / TARGET_RSS_GIB:.2f}x the 4 GiB budget; "
            f"load {psutil.getloadavg()[0]:.1f}"
        )
        print(
            f"best {best.candidate.config.name}: {best.result.trades} trades, net {best.result.net_r:+.1f}R; "
            f"DSR {report.dsr if report.dsr is None else round(report.dsr, 3)}, "
            f"PBO {report.pbo if report.pbo is None else round(report.pbo, 2)}"
        )
    finally:
        if args.store is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
