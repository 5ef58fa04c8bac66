"""The feed's array work: the compiled idle run over controls, the numpy run of busy trades that stay
inside their bands, and one trade of a column batch as the executor's ``TradeTick``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from execution.domain import TradeTick

SCALAR_RUN = (
    32  # after a skipped trade, a shorter run of trades left is skipped one by one (numpy costs more than it saves)
)


def warm_up() -> None:
    """Compile (or load from numba's cache) the runner's kernel, so a timed run does not include it."""
    quiet_tick_run(np.zeros(1, dtype=np.int64), np.ones(1, dtype=bool), 0, 0, 0, math.inf)


@njit(cache=True)
def quiet_tick_run(times, ok, start, executor_ms, next_tick, quiet_to):  # pragma: no cover - compiled
    """From ``start``: the index of the first control that is not ``ok`` (not holdable, or its market not
    known) or at which a clock tick is due (its time, or the executor's if later, at or after
    ``next_tick``) at or after ``quiet_to``; the time of the last tick made before it (-1: none), each
    at least a second after the one before; and the executor time there."""
    n = len(times)
    i = start
    last_tick = -1
    while i < n:
        if not ok[i]:
            break
        t = times[i]
        now = t if t > executor_ms else executor_ms
        if now >= next_tick:
            if now >= quiet_to:
                break
            last_tick = now
            next_tick = now + 1000
        if t > executor_ms:
            executor_ms = t
        i += 1
    return i, last_tick, executor_ms


def trade_tick(batch, i: int) -> TradeTick:
    """Trade ``i`` of a column batch as the executor reads it."""
    return TradeTick(
        batch.exchange,
        batch.symbol,
        int(batch.agg_id[i]),
        float(batch.price[i]),
        float(batch.qty[i]),
        int(batch.time_ms[i]),
        "SELL" if batch.taker_sell[i] else "BUY",
    )


def skip_run(
    parts: list[tuple[str, Any, int, int]],
    times: np.ndarray,
    prices: np.ndarray,
    owner: np.ndarray,
    local: np.ndarray,
    limits: tuple[np.ndarray, np.ndarray, np.ndarray],
    pos: int,
    skipped: dict[str, tuple[Any, int]],
    next_tick: int,
) -> int:
    """From ``pos``: the trades inside their market's band and before the next tick, in windows
    growing 4x; each market's newest of them is remembered (first-seen order, as the loop would);
    returns the position of the first trade that is not such a trade."""
    low, high, until = limits
    count, width = len(times), 64
    while pos < count:
        stop = min(count, pos + width)
        o, t, p = owner[pos:stop], times[pos:stop], prices[pos:stop]
        if len(parts) == 1:
            inside = (low[0] < p) & (p < high[0]) & (t < until[0]) & (t < next_tick)
        else:
            inside = (low[o] < p) & (p < high[o]) & (t < until[o]) & (t < next_tick)
        run = len(inside) if inside.all() else int(inside.argmin())
        if run:
            if len(parts) == 1:
                seen = [(0, 0, run - 1)]
            else:
                seen = []
                for n in range(len(parts)):
                    at = np.flatnonzero(o[:run] == n)
                    if len(at):
                        seen.append((int(at[0]), n, int(at[-1])))
                seen.sort()
            for _, n, newest in seen:
                key, batch, lo, _ = parts[n]
                skipped[key] = (batch, lo + int(local[pos + newest]))
        pos += run
        if run < len(inside):
            return pos
        width *= 4
    return pos
