"""Order-flow arithmetic on rows the database already aggregated: footprint imbalances and POC, the
volume profile's POC and value area, CVD and VWAP lines. Pure functions of small inputs (a few
hundred price levels or bars), so the browser gets finished numbers and the tests can check them
against hand-computed references.

Conventions (as ATAS/flowsurface draw them):

- a *level* is ``floor(price / step)``: the level's price is ``level * step`` (its lower edge);
- *bought* is taker-buy volume (the aggressor lifted the ask), *sold* taker-sell volume;
- a *diagonal imbalance* compares the ask of one level with the bid one level below: bought at level
  ``i`` >= ``ratio`` x sold at ``i - 1`` is a buy imbalance at ``i``; sold at ``i`` >= ``ratio`` x
  bought at ``i + 1`` is a sell imbalance at ``i`` (a zero opposite side counts when the side itself
  is above ``min_qty``);
- the *POC* is the level with the most volume (ties: the lower price);
- the *value area* holds ``share`` (70 %) of the volume: from the POC it grows one level at a time to
  the side whose next level has more volume (ties: up), until it holds the share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IMBALANCE_RATIO = 3.0
VALUE_AREA_SHARE = 0.70


@dataclass(frozen=True)
class Level:
    level: int
    bought: float
    sold: float

    @property
    def volume(self) -> float:
        return self.bought + self.sold

    @property
    def delta(self) -> float:
        return self.bought - self.sold


def poc(levels: Sequence[Level]) -> int | None:
    """The level with the most volume; the lower one on a tie."""
    if not levels:
        return None
    return min(levels, key=lambda lv: (-lv.volume, lv.level)).level


def value_area(levels: Sequence[Level], share: float = VALUE_AREA_SHARE) -> tuple[int, int] | None:
    """(low level, high level) of the value area around the POC (see the module docstring)."""
    if not levels:
        return None
    by_level = {lv.level: lv.volume for lv in levels}
    total = sum(by_level.values())
    lo = hi = poc(levels)
    held = by_level[lo]
    low_end, high_end = min(by_level), max(by_level)
    while held < share * total and (lo > low_end or hi < high_end):
        up = by_level.get(hi + 1, 0.0) if hi < high_end else -1.0
        down = by_level.get(lo - 1, 0.0) if lo > low_end else -1.0
        if up >= down:
            hi += 1
            held += max(up, 0.0)
        else:
            lo -= 1
            held += max(down, 0.0)
    return lo, hi


def imbalances(levels: Sequence[Level], ratio: float = IMBALANCE_RATIO, min_qty: float = 0.0) -> dict[int, str]:
    """{level: "buy" | "sell"} for the diagonal imbalances of one bar's levels (a level that is
    both is marked by its larger side)."""
    by_level = {lv.level: lv for lv in levels}
    out: dict[int, str] = {}
    for lv in levels:
        sold_below = by_level[lv.level - 1].sold if lv.level - 1 in by_level else 0.0
        bought_above = by_level[lv.level + 1].bought if lv.level + 1 in by_level else 0.0
        buy = lv.bought > min_qty and lv.bought >= ratio * sold_below
        sell = lv.sold > min_qty and lv.sold >= ratio * bought_above
        if buy and sell:
            out[lv.level] = "buy" if lv.bought >= lv.sold else "sell"
        elif buy or sell:
            out[lv.level] = "buy" if buy else "sell"
    return out


def cumulative(values: Iterable[float]) -> list[float]:
    out, total = [], 0.0
    for v in values:
        total += v
        out.append(total)
    return out


def session_vwap(
    times_s: Sequence[int], quote: Sequence[float], volume: Sequence[float], session_s: int = 86_400
) -> list[float | None]:
    """VWAP anchored at each UTC day's start (the session), from per-bar quote volume and volume."""
    out: list[float | None] = []
    day, q_sum, v_sum = None, 0.0, 0.0
    for t, q, v in zip(times_s, quote, volume):
        if t // session_s != day:
            day, q_sum, v_sum = t // session_s, 0.0, 0.0
        q_sum += q
        v_sum += v
        out.append(q_sum / v_sum if v_sum > 0 else None)
    return out


def nice_step(price: float, levels: int = 6000) -> float:
    """A price step of 1, 2 or 5 x 10^k near ``price / levels`` (BTC at 30,000: 5, a dozen levels in a
    typical 1 m bar)."""
    import math

    if price <= 0:
        return 1.0
    raw = price / levels
    exp = math.floor(math.log10(raw))
    base = raw / 10**exp
    mult = 1 if base < 1.5 else 2 if base < 3.5 else 5 if base < 7.5 else 10
    return float(f"{mult * 10**exp:.12g}")
