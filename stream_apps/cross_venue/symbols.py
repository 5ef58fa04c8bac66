"""Venue symbols to the coin they trade: the key of every cross-venue feature.

Binance and Bybit name a USD-margined perpetual ``<BASE><QUOTE>`` (``BTCUSDT``); OKX names a swap
``<BASE>-<QUOTE>-SWAP`` (``BTC-USDT-SWAP``) and a spot pair ``<BASE>-<QUOTE>``. Low-priced coins are
listed per 1,000 or more units on Binance and Bybit (``1000PEPEUSDT`` quotes 1,000 PEPE) but per one
unit on OKX (``PEPE-USDT-SWAP``), so an instrument carries its ``multiplier``: a quoted price divided
by it is the price of one coin, which is what two venues' books are compared in.

The split into base, quote and multiplier is `schemas.symbols.coin_multiplier`, the one the OKX
producer publishes by; this module adds only what the cross-venue key needs on top: OKX's own spellings
read back, spot pairs told from swaps, and errors that name the venue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.symbols import coin_multiplier

_PLAIN = re.compile(r"^[A-Z0-9]+$")


class SymbolError(ValueError):
    """A symbol this module cannot map to a coin; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Instrument:
    """What one venue symbol trades: ``coin`` priced in ``quote``, ``multiplier`` coins per quoted unit."""

    coin: str  # e.g. "BTC", "PEPE"
    quote: str  # e.g. "USDT"
    multiplier: int = 1  # 1000 for 1000PEPEUSDT: price / multiplier is the price of one coin
    kind: str = "perp"  # "perp" or "spot" (OKX spot pairs; Binance/Bybit symbols are read as perps)


def instrument(exchange: str, symbol: str) -> Instrument:
    """The coin, quote and multiplier of `symbol` on `exchange` (upper-case venue symbols).

    >>> instrument("okx", "BTC-USDT-SWAP")
    Instrument(coin='BTC', quote='USDT', multiplier=1, kind='perp')
    >>> instrument("binance", "1000PEPEUSDT")
    Instrument(coin='PEPE', quote='USDT', multiplier=1000, kind='perp')
    """
    s = symbol.strip().upper()
    kind = "perp"
    if "-" in s:  # OKX style: BASE-QUOTE[-SWAP]
        parts = s.split("-")
        if len(parts) == 3 and parts[2] == "SWAP":
            pass
        elif len(parts) == 2:
            kind = "spot"
        else:
            raise SymbolError(f"symbol {symbol!r} on {exchange}: expected BASE-QUOTE-SWAP or BASE-QUOTE")
        if not all(_PLAIN.match(p) for p in parts[:2]):
            raise SymbolError(f"symbol {symbol!r} on {exchange}: base and quote must be letters and digits")
        s = parts[0] + parts[1]
    elif not _PLAIN.match(s):
        raise SymbolError(f"symbol {symbol!r} on {exchange}: expected letters and digits such as BTCUSDT")
    try:
        coin, quote, multiplier = coin_multiplier(s)
    except ValueError as exc:
        raise SymbolError(f"symbol {symbol!r} on {exchange}: {exc}") from None
    return Instrument(coin, quote, multiplier, kind)


def coin_of(exchange: str, symbol: str) -> str:
    """The coin key of a venue symbol: ``coin_of("okx", "BTC-USDT-SWAP") == coin_of("binance", "BTCUSDT") == "BTC"``."""
    return instrument(exchange, symbol).coin
