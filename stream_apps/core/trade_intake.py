"""Which incoming trades and warm-start minute bars a symbol state takes, and why it refuses the rest.

Why separate from the state: these are pure checks of the input against the state's position in
its sequence (the highest agg id seen, the sealed time, the newest second with trades), so they
read the same for the engine's look-ahead (``clean_prefix``) as for the state applying them.
Refusals are counted by the state (``Counters``):

- ``rejected``: NaN/inf/zero/negative price or quantity, negative id or time (quantity below 1e-8
  rounds to zero units and is rejected too);
- ``duplicates``: agg id not above the highest id seen (Binance ids are consecutive per symbol);
- ``gaps``: agg id jumps; the data no longer covers the past, so warm-up coverage restarts there;
- ``late``: a trade in a second that is already closed — older than the newest accepted trade's
  second or than the sealed time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .events import IndicatorUpdate
from .params import MINUTE_MS, SECOND_MS
from .units import notional_to_units, qty_to_units


def is_clean_run(
    ids: np.ndarray,
    times: np.ndarray,
    prices: np.ndarray,
    qty_units: np.ndarray,
    last_agg_id: int,
    sealed_ms: int,
    head_second: int,
) -> bool:
    """The common case, checked in a few vectorised calls: ids consecutive and continuing
    ``last_agg_id``, time order, not late, valid prices and quantities (``qty_units`` from finite
    quantities)."""
    n = len(ids)
    first_id, first_time = int(ids[0]), int(times[0])
    if last_agg_id >= 0 and first_id != last_agg_id + 1:
        return False
    if first_id < 0 or int(ids[-1]) - first_id != n - 1 or first_time < sealed_ms:
        return False
    if first_time // SECOND_MS < head_second:
        return False
    if n > 1 and not ((ids[1:] - ids[:-1] == 1).all() and (times[1:] >= times[:-1]).all()):
        return False
    # comparisons with NaN are False, so this also rejects NaN prices
    return bool((prices > 0).all() and (qty_units > 0).all() and np.isfinite(prices).all())


def clean_run_length(
    ids: np.ndarray,
    times: np.ndarray,
    prices: np.ndarray,
    qtys: np.ndarray,
    last_agg_id: int,
    sealed_ms: int,
    head_second: int,
) -> int:
    """How many leading trades pass ``is_clean_run``, per trade in one pass (finite ``qtys``)."""
    n = len(ids)
    with np.errstate(invalid="ignore"):
        ok = (prices > 0) & np.isfinite(prices) & (qty_to_units(qtys) > 0)
    ok[1:] &= (ids[1:] - ids[:-1] == 1) & (times[1:] >= times[:-1])
    first_ok = (
        ids[0] >= 0
        and (last_agg_id < 0 or ids[0] == last_agg_id + 1)
        and times[0] >= sealed_ms
        and times[0] // SECOND_MS >= head_second
    )
    ok[0] &= bool(first_ok)
    bad = np.flatnonzero(~ok)
    return int(bad[0]) if len(bad) else n


@dataclass
class TradeVerdicts:
    """Per trade of a batch, what the general path decided (boolean masks)."""

    valid: np.ndarray  # price, quantity (in units) and time make sense
    duplicate: np.ndarray  # id not above the highest seen before it
    fresh: np.ndarray  # id above every id before it
    gap: np.ndarray  # fresh with a hole before it
    late: np.ndarray  # fresh and valid but in a second already closed
    accept: np.ndarray  # applied
    qty_units: np.ndarray  # the quantities in units, 0 where invalid


def judge_trades(
    ids: np.ndarray,
    times: np.ndarray,
    prices: np.ndarray,
    qtys: np.ndarray,
    qty_units: np.ndarray,
    last_agg_id: int,
    sealed_ms: int,
    head_second: int,
) -> TradeVerdicts:
    """Every trade of a batch in arrival order against the sequence so far and the trades before it."""
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(prices) & (prices > 0) & np.isfinite(qtys) & (qtys > 0) & (times >= 0)
    qty_units = np.where(valid, qty_units, 0)
    valid &= qty_units > 0

    has_id = ids >= 0
    prev_max = np.maximum.accumulate(np.concatenate(([last_agg_id], np.where(has_id, ids, -1))))[:-1]
    duplicate = has_id & (ids <= prev_max)
    fresh = has_id & ~duplicate
    gap = fresh & (prev_max >= 0) & (ids > prev_max + 1)
    candidate = fresh & valid
    late = candidate & (times < sealed_ms)
    candidate &= ~late
    seconds = times // SECOND_MS
    running = np.maximum.accumulate(np.concatenate(([head_second], np.where(candidate, seconds, -1))))[:-1]
    behind = candidate & (seconds < running)
    late |= behind
    return TradeVerdicts(valid, duplicate, fresh, gap, late, candidate & ~behind, qty_units)


@dataclass
class MinuteBarRows:
    """The minute bars taken: sums (minute, buy units, sell units, quote units, trades) and prices
    (minute, open, high, low, close), in time order; and how many were refused."""

    sums: list[tuple[int, int, int, int, int]]
    prices: list[tuple[int, float, float, float, float]]
    rejected: int = 0


def minute_bar_rows(
    bars: list[IndicatorUpdate], first_trade_ms: int | None, approx_until_ms: int | None
) -> MinuteBarRows:
    """Read warm-start minute bars (``kind`` ``kline_1m``, ``extra`` open/high/low/close,
    buy_volume/sell_volume in base units, quote_volume, trades). A bar once a trade was applied, or
    before a minute already stood in for, is refused (it would double the trades); so is a malformed one."""
    taken = MinuteBarRows([], [])
    for bar in sorted(bars, key=lambda b: b.value_time_ms):
        x, minute = bar.extra, bar.value_time_ms // MINUTE_MS
        try:
            o, h, lo, c = (float(x[k]) for k in ("open", "high", "low", "close"))
            buy, sell, quote, n = (float(x[k]) for k in ("buy_volume", "sell_volume", "quote_volume", "trades"))
        except (KeyError, TypeError, ValueError):
            taken.rejected += 1
            continue
        late = first_trade_ms is not None or minute * MINUTE_MS < (approx_until_ms or 0)
        if (
            late
            or not (0 < lo <= min(o, c) <= max(o, c) <= h)
            or min(buy, sell, quote, n) < 0
            or not all(np.isfinite((o, h, lo, c, buy, sell, quote)))
        ):
            taken.rejected += 1
            continue
        taken.sums.append(
            (
                minute,
                int(qty_to_units(np.array([buy]))[0]),
                int(qty_to_units(np.array([sell]))[0]),
                int(notional_to_units(np.array([quote]))[0]),
                int(n),
            )
        )
        taken.prices.append((minute, o, h, lo, c))
    return taken
