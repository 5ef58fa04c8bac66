"""The signal model of DESIGN §4: direction, layer scores, gates and tiers, as pure functions.

``score(features, config)`` reads an immutable ``Features`` snapshot and a validated strategy and
returns an immutable ``Evaluation`` with every raw input, every layer's points, the gate that vetoed
(if any) and why no signal would be emitted. Nothing here keeps state: warm-up, cooldown and flips
are decided afterwards by ``decide`` with the per-strategy ``CooldownBook``.

Points. Each layer computes DESIGN's raw points and is scaled to its configured weight
(``weight * raw / raw_max``), so v53 (weights equal to the raw maxima) scores the raw points exactly:
- direction (raw max 55): fast and mid CVD agree -> resonance 30 (otherwise no direction, no signal);
  P99 flow over 15 min: net large-trade quantity in the signal's direction 20, none/balanced 10,
  against 0; CVD acceleration (per 15-s tick) in the signal's direction +5.
- crowding (raw max 25), contrarian long/short account ratio: LONG 7/10/15 as it falls below
  1/0.7/0.5, SHORT 7/10/15 as it rises above 1/1.5/2; top traders' long share: LONG 10 at >= 0.55,
  0 at <= 0.45, else 5 (mirrored for SHORT).
- environment (raw max 15): open-interest change >= 3 % -> 15, > 0 -> 10, <= 0 -> 5.
- confirmation (raw max 15, v51/v52): 15 when price is on the signal's side of VWAP 30m (no
  CVD-price divergence) and net large-order flow is not against the signal, else 0.
- auxiliary (raw max 5): Coinbase premium beyond +/-0.05 % in the signal's direction 5, within 2, else 0.
- funding (raw +/-5, v52): |rate| >= 0.1 % with the crowd -5, against +5; 0.03 % <= |rate| < 0.1 %
  against the crowd +5.
- liquidation (raw max 5, v52): +5 when the 5-min short/long liquidated USD ratio is >= 2 (LONG) or
  <= 0.5 (SHORT) and the total is at least the per-symbol floor.
A missing input scores 0 and adds a ``missing:<input>`` note.
Columns: ``score_frames`` scores every row of a ``FeatureFrame`` (many evaluation times of a symbol)
for several strategies in one compiled loop (``kernels``); ``score`` is the same function on one row,
so there is one implementation. Gates (v53) run in the order min_atr,
obi, spot_perp_divergence, whale_flow; the first that fires sets ``gate`` and the score to 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from .features import Features
from .frame import FeatureFrame
from .kernels import score_rows
from .regime import RegimeFrame, regime_notes
from .regime import evaluate as evaluate_regime
from .strategy import PerSymbol, StrategyConfig

LONG, SHORT = "LONG", "SHORT"
RAW_MAX = {
    "direction": 55.0,
    "crowding": 25.0,
    "environment": 15.0,
    "confirmation": 15.0,
    "auxiliary": 5.0,
    "funding": 5.0,
    "liquidation": 5.0,
}
LAYER_ORDER = tuple(RAW_MAX)
RAW_MAX_ARRAY = np.array(list(RAW_MAX.values()))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One strategy's verdict on one snapshot: inputs, layer points, gate, tier and why not emitted."""

    strategy: str
    strategy_version: str
    config_hash: str
    exchange: str
    symbol: str
    time_ms: int
    direction: str | None
    score: float  # after gates (0 when vetoed or without direction)
    raw_score: float  # sum of layer scores before gates
    layer_scores: Mapping[str, float]
    tier: str | None  # "standard" | "heavy" | None
    gate: str | None
    block_reason: str | None  # None when a signal is emitted
    notes: tuple[str, ...]
    inputs: Mapping[str, float]
    is_flip: bool = False
    config_rev: int = 0  # the strategy's registered revision (0: an unregistered file)

    @property
    def fired(self) -> bool:
        return self.block_reason is None and self.tier is not None and self.direction is not None

    @property
    def evaluation_id(self) -> str:
        return f"{self.strategy}:{self.config_hash}:{self.exchange}:{self.symbol}:{self.time_ms}"

    @property
    def signal_id(self) -> str:
        """Deterministic (same input, same id in live and replay); the executor derives order ids from it."""
        return f"{self.evaluation_id}:{self.direction}"


