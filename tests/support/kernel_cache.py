"""Compile the engine's and the backtest runner's numba kernels once, before pytest-xdist starts its
workers (`tests/conftest.py`, the controller only).

Why: in a fresh checkout numba's on-disk cache is empty, and every process that calls a kernel first
compiles it: the pytest workers and the engine services the long tests start, all at the same time at
the start of a run (the longest tests go first), on a machine the suite already keeps busy. Measured
on 2 cores, from a cold cache, 390 tests of tests/stream_apps/core, tests/backtest/test_backtest_feed.py
and tests/backtest/research on 4 workers: 366 CPU-s and 199 s; the same tests with the cache filled,
245 CPU-s and 137 s. Filling it takes ~28 CPU-s (~2 s when it is already full). The warm-ups are the
product's own (`stream_apps.core.warmup.warm_up` with the detectors on, `backtest.runner.warm_up`),
which a test checks leave nothing for a session to compile."""

from __future__ import annotations


def compile_kernels() -> None:
    """Compile (or load) every kernel the warm-ups reach."""
    from backtest.runner import warm_up as warm_runner
    from stream_apps.core.strategy import default_strategy_dir, load_strategies
    from stream_apps.core.warmup import EVERY_DETECTOR, warm_up

    shipped = load_strategies(default_strategy_dir())
    warm_up([shipped[0].model_copy(update={"detectors": EVERY_DETECTOR})])
    warm_runner()
