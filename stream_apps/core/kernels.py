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


@njit(cache=True)
def score_rows(fast, mid, accel, large_net, ls_ratio, top_share, oi_change, vwap, price, premium, funding,
               liq_long, liq_short, atr_ratio, obi, spot_perp, whale, weights, raw_max, ls_long, ls_short, rules,
               gates, veto_missing, sign_out, layers_out, total_out, gate_out):  # pragma: no cover - compiled
    n_strategies, n = fast.shape
    raw = np.zeros(7)
    for k in range(n_strategies):
        top_high, top_low, oi_strong = rules[k, 0], rules[k, 1], rules[k, 2]
        band, f_extreme, f_moderate = rules[k, 3], rules[k, 4], rules[k, 5]
        liq_ratio_long, liq_ratio_short, liq_floor = rules[k, 6], rules[k, 7], rules[k, 8]
        for i in range(n):
            f, m = fast[k, i], mid[k, i]
            sign = 1 if (f > 0 and m > 0) else (-1 if (f < 0 and m < 0) else 0)
            sign_out[k, i] = sign
            gate_out[k, i] = 0
            if sign == 0:  # no direction: every layer 0, no gate
                for layer in range(7):
                    layers_out[k, layer, i] = 0.0
                total_out[k, i] = 0.0
                continue
            s = float(sign)
            # direction: resonance 30, P99 flow 20/10/0, acceleration +5
            along = large_net[i] * s
            p99_flow = 20.0 if along > 0 else (10.0 if along == 0 else 0.0)
            raw[0] = 30.0 + p99_flow + (5.0 if accel[k, i] * s > 0 else 0.0)
            # crowding, contrarian
            crowd = 0.0
            ratio = ls_ratio[i]
            if not math.isnan(ratio):
                if sign > 0:
                    one, level_mid, low = ls_long[k, 0], ls_long[k, 1], ls_long[k, 2]
                    crowd += 15.0 if ratio < low else (10.0 if ratio < level_mid else (7.0 if ratio < one else 0.0))
                else:
                    one, level_mid, high = ls_short[k, 0], ls_short[k, 1], ls_short[k, 2]
                    crowd += 15.0 if ratio > high else (10.0 if ratio > level_mid else (7.0 if ratio > one else 0.0))
            share = top_share[i]
            if not math.isnan(share):
                if sign > 0:
                    aligned_high, aligned_low = share >= top_high, share <= top_low
                else:
                    aligned_high, aligned_low = share <= top_low, share >= top_high
                crowd += 10.0 if aligned_high else (0.0 if aligned_low else 5.0)
            raw[1] = crowd
            # environment: open-interest change
            change = oi_change[i]
            raw[2] = 0.0 if math.isnan(change) else (15.0 if change >= oi_strong else (10.0 if change > 0 else 5.0))
            # confirmation: price on the signal's side of VWAP and large flow not against it
            raw[3] = 0.0
            if weights[k, 3] > 0 and not math.isnan(vwap[i]) and not math.isnan(price[i]):
                if (price[i] - vwap[i]) * s >= 0 and large_net[i] * s >= 0:
                    raw[3] = 15.0
            # auxiliary: Coinbase premium
            raw[4] = 0.0
            p = premium[i]
            if not math.isnan(p):
                if p * s > band:
                    raw[4] = 5.0
                elif abs(p) <= band:
                    raw[4] = 2.0
            # funding: with the crowd at an extreme -5, against +5
            raw[5] = 0.0
            rate = funding[i]
            if weights[k, 5] > 0 and not math.isnan(rate):
                with_crowd = rate * s > 0
                if abs(rate) >= f_extreme:
                    raw[5] = -5.0 if with_crowd else 5.0
                elif abs(rate) >= f_moderate and not with_crowd:
                    raw[5] = 5.0
            # liquidations: the short/long liquidated ratio above a USD floor
            raw[6] = 0.0
            if weights[k, 6] > 0:
                total_usd = liq_long[i] + liq_short[i]
                if not (total_usd <= 0 or total_usd < liq_floor):
                    liq_ratio = liq_short[i] / liq_long[i] if liq_long[i] > 0 else math.inf
                    if (sign > 0 and liq_ratio >= liq_ratio_long) or (sign < 0 and liq_ratio <= liq_ratio_short):
                        raw[6] = 5.0
            total = 0.0
            for layer in range(7):
                w = weights[k, layer]
                points = w * raw[layer] / raw_max[layer] if w > 0 else 0.0
                layers_out[k, layer, i] = points
                if w > 0:
                    total += points
            total_out[k, i] = total
            # gates in order: min ATR, OBI, spot-perp divergence, whale flow
            gate = 0
            threshold = gates[k, 0]
            if not math.isnan(threshold):
                value = atr_ratio[i]
                if (math.isnan(value) and veto_missing[k]) or (not math.isnan(value) and value < threshold):
                    gate = 1
            if gate == 0:
                for g in range(1, 4):
                    threshold = gates[k, g]
                    if math.isnan(threshold):
                        continue
                    value = obi[i] if g == 1 else (spot_perp[i] if g == 2 else whale[i])
                    if math.isnan(value):
                        if veto_missing[k]:
                            gate = g + 1
                            break
                        continue
                    if value * s < -threshold:
                        gate = g + 1
                        break
            gate_out[k, i] = gate
