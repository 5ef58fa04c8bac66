"""Where a closed trade stands among its peers: trades of the same strategy grouped by direction,
regime and size bucket.

Grouping (each trade gets both labels from its own data, so a group means the same in every report):
- ``regime``: the signal's ``factors["regime"]`` when the strategy names one; else the volatility
  regime from ``factors["atr_percentile"]`` (the ATR's percentile over its lookback, 0-100):
  ``quiet`` below 33.3, ``volatile`` above 66.7, ``normal`` between; ``unknown`` without either.
- ``size``: the trade's 1R in quote (r_usd) against the median r_usd of the strategy's trades in the
  population: ``small`` below 0.8 x median, ``large`` above 1.25 x median, ``normal`` between.

A group with fewer than ``min_peers`` other trades falls back to a coarser one, dropping size, then
regime, then direction (the strategy alone is the last resort); the result names the group used and
says when it fell back. Percentiles are mid-ranks among the peers (the trade itself excluded):
``100 x (#below + 0.5 x #equal) / #peers``, so the best trade of 4 peers' group is at 100, a trade
equal to every peer at 50. Pure and deterministic.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MIN_PEERS = 10
LEVELS = (
    ("strategy", "direction", "regime", "size"),
    ("strategy", "direction", "regime"),
    ("strategy", "direction"),
    ("strategy",),
)


@dataclass(frozen=True, slots=True)
class PeerTrade:
    """One closed trade as the peer comparison sees it."""

    trade_id: str
    strategy: str
    direction: str
    regime: str
    r_usd: float
    net_r: float
    roi_pct: float
    holding_ms: int


@dataclass(frozen=True, slots=True)
class PeerStats:
    group: str  # e.g. "strategy=v53, direction=LONG, regime=volatile, size=normal"
    level: int  # 0 = the full group, higher = coarser (LEVELS)
    fallback: str | None  # why a coarser group was used
    count: int  # peers, the trade excluded
    win_rate: float | None  # share of the peers with net R > 0
    net_r_percentile: float | None
    roi_percentile: float | None
    holding_percentile: float | None
    median_net_r: float | None
    median_holding_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def regime_of(factors: Mapping[str, Any] | None) -> str:
    """The regime label of a trade from its signal's factors (module docstring)."""
    if not factors:
        return "unknown"
    named = factors.get("regime")
    if isinstance(named, str) and named:
        return named
    pct = factors.get("atr_percentile")
    if not isinstance(pct, int | float) or pct != pct:
        return "unknown"
    if pct < 100 / 3:
        return "quiet"
    return "volatile" if pct > 200 / 3 else "normal"


def size_bucket(r_usd: float, median_r_usd: float) -> str:
    if median_r_usd <= 0:
        return "normal"
    ratio = r_usd / median_r_usd
    if ratio < 0.8:
        return "small"
    return "large" if ratio > 1.25 else "normal"


def percentile(value: float, others: Sequence[float]) -> float | None:
    """Mid-rank percentile of `value` among `others` (0-100); None without others."""
    if not others:
        return None
    below = sum(1 for v in others if v < value)
    equal = sum(1 for v in others if v == value)
    return 100.0 * (below + 0.5 * equal) / len(others)


def _labels(trade: PeerTrade, median: float) -> dict[str, str]:
    return {
        "strategy": trade.strategy,
        "direction": trade.direction,
        "regime": trade.regime,
        "size": size_bucket(trade.r_usd, median),
    }


def peers(trade: PeerTrade, population: Sequence[PeerTrade], min_peers: int = MIN_PEERS) -> PeerStats:
    """The trade's standing in its group of `population` (module docstring); `population` may hold
    the trade itself and trades of other strategies (both are left out as peers)."""
    same = [p for p in population if p.strategy == trade.strategy]
    median = statistics.median([p.r_usd for p in same] or [trade.r_usd])
    mine = _labels(trade, median)
    others = [p for p in same if p.trade_id != trade.trade_id]
    labels = {p.trade_id: _labels(p, median) for p in others}
    level, chosen = 0, others
    for level, keys in enumerate(LEVELS):  # noqa: B007 - the level the loop stops at is the one used
        chosen = [p for p in others if all(labels[p.trade_id][k] == mine[k] for k in keys)]
        if len(chosen) >= min_peers:
            break
    keys = LEVELS[level]
    fallback = None
    if level:
        dropped = [k for k in LEVELS[0] if k not in keys]
        fallback = f"fewer than {min_peers} peers with the same {', '.join(LEVELS[0])}: {', '.join(dropped)} dropped"
    nets = [p.net_r for p in chosen]
    holds = [float(p.holding_ms) for p in chosen]
    return PeerStats(
        group=", ".join(f"{k}={mine[k]}" for k in keys),
        level=level,
        fallback=fallback,
        count=len(chosen),
        win_rate=sum(1 for v in nets if v > 0) / len(nets) if nets else None,
        net_r_percentile=percentile(trade.net_r, nets),
        roi_percentile=percentile(trade.roi_pct, [p.roi_pct for p in chosen]),
        holding_percentile=percentile(float(trade.holding_ms), holds),
        median_net_r=statistics.median(nets) if nets else None,
        median_holding_ms=statistics.median(holds) if holds else None,
    )
