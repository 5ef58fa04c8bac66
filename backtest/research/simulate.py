"""Research fills: the trades a configuration's signals make, from per-second price bars, fast.

Why not the executor here: the backtest runner feeds the executor's own position manager every trade
of a market with an open position, in Python; that is the model to trust for a verdict, but at a
hundred configurations over a month of four symbols it would take hours. A search only has to rank
configurations, so it uses this screen, and the chosen configuration is then confirmed on the
hold-out (and should be re-run through ``tapeflow backtest``, whose numbers are the reference).

What is the same as the executor: one position per configuration and symbol; entry at the first
trade at or after the signal (the paper broker's rule) with the levels re-anchored there
(``plan_exits`` with the signal's ATR, as ``plan_from_signal`` does); the order in which a price
is checked against the levels (``Position.on_trade``: stop, then TP1 in phase "open" — half closed,
stop to break-even — then TP2 in phase "tp1", then the timeout on trade time); a reverse signal
marked ``is_flip`` closes the open position (``signal_flip``) and opens its own; P&L in R with fees
and slippage by ``stream_apps.core.exits.pnl_r`` (the engine's exit model).

What differs (documented in the report): prices are per-second bars, replayed as four ticks
(open, the first extreme, the other extreme, close) — the first extreme is the one that came first;
level exits fill at the level (the executor fills at the next trade and books the difference as
slippage); no risk guard (daily loss stop, pauses, position limits) and no funding; a signal while a
position is open (not a flip) is not taken; positions still open at the end are left out. The timeout
is the strategy's ``exits.timeout_min``, as in the executor: the strategy's signals carry it
(``timeout_ms``) and the executor runs their positions with it, live and in ``tapeflow backtest``.
``tests/backtest/research/test_simulate.py`` drives the executor with
the paper broker on a hand-built path where both are exact and checks that entries, exit reasons and
P&L agree, and that a gap through a level differs by exactly the executor's slippage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from stream_apps.core.exits import CostModel, plan_exits, pnl_r
from stream_apps.core.strategy import StrategyConfig

from .store import SecondBars

REASONS = ("sl", "sl_be", "tp", "timeout", "signal_flip")
SL, SL_BE, TP, TIMEOUT, FLIP = range(5)


@dataclass
class Signals:
    """One configuration's signals on one symbol (time order)."""

    time_ms: np.ndarray  # int64
    sign: np.ndarray  # int8
    atr: np.ndarray
    is_flip: np.ndarray  # bool
    risk_multiplier: np.ndarray
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.time_ms)


@dataclass
class Trades:
    """Closed research trades of one configuration (any symbols), as columns."""

    symbol: np.ndarray  # object
    entry_ms: np.ndarray
    exit_ms: np.ndarray
    sign: np.ndarray
    reason: np.ndarray  # int8 index into REASONS
    pnl_r: np.ndarray  # net of fees and modelled slippage
    risk_multiplier: np.ndarray

    def __len__(self) -> int:
        return len(self.entry_ms)

    @classmethod
    def empty(cls) -> Trades:
        return cls(
            np.empty(0, dtype=object),
            *(np.empty(0, dtype=np.int64) for _ in range(2)),
            np.empty(0, dtype=np.int8),
            np.empty(0, dtype=np.int8),
            np.empty(0),
            np.empty(0),
        )

    @classmethod
    def concat(cls, parts: list[Trades]) -> Trades:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        merged = cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("symbol", "entry_ms", "exit_ms", "sign", "reason", "pnl_r", "risk_multiplier")
            )
        )
        order = np.argsort(merged.exit_ms, kind="stable")
        return cls(
            *(
                getattr(merged, f)[order]
                for f in ("symbol", "entry_ms", "exit_ms", "sign", "reason", "pnl_r", "risk_multiplier")
            )
        )

    def select(self, mask: np.ndarray) -> Trades:
        return Trades(
            *(
                getattr(self, f)[mask]
                for f in ("symbol", "entry_ms", "exit_ms", "sign", "reason", "pnl_r", "risk_multiplier")
            )
        )


_OPEN_AT_END = np.iinfo(np.int64).max


@njit(cache=True)
def _first_traded(traded, second):  # pragma: no cover - compiled
    while second < traded.shape[0] and not traded[second]:
        second += 1
    return second


