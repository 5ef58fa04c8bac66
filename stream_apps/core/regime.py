"""Regime strategies: a named market regime as rules over the evaluation's features.

A strategy with a ``regime`` section (``strategy.Regime``) is not scored by the layers. On every row:

1. direction: fixed (LONG/SHORT), or the sign of a feature (> 0 LONG, < 0 SHORT; 0 is no direction);
2. every condition ``feature op value`` must hold (``aligned``: the feature times the direction's sign,
   +1 LONG / -1 SHORT, so "in the signal's direction" reads the same for both sides);
3. then the score is ``thresholds.entry`` (standard tier), or ``thresholds.heavy`` (heavy tier) when
   every ``heavy`` condition holds too; otherwise the score is 0 and no signal.

A missing input (NaN: the source has no value yet, the detector is warming up, no wall on that side)
never counts as true: the row does not fire, its block reason is ``missing_input`` and its notes name
the feature (``missing:<feature>``). A condition that is false gives ``rules_not_met`` and a note with
the value. Block reasons in this order: missing direction input, no direction, missing condition input,
a false condition. Everything after scoring (warm-up, missing ATR, cooldown, flips at
``thresholds.flip``, the exit plan, the executor and its costs) is the machinery of every strategy.

One implementation: ``evaluate`` works on a ``FeatureFrame`` with numpy array operations;
``scoring.score_frames`` calls it for the backtest's and the live engine's frames alike, and the
one-row ``scoring.score`` is ``score_frames`` on a one-row frame, so stream and backtest agree by
construction. Derived features (``strategy.REGIME_DERIVED``) are computed here from the frame.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from .frame import FeatureFrame
from .strategy import Condition, StrategyConfig

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
HOLDS, FALSE, MISSING = 1, 0, -1


@dataclass(slots=True)
class RegimeFrame:
    """A regime's verdict on every row: ``sign`` of the direction (0: none), ``fires`` / ``heavy``
    (bool), ``missing`` (an input of the direction or of a condition is missing), and per condition
    its status (``HOLDS``/``FALSE``/``MISSING``) and the value it compared (aligned when asked)."""

    sign: np.ndarray  # int8
    direction_missing: np.ndarray  # bool
    fires: np.ndarray  # bool
    heavy: np.ndarray  # bool
    missing: np.ndarray  # bool
    status: np.ndarray  # int8 [conditions, rows]
    values: np.ndarray  # float64 [conditions, rows]
    heavy_status: np.ndarray  # int8 [heavy conditions, rows]
    heavy_values: np.ndarray


def feature_column(frame: FeatureFrame, cfg: StrategyConfig, name: str) -> np.ndarray:
    """The column a regime reads for ``name`` (NaN = missing)."""
    w = cfg.windows
    if name == "cvd_fast":
        return frame.cvd[w.cvd_fast]
    if name == "cvd_mid":
        return frame.cvd[w.cvd_mid]
    if name == "cvd_fast_slope":
        return frame.cvd_slope[w.cvd_fast]
    if name == "cvd_fast_accel":
        return frame.cvd_accel[w.cvd_fast]
    if name == "large_net_qty_15m":
        return frame.large_net_qty_15m
    if name == "atr_price_ratio":
        return frame.atr_price_ratio
    if name == "price_vwap_dev":  # last price / VWAP 30m - 1: where price stands against the half hour's trading
        price, vwap = frame.values["last_price"], frame.values["vwap_30m"]
        out = np.full(len(frame), np.nan)
        ok = ~np.isnan(price) & ~np.isnan(vwap) & (vwap != 0)
        np.divide(price, vwap, out=out, where=ok)
        return out - 1.0
    v = frame.values
    if name == "liq_net_usd_5m":  # shorts liquidated minus longs liquidated (USD, 5 min): > 0 squeezes up
        return v["liq_short_usd_5m"] - v["liq_long_usd_5m"]
    if name == "liq_net_usd":  # the same over the liquidation detector's window
        return v["liq_short_usd"] - v["liq_long_usd"]
    if name == "liq_cascade_net":  # +1 shorts cascading (price forced up), -1 longs, 0 none or both
        return v["liq_cascade_short"] - v["liq_cascade_long"]
    return v[name]


def _status(
    frame: FeatureFrame, cfg: StrategyConfig, conditions: list[Condition], sign: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    n = len(frame)
    status = np.empty((len(conditions), n), dtype=np.int8)
    values = np.empty((len(conditions), n))
    for j, c in enumerate(conditions):
        x = feature_column(frame, cfg, c.feature)
        if c.aligned:
            x = x * sign
        with np.errstate(invalid="ignore"):
            holds = _OPS[c.op](x, c.value)
        status[j] = np.where(np.isnan(x), MISSING, np.where(holds, HOLDS, FALSE))
        values[j] = x
    return status, values


def evaluate(frame: FeatureFrame, cfg: StrategyConfig) -> RegimeFrame:
    """The regime of ``cfg`` on every row of ``frame`` (pure; ``cfg.regime`` must be set)."""
    regime = cfg.regime
    assert regime is not None
    n = len(frame)
    if regime.sign_of is not None:
        column = feature_column(frame, cfg, regime.sign_of)
        direction_missing = np.isnan(column)
        sign = np.where(direction_missing, 0, np.sign(column)).astype(np.int8)
        if regime.invert:
            sign = -sign
    else:
        direction_missing = np.zeros(n, dtype=bool)
        sign = np.full(n, 1 if regime.direction == "LONG" else -1, dtype=np.int8)
    status, values = _status(frame, cfg, regime.conditions, sign.astype(np.float64))
    heavy_status, heavy_values = _status(frame, cfg, regime.heavy, sign.astype(np.float64))
    missing = direction_missing | (status == MISSING).any(axis=0)
    fires = (sign != 0) & (status == HOLDS).all(axis=0)
    heavy = fires & (heavy_status == HOLDS).all(axis=0) if regime.heavy else np.zeros(n, dtype=bool)
    return RegimeFrame(sign, direction_missing, fires, heavy, missing, status, values, heavy_status, heavy_values)


def regime_notes(cfg: StrategyConfig, r: RegimeFrame, i: int) -> tuple[str, ...]:
    """Why row ``i`` fired as it did (or did not): missing inputs and conditions not met."""
    regime = cfg.regime
    assert regime is not None
    notes: list[str] = []
    if regime.sign_of is not None:
        if r.direction_missing[i]:
            notes.append(f"missing:{regime.sign_of}")
        elif r.sign[i] == 0:
            notes.append(f"regime:{regime.name}: {regime.sign_of} is 0, no direction")

    def explain(conditions: list[Condition], status: np.ndarray, values: np.ndarray, prefix: str) -> None:
        for j, c in enumerate(conditions):
            if status[j, i] == MISSING:
                notes.append(f"missing:{c.feature}")
            elif status[j, i] == FALSE:
                aligned = " aligned" if c.aligned else ""
                notes.append(
                    f"regime:{regime.name}: {prefix}{c.feature}{aligned} = {float(values[j, i]):.6g}, "
                    f"not {c.op} {c.value:g}"
                )

    explain(regime.conditions, r.status, r.values, "")
    if r.fires[i] and regime.heavy:
        explain(regime.heavy, r.heavy_status, r.heavy_values, "heavy: ")
    return tuple(dict.fromkeys(notes))
