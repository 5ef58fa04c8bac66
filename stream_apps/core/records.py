"""Engine results as the plain dicts of the Avro schemas (schemas/avro/feature_evaluation.avsc,
signal.avsc; bars: bar.avsc via ``Bar.to_record``), so Faust agents can serialise them as they are
and the replay runner can compare them field by field.
"""

from __future__ import annotations

from typing import Any

from .exits import ExitPlan
from .scoring import Evaluation

_SIGNAL_FACTOR_INPUTS = (
    "cvd_fast",
    "cvd_mid",
    "cvd_fast_slope",
    "cvd_fast_accel",
    "large_net_qty_15m",
    "atr_percentile",
    "atr_price_ratio",
    "vwap_30m",
    "oi_change",
    "long_short_ratio",
    "top_trader_long_share",
    "coinbase_premium",
    "funding_rate",
    "liq_long_usd_5m",
    "liq_short_usd_5m",
    "obi",
    "spot_perp_divergence",
    "whale_ratio_15m",
)


def feature_record(evaluation: Evaluation) -> dict[str, Any]:
    """One ``features`` record (FeatureEvaluation): every evaluation, signal or not."""
    return {
        "evaluation_id": evaluation.evaluation_id,
        "strategy": evaluation.strategy,
        "strategy_version": evaluation.strategy_version,
        "config_hash": evaluation.config_hash,
        "exchange": evaluation.exchange,
        "symbol": evaluation.symbol,
        "eval_time": evaluation.time_ms,
        "inputs": dict(evaluation.inputs),
        "layer_scores": dict(evaluation.layer_scores),
        "score": evaluation.score,
        "direction": evaluation.direction,
        "gate": evaluation.gate,
        "block_reason": evaluation.block_reason,
    }


def signal_record(evaluation: Evaluation, plan: ExitPlan) -> dict[str, Any]:
    """One ``signals`` record (Signal) with the exit plan and provenance."""
    factors = dict(evaluation.layer_scores)
    factors.update({name: evaluation.inputs[name] for name in _SIGNAL_FACTOR_INPUTS if name in evaluation.inputs})
    factors["risk_multiplier"] = plan.risk_multiplier
    return {
        "signal_id": evaluation.signal_id,
        "strategy": evaluation.strategy,
        "strategy_version": evaluation.strategy_version,
        "config_hash": evaluation.config_hash,
        "exchange": evaluation.exchange,
        "symbol": evaluation.symbol,
        "eval_time": evaluation.time_ms,
        "direction": evaluation.direction,
        "tier": evaluation.tier,
        "score": evaluation.score,
        "factors": factors,
        "price": plan.entry,
        "atr": plan.atr,
        "risk_distance": plan.risk_distance,
        "sl_price": plan.sl,
        "tp1_price": plan.tp1,
        "tp2_price": plan.tp2,
        "sl_r": plan.sl_r,
        "tp1_r": plan.tp1_r,
        "tp2_r": plan.tp2_r,
        "is_flip": evaluation.is_flip,
    }
