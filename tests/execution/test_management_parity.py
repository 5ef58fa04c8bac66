"""One script of managed position, three paths: the backtest runner, the paper executor fed directly, and
the executor in testnet mode against the fake exchange (its live path). Same orders, same fills, same
position events (the backtest keeps no order records, so orders are compared between the other two).

The market is the hand-built backtest scenario (`tests.backtest.test_backtest_scenarios`: one LONG
signal at S + 600 s, price 102, R = 2) with tp2_r 4, then a path that makes the position add on twice,
trail its stop to break-even and to +10 % net, take the partial and be stopped; some trades in between
fall inside the quiet band (the backtest's sparse feed skips them). Fees at the fake exchange's taker
rate (0.04 %), no slippage: a market order decided on a trade fills at the next trade's price in paper
and at the fake's last price (set to each trade before it is fed) on the live path, and the script
repeats the price after every trade that sends an order, so both fill at the same price.
"""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from backtest.runner import BacktestRunner
from backtest.sources.records import RecordSource
from execution.binance_broker import BinanceBroker
from execution.config import EntryPolicy, ExecutorConfig, Fees, PaperFills, RiskLimits
from execution.executor import Executor, ListSink
from execution.management import Management
from execution.paper_broker import PaperBroker
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET
from stream_apps.core.strategy import parse_strategy
from tests.backtest.test_backtest_scenarios import EX, SEC, SPEC, SYM, S, market
from tests.support.fake_exchange import FakeOnThread
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(120)

STRATEGY = parse_strategy({**SPEC, "exits": {**SPEC["exits"], "tp2_r": 4.0}})
TAKER = 0.0004  # the fake exchange's taker fee
CONFIG = ExecutorConfig(
    entry=EntryPolicy(kind="taker"),  # the hand-computed path is of one market entry
    fees=Fees(taker=TAKER),
    paper=PaperFills(fills="tape"),
    management_by_strategy={"hand": Management(enabled=True, leverage=10.0, exit_fee=TAKER)},
    risk=RiskLimits(max_signal_age_s=1e12, stale_market_data_s=1e12),  # the live path runs on today's clock
)
# k -> price from the entry (k = 60) on: 65 add-on 1 (ROE 5.9 %), 70 trail to break-even + add-on 2,
# 72 partial (ROE 13.7 %), 76 trail to +10 % net (ROE 22 %), 77 crosses that stop; 61-64, 67-69, 74-75
# stay inside the quiet band
PATH = {60: 102.0, 61: 102.2, 65: 102.6, 67: 102.4, 70: 103.4, 72: 103.9, 74: 103.7, 76: 104.8, 77: 103.5}
LAST = 78
ORDERED = {60, 65, 70, 72, 77}  # trades after which an order is in flight (filled by the next one)


def trades() -> list[dict]:
    return market(PATH, LAST)


def backtest() -> tuple[dict, list[dict], list[dict]]:
    rows = trades()
    runner = BacktestRunner([STRATEGY], CONFIG)
    runner.run(RecordSource("hand", EX, [SYM], S, rows[-1]["trade_time"] + SEC, trades=rows))
    [signal] = runner.signals
    [book] = runner.accounts.books.values()
    return signal, book.sink.fills, runner.position_events()


def shifted(rec: dict, offset: int) -> dict:
    """`rec` with its times moved by `offset` ms (a signal keeps its id, so the client ids stay)."""
    times = ("trade_time", "event_time", "receive_time", "eval_time")
    return {k: v + offset if k in times else v for k, v in rec.items()}


def feed(ex: Executor, signal: dict, now, settle, offset: int = 0, before=None) -> None:
    """The trades and the signal in the backtest's order (the signal before the trades at its time),
    all moved by `offset` ms; `before(trade)` runs before each trade is fed, `settle(trade)` after."""
    sent = False
    for rec in trades():
        if not sent and rec["trade_time"] >= signal["eval_time"]:
            ex.on_signal(shifted(signal, offset), now(signal["eval_time"]))
            sent = True
        if before is not None:
            before(rec)
        ex.on_trade(shifted(rec, offset), now(rec["trade_time"]))
        settle(rec)


def fill_view(fills: list[dict]) -> list[tuple]:
    return [(f["client_order_id"], f["side"], f["qty"], round(f["price"], 8), round(f["fee"], 8)) for f in fills]


def position_view(events: list[dict]) -> list[tuple]:
    keys = ("event", "qty", "entry_price", "sl_price", "tp1_price", "tp2_price", "exit_price", "exit_reason")
    out = []
    for e in events:
        row = [e[k] if not isinstance(e[k], float) else round(e[k], 8) for k in keys]
        row += [round(e[k], 8) if e[k] is not None else None for k in ("pnl_r_gross", "pnl_r_net", "fees_r")]
        out.append(tuple(row))
    return out


def order_view(orders: list[dict]) -> list[tuple]:
    return [
        (o["client_order_id"], o["leg"], o["reason"], o["side"], o["type"], o["qty"])
        for o in orders
        if o["state"] == "PENDING_NEW"
    ]


def paper(signal: dict) -> ListSink:
    sink = ListSink()
    ex = Executor(CONFIG, "paper", PaperBroker(CONFIG.fees, CONFIG.paper), sink, S)
    feed(ex, signal, lambda t: t, lambda rec: None)
    return sink


def live(signal: dict) -> ListSink:
    fake = FakeOnThread()
    broker = None
    try:
        fake.market(symbol=SYM, bid=101.99, ask=102.01, price=102.0, qty=0.0, mark=102.0)
        broker = BinanceBroker.connect(
            "testnet", fake.rest_url, fake.ws_url, SecretStr(TEST_API_KEY), SecretStr(TEST_API_SECRET)
        )
        sink = ListSink()
        ex = Executor(CONFIG, "testnet", broker, sink, int(time.time() * 1000))

        def settle(rec: dict) -> None:
            """The fake's last price moves to this trade first; an order sent on it is awaited."""
            if rec["agg_id"] - 1000 in ORDERED:  # agg_id = 1000 + k
                wait_until(lambda: ex.on_clock(int(time.time() * 1000)) or not ex.orders, 10, "the fill")

        def now(t: int) -> int:
            return int(time.time() * 1000)

        def before(rec: dict) -> None:
            p = rec["price"]
            fake.market(symbol=SYM, bid=p - 0.01, ask=p + 0.01, price=p, qty=0.0, mark=p)

        # the entry is sent on the signal: the fake fills it at once at its last price (102, the
        # trade the paper entry fills at). The script runs from now on (a position ignores trades
        # older than its fills, which the fake stamps with the wall clock), 10 s a trade: ahead of it
        feed(ex, signal, now, settle, offset=now(0) - signal["eval_time"], before=before)
        return sink
    finally:
        if broker is not None:
            broker.close()
        fake.stop()


def test_paper_backtest_and_the_fake_exchange_give_the_same_managed_orders_and_fills():
    signal, bt_fills, bt_positions = backtest()
    on_paper, on_fake = paper(signal), live(signal)
    reasons = [o[2] for o in order_view(on_paper.of("orders"))]
    assert reasons == [None, "add_on_1", "add_on_2", "partial_tp", "sl_be"]  # the script did what it says
    assert fill_view(on_paper.of("fills")) == fill_view(bt_fills) == fill_view(on_fake.of("fills"))
    assert position_view(on_paper.of("positions")) == position_view(bt_positions)
    assert position_view(on_fake.of("positions")) == position_view(bt_positions)
    assert order_view(on_paper.of("orders")) == order_view(on_fake.of("orders"))
