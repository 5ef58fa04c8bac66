"""Compiled loops of the engine core (numba): the layer points and gates of every strategy on every row.

Why numba: the scoring rules are a cascade of comparisons per row and strategy. As numpy array
operations they cost about a hundred calls per strategy whatever the number of rows, which for the
live worker (one or two evaluation times per call) was slower than the plain Python it replaced; as
Python they cost about 40 µs per row and strategy, which bounded a replay at a few thousand
evaluations per second. One compiled loop is fast at both sizes (a few µs per call, well under a
microsecond per row and strategy) and reads like the rules it implements (``scoring``'s docstring).
numba is the well-kept, widely used JIT for numeric Python (LLVM, numpy arrays in, IEEE-754 float
arithmetic as CPython's, so each number equals what the Python expression gives); ``cache=True``
keeps the machine code beside the module, so only the first start of a fresh checkout compiles
(about a second).

Layout: rows of one symbol's ``FeatureFrame`` x strategies. Strategy parameters arrive as arrays
(one row per strategy; NaN = "not set" for a gate), the symbol's per-symbol values already chosen;
layers in ``scoring.LAYER_ORDER``; ``rules`` columns: top-trader high/low, OI strong change, premium
band, funding extreme/moderate, liquidation ratio long/short, liquidation USD floor.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _direction(fast, mid):  # pragma: no cover - compiled
    """+1 when the fast and mid CVD both rise, -1 when both fall, else 0 (no direction)."""
    return 1 if (fast > 0 and mid > 0) else (-1 if (fast < 0 and mid < 0) else 0)


@njit(cache=True, inline="always")
def _direction_points(large_along, accel_along):  # pragma: no cover - compiled
    """Direction layer: resonance 30, P99 flow with the signal 20 (none 10, against 0), CVD
    acceleration with it +5."""
    p99_flow = 20.0 if large_along > 0 else (10.0 if large_along == 0 else 0.0)
    return 30.0 + p99_flow + (5.0 if accel_along > 0 else 0.0)


@njit(cache=True, inline="always")
def _crowding_points(sign, ratio, share, levels, top_high, top_low):  # pragma: no cover - compiled
    """Crowding layer, contrarian: the long/short ratio against the signal past the signal side's
    ``levels`` (one, mid, extreme) 7/10/15; the top traders' long share with it 10, between 5."""
    crowd = 0.0
    if not math.isnan(ratio):
        one, level_mid, extreme = levels
        if sign > 0:
            crowd += 15.0 if ratio < extreme else (10.0 if ratio < level_mid else (7.0 if ratio < one else 0.0))
        else:
            crowd += 15.0 if ratio > extreme else (10.0 if ratio > level_mid else (7.0 if ratio > one else 0.0))
    if not math.isnan(share):
        if sign > 0:
            aligned_high, aligned_low = share >= top_high, share <= top_low
        else:
            aligned_high, aligned_low = share <= top_low, share >= top_high
        crowd += 10.0 if aligned_high else (0.0 if aligned_low else 5.0)
    return crowd


@njit(cache=True, inline="always")
def _open_interest_points(change, strong):  # pragma: no cover - compiled
    """Environment layer: open interest up at least ``strong`` 15, up 10, else 5 (unknown 0)."""
    return 0.0 if math.isnan(change) else (15.0 if change >= strong else (10.0 if change > 0 else 5.0))


@njit(cache=True, inline="always")
def _confirmation_points(on, price, vwap, s, large_along):  # pragma: no cover - compiled
    """Confirmation layer: price on the signal's side of VWAP and large flow not against it, 15."""
    points = 0.0
    if on and not math.isnan(vwap) and not math.isnan(price):
        if (price - vwap) * s >= 0 and large_along >= 0:
            points = 15.0
    return points


@njit(cache=True, inline="always")
def _premium_points(premium, s, band):  # pragma: no cover - compiled
    """Auxiliary layer: the Coinbase premium beyond ``band`` with the signal 5, within it 2."""
    points = 0.0
    if not math.isnan(premium):
        if premium * s > band:
            points = 5.0
        elif abs(premium) <= band:
            points = 2.0
    return points


@njit(cache=True, inline="always")
def _funding_points(on, rate, s, extreme, moderate):  # pragma: no cover - compiled
    """Funding layer: an extreme rate with the crowd (the signal's side paying) -5, against it +5; a
    moderate one against it +5."""
    points = 0.0
    if on and not math.isnan(rate):
        with_crowd = rate * s > 0
        if abs(rate) >= extreme:
            points = -5.0 if with_crowd else 5.0
        elif abs(rate) >= moderate and not with_crowd:
            points = 5.0
    return points


