"""Benjamini–Hochberg q-values and stationary-bootstrap p-values (``backtest.research.fdr``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from backtest.research.fdr import (
    benjamini_hochberg,
    bootstrap_p_value,
    default_block,
    discoveries,
    stationary_indices,
)


def test_bh_q_values_equal_a_hand_computation():
    # sorted: 0.005 (4th), 0.01 (1st), 0.03 (3rd), 0.04 (2nd), 0.5 (5th); p * m / rank:
    # 0.025, 0.025, 0.05, 0.05, 0.5; the running minimum from the largest rank down changes nothing
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005, 0.5])
    assert q == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5], abs=1e-15)
    assert discoveries(q, 0.05) == 4 and discoveries(q, 0.03) == 2
    # the step-up: p * m / rank = 0.06, 0.0315, 0.5; the first is lowered to the second's 0.0315, so
    # both are discoveries at 5 % (the BH rule: the largest i with p_(i) <= i/m * alpha is i = 2)
    q = benjamini_hochberg([0.02, 0.021, 0.5])
    assert q == pytest.approx([0.0315, 0.0315, 0.5], abs=1e-15)
    assert discoveries(q, 0.05) == 2
    # capped at 1; NaN is not a test (m = 2 here)
    assert benjamini_hochberg([0.9, np.nan, 0.8]).tolist()[::2] == pytest.approx([0.9, 0.9])
    assert np.isnan(benjamini_hochberg([0.9, np.nan, 0.8])[1])
    assert benjamini_hochberg([0.7, 0.9]).tolist() == pytest.approx([0.9, 0.9])
    with pytest.raises(ValueError):
        benjamini_hochberg([1.2])


def test_bh_agrees_with_scipy_on_many_random_sets():
    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 50, 500):
        p = np.concatenate([rng.uniform(size=m - m // 5), rng.uniform(0, 0.01, size=m // 5)])
        assert benjamini_hochberg(p) == pytest.approx(false_discovery_control(p, method="bh"), abs=1e-12)


def test_bootstrap_with_blocks_of_one_is_the_iid_bootstrap_enumerated_by_hand():
    values = np.array([1.0, 2.0, -0.7])
    centred = values - values.mean()
    # every one of the 3^3 equally likely iid resamples of the centred values
    exact = np.mean([np.mean(r) >= values.mean() for r in itertools.product(centred, repeat=3)])
    # centred 0.2333, 1.2333, -1.4667 against the mean 0.7667: three times 1.2333 (mean 1.2333) and the
    # three orders of 1.2333, 1.2333, 0.2333 (mean 0.9) reach it, nothing else does
    assert exact == pytest.approx(4 / 27)
    p = bootstrap_p_value(values, seed=1, resamples=20_000, block=1.0)
    assert abs(p - exact) < 0.006


def test_stationary_blocks_are_geometric_and_wrap_around():
    rng = np.random.default_rng(0)
    idx = stationary_indices(1000, 40, 5.0, rng)
    assert idx.shape == (40, 1000) and idx.min() >= 0 and idx.max() < 1000
    continues = idx[:, 1:] == (idx[:, :-1] + 1) % 1000
    runs = 40 * 1000 / (40 + np.count_nonzero(~continues))
    assert 4.7 < runs < 5.3  # mean block length 5 (a new block lands on the next index 1 time in 1000)
    assert np.any((idx[:, :-1] == 999) & (idx[:, 1:] == 0))  # a block runs past the end into the start
    assert default_block(1000) == pytest.approx(10.0)


def test_p_values_are_uniform_under_the_null_and_small_for_a_real_edge():
    rng = np.random.default_rng(11)
    null = [bootstrap_p_value(rng.normal(size=60), seed=k, resamples=199) for k in range(300)]
    share = np.mean(np.asarray(null) <= 0.1)
    assert 0.04 < share < 0.17  # 0.1 expected; 300 draws: sd 0.017
    edge = rng.normal(0.5, 1.0, size=200)
    assert bootstrap_p_value(edge, seed=0) < 0.01
    assert bootstrap_p_value(-edge, seed=0) > 0.99
    assert bootstrap_p_value([0.7], seed=0) == 1.0 and bootstrap_p_value([], seed=0) == 1.0
    assert bootstrap_p_value([0.0, 0.0, 0.0], seed=0) == 1.0
    assert bootstrap_p_value(edge, seed=4) == bootstrap_p_value(edge, seed=4)  # deterministic given the seed


def test_a_search_reports_every_variants_p_value_and_bh_q_value(tmp_path):
    """`tapeflow research search`: each variant's p-value of "net R per trade > 0" and the q-values of
    Benjamini-Hochberg across them, in research.json and the printed summary."""
    import json
    import os
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "tapeflow", "research", "search", "--from", "2024-01-01", "--to", "2024-01-03",
         "--symbols", "XRPUSDT", "--trials", "6", "--batch", "3", "--min-trades", "1", "--sampler", "grid",
         "--workers", "1", "--no-progress", "--storage", "memory", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"}, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "research.json").read_text())
    variants = report["variants"]
    assert [v["slot"] for v in variants] == list(range(report["trials"]))
    p = np.array([v["p_value"] for v in variants])
    q = np.array([v["q_value"] for v in variants])
    assert np.all((p > 0) & (p <= 1)) and q == pytest.approx(false_discovery_control(p, method="bh"), abs=1e-12)
    for v in variants:
        if v["trades"] < 2:
            assert v["p_value"] == 1.0
        elif v["mean_r"] < 0:
            assert v["p_value"] > 0.5  # a losing variant is no evidence of an edge
        assert v["mean_r"] is None or v["mean_r"] == pytest.approx(v["net_r"] / v["trades"])
    fdr = report["false_discovery"]
    survivors = int(np.sum(q <= 0.05))
    assert fdr["tested"] == len(variants) and fdr["survivors"] == survivors and fdr["alpha"] == 0.05
    best = next(v for v in variants if v["name"] == report["best"]["name"])
    assert fdr["best_q_value"] == best["q_value"]
    line = next(x for x in res.stdout.splitlines() if x.startswith("variants with net R per trade > 0"))
    assert line.endswith(f": {survivors} of {len(variants)}; winner's q-value {best['q_value']:.3f}")
