"""Book sweeps: the average price of taking a USD notional from one side of an ``md.book`` record.

A spread from last or mark prices is not tradable (the users' lesson, docs/concepts/cross-venue.md): an entry has to be checked against the price the order would really get, which is the
book walked level by level until the notional is filled. ``sweep`` does that walk:

- buying walks the asks from the lowest up, selling walks the bids from the highest down;
- each level gives ``price * qty`` USD; the last level used is taken in part (the remaining USD at
  that level's price), so the fill is exactly the notional;
- the result is the volume-weighted average price ``notional / coins filled``, with the coins
  filled, the number of levels touched and the worst price touched;
- a book whose levels hold less than the notional gives no price but a reason
  (``"insufficient depth: asks hold 1,234 USD of 50,000 in 20 levels"``), never a partial average
  that would look better than the real fill; so do a bad level (price or quantity not positive and
  finite) and levels out of order.

Why hand-rolled and not numpy (``cumsum`` + ``searchsorted``): a sampled book has 20 levels a side
and a sweep usually stops within the first few; a plain loop over them costs about as much as
creating the first numpy array would (benchmarks/bench_cross_venue.py measures the whole update).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

BUY = "buy"  # take the asks
SELL = "sell"  # hit the bids


@dataclass(frozen=True, slots=True)
class Sweep:
    """The outcome of taking ``notional`` USD: ``vwap`` or, when it cannot be filled, ``reason``."""

    notional: float
    vwap: float | None  # average fill price; None when the book cannot fill the notional
    qty: float  # coins (base units) filled; the depth available when insufficient
    levels: int  # levels touched
    worst_price: float | None  # price of the last level touched
    reason: str | None = None  # why there is no vwap


_PRICE_QTY = itemgetter("price", "qty")


def level_pairs(levels: Iterable[Mapping[str, Any]]) -> list[tuple[float, float]]:
    """``md.book`` levels (``{"price": p, "qty": q}`` dicts, Avro doubles) as ``(price, qty)`` tuples.

    ``itemgetter`` does the walk in C: converting 40 levels in Python cost more than the sweeps."""
    return list(map(_PRICE_QTY, levels))


def sweep(levels: Iterable[tuple[float, float]], notional: float, side: str) -> Sweep:
    """Take `notional` USD from `levels` (best first: asks for ``BUY``, bids for ``SELL``).

    >>> sweep([(100.0, 1.0), (101.0, 2.0)], 100.0, BUY).vwap
    100.0
    """
    if side not in (BUY, SELL):
        raise ValueError(f"side must be {BUY!r} or {SELL!r}, not {side!r}")
    if not (notional > 0 and math.isfinite(notional)):
        raise ValueError(f"notional must be a positive finite number of USD, not {notional!r}")
    book_side = "asks" if side == BUY else "bids"
    filled_usd = 0.0
    qty = 0.0
    n = 0
    previous = None
    first = 0.0
    for price, level_qty in levels:
        if not (price > 0 and level_qty > 0 and math.isfinite(price) and math.isfinite(level_qty)):
            return Sweep(
                notional, None, qty, n, previous, f"bad level in {book_side}: price {price!r} qty {level_qty!r}"
            )
        if previous is not None and (price <= previous if side == BUY else price >= previous):
            return Sweep(notional, None, qty, n, previous, f"{book_side} out of order: {price!r} after {previous!r}")
        if n == 0:
            first = price
        n += 1
        previous = price
        level_usd = price * level_qty
        if filled_usd + level_usd >= notional:
            qty += (notional - filled_usd) / price
            # an average lies between the best and the worst price taken; the division can round
            # one unit past them (notional / (notional / p) != p), which would read as a fill
            # better than the touch, so it is held inside
            vwap = min(max(notional / qty, min(first, price)), max(first, price))
            return Sweep(notional, vwap, qty, n, price)
        filled_usd += level_usd
        qty += level_qty
    return Sweep(
        notional,
        None,
        qty,
        n,
        previous,
        f"insufficient depth: {book_side} hold {filled_usd:,.0f} USD of {notional:,.0f} in {n} levels",
    )
