"""Position size from the risk budget: 1R in money, then the quantity whose stop loses exactly that.

r_usd = balance x risk_pct/100 x tier multiplier (10,000 x 2 % x 1.0 = 200 USDT for a standard signal,
300 for heavy), and qty = r_usd / R where R is the signal's risk distance in price units, so a stop at
entry -/+ 1R loses r_usd before costs. Balance and risk % belong to the account (executor config); the
tier multiplier is the strategy's, carried by the signal (`factors["risk_multiplier"]`, set from the
strategy file's `sizing.tier_multipliers`), so A/B strategies keep the sizing they were written with;
the executor's `tier_multipliers` apply to signals that do not carry one. A signal's `size_mult`, when
present, is that multiplier as the engine finally set it (the tier's, times the strategy's confidence
model's band for the signal's p_win, clamped: `stream_apps.core.confidence`) and wins over
`factors["risk_multiplier"]` (`signal_multiplier`): r_usd = balance x risk_pct/100 x size_mult, in paper,
backtest and live alike (they all parse signals with `execution.domain.Signal`). In a canary by size a
signal also carries its revision's share of the size, `factors["size_share"]` (`stream_apps.core.rollout`),
which multiplies that multiplier (the engine's signals always carry one of the two). The old system stored the tier but never applied it to P&L; here
the multiplier sets the size and r_usd travels on every position event. The balance is the configured
one, not compounded equity: results stay comparable in R across a run. When an exchange lot step is
given, the quantity is rounded down (never risk more than budgeted) and r_usd is the risk actually taken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only annotations: execution.domain imports this module, and must not import the config
    from execution.config import ExecutorConfig


class SizingError(ValueError):
    """No tradable size (unknown tier, size rounds to zero)."""


@dataclass(frozen=True, slots=True)
class Size:
    qty: float  # base currency
    r_usd: float  # quote currency lost at the stop, before costs (= qty x R)


def signal_multiplier(record: Mapping[str, Any]) -> float | None:
    """The risk multiplier a ``signals`` record asks for: its ``size_mult`` (the engine's final one), else
    its strategy's tier multiplier (``factors["risk_multiplier"]``, signals from before ``size_mult``),
    else None (the executor's ``tier_multipliers``)."""
    factors = record.get("factors") or {}
    share = float(factors.get("size_share", 1.0))  # a canary by size's leg (stream_apps.core.rollout)
    size_mult = record.get("size_mult")
    if size_mult is not None:
        return float(size_mult) * share
    multiplier = factors.get("risk_multiplier")
    return None if multiplier is None else float(multiplier) * share


def r_usd_for_tier(config: ExecutorConfig, tier: str, signal_multiplier: float | None = None) -> float:
    multiplier = signal_multiplier if signal_multiplier is not None else config.tier_multipliers.get(tier)
    if multiplier is None:
        raise SizingError(f"no tier multiplier for tier {tier!r}")
    return config.base_r_usd * multiplier


def position_size(r_usd: float, risk_distance: float, qty_step: float | None = None) -> Size:
    if not (r_usd > 0 and risk_distance > 0):
        raise SizingError("r_usd and risk distance must be positive")
    qty = r_usd / risk_distance
    if qty_step:
        qty = math.floor(qty / qty_step + 1e-9) * qty_step
        if qty <= 0:
            raise SizingError(f"size {r_usd / risk_distance} rounds to zero at lot step {qty_step}")
        return Size(qty, qty * risk_distance)
    return Size(qty, r_usd)
