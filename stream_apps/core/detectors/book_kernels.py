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

Parameters: ``fparams`` = (wall multiple, wall band, fill ratio, iceberg band, trade fraction,
refill fraction, band kept); ``iparams`` = (walls on, icebergs on, N, iceberg window ms).
"""

from __future__ import annotations

import math

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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _iceberg(  # noqa: C901 - over the complexity limit, to be split
    t, side, price, usd, min_refills, window, ice_prices, ice_last, ice_times, ice_usd, ice_counted, row
):  # pragma: no cover - compiled
    """A refill at ``price``: count it and the refills before it not yet counted once the price has
    ``min_refills`` refills less than ``window`` apart; remember it."""
    m = ice_prices.shape[1]
    slots = ice_times.shape[2]
    e = -1
    for i in range(m):
        if ice_last[side, i] >= 0 and ice_prices[side, i] == price:
            e = i
            break
    if e < 0:
        for i in range(m):
            if ice_last[side, i] < 0:
                e = i
                break
        if e < 0:  # the price refilled longest ago makes room
            e = 0
            for i in range(1, m):
                if ice_last[side, i] < ice_last[side, e]:
                    e = i
        ice_prices[side, e] = price
        for s in range(slots):
            ice_times[side, e, s] = -1
            ice_usd[side, e, s] = 0
            ice_counted[side, e, s] = False
    recent = 0
    for s in range(slots):
        if ice_times[side, e, s] >= 0 and t - ice_times[side, e, s] < window:
            recent += 1
    counted = False
    if recent + 1 >= min_refills:
        count = 1
        total = usd
        for s in range(slots):
            if ice_times[side, e, s] >= 0 and t - ice_times[side, e, s] < window and not ice_counted[side, e, s]:
                count += 1
                total += ice_usd[side, e, s]
                ice_counted[side, e, s] = True
        row[4 + side] += count
        row[6 + side] += total
        counted = True
    slot = -1
    for s in range(slots):
        if ice_times[side, e, s] < 0:
            slot = s
            break
    if slot < 0:
        slot = 0
        for s in range(1, slots):
            if ice_times[side, e, s] < ice_times[side, e, slot]:
                slot = s
    ice_times[side, e, slot] = t
    ice_usd[side, e, slot] = usd
    ice_counted[side, e, slot] = counted
    ice_last[side, e] = t


@njit(cache=True)
def book_update(  # noqa: C901 - over the complexity limit, to be split
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
    n_levels = prices.shape[1]
    walls_on = iparams[P_WALLS_ON] != 0
    ice_on = iparams[P_ICE_ON] != 0
    n_out = 0
    n_groups = 0
    row = np.zeros(out_rows.shape[1], dtype=np.int64)  # the counts of the snapshot in hand
    ti = 0
    n_trades = t_times.shape[0]
    new_prices = np.empty((2, n_levels))
    new_units = np.zeros((2, n_levels), dtype=np.int64)
    new_counts = np.zeros(2, dtype=np.int64)
    new_first = np.empty((2, n_levels), dtype=np.int64)
    new_dist = np.empty((2, n_levels))  # distance to mid (bps) and USD size of the new levels
    new_usd = np.empty((2, n_levels))
    listed = np.zeros(2, dtype=np.int64)
    deepest = np.empty(2)
    pooled = np.empty(2 * n_levels)
    work = np.empty(2 * n_levels)
    side_p = np.empty((2, n_levels))
    side_u = np.zeros((2, n_levels), dtype=np.int64)
    widest = 0
    for k in range(book_times.shape[0]):
        widest = max(widest, lv_count[k, 0], lv_count[k, 1])
    tmp_p = np.empty(max(widest, 1))
    tmp_u = np.empty(max(widest, 1), dtype=np.int64)
    keys = np.empty(max(widest, 1))
    at_or_through = np.zeros(n_levels, dtype=np.int64)
    for k in range(book_times.shape[0]):
        t = book_times[k]
        tj = ti
        while tj < n_trades and t_times[tj] <= t:
            tj += 1
        if tj > ti and ints[I_BOOK_TIME] >= 0:
            _add_trades(t_prices, t_units, t_sells, ti, tj, prices, counts, traded_at, traded_deepest)
        ti = tj
        if t < ints[I_BOOK_TIME]:
            continue  # older than the snapshot in use
        # the valid levels of each side, nearest first
        for side in range(2):
            listed[side] = 0
            c = lv_count[k, side]
            if c <= 0:
                continue
            s0 = lv_start[k, side]
            q0 = lv_qstart[k, side]
            m = 0
            for i in range(c):
                p = lv_prices[s0 + i]
                q = lv_qtys[q0 + i]
                if p > 0 and q > 0 and math.isfinite(p) and math.isfinite(q):
                    u = np.int64(np.rint(q * QTY_SCALE))
                    if u > 0:
                        tmp_p[m] = p
                        tmp_u[m] = u
                        m += 1
            if m == 0:
                continue
            ordered = True
            for i in range(m):
                keys[i] = -tmp_p[i] if side == 0 else tmp_p[i]
                if i > 0 and keys[i] < keys[i - 1]:
                    ordered = False
            kept = min(m, n_levels)
            if ordered:  # as records list them, best first: the stable sort would keep this order
                for i in range(kept):
                    side_p[side, i] = tmp_p[i]
                    side_u[side, i] = tmp_u[i]
            else:
                order = np.argsort(keys[:m], kind="mergesort")
                for i in range(kept):
                    side_p[side, i] = tmp_p[order[i]]
                    side_u[side, i] = tmp_u[order[i]]
            listed[side] = kept
            deepest[side] = side_p[side, kept - 1]
        if listed[0] == 0 and listed[1] == 0:
            continue  # no levels: nothing to compare
        if listed[0] > 0 and listed[1] > 0:
            mid = (side_p[0, 0] + side_p[1, 0]) / 2.0
        elif listed[0] > 0:
            mid = side_p[0, 0]
        else:
            mid = side_p[1, 0]
        # the band, and the walls: at least k x the median USD size within the wall band
        n_pooled = 0
        pooled_max = -math.inf
        for side in range(2):
            n = 0
            for i in range(listed[side]):
                d = _distance(side_p[side, i], mid, side)
                if d > fparams[P_BAND]:
                    break
                new_prices[side, i] = side_p[side, i]
                new_units[side, i] = side_u[side, i]
                new_first[side, i] = -1
                new_dist[side, i] = d
                if d <= fparams[P_WALL_BAND]:
                    usd = side_p[side, i] * side_u[side, i] / QTY_SCALE
                    new_usd[side, i] = usd
                    pooled[n_pooled] = usd
                    n_pooled += 1
                    if usd > pooled_max:
                        pooled_max = usd
                n += 1
            new_counts[side] = n
        threshold = math.inf
        if walls_on and n_pooled > 0:
            # The median only matters if some level can reach k x it. The median is at least the
            # lower middle value (index ``lower`` in order), so when k x that value exceeds the
            # largest level (k x v > max for at least n - lower values), k x median > every level
            # and no level is a wall: the threshold stays infinite, the same outcome.
            lower = (n_pooled >> 1) - 1 if n_pooled & 1 == 0 else n_pooled >> 1
            above = 0
            for i in range(n_pooled):
                if fparams[P_MULTIPLE] * pooled[i] > pooled_max:
                    above += 1
            if above < n_pooled - lower:
                threshold = fparams[P_MULTIPLE] * _median(pooled, n_pooled, work)
        row[:] = 0
        had = ints[I_BOOK_TIME] >= 0
        for side in range(2):
            n_new = new_counts[side]
            n_old = counts[side]
            # is each new level a wall?
            for j in range(n_new):
                if walls_on and new_dist[side, j] <= fparams[P_WALL_BAND] and new_usd[side, j] >= threshold:
                    new_first[side, j] = t  # a wall; continued ones get their start below
                else:
                    new_first[side, j] = -2  # not a wall
            if had:
                reached = 0
                for i in range(n_old - 1, -1, -1):
                    reached += traded_deepest[side, i]
                    at_or_through[i] = reached
                jj = 0  # both lists are ordered nearest first: the first new level at or beyond p
                for i in range(n_old):
                    p = prices[side, i]
                    while jj < n_new and (
                        (side == 0 and new_prices[side, jj] > p) or (side == 1 and new_prices[side, jj] < p)
                    ):
                        jj += 1
                    j = jj if jj < n_new and new_prices[side, jj] == p else -1
                    if walls_on and first_seen[side, i] >= 0:
                        if j >= 0 and new_first[side, j] != -2:
                            new_first[side, j] = first_seen[side, i]  # the wall stands
                        else:
                            drop = units[side, i] - (new_units[side, j] if j >= 0 else 0)
                            if drop > 0:
                                if at_or_through[i] >= fparams[P_FILL] * drop:
                                    row[2 + side] += 1  # filled
                                elif (
                                    listed[side] > 0
                                    and _distance(p, mid, side) <= fparams[P_WALL_BAND]
                                    and ((side == 0 and p >= deepest[side]) or (side == 1 and p <= deepest[side]))
                                ):
                                    row[side] += 1  # pulled: gone while in view, not traded away
                    # (the cheap tests first: most levels were not traded at their price)
                    if (
                        ice_on
                        and j >= 0
                        and traded_at[side, i] > 0
                        and _distance(p, floats[F_MID], side) <= fparams[P_ICE_BAND]
                    ):
                        before = units[side, i]
                        traded = traded_at[side, i]
                        if traded >= fparams[P_TRADE] * before and new_units[side, j] >= fparams[P_REFILL] * before:
                            usd = np.int64(np.rint(traded * p / QTY_SCALE * NOTIONAL_SCALE))
                            _iceberg(
                                t,
                                side,
                                p,
                                usd,
                                iparams[P_MIN_REFILLS],
                                iparams[P_ICE_WINDOW],
                                ice_prices,
                                ice_last,
                                ice_times,
                                ice_usd,
                                ice_counted,
                                row,
                            )
        # the new snapshot becomes the reference
        for side in range(2):
            current[3 * side] = math.nan
            current[3 * side + 1] = math.nan
            current[3 * side + 2] = math.nan
            used = max(counts[side], new_counts[side])  # beyond both: already empty (NaN, 0, -1, 0)
            counts[side] = new_counts[side]
            for j in range(used):
                traded_at[side, j] = 0
                traded_deepest[side, j] = 0
                if j < new_counts[side]:
                    prices[side, j] = new_prices[side, j]
                    units[side, j] = new_units[side, j]
                    first_seen[side, j] = new_first[side, j] if new_first[side, j] >= 0 else -1
                else:
                    prices[side, j] = math.nan
                    units[side, j] = 0
                    first_seen[side, j] = -1
            for j in range(new_counts[side]):
                if first_seen[side, j] >= 0:  # the nearest wall
                    current[3 * side] = _distance(prices[side, j], mid, side)
                    current[3 * side + 1] = prices[side, j] * units[side, j] / QTY_SCALE
                    current[3 * side + 2] = first_seen[side, j]
                    break
        current[6] = t
        ints[I_BOOK_TIME] = t
        floats[F_MID] = mid
        out_keys[n_out] = t
        for c in range(7):
            out_values[n_out, c] = current[c]
        n_out += 1
        # the counts, summed per second (the snapshots used are in time order: equal seconds adjoin)
        counted = False
        for c in range(row.shape[0]):
            if row[c] != 0:
                counted = True
        if counted:
            bucket = t // SECOND_MS
            if n_groups == 0 or out_buckets[n_groups - 1] != bucket:
                out_buckets[n_groups] = bucket
                out_rows[n_groups, :] = 0
                n_groups += 1
            for c in range(row.shape[0]):
                out_rows[n_groups - 1, c] += row[c]
    if ti < n_trades and ints[I_BOOK_TIME] >= 0:
        _add_trades(t_prices, t_units, t_sells, ti, n_trades, prices, counts, traded_at, traded_deepest)
    return n_out, n_groups


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