DIRECTIONS = {1: LONG, -1: SHORT, 0: None}
GATES = ("min_atr", "obi", "spot_perp_divergence", "whale_flow")  # checked in this order
BLOCK_REASONS = (
    None,
    "no_direction",
    "gate",
    "below_entry",
    "warmup",
    "missing_atr",
    "cooldown",
    "rules_not_met",
    "missing_input",
    "model_skip",
)  # rules_not_met, missing_input: regime strategies (``core.regime``); model_skip: the confidence model's
# p_win is in the size map's skip band (``core.confidence``)
NO_DIRECTION, GATE, BELOW_ENTRY, WARMUP, MISSING_ATR, COOLDOWN, RULES_NOT_MET, MISSING_INPUT, MODEL_SKIP = range(1, 10)
TIERS = (None, "standard", "heavy")


@dataclass(slots=True)
class ScoreFrame:
    """One strategy's verdicts on every row of a ``FeatureFrame``, as columns (codes index the tuples
    above: ``gate`` 0 = none, else ``GATES[gate - 1]``)."""

    sign: np.ndarray  # int8: 1 LONG, -1 SHORT, 0 no direction
    layers: dict[str, np.ndarray]  # the layers with weight > 0, in LAYER_ORDER
    raw_score: np.ndarray
    score: np.ndarray  # after gates (0 when vetoed or without direction)
    tier: np.ndarray  # int8 index into TIERS
    gate: np.ndarray  # int8
    block: np.ndarray  # int8 index into BLOCK_REASONS
    regime: RegimeFrame | None = None  # a regime strategy's rules verdict (its notes are built from it)


@dataclass(frozen=True)
class _Params:
    """Strategy parameters as the arrays ``kernels.score_rows`` reads (one row per strategy)."""

    weights: np.ndarray
    ls_long: np.ndarray
    ls_short: np.ndarray
    rules: np.ndarray
    gates: np.ndarray
    veto_missing: np.ndarray
    entry: np.ndarray
    heavy: np.ndarray


_PARAMS: dict[tuple[tuple[str, ...], str], _Params] = {}


def _params(cfgs: Sequence[StrategyConfig], symbol: str) -> _Params:
    key = (tuple(c.config_hash for c in cfgs), symbol)
    cached = _PARAMS.get(key)
    if cached is not None:
        return cached
    nan = float("nan")

    def gate(setting: PerSymbol | None) -> float:
        value = _gate_value(setting, symbol)
        return nan if value is None else value

    params = _Params(
        weights=np.array([[getattr(c.weights, name) for name in LAYER_ORDER] for c in cfgs], dtype=np.float64),
        ls_long=np.array([c.rules.long_short_long_levels for c in cfgs], dtype=np.float64),
        ls_short=np.array([c.rules.long_short_short_levels for c in cfgs], dtype=np.float64),
        rules=np.array(
            [
                [
                    c.rules.top_trader_high,
                    c.rules.top_trader_low,
                    c.rules.oi_strong_change,
                    c.rules.premium_band,
                    c.rules.funding_extreme,
                    c.rules.funding_moderate,
                    c.rules.liquidation_ratio_long,
                    c.rules.liquidation_ratio_short,
                    c.rules.liquidation_min_usd.value_for(symbol) or 0.0,
                ]
                for c in cfgs
            ],
            dtype=np.float64,
        ),
        gates=np.array(
            [
                [
                    gate(c.gates.min_atr_price),
                    gate(c.gates.obi_against),
                    gate(c.gates.spot_perp_divergence),
                    gate(c.gates.whale_against),
                ]
                for c in cfgs
            ],
            dtype=np.float64,
        ),
        veto_missing=np.array([c.gates.on_missing_input == "veto" for c in cfgs]),
        entry=np.array([[c.thresholds.entry] for c in cfgs], dtype=np.float64),
        heavy=np.array([[c.thresholds.heavy] for c in cfgs], dtype=np.float64),
    )
    if len(_PARAMS) > 1024:
        _PARAMS.clear()
    _PARAMS[key] = params
    return params


