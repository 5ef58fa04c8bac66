"""Planted data for the model-health tests: a small logistic confidence model trained on a known effect
(p = sigmoid(2.5 x obi), long and short alike) and labelled trades in a migrated database, stored as the
pipeline stores them (an evaluation in ``features``, its signal, the opened position and the trade's
outcome label at 12 h), whose outcomes either follow the same effect (a healthy model) or are the
same outcomes shuffled across the trades (a degraded model: the features no longer tell anything)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg

from backtest.research.model_data import SIGN_FEATURE, Dataset
from backtest.research.model_train import TrainOptions, model_document, save_model, train

HOUR = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
FEATURES = ["in_obi", "layer_flow"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def train_model(directory: Path, n: int = 4000, seed: int = 3) -> Path:
    """A logistic model file trained on the planted effect (purged K-fold, isotonic calibration)."""
    rng = np.random.default_rng(seed)
    obi, flow = rng.normal(size=n), rng.normal(size=n)
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    y = (rng.random(n) < _sigmoid(2.5 * obi)).astype(np.int8)
    t0 = T0 - 400 * HOUR + np.arange(n, dtype=np.int64) * 60_000
    data = Dataset(
        np.column_stack([obi, flow, sign]),
        y,
        t0,
        t0 + HOUR,
        sign,
        np.array(["BTCUSDT"] * n, dtype=object),
        [*FEATURES, SIGN_FEATURE],
        "y_binary_60m",
        HOUR,
    )
    options = TrainOptions(folds=3, embargo_ms=HOUR, learners=("logistic",), ablation=False, threads=1)
    trained = train(data, options, int(t0[0]), int(t0[-1]) + HOUR)
    return save_model(model_document(trained, {"name": "v53", "config_hash": "planted"}), directory)


@dataclass
class Planted:
    ids: list[str]
    obi: np.ndarray
    sign: np.ndarray
    y: np.ndarray  # 1 = pos at 12 h


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def plant_trades(
    conninfo: str, strategy: str, n: int = 100, *, shuffled: bool, seed: int = 5, config_rev: int = 0
) -> Planted:
    """``n`` labelled trades of ``strategy`` (one an hour from T0, paper), outcomes by the planted effect,
    or those outcomes shuffled across the trades."""
    rng = np.random.default_rng(seed)
    obi, flow = rng.normal(size=n), rng.normal(size=n)
    sign = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    y = (rng.random(n) < _sigmoid(2.5 * obi)).astype(int)
    if shuffled:
        y = rng.permutation(y)
    ids = []
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        for k in range(n):
            t = T0 + k * HOUR
            direction = "LONG" if sign[k] > 0 else "SHORT"
            evaluation = f"{strategy}:h:binance:BTCUSDT:{t}"
            signal, position = f"{evaluation}:0", f"{strategy}-p{k}"
            cur.execute(
                "INSERT INTO features (evaluation_id, strategy, strategy_version, config_hash, exchange, symbol,"
                " eval_time, inputs, layer_scores, score, direction, config_rev)"
                " VALUES (%s, %s, '1', 'h', 'binance', 'BTCUSDT', %s, %s, %s, 60, %s, %s)",
                (
                    evaluation,
                    strategy,
                    _ts(t),
                    json.dumps({"obi": obi[k]}),
                    json.dumps({"flow": flow[k]}),
                    direction,
                    config_rev,
                ),
            )
            cur.execute(
                "INSERT INTO signals (signal_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time,"
                " direction, tier, score, factors, price, atr, risk_distance, sl_price, tp1_price, tp2_price, sl_r,"
                " tp1_r, tp2_r, is_flip, config_rev) VALUES (%s, %s, '1', 'h', 'binance', 'BTCUSDT', %s, %s, 'entry',"
                " 60, '{}', 100, 1, 2, 98, 102, 104, -1, 1, 2, false, %s)",
                (signal, strategy, _ts(t), direction, config_rev),
            )
            cur.execute(
                "INSERT INTO positions (position_id, signal_id, strategy, strategy_version, config_hash, exchange,"
                " symbol, mode, event, direction, tier, entry_price, qty, r_usd, sl_price, tp1_price, tp2_price,"
                " fees_r, slippage_r, event_time, config_rev) VALUES (%s, %s, %s, '1', 'h', 'binance', 'BTCUSDT',"
                " 'paper', 'opened', %s, 'entry', 100, 1, 2, 98, 102, 104, 0.1, 0, %s, %s)",
                (position, signal, strategy, direction, _ts(t + 1000), config_rev),
            )
            label = "pos" if y[k] else "neg"
            roi = 0.01 if y[k] else -0.01
            cur.execute(
                "INSERT INTO outcome_labels (source, sample_kind, sample_id, horizon_h, strategy, config_hash,"
                " config_rev, exchange, symbol, direction, taken, position_id, t0, horizon_time, price_at_horizon,"
                " qty_open, realized_pnl, unrealized_pnl, gross_pnl, fees, funding, net_pnl, basis, net_roi,"
                " threshold, label, computed_at) VALUES ('paper', 'trade', %s, 12, %s, 'h', %s, 'binance',"
                " 'BTCUSDT', %s, true, %s, %s, %s, 100, 0, %s, 0, %s, 0, 0, %s, 100, %s, 0.005, %s, %s)",
                (position, strategy, config_rev, direction, position, _ts(t + 1000), _ts(t + 1000 + 12 * HOUR),
                 100 * roi, 100 * roi, 100 * roi, roi, label, _ts(t + 13 * HOUR)),
            )  # fmt: skip
            ids.append(position)
        conn.commit()
    return Planted(ids, obi, sign, y.astype(float))


def strategy_text(model: Path | None, sha256: str | None = None, name: str = "v53") -> str:
    """A strategy file's text as far as the model health reads it (its ``model`` section)."""
    text = f"name: {name}\n"
    if model is not None:
        text += f"model:\n  file: {model}\n" + (f"  sha256: {sha256}\n" if sha256 else "")
    return text
