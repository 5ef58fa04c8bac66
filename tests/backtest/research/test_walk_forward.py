"""Walk-forward and search: choices use the training window only (a future-only edge is never used),
strategy files round-trip with their hash, and the report carries trials, DSR and PBO."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from backtest.research.search import choose, evaluate, search, walk_forward, write_strategy
from backtest.research.simulate import Trades
from backtest.research.store import DAY_MS, FeatureStore, StoreSpec, build_store
from backtest.research.windows import Window, parse_walk_forward
from stream_apps.core.strategy import default_strategy_dir, load_strategy, parse_strategy

T0 = 1_704_067_200_000
HOUR = 3_600_000


def trades(rows) -> Trades:
    entry, exit_, pnl = (np.array(v) for v in zip(*rows)) if rows else ([], [], [])
    n = len(entry)
    return Trades(
        np.full(n, "BTCUSDT", dtype=object),
        np.asarray(entry, dtype=np.int64),
        np.asarray(exit_, dtype=np.int64),
        np.ones(n, dtype=np.int8),
        np.zeros(n, dtype=np.int8),
        np.asarray(pnl, dtype=float),
        np.ones(n),
    )


def test_a_future_only_edge_and_a_trade_closing_after_training_are_not_used():
    window = Window(0, T0, T0 + 10 * DAY_MS, T0 + 10 * DAY_MS, T0 + 12 * DAY_MS)
    steady = trades([(T0 + d * DAY_MS, T0 + d * DAY_MS + HOUR, 0.5) for d in range(9)])  # +4.5R in training
    future = trades(
        [(T0 + 10 * DAY_MS - HOUR, T0 + 10 * DAY_MS + HOUR, 50.0)]  # closes in the test period
        + [(T0 + 10 * DAY_MS + d * HOUR, T0 + 10 * DAY_MS + d * HOUR + 60_000, 20.0) for d in range(5)]
    )
    assert choose(window, [steady, future], "net_r", min_trades=1) == 0
    # the guard is what decides: counting trades by entry alone would pick the future edge
    leaky = Window(0, T0, T0 + 12 * DAY_MS, T0 + 12 * DAY_MS, T0 + 13 * DAY_MS)
    assert choose(leaky, [steady, future], "net_r", min_trades=1) == 1


@pytest.fixture(scope="module")
def base():
    data = load_strategy(default_strategy_dir() / "v53.yaml").model_dump(mode="json")
    data["warmup"] = "1h"
    data["symbols"] = []
    data["gates"] = {"on_missing_input": "pass"}  # generated XRP rarely passes v53's 0.4 % ATR gate
    return parse_strategy(data)


@pytest.fixture(scope="module")
def store(tmp_path_factory, base):
    spec = StoreSpec("synthetic:11", ("XRPUSDT",), T0, T0 + 2 * DAY_MS, base.windows.cvd_fast, base.windows.cvd_mid)
    return build_store(tmp_path_factory.mktemp("store"), spec, base, workers=1, show_progress=False)


def _tampered_copy(store: FeatureStore, path, after_ms: int) -> FeatureStore:
    """The same store with every feature and price from ``after_ms`` on changed (a planted future)."""
    shutil.copytree(store.directory, path)
    for day in sorted((path / "XRPUSDT").glob("*.npz")):
        with np.load(day) as data:
            columns = {k: data[k].copy() for k in data.files}
        late = columns["time_ms"] >= after_ms
        for name in ("cvd_1800000", "cvd_14400000"):
            columns[name][late] = np.abs(columns[name][late]) * 5 + 1  # strong LONG direction everywhere
        columns["coinbase_premium"][late] = 0.01  # auxiliary points for every LONG
        seconds = np.arange(len(columns["bar_open"])) + int(day.stem != "20240101") * 86_400
        future = (T0 // 1000 + seconds) * 1000 >= after_ms
        for bar in ("bar_open", "bar_high", "bar_low", "bar_close"):
            columns[bar][future] *= np.linspace(1.0, 1.5, int(future.sum()))  # a rally only the future has
        np.savez(day, **columns)
    return FeatureStore(path)


def test_the_training_choice_does_not_change_when_only_the_future_does(store, base, tmp_path):
    spec = parse_walk_forward("train=1d,test=12h")
    train_end = T0 + DAY_MS
    tampered = _tampered_copy(store, tmp_path / "tampered", train_end)
    # seed 2: its six start-up candidates trade in training (the check below needs results to compare;
    # with seed 5 all six drew entry thresholds this short session never reaches)
    kwargs = dict(
        trials=6, sampler="tpe", objective="net_r", min_trades=1, batch=3, seed=2, workers=1, show_progress=False
    )
    honest, _, _ = walk_forward(store, base, spec, **kwargs)
    planted, _, _ = walk_forward(tampered, base, spec, **kwargs)
    assert len(honest) == len(planted) == 2
    first, first_planted = honest[0], planted[0]
    assert first.window.train_end == train_end
    # the search saw the same training results, trial for trial, and chose the same configuration
    assert [t.value for t in first.search.trials] == [t.value for t in first_planted.search.trials]
    assert first.search.best.candidate.config.config_hash == first_planted.search.best.candidate.config.config_hash
    assert all(t.trades.exit_ms.max(initial=0) < train_end for t in first.search.trials)
    assert sum(t.result.trades for t in first.search.trials) > 5  # the training results are not empty
    # while on the test period, which the planted future does change, the same candidates trade differently
    configs = [t.candidate.config for t in first.search.trials]
    w = first.window
    honest_test = evaluate(store, configs, w.test_start, w.test_end, workers=1)
    planted_test = evaluate(tampered, configs, w.test_start, w.test_end, workers=1)
    assert [t.pnl_r.tolist() for t in honest_test] != [t.pnl_r.tolist() for t in planted_test]


def test_search_report_and_strategy_files(store, base, tmp_path):
    report = search(
        store,
        base,
        trials=8,
        from_ms=T0,
        to_ms=T0 + 2 * DAY_MS,
        sampler="grid",
        objective="net_r",
        min_trades=1,
        batch=4,
        workers=1,
        show_progress=False,
    )
    summary = report.summary()
    assert summary["trials"] == 8 == len({t.candidate.config.config_hash for t in report.trials})
    assert summary["best"]["value"] == max(t.value for t in report.trials)
    assert report.pbo is not None and 0.0 <= report.pbo <= 1.0
    assert report.dsr is None or 0.0 <= report.dsr <= 1.0
    path, config_hash = write_strategy(report.best.candidate.config, tmp_path / "chosen")
    assert load_strategy(path).config_hash == config_hash == report.best.candidate.config.config_hash
