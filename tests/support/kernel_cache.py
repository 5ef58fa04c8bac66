"""Compile the engine's, the backtest runner's and the sink's numba kernels once, before pytest-xdist starts its
workers (`tests/conftest.py`, the controller only).

Why: in a fresh checkout numba's on-disk cache is empty, and every process that calls a kernel first
compiles it: the pytest workers and the engine services the long tests start, all at the same time at
the start of a run (the longest tests go first), on a machine the suite already keeps busy. Measured
on 2 cores, from a cold cache, 390 tests of tests/stream_apps/core, tests/backtest/test_backtest_feed.py
and tests/backtest/research on 4 workers: 366 CPU-s and 199 s; the same tests with the cache filled,
245 CPU-s and 137 s. Filling it takes ~28 CPU-s (~2 s when it is already full). The warm-ups are the
product's own (`stream_apps.core.warmup.warm_up` with the detectors on, `backtest.runner.warm_up`),
which a test checks leave nothing for a session to compile. The research kernels (`simulate`,
`barrier_labels`) have no product warm-up: a tiny call of each compiles them here too (found
compiled by the research tests' processes minutes into a run, several of them at once)."""

from __future__ import annotations


def compile_kernels() -> None:
    """Compile (or load) every kernel the warm-ups reach."""
    from backtest.runner import warm_up as warm_runner
    from sinks._avro_copy import warm_up as warm_avro_copy
    from stream_apps.core.strategy import default_strategy_dir, load_strategies
    from stream_apps.core.warmup import EVERY_DETECTOR, warm_up
    from tapeflow_runtime.record_batches import warm_up as warm_record_walk

    shipped = load_strategies(default_strategy_dir())
    warm_up([shipped[0].model_copy(update={"detectors": EVERY_DETECTOR})])
    warm_runner()
    _warm_research(shipped[0])
    warm_record_walk()  # the sink's raw fetch (tapeflow_runtime.record_batches)
    warm_avro_copy()  # the sink's decode (sinks._avro_copy)


def _warm_research(strategy) -> None:
    """One signal on a minute of one-second bars through `simulate`, one barrier label: the argument
    types the research paths pass (int64 times, float64 prices, a bool flip)."""
    import numpy as np

    from backtest.research.labels import PricePath, barrier_labels
    from backtest.research.simulate import Signals, simulate
    from backtest.research.store import SecondBars, second_bars

    t0 = 1_700_006_400_000
    times = t0 + np.arange(0, 60_000, 1_000, dtype=np.int64)
    prices = 100.0 + np.sin(np.arange(60, dtype=np.float64))
    c = second_bars(times, prices, t0 // 1000, 60)
    bars = SecondBars(
        t0 // 1000, c["bar_open"], c["bar_high"], c["bar_low"], c["bar_close"], c["bar_high_first"], c["bar_traded"]
    )
    signals = Signals(
        np.array([t0 + 500], dtype=np.int64),
        np.array([1], dtype=np.int8),
        np.array([1.0]),
        np.array([False]),
        np.ones(1),
        np.full(1, 70.0),
    )
    simulate(signals, strategy, bars, "BTCUSDT")
    barrier_labels(
        np.array([t0 + 1_000], dtype=np.int64),
        np.array([100.0]),
        np.array([1.0]),
        np.array([1], dtype=np.int64),
        PricePath.from_trades(times, prices, t0 + 60_000),
    )
