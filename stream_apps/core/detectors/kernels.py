"""Compiled per-trade loops of the microstructure detectors (numba, the house style of ``core.kernels``).

Why numba and why a per-trade loop: VPIN fills volume buckets that a trade may overflow (its volume
is split across as many buckets as it spans), and the tick rule, the open time bar and the bucket
in progress all carry state from one trade to the next. That is a sequential recurrence, not an array
expression: as numpy it would need a cumulative sum over the whole history (unbounded, and not
incremental) or a Python loop (about a microsecond per trade). Compiled, the loop costs a few
nanoseconds per trade and carries its state in small fixed-size arrays between calls, so any cut of
the input into batches executes exactly the same floating-point operations in the same order: the
output does not depend on the batching, bit for bit. ``cache=True`` keeps the machine code beside
the module (only the first start of a fresh checkout compiles).

State layout (arrays owned by ``MicrostructureDetectors``; indices below):

- ``ints``: bar id of the open bar (-1: none), its volume in units, units in the bucket being
  filled, buckets completed, bar changes seen by the BVC sigma ring, bars in the Kyle ring, bars in
  the Amihud ring, tick-rule sign (-1, 0, +1), whether a previous bar close exists, newest log key.
- ``floats``: open bar's close price, buy base qty, sell base qty, quote volume; previous bar close;
  bucket buy and sell volume (units, fractional under BVC); last trade price (tick rule); current
  VPIN, Kyle's lambda, Amihud (NaN = not available yet).
- rings: bucket imbalances |V_buy - V_sell| (n), bar price changes for BVC's sigma (K), Kyle pairs
  (N x 2: signed volume, price change), Amihud terms (M). Slot of entry ``c`` is ``c % size``.

Windows are recomputed from their ring (two-pass mean/variance, oldest first) each time one closes a
bar or a bucket instead of being kept as running sums: a running float sum that adds and subtracts
drifts (and cancels catastrophically in the variance of signed volumes); a ring of at most a few
hundred entries read once per bar (a minute) or per bucket costs nothing next to the trades.

Log: every trade or bar close that changed a value appends (key, vpin, kyle, amihud). The key is
the time from which the new values hold: a value derived from trades up to time ``x`` is visible to
an evaluation at ``t`` iff ``key < t`` (the engine's rule: an evaluation at ``t`` sees the trades
before ``t``). A bucket completed by a trade has key = the trade's time; a bar ``[s, e)`` is
complete only at ``e`` (another trade could still come before it), so its key is ``e - 1``.
Keys never decrease (a running maximum), so a reader can ``searchsorted`` them.
"""

from __future__ import annotations

import math

from numba import njit

# ints
I_BAR, I_BAR_UNITS, I_FILL, I_BUCKETS, I_DP_COUNT, I_KYLE_COUNT, I_AMIHUD_COUNT, I_TICK_SIGN, I_HAS_PREV, I_KEY = range(
    10
)
N_INTS = 10
# floats
F_CLOSE, F_BUY, F_SELL, F_QUOTE, F_PREV_CLOSE, F_BUCKET_BUY, F_BUCKET_SELL, F_LAST_PRICE, F_VPIN, F_KYLE, F_AMIHUD = (
    range(11)
)
N_FLOATS = 11
# classification modes
from .params import AGGRESSOR, BVC  # noqa: E402 (the modes, one definition for both)

AMIHUD_SCALE = 1e6  # |return| per 1,000,000 quote currency traded
_SQRT2 = math.sqrt(2.0)


@njit(cache=True, inline="always")
def _fill_buckets(units, buy_fraction, bucket_units, n_buckets, ints, floats, imbalances):  # pragma: no cover
    """Pour ``units`` of volume, a ``buy_fraction`` of it bought, into the buckets; a bucket that
    reaches ``bucket_units`` is closed (its |buy - sell| into the ring) and the rest goes on into the
    next ones. Returns True when at least one bucket closed (VPIN recomputed)."""
    closed = False
    while units > 0:
        take = min(units, bucket_units - ints[I_FILL])
        floats[F_BUCKET_BUY] += take * buy_fraction
        floats[F_BUCKET_SELL] += take * (1.0 - buy_fraction)
        ints[I_FILL] += take
        units -= take
        if ints[I_FILL] == bucket_units:
            imbalances[ints[I_BUCKETS] % n_buckets] = abs(floats[F_BUCKET_BUY] - floats[F_BUCKET_SELL])
            ints[I_BUCKETS] += 1
            ints[I_FILL] = 0
            floats[F_BUCKET_BUY] = 0.0
            floats[F_BUCKET_SELL] = 0.0
            closed = True
    if closed and ints[I_BUCKETS] >= n_buckets:
        total = 0.0
        first = ints[I_BUCKETS] - n_buckets
        for c in range(first, ints[I_BUCKETS]):  # oldest first
            total += imbalances[c % n_buckets]
        floats[F_VPIN] = total / (n_buckets * bucket_units)
    return closed


