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
  reached is this one: a level's at-or-through total is the sum from it to the deepest);
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

I_BOOK_TIME = 0
N_INTS = 1
F_MID = 0
N_FLOATS = 1
P_MULTIPLE, P_WALL_BAND, P_FILL, P_ICE_BAND, P_TRADE, P_REFILL, P_BAND = range(7)
P_WALLS_ON, P_ICE_ON, P_MIN_REFILLS, P_ICE_WINDOW = range(4)
QTY_SCALE = 100_000_000
NOTIONAL_SCALE = 1_000_000


@njit(cache=True)
def _add_trade(price, units, sell, prices, counts, traded_at, traded_deepest):  # pragma: no cover - compiled
    """A taker sell reaches the bid levels at or above its price, a buy the ask levels at or below."""
    side = 0 if sell else 1
    deepest = -1
    for i in range(counts[side]):
        p = prices[side, i]
        if (side == 0 and p >= price) or (side == 1 and p <= price):
            deepest = i
        else:
            break
    if deepest >= 0:
        traded_deepest[side, deepest] += units
        if prices[side, deepest] == price:
            traded_at[side, deepest] += units


@njit(cache=True)
def add_trades(t_prices, t_units, t_sells, prices, counts, traded_at, traded_deepest):  # pragma: no cover
    """Trades without a snapshot among them: only counted against the latest snapshot's levels (a
    call with a few arguments: the live worker's segments mostly bring trades alone)."""
    for i in range(t_prices.shape[0]):
        _add_trade(t_prices[i], t_units[i], t_sells[i], prices, counts, traded_at, traded_deepest)


@njit(cache=True)
def _distance(price, mid, side):  # pragma: no cover - compiled
    return ((mid - price) if side == 0 else (price - mid)) / mid * 1e4