def score_frames(frame: FeatureFrame, cfgs: Sequence[StrategyConfig]) -> list[ScoreFrame]:
    """Direction, layer points, gates and tier of every strategy on every row of ``frame`` (pure).

    The rules run in one compiled loop over strategies x rows (``kernels.score_rows``); the layer sum
    is then rounded to 6 decimals as Python's ``round`` does and compared with the thresholds. The
    one-row ``score`` is this function, so there is one implementation of the rules.
    """
    params = _params(cfgs, frame.symbol)
    v = frame.values
    n, count = len(frame), len(cfgs)
    fast = np.array([frame.cvd[c.windows.cvd_fast] for c in cfgs]).reshape(count, n)
    mid = np.array([frame.cvd[c.windows.cvd_mid] for c in cfgs]).reshape(count, n)
    accel = np.array([frame.cvd_accel[c.windows.cvd_fast] for c in cfgs]).reshape(count, n)
    sign = np.empty((count, n), dtype=np.int8)
    layers = np.empty((count, len(LAYER_ORDER), n))
    total = np.empty((count, n))
    gate = np.empty((count, n), dtype=np.int8)
    score_rows(
        fast,
        mid,
        accel,
        frame.large_net_qty_15m,
        v["long_short_ratio"],
        v["top_trader_long_share"],
        v["oi_change"],
        v["vwap_30m"],
        v["last_price"],
        v["coinbase_premium"],
        v["funding_rate"],
        v["liq_long_usd_5m"],
        v["liq_short_usd_5m"],
        frame.atr_price_ratio,
        v["obi"],
        v["spot_perp_divergence"],
        v["whale_ratio_15m"],
        params.weights,
        RAW_MAX_ARRAY,
        params.ls_long,
        params.ls_short,
        params.rules,
        params.gates,
        params.veto_missing,
        sign,
        layers,
        total,
        gate,
    )
    raw_score = _round6(total)
    block = np.where(sign == 0, NO_DIRECTION, np.where(gate > 0, GATE, 0)).astype(np.int8)
    final = np.where(block == 0, raw_score, 0.0)
    tier = np.where(final >= params.heavy, 2, np.where(final >= params.entry, 1, 0)).astype(np.int8)
    tier[block != 0] = 0
    block[(block == 0) & (tier == 0)] = BELOW_ENTRY
    out = []
    for k, cfg in enumerate(cfgs):
        used = {name: layers[k, j] for j, name in enumerate(LAYER_ORDER) if params.weights[k, j] > 0}
        if cfg.regime is not None:
            out.append(_regime_scores(frame, cfg, used))
            continue
        out.append(ScoreFrame(sign[k], used, raw_score[k], final[k], tier[k], gate[k], block[k]))
    return out


def _regime_scores(frame: FeatureFrame, cfg: StrategyConfig, layers: dict[str, np.ndarray]) -> ScoreFrame:
    """A regime strategy's scores (``core.regime``): entry or heavy where its rules hold, else 0 with
    the reason; no gates (the schema refuses them for a regime)."""
    r = evaluate_regime(frame, cfg)
    sign = np.where(r.fires, r.sign, 0).astype(np.int8)
    final = np.where(r.heavy, float(cfg.thresholds.heavy), np.where(r.fires, float(cfg.thresholds.entry), 0.0))
    tier = np.where(r.heavy, 2, np.where(r.fires, 1, 0)).astype(np.int8)
    block = np.where(
        r.fires,
        0,
        np.where(
            r.direction_missing,
            MISSING_INPUT,
            np.where(r.sign == 0, NO_DIRECTION, np.where(r.missing, MISSING_INPUT, RULES_NOT_MET)),
        ),
    ).astype(np.int8)
    return ScoreFrame(sign, layers, final.copy(), final, tier, np.zeros(len(frame), dtype=np.int8), block, r)


def score_frame(frame: FeatureFrame, cfg: StrategyConfig) -> ScoreFrame:
    return score_frames(frame, [cfg])[0]


def _round6(values: np.ndarray) -> np.ndarray:
    """Python's ``round(x, 6)`` of every value.

    numpy's ``rint(x * 1e6) / 1e6`` is the same number unless ``x * 1e6`` lies within rounding error
    of a half (the division by the exact 1e6 is correctly rounded, as Python's decimal rounding is);
    those few values are rounded by Python itself.
    """
    scaled = values * 1e6
    out = np.rint(scaled) / 1e6
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    if near_half.any():
        flat_out, flat_in = out.reshape(-1), values.reshape(-1)
        for i in np.flatnonzero(near_half.reshape(-1)).tolist():
            flat_out[i] = round(float(flat_in[i]), 6)
    return out