@njit(cache=True)
def _close_bar(
    bar_units, bucket_units, n_buckets, mode, ints, floats, imbalances, changes, kyle, amihud
):  # pragma: no cover
    """Close the open bar: BVC pours its volume into the buckets (buy fraction Phi(dP / sigma), sigma
    from the previous K changes), and its (signed volume, dP) and |r| / dollar volume enter the
    Kyle and Amihud windows. The first bar only sets the reference close. Returns True when a value
    may have changed."""
    close = floats[F_CLOSE]
    if ints[I_HAS_PREV] == 0:
        ints[I_HAS_PREV] = 1
        floats[F_PREV_CLOSE] = close
        return False
    prev = floats[F_PREV_CLOSE]
    dp = close - prev
    if mode == BVC:
        k_size = changes.shape[0]
        count = min(ints[I_DP_COUNT], k_size)
        if count >= 2:
            first = ints[I_DP_COUNT] - count
            mean = 0.0
            for c in range(first, ints[I_DP_COUNT]):
                mean += changes[c % k_size]
            mean /= count
            ss = 0.0
            for c in range(first, ints[I_DP_COUNT]):
                d = changes[c % k_size] - mean
                ss += d * d
            sigma = math.sqrt(ss / (count - 1))
            if sigma > 0.0:
                fraction = 0.5 * math.erfc(-(dp / sigma) / _SQRT2)  # Phi(dP / sigma)
            elif dp > 0.0:
                fraction = 1.0  # the limit of Phi(dP / sigma) as sigma -> 0
            elif dp < 0.0:
                fraction = 0.0
            else:
                fraction = 0.5
            _fill_buckets(bar_units, fraction, bucket_units, n_buckets, ints, floats, imbalances)
        changes[ints[I_DP_COUNT] % k_size] = dp
        ints[I_DP_COUNT] += 1
    # Kyle's lambda: OLS slope of dP on signed base volume over the last N bars
    n_size = kyle.shape[0]
    slot = ints[I_KYLE_COUNT] % n_size
    kyle[slot, 0] = floats[F_BUY] - floats[F_SELL]
    kyle[slot, 1] = dp
    ints[I_KYLE_COUNT] += 1
    if ints[I_KYLE_COUNT] >= n_size:
        first = ints[I_KYLE_COUNT] - n_size
        mx = 0.0
        my = 0.0
        for c in range(first, ints[I_KYLE_COUNT]):
            mx += kyle[c % n_size, 0]
            my += kyle[c % n_size, 1]
        mx /= n_size
        my /= n_size
        sxx = 0.0
        sxy = 0.0
        for c in range(first, ints[I_KYLE_COUNT]):
            dx = kyle[c % n_size, 0] - mx
            sxx += dx * dx
            sxy += dx * (kyle[c % n_size, 1] - my)
        floats[F_KYLE] = sxy / sxx if sxx > 0.0 else math.nan
    # Amihud: mean |close / previous close - 1| / quote volume over the last M bars
    m_size = amihud.shape[0]
    amihud[ints[I_AMIHUD_COUNT] % m_size] = abs(close / prev - 1.0) / floats[F_QUOTE] * AMIHUD_SCALE
    ints[I_AMIHUD_COUNT] += 1
    if ints[I_AMIHUD_COUNT] >= m_size:
        total = 0.0
        for c in range(ints[I_AMIHUD_COUNT] - m_size, ints[I_AMIHUD_COUNT]):
            total += amihud[c % m_size]
        floats[F_AMIHUD] = total / m_size
    floats[F_PREV_CLOSE] = close
    return True


@njit(cache=True, inline="always")
def log_values(key, ints, key_slot, a, b, c, out_keys, out_values, n_out):  # pragma: no cover - compiled
    """Append ``(key, a, b, c)`` to a detector log at row ``n_out``; keys never decrease (the newest is
    kept in ``ints[key_slot]``, a running maximum). Returns the next row. Shared with ``flow_kernels``."""
    if key < ints[key_slot]:
        key = ints[key_slot]
    ints[key_slot] = key
    out_keys[n_out] = key
    out_values[n_out, 0] = a
    out_values[n_out, 1] = b
    out_values[n_out, 2] = c
    return n_out + 1


