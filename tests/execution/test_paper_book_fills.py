"""The paper broker's book fills (`PaperFills.fills: book`): scripted sequences against hand computations.

Every expectation below is worked out by hand from the rules in `execution.paper_broker` /
`tapeflow_runtime.matching`: queue position from the snapshot at placement, trades at our price eating
it, trades through our price filling, partial fills bounded by the trade, market orders walking levels.
"""

from __future__ import annotations

import pytest

from execution.broker import Execution, OrderRequest, OrderUpdate
from execution.config import EntryPolicy, ExecutorConfig, Fees, PaperFills
from execution.domain import BookTop, TradeTick
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from tests.support.execution import EXCHANGE, SYMBOL, T0, Harness, signal_record, trade_record

T = 1_790_000_000_000
S = 1000
FEES = Fees(taker=0.0005, maker=0.0002)
_agg = [0]


def book(t: int, bids=(), asks=()) -> BookTop:
    return BookTop(
        "binance", "BTCUSDT", bids[0][0] if bids else None, asks[0][0] if asks else None, t, tuple(bids), tuple(asks)
    )


def trade(price: float, qty: float, t: int, taker: str = "SELL") -> TradeTick:
    _agg[0] += 1
    return TradeTick("binance", "BTCUSDT", _agg[0], price, qty, t, taker)  # type: ignore[arg-type]


def limit(cid: str, side: str, price: float, qty: float) -> OrderRequest:
    return OrderRequest(cid, "binance", "BTCUSDT", side, "LIMIT", qty, price=price, post_only=True, not_before_ms=T)  # type: ignore[arg-type]


def market(cid: str, side: str, qty: float) -> OrderRequest:
    return OrderRequest(cid, "binance", "BTCUSDT", side, "MARKET", qty, not_before_ms=T)  # type: ignore[arg-type]


def broker(**kw) -> PaperBroker:
    return PaperBroker(FEES, PaperFills(fills="book", **kw))


def split(events) -> tuple[list[Execution], list[OrderUpdate]]:
    return [e for e in events if isinstance(e, Execution)], [e for e in events if isinstance(e, OrderUpdate)]


def test_a_limit_queues_behind_the_level_and_fills_partially_as_trades_eat_and_cross_it():
    b = broker()
    b.on_book(book(T, bids=[(99.9, 3.0), (99.8, 5.0)], asks=[(100.0, 2.0), (100.1, 4.0)]))
    [ack] = b.submit(limit("bid", "BUY", 99.9, 2.0), T)
    assert ack.state == "NEW"  # 3.0 rests ahead of us at 99.9
    assert b.on_trade(trade(99.9, 1.0, T + 1)) == []  # sellers take 1.0 of the queue: 2.0 ahead
    assert b.on_trade(trade(99.9, 0.5, T + 2, taker="BUY")) == []  # a buyer at our bid: not counted
    b.on_book(book(T + 3, bids=[(99.9, 1.5), (99.8, 5.0)], asks=[(100.0, 2.0)]))  # level shrank: 1.5 ahead
    b.on_book(book(T + 4, bids=[(99.9, 4.0), (99.8, 5.0)], asks=[(100.0, 2.0)]))  # grew: still 1.5 ahead
    # 2.0 sold at 99.9: 1.5 to the queue, 0.5 to us
    [ex], [upd] = split(b.on_trade(trade(99.9, 2.0, T + 5)))
    assert (ex.price, ex.qty, ex.liquidity, ex.market_price) == (99.9, 0.5, "maker", 99.9)
    assert ex.fee == pytest.approx(0.0002 * 99.9 * 0.5) and ex.trade_id == f"p:{_agg[0]}:bid"
    assert (upd.state, upd.filled_qty, upd.avg_fill_price) == ("PARTIALLY_FILLED", 0.5, 99.9)
    # a trade through our price: the level is gone; 0.75 traded, so 0.75 more is ours
    [ex], [upd] = split(b.on_trade(trade(99.85, 0.75, T + 6)))
    assert (ex.price, ex.qty) == (99.9, 0.75) and (upd.state, upd.filled_qty) == ("PARTIALLY_FILLED", 1.25)
    # 5.0 more through it: only the 0.75 left is ours
    [ex], [upd] = split(b.on_trade(trade(99.8, 5.0, T + 7)))
    assert ex.qty == pytest.approx(0.75) and (upd.state, upd.filled_qty, upd.avg_fill_price) == ("FILLED", 2.0, 99.9)
    assert not b.is_open("bid") and b.on_trade(trade(99.7, 1.0, T + 8)) == []


