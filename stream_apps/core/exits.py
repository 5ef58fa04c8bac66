"""Exit plan and realised P&L in R (DESIGN §5), one model for paper, live and backtest.

1R is the risk distance ``sl_atr_mult x ATR`` at entry; everything is in R, never in ATR multiples.
SL = entry -/+ 1R, TP1 = entry +/- tp1_r R (closes half, stop to break-even), TP2 = entry +/- tp2_r R.
Gross pnl_r by exit reason: sl -1; sl_be 0.5 tp1_r; tp 0.5 tp1_r + 0.5 tp2_r; timeout and
signal_flip (exit - entry)/R signed, and when TP1 was already hit the banked half counts
(0.5 tp1_r + 0.5 x move: the old flip ignored it). Fees and modelled slippage are then subtracted in
R: a fee rate r on a fill at price p costs r x p / R per unit of position risk, whatever the size.
"""

from __future__ import annotations

from dataclasses import dataclass

from .strategy import Exits

TAKER_FEE = 0.0005
MAKER_FEE = 0.0002
EXIT_REASONS = ("sl", "sl_be", "tp", "timeout", "signal_flip")


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """Entry, 1R and the SL/TP prices of one signal; carried in the signal record."""

    direction: str
    entry: float
    atr: float
    risk_distance: float
    sl: float
    tp1: float
    tp2: float
    tp1_r: float
    tp2_r: float
    timeout_ms: int
    risk_multiplier: float
    sl_r: float = 1.0

    @property
    def sign(self) -> int:
        return 1 if self.direction == "LONG" else -1


def plan_exits(direction: str, entry: float, atr: float, exits: Exits, risk_multiplier: float = 1.0) -> ExitPlan:
    if direction not in ("LONG", "SHORT"):
        raise ValueError(f"direction must be LONG or SHORT, got {direction!r}")
    if not (entry > 0 and atr > 0):
        raise ValueError("entry price and ATR must be positive to place exits")
    risk = exits.sl_atr_mult * atr
    sign = 1 if direction == "LONG" else -1
    return ExitPlan(
        direction=direction,
        entry=entry,
        atr=atr,
        risk_distance=risk,
        sl=entry - sign * risk,
        tp1=entry + sign * exits.tp1_r * risk,
        tp2=entry + sign * exits.tp2_r * risk,
        tp1_r=exits.tp1_r,
        tp2_r=exits.tp2_r,
        timeout_ms=exits.timeout_min * 60_000,
        risk_multiplier=risk_multiplier,
    )


@dataclass(frozen=True, slots=True)
class CostModel:
    """Fee rates per fill (fractions of notional) and slippage in basis points per fill."""

    entry_fee: float = TAKER_FEE
    tp_fee: float = TAKER_FEE
    stop_fee: float = TAKER_FEE  # SL, break-even stop, timeout and flip closes are taker
    slippage_bps: float = 0.0


def pnl_r(
    plan: ExitPlan,
    reason: str,
    exit_price: float | None = None,
    tp1_hit: bool = False,
    costs: CostModel = CostModel(),
) -> float:
    """Net P&L in R of a closed position (positive = win)."""
    R, sign = plan.risk_distance, plan.sign
    # (fraction of position, fill price, fee rate) of every closing fill
    if reason == "sl":
        if tp1_hit:
            raise ValueError("a stop after TP1 is 'sl_be'")
        gross, fills = -1.0, [(1.0, plan.sl, costs.stop_fee)]
    elif reason == "sl_be":
        gross = 0.5 * plan.tp1_r
        fills = [(0.5, plan.tp1, costs.tp_fee), (0.5, plan.entry, costs.stop_fee)]
    elif reason == "tp":
        gross = 0.5 * plan.tp1_r + 0.5 * plan.tp2_r
        fills = [(0.5, plan.tp1, costs.tp_fee), (0.5, plan.tp2, costs.tp_fee)]
    elif reason in ("timeout", "signal_flip"):
        if exit_price is None:
            raise ValueError(f"{reason} needs the exit price")
        move = sign * (exit_price - plan.entry) / R
        if tp1_hit:
            gross = 0.5 * plan.tp1_r + 0.5 * move
            fills = [(0.5, plan.tp1, costs.tp_fee), (0.5, exit_price, costs.stop_fee)]
        else:
            gross, fills = move, [(1.0, exit_price, costs.stop_fee)]
    else:
        raise ValueError(f"unknown exit reason {reason!r}; expected one of {EXIT_REASONS}")
    fees = costs.entry_fee * plan.entry + sum(part * price * rate for part, price, rate in fills)
    slippage = costs.slippage_bps / 10_000 * (plan.entry + sum(part * price for part, price, _ in fills))
    return gross - (fees + slippage) / R
