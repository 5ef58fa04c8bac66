"""One symbol per market across venues: tapeflow's `BTCUSDT` and each venue's own name for it.

Every record's `symbol` is tapeflow's: base and quote run together, upper case (`BTCUSDT`), which is
Binance's and Bybit's own spelling. OKX names its USDT perpetual swap `BTC-USDT-SWAP` (and the index
it marks against `BTC-USDT`); its producer subscribes with those names and publishes under
`okx:BTCUSDT`, so the same coin has the same `symbol` on every venue and cross-venue consumers key by
it. Here, below every layer, so a producer, a stream app or the CLI can map a name without importing
a venue (venues never import each other).

The split of `BTCUSDT` into base and quote is by the known quote currencies, longest first
(`USDT` before `USD`); a symbol with none of them is refused rather than guessed. Low-priced coins are
quoted per 1,000 or more units on Binance and Bybit (`1000PEPEUSDT`: the price of 1,000 PEPE) and per
one on OKX (`PEPE-USDT-SWAP`): `coin_multiplier` reads the multiplier off the symbol, the OKX swap is
the coin's, and the OKX producer publishes under `1000PEPEUSDT` in that symbol's units (prices × 1000,
quantities ÷ 1000), so `symbol` means the same instrument units on every venue.
"""

from __future__ import annotations

import re

QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "USD")  # longest first: BTCUSDT is BTC/USDT, BTCFDUSD not BTCFD/USD
OKX_SWAP_SUFFIX = "-SWAP"
_MULTIPLIER = re.compile(r"^(10{3,})([A-Z].*)$")  # 1000PEPE, 10000SATS, 1000000MOG; not 1INCH


def base_quote(symbol: str) -> tuple[str, str]:
    """`BTCUSDT` -> (`BTC`, `USDT`); `1000PEPEUSDT` -> (`1000PEPE`, `USDT`); ValueError without a known quote."""
    sym = symbol.upper()
    for quote in QUOTES:
        if sym.endswith(quote) and len(sym) > len(quote):
            return sym[: -len(quote)], quote
    raise ValueError(f"{symbol!r}: no known quote currency ({', '.join(QUOTES)}) at its end")


def coin_multiplier(symbol: str) -> tuple[str, str, int]:
    """`1000PEPEUSDT` -> (`PEPE`, `USDT`, 1000): the coin, the quote and the coins per quoted unit."""
    base, quote = base_quote(symbol)
    match = _MULTIPLIER.match(base)
    if match:
        return match.group(2), quote, int(match.group(1))
    return base, quote, 1


def okx_swap_inst_id(symbol: str) -> str:
    """`BTCUSDT` -> `BTC-USDT-SWAP`, `1000PEPEUSDT` -> `PEPE-USDT-SWAP` (OKX's perpetual swap on that pair)."""
    coin, quote, _ = coin_multiplier(symbol)
    return f"{coin}-{quote}{OKX_SWAP_SUFFIX}"


def okx_index_id(symbol: str) -> str:
    """`BTCUSDT` -> `BTC-USDT` (the OKX index the swap is marked against; `index-tickers` instId)."""
    coin, quote, _ = coin_multiplier(symbol)
    return f"{coin}-{quote}"


def symbol_from_okx(inst_id: str) -> str:
    """`BTC-USDT-SWAP` or `BTC-USDT` -> `BTCUSDT`; ValueError for anything else (e.g. a dated future)."""
    name = inst_id.upper()
    if name.endswith(OKX_SWAP_SUFFIX):
        name = name[: -len(OKX_SWAP_SUFFIX)]
    parts = name.split("-")
    if len(parts) != 2 or not parts[0] or parts[1] not in QUOTES:
        raise ValueError(f"{inst_id!r} is not an OKX BASE-QUOTE[-SWAP] instrument")
    return parts[0] + parts[1]