def test_a_sell_limit_inside_the_spread_has_nobody_ahead_and_one_trade_fills_two_orders_once():
    b = broker()
    b.on_book(book(T, bids=[(99.9, 3.0)], asks=[(100.1, 2.0), (100.2, 4.0)]))
    b.submit(limit("a", "SELL", 100.0, 1.0), T)  # inside the spread: 0 ahead
    b.submit(limit("b", "SELL", 100.0, 1.0), T)
    # a buyer lifts 1.5 at 100.0: "a" (placed first) takes 1.0, "b" the 0.5 left of that trade
    events = b.on_trade(trade(100.0, 1.5, T + 1, taker="BUY"))
    fills, updates = split(events)
    assert [(f.client_order_id, f.qty) for f in fills] == [("a", 1.0), ("b", 0.5)]
    assert [(u.client_order_id, u.state) for u in updates] == [("a", "FILLED"), ("b", "PARTIALLY_FILLED")]


def test_a_limit_beyond_the_shown_depth_or_without_a_book_follows_the_tape_rule_in_full():
    b = broker(limit_queue="through")
    b.submit(limit("nobook", "BUY", 99.0, 2.0), T)
    assert b.on_trade(trade(99.0, 0.1, T + 1)) == []  # through: a trade at the price is not enough
    [ex], [upd] = split(b.on_trade(trade(98.9, 0.1, T + 2)))
    assert ex.qty == 2.0 and upd.state == "FILLED"  # the tape rule fills whole, whatever the trade's size


def test_a_market_order_walks_the_levels_and_the_rest_waits_for_the_next_snapshot():
    b = broker(slippage_bps=10.0)
    b.on_book(book(T, bids=[(99.9, 1.0)], asks=[(100.0, 1.0), (100.1, 2.0)]))
    b.submit(market("m", "BUY", 4.0), T)
    assert b.on_trade(trade(100.0, 0.2, T - 1)) == []  # before the decision: never fills it
    fills, [upd] = split(b.on_trade(trade(100.0, 0.2, T + 1, taker="BUY")))
    # 1.0 at 100.0 and 2.0 at 100.1, each 10 bp worse; the book has no more
    assert [(f.price, f.qty) for f in fills] == [
        (pytest.approx(100.0 * 1.001), 1.0),
        (pytest.approx(100.1 * 1.001), 2.0),
    ]
    assert all(f.liquidity == "taker" and f.market_price == 100.0 for f in fills)
    assert fills[1].fee == pytest.approx(0.0005 * 100.1 * 1.001 * 2.0)
    assert [f.trade_id for f in fills] == [f"p:{_agg[0]}:m", f"p:{_agg[0]}:m:1"]
    assert (upd.state, upd.filled_qty) == ("PARTIALLY_FILLED", 3.0)
    assert b.on_trade(trade(100.1, 0.2, T + 2)) == []  # the same snapshot: what we took stays taken
    b.on_book(book(T + 3, bids=[(99.9, 1.0)], asks=[(100.2, 0.5), (100.3, 10.0)]))
    fills, [upd] = split(b.on_trade(trade(100.2, 0.2, T + 4)))
    assert [(f.price, f.qty) for f in fills] == [
        (pytest.approx(100.2 * 1.001), 0.5),
        (pytest.approx(100.3 * 1.001), 0.5),
    ]
    vwap = (100.0 + 2 * 100.1 + 0.5 * 100.2 + 0.5 * 100.3) / 4 * 1.001
    assert (upd.state, upd.filled_qty) == ("FILLED", 4.0) and upd.avg_fill_price == pytest.approx(vwap)


def test_the_rest_of_a_market_order_fills_at_the_trade_once_the_book_is_stale_and_orders_share_a_snapshot():
    b = broker(book_max_age_ms=5_000)
    b.on_book(book(T, bids=[(99.9, 1.0), (99.8, 1.0)], asks=[(100.0, 1.0)]))
    b.submit(market("s1", "SELL", 1.5), T)
    b.submit(market("s2", "SELL", 1.0), T)
    fills, _ = split(b.on_trade(trade(99.9, 0.1, T + 1)))
    # s1 takes 1.0 at 99.9 and 0.5 at 99.8; s2 only the 0.5 left at 99.8
    assert [(f.client_order_id, f.price, f.qty) for f in fills] == [
        ("s1", 99.9, 1.0),
        ("s1", 99.8, 0.5),
        ("s2", 99.8, 0.5),
    ]
    assert b.on_trade(trade(99.7, 0.1, T + 5_000)) == []  # still fresh (5 s old), nothing left in it
    [ex], [upd] = split(b.on_trade(trade(99.6, 0.1, T + 5_001)))  # stale: the rest at the trade's price
    assert (ex.price, ex.qty, upd.state) == (99.6, 0.5, "FILLED")


