"""Minute bars standing in for trades: what a warm start reads for the hours that do not need each trade.

A 1m kline of Binance carries OHLC, the volume, the quote volume, the trade count and the taker-buy volume:
the minute's bought and sold quantity. The engine's 4h/24h CVD windows, its bars and its ATR read nothing
finer than a minute, so a minute bar gives them exactly what the minute's trades would have (why:
paging 25 h of BTCUSDT's aggTrades costs ~50,000 REST weight late in the UTC day; the 1,500 minute
bars of 25 h cost 10). A bar travels as an ``md.indicators`` record (``kind`` is an open string):
``kind`` ``kline_1m``, ``value`` the close, ``extra`` {open, high, low, close, buy_volume, sell_volume,
quote_volume, trades}, ``event_time`` the minute's open, ``receive_time`` its last millisecond (Binance's
kline close time: open + 59,999; applied before an evaluation at the minute's end closes its bars).
``SymbolState.apply_minute_bars`` applies them; what they cannot give is stated by ``approx_until_ms``.

``minute_bars_from_trades`` makes the same bars from trades, so a backtest can start the way a warm
start does (parity: ``backtest.sources.warm_start``, ``tapeflow backtest --warm-start-approximation``),
and ``minute_bar_record`` turns one into the md.indicators record ``parse_klines_1m`` makes of a kline.
"""

from __future__ import annotations

import numpy as np

from .events import IndicatorUpdate, TradeBatch
from .params import MINUTE_MS

MINUTE_BAR_KIND = "kline_1m"


def minute_bar(
    exchange: str,
    symbol: str,
    open_ms: int,
    o: float,
    h: float,
    lo: float,
    c: float,
    buy_volume: float,
    sell_volume: float,
    quote_volume: float,
    trades: int,
) -> IndicatorUpdate:
    """The event of one minute bar, known at the minute's last millisecond."""
    return IndicatorUpdate(
        exchange,
        symbol,
        open_ms + MINUTE_MS - 1,
        MINUTE_BAR_KIND,
        c,
        open_ms,
        {
            "open": o,
            "high": h,
            "low": lo,
            "close": c,
            "buy_volume": buy_volume,
            "sell_volume": sell_volume,
            "quote_volume": quote_volume,
            "trades": float(trades),
        },
    )


def minute_bars_from_trades(batch: TradeBatch) -> list[IndicatorUpdate]:
    """One bar per minute that has trades in ``batch`` (time-ordered), as a 1m kline would give it."""
    if len(batch) == 0:
        return []
    minutes = batch.time_ms // MINUTE_MS
    starts = np.concatenate(([0], np.flatnonzero(minutes[1:] != minutes[:-1]) + 1))
    ends = np.append(starts[1:], len(batch))
    buy_qty = np.where(batch.taker_sell, 0.0, batch.qty)
    sell_qty = np.where(batch.taker_sell, batch.qty, 0.0)
    out = []
    for a, b in zip(starts.tolist(), ends.tolist()):
        prices = batch.price[a:b]
        out.append(
            minute_bar(
                batch.exchange,
                batch.symbol,
                int(minutes[a]) * MINUTE_MS,
                float(prices[0]),
                float(prices.max()),
                float(prices.min()),
                float(prices[-1]),
                round(float(buy_qty[a:b].sum()), 8),
                round(float(sell_qty[a:b].sum()), 8),
                float((prices * batch.qty[a:b]).sum()),
                b - a,
            )
        )
    return out


def minute_bar_record(bar: IndicatorUpdate) -> dict:
    """The md.indicators record of a bar, as the live warm start publishes a 1m kline
    (``producers.binance.indicator_parse.parse_klines_1m``): ``indicator_from_record`` gives ``bar`` back."""
    return {
        "exchange": bar.exchange,
        "symbol": bar.symbol,
        "kind": bar.kind,
        "value": bar.value,
        "period": "1m",
        "extra": dict(bar.extra),
        "event_time": bar.value_time_ms,
        "receive_time": bar.time_ms,
    }
