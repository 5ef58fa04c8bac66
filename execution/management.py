"""Position management by ROE (the plan's position manager): add-ons, a trailing stop and a partial
take-profit, evaluated on every trade of the position's symbol. Pure: prices and times in, decisions
out; the same object runs in paper, backtest and live (`execution.position_manager.Position` holds one
per managed position, the executor sends what it decides).

ROE is the return on the isolated margin, as the exchange shows it for an isolated position:
unrealised P&L / initial margin = direction x (price - average entry) / average entry x leverage
(margin = notional / leverage; `leverage` is the management setting, the one the account trades at).
It is always the ROE of the position as it is now: after an add-on the average entry moves towards the
price and the ROE falls, so the next step is measured from the new average.

On each trade, after the stop, the target and the timeout (which come first and end the ladder):

1. trailing: every step whose `roe` is reached moves the stop to the price at which closing the open
   quantity there nets `lock_roe` x margin after fees (the entry fees paid for the open quantity and a
   taker fee on the exit): `lock_roe` 0 is break-even net of fees. A stop only ever tightens.
2. add-ons (at most two, in order): the next one whose `roe` is reached is sent as a market order for
   `qty_fraction` x the first entry's quantity, if the risk guard allows it (refused: skipped for good,
   the refusal on risk.events). When it fills, the average entry is the quantity-weighted average of
   the entries' market prices, and the stop and target are recomputed from it so that the position
   keeps risking (and targeting) what its signal sized, in money: R' = r_usd / open quantity, stop =
   average -/+ sl_r x R', target = average +/- tp2_r x R'; a stop already trailed tighter stays.
3. partial take-profit: at `partial_take_profit_roe` the first entry's quantity is closed at market
   (all of it when no add-on was made), reported like TP1 (the position's `tp1` event).

With management the R-multiple TP1 (half at tp1_r, stop to break-even) is off: the partial take-profit
and the trailing stop are its replacement. One order at a time: while an order of the position is in
flight nothing else is decided. Reasons: an add-on order's reason is `add_on_1` / `add_on_2`, the
partial's `partial_tp`, a stop exit after the stop was trailed `sl_be` (`sl` before).

Why hand-rolled: this is a few lines of arithmetic on our own position state; no library models an
isolated-margin ROE ladder, and the formulas here are what the tests compute by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, model_validator

from execution.domain import direction_sign
from tapeflow_runtime.config_model import StrictModel, strictly_increasing


class AddOn(StrictModel):
    """One add-on: when the position's ROE reaches `roe`, buy (sell) more."""

    roe: float = Field(gt=0, le=100, description="ROE (fraction of the isolated margin, 0.05 = 5 %) that triggers it")
    qty_fraction: float = Field(
        default=0.5, gt=0, le=2, description="quantity added, as a fraction of the first entry's quantity"
    )


class TrailStep(StrictModel):
    """One step of the trailing stop: at `roe`, the stop moves to the price that locks `lock_roe` net."""

    roe: float = Field(gt=0, le=100, description="ROE that triggers the step (0.10 = 10 %)")
    lock_roe: float = Field(
        ge=0,
        le=100,
        description="the stop moves to where closing nets this ROE after fees (0: break-even net of fees)",
    )


class Management(StrictModel):
    """Position management of one strategy (off by default: the executor then exits as before)."""

    enabled: bool = Field(default=False, description="manage positions by ROE (add-ons, trailing, partial take)")
    leverage: float = Field(
        default=10.0, gt=0, le=125, description="isolated-margin leverage: ROE = price move / entry x leverage"
    )
    add_ons: tuple[AddOn, ...] = Field(
        default=(AddOn(roe=0.05), AddOn(roe=0.10)),
        max_length=2,
        description="up to two add-ons, in increasing ROE; the average entry, stop and target are recomputed",
    )
    trailing: tuple[TrailStep, ...] = Field(
        default=(TrailStep(roe=0.10, lock_roe=0.0), TrailStep(roe=0.20, lock_roe=0.10)),
        description="trailing-stop steps in increasing ROE: at roe, the stop locks lock_roe net of fees",
    )
    partial_take_profit_roe: float | None = Field(
        default=0.12,
        gt=0,
        le=100,
        description="at this ROE close the first entry's quantity at market (null: no partial take-profit)",
    )
    exit_fee: float = Field(
        default=0.0005,
        ge=0,
        lt=0.01,
        description="fee rate assumed for the stop's exit (taker) when pricing break-even and locked levels",
    )

    @model_validator(mode="after")
    def _check(self) -> Management:
        for name, steps in (("add_ons", self.add_ons), ("trailing", self.trailing)):
            if not strictly_increasing([s.roe for s in steps]):
                raise ValueError(f"{name} must be in strictly increasing roe")
        for step in self.trailing:
            if step.lock_roe >= step.roe:
                raise ValueError("trailing: lock_roe must be below the step's roe")
        return self