@njit(cache=True)
def _flip_takes_over(
    k,
    current,
    current_exit,
    sig_time,
    sig_sign,
    sig_flip,
    first_second,
    b_open,
    b_traded,
    out_exit_ms,
    out_exit_px,
    out_reason,
):  # pragma: no cover - compiled
    """Whether signal `k`, arriving while position `current` is open, is taken: only a flip (the other
    direction, marked ``is_flip``) with a traded second after it is. The flip's market exit then closes
    `current` at that second's open, unless its own exit came first."""
    if not (sig_flip[k] and sig_sign[k] != sig_sign[current]):
        return False
    e = _first_traded(b_traded, max(sig_time[k] // 1000 - first_second, 0))
    if e >= b_open.shape[0]:
        return False
    flip_ms = (first_second + e) * 1000
    if flip_ms <= current_exit:  # the flip's market exit fills first
        out_reason[current] = FLIP
        out_exit_ms[current] = flip_ms
        out_exit_px[current] = b_open[e]
    return True


@njit(cache=True, inline="always")
def _extremes(high, low, high_first):  # pragma: no cover - compiled
    """A second's extremes in the order they traded: (first, other)."""
    if high_first:
        return high, low
    return low, high


@njit(cache=True, inline="always")
def _tick_price(tick, open_px, first_extreme, other_extreme, close_px):  # pragma: no cover - compiled
    """A second replayed as four ticks: its open, the extreme that came first, the other, its close."""
    if tick == 0:
        return open_px
    if tick == 1:
        return first_extreme
    if tick == 2:
        return other_extreme
    return close_px


@njit(cache=True)
def _follow(
    sign,
    entry,
    risk,
    tp1_r,
    tp2_r,
    timeout_ms,
    e,
    first_second,
    b_open,
    b_high,
    b_low,
    b_close,
    b_high_first,
    b_traded,
):  # pragma: no cover - compiled
    """A position entered at second `e`'s open, replayed tick by tick until it exits. Returns (reason,
    exit price, exit time ms, whether TP1 was hit); reason -1 = still open when the data ends."""
    stop = entry - sign * risk
    tp1 = entry + sign * tp1_r * risk
    tp2 = entry + sign * tp2_r * risk
    opened_ms = (first_second + e) * 1000
    phase = 0
    for sec in range(e, b_open.shape[0]):
        if not b_traded[sec]:
            continue
        first_extreme, other_extreme = _extremes(b_high[sec], b_low[sec], b_high_first[sec])
        now = (first_second + sec) * 1000
        for tick in range(1 if sec == e else 0, 4):  # the entry second's open is the entry trade itself
            px = _tick_price(tick, b_open[sec], first_extreme, other_extreme, b_close[sec])
            # Position.on_trade: stop, TP1 (open), TP2 (after TP1), then the timeout
            if sign * (px - stop) <= 0:
                return SL + phase, stop, now, phase == 1  # SL_BE once TP1 moved the stop to break-even
            if phase == 0 and sign * (px - tp1) >= 0:
                phase = 1
                stop = entry  # break-even
            elif phase == 1 and sign * (px - tp2) >= 0:
                return TP, tp2, now, True
            if now - opened_ms >= timeout_ms:
                return TIMEOUT, px, now, phase == 1
    return -1, 0.0, 0, phase == 1


@njit(cache=True)
def _simulate(
    sig_time,
    sig_sign,
    sig_atr,
    sig_flip,
    sl_mult,
    tp1_r,
    tp2_r,
    timeout_ms,
    first_second,
    b_open,
    b_high,
    b_low,
    b_close,
    b_high_first,
    b_traded,
    out_entry_s,
    out_entry_px,
    out_exit_ms,
    out_exit_px,
    out_reason,
    out_tp1,
):  # pragma: no cover - compiled
    """Per signal: entry second and price, exit time (ms of the exit's second), price, reason index
    and TP1 flag; reason -1 = not taken, or still open when the data ends."""
    n_sec = b_open.shape[0]
    current = -1  # the position last opened
    current_exit = -1  # its exit time (_OPEN_AT_END while open at the end of the data)
    for k in range(sig_time.shape[0]):
        out_reason[k] = -1
        t = sig_time[k]
        if current >= 0 and current_exit >= t:  # open at t: the exit (if any) comes after the signal
            if not _flip_takes_over(
                k,
                current,
                current_exit,
                sig_time,
                sig_sign,
                sig_flip,
                first_second,
                b_open,
                b_traded,
                out_exit_ms,
                out_exit_px,
                out_reason,
            ):
                continue
        e = _first_traded(b_traded, max(t // 1000 - first_second, 0))
        if e >= n_sec:
            continue
        entry = b_open[e]
        out_entry_s[k] = e
        out_entry_px[k] = entry
        reason, exit_px, exit_ms, out_tp1[k] = _follow(
            sig_sign[k],
            entry,
            sl_mult * sig_atr[k],
            tp1_r,
            tp2_r,
            timeout_ms,
            e,
            first_second,
            b_open,
            b_high,
            b_low,
            b_close,
            b_high_first,
            b_traded,
        )
        current = k
        if reason >= 0:
            out_reason[k] = reason
            out_exit_ms[k] = exit_ms
            out_exit_px[k] = exit_px
            current_exit = exit_ms
        else:
            current_exit = _OPEN_AT_END


def simulate(
    signals: Signals, cfg: StrategyConfig, bars: SecondBars, symbol: str, costs: CostModel = CostModel()
) -> Trades:
    """The closed research trades of ``cfg``'s signals on one symbol (see the module docstring)."""
    n = len(signals)
    if n == 0:
        return Trades.empty()
    entry_s = np.zeros(n, dtype=np.int64)
    entry_px = np.zeros(n)
    exit_ms = np.zeros(n, dtype=np.int64)
    exit_px = np.zeros(n)
    reason = np.zeros(n, dtype=np.int64)
    tp1 = np.zeros(n, dtype=np.bool_)
    x = cfg.exits
    _simulate(
        signals.time_ms,
        signals.sign.astype(np.int64),
        signals.atr,
        signals.is_flip,
        float(x.sl_atr_mult),
        float(x.tp1_r),
        float(x.tp2_r),
        int(x.timeout_min) * 60_000,
        bars.first_second,
        bars.open,
        bars.high,
        bars.low,
        bars.close,
        bars.high_first,
        bars.traded,
        entry_s,
        entry_px,
        exit_ms,
        exit_px,
        reason,
        tp1,
    )
    closed = np.flatnonzero(reason >= 0)
    pnl = np.empty(len(closed))
    for j, k in enumerate(closed.tolist()):
        direction = "LONG" if signals.sign[k] > 0 else "SHORT"
        plan = plan_exits(direction, float(entry_px[k]), float(signals.atr[k]), x)
        pnl[j] = pnl_r(plan, REASONS[reason[k]], float(exit_px[k]), bool(tp1[k]), costs)
    return Trades(
        np.full(len(closed), symbol, dtype=object),
        (bars.first_second + entry_s[closed]) * 1000,
        exit_ms[closed],
        signals.sign[closed].astype(np.int8),
        reason[closed].astype(np.int8),
        pnl,
        signals.risk_multiplier[closed],
    )