def _gate_value(setting: PerSymbol | None, symbol: str) -> float | None:
    return setting.value_for(symbol) if setting is not None else None


def strategy_input_columns(frame: FeatureFrame, cfg: StrategyConfig) -> list[tuple[str, np.ndarray]]:
    """The inputs a strategy adds to the snapshot's own (``inputs`` of its feature records)."""
    return [
        ("cvd_fast", frame.cvd[cfg.windows.cvd_fast]),
        ("cvd_mid", frame.cvd[cfg.windows.cvd_mid]),
        ("cvd_fast_slope", frame.cvd_slope[cfg.windows.cvd_fast]),
        ("cvd_fast_accel", frame.cvd_accel[cfg.windows.cvd_fast]),
        ("large_net_qty_15m", frame.large_net_qty_15m),
    ]


def evaluation_at(
    frame: FeatureFrame, scores: ScoreFrame, cfg: StrategyConfig, i: int, base_inputs: Mapping[str, float] | None = None
) -> Evaluation:
    """Row ``i`` of a scored frame as an ``Evaluation`` (the object the one-row API returns)."""
    direction = DIRECTIONS[int(scores.sign[i])]
    notes: tuple[str, ...] = ()
    if scores.regime is not None:
        notes = regime_notes(cfg, scores.regime, i)
    elif direction is not None:  # inputs a layer needed and did not have (confirmation/funding only when used)
        v, weights = frame.values, cfg.weights
        needed = {
            "long_short_ratio": v["long_short_ratio"][i],
            "top_trader_long_share": v["top_trader_long_share"][i],
            "oi_change": v["oi_change"][i],
        }
        if weights.confirmation > 0:
            needed["vwap_30m"] = v["vwap_30m"][i] + v["last_price"][i]
        needed["coinbase_premium"] = v["coinbase_premium"][i]
        if weights.funding > 0:
            needed["funding_rate"] = v["funding_rate"][i]
        notes = tuple(f"missing:{name}" for name, value in needed.items() if math.isnan(value))
    inputs = dict(base_inputs) if base_inputs is not None else frame.input_rows(np.array([i]))[0]
    for name, column in strategy_input_columns(frame, cfg):
        inputs[name] = float(column[i])
    gate = int(scores.gate[i])
    return Evaluation(
        strategy=cfg.name,
        strategy_version=cfg.version,
        config_hash=cfg.config_hash,
        exchange=frame.exchange,
        symbol=frame.symbol,
        time_ms=int(frame.time_ms[i]),
        direction=direction,
        score=float(scores.score[i]),
        raw_score=float(scores.raw_score[i]),
        layer_scores=MappingProxyType({name: float(column[i]) for name, column in scores.layers.items()}),
        tier=TIERS[int(scores.tier[i])],
        gate=GATES[gate - 1] if gate else None,
        block_reason=BLOCK_REASONS[int(scores.block[i])],
        notes=notes,
        inputs=MappingProxyType(inputs),
        config_rev=cfg.config_rev,
    )


def score(f: Features, cfg: StrategyConfig, base_inputs: Mapping[str, float] | None = None) -> Evaluation:
    """Direction, layer points, gates and tier for one strategy on one snapshot (pure): ``score_frame``
    on a one-row frame. ``base_inputs`` may pass ``f.inputs()`` computed once for all strategies."""
    frame = FeatureFrame.from_features([f])
    return evaluation_at(frame, score_frame(frame, cfg), cfg, 0, base_inputs)


def with_block(e: Evaluation, reason: str) -> Evaluation:
    """The same evaluation, not emitted, for ``reason`` (warmup, cooldown, missing_atr...)."""
    return Evaluation(
        e.strategy,
        e.strategy_version,
        e.config_hash,
        e.exchange,
        e.symbol,
        e.time_ms,
        e.direction,
        e.score,
        e.raw_score,
        e.layer_scores,
        e.tier,
        e.gate,
        reason,
        e.notes,
        e.inputs,
        False,
        e.config_rev,
    )
