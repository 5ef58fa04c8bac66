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

All three run on one event clock: paper's feed ticks (``on_clock``) where the backtest's dense feed
ticks (at events, at most once a second), and the testnet executor is handed the script's times moved
to start now, waiting after every input until what it sent has filled at the fake. The first test pins
market entries and tape fills (the hand computation above); the second runs the defaults (routed
entries, book fills) with a book at every trade: there orders, fills, send times, events and net
results agree, and the levels differ by design by the spread the entry crossed (its docstring).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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
TICK, DEPTH = 0.01, 1000.0  # the books of the run with books


@dataclass(frozen=True)
class Script:
    """One run's inputs: executor config, price path (k -> price) and whether books come with trades."""

    config: ExecutorConfig
    path: dict[int, float]
    last: int
    books: bool = False


PINNED = Script(CONFIG, PATH, LAST)


def trades(script: Script = PINNED) -> list[dict]:
    return market(script.path, script.last)


def book_of(trade: dict) -> dict:
    """The book at a trade: bid and ask a tick (0.01) either side of its price, deep (DEPTH each)."""
    p, t = trade["price"], trade["trade_time"]
    rec = {"exchange": EX, "symbol": SYM, "last_update_id": t, "event_time": t, "receive_time": t, "obi_10": 0.0}
    return rec | {"bids": [{"price": p - TICK, "qty": DEPTH}], "asks": [{"price": p + TICK, "qty": DEPTH}]}


def backtest(script: Script = PINNED) -> tuple[dict, list[dict], list[dict]]:
    rows = trades(script)
    books = [book_of(r) for r in rows] if script.books else []
    runner = BacktestRunner([STRATEGY], script.config)
    runner.run(RecordSource("hand", EX, [SYM], S, rows[-1]["trade_time"] + SEC, trades=rows, books=books))
    [signal] = runner.signals
    [book] = runner.accounts.books.values()
    return signal, book.sink.fills, runner.position_events()


def shifted(rec: dict, offset: int) -> dict:
    """`rec` with its times moved by `offset` ms (a signal keeps its id, so the client ids stay)."""
    times = ("trade_time", "event_time", "receive_time", "eval_time")
    return {k: v + offset if k in times else v for k, v in rec.items()}


def feed(ex: Executor, signal: dict, script: Script, step, offset: int = 0, before=None) -> None:
    """The signal, books and trades in the backtest's order, all moved by `offset` ms: at each event time
    the clock ticks first (``on_clock``, at most once a second, as the backtest's feed ticks), then the
    signal, the book, the trade. `before(trade)` runs before the trade's time is ticked, `step(t)` after
    every input handed at t (the live path waits there for what it sent)."""
    sent, clock = False, [-1]

    def tick(t: int) -> None:
        if t >= clock[0] + 1000:
            clock[0] = t
            ex.on_clock(t)
            step(t)

    for rec in trades(script):
        t = rec["trade_time"] + offset
        if before is not None:
            before(rec)
        tick(t)
        if not sent and rec["trade_time"] >= signal["eval_time"]:
            ex.on_signal(shifted(signal, offset), t)
            step(t)
            sent = True
        if script.books:
            ex.on_book(shifted(book_of(rec), offset), t)
        ex.on_trade(shifted(rec, offset), t)
        step(t)


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


def net_view(events: list[dict]) -> list[tuple]:
    """What a position's events must agree on whatever its levels are anchored at: event, quantity, exit
    price and reason, net result and fees (``pnl_r_gross`` and the slippage split it from the anchor)."""
    keys = ("event", "qty", "exit_price", "exit_reason", "pnl_r_net", "fees_r")
    return [tuple(round(e[k], 8) if isinstance(e[k], float) else e[k] for k in keys) for e in events]


def sent(sink: ListSink) -> list[dict]:
    return [o for o in sink.of("orders") if o["state"] == "PENDING_NEW"]


def order_view(orders: list[dict]) -> list[tuple]:
    return [
        (o["client_order_id"], o["leg"], o["reason"], o["side"], o["type"], o["qty"], o["price"])
        for o in orders
        if o["state"] == "PENDING_NEW"
    ]


def paper(signal: dict, script: Script = PINNED) -> ListSink:
    sink = ListSink()
    ex = Executor(script.config, "paper", PaperBroker(script.config.fees, script.config.paper), sink, S)
    feed(ex, signal, script, lambda t: None)
    return sink


