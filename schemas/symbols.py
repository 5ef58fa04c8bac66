"""One symbol per market across venues: tapeflow's `BTCUSDT` and each venue's own name for it.

Every record's `symbol` is tapeflow's: base and quote run together, upper case (`BTCUSDT`), which is
Binance's and Bybit's own spelling. OKX names its USDT perpetual swap `BTC-USDT-SWAP` (and the index
it marks against `BTC-USDT`); its producer subscribes with those names and publishes under
`okx:BTCUSDT`, so the same coin has the same `symbol` on every venue and cross-venue consumers key by
it. Here, below every layer, so a producer, a stream app or the CLI can map a name without importing
a venue (venues never import each other).

The split of `BTCUSDT` into base and quote is by the known quote currencies, longest first
(`USDT` before `USD`); a symbol with none of them is refused rather than guessed.
"""

from __future__ import annotations

QUOTES = ("USDT", "USDC", "USD")  # longest first: BTCUSDT is BTC/USDT, not BTCUS/DT
OKX_SWAP_SUFFIX = "-SWAP"


def base_quote(symbol: str) -> tuple[str, str]:
    """`BTCUSDT` -> (`BTC`, `USDT`); ValueError for a symbol without a known quote currency."""
    sym = symbol.upper()
    for quote in QUOTES:
        if sym.endswith(quote) and len(sym) > len(quote):
            return sym[: -len(quote)], quote
    raise ValueError(f"{symbol!r}: no known quote currency ({', '.join(QUOTES)}) at its end")


def okx_swap_inst_id(symbol: str) -> str:
    """`BTCUSDT` -> `BTC-USDT-SWAP` (OKX's perpetual swap on that pair)."""
    base, quote = base_quote(symbol)
    return f"{base}-{quote}{OKX_SWAP_SUFFIX}"


def okx_index_id(symbol: str) -> str:
    """`BTCUSDT` -> `BTC-USDT` (the OKX index the swap is marked against; `index-tickers` instId)."""
    base, quote = base_quote(symbol)
    return f"{base}-{quote}"


def symbol_from_okx(inst_id: str) -> str:
    """`BTC-USDT-SWAP` or `BTC-USDT` -> `BTCUSDT`; ValueError for anything else (e.g. a dated future)."""
    name = inst_id.upper()
    if name.endswith(OKX_SWAP_SUFFIX):
        name = name[: -len(OKX_SWAP_SUFFIX)]
    parts = name.split("-")
    if len(parts) != 2 or not parts[0] or parts[1] not in QUOTES:
        raise ValueError(f"{inst_id!r} is not an OKX BASE-QUOTE[-SWAP] instrument")
    return parts[0] + parts[1]
