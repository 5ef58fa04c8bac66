"""Number and text formatting shared by the Markdown and HTML reports (one way to print an R value).

Why: the two human-readable formats must show the same rounding and the same words for undefined
values (a profit factor without a losing trade, a Sharpe ratio of a constant series).
"""

from __future__ import annotations

import re

NA = "—"

# (key, header, kind); kind "cost_r"/"cost_usd" print like "r"/"usd" but are never coloured as gains/losses
Column = tuple[str, str, str]
COSTS_R: list[Column] = [
    ("fees_r", "fees R", "cost_r"),
    ("slippage_r", "slippage R", "cost_r"),
    ("funding_r", "funding R", "cost_r"),
]
_HEAD: list[Column] = [
    ("trades", "trades", "int"),
    ("win_rate", "win rate", "pct"),
    ("net_r", "net R", "r"),
    ("gross_r", "gross R", "r"),
    *COSTS_R,
]
_PF: Column = ("profit_factor", "profit factor", "ratio")
_EXPECTANCY: Column = ("expectancy_r", "expectancy R", "r")
STRATEGY_COLUMNS: list[Column] = [
    *_HEAD,
    _PF,
    _EXPECTANCY,
    ("avg_win_r", "avg win R", "r"),
    ("avg_loss_r", "avg loss R", "r"),
    ("max_drawdown_r", "max DD R", "cost_r"),
    ("sharpe_per_day", "Sharpe/day", "ratio"),
    ("sharpe_annualised", "Sharpe ann. (×√365)", "ratio"),
]
USD_COLUMNS: list[Column] = [
    ("net_usd", "net USDT", "usd"),
    ("gross_usd", "gross USDT", "usd"),
    ("fees_usd", "fees USDT", "cost_usd"),
    ("slippage_usd", "slippage USDT", "cost_usd"),
    ("funding_usd", "funding USDT", "cost_usd"),
    ("final_balance", "final balance USDT", "balance"),
]
BREAKDOWN_COLUMNS: list[Column] = [*_HEAD, USD_COLUMNS[0], _PF, _EXPECTANCY]
TRADE_COLUMNS: list[Column] = [
    ("strategy", "strategy", "text"),
    ("symbol", "symbol", "text"),
    ("direction", "dir", "text"),
    ("tier", "tier", "text"),
    ("score", "score", "score"),
    ("entry_iso", "entry (UTC)", "time"),
    ("exit_iso", "exit (UTC)", "time"),
    ("entry_price", "entry", "price"),
    ("exit_price", "exit", "price"),
    ("exit_reason", "exit reason", "text"),
    ("pnl_r_gross", "gross R", "r"),
    *COSTS_R,
    ("pnl_r_net", "net R", "r"),
    ("pnl_usd_net", "net USDT", "usd"),
]
# the routing TCA per bucket (backtest.routed_orders.tca_section; review.routing_tca for the meanings)
ROUTING_COLUMNS: list[Column] = [
    ("bucket", "bucket", "text"),
    ("entries", "entries", "int"),
    ("maker_orders", "maker orders", "int"),
    ("taker_orders", "taker orders", "int"),
    ("maker_fill_ratio", "maker fill ratio", "pct"),
    ("maker_share", "maker share", "pct"),
    ("maker_slip_bps", "maker slip bps", "ratio"),
    ("taker_slip_bps", "taker slip bps", "ratio"),
    ("maker_fill_p50_ms", "maker fill p50 ms", "ms"),
    ("maker_fill_p90_ms", "maker fill p90 ms", "ms"),
]
ROUTING_NOTE = (
    "Routed entry orders per notional bucket of the strategy's routing table, over the run: slip in bps "
    "against the mid at send (> 0: worse for us), quantity-weighted; maker fill ratio: filled / requested "
    "maker quantity; maker share: of the entries' filled quantity; fill times from sending a maker order "
    "to its first fill. The same statistics as `tapeflow execution retune`, which proposes a table from them."
)


TEXT_KINDS = ("text", "time")
SIGNED_KINDS = ("r", "usd")  # coloured as gain (> 0) or loss (< 0)


def value(v: object, kind: str) -> str:
    """One cell as text; None (undefined) prints as an em dash."""
    if v is None:
        return NA
    if kind == "int":
        return f"{int(v):,}"
    if kind == "pct":
        return f"{100 * float(v):.1f}%"
    if kind == "r":
        return f"{round(float(v), 3) + 0.0:+.3f}"  # + 0.0: never print -0.000
    if kind == "cost_r":
        return f"{round(float(v), 3) + 0.0:.3f}"
    if kind in ("usd", "cost_usd", "balance"):
        return f"{round(float(v), 2) + 0.0:,.2f}"
    if kind == "ratio":
        return f"{float(v):.2f}"
    if kind == "ms":
        return f"{float(v):,.0f}"
    if kind == "score":
        return f"{float(v):.1f}"
    if kind == "price":
        return f"{float(v):.8g}"
    if kind == "share":
        return f"{100 * float(v):.1f}%"
    if kind == "time":  # ISO 8601 UTC to the second (the JSON keeps milliseconds)
        return str(v).replace("T", " ")[:19]
    return str(v)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def md(text: object) -> str:
    """Text safe inside a Markdown table cell: specials backslash-escaped, no line breaks, `&` as entity."""
    s = str(text).replace("&", "&amp;").replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)