# ------------------------------------------------------------------------------------------- arithmetic
def roe(direction: str, avg_entry: float, price: float, leverage: float) -> float:
    """Return on the isolated margin of a position at `price` (gross, as the exchange shows it)."""
    return direction_sign(direction) * (price - avg_entry) / avg_entry * leverage


def roe_price(direction: str, avg_entry: float, target_roe: float, leverage: float) -> float:
    """The price at which the ROE is `target_roe`."""
    return avg_entry * (1 + direction_sign(direction) * target_roe / leverage)


def lock_price(
    direction: str, avg_entry: float, qty: float, entry_fees: float, exit_fee: float, lock_roe: float, leverage: float
) -> float:
    """The stop at which closing `qty` nets `lock_roe` x margin (avg x qty / leverage) after the entry
    fees paid for it and an exit fee of `exit_fee` x notional. LONG: qty (s - avg) - fees - f s qty =
    L avg qty / lev; SHORT: qty (avg - s) - fees - f s qty = L avg qty / lev."""
    want = lock_roe * avg_entry * qty / leverage
    if direction_sign(direction) > 0:
        return (avg_entry * qty + entry_fees + want) / (qty * (1 - exit_fee))
    return (avg_entry * qty - entry_fees - want) / (qty * (1 + exit_fee))


def tighter(direction: str, a: float, b: float) -> float:
    """The stop nearer the price of the two (higher for a LONG, lower for a SHORT)."""
    return max(a, b) if direction_sign(direction) > 0 else min(a, b)


# ------------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True, slots=True)
class AddOnIntent:
    """Send a market order adding `qty` to the position (the `index`-th add-on, 1-based)."""

    index: int
    qty: float
    trigger_time: int

    @property
    def leg(self) -> str:
        return f"add_on_{self.index}"

    @property
    def reason(self) -> str:
        return self.leg


@dataclass(slots=True)
class Ladder:
    """What a managed position has done of its management (`Management`): add-ons made or skipped,
    trailing steps applied, the partial taken. The position asks it on every trade (`Position.on_trade`)."""

    config: Management
    first_qty: float  # the first entry's quantity: the add-ons' unit and what the partial closes
    add_ons_done: int = 0  # made or skipped (refused by the guard)
    trail_steps: int = 0
    partial_done: bool = False

    @property
    def trailed(self) -> bool:
        return self.trail_steps > 0

    def trail(self, direction: str, avg: float, qty: float, entry_fees: float, price: float, stop: float) -> float:
        """The stop after every trailing step the ROE at `price` reaches (steps already applied stay)."""
        cfg = self.config
        now = roe(direction, avg, price, cfg.leverage)
        while self.trail_steps < len(cfg.trailing) and now >= cfg.trailing[self.trail_steps].roe:
            step = cfg.trailing[self.trail_steps]
            lock = lock_price(direction, avg, qty, entry_fees, cfg.exit_fee, step.lock_roe, cfg.leverage)
            stop = tighter(direction, stop, lock)
            self.trail_steps += 1
        return stop

    def add_on(self, direction: str, avg: float, price: float, trade_time: int) -> AddOnIntent | None:
        cfg = self.config
        if self.add_ons_done >= len(cfg.add_ons):
            return None
        step = cfg.add_ons[self.add_ons_done]
        if roe(direction, avg, price, cfg.leverage) < step.roe:
            return None
        return AddOnIntent(self.add_ons_done + 1, step.qty_fraction * self.first_qty, trade_time)

    def partial_due(self, direction: str, avg: float, price: float) -> bool:
        cfg = self.config
        if self.partial_done or cfg.partial_take_profit_roe is None:
            return False
        return roe(direction, avg, price, cfg.leverage) >= cfg.partial_take_profit_roe

    def next_trigger(self, direction: str, avg: float) -> float | None:
        """The nearest price in the position's favour at which the ladder acts (a trailing step, the next
        add-on or the partial); None when nothing is left. The position's quiet band ends there."""
        cfg = self.config
        roes = []
        if self.trail_steps < len(cfg.trailing):
            roes.append(cfg.trailing[self.trail_steps].roe)
        if self.add_ons_done < len(cfg.add_ons):
            roes.append(cfg.add_ons[self.add_ons_done].roe)
        if not self.partial_done and cfg.partial_take_profit_roe is not None:
            roes.append(cfg.partial_take_profit_roe)
        return roe_price(direction, avg, min(roes), cfg.leverage) if roes else None


def trail_steps_done(config: Management, direction: str, avg: float, qty: float, entry_fees: float, stop: float) -> int:
    """How many leading trailing steps a restored `stop` already is at or beyond (a restart re-derives
    the ladder's trailing state from the stop its last position event recorded)."""
    done = 0
    for step in config.trailing:
        lock = lock_price(direction, avg, qty, entry_fees, config.exit_fee, step.lock_roe, config.leverage)
        if tighter(direction, stop, lock) != stop and abs(stop - lock) > 1e-9 * avg:
            break
        done += 1
    return done