def test_without_a_book_a_market_order_fills_whole_at_the_trade_as_in_the_tape_model():
    tape = PaperBroker(FEES, PaperFills(fills="tape", slippage_bps=3.0))
    bookish = broker(slippage_bps=3.0)
    for b in (tape, bookish):
        b.submit(market("x", "SELL", 2.0), T)
    a, c = tape.on_trade(trade(100.0, 0.1, T + 1)), bookish.on_trade(trade(100.0, 0.1, T + 1))
    assert [(e.price, e.qty, e.fee) for e in split(a)[0]] == [(e.price, e.qty, e.fee) for e in split(c)[0]]
    assert split(c)[0][0].price == pytest.approx(100.0 * 0.9997) and split(c)[1][0].state == "FILLED"


def test_cancel_removes_a_part_filled_limit_from_the_matcher():
    b = broker()
    b.on_book(book(T, bids=[(99.9, 0.0001)], asks=[(100.0, 1.0)]))
    b.submit(limit("c", "BUY", 99.9, 1.0), T)
    b.on_trade(trade(99.9, 0.5, T + 1))  # 0.0001 ahead: 0.4999 ours
    [cancel] = b.cancel("c", T + 2, "maker_timeout")
    assert cancel.state == "CANCELED" and b.on_trade(trade(99.0, 5.0, T + 3)) == [] and not b.is_open("c")


def test_the_executor_opens_the_part_filled_maker_entry_when_its_wait_ends():
    """End to end through the executor (paper mode): a maker entry behind the queue fills in part, the
    maker timeout cancels the rest, the position opens with what filled and R scaled to it."""
    cfg = ExecutorConfig(paper=PaperFills(fills="book"), entry=EntryPolicy(kind="maker_first", maker_timeout_ms=4000))
    h = Harness(cfg)
    h.book(99.9, 100.1, T0 - 500)  # 1.0 ahead at the bid 99.9 (tests.support.execution.book_record)
    assert h.signal(eval_time=T0, price=100.0, risk=2.0).allowed
    [intent] = [o for o in h.of("orders") if o["state"] == "NEW"]
    qty = intent["qty"]
    h.trade(99.9, T0 + S, qty=1.25, taker_side="SELL")  # 1.0 to the queue, 0.25 to us
    h.clock(T0 + 5 * S)  # the maker wait is over: the rest is cancelled
    [fill] = h.fills()
    assert (fill["qty"], fill["liquidity"], fill["price"]) == (0.25, "maker", 99.9)
    [opened] = h.positions("opened")
    assert opened["qty"] == pytest.approx(0.25) and qty > 0.25
    assert [o["state"] for o in h.of("orders") if o["client_order_id"] == intent["client_order_id"]][-2:] == [
        "PARTIALLY_FILLED",
        "CANCELED",
    ]


def _levels(bids, asks, t: int) -> dict:
    """An md.book record with these (price, qty) levels, best first."""
    return {
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "last_update_id": t,
        "event_time": t,
        "receive_time": t,
        "bids": [{"price": p, "qty": q} for p, q in bids],
        "asks": [{"price": p, "qty": q} for p, q in asks],
        "obi_10": 0.0,
    }


def _trade(price: float, t: int) -> dict:
    return trade_record(price, t, qty=0.5, taker_side="SELL")


