"""Engine results as the plain dicts of the Avro schemas (schemas/avro/feature_evaluation.avsc,
signal.avsc; bars: bar.avsc via ``Bar.to_record``), so Faust agents can serialise them as they are
and the replay runner can compare them field by field. ``FeatureTable`` keeps feature records as
columns (the engine's output) and makes the dicts only when a consumer asks for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .exits import ExitPlan
from .frame import FeatureFrame
from .scoring import BLOCK_REASONS, DIRECTIONS, GATES, Evaluation, ScoreFrame, strategy_input_columns
from .strategy import StrategyConfig

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


def feature_dict(
    strategy: str,
    version: str,
    config_hash: str,
    exchange: str,
    symbol: str,
    eval_time: int,
    inputs: dict[str, float],
    layer_scores: dict[str, float],
    score: float,
    direction: str | None,
    gate: str | None,
    block_reason: str | None,
    config_rev: int = 0,
    p_win: float | None = None,
) -> dict[str, Any]:
    """One ``features`` record (FeatureEvaluation): every evaluation, signal or not."""
    return {
        "evaluation_id": f"{strategy}:{config_hash}:{exchange}:{symbol}:{eval_time}",
        "strategy": strategy,
        "strategy_version": version,
        "config_hash": config_hash,
        "exchange": exchange,
        "symbol": symbol,
        "eval_time": eval_time,
        "inputs": inputs,
        "layer_scores": layer_scores,
        "score": score,
        "direction": direction,
        "gate": gate,
        "block_reason": block_reason,
        "config_rev": config_rev,
        "p_win": p_win,
    }


def feature_record(evaluation: Evaluation) -> dict[str, Any]:
    """The ``features`` record of one ``Evaluation``."""
    assert evaluation.evaluation_id == (
        f"{evaluation.strategy}:{evaluation.config_hash}:{evaluation.exchange}:{evaluation.symbol}:{evaluation.time_ms}"
    )
    return feature_dict(
        evaluation.strategy,
        evaluation.strategy_version,
        evaluation.config_hash,
        evaluation.exchange,
        evaluation.symbol,
        evaluation.time_ms,
        dict(evaluation.inputs),
        dict(evaluation.layer_scores),
        evaluation.score,
        evaluation.direction,
        evaluation.gate,
        evaluation.block_reason,
        evaluation.config_rev,
    )


@dataclass(slots=True)
class FeatureBlock:
    """The feature records of one strategy on the rows of one symbol's frame, as columns."""

    frame: FeatureFrame
    strategy: StrategyConfig
    scores: ScoreFrame
    block: np.ndarray  # final block reason codes (after warm-up, missing ATR, model, cooldown)
    p_win: np.ndarray | None = None  # the confidence model's p per row (NaN: not asked); None: no model

    def __len__(self) -> int:
        return len(self.frame)

    def records(self, rows: np.ndarray, frame_inputs: list[dict[str, float]] | None = None) -> list[dict[str, Any]]:
        """Records of ``rows`` (dicts: the edge where columns meet a consumer that wants dicts)."""
        cfg, frame, scores = self.strategy, self.frame, self.scores
        base = frame_inputs if frame_inputs is not None else frame.input_rows(rows)
        extra = [(name, column[rows].tolist()) for name, column in strategy_input_columns(frame, cfg)]
        layers = [(name, column[rows].tolist()) for name, column in scores.layers.items()]
        times = frame.time_ms[rows].tolist()
        score_values = scores.score[rows].tolist()
        signs, gates, blocks = scores.sign[rows].tolist(), scores.gate[rows].tolist(), self.block[rows].tolist()
        p_win = [None] * len(rows) if self.p_win is None else self.p_win[rows].tolist()
        out = []
        for k, eval_time in enumerate(times):
            inputs = dict(base[k])
            for name, column in extra:
                inputs[name] = column[k]
            out.append(
                feature_dict(
                    cfg.name,
                    cfg.version,
                    cfg.config_hash,
                    frame.exchange,
                    frame.symbol,
                    eval_time,
                    inputs,
                    {name: column[k] for name, column in layers},
                    score_values[k],
                    DIRECTIONS[signs[k]],
                    GATES[gates[k] - 1] if gates[k] else None,
                    BLOCK_REASONS[blocks[k]],
                    cfg.config_rev,
                    None if p_win[k] is None or p_win[k] != p_win[k] else p_win[k],  # NaN: not asked
                )
            )
        return out


class FeatureTable:
    """Feature records as columns: blocks per (symbol frame, strategy), in the engine's output order.

    The dict order (``records()``) is evaluation time, then symbol, then strategy: the order of the
    one-evaluation-at-a-time engine. Research code reads the blocks directly.
    """

    def __init__(self) -> None:
        self.blocks: list[FeatureBlock] = []
        self._ranks: list[tuple[tuple[str, str], int]] = []  # (symbol key, strategy rank) per block

    def add(self, block: FeatureBlock, key: tuple[str, str], strategy_rank: int) -> None:
        self.blocks.append(block)
        self._ranks.append((key, strategy_rank))

    def __len__(self) -> int:
        return sum(len(b) for b in self.blocks)

    def records(self) -> list[dict[str, Any]]:
        if not self.blocks:
            return []
        key_rank = {key: i for i, key in enumerate(sorted({key for key, _ in self._ranks}))}
        columns = []
        per_block: list[list[dict[str, Any]]] = []
        frame_inputs: dict[int, list[dict[str, float]]] = {}
        for b, (block, (key, rank)) in enumerate(zip(self.blocks, self._ranks)):
            n = len(block)
            columns.append(
                np.column_stack(
                    (block.frame.time_ms, np.full(n, key_rank[key]), np.full(n, rank), np.full(n, b), np.arange(n))
                )
            )
            if id(block.frame) not in frame_inputs:  # the snapshot's own inputs, once for every strategy
                frame_inputs[id(block.frame)] = block.frame.input_rows()
            per_block.append(block.records(np.arange(n), frame_inputs[id(block.frame)]))
        rows = np.concatenate(columns)
        order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))
        return [per_block[b][r] for b, r in rows[order][:, 3:].tolist()]


def signal_record(
    evaluation: Evaluation, plan: ExitPlan, p_win: float | None = None, size_mult: float | None = None
) -> dict[str, Any]:
    """One ``signals`` record (Signal) with the exit plan (levels, R multiples and the strategy's
    timeout), provenance, the confidence model's ``p_win`` (None without a model) and the size
    multiplier the executor sizes by (``decision``: the tier's, times the model's band; default the
    plan's risk multiplier)."""
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
        "timeout_ms": plan.timeout_ms,  # the strategy's exits.timeout_min: the executor applies it
        "config_rev": evaluation.config_rev,
        "p_win": p_win,
        "size_mult": plan.risk_multiplier if size_mult is None else size_mult,
    }