def settled(ex: Executor, t: int) -> bool:
    """Nothing in flight at the fake but a maker entry order still in its wait (``on_clock`` polled)."""
    ex.on_clock(t)
    waiting = {
        e.request.client_order_id
        for e in ex.entries.values()
        if e.request.type == "LIMIT" and not e.maker_timed_out(ex.config.entry, t)
    }
    return all(cid in waiting for cid in ex.orders)


def live(signal: dict, script: Script = PINNED) -> tuple[ListSink, int]:
    """The executor in testnet mode on the script's event clock (moved to start now: the fake stamps
    fills with the wall clock, and a position ignores trades older than its fills; 10 s a trade keeps
    the script ahead of it). The fake's market moves to each trade (and its book) before the trade's
    time is ticked, so an order sent at the tick or on the trade before fills where paper's fills on it:
    after every input the script waits until nothing but a resting maker order is in flight."""
    fake = FakeOnThread()
    broker = None
    try:
        fake.market(symbol=SYM, bid=101.99, ask=102.01, price=102.0, qty=0.0, mark=102.0)
        broker = BinanceBroker.connect(
            "testnet", fake.rest_url, fake.ws_url, SecretStr(TEST_API_KEY), SecretStr(TEST_API_SECRET)
        )
        sink = ListSink()
        offset = int(time.time() * 1000) - signal["eval_time"]
        ex = Executor(script.config, "testnet", broker, sink, signal["eval_time"] + offset)

        def step(t: int) -> None:
            wait_until(lambda: settled(ex, t), 10, "the orders sent filled", interval=0.02)

        def before(rec: dict) -> None:
            p = rec["price"]
            levels = {"bids": [[p - TICK, DEPTH]], "asks": [[p + TICK, DEPTH]]} if script.books else {}
            fake.market(symbol=SYM, bid=p - TICK, ask=p + TICK, price=p, qty=0.0, mark=p, **levels)

        feed(ex, signal, script, step, offset=offset, before=before)
        return sink, offset
    finally:
        if broker is not None:
            broker.close()
        fake.stop()


def test_paper_backtest_and_the_fake_exchange_give_the_same_managed_orders_and_fills():
    signal, bt_fills, bt_positions = backtest()
    on_paper, (on_fake, _) = paper(signal), live(signal)
    reasons = [o[2] for o in order_view(on_paper.of("orders"))]
    assert reasons == [None, "add_on_1", "add_on_2", "partial_tp", "sl_be"]  # the script did what it says
    assert fill_view(on_paper.of("fills")) == fill_view(bt_fills) == fill_view(on_fake.of("fills"))
    assert position_view(on_paper.of("positions")) == position_view(bt_positions)
    assert position_view(on_fake.of("positions")) == position_view(bt_positions)
    assert order_view(on_paper.of("orders")) == order_view(on_fake.of("orders"))


# The defaults (no pin): routed entries, book fills. Same strategy and management; the fake's maker fee
DEFAULTS = ExecutorConfig(
    fees=Fees(taker=TAKER, maker=0.0002),
    management_by_strategy=CONFIG.management_by_strategy,
    risk=CONFIG.risk,
)
# the entry is worked from k = 60 to 64 (below), so the pinned path's moves come 4 trades later and
# 0.2 higher (the slices fill at 102.21, not 102): 69 add-on 1, 74 add-on 2, 76 partial, 80 trail,
# 81 crosses the stop; each trade that sends an order is followed by one at its price
ROUTED = Script(
    DEFAULTS,
    {60: 102.0, 61: 102.2, 69: 102.8, 71: 102.6, 74: 103.6, 76: 104.1, 78: 103.9, 80: 105.0, 81: 103.7},
    82,
    books=True,
)