@njit(cache=True, inline="always")
def _liquidation_points(on, sign, liq_long, liq_short, floor, ratio_long, ratio_short):  # pragma: no cover
    """Liquidations layer: at least ``floor`` USD liquidated and the short/long liquidated ratio at
    least ``ratio_long`` for a long (at most ``ratio_short`` for a short), 5."""
    points = 0.0
    if on:
        total_usd = liq_long + liq_short
        if not (total_usd <= 0 or total_usd < floor):
            ratio = liq_short / liq_long if liq_long > 0 else math.inf
            if (sign > 0 and ratio >= ratio_long) or (sign < 0 and ratio <= ratio_short):
                points = 5.0
    return points


@njit(cache=True, inline="always")
def _vetoes(value, s, threshold, veto_missing):  # pragma: no cover - compiled
    """A flow gate (set: ``threshold`` not NaN) vetoes a value against the signal beyond it, and a
    missing one when missing inputs veto."""
    vetoed = False
    if not math.isnan(threshold):
        vetoed = bool(veto_missing) if math.isnan(value) else value * s < -threshold
    return vetoed


@njit(cache=True, inline="always")
def _gate(s, veto_missing, atr, obi, spot_perp, whale, gates_k):  # pragma: no cover - compiled
    """The first gate that vetoes: 1 min ATR ratio, 2 OBI, 3 spot-perp divergence, 4 whale flow; 0
    none. ``gates_k``: their thresholds (NaN: not set)."""
    min_atr, max_obi, max_divergence, max_whale = gates_k
    gate = 0
    if not math.isnan(min_atr) and ((math.isnan(atr) and veto_missing) or (not math.isnan(atr) and atr < min_atr)):
        gate = 1
    elif _vetoes(obi, s, max_obi, veto_missing):
        gate = 2
    elif _vetoes(spot_perp, s, max_divergence, veto_missing):
        gate = 3
    elif _vetoes(whale, s, max_whale, veto_missing):
        gate = 4
    return gate


@njit(cache=True)
def score_rows(
    fast,
    mid,
    accel,
    large_net,
    ls_ratio,
    top_share,
    oi_change,
    vwap,
    price,
    premium,
    funding,
    liq_long,
    liq_short,
    atr_ratio,
    obi,
    spot_perp,
    whale,
    weights,
    raw_max,
    ls_long,
    ls_short,
    rules,
    gates,
    veto_missing,
    sign_out,
    layers_out,
    total_out,
    gate_out,
):  # pragma: no cover - compiled
    """Per strategy ``k`` and row ``i``: the direction (``sign_out``), each layer's points (its raw
    points x weight / ``raw_max``, 0 for a layer weighted 0), their sum and the first gate that
    vetoes (``gate_out``, 0 none); a row without direction scores 0 with no gate."""
    n_strategies, n = fast.shape
    raw = np.zeros(7)
    for k in range(n_strategies):
        top_high, top_low, oi_strong = rules[k, 0], rules[k, 1], rules[k, 2]
        band, f_extreme, f_moderate = rules[k, 3], rules[k, 4], rules[k, 5]
        liq_ratio_long, liq_ratio_short, liq_floor = rules[k, 6], rules[k, 7], rules[k, 8]
        long_levels = (ls_long[k, 0], ls_long[k, 1], ls_long[k, 2])  # one, mid, low
        short_levels = (ls_short[k, 0], ls_short[k, 1], ls_short[k, 2])  # one, mid, high
        gates_k = (gates[k, 0], gates[k, 1], gates[k, 2], gates[k, 3])
        for i in range(n):
            sign = _direction(fast[k, i], mid[k, i])
            sign_out[k, i] = sign
            gate_out[k, i] = 0
            if sign == 0:  # no direction: every layer 0, no gate
                for layer in range(7):
                    layers_out[k, layer, i] = 0.0
                total_out[k, i] = 0.0
                continue
            s = float(sign)
            levels = long_levels if sign > 0 else short_levels
            raw[0] = _direction_points(large_net[i] * s, accel[k, i] * s)
            raw[1] = _crowding_points(sign, ls_ratio[i], top_share[i], levels, top_high, top_low)
            raw[2] = _open_interest_points(oi_change[i], oi_strong)
            raw[3] = _confirmation_points(weights[k, 3] > 0, price[i], vwap[i], s, large_net[i] * s)
            raw[4] = _premium_points(premium[i], s, band)
            raw[5] = _funding_points(weights[k, 5] > 0, funding[i], s, f_extreme, f_moderate)
            raw[6] = _liquidation_points(
                weights[k, 6] > 0, sign, liq_long[i], liq_short[i], liq_floor, liq_ratio_long, liq_ratio_short
            )
            total = 0.0
            for layer in range(7):
                w = weights[k, layer]
                points = w * raw[layer] / raw_max[layer] if w > 0 else 0.0
                layers_out[k, layer, i] = points
                if w > 0:
                    total += points
            total_out[k, i] = total
            gate_out[k, i] = _gate(s, veto_missing[k], atr_ratio[i], obi[i], spot_perp[i], whale[i], gates_k)


