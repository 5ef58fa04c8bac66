"""Binance USD-M symbol filters (tick size, step size, min notional) and the rounding they force.

Why a module of its own: an order whose price is not a multiple of the tick or whose quantity is not a
multiple of the step is refused (-1111), and one below the minimum notional is refused (-4164). The
broker rounds before it sends rather than learning the rules from rejections, and the rounding is
directional where it matters: a quantity is always rounded *down* (never risk more than sized), a
post-only buy price down and a post-only sell price up (rounding must never turn a maker order into one
that crosses the touch). Decimal arithmetic throughout: 0.1 + 0.2 style float residue would produce
exactly the precision errors the filters reject.

Pure: parsed from the `exchangeInfo` body, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

PriceRounding = Literal["down", "up", "nearest"]
_MODES = {"down": ROUND_FLOOR, "up": ROUND_CEILING, "nearest": ROUND_HALF_EVEN}


class ExchangeInfoError(ValueError):
    """An `exchangeInfo` body that does not hold usable filters (the message names the symbol and why).

    A ValueError, so the broker's start (`execution.safety`) reports it as an exchange that cannot be
    used instead of crashing; a NaN or negative filter would otherwise pass here and fail the first order."""


class FilterViolation(ValueError):
    """An order that cannot satisfy the symbol's filters even after rounding (the message says which)."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule = rule


def to_decimal(value: float | str | Decimal) -> Decimal:
    """Exact decimal of a number as printed (repr of a float), never of its binary expansion."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def quantize_to(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """`value` rounded to a multiple of `step` in the given direction, written with step's exponent."""
    if step <= 0:
        return value
    units = (value / step).to_integral_value(rounding=rounding)
    return units * step


def _without_float_dust(qty: float | str | Decimal) -> Decimal:
    """A float quantity at 12 significant digits, so float residue below a multiple of the step does not
    cost a whole step at the floor: a routed entry's slice of what is left (0.5 - 0.2) / 3 is
    0.09999999999999999 and floored to 0.099, not the 0.1 paper sends (and the last slice then falls a
    step short of the sized quantity). 12 digits keep every real quantity (steps are >= 1e-8 of it)."""
    if isinstance(qty, float):
        return Decimal(f"{qty:.12g}")
    return to_decimal(qty)


def plain(value: Decimal) -> str:
    """A decimal as Binance wants it: no exponent, no trailing zeros ("0.0010" -> "0.001", "5E+1" -> "50")."""
    return format(value.normalize(), "f")


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    symbol: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    min_notional: Decimal

    @classmethod
    def from_symbol_info(cls, info: Mapping[str, Any]) -> SymbolFilters:
        by_type = {f["filterType"]: f for f in info.get("filters", [])}
        price = by_type.get("PRICE_FILTER", {})
        lot = by_type.get("LOT_SIZE", {})
        market = by_type.get("MARKET_LOT_SIZE", lot)
        notional = by_type.get("MIN_NOTIONAL", {})
        d = Decimal
        return cls(
            symbol=info["symbol"],
            tick_size=d(price.get("tickSize", "0")),
            min_price=d(price.get("minPrice", "0")),
            max_price=d(price.get("maxPrice", "0")),
            step_size=d(lot.get("stepSize", "0")),
            min_qty=d(lot.get("minQty", "0")),
            max_qty=d(lot.get("maxQty", "0")),
            market_step_size=d(market.get("stepSize", lot.get("stepSize", "0"))),
            market_min_qty=d(market.get("minQty", lot.get("minQty", "0"))),
            market_max_qty=d(market.get("maxQty", lot.get("maxQty", "0"))),
            # futures call it `notional`; spot-style bodies `minNotional`
            min_notional=d(str(notional.get("notional", notional.get("minNotional", "0")))),
        )

    # --- rounding -----------------------------------------------------------------------------------
    def round_price(self, price: float | str | Decimal, rounding: PriceRounding = "nearest") -> Decimal:
        value = quantize_to(to_decimal(price), self.tick_size, _MODES[rounding])
        if value <= 0 or (self.min_price > 0 and value < self.min_price):
            raise FilterViolation("min_price", f"{self.symbol} price {price} below {plain(self.min_price)}")
        if self.max_price > 0 and value > self.max_price:
            raise FilterViolation("max_price", f"{self.symbol} price {price} above {plain(self.max_price)}")
        return value

    def round_qty(self, qty: float | str | Decimal, *, market: bool = False) -> Decimal:
        """Quantity rounded down to the step (LOT_SIZE, or MARKET_LOT_SIZE for market orders)."""
        step, lo, hi = (
            (self.market_step_size, self.market_min_qty, self.market_max_qty)
            if market
            else (self.step_size, self.min_qty, self.max_qty)
        )
        value = quantize_to(_without_float_dust(qty), step, ROUND_FLOOR)
        if value <= 0 or value < lo:
            raise FilterViolation("min_qty", f"{self.symbol} qty {qty} rounds to {plain(value)}, below {plain(lo)}")
        if hi > 0 and value > hi:
            raise FilterViolation("max_qty", f"{self.symbol} qty {qty} above {plain(hi)}")
        return value

    def check_notional(self, qty: Decimal, price: Decimal, *, reduce_only: bool) -> None:
        """MIN_NOTIONAL (qty x price); reduce-only orders are exempt, as on Binance."""
        if reduce_only or self.min_notional <= 0:
            return
        if qty * price < self.min_notional:
            raise FilterViolation(
                "min_notional", f"{self.symbol} notional {plain(qty * price)} below {plain(self.min_notional)}"
            )


def parse_exchange_info(body: Mapping[str, Any]) -> dict[str, SymbolFilters]:
    """Filters of every symbol in an `exchangeInfo` body; `ExchangeInfoError` when one is unusable."""
    if not isinstance(body, Mapping) or not isinstance(body.get("symbols", []), list):
        raise ExchangeInfoError(f"exchangeInfo: expected an object with a symbols array, got {type(body).__name__}")
    out = {}
    for i, info in enumerate(body.get("symbols", [])):
        name = info.get("symbol") if isinstance(info, Mapping) else None
        where = f"exchangeInfo: symbol {name!r}" if isinstance(name, str) else f"exchangeInfo: symbols[{i}]"
        try:
            filters = SymbolFilters.from_symbol_info(info)
        except (KeyError, TypeError, AttributeError, ArithmeticError, ValueError) as exc:  # Decimal("x") is Arithmetic
            raise ExchangeInfoError(f"{where}: {type(exc).__name__}: {exc!s:.200}") from None
        if not isinstance(filters.symbol, str):
            raise ExchangeInfoError(f"{where}: symbol is not a string")
        bad = [
            f
            for f in SymbolFilters.__dataclass_fields__
            if f != "symbol" and not (getattr(filters, f).is_finite() and getattr(filters, f) >= 0)
        ]
        if bad:
            raise ExchangeInfoError(f"{where}: {', '.join(bad)} not a finite number >= 0")
        out[filters.symbol] = filters
    return out