def test_under_the_defaults_routed_entries_and_book_fills_agree_on_all_three_paths():
    """The same comparison with nothing pinned (``entry.kind: routed``, ``paper.fills: book``) and a book
    at every trade (bid and ask 0.01 either side, DEPTH deep). The entry (qty 100 at 102: notional 10,200,
    bucket 1000+: maker 3 s, 4 slices 1 s +/- 20 % apart) by hand: the post-only bid at 101.99 (the book
    before trade 60) is never traded through, so the first tick after its 3 s (the feed ticks at events,
    every 10 s) cancels it at k = 61 and sends slice 1; slice k + 1 goes at the first tick after slice k
    filled + its jittered delay (< 10 s): k = 62, 63, 64; each fills on the trade after it walking that
    trade's book: 25 at the ask 102.21.

    Agreement is deterministic because every path runs on the same event clock: the backtest's, paper's
    (this feed ticks where the backtest's does) and the live path's (the testnet executor is handed the
    script's times moved to now; the fake fills at once at the book set for the next trade, and the feed
    waits until nothing but a resting maker is in flight before it goes on). So the send and cancel times
    are compared too (live minus its offset). The slices' jitter is drawn from the evaluation time, which
    the live run moves, so the live delays differ, but each stays under the 10 s to the next tick.

    What cannot agree, by design (``execution.broker``: ``Execution.market_price`` is "paper: the trade;
    live: the fill price itself"): a position's levels are anchored at its entry fills' market price.
    Paper's book walk fills a slice at the ask (102.21) against the trade it filled on (102.2), so the
    backtest and paper anchor at 102.2 and count the half spread as slippage; the exchange reports only
    the fill price, so live anchors at 102.21: entry price, stop and take-profits a tick higher, and
    ``pnl_r_gross`` (measured from the anchor) differs by the slippage it then does not see. Fills, fees,
    events, quantities, exits and ``pnl_r_net`` agree; the anchor difference is asserted as it is, so a
    change to either side shows here. (A wider spread could make a level cross on one path and not the
    other: not exercised by this script.)"""
    assert ExecutorConfig().entry.kind == "routed" and ExecutorConfig().paper.fills == "book"
    signal, bt_fills, bt_positions = backtest(ROUTED)
    on_paper, (on_fake, offset) = paper(signal, ROUTED), live(signal, ROUTED)
    route = "route 1000+ n=10200.00"
    slices = [f"{route} taker {k}/4" for k in range(1, 5)]
    reasons = [o[2] for o in order_view(on_paper.of("orders"))]
    assert reasons == [f"{route} maker 0/4", *slices, "add_on_1", "add_on_2", "partial_tp", "sl_be"]
    maker = order_view(on_paper.of("orders"))[0]
    assert (maker[4], maker[5], maker[6]) == ("LIMIT", 100.0, 101.99)
    entry_fills = fill_view(on_paper.of("fills"))[:4]
    assert [(f[2], f[3]) for f in entry_fills] == [(25.0, 102.21)] * 4
    assert fill_view(on_paper.of("fills")) == fill_view(bt_fills) == fill_view(on_fake.of("fills"))
    assert position_view(on_paper.of("positions")) == position_view(bt_positions)
    assert order_view(on_paper.of("orders")) == order_view(on_fake.of("orders"))
    # live: the same events, quantities, exits, fees and net result; its levels anchored a tick higher
    assert net_view(on_fake.of("positions")) == net_view(bt_positions)
    [bt_open] = [e for e in bt_positions if e["event"] == "opened"]
    [fake_open] = [e for e in on_fake.of("positions") if e["event"] == "opened"]
    assert bt_open["entry_price"] == pytest.approx(102.2)  # paper: the trades the slices filled on
    assert fake_open["entry_price"] == pytest.approx(102.2 + TICK)  # live: the fills (the ask)
    for level in ("sl_price", "tp2_price"):  # the plan's R levels move with their anchor
        assert fake_open[level] - bt_open[level] == pytest.approx(TICK)

    def sends(sink: ListSink, shift: int) -> list[tuple]:
        """Orders by send time, in seconds from S on the executor's clock (a cancel's record carries
        the venue's time on the live path: the fake's wall clock, so it is not compared)."""
        return [(o["client_order_id"], (o["event_time"] - shift - S) // SEC) for o in sent(sink)]

    assert sends(on_paper, 0) == sends(on_fake, offset)
    assert [t for _, t in sends(on_paper, 0)] == [600, 610, 620, 630, 640, 690, 740, 760, 810]
    for sink in (on_paper, on_fake):
        [cancel] = [o for o in sink.of("orders") if o["state"] == "CANCELED"]
        assert (cancel["client_order_id"], cancel["reason"]) == (maker[0], "maker_timeout")