# ------------------------------------------------------------------------------------------------
# trade-size quantiles (see ``quantiles``): the hourly histogram window and the per-minute P95/P99
# ------------------------------------------------------------------------------------------------
@njit(cache=True)
def bin_midpoint(index, sub_buckets, min_exponent):  # pragma: no cover - compiled
    exponent, sub = index // sub_buckets, index % sub_buckets
    return math.ldexp(1.0 + (sub + 0.5) / sub_buckets, exponent + min_exponent)


@njit(cache=True)
def window_quantiles(rows, total, ids, hour, window_hours, qs, sub_buckets, min_exponent, out):  # pragma: no cover
    """The ``qs`` quantiles (numpy ``method="lower"``: rank floor((n-1)q), as bin midpoints) of the
    histogram window ending in ``hour`` into ``out``; returns n (0: no value, ``out`` untouched).
    ``qs`` ascending."""
    n_bins = total.shape[0]
    counts = total.copy()
    for slot in range(ids.shape[0]):
        if ids[slot] >= 0 and ids[slot] < hour - window_hours:  # an hour that left the window
            for b in range(n_bins):
                counts[b] -= rows[slot, b]
    n = 0
    for b in range(n_bins):
        n += counts[b]
    if n == 0:
        return 0
    k = 0
    rank = math.floor((n - 1) * qs[0])
    cumulative = 0
    for b in range(n_bins):
        cumulative += counts[b]
        while k < qs.shape[0] and cumulative > rank:
            out[k] = bin_midpoint(b, sub_buckets, min_exponent)
            k += 1
            if k < qs.shape[0]:
                rank = math.floor((n - 1) * qs[k])
        if k == qs.shape[0]:
            break
    return n


@njit(cache=True)
def _thresholds(
    rows, total, ids, hour, window_hours, floors, min_samples, sub_buckets, min_exponent, out
):  # pragma: no cover - compiled
    """P95/P99 at ``hour`` with the floors (``SizeThresholds.at``) into out = (p95, p99, n)."""
    qs = np.array([0.95, 0.99])
    values = np.zeros(2)
    n = window_quantiles(rows, total, ids, hour, window_hours, qs, sub_buckets, min_exponent, values)
    out[2] = n
    if n < min_samples or n == 0:
        out[0], out[1] = floors[0], floors[1]
    else:
        out[0], out[1] = max(values[0], floors[0]), max(values[1], floors[1])


@njit(cache=True)
def thresholds_at(
    rows, total, ids, hour, window_hours, floors, min_samples, sub_buckets, min_exponent
):  # pragma: no cover - compiled
    out = np.zeros(3)
    _thresholds(rows, total, ids, hour, window_hours, floors, min_samples, sub_buckets, min_exponent, out)
    return out


@njit(cache=True)
def apply_minutes(
    qtys,
    bins,
    starts,
    minutes,
    rows,
    total,
    ids,
    head,
    window_hours,
    floors,
    min_samples,
    sub_buckets,
    min_exponent,
    state,
    wanted,
    wanted_out,
    minute_out,
    large,
):  # pragma: no cover
    """The per-minute loop of ``SizeThresholds.large_trades`` for trades grouped by minute (``starts``):
    P95/P99 frozen at each new minute from the trades before it, "large" = qty above that P99, then
    the minute's sizes counted into its hour. ``state`` = [threshold minute, p95, p99, samples] is
    updated; ``minute_out[g]`` gets the thresholds computed for group g (NaN when the minute was
    already frozen); ``wanted`` minutes (ascending) get theirs from the histogram as it is just
    before the first trade minute after them (``wanted_out``, NaN rows for those left for later).
    Returns the histogram's new head hour."""
    n_groups = starts.shape[0]
    n = qtys.shape[0]
    n_slots = ids.shape[0]
    w = 0
    tmp = np.zeros(3)
    for g in range(n_groups):
        start = starts[g]
        end = starts[g + 1] if g + 1 < n_groups else n
        minute = minutes[g]
        hour_of_minute = (minute * 60_000) // 3_600_000
        if minute != int(state[0]):
            while w < wanted.shape[0] and wanted[w] < minute:
                if wanted[w] == int(state[0]):
                    wanted_out[w, 0], wanted_out[w, 1], wanted_out[w, 2] = state[1], state[2], state[3]
                else:
                    _thresholds(
                        rows,
                        total,
                        ids,
                        (wanted[w] * 60_000) // 3_600_000,
                        window_hours,
                        floors,
                        min_samples,
                        sub_buckets,
                        min_exponent,
                        tmp,
                    )
                    wanted_out[w, 0], wanted_out[w, 1], wanted_out[w, 2] = tmp[0], tmp[1], tmp[2]
                w += 1
            _thresholds(
                rows, total, ids, hour_of_minute, window_hours, floors, min_samples, sub_buckets, min_exponent, tmp
            )
            state[0], state[1], state[2], state[3] = minute, tmp[0], tmp[1], tmp[2]
            minute_out[g, 0], minute_out[g, 1], minute_out[g, 2] = tmp[0], tmp[1], tmp[2]
        p99 = state[2]
        for i in range(start, end):
            large[i] = qtys[i] > p99
        # the minute's sizes into its hour's histogram (``HourlyQuantileWindow.add``)
        if hour_of_minute <= head - n_slots:
            continue  # older than the window
        slot = hour_of_minute % n_slots
        if ids[slot] != hour_of_minute:
            for b in range(total.shape[0]):
                total[b] -= rows[slot, b]
                rows[slot, b] = 0
            ids[slot] = hour_of_minute
        for i in range(start, end):
            rows[slot, bins[i]] += 1
            total[bins[i]] += 1
        if hour_of_minute > head:
            head = hour_of_minute
    return head