def test_an_exit_part_filled_before_a_restart_fills_only_the_rest_after_it():
    """Book fills: the stop's market sell of 100 walks a book showing 30 at 97.9, then the executor
    restarts. The restored exit may fill only the 70 left (at 97.8 from the next book), the order's
    fills sum to 100, and the closed position counts the fees of all 100 (by hand below)."""
    cfg = ExecutorConfig(paper=PaperFills(fills="book"))
    h = Harness(cfg)
    assert h.signal(eval_time=T0, price=100.0, risk=2.0).allowed  # qty 100, stop 98.0
    h.trade(100.0, T0 + S)  # no book: the entry fills whole at the trade
    [opened] = h.positions("opened")
    assert opened["qty"] == 100.0
    h.trade(97.95, T0 + 2 * S)  # through the stop: the exit is sent, this trade never fills it
    h.ex.on_book(_levels([(97.9, 30.0)], [(98.0, 5.0)], T0 + 2 * S + 500), T0 + 2 * S + 500)
    h.ex.on_trade(_trade(97.9, T0 + 3 * S), T0 + 3 * S)  # walks the 30 shown
    [exit_order] = [o for o in h.of("orders") if o["state"] == "PARTIALLY_FILLED"]
    assert (exit_order["leg"], exit_order["qty"], exit_order["filled_qty"]) == ("sl", 100.0, 30.0)
    records = list(h.sink.records)

    sink = ListSink()
    ex = Executor(cfg, "paper", PaperBroker(cfg.fees, cfg.paper), sink, T0 + 4 * S)
    summary = ex.restore(
        [r for t, _, r in records if t == "positions"],
        [r for t, _, r in records if t == "orders"],
        [r for t, _, r in records if t == "risk.events"],
        T0 + 4 * S,
    )
    assert summary == {"positions": 1, "orders_resumed": 1, "orders_cancelled": 0}
    ex.on_book(_levels([(97.8, 500.0)], [(97.9, 5.0)], T0 + 4 * S), T0 + 4 * S)
    ex.on_trade(_trade(97.8, T0 + 5 * S), T0 + 5 * S)
    ex.on_trade(_trade(97.7, T0 + 6 * S), T0 + 6 * S)  # nothing is left to fill
    assert [(f["price"], f["qty"]) for f in sink.of("fills")] == [(97.8, 70.0)]
    [done] = [o for o in sink.of("orders") if o["state"] == "FILLED"]
    vwap = (30 * 97.9 + 70 * 97.8) / 100
    assert (done["qty"], done["filled_qty"], done["avg_fill_price"]) == (100.0, 100.0, pytest.approx(vwap))
    [closed] = [p for p in sink.of("positions") if p["event"] == "closed"]
    assert (closed["exit_reason"], closed["qty"]) == ("sl", 0.0) and closed["exit_price"] == pytest.approx(vwap)
    # 1R = 200; taker 0.05 %: the entry's 100 at 100.0, the exit's 30 at 97.9 and 70 at 97.8
    assert closed["fees_r"] == pytest.approx(0.0005 * (100 * 100.0 + 30 * 97.9 + 70 * 97.8) / 200)
    # the stop's level is the reference: (98.0 - 97.9) x 30 + (98.0 - 97.8) x 70 over 100 units, in R of 2
    assert closed["slippage_r"] == pytest.approx((0.1 * 30 + 0.2 * 70) / 100 / 2.0)
    assert not ex.broker.open_orders()


def test_a_maker_entry_part_filled_before_a_committed_cut_restart_opens_with_the_whole_size():
    """The transactional service's restart (committed cut) re-enters an unfinished entry: 0.25 of the
    maker bid filled before it, so only the other 99.75 can fill after it, and the position opens with
    100 (not 100.25), its fee counting both parts at the maker rate."""
    cfg = ExecutorConfig(paper=PaperFills(fills="book"), entry=EntryPolicy(kind="maker_first", maker_timeout_ms=4000))
    h = Harness(cfg)
    h.book(99.9, 100.1, T0 - 500)  # 1.0 ahead at the bid 99.9
    rec = signal_record(eval_time=T0, price=100.0, risk=2.0)
    assert h.signal_rec(rec).allowed
    h.trade(99.9, T0 + S, qty=1.25, taker_side="SELL")  # 1.0 to the queue, 0.25 to us
    [part] = h.fills()
    assert part["qty"] == pytest.approx(0.25)
    records = list(h.sink.records)

    sink = ListSink()
    ex = Executor(cfg, "paper", PaperBroker(cfg.fees, cfg.paper), sink, T0 + 2 * S)
    summary = ex.restore(
        [r for t, _, r in records if t == "positions"],
        [r for t, _, r in records if t == "orders"],
        [r for t, _, r in records if t == "risk.events"],
        T0 + 2 * S,
        signals=lambda ids: {rec["signal_id"]: rec} if rec["signal_id"] in ids else {},
        committed_cut=True,
    )
    assert summary["orders_resumed"] == 1
    # no book in the new paper book: the tape rule (through) fills what is left, whole
    ex.on_trade(trade_record(99.8, T0 + 3 * S, qty=500.0, taker_side="SELL"), T0 + 3 * S)
    assert [f["qty"] for f in sink.of("fills")] == [pytest.approx(99.75)]
    [done] = [o for o in sink.of("orders") if o["state"] == "FILLED"]
    assert (done["filled_qty"], done["avg_fill_price"]) == (pytest.approx(100.0), pytest.approx(99.9))
    [opened] = [p for p in sink.of("positions") if p["event"] == "opened"]
    assert opened["qty"] == pytest.approx(100.0) and opened["entry_price"] == pytest.approx(99.9)
    assert opened["fees_r"] == pytest.approx(0.0002 * 99.9 * 100 / 200)
