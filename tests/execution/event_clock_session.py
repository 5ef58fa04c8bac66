"""A short two-market session for the paper executor's event clock (no tests in this module): routed
entries (maker waits, TWAP slices, the maker -> taker fallback), the executor's default freshness and
age limits, and what the backtest's executor emits over it (the reference).

The session: BTCUSDT and ETHUSDT around 100, a trade every 100-900 ms each (a random walk of 5 bps
steps, either side), a book each second per market (bid/ask a tenth apart, ``book``),
a mark every 3 s, and a signal every 40 s alternating the markets, sized into the routing table's
200-500, 500-1000 and 1000+ buckets (maker 2-3 s, 2-4 slices 0.6-1 s apart, jitter) with a 20 s
timeout, so entries are worked on the clock, fall back to the taker, and positions close by timeout
before the market's next signal. Its makers fill little: the first four set the maker-fill-ratio rule
at the first SLO window's end (T0 + 100 s) and the entries after it go to market
(``execution.maker_fill_rule``; ``test_event_clock``). Event times from ``T0``, 2026-09-21: a test that produces them now
sees them as hours old, which the paper executor's event clock ignores (its age and freshness limits
are the defaults).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from backtest.accounts import Accounts
from backtest.executor_feed import ExecutorFeed
from backtest.sources.records import RecordSource
from execution.config import ExecutorConfig
from schemas.catalogue import symbol_key
from tests.support.execution import EXCHANGE, T0, book_record, signal_record, trade_record

SYMBOLS = ("BTCUSDT", "ETHUSDT")
DURATION_MS = 6 * 60_000
END = T0 + DURATION_MS
ROUTED = ExecutorConfig.model_validate({"entry": {"kind": "routed"}})
RISKS = (50.0, 25.0, 10.0)  # 1R = 200 USDT at price ~100: qty 4, 8, 20 (notional 400, 800, 2000)
Record = dict[str, Any]


def book(price: float, t: int, symbol: str) -> Record:
    """Bid and ask a tenth apart around ``price``, 2.0 resting at the top (ahead of a maker order) and 20
    at each of four levels behind it: deep enough that the liquidity probe never splits an entry."""
    bid, ask = round(price - 0.05, 2), round(price + 0.05, 2)
    record = book_record(bid, ask, t, symbol)
    record["bids"] = [{"price": round(bid - 0.1 * i, 2), "qty": 2.0 if i == 0 else 20.0} for i in range(5)]
    record["asks"] = [{"price": round(ask + 0.1 * i, 2), "qty": 2.0 if i == 0 else 20.0} for i in range(5)]
    return record


def mark_record(price: float, t: int, symbol: str) -> Record:
    return {
        "exchange": EXCHANGE,
        "symbol": symbol,
        "mark_price": price,
        "index_price": price,
        "funding_rate": 0.0001,
        "next_funding_time": (t // 28_800_000 + 1) * 28_800_000,
        "event_time": t,
        "receive_time": t,
    }


def session(seed: int = 53) -> list[tuple[str, Record]]:
    """``(topic, record)`` of the session, in event-time order per topic and market."""
    rng = random.Random(seed)
    out: list[tuple[str, int, Record]] = []
    for j, symbol in enumerate(SYMBOLS):
        price, t, agg = 100.0 + j, T0 + 37 * j, 1000 * (j + 1)
        next_book, next_mark, next_signal = T0 + 500 + 11 * j, T0 + 900 + 13 * j, T0 + 20_000 + 20_000 * j
        n = 0
        while t < END:
            while next_book <= t:
                out.append(("md.book", next_book, book(price, next_book, symbol)))
                next_book += 1000
            while next_mark <= t:
                out.append(("md.mark", next_mark, mark_record(price, next_mark, symbol)))
                next_mark += 3000
            if next_signal <= t:
                risk = RISKS[n % len(RISKS)]
                direction = rng.choice(("LONG", "SHORT"))
                sig = signal_record(
                    direction=direction, price=price, risk=risk, eval_time=t, symbol=symbol, timeout_ms=20_000
                )
                out.append(("signals", t, sig))
                next_signal += 40_000
                n += 1
            price = round(price * (1 + rng.choice((-1, 1)) * 0.0005), 4)
            agg += 1
            side = rng.choice(("BUY", "SELL"))
            out.append(("md.trades", t, trade_record(price, t, symbol=symbol, taker_side=side, agg_id=agg)))
            t += rng.randint(100, 900)
    out.sort(key=lambda item: item[1])  # stable: per topic and market the generation order
    return [(topic, record) for topic, _, record in out]


def key(record: Record) -> bytes:
    return symbol_key(record["exchange"], record["symbol"])


def backtest(records: list[tuple[str, Record]], config: ExecutorConfig = ROUTED) -> list[tuple[str, Record]]:
    """What the backtest's executor emits over the session (one shared paper account, the dense feed:
    every record and every busy market's trade, ticked every second of event time)."""
    return backtest_run(records, config)[0]


def backtest_run(
    records: list[tuple[str, Record]], config: ExecutorConfig = ROUTED
) -> tuple[list[tuple[str, Record]], Accounts]:
    """``backtest``, and its accounts at the end (what the backtest's result reads)."""
    of = lambda name: [r for topic, r in records if topic == name]  # noqa: E731
    source = RecordSource(
        "session", EXCHANGE, list(SYMBOLS), T0, END, trades=of("md.trades"), books=of("md.book"), marks=of("md.mark")
    )
    accounts = Accounts(["*"], config, "shared")
    feed = ExecutorFeed(accounts)
    for sig in of("signals"):
        feed.add_signal(sig)
    emitted: list[tuple[str, Record]] = []
    for piece in source.slices():
        if not accounts.books:
            accounts.open(piece.start_ms)
            sink = accounts.books["*"].sink
            emit = sink.emit

            def recording(topic: str, k: str, record: Record, emit: Any = emit) -> None:
                emitted.append((topic, dict(record)))
                emit(topic, k, record)

            sink.emit = recording  # type: ignore[method-assign]
        feed.slice(piece)
    feed.finish()
    return emitted, accounts


def comparable(records: Iterator[tuple[str, Record]] | list[tuple[str, Record]]) -> dict[str, list[Record]]:
    """Orders, fills and positions per topic, in emission order, without what only the service
    stamps: the mid at send (the backtest's executors do not stamp it: ``backtest.accounts``)."""
    out: dict[str, list[Record]] = {"orders": [], "fills": [], "positions": []}
    for topic, record in records:
        if topic in out:
            out[topic].append({k: v for k, v in record.items() if k not in ("mid_at_send", "mid_source")})
    return out
