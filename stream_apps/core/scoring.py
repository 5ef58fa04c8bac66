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
A missing input scores 0 and adds a ``missing:<input>`` note. Gates (v53) run in the order min_atr,
obi, spot_perp_divergence, whale_flow; the first that fires sets ``gate`` and the score to 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from .features import Features
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


def _sign(direction: str) -> int:
    return 1 if direction == LONG else -1


def _scaled(weight: float, raw: float, layer: str) -> float:
    return weight * raw / RAW_MAX[layer]


def direction_of(fast_cvd: float, mid_cvd: float) -> str | None:
    if fast_cvd > 0 and mid_cvd > 0:
        return LONG
    if fast_cvd < 0 and mid_cvd < 0:
        return SHORT
    return None


def direction_raw(f: Features, cfg: StrategyConfig, direction: str) -> float:
    sign = _sign(direction)
    net_large = f.large_net_qty_15m * sign
    p99_flow = 20.0 if net_large > 0 else 10.0 if net_large == 0 else 0.0
    accel = f.accel_at(cfg.windows.cvd_fast) * sign
    return 30.0 + p99_flow + (5.0 if accel > 0 else 0.0)


def crowding_raw(f: Features, cfg: StrategyConfig, direction: str, notes: list[str]) -> float:
    rules = cfg.rules
    raw = 0.0
    ratio = f.long_short_ratio
    if ratio is None:
        notes.append("missing:long_short_ratio")
    elif direction == LONG:
        one, mid, low = rules.long_short_long_levels
        raw += 15.0 if ratio < low else 10.0 if ratio < mid else 7.0 if ratio < one else 0.0
    else:
        one, mid, high = rules.long_short_short_levels
        raw += 15.0 if ratio > high else 10.0 if ratio > mid else 7.0 if ratio > one else 0.0
    share = f.top_trader_long_share
    if share is None:
        notes.append("missing:top_trader_long_share")
    else:
        aligned_high = share >= rules.top_trader_high if direction == LONG else share <= rules.top_trader_low
        aligned_low = share <= rules.top_trader_low if direction == LONG else share >= rules.top_trader_high
        raw += 10.0 if aligned_high else 0.0 if aligned_low else 5.0
    return raw


def environment_raw(f: Features, cfg: StrategyConfig, notes: list[str]) -> float:
    change = f.oi_change
    if change is None:
        notes.append("missing:oi_change")
        return 0.0
    return 15.0 if change >= cfg.rules.oi_strong_change else 10.0 if change > 0 else 5.0


def confirmation_raw(f: Features, direction: str, notes: list[str]) -> float:
    if f.vwap_30m is None or f.last_price is None:
        notes.append("missing:vwap_30m")
        return 0.0
    sign = _sign(direction)
    price_agrees = (f.last_price - f.vwap_30m) * sign >= 0
    large_not_against = f.large_net_qty_15m * sign >= 0
    return 15.0 if price_agrees and large_not_against else 0.0


def auxiliary_raw(f: Features, cfg: StrategyConfig, direction: str, notes: list[str]) -> float:
    premium = f.coinbase_premium
    if premium is None:
        notes.append("missing:coinbase_premium")
        return 0.0
    band = cfg.rules.premium_band
    if premium * _sign(direction) > band:
        return 5.0
    return 2.0 if abs(premium) <= band else 0.0


def funding_raw(f: Features, cfg: StrategyConfig, direction: str, notes: list[str]) -> float:
    rate = f.funding_rate
    if rate is None:
        notes.append("missing:funding_rate")
        return 0.0
    with_crowd = rate * _sign(direction) > 0  # longs pay when rate > 0: a LONG goes with the crowd
    if abs(rate) >= cfg.rules.funding_extreme:
        return -5.0 if with_crowd else 5.0
    if abs(rate) >= cfg.rules.funding_moderate and not with_crowd:
        return 5.0
    return 0.0


def liquidation_raw(f: Features, cfg: StrategyConfig, direction: str, notes: list[str]) -> float:
    long_usd, short_usd = f.liq_long_usd_5m, f.liq_short_usd_5m
    floor = cfg.rules.liquidation_min_usd.value_for(f.symbol) or 0.0
    total = long_usd + short_usd
    if total <= 0 or total < floor:
        return 0.0
    ratio = short_usd / long_usd if long_usd > 0 else math.inf
    if direction == LONG and ratio >= cfg.rules.liquidation_ratio_long:
        return 5.0
    if direction == SHORT and ratio <= cfg.rules.liquidation_ratio_short:
        return 5.0
    return 0.0


