"""A day to dissect offline (`tapeflow autopsy --demo`): synthetic BTCUSDT trades, book tops and mark
prices, and a strategy's signals traded by the real paper executor, as the stack's sink stores them.

The market is a seeded random walk (so every run is the same day): ``HOURS`` hours at ``RATE`` trades a
second around 62,000 with a 0.1 tick, a book top a second (a 0.2 spread around the last price), a mark
price every ten seconds announcing the 8-hourly funding. Every ``SIGNAL_EVERY_MIN`` minutes the
strategy ``demo`` signals in the direction of the last five minutes' move (LONG after a rise), 1R =
0.35 % of the price, TP1 at 1R, TP2 at 2R, a one-hour timeout; an ``Executor`` with the
``PaperBroker`` (1 bp slippage, default fees) trades them, one position at a time. The records are
those the executor emitted, unchanged; the 1-minute bars are built from the trades as the engine builds
them. Pure: the same seed gives the same records.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any, cast

from execution.broker import Broker
from execution.config import ExecutorConfig, PaperFills
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker

EXCHANGE, SYMBOL, STRATEGY = "binance", "BTCUSDT", "demo"
START_MS = 1_772_409_600_000  # 2026-03-02T00:00:00Z
HOURS = 12
RATE = 4  # trades a second
SIGNAL_EVERY_MIN = 40
TIMEOUT_MS = 60 * 60_000
H8 = 8 * 3600 * 1000


def _walk(seed: int) -> Iterator[tuple[int, int, float, str]]:
    """(agg_id, time ms, price, taker side) of the day's trades."""
    rng = random.Random(seed)  # nosec B311 # generated market data, seeded on purpose (not a secret)
    price, drift = 62_000.0, 0.0
    step_ms = 1000 // RATE
    for i in range(HOURS * 3600 * RATE):
        if i % (1800 * RATE) == 0:  # a new half-hour regime: drifting up, down, or flat
            drift = rng.choice((-0.2, 0.0, 0.0, 0.2))
        move = round(rng.gauss(drift, 2.5) * 10) / 10
        price = round(max(price + move, 1.0), 1)
        yield 100_000 + i, START_MS + i * step_ms, price, "BUY" if move >= 0 else "SELL"


def _signal(t: int, price: float, direction: str) -> dict[str, Any]:
    risk = round(price * 0.0035, 1)
    sign = 1 if direction == "LONG" else -1
    return {
        "signal_id": f"{STRATEGY}:demo01:{EXCHANGE}:{SYMBOL}:{t}:{direction}",
        "strategy": STRATEGY,
        "strategy_version": "1.0",
        "config_hash": "demo01",
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "eval_time": t,
        "direction": direction,
        "tier": "standard",
        "score": 72.0,
        "factors": {"flow": 30.0, "cvd": 22.0, "structure": 12.0, "atr_percentile": 60.0},
        "price": price,
        "atr": risk / 1.5,
        "risk_distance": risk,
        "sl_price": price - sign * risk,
        "tp1_price": price + sign * risk,
        "tp2_price": price + sign * 2 * risk,
        "sl_r": 1.0,
        "tp1_r": 1.0,
        "tp2_r": 2.0,
        "is_flip": False,
        "timeout_ms": TIMEOUT_MS,
    }


def _bars(trades: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for t in trades:
        minute = t["trade_time"] - t["trade_time"] % 60_000
        if not out or out[-1]["open_time"] != minute:
            out.append(
                {
                    "exchange": EXCHANGE,
                    "symbol": SYMBOL,
                    "open_time": minute,
                    "close_time": minute + 59_999,
                    "open": t["price"],
                    "high": t["price"],
                    "low": t["price"],
                    "close": t["price"],
                    "volume": 0.0,
                    "buy_volume": 0.0,
                    "sell_volume": 0.0,
                    "quote_volume": 0.0,
                    "vwap": 0.0,
                    "trade_count": 0,
                    "first_agg_id": t["agg_id"],
                    "last_agg_id": t["agg_id"],
                }
            )
        b = out[-1]
        b["high"], b["low"], b["close"] = max(b["high"], t["price"]), min(b["low"], t["price"]), t["price"]
        b["volume"] += t["qty"]
        b["buy_volume" if t["taker_side"] == "BUY" else "sell_volume"] += t["qty"]
        b["quote_volume"] += t["qty"] * t["price"]
        b["vwap"] = b["quote_volume"] / b["volume"]
        b["trade_count"] += 1
        b["last_agg_id"] = t["agg_id"]
    return out


def demo_records(seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """Every record of the demo day by topic (md.trades, md.book, md.mark, bars.1m, signals, orders,
    fills, positions)."""
    # tape fills: the counterfactual replay has the trades and marks of the path, not its books
    # (``review.counterfactual``), so a demo filled against the book would not be reproduced at x1
    config = ExecutorConfig(paper=PaperFills(slippage_bps=1.0, fills="tape"))
    sink = ListSink()
    # PaperBroker implements Broker; its ``mode`` attribute is typed as a plain str
    ex = Executor(config, "paper", cast(Broker, PaperBroker(config.fees, config.paper)), sink, START_MS)
    trades: list[dict[str, Any]] = []
    books: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    signals: list[dict[str, Any]] = []
    for agg, t, price, side in _walk(seed):
        if t % 1000 == 0:
            book = {
                "exchange": EXCHANGE,
                "symbol": SYMBOL,
                "last_update_id": t,
                "event_time": t,
                "receive_time": t,
                "bids": [{"price": round(price - 0.1, 1), "qty": 2.0}],
                "asks": [{"price": round(price + 0.1, 1), "qty": 2.0}],
                "obi_10": 0.0,
            }
            books.append(book)
            ex.on_book(book, t)
        if t % 10_000 == 0:
            mark = {
                "exchange": EXCHANGE,
                "symbol": SYMBOL,
                "mark_price": price,
                "index_price": price,
                "funding_rate": 0.0001,
                "next_funding_time": (t // H8 + 1) * H8,
                "event_time": t,
                "receive_time": t,
            }
            marks.append(mark)
            ex.on_mark(mark, t)
        if t > START_MS and (t - START_MS) % (SIGNAL_EVERY_MIN * 60_000) == 0 and not ex.positions and not ex.entries:
            earlier = trades[-5 * 60 * RATE]["price"] if len(trades) >= 5 * 60 * RATE else trades[0]["price"]
            sig = _signal(t, trades[-1]["price"], "LONG" if trades[-1]["price"] >= earlier else "SHORT")
            signals.append(sig)
            ex.on_signal(sig, t)
        rec = {
            "exchange": EXCHANGE,
            "symbol": SYMBOL,
            "agg_id": agg,
            "price": price,
            "qty": 0.01 + (agg % 17) * 0.003,
            "first_trade_id": agg * 3,
            "last_trade_id": agg * 3,
            "event_time": t,
            "trade_time": t,
            "receive_time": t,
            "taker_side": side,
        }
        trades.append(rec)
        ex.on_trade(rec, t)
    return {
        "md.trades": trades,
        "md.book": books,
        "md.mark": marks,
        "bars.1m": _bars(trades),
        "signals": signals,
        "orders": sink.of("orders"),
        "fills": sink.of("fills"),
        "positions": sink.of("positions"),
    }
