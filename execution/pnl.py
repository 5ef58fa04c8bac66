"""P&L of a position in R, split into gross, fees and slippage (DESIGN §5), from real or paper fills.

Gross pnl_r follows the DESIGN table, one number per exit reason, independent of fill noise:

    sl            -1 (= -sl_r)
    sl_be         0.5 tp1_r + 0.5 be_offset_r     (TP1 half banked, rest stopped at break-even [+ offset])
    tp            0.5 tp1_r + 0.5 tp2_r
    timeout, signal_flip, risk_flatten, kill_switch
                  move = (exit - entry)/R, signed by direction; after TP1: 0.5 tp1_r + 0.5 move

Costs are measured per fill and expressed in R, so the definitions hold for paper and live alike:
- fees_r = commission paid / r_usd, where r_usd = initial qty x R (a fee rate f on a fill at price p
  of a fraction w of the position costs f p w / R);
- slippage_r = how much worse each fill was than its reference price, in R: for the entry the
  reference is the market price it executed against (paper: the trade before modelled slippage;
  live: the fill itself), for TP/SL legs the level (a stop that fills beyond its level through a gap
  pays the difference here, not in gross), for market exits the market price of the exit.
- funding_r = funding paid at every funding settlement the position was open for, / r_usd: a
  settlement charges qty x mark price x rate, paid by longs when the rate is positive and by shorts
  when it is negative (received otherwise, so funding_r < 0 is income).
So net = gross - fees_r - slippage_r - funding_r equals the cash P&L of the fills and funding
divided by r_usd, which the tests check against an independent cash computation. Win rate counts
net pnl_r > 0.

This builds on `stream_apps.core.exits` (the engine's ExitPlan and its level-based `pnl_r` used by
the backtest); for fills exactly at the levels both give the same net pnl_r (tested).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from execution.domain import direction_sign

TP1_FRACTION = 0.5  # TP1 closes half (DESIGN §5); the pnl_r table above assumes it
LEVEL_REASONS = ("sl", "sl_be", "tp")
MARKET_REASONS = ("timeout", "signal_flip", "risk_flatten", "kill_switch")
EXIT_REASONS = LEVEL_REASONS + MARKET_REASONS


def price_move_r(direction: str, entry: float, price: float, risk_distance: float) -> float:
    """(price - entry)/R signed by direction: the gross R of closing the whole position at `price`."""
    return direction_sign(direction) * (price - entry) / risk_distance


def gross_pnl_r(
    reason: str,
    tp1_r: float,
    tp2_r: float,
    *,
    tp1_hit: bool,
    exit_move_r: float | None = None,
    sl_r: float = 1.0,
    breakeven_offset_r: float = 0.0,
) -> float:
    """Gross pnl_r of a whole position closed for `reason` (the DESIGN §5 table above)."""
    banked = TP1_FRACTION * tp1_r if tp1_hit else 0.0
    rest = 1.0 - TP1_FRACTION if tp1_hit else 1.0
    if reason == "sl":
        if tp1_hit:
            raise ValueError("a stop after TP1 is 'sl_be'")
        return -sl_r
    if reason == "sl_be":
        if not tp1_hit:
            raise ValueError("'sl_be' needs TP1 to have been hit")
        return banked + rest * breakeven_offset_r
    if reason == "tp":
        if not tp1_hit:
            raise ValueError("'tp' closes the half left after TP1")
        return banked + rest * tp2_r
    if reason in MARKET_REASONS:
        if exit_move_r is None:
            raise ValueError(f"{reason} needs the exit move in R")
        return banked + rest * exit_move_r
    raise ValueError(f"unknown exit reason {reason!r}; expected one of {EXIT_REASONS}")


def fee_r(fee_quote: float, r_usd: float) -> float:
    """A commission in quote currency as R of the position (r_usd = value of its 1R)."""
    return fee_quote / r_usd


def funding_payment(direction: str, qty: float, mark_price: float, rate: float) -> float:
    """Quote currency a position of `qty` pays at one funding settlement (< 0 = it receives):
    notional at the mark price x rate, longs pay when the rate is positive, shorts when negative."""
    return direction_sign(direction) * qty * mark_price * rate


def slippage_r(
    direction: str, *, opening: bool, reference: float, price: float, fraction: float, risk_distance: float
) -> float:
    """Cost in R of filling `fraction` of the position at `price` instead of `reference` (> 0 = worse).

    Opening a LONG buys (paying more is worse); closing it sells (receiving less is worse).
    """
    side = direction_sign(direction) if opening else -direction_sign(direction)
    return fraction * side * (price - reference) / risk_distance


@dataclass(frozen=True, slots=True)
class PnlBreakdown:
    gross_r: float
    fees_r: float
    slippage_r: float
    funding_r: float = 0.0  # > 0 = paid

    @property
    def net_r(self) -> float:
        return self.gross_r - self.fees_r - self.slippage_r - self.funding_r


def is_win(net_r: float) -> bool:
    return net_r > 0


def win_rate(net_rs: Iterable[float]) -> float | None:
    """Share of trades with net pnl_r > 0 (never by exit reason); None without trades."""
    values = list(net_rs)
    return sum(1 for v in values if is_win(v)) / len(values) if values else None