def _gate_value(setting: PerSymbol | None, symbol: str) -> float | None:
    return setting.value_for(symbol) if setting is not None else None


def check_gates(f: Features, cfg: StrategyConfig, direction: str) -> str | None:
    """Name of the first gate that vetoes the signal, or None."""
    gates, sign, symbol = cfg.gates, _sign(direction), f.symbol
    veto_missing = gates.on_missing_input == "veto"

    min_atr = _gate_value(gates.min_atr_price, symbol)
    if min_atr is not None:
        ratio = f.atr_price_ratio
        if (ratio is None and veto_missing) or (ratio is not None and ratio < min_atr):
            return "min_atr"
    checks = (
        ("obi", _gate_value(gates.obi_against, symbol), f.obi),
        ("spot_perp_divergence", _gate_value(gates.spot_perp_divergence, symbol), f.spot_perp_divergence),
        ("whale_flow", _gate_value(gates.whale_against, symbol), f.whale_ratio_15m),
    )
    for name, threshold, value in checks:
        if threshold is None:
            continue
        if value is None:
            if veto_missing:
                return name
            continue
        if value * sign < -threshold:  # against the signal beyond the threshold
            return name
    return None


def strategy_inputs(f: Features, cfg: StrategyConfig, base: Mapping[str, float] | None = None) -> dict[str, float]:
    inputs = dict(base) if base is not None else f.inputs()
    inputs["cvd_fast"] = f.cvd_at(cfg.windows.cvd_fast)
    inputs["cvd_mid"] = f.cvd_at(cfg.windows.cvd_mid)
    inputs["cvd_fast_slope"] = f.slope_at(cfg.windows.cvd_fast)
    inputs["cvd_fast_accel"] = f.accel_at(cfg.windows.cvd_fast)
    inputs["large_net_qty_15m"] = f.large_net_qty_15m
    return inputs


def score(f: Features, cfg: StrategyConfig, base_inputs: Mapping[str, float] | None = None) -> Evaluation:
    """Direction, layer points, gates and tier for one strategy on one snapshot (pure).

    ``base_inputs`` may pass ``f.inputs()`` computed once for all strategies of a snapshot.
    """
    notes: list[str] = []
    direction = direction_of(f.cvd_at(cfg.windows.cvd_fast), f.cvd_at(cfg.windows.cvd_mid))
    weights = cfg.weights
    layers: dict[str, float] = {}
    gate: str | None = None
    if direction is None:
        layers = {name: 0.0 for name in LAYER_ORDER if getattr(weights, name) > 0}
        block: str | None = "no_direction"
    else:
        raw = {
            "direction": direction_raw(f, cfg, direction),
            "crowding": crowding_raw(f, cfg, direction, notes),
            "environment": environment_raw(f, cfg, notes),
            "confirmation": confirmation_raw(f, direction, notes) if weights.confirmation > 0 else 0.0,
            "auxiliary": auxiliary_raw(f, cfg, direction, notes),
            "funding": funding_raw(f, cfg, direction, notes) if weights.funding > 0 else 0.0,
            "liquidation": liquidation_raw(f, cfg, direction, notes) if weights.liquidation > 0 else 0.0,
        }
        layers = {name: _scaled(getattr(weights, name), raw[name], name) for name in LAYER_ORDER if getattr(weights, name) > 0}
        gate = check_gates(f, cfg, direction)
        block = "gate" if gate else None
    raw_score = round(sum(layers.values()), 6)
    final = raw_score if block is None else 0.0
    tier: str | None = None
    if block is None:
        if final >= cfg.thresholds.heavy:
            tier = "heavy"
        elif final >= cfg.thresholds.entry:
            tier = "standard"
        else:
            block = "below_entry"
    return Evaluation(
        strategy=cfg.name,
        strategy_version=cfg.version,
        config_hash=cfg.config_hash,
        exchange=f.exchange,
        symbol=f.symbol,
        time_ms=f.time_ms,
        direction=direction,
        score=final,
        raw_score=raw_score,
        layer_scores=MappingProxyType(layers),
        tier=tier,
        gate=gate,
        block_reason=block,
        notes=tuple(notes),
        inputs=MappingProxyType(strategy_inputs(f, cfg, base_inputs)),
    )


def with_block(e: Evaluation, reason: str) -> Evaluation:
    """The same evaluation, not emitted, for ``reason`` (warmup, cooldown, missing_atr...)."""
    return Evaluation(
        e.strategy, e.strategy_version, e.config_hash, e.exchange, e.symbol, e.time_ms, e.direction, e.score,
        e.raw_score, e.layer_scores, e.tier, e.gate, reason, e.notes, e.inputs, False,
    )
