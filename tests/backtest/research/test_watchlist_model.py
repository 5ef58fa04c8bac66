"""The watchlist's expected-pnl / win-probability model: labels from the records by hand, a known
relationship recovered out of sample, a missing factor imputed (never a silent zero prediction), and
the file round trip. Pure, in process (numpy only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest.research.watchlist_model import auc, fit_model, label_records, logistic, ridge
from stream_apps.watchlist.model import PairModel, load_model

H = 600_000
T0 = 1_704_096_000_000 - 3_600_000


def row(t, sell="binance", buy="okx", spread=0.001, sell_rate=None, buy_rate=None, next_funding=None, **factors):
    stats = {
        "sweep_1h_mean": factors.get("mean", 0.0),
        "sweep_1h_std": factors.get("std", 0.001),
        "sweep_1h_min": -0.001,
        "sweep_1h_max": -0.001 + factors.get("range", 0.002),
        "sweep_1h_crossings_per_hour": factors.get("crossings", 4.0),
        "sweep_1h_drift_ratio": 0.3,
    }
    return {
        "coin": "BTC",
        "eval_time": t,
        "sell_venue": sell,
        "buy_venue": buy,
        "spread_sweep": spread,
        "sweep_slope_per_min": factors.get("slope", 0.0),
        "funding_diff_8h": factors.get("funding_8h", 0.0),
        "sell_funding_rate": sell_rate,
        "buy_funding_rate": buy_rate,
        "sell_next_funding_time": next_funding,
        "buy_next_funding_time": next_funding,
        "stats": stats,
        "missing": factors.get("missing", {}),
    }


def test_labels_are_the_round_trip_of_the_swept_spreads_net_of_four_fees_plus_funding_by_hand():
    t = T0
    settle = t + 300_000
    records = [
        row(t, spread=0.0030, sell_rate=0.0002, buy_rate=-0.0001, next_funding=settle),
        row(t + H, "okx", "binance", spread=-0.0005),  # closing: buy back on binance, sell on okx
        row(t, "okx", "binance", spread=-0.0040),  # its way back at t + H is missing: no label
        row(t + H, spread=None, missing={"spread_sweep": "stale leg okx: 3.0 s old"}),
    ]
    rows, labels = label_records(records, H, lambda sell, buy: 0.0020)
    # 30 bp in, -5 bp out, 20 bp of fees, short binance receives 2 bp, long okx receives 1 bp
    assert rows == [records[0]] and labels.tolist() == pytest.approx([0.0030 - 0.0005 - 0.0020 + 0.0002 + 0.0001])
    late = [row(t, spread=0.0030, sell_rate=0.0002, buy_rate=-0.0001, next_funding=t + H + 1), records[1]]
    assert label_records(late, H, lambda s, b: 0.0020)[1].tolist() == pytest.approx([0.0005])  # settles after H


def generated(n_times=400, seed=7, missing_every=5):
    """Rows whose label is a known linear function of three factors plus noise."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for i in range(n_times):
        t = T0 + i * 15_000
        spread = float(rng.normal(0.001, 0.001))
        crossings = float(rng.uniform(0, 10))
        funding = float(rng.normal(0, 2e-4))
        y = -0.002 + 0.8 * spread + 0.0002 * crossings + 2.0 * funding + float(rng.normal(0, 0.0003))
        missing = {}
        if i % missing_every == 0:  # a funding interval not known yet
            missing = {"funding_diff_8h": "funding interval of okx not known yet"}
        r = row(t, spread=spread, crossings=crossings, funding_8h=None if missing else funding, missing=missing)
        rows.append(r)
        labels.append(y)
    return rows, np.array(labels)


def test_a_known_relationship_is_recovered_out_of_sample_with_a_missing_factor_imputed(tmp_path):
    rows, labels = generated()
    factors = ("spread", "crossings_1h", "funding_8h", "slope")
    model = fit_model(rows, labels, 15_000, 0.002, factors, alpha=1e-4, l2=1e-3)
    raw = [c / s for c, s in zip(model.linear[1:], model.scales)]  # back to the factors' own units
    assert raw[0] == pytest.approx(0.8, rel=0.05) and raw[1] == pytest.approx(0.0002, rel=0.1)
    assert raw[2] == pytest.approx(2.0, rel=0.15) and abs(raw[3]) < 1e-9  # slope is constant: no weight
    oos = model.fit["out_of_sample"]
    # the noise is 3 bp against a signal of ~10 bp: R² near 1 - 0.09/1.1, AUC well above chance
    assert oos["r2"] > 0.8 and oos["rank_ic"] > 0.85 and oos["auc"] > 0.9
    assert model.fit["test_rows"] == 120 and model.fit["embargoed_rows"] == 1  # t + 15 s reaches the split
    assert model.fit["missing_share"]["funding_8h"] == pytest.approx(0.2, abs=0.01)
    model.save(tmp_path / "m.json")
    loaded = load_model(tmp_path / "m.json")
    assert loaded == model
    # a record without funding: predicted with its training mean, and the prediction says so
    probe = row(
        T0,
        spread=0.002,
        crossings=5.0,
        funding_8h=None,
        missing={"funding_diff_8h": "funding interval of okx not known yet"},
    )
    p = loaded.predict(probe)
    mean_funding = model.means[2]
    expected = -0.002 + 0.8 * 0.002 + 0.0002 * 5.0 + 2.0 * mean_funding
    assert p.expected_pnl == pytest.approx(expected, abs=1e-4) and p.imputed == {
        "funding_8h": "funding interval of okx not known yet"
    }
    assert loaded.predict(probe, missing="skip").expected_pnl is None
    assert loaded.predict(probe, max_imputed=0).reason == (
        "missing factor(s) funding_8h: funding interval of okx not known yet"
    )


def test_the_fits_solve_their_objectives_and_refuse_too_little_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 3))
    y = 1.0 + x @ np.array([0.5, -1.0, 0.0]) + rng.normal(0, 0.1, 500)
    b0, b = ridge(x, y, 0.0)
    ols = np.linalg.lstsq(np.column_stack([np.ones(500), x]), y, rcond=None)[0]
    assert b0 == pytest.approx(ols[0]) and b == pytest.approx(ols[1:])
    won = (rng.random(500) < 1 / (1 + np.exp(-(0.3 + 2 * x[:, 0])))).astype(float)
    c0, c = logistic(x, won, 0.0)
    p = 1 / (1 + np.exp(-(c0 + x @ c)))
    assert np.abs(np.column_stack([np.ones(500), x]).T @ (p - won)).max() < 1e-8  # the score equations hold
    assert c[0] == pytest.approx(2.0, rel=0.25)
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.0, 0.0, 1.0, 1.0])) == 0.75
    rows, labels = generated(n_times=8)
    with pytest.raises(ValueError, match="too few to fit and test"):
        fit_model(rows, labels, 15_000, 0.002)
    assert math.isclose(
        PairModel(("spread",), (0.0,), (1.0,), (0.0, 0.0), (0.0, 0.0), H, 0.002).predict(row(T0)).win_prob, 0.5
    )