@njit(cache=True)
def _log(key, floats, ints, out_keys, out_values, n_out):  # pragma: no cover - compiled
    return log_values(key, ints, I_KEY, floats[F_VPIN], floats[F_KYLE], floats[F_AMIHUD], out_keys, out_values, n_out)


@njit(cache=True)
def _reset_bar(bar, ints, floats):  # pragma: no cover - compiled
    ints[I_BAR] = bar
    ints[I_BAR_UNITS] = 0
    floats[F_BUY] = 0.0
    floats[F_SELL] = 0.0
    floats[F_QUOTE] = 0.0


@njit(cache=True)
def apply_trades(
    times,
    prices,
    qtys,
    sells,
    units,
    bar_ms,
    bucket_units,
    mode,
    ints,
    floats,
    imbalances,
    changes,
    kyle,
    amihud,
    out_keys,
    out_values,
):  # pragma: no cover - compiled
    """Apply trades in order (``units``: each trade's VPIN volume in integer units); log every change
    into ``out_keys``/``out_values`` (room for 2 * len(times) entries: a bar close and a bucket per trade); return the entries written."""
    n_buckets = imbalances.shape[0]
    n_out = 0
    for i in range(times.shape[0]):
        t = times[i]
        price = prices[i]
        bar = t // bar_ms
        if ints[I_BAR] >= 0 and bar > ints[I_BAR]:
            if _close_bar(
                ints[I_BAR_UNITS], bucket_units, n_buckets, mode, ints, floats, imbalances, changes, kyle, amihud
            ):
                n_out = _log((ints[I_BAR] + 1) * bar_ms - 1, floats, ints, out_keys, out_values, n_out)
            _reset_bar(bar, ints, floats)
        elif ints[I_BAR] < 0:
            _reset_bar(bar, ints, floats)
        # a trade older than the open bar (never from the engine) counts in the open bar
        floats[F_CLOSE] = price
        if sells[i]:
            floats[F_SELL] += qtys[i]
        else:
            floats[F_BUY] += qtys[i]
        floats[F_QUOTE] += price * qtys[i]
        ints[I_BAR_UNITS] += units[i]
        if mode != BVC:
            if mode == AGGRESSOR:
                fraction = 0.0 if sells[i] else 1.0
            else:  # tick rule: up-tick buy, down-tick sell, zero tick keeps the last sign
                last = floats[F_LAST_PRICE]
                if not math.isnan(last):
                    if price > last:
                        ints[I_TICK_SIGN] = 1
                    elif price < last:
                        ints[I_TICK_SIGN] = -1
                floats[F_LAST_PRICE] = price
                sign = ints[I_TICK_SIGN]
                fraction = 1.0 if sign > 0 else (0.0 if sign < 0 else 0.5)  # no tick yet: unclassified, half
            volume = units[i]
            if 0 < volume < bucket_units - ints[I_FILL]:  # no bucket closes: ``_fill_buckets``'s first step, here
                floats[F_BUCKET_BUY] += volume * fraction  # (a compiled call with array arguments costs ~30
                floats[F_BUCKET_SELL] += volume * (1.0 - fraction)  # ns of reference counting, inlined or not:
                ints[I_FILL] += volume  # more than the work, on every trade)
            elif _fill_buckets(volume, fraction, bucket_units, n_buckets, ints, floats, imbalances):
                n_out = _log(t, floats, ints, out_keys, out_values, n_out)
    return n_out


@njit(cache=True)
def advance_to(
    now_ms, bar_ms, bucket_units, mode, ints, floats, imbalances, changes, kyle, amihud, out_keys, out_values
):  # pragma: no cover - compiled
    """Close the open bar if it ended by ``now_ms`` (logging any change); return the entries written."""
    if ints[I_BAR] < 0 or (ints[I_BAR] + 1) * bar_ms > now_ms:
        return 0
    n_out = 0
    if _close_bar(
        ints[I_BAR_UNITS], bucket_units, imbalances.shape[0], mode, ints, floats, imbalances, changes, kyle, amihud
    ):
        n_out = _log((ints[I_BAR] + 1) * bar_ms - 1, floats, ints, out_keys, out_values, 0)
    ints[I_BAR] = -1
    ints[I_BAR_UNITS] = 0
    floats[F_BUY] = 0.0
    floats[F_SELL] = 0.0
    floats[F_QUOTE] = 0.0
    return n_out