# ------------------------------------------------------------------------------------------------
# window sums over a bucket ring (see ``ring``)
# ------------------------------------------------------------------------------------------------
@njit(cache=True)
def ring_window_sums(values, head, starts, ends):  # pragma: no cover - compiled
    """Sums of every field over buckets ``[starts[k], ends[k])`` of a ring (``values``: fields x slots,
    bucket b in slot b % slots, holding buckets head - slots + 1 .. head; others read as 0). One
    prefix sum over the span the windows cover, then two lookups per window."""
    n_fields, n_slots = values.shape
    out = np.zeros((starts.shape[0], n_fields), dtype=np.int64)
    if starts.shape[0] == 0:
        return out
    lo = min(starts.min(), ends.min())
    hi = max(starts.max(), ends.max())
    first = max(lo, head - n_slots + 1)
    last = min(hi - 1, head)
    prefix = np.zeros((hi - lo + 1, n_fields), dtype=np.int64)
    for b in range(lo, hi):
        row = b - lo
        if first <= b <= last:
            slot = b % n_slots
            for f in range(n_fields):
                prefix[row + 1, f] = prefix[row, f] + values[f, slot]
        else:
            for f in range(n_fields):
                prefix[row + 1, f] = prefix[row, f]
    for k in range(starts.shape[0]):
        for f in range(n_fields):
            out[k, f] = prefix[ends[k] - lo, f] - prefix[starts[k] - lo, f]
    return out


# ------------------------------------------------------------------------------------------------
# cooldown and flips (see ``decision``)
# ------------------------------------------------------------------------------------------------
NONE_TIME = -(2**62)  # "never fired"


@njit(cache=True, inline="always")
def cooling(now, sign, state, cooldown_ms):  # pragma: no cover - compiled
    """Is a ``sign`` row at ``now`` within ``cooldown_ms`` of the same direction's last signal (``state``)?"""
    last = state[0] if sign > 0 else state[1]
    return last != NONE_TIME and now - last < cooldown_ms


@njit(cache=True, inline="always")
def fire(now, sign, score, state, flip_threshold, timeout_ms):  # pragma: no cover - compiled
    """A row fires: update ``state``; a flip when its score reaches ``flip_threshold`` and the previous
    signal on the symbol was the other direction at most ``timeout_ms`` earlier."""
    flip = score >= flip_threshold and state[2] != 0 and state[2] != sign and now - state[3] <= timeout_ms
    if sign > 0:
        state[0] = now
    else:
        state[1] = now
    state[2] = sign
    state[3] = now
    return flip


@njit(cache=True)
def cooldown_rows(
    times, signs, scores, candidates, cooldown_ms, flip_threshold, timeout_ms, state, fired, flips
):  # pragma: no cover - compiled
    """The candidate rows (time order) that fire: not within ``cooldown_ms`` of the same direction's
    last signal on this symbol (``cooling``; a firing row may be a flip: ``fire``). ``state`` = [last
    LONG time, last SHORT time, previous direction (0 none), previous time] is read and updated
    (``CooldownBook``'s entries for this symbol). ``core.confidence_kernels.cooldown_model_rows`` is this loop
    with the confidence model's veto."""
    for j in range(candidates.shape[0]):
        i = candidates[j]
        if cooling(times[i], signs[i], state, cooldown_ms):
            continue
        fired[i] = True
        flips[i] = fire(times[i], signs[i], scores[i], state, flip_threshold, timeout_ms)
