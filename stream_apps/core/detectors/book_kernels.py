"""Compiled loop of the book detectors (walls, iceberg refills; numba, as ``kernels``).

Why compiled: every snapshot (4 a second per symbol live, hundreds of thousands a day in a replay)
is parsed, filtered to the band, compared level by level with the previous one and with the trades
between them; as numpy on 20-level arrays that is dozens of small calls per snapshot (a
millisecond on a loaded machine), compiled a few microseconds. One sequential loop over the
snapshots and trades merged by time also makes the result independent of batching.

State layout (arrays owned by ``BookDetectors``):

- ``ints``: time of the latest snapshot used (-1: none); ``floats``: its mid;
- per side (0 bid, 1 ask) the latest snapshot's levels within the band, nearest first: ``prices``,
  ``units`` (1e-8), ``counts``; ``first_seen`` (a wall since; -1: no wall); the trades since it per
  level: ``traded_at`` (at its exact price) and ``traded_deepest`` (trades whose deepest level
  reached is this one: a level's at-or-through total is the sum from it to the deepest); entries
  past ``counts`` are empty (NaN, 0, -1, 0, 0), so a snapshot clears only those it used, and the
  levels being ordered, old and new ones are matched in one pass;
- icebergs, per side: tracked prices, the time of their last refill (-1: free entry) and rings of
  their last ``N - 1`` refills (time, USD in 1e-6, counted);
- ``current``: nearest bid wall (distance bps, USD, first seen), the same for asks, snapshot time.

``book_update`` hands its steps the book's arrays as a ``Book``, the icebergs' as ``Icebergs`` and
its own per-call buffers as ``Incoming`` (named tuples of the same arrays).

Parameters: ``fparams`` = (wall multiple, wall band, fill ratio, iceberg band, trade fraction,
refill fraction, band kept); ``iparams`` = (walls on, icebergs on, N, iceberg window ms).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from ..kernels import ring_window_sums

SECOND_MS = 1_000  # the count ring's bucket (``params.SECOND_MS``)
I_BOOK_TIME = 0
N_INTS = 1
F_MID = 0
N_FLOATS = 1
P_MULTIPLE, P_WALL_BAND, P_FILL, P_ICE_BAND, P_TRADE, P_REFILL, P_BAND = range(7)
P_WALLS_ON, P_ICE_ON, P_MIN_REFILLS, P_ICE_WINDOW = range(4)
QTY_SCALE = 100_000_000
NOTIONAL_SCALE = 1_000_000


@njit(cache=True)
def _add_trades(
    t_prices, t_units, t_sells, lo, hi, prices, counts, traded_at, traded_deepest
):  # pragma: no cover - compiled
    """Trades ``lo..hi`` against the latest snapshot's levels: a taker sell reaches the bid levels at
    or above its price, a buy the ask levels at or below. The levels are ordered nearest first, so
    those reached are a prefix, found by bisection.

    One call for a run of trades, not one per trade: a compiled call with array arguments costs
    ~30 ns of reference counting (with numba's ``inline="always"`` as well), three times the work
    of a trade."""
    for i in range(lo, hi):
        price = t_prices[i]
        side = 0 if t_sells[i] else 1
        b = counts[side]
        if b == 0:
            continue
        p = prices[side, 0]
        if not ((side == 0 and p >= price) or (side == 1 and p <= price)):
            continue  # not even the best level: no bisection (a trade inside the spread, or a stale book)
        a = 1
        while a < b:  # the first level not reached
            m = (a + b) >> 1
            p = prices[side, m]
            if (side == 0 and p >= price) or (side == 1 and p <= price):
                a = m + 1
            else:
                b = m
        deepest = a - 1
        if deepest >= 0:
            traded_deepest[side, deepest] += t_units[i]
            if prices[side, deepest] == price:
                traded_at[side, deepest] += t_units[i]


@njit(cache=True)
def add_trades(t_prices, t_units, t_sells, prices, counts, traded_at, traded_deepest):  # pragma: no cover
    """Trades without a snapshot among them: only counted against the latest snapshot's levels (a
    call with a few arguments: the live worker's segments mostly bring trades alone)."""
    _add_trades(t_prices, t_units, t_sells, 0, t_prices.shape[0], prices, counts, traded_at, traded_deepest)


@njit(cache=True, inline="always")
def _distance(price, mid, side):  # pragma: no cover - compiled
    return ((mid - price) if side == 0 else (price - mid)) / mid * 1e4


@njit(cache=True, inline="always")
def _select(a, k, lo, hi):  # pragma: no cover - compiled
    """Reorder ``a[lo..hi]`` so that ``a[k]`` is its k-th smallest, none before it larger and none
    after it smaller (Hoare's quickselect, median-of-three pivot); returns ``a[k]``."""
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    return a[k]


@njit(cache=True, inline="always")
def _median(values, n, work):  # pragma: no cover - compiled
    """``np.median(values[:n])`` (n >= 1, no NaN) without allocating: the middle order statistic of a
    copy in ``work``, or the mean of the middle two as ``(a + b) / 2`` (numba's ``np.median``; the
    order statistics, hence the value, do not depend on the algorithm). Hand-rolled because
    ``np.median`` copies its input (an allocation per snapshot) and this runs for every snapshot."""
    for i in range(n):
        work[i] = values[i]
    half = n >> 1
    upper = _select(work, half, 0, n - 1)
    if n & 1 == 0:
        lower = work[0]  # the largest of those before the middle: the (half - 1)-th smallest
        for i in range(1, half):
            if work[i] > lower:
                lower = work[i]
        return (lower + upper) / 2
    return upper


class Book(NamedTuple):
    """The book ``book_update`` compares each snapshot with (the state arrays of the same names)."""

    prices: np.ndarray
    units: np.ndarray
    counts: np.ndarray
    first_seen: np.ndarray
    traded_at: np.ndarray
    traded_deepest: np.ndarray


class Icebergs(NamedTuple):
    """The refill tracking of ``book_update`` (the ``ice_*`` state arrays)."""

    prices: np.ndarray
    last: np.ndarray
    times: np.ndarray
    usd: np.ndarray
    counted: np.ndarray


class Incoming(NamedTuple):
    """The buffers of the snapshot in hand, allocated once a call so that no snapshot allocates. Per
    side (0 bid, 1 ask), levels nearest first."""

    read_prices: np.ndarray  # one side's valid levels, in the record's order
    read_units: np.ndarray
    keys: np.ndarray  # their nearness: -price for bids, price for asks
    order: np.ndarray  # their indices, nearest first
    listed_prices: np.ndarray  # the valid levels, at most ``n_levels`` a side
    listed_units: np.ndarray
    listed: np.ndarray  # how many a side
    deepest: np.ndarray  # the price of the deepest one listed
    prices: np.ndarray  # those within the band; ``counts`` of them a side
    units: np.ndarray
    counts: np.ndarray
    first: np.ndarray  # a wall since (t: a new one), -2: not a wall
    dist: np.ndarray  # distance to mid, bps
    usd: np.ndarray  # USD size, set within the wall band only
    pooled: np.ndarray  # the USD sizes within the wall band, both sides
    work: np.ndarray  # the median's scratch
    at_or_through: np.ndarray  # per level of the book: units traded at or through its price
    refills: np.ndarray  # the levels of the book refilled (their indices), ``n_refills`` a side
    n_refills: np.ndarray


# ``book_update`` allocates the buffers and hands them, with the state, to ``_apply_snapshots``: the
# loop over the snapshots, its steps (the functions below with ``inline="always"``) inlined into it,
# as numba inlines at its own IR level. That loop is compiled without numba's reference counting
# (``_nrt=False``): it allocates nothing, and every array it reads is held by ``book_update`` for
# the whole call. With reference counting, each array handed to a compiled call or read from one of
# these tuples inside the loop costs an atomic count and uncount (~30 ns a pair) that numba's
# pruning often leaves in.


@njit(cache=True)
def _incoming(n_levels, lv_count):  # pragma: no cover - compiled
    """``Incoming`` for snapshots of at most ``n_levels`` kept levels a side and the widest side in
    ``lv_count``."""
    widest = 1
    for k in range(lv_count.shape[0]):
        widest = max(widest, lv_count[k, 0], lv_count[k, 1])
    return Incoming(
        np.empty(widest),
        np.empty(widest, dtype=np.int64),
        np.empty(widest),
        np.empty(widest, dtype=np.int64),
        np.empty((2, n_levels)),
        np.zeros((2, n_levels), dtype=np.int64),
        np.zeros(2, dtype=np.int64),
        np.empty(2),
        np.empty((2, n_levels)),
        np.zeros((2, n_levels), dtype=np.int64),
        np.zeros(2, dtype=np.int64),
        np.empty((2, n_levels), dtype=np.int64),
        np.empty((2, n_levels)),
        np.empty((2, n_levels)),
        np.empty(2 * n_levels),
        np.empty(2 * n_levels),
        np.zeros(n_levels, dtype=np.int64),
        np.zeros((2, n_levels), dtype=np.int64),
        np.zeros(2, dtype=np.int64),
    )


@njit(cache=True, inline="always")
def _nearer(price, other, side):  # pragma: no cover - compiled
    """``price`` is nearer the mid than ``other`` on ``side``."""
    return (side == 0 and price > other) or (side == 1 and price < other)


@njit(cache=True, inline="always")
def _not_beyond(price, deepest, side):  # pragma: no cover - compiled
    """``price`` is no further from the mid than ``deepest`` on ``side``."""
    return (side == 0 and price >= deepest) or (side == 1 and price <= deepest)


@njit(cache=True)
def _free_or_oldest(times):  # pragma: no cover - compiled
    """The first entry of ``times`` that is free (-1), else the first of the earliest."""
    for i in range(times.shape[0]):
        if times[i] < 0:
            return i
    e = 0
    for i in range(1, times.shape[0]):
        if times[i] < times[e]:
            e = i
    return e


@njit(cache=True)
def _iceberg_entry(side, price, icebergs):  # pragma: no cover - compiled
    """The entry tracking ``price`` on ``side``: its own, else a free one, else the one refilled
    longest ago, which makes room (its ring emptied)."""
    for i in range(icebergs.prices.shape[1]):
        if icebergs.last[side, i] >= 0 and icebergs.prices[side, i] == price:
            return i
    e = _free_or_oldest(icebergs.last[side])
    icebergs.prices[side, e] = price
    for s in range(icebergs.times.shape[2]):
        icebergs.times[side, e, s] = -1
        icebergs.usd[side, e, s] = 0
        icebergs.counted[side, e, s] = False
    return e


@njit(cache=True)
def _count_refills(t, side, e, usd, min_refills, window, icebergs, row):  # pragma: no cover - compiled
    """Once entry ``e`` has ``min_refills`` refills less than ``window`` apart with the one at ``t``,
    count that one (``usd``) and those in the window not yet counted into ``row``; returns whether
    the one at ``t`` was counted."""
    times = icebergs.times
    recent = 0
    for s in range(times.shape[2]):
        if times[side, e, s] >= 0 and t - times[side, e, s] < window:
            recent += 1
    if recent + 1 < min_refills:
        return False
    count = 1
    total = usd
    for s in range(times.shape[2]):
        if times[side, e, s] >= 0 and t - times[side, e, s] < window and not icebergs.counted[side, e, s]:
            count += 1
            total += icebergs.usd[side, e, s]
            icebergs.counted[side, e, s] = True
    row[4 + side] += count
    row[6 + side] += total
    return True


@njit(cache=True)
def _iceberg(t, side, price, usd, min_refills, window, icebergs, row):  # pragma: no cover - compiled
    """A refill at ``price``: count it and the refills before it not yet counted once the price has
    ``min_refills`` refills less than ``window`` apart; remember it (in a free slot of the price's
    ring, else in place of its oldest)."""
    e = _iceberg_entry(side, price, icebergs)
    counted = _count_refills(t, side, e, usd, min_refills, window, icebergs, row)
    slot = _free_or_oldest(icebergs.times[side, e])
    icebergs.times[side, e, slot] = t
    icebergs.usd[side, e, slot] = usd
    icebergs.counted[side, e, slot] = counted
    icebergs.last[side, e] = t


@njit(cache=True, inline="always")
def _valid_levels(
    k, side, lv_prices, lv_qtys, lv_start, lv_qstart, lv_count, read_prices, read_units
):  # pragma: no cover
    """Snapshot ``k``'s levels on ``side`` with a finite positive price and quantity of at least one
    unit (1e-8, rounded), in the record's order, into ``read_*``; returns how many."""
    s0 = lv_start[k, side]
    q0 = lv_qstart[k, side]
    m = 0
    for i in range(lv_count[k, side]):  # none for -1 (no levels)
        p = lv_prices[s0 + i]
        q = lv_qtys[q0 + i]
        if p > 0 and q > 0 and math.isfinite(p) and math.isfinite(q):
            u = np.int64(np.rint(q * QTY_SCALE))
            if u > 0:
                read_prices[m] = p
                read_units[m] = u
                m += 1
    return m


@njit(cache=True, inline="always")
def _list_nearest_first(side, m, read_prices, read_units, keys, order, listed_prices, listed_units):  # pragma: no cover
    """The ``m`` levels read, nearest first (a stable sort: equal prices keep the record's order),
    the nearest ``n_levels`` of them into ``listed_*``; returns how many were kept."""
    ordered = True
    for i in range(m):
        keys[i] = -read_prices[i] if side == 0 else read_prices[i]
        if i > 0 and keys[i] < keys[i - 1]:
            ordered = False
    kept = min(m, listed_prices.shape[1])
    if ordered:  # as records list them, best first: the stable sort would keep this order
        for i in range(kept):
            listed_prices[side, i] = read_prices[i]
            listed_units[side, i] = read_units[i]
    else:
        _stable_order(keys, m, order)
        for i in range(kept):
            listed_prices[side, i] = read_prices[order[i]]
            listed_units[side, i] = read_units[order[i]]
    return kept


@njit(cache=True, inline="always")
def _stable_order(keys, m, order):  # pragma: no cover - compiled
    """``order[:m]`` = the indices of ``keys[:m]`` ascending, equal keys in their order: the stable
    sort's order, by insertion (a side has at most ``MAX_LEVELS`` levels) as it allocates nothing."""
    for i in range(m):
        at = i
        while at > 0 and keys[order[at - 1]] > keys[i]:
            order[at] = order[at - 1]
            at -= 1
        order[at] = i


@njit(cache=True, inline="always")
def _read_snapshot(k, lv_prices, lv_qtys, lv_start, lv_qstart, lv_count, new):  # pragma: no cover - compiled
    """Snapshot ``k``'s valid levels, nearest first, into ``new.listed*`` and ``new.deepest``; returns
    whether it lists any."""
    read_prices, read_units, keys, order = new.read_prices, new.read_units, new.keys, new.order
    listed_prices, listed_units, listed, deepest = new.listed_prices, new.listed_units, new.listed, new.deepest
    for side in range(2):
        m = _valid_levels(k, side, lv_prices, lv_qtys, lv_start, lv_qstart, lv_count, read_prices, read_units)
        kept = 0
        if m > 0:
            kept = _list_nearest_first(side, m, read_prices, read_units, keys, order, listed_prices, listed_units)
            deepest[side] = listed_prices[side, kept - 1]
        listed[side] = kept
    return listed[0] > 0 or listed[1] > 0


@njit(cache=True, inline="always")
def _mid(new):  # pragma: no cover - compiled
    """The mid of the best bid and ask listed, or the best level of the one side listed."""
    listed, listed_prices = new.listed, new.listed_prices
    if listed[0] > 0 and listed[1] > 0:
        mid = (listed_prices[0, 0] + listed_prices[1, 0]) / 2.0
    elif listed[0] > 0:
        mid = listed_prices[0, 0]
    else:
        mid = listed_prices[1, 0]
    return mid


@njit(cache=True, inline="always")
def _filter_to_band(mid, fparams, new):  # pragma: no cover - compiled
    """The listed levels within the band around ``mid`` into ``new.prices``, ``units``, ``dist``
    (``counts`` a side), and the USD sizes of those within the wall band into ``new.usd`` and, both
    sides together, ``new.pooled``; returns (how many pooled, the largest)."""
    band, wall_band = fparams[P_BAND], fparams[P_WALL_BAND]
    listed, listed_prices, listed_units = new.listed, new.listed_prices, new.listed_units
    prices, units, counts, dist, usds, pooled = new.prices, new.units, new.counts, new.dist, new.usd, new.pooled
    n_pooled = 0
    pooled_max = -math.inf
    for side in range(2):
        n = 0
        for i in range(listed[side]):
            d = _distance(listed_prices[side, i], mid, side)
            if d > band:
                break
            prices[side, i] = listed_prices[side, i]
            units[side, i] = listed_units[side, i]
            dist[side, i] = d
            if d <= wall_band:
                usd = listed_prices[side, i] * listed_units[side, i] / QTY_SCALE
                usds[side, i] = usd
                pooled[n_pooled] = usd
                n_pooled += 1
                if usd > pooled_max:
                    pooled_max = usd
            n += 1
        counts[side] = n
    return n_pooled, pooled_max


@njit(cache=True, inline="always")
def _wall_threshold(multiple, n_pooled, pooled_max, pooled, work):  # pragma: no cover - compiled
    """The USD size a level within the wall band needs to be a wall: ``multiple`` x the median of the
    ``n_pooled`` (>= 1) sizes ``pooled``, infinite when no level can reach it."""
    # The median only matters if some level can reach k x it. The median is at least the lower
    # middle value (index ``lower`` in order), so when k x that value exceeds the largest level
    # (k x v > max for at least n - lower values), k x median > every level and no level is a
    # wall: the threshold stays infinite, the same outcome.
    lower = (n_pooled >> 1) - 1 if n_pooled & 1 == 0 else n_pooled >> 1
    above = 0
    for i in range(n_pooled):
        if multiple * pooled[i] > pooled_max:
            above += 1
    threshold = math.inf
    if above < n_pooled - lower:
        threshold = multiple * _median(pooled, n_pooled, work)
    return threshold


@njit(cache=True, inline="always")
def _mark_walls(t, n_pooled, pooled_max, fparams, iparams, new):  # pragma: no cover - compiled
    """Each level in the band a wall first seen at ``t`` (at least the wall multiple x the median of
    the ``n_pooled`` USD sizes within the wall band; one that stands gets its start when matched
    with the book) or not one (-2)."""
    walls_on = iparams[P_WALLS_ON] != 0
    wall_band = fparams[P_WALL_BAND]
    counts, dist, usd, first, pooled, work = new.counts, new.dist, new.usd, new.first, new.pooled, new.work
    threshold = math.inf
    if walls_on and n_pooled > 0:
        threshold = _wall_threshold(fparams[P_MULTIPLE], n_pooled, pooled_max, pooled, work)
    for side in range(2):
        for j in range(counts[side]):
            if walls_on and dist[side, j] <= wall_band and usd[side, j] >= threshold:
                first[side, j] = t
            else:
                first[side, j] = -2


@njit(cache=True, inline="always")
def _reach(side, n_old, traded_deepest, at_or_through):  # pragma: no cover - compiled
    """Per level of ``side`` in the book (``n_old`` of them), the units traded at or through its price
    since: the sum of ``traded_deepest`` from it to the deepest."""
    reached = 0
    for i in range(n_old - 1, -1, -1):
        reached += traded_deepest[side, i]
        at_or_through[i] = reached


@njit(cache=True, inline="always")
def _gone_wall(side, p, drop, reached, mid, fparams, in_view, deepest):  # pragma: no cover - compiled
    """Where a wall of the book at ``p`` that is not one any more, ``drop`` units smaller, counts:
    filled (2 + side) when the trades at or through its price (``reached``) make the fill ratio of
    the drop, pulled (side) when it went while in view (the snapshot lists the side, and ``p`` is
    within the wall band and not beyond its ``deepest`` level), else nowhere (-1)."""
    counter = -1
    if drop > 0:
        if reached >= fparams[P_FILL] * drop:
            counter = 2 + side
        elif in_view and _distance(p, mid, side) <= fparams[P_WALL_BAND] and _not_beyond(p, deepest, side):
            counter = side
    return counter


@njit(cache=True, inline="always")
def _match_levels(t, mid, old_mid, fparams, iparams, new, book, row):  # pragma: no cover - compiled
    """The book's levels against the new snapshot's, per side both nearest first (one pass: the first
    new level at or beyond each old one): a wall that stands keeps its start, one gone counts as
    filled or pulled; a level traded at its price (at least the trade fraction of it, within the
    iceberg band of ``old_mid``) and shown again (at least the refill fraction) is a refill, listed
    in ``new.refills``. Returns the refills listed."""
    walls_on = iparams[P_WALLS_ON] != 0
    ice_on = iparams[P_ICE_ON] != 0
    prices, units, counts, first_seen = book.prices, book.units, book.counts, book.first_seen
    traded_at, traded_deepest = book.traded_at, book.traded_deepest
    new_prices, new_units, new_counts, new_first = new.prices, new.units, new.counts, new.first
    listed, deepest, at_or_through = new.listed, new.deepest, new.at_or_through
    refills, n_refills = new.refills, new.n_refills
    for side in range(2):
        _reach(side, counts[side], traded_deepest, at_or_through)
        n_new = new_counts[side]
        n_refills[side] = 0
        jj = 0
        for i in range(counts[side]):
            p = prices[side, i]
            while jj < n_new and _nearer(new_prices[side, jj], p, side):
                jj += 1
            j = jj if jj < n_new and new_prices[side, jj] == p else -1
            after = new_units[side, j] if j >= 0 else 0
            if walls_on and first_seen[side, i] >= 0:
                if j >= 0 and new_first[side, j] != -2:
                    new_first[side, j] = first_seen[side, i]  # the wall stands
                else:
                    counter = _gone_wall(
                        side, p, units[side, i] - after, at_or_through[i], mid, fparams, listed[side] > 0, deepest[side]
                    )
                    if counter >= 0:
                        row[counter] += 1
            # (the cheap tests first: most levels were not traded at their price)
            if ice_on and j >= 0 and traded_at[side, i] > 0 and _distance(p, old_mid, side) <= fparams[P_ICE_BAND]:
                before = units[side, i]
                if traded_at[side, i] >= fparams[P_TRADE] * before and after >= fparams[P_REFILL] * before:
                    refills[side, n_refills[side]] = i
                    n_refills[side] += 1
    return n_refills[0] + n_refills[1]


@njit(cache=True)
def _record_refills(t, iparams, new, book, icebergs, row):  # pragma: no cover - compiled
    """The refills ``_match_levels`` listed, in the book's order, through ``_iceberg`` (in USD of what
    traded at the level)."""
    for side in range(2):
        for r in range(new.n_refills[side]):
            i = new.refills[side, r]
            p = book.prices[side, i]
            usd = np.int64(np.rint(book.traded_at[side, i] * p / QTY_SCALE * NOTIONAL_SCALE))
            _iceberg(t, side, p, usd, iparams[P_MIN_REFILLS], iparams[P_ICE_WINDOW], icebergs, row)


@njit(cache=True, inline="always")
def _take_snapshot(new, book):  # pragma: no cover - compiled
    """The snapshot in the band becomes the book (its walls' starts ``first_seen``, no trades since);
    entries past both its levels and the book's were empty already."""
    prices, units, counts, first_seen = book.prices, book.units, book.counts, book.first_seen
    traded_at, traded_deepest = book.traded_at, book.traded_deepest
    new_prices, new_units, new_counts, new_first = new.prices, new.units, new.counts, new.first
    for side in range(2):
        n_new = new_counts[side]
        used = max(counts[side], n_new)
        counts[side] = n_new
        for j in range(used):
            traded_at[side, j] = 0
            traded_deepest[side, j] = 0
            if j < n_new:
                prices[side, j] = new_prices[side, j]
                units[side, j] = new_units[side, j]
                first_seen[side, j] = new_first[side, j] if new_first[side, j] >= 0 else -1
            else:
                prices[side, j] = math.nan
                units[side, j] = 0
                first_seen[side, j] = -1


@njit(cache=True, inline="always")
def _nearest_walls(t, mid, book, current):  # pragma: no cover - compiled
    """``current`` from the book: per side its nearest wall's distance (bps), USD size and first seen
    (NaN: none), then the snapshot time ``t``."""
    prices, units, counts, first_seen = book.prices, book.units, book.counts, book.first_seen
    for side in range(2):
        current[3 * side] = math.nan
        current[3 * side + 1] = math.nan
        current[3 * side + 2] = math.nan
        for j in range(counts[side]):
            if first_seen[side, j] >= 0:
                current[3 * side] = _distance(prices[side, j], mid, side)
                current[3 * side + 1] = prices[side, j] * units[side, j] / QTY_SCALE
                current[3 * side + 2] = first_seen[side, j]
                break
    current[6] = t


@njit(cache=True, inline="always")
def _sum_per_second(t, row, out_buckets, out_rows, n_groups):  # pragma: no cover - compiled
    """The counts of the snapshot at ``t`` (``row``) added to its second's, if any (the snapshots
    come in time order: equal seconds adjoin); returns the seconds written."""
    counted = False
    for c in range(row.shape[0]):
        if row[c] != 0:
            counted = True
    if counted:
        bucket = t // SECOND_MS
        if n_groups == 0 or out_buckets[n_groups - 1] != bucket:
            out_buckets[n_groups] = bucket
            for c in range(row.shape[0]):
                out_rows[n_groups, c] = 0
            n_groups += 1
        for c in range(row.shape[0]):
            out_rows[n_groups - 1, c] += row[c]
    return n_groups


@njit(cache=True, inline="always")
def _trades_through(t_times, lo, t):  # pragma: no cover - compiled
    """The end of the trades from ``lo`` at or before ``t``."""
    hi = lo
    while hi < t_times.shape[0] and t_times[hi] <= t:
        hi += 1
    return hi


@njit(cache=True, _nrt=False)  # type: ignore[call-overload]  # numba's runtime switch, not in its stubs
def _apply_snapshots(
    book_times, levels, trades, fparams, iparams, ints, floats, book, icebergs, new, row, current, out
):  # pragma: no cover - compiled
    """``book_update``'s loop: ``levels`` = its ``lv_*``, ``trades`` = its ``t_*``, ``out`` = its
    ``out_*``; each snapshot in turn: the trades before it counted against the book, its levels
    read and filtered to the band, its walls marked, compared with the book, then the book."""
    lv_prices, lv_qtys, lv_start, lv_qstart, lv_count = levels
    t_times, t_prices, t_units, t_sells = trades
    out_keys, out_values, out_buckets, out_rows = out
    prices, counts, traded_at, traded_deepest = book.prices, book.counts, book.traded_at, book.traded_deepest
    n_out = 0
    n_groups = 0
    ti = 0
    n_trades = t_times.shape[0]
    for k in range(book_times.shape[0]):
        t = book_times[k]
        tj = _trades_through(t_times, ti, t)
        if tj > ti and ints[I_BOOK_TIME] >= 0:
            _add_trades(t_prices, t_units, t_sells, ti, tj, prices, counts, traded_at, traded_deepest)
        ti = tj
        if t < ints[I_BOOK_TIME]:
            continue  # older than the snapshot in use
        if not _read_snapshot(k, lv_prices, lv_qtys, lv_start, lv_qstart, lv_count, new):
            continue  # no levels: nothing to compare
        mid = _mid(new)
        n_pooled, pooled_max = _filter_to_band(mid, fparams, new)
        _mark_walls(t, n_pooled, pooled_max, fparams, iparams, new)
        row[:] = 0
        if ints[I_BOOK_TIME] >= 0 and _match_levels(t, mid, floats[F_MID], fparams, iparams, new, book, row) > 0:
            _record_refills(t, iparams, new, book, icebergs, row)
        # the new snapshot becomes the reference
        _take_snapshot(new, book)
        _nearest_walls(t, mid, book, current)
        ints[I_BOOK_TIME] = t
        floats[F_MID] = mid
        out_keys[n_out] = t
        for c in range(7):
            out_values[n_out, c] = current[c]
        n_out += 1
        n_groups = _sum_per_second(t, row, out_buckets, out_rows, n_groups)
    if ti < n_trades and ints[I_BOOK_TIME] >= 0:
        _add_trades(t_prices, t_units, t_sells, ti, n_trades, prices, counts, traded_at, traded_deepest)
    return n_out, n_groups


@njit(cache=True)
def book_update(
    book_times,
    lv_prices,
    lv_qtys,
    lv_start,
    lv_qstart,
    lv_count,
    t_times,
    t_prices,
    t_units,
    t_sells,
    fparams,
    iparams,
    ints,
    floats,
    prices,
    units,
    counts,
    first_seen,
    traded_at,
    traded_deepest,
    ice_prices,
    ice_last,
    ice_times,
    ice_usd,
    ice_counted,
    current,
    out_keys,
    out_values,
    out_buckets,
    out_rows,
):  # pragma: no cover - compiled
    """Apply snapshots (``lv_*``: their levels flattened: a side's prices from ``lv_prices[lv_start]``,
    quantities from ``lv_qtys[lv_qstart]``, ``lv_count`` of them, -1: none) and trades merged by
    time (a trade at a snapshot's time first); one log entry (time, ``current``) per snapshot used,
    and their counts summed per second (``out_buckets``: second, ``out_rows``: counts; seconds
    without counts left out). Returns (log entries, seconds) written."""
    book = Book(prices, units, counts, first_seen, traded_at, traded_deepest)
    icebergs = Icebergs(ice_prices, ice_last, ice_times, ice_usd, ice_counted)
    new = _incoming(prices.shape[1], lv_count)
    row = np.zeros(out_rows.shape[1], dtype=np.int64)  # the counts of the snapshot in hand
    return _apply_snapshots(
        book_times,
        (lv_prices, lv_qtys, lv_start, lv_qstart, lv_count),
        (t_times, t_prices, t_units, t_sells),
        fparams,
        iparams,
        ints,
        floats,
        book,
        icebergs,
        new,
        row,
        current,
        (out_keys, out_values, out_buckets, out_rows),
    )


@njit(cache=True)
def book_values(times, walls, ring_values, ring_head, iparams_read, out):  # pragma: no cover - compiled
    """``BookDetectors.values_many`` in one call (a dozen numpy calls per segment otherwise, most of
    the book parts' cost after the loop above): ``out`` (14 fields in ``BOOK_FIELDS`` order x times)
    from the walls each time saw (``walls``: rows x 7, as ``current``) and the count ring's sums over
    ``[t - window, t)`` (whole seconds; ``iparams_read`` = (walls on, icebergs on, wall window s,
    iceberg window s, wall max age ms)). NaN where a part is off, a wall is stale or absent, or no
    snapshot was seen yet."""
    n = times.shape[0]
    walls_on = iparams_read[0] != 0
    ice_on = iparams_read[1] != 0
    wall_s = iparams_read[2]
    ice_s = iparams_read[3]
    max_age = iparams_read[4]
    starts = np.empty(2 * n, dtype=np.int64)
    ends = np.empty(2 * n, dtype=np.int64)
    for i in range(n):
        hi = (times[i] - 1) // SECOND_MS + 1
        starts[i] = hi - wall_s
        starts[n + i] = hi - ice_s
        ends[i] = hi
        ends[n + i] = hi
    sums = ring_window_sums(ring_values, ring_head, starts, ends)
    for i in range(n):
        t = times[i]
        seen = not math.isnan(walls[i, 6])
        fresh = seen and t - walls[i, 6] <= max_age
        for side in range(2):
            base = 3 * side
            if walls_on and fresh:
                out[base, i] = walls[i, base]
                out[base + 1, i] = walls[i, base + 1]
                since = walls[i, base + 2]
                out[base + 2, i] = (t - since) / SECOND_MS  # NaN (no wall) stays NaN
            else:
                out[base, i] = math.nan
                out[base + 1, i] = math.nan
                out[base + 2, i] = math.nan
            if walls_on and seen:
                out[6 + side, i] = sums[i, side]  # pulled
                out[8 + side, i] = sums[i, 2 + side]  # filled
            else:
                out[6 + side, i] = math.nan
                out[8 + side, i] = math.nan
            if ice_on and seen:
                out[10 + side, i] = sums[n + i, 4 + side]
                out[12 + side, i] = sums[n + i, 6 + side] / NOTIONAL_SCALE
            else:
                out[10 + side, i] = math.nan
                out[12 + side, i] = math.nan