@njit(cache=True)
def _iceberg(t, side, price, usd, min_refills, window, ice_prices, ice_last, ice_times, ice_usd, ice_counted,
             row):  # pragma: no cover - compiled
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
def book_update(book_times, lv_prices, lv_qtys, lv_start, lv_count, t_times, t_prices, t_units, t_sells, fparams,
                iparams, ints, floats, prices, units, counts, first_seen, traded_at, traded_deepest, ice_prices,
                ice_last, ice_times, ice_usd, ice_counted, current, out_keys, out_values,
                out_rows):  # pragma: no cover - compiled
    """Apply snapshots (``lv_*``: their levels flattened, ``lv_count`` -1: none) and trades merged by
    time (a trade at a snapshot's time first); one log entry (time, ``current``, counts row) per
    snapshot used. Returns the entries written."""
    n_levels = prices.shape[1]
    walls_on = iparams[P_WALLS_ON] != 0
    ice_on = iparams[P_ICE_ON] != 0
    n_out = 0
    ti = 0
    n_trades = t_times.shape[0]
    new_prices = np.empty((2, n_levels))
    new_units = np.zeros((2, n_levels), dtype=np.int64)
    new_counts = np.zeros(2, dtype=np.int64)
    new_first = np.empty((2, n_levels), dtype=np.int64)
    listed = np.zeros(2, dtype=np.int64)
    deepest = np.empty(2)
    pooled = np.empty(2 * n_levels)
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
        while ti < n_trades and t_times[ti] <= t:
            if ints[I_BOOK_TIME] >= 0:
                _add_trade(t_prices[ti], t_units[ti], t_sells[ti], prices, counts, traded_at, traded_deepest)
            ti += 1
        if t < ints[I_BOOK_TIME]:
            continue  # older than the snapshot in use
        # the valid levels of each side, nearest first
        for side in range(2):
            listed[side] = 0
            c = lv_count[k, side]
            if c <= 0:
                continue
            s0 = lv_start[k, side]
            m = 0
            for i in range(c):
                p = lv_prices[s0 + i]
                q = lv_qtys[s0 + i]
                if p > 0 and q > 0 and math.isfinite(p) and math.isfinite(q):
                    u = np.int64(np.rint(q * QTY_SCALE))
                    if u > 0:
                        tmp_p[m] = p
                        tmp_u[m] = u
                        m += 1
            if m == 0:
                continue
            for i in range(m):
                keys[i] = -tmp_p[i] if side == 0 else tmp_p[i]
            order = np.argsort(keys[:m], kind="mergesort")
            kept = min(m, n_levels)
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
        for side in range(2):
            n = 0
            for i in range(listed[side]):
                if _distance(side_p[side, i], mid, side) > fparams[P_BAND]:
                    break
                new_prices[side, i] = side_p[side, i]
                new_units[side, i] = side_u[side, i]
                new_first[side, i] = -1
                if _distance(side_p[side, i], mid, side) <= fparams[P_WALL_BAND]:
                    pooled[n_pooled] = side_p[side, i] * side_u[side, i] / QTY_SCALE
                    n_pooled += 1
                n += 1
            new_counts[side] = n
        threshold = math.inf
        if walls_on and n_pooled > 0:
            threshold = fparams[P_MULTIPLE] * np.median(pooled[:n_pooled])
        row = out_rows[n_out]
        row[:] = 0
        had = ints[I_BOOK_TIME] >= 0
        for side in range(2):
            n_new = new_counts[side]
            n_old = counts[side]
            # is each new level a wall?
            for j in range(n_new):
                p = new_prices[side, j]
                if walls_on and _distance(p, mid, side) <= fparams[P_WALL_BAND] and \
                        p * new_units[side, j] / QTY_SCALE >= threshold:
                    new_first[side, j] = t  # a wall; continued ones get their start below
                else:
                    new_first[side, j] = -2  # not a wall
            if had:
                reached = 0
                for i in range(n_old - 1, -1, -1):
                    reached += traded_deepest[side, i]
                    at_or_through[i] = reached
                for i in range(n_old):
                    p = prices[side, i]
                    j = -1
                    for jj in range(n_new):
                        if new_prices[side, jj] == p:
                            j = jj
                            break
                    if walls_on and first_seen[side, i] >= 0:
                        if j >= 0 and new_first[side, j] != -2:
                            new_first[side, j] = first_seen[side, i]  # the wall stands
                        else:
                            drop = units[side, i] - (new_units[side, j] if j >= 0 else 0)
                            if drop > 0:
                                if at_or_through[i] >= fparams[P_FILL] * drop:
                                    row[2 + side] += 1  # filled
                                elif listed[side] > 0 and _distance(p, mid, side) <= fparams[P_WALL_BAND] and (
                                        (side == 0 and p >= deepest[side]) or (side == 1 and p <= deepest[side])):
                                    row[side] += 1  # pulled: gone while in view, not traded away
                    if ice_on and j >= 0 and _distance(p, floats[F_MID], side) <= fparams[P_ICE_BAND]:
                        before = units[side, i]
                        traded = traded_at[side, i]
                        if traded > 0 and traded >= fparams[P_TRADE] * before and \
                                new_units[side, j] >= fparams[P_REFILL] * before:
                            usd = np.int64(np.rint(traded * p / QTY_SCALE * NOTIONAL_SCALE))
                            _iceberg(t, side, p, usd, iparams[P_MIN_REFILLS], iparams[P_ICE_WINDOW], ice_prices,
                                     ice_last, ice_times, ice_usd, ice_counted, row)
        # the new snapshot becomes the reference
        for side in range(2):
            current[3 * side] = math.nan
            current[3 * side + 1] = math.nan
            current[3 * side + 2] = math.nan
            counts[side] = new_counts[side]
            for j in range(n_levels):
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
    while ti < n_trades:
        if ints[I_BOOK_TIME] >= 0:
            _add_trade(t_prices[ti], t_units[ti], t_sells[ti], prices, counts, traded_at, traded_deepest)
        ti += 1
    return n_out
