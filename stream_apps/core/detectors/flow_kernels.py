"""Compiled per-trade loop of the CVD–price divergence detector (numba, as ``kernels``).

Why a compiled loop: the divergence needs, per time bar, the highest and lowest price and the highest
and lowest *cumulative* CVD reached after any trade of the bar. The cumulative CVD is a running sum
that carries from one call to the next, and a bar closes at the first trade of a later bar; as numpy
this is a cumulative sum plus per-bar reductions plus a Python loop over the closed bars. One
sequential loop does it in a few nanoseconds per trade, in the same integer operations whatever the
batching (CVD is summed in integer quantity units, so it is exact).

State layout (arrays owned by ``FlowDetectors``):

- ``ints``: open bar id (-1: none), cumulative CVD (units), the open bar's CVD high and low (units),
  bars in the ring, newest log key.
- ``floats``: the open bar's price high and low; the current divergence sign, price and CVD magnitudes
  (NaN = not available).
- rings of ``N`` = ``divergence_bars`` closed bars: bar ids, (price high, price low), (CVD high, CVD low).
  Slot of bar number ``c`` is ``c % N``.

The cumulative CVD only matters relative to the CVD of the last ``N`` bars, but it never stops
growing: a coin traded by the billion (1000PEPE) can push its net flow past int64 in 1e-8 units within
weeks, and numba's integers wrap silently. So when a bar closes with ``|CVD| > CVD_REBASE`` the
running sum and the bars that can still be a reference are shifted by the same amount (exact: integers;
deterministic: it happens at a bar close whatever the batching); bars too old to be referenced again
are zeroed.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..kernels import ring_window_sums
from ..params import SECOND_MS
from ..units import NOTIONAL_SCALE
from .kernels import log_values

D_BAR, D_CVD, D_CVD_HIGH, D_CVD_LOW, D_COUNT, D_KEY = range(6)
N_DIV_INTS = 6
DF_HIGH, DF_LOW, DF_SIGN, DF_PRICE, DF_CVD = range(5)
N_DIV_FLOATS = 5
CVD_REBASE = 1 << 60  # |cumulative CVD| beyond this (1.15e10 base units) is moved back to 0 at a bar close


@njit(cache=True)
def _close_divergence_bar(qty_scale, ints, floats, ids, prices, cvds):  # pragma: no cover - compiled
    """Compare the open bar with the closed bars of the previous ``N`` bar ids (``[k - N, k - 1]``) and
    push it into the ring. Sets the current values; returns True (the values may have changed)."""
    size = ids.shape[0]
    bar = ints[D_BAR]
    high, low = floats[DF_HIGH], floats[DF_LOW]
    cvd_high, cvd_low = ints[D_CVD_HIGH], ints[D_CVD_LOW]
    found = False
    ref_high = -math.inf
    ref_low = math.inf
    ref_cvd_high = 0
    ref_cvd_low = 0
    for c in range(max(ints[D_COUNT] - size, 0), ints[D_COUNT]):
        slot = c % size
        if ids[slot] < bar - size:
            continue
        if not found:
            ref_cvd_high = cvds[slot, 0]
            ref_cvd_low = cvds[slot, 1]
            found = True
        ref_high = max(ref_high, prices[slot, 0])
        ref_low = min(ref_low, prices[slot, 1])
        ref_cvd_high = max(ref_cvd_high, cvds[slot, 0])
        ref_cvd_low = min(ref_cvd_low, cvds[slot, 1])
    if not found:
        floats[DF_SIGN] = math.nan
        floats[DF_PRICE] = math.nan
        floats[DF_CVD] = math.nan
    else:
        bearish = high > ref_high and cvd_high <= ref_cvd_high
        bullish = low < ref_low and cvd_low >= ref_cvd_low
        if bearish and not bullish:
            floats[DF_SIGN] = -1.0
            floats[DF_PRICE] = high / ref_high - 1.0
            floats[DF_CVD] = (ref_cvd_high - cvd_high) / qty_scale
        elif bullish and not bearish:
            floats[DF_SIGN] = 1.0
            floats[DF_PRICE] = 1.0 - low / ref_low
            floats[DF_CVD] = (cvd_low - ref_cvd_low) / qty_scale
        else:
            floats[DF_SIGN] = 0.0
            floats[DF_PRICE] = 0.0
            floats[DF_CVD] = 0.0
    slot = ints[D_COUNT] % size
    ids[slot] = bar
    prices[slot, 0] = high
    prices[slot, 1] = low
    cvds[slot, 0] = cvd_high
    cvds[slot, 1] = cvd_low
    ints[D_COUNT] += 1
    ints[D_BAR] = -1
    shift = ints[D_CVD]
    if shift > CVD_REBASE or shift < -CVD_REBASE:
        ints[D_CVD] = 0
        for s in range(size):
            if ids[s] > bar - size:  # a reference of a later bar: keep it relative to the running sum
                cvds[s, 0] -= shift
                cvds[s, 1] -= shift
            else:
                cvds[s, 0] = 0
                cvds[s, 1] = 0
    return True


@njit(cache=True)
def _log(key, ints, floats, out_keys, out_values, n_out):  # pragma: no cover - compiled
    return log_values(key, ints, D_KEY, floats[DF_SIGN], floats[DF_PRICE], floats[DF_CVD], out_keys, out_values, n_out)


@njit(cache=True)
def divergence_trades(
    times, prices, units, sells, bar_ms, qty_scale, ints, floats, ids, bar_prices, bar_cvds, out_keys, out_values
):  # pragma: no cover - compiled
    """Apply trades in order (``units``: base quantity in integer units); log every bar close (key =
    the bar's end - 1: the value holds for evaluations after the bar ended). Returns entries written
    (at most one per trade)."""
    n_out = 0
    for i in range(times.shape[0]):
        bar = times[i] // bar_ms
        if ints[D_BAR] >= 0 and bar > ints[D_BAR]:
            end = (ints[D_BAR] + 1) * bar_ms - 1
            _close_divergence_bar(qty_scale, ints, floats, ids, bar_prices, bar_cvds)
            n_out = _log(end, ints, floats, out_keys, out_values, n_out)
        if sells[i]:
            ints[D_CVD] -= units[i]
        else:
            ints[D_CVD] += units[i]
        price = prices[i]
        if ints[D_BAR] < 0:
            ints[D_BAR] = bar
            floats[DF_HIGH] = price
            floats[DF_LOW] = price
            ints[D_CVD_HIGH] = ints[D_CVD]
            ints[D_CVD_LOW] = ints[D_CVD]
        else:  # a trade of the open bar (or an older one, never from the engine: counted in it)
            floats[DF_HIGH] = max(floats[DF_HIGH], price)
            floats[DF_LOW] = min(floats[DF_LOW], price)
            ints[D_CVD_HIGH] = max(ints[D_CVD_HIGH], ints[D_CVD])
            ints[D_CVD_LOW] = min(ints[D_CVD_LOW], ints[D_CVD])
    return n_out


@njit(cache=True)
def divergence_advance(
    now_ms, bar_ms, qty_scale, ints, floats, ids, bar_prices, bar_cvds, out_keys, out_values
):  # pragma: no cover - compiled
    """Close the open bar if it ended by ``now_ms``; return the entries written (0 or 1)."""
    if ints[D_BAR] < 0 or (ints[D_BAR] + 1) * bar_ms > now_ms:
        return 0
    end = (ints[D_BAR] + 1) * bar_ms - 1
    _close_divergence_bar(qty_scale, ints, floats, ids, bar_prices, bar_cvds)
    return _log(end, ints, floats, out_keys, out_values, 0)


@njit(cache=True)
def flow_values(times, divergence, oi, oi_max_age_ms, ring_values, ring_head, liq_params, out):  # pragma: no cover
    """``FlowDetectors.values_many`` in one call (a dozen numpy calls per segment and symbol
    otherwise): ``out`` (the 11 ``FLOW_FIELDS`` x times) from what each time saw (``divergence``,
    ``oi``: rows x 3) and the liquidation ring's sums over ``[t - window, t)`` in whole seconds.
    ``liq_params`` = (on, window s, cascade window s, min count (-1: none), min USD in 1e-6 (-1:
    none)); off: the liquidation fields NaN."""
    n = times.shape[0]
    for i in range(n):
        for k in range(3):
            out[k, i] = divergence[i, k]
        fresh = oi[i, 2] >= times[i] - oi_max_age_ms  # NaN data time: not fresh
        out[3, i] = oi[i, 0] if fresh else math.nan
        out[4, i] = oi[i, 1] if fresh else math.nan
    if liq_params[0] == 0:
        for k in range(5, 11):
            for i in range(n):
                out[k, i] = math.nan
        return
    starts = np.empty(2 * n, dtype=np.int64)
    ends = np.empty(2 * n, dtype=np.int64)
    for i in range(n):
        hi = (times[i] - 1) // SECOND_MS + 1
        starts[i] = hi - liq_params[1]
        starts[n + i] = hi - liq_params[2]
        ends[i] = hi
        ends[n + i] = hi
    sums = ring_window_sums(ring_values, ring_head, starts, ends)
    min_count = liq_params[3]
    min_usd = liq_params[4]
    for i in range(n):
        out[5, i] = sums[i, 0]
        out[6, i] = sums[i, 1]
        out[7, i] = sums[i, 2] / NOTIONAL_SCALE
        out[8, i] = sums[i, 3] / NOTIONAL_SCALE
        for side in range(2):
            hit = (min_count >= 0 and sums[n + i, side] >= min_count) or (
                min_usd >= 0 and sums[n + i, 2 + side] >= min_usd
            )
            out[9 + side, i] = 1.0 if hit else 0.0
