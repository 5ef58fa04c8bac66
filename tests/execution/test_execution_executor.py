"""The executor's decisions: idempotency, one position per slot, risk rules in the path, maker-first
entries, the order of records, and restart from its own output records."""

from __future__ import annotations

import pytest

from execution.client_ids import client_order_id
from execution.config import EntryPolicy, ExecutorConfig, PaperFills, RiskLimits
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from tests.support.execution import EXCHANGE, SYMBOL, T0, Harness, signal_record

S = 1000


def book_levels(bids: list[tuple[float, float]], asks: list[tuple[float, float]], t: int) -> dict:
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


def test_duplicate_signal_delivery_opens_one_position():
    h = Harness()
    rec = signal_record()
    assert h.signal_rec(rec).allowed
    assert h.signal_rec(dict(rec)).reason == "duplicate_signal"
    h.trade(100.0, T0 + S)
    assert h.signal_rec(dict(rec), now=T0 + 2 * S).reason == "duplicate_signal"  # also once it is open
    assert len(h.positions("opened")) == 1
    entries = [o for o in h.of("orders") if o["leg"] == "entry" and o["state"] == "PENDING_NEW"]
    assert [o["client_order_id"] for o in entries] == [client_order_id(rec["signal_id"], "entry")]


def test_one_position_per_strategy_and_symbol_but_strategies_are_independent():
    h = Harness()
    assert h.signal(eval_time=T0).allowed
    h.trade(100.0, T0 + S)
    assert h.signal(eval_time=T0 + 2 * S).reason == "position_open"  # same direction
    assert h.signal(eval_time=T0 + 3 * S, direction="SHORT").reason == "position_open"  # reverse, not a flip
    assert h.signal(eval_time=T0 + 4 * S, strategy="v52_8signals").allowed  # another strategy
    h.trade(100.0, T0 + 5 * S)
    assert len(h.positions("opened")) == 2


def test_the_intent_is_recorded_before_the_broker_sees_the_order():
    h = Harness()
    h.signal()
    states = [o["state"] for o in h.of("orders")]
    assert states == ["PENDING_NEW", "NEW"]
    h.trade(100.0, T0 + S)
    assert [o["state"] for o in h.of("orders")] == ["PENDING_NEW", "NEW", "FILLED"]
    topics = [t for t, _, _ in h.sink.records if t != "risk.events"]
    assert topics == ["orders", "orders", "fills", "orders", "positions"]  # fill, then FILLED, then opened
    assert {k for _, k, _ in h.sink.records if _ != "risk.events"} >= {"binance:BTCUSDT"}


def test_outside_paper_the_intent_is_made_durable_before_sending():
    sink = ListSink()
    cfg = ExecutorConfig()
    seen_barriers = []

    class CountingBroker(PaperBroker):
        mode = "testnet"

        def submit(self, request, now_ms):
            seen_barriers.append(sink.barriers)
            return super().submit(request, now_ms)

    ex = Executor(cfg, "testnet", CountingBroker(cfg.fees, cfg.paper), sink, T0)
    ex.on_trade(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_id": 1,
            "price": 100.0,
            "qty": 1.0,
            "first_trade_id": 1,
            "last_trade_id": 1,
            "event_time": T0,
            "trade_time": T0,
            "receive_time": T0,
            "taker_side": "BUY",
        },
        T0,
    )
    ex.on_signal(signal_record(), T0)
    assert seen_barriers == [1] and sink.of("orders")[0]["state"] == "PENDING_NEW"


def test_stale_signals_and_stale_market_data_are_refused():
    h = Harness(ExecutorConfig(risk=RiskLimits(max_signal_age_s=60)))
    assert h.signal(eval_time=T0, now=T0 + 61 * S).reason == "stale_signal"
    h2 = Harness(warm=False)
    assert h2.signal().reason == "stale_market_data"  # no trade seen yet
    h3 = Harness()  # last trade at T0 - 1 s
    assert h3.signal(eval_time=T0 + 30 * S).reason == "stale_market_data"  # 31 s old
    h3.trade(100.0, T0 + 31 * S)
    assert h3.signal(eval_time=T0 + 31 * S, now=T0 + 32 * S).allowed


def test_stale_data_transitions_are_published_and_exits_still_run():
    h = Harness()
    h.signal()
    h.trade(100.0, T0 + S)
    h.clock(T0 + 2 * S)
    h.clock(T0 + 40 * S)
    [stale] = h.risk("stale_market_data")
    assert (stale["scope"], stale["decision"]) == ("symbol:binance:BTCUSDT", "block")
    h.trade(97.0, T0 + 41 * S)  # exits are never blocked
    h.trade(97.0, T0 + 42 * S)
    assert h.closed()["exit_reason"] == "sl"
    h.clock(T0 + 43 * S)
    assert [r["decision"] for r in h.risk("market_data_fresh")] == ["resume"]


def test_max_open_positions_counts_pending_entries():
    h = Harness(ExecutorConfig(risk=RiskLimits(max_open_positions=2)))
    assert h.signal(strategy="a").allowed
    assert h.signal(strategy="b").allowed
    assert h.signal(strategy="c").reason == "max_open_positions"


def test_kill_switch_cancels_entries_blocks_and_flattens_on_request():
    # the point is the kill switch, not the fill model: tape fills let one trade through the bid fill
    # the whole maker entry (book fills would need the level's queue and 100 units of trades)
    h = Harness(ExecutorConfig(entry=EntryPolicy(kind="maker_first"), paper=PaperFills(fills="tape")))
    h.book(99.9, 100.0, T0)
    h.signal(strategy="a")  # resting maker bid
    h.ex.on_risk_record({"scope": "kill_switch", "mode": "live", "decision": "halt"}, T0 + 1)  # not our mode
    assert not h.risk("kill_switch")
    h.ex.on_risk_record({"scope": "kill_switch", "mode": "paper", "decision": "halt"}, T0 + 2)
    cancelled = [o for o in h.of("orders") if o["state"] == "CANCELED"]
    assert [o["reason"] for o in cancelled] == ["kill_switch"]
    assert h.signal(strategy="b", eval_time=T0 + 3).reason == "kill_switch"
    h.ex.on_risk_record({"scope": "kill_switch", "mode": "paper", "decision": "resume"}, T0 + 4)
    assert h.signal(strategy="c", eval_time=T0 + 5).allowed
    h.trade(99.8, T0 + S)  # the bid of c fills (maker)
    assert len(h.positions("opened")) == 1
    h.ex.on_risk_record({"scope": "kill_switch", "mode": "paper", "decision": "flatten"}, T0 + 2 * S)
    h.trade(99.5, T0 + 3 * S)
    assert h.closed()["exit_reason"] == "kill_switch"


def test_daily_loss_limit_flattens_every_position():
    h = Harness(ExecutorConfig(risk=RiskLimits(daily_loss_limit_r=2.0)))
    h.signal(strategy="a")
    h.signal(strategy="b")
    h.signal(strategy="c", direction="SHORT")
    h.trade(100.0, T0 + S)
    assert len(h.positions("opened")) == 3
    h.trade(97.9, T0 + 2 * S)  # a and b stop out
    h.trade(97.9, T0 + 3 * S)  # each: -1 - (5 + 4.895)/200 fees - 0.1/2 gap = -1.099475 R; -2.19895 <= -2 -> flatten c
    h.trade(98.0, T0 + 4 * S)
    closed = {p["strategy"]: p for p in h.positions("closed")}
    assert closed["a"]["exit_reason"] == "sl" and closed["b"]["exit_reason"] == "sl"
    assert closed["c"]["exit_reason"] == "risk_flatten"
    assert closed["c"]["pnl_r_gross"] == pytest.approx(1.0)  # SHORT from 100, out at 98
    [flat] = [r for r in h.risk("daily_loss_limit") if r["decision"] == "flatten"]
    assert flat["state"] == "halted" and flat["daily_pnl_r"] == pytest.approx(-2.19895)
    assert h.signal(strategy="d", eval_time=T0 + 5 * S).reason == "daily_loss_limit"


def test_maker_first_entry_fills_as_maker_at_the_touch():
    """Book fills (the default): the bid at the touch queues behind the 1.0 resting there; sellers at
    the bid eat that queue first, then fill us, never more than they sold; a buyer at our bid does not."""
    h = Harness(ExecutorConfig(entry=EntryPolicy(kind="maker_first")))
    h.book(99.9, 100.0, T0)  # 1.0 bid at 99.9, 1.0 ask at 100.0
    h.signal()
    [intent] = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    assert (intent["type"], intent["price"], intent["qty"]) == ("LIMIT", 99.9, 100.0)  # 1R 200 / risk 2
    h.trade(99.9, T0 + S, qty=5.0, taker_side="BUY")  # a buyer at our bid: not our fill, queue unchanged
    h.trade(99.9, T0 + S + 1, qty=0.6, taker_side="SELL")  # 0.6 of the 1.0 ahead
    assert not h.fills()
    h.trade(99.9, T0 + S + 2, qty=40.4, taker_side="SELL")  # 0.4 to the queue, 40.0 to us
    [part] = h.fills()
    assert (part["liquidity"], part["price"], part["qty"]) == ("maker", 99.9, pytest.approx(40.0))
    assert not h.positions("opened")  # part-filled and still within the maker wait
    h.trade(99.8, T0 + 2 * S, qty=75.0, taker_side="SELL")  # through the bid: the 60.0 left of 75
    fills = h.fills()
    assert [f["qty"] for f in fills] == [pytest.approx(40.0), pytest.approx(60.0)]
    assert all((f["liquidity"], f["price"]) == ("maker", 99.9) for f in fills)
    [opened] = h.positions("opened")
    assert opened["qty"] == pytest.approx(100.0)
    assert opened["entry_price"] == pytest.approx(99.9) and opened["sl_price"] == pytest.approx(97.9)
    assert opened["fees_r"] == pytest.approx(0.0002 * 99.9 * 100 / 200)


def test_maker_timeout_falls_back_to_taker_within_the_slippage_cap():
    """The unfilled maker entry is cancelled at the timeout; the market fallback walks the book: 40 at
    the best ask, the other 60 at the next level."""
    h = Harness(
        ExecutorConfig(entry=EntryPolicy(kind="maker_first", maker_timeout_ms=4000, fallback_slippage_cap_bps=10))
    )
    h.book(99.9, 100.0, T0)
    h.signal()
    h.clock(T0 + 3999)
    assert all(o["state"] != "CANCELED" for o in h.of("orders"))
    h.now = T0 + 3999
    h.ex.on_book(  # mid 100.05: 5 bps from the signal price
        book_levels([(100.0, 1.0)], [(100.1, 40.0), (100.2, 500.0)], T0 + 3999), h.now
    )
    h.clock(T0 + 4000)
    states = [(o["client_order_id"][-2:], o["state"], o["reason"]) for o in h.of("orders")]
    assert states[-3:] == [("en", "CANCELED", "maker_timeout"), ("ef", "PENDING_NEW", None), ("ef", "NEW", None)]
    h.trade(100.1, T0 + 5 * S, qty=0.01)  # the walk does not depend on the trade's size
    fills = h.fills()
    assert [(f["price"], f["qty"], f["liquidity"]) for f in fills] == [(100.1, 40.0, "taker"), (100.2, 60.0, "taker")]
    assert all(f["client_order_id"].endswith("-ef") for f in fills)
    # levels anchor at the market price (the trade); the walk's second level is slippage: 60 x 0.1
    # over 100 units, in R of 2.0
    [opened] = h.positions("opened")
    assert opened["entry_price"] == 100.1 and opened["slippage_r"] == pytest.approx(60 * 0.1 / 100 / 2.0)


def test_maker_timeout_beyond_the_slippage_cap_gives_up():
    h = Harness(ExecutorConfig(entry=EntryPolicy(kind="maker_first", fallback_slippage_cap_bps=10)))
    h.book(99.9, 100.0, T0)
    h.signal()
    h.book(100.2, 100.3, T0 + S)  # mid 100.25: 25 bps away
    h.clock(T0 + 5 * S)
    assert [r["decision"] for r in h.risk("slippage_cap")] == ["block"]
    h.trade(100.25, T0 + 6 * S)
    assert not h.fills() and not h.ex.entries
    assert h.signal(eval_time=T0 + 7 * S).allowed  # the slot is free again


def test_restart_restores_positions_and_refuses_the_same_signal_again():
    cfg = ExecutorConfig()
    h = Harness(cfg)
    rec = signal_record()
    h.signal_rec(rec)
    h.trade(100.0, T0 + S)
    h.trade(102.0, T0 + 2 * S)
    h.trade(102.0, T0 + 3 * S)  # TP1 filled, stop at break-even
    h.signal(strategy="other")  # a second position, still pending at the "crash"
    records = list(h.sink.records)

    sink = ListSink()
    ex = Executor(cfg, "paper", PaperBroker(cfg.fees, cfg.paper), sink, T0 + 4 * S)
    summary = ex.restore(
        [r for t, _, r in records if t == "positions"],
        [r for t, _, r in records if t == "orders"],
        [r for t, _, r in records if t == "risk.events"],
        T0 + 4 * S,
    )
    assert summary == {"positions": 1, "orders_resumed": 0, "orders_cancelled": 1}
    assert [o["reason"] for o in sink.of("orders")] == ["executor_restart"]
    trade = {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "first_trade_id": 1,
        "last_trade_id": 1,
        "qty": 1.0,
        "taker_side": "SELL",
    }
    ex.on_trade(
        {
            **trade,
            "agg_id": 10,
            "price": 100.5,
            "event_time": T0 + 4 * S,
            "trade_time": T0 + 4 * S,
            "receive_time": T0 + 4 * S,
        },
        T0 + 4 * S,
    )
    assert ex.on_signal(rec, T0 + 4 * S).reason == "duplicate_signal"
    for i, price in enumerate((99.95, 99.9)):  # break-even stop, then its fill
        t = T0 + (5 + i) * S
        ex.on_trade({**trade, "agg_id": 11 + i, "price": price, "event_time": t, "trade_time": t, "receive_time": t}, t)
    [closed] = [p for p in sink.of("positions") if p["event"] == "closed"]
    # same as without the restart (see test_break_even_after_tp1): 0.5 - 0.0502375 - 0.025
    assert closed["exit_reason"] == "sl_be" and closed["pnl_r_net"] == pytest.approx(0.4247625)


def test_unreachable_exchange_blocks_entries_and_recovers():
    h = Harness()

    class FlakyBroker(PaperBroker):
        up = True

        @property
        def healthy(self) -> bool:
            return self.up

    h.broker = FlakyBroker(h.config.fees, h.config.paper)
    h.ex.broker = h.broker
    h.broker.up = False
    h.clock(T0)
    assert h.signal(strategy="a").reason == "exchange_down"
    h.broker.up = True
    h.clock(T0 + 1)
    assert [(r["decision"], r["reason"]) for r in h.risk() if r["scope"] == "global"] == [
        ("block", "exchange_down"),
        ("resume", "exchange_up"),
    ]
    assert h.signal(strategy="b", eval_time=T0 + 1).allowed


@pytest.mark.parametrize("stale_s", [30, 2 * 86_400])
def test_clock_quiet_until_ends_where_clock_quiet_first_turns_false(stale_s):
    """The backtest runner skips ticks before ``clock_quiet_until`` without asking ``clock_quiet``:
    the two must agree to the millisecond (staleness of the newest data, the UTC day change)."""
    day = 86_400_000
    h = Harness(ExecutorConfig(risk=RiskLimits(stale_market_data_s=stale_s)))  # a trade at T0 - 1 s
    assert h.ex.clock_quiet_until(T0) == T0  # the market was never flagged fresh: a tick may act
    h.clock(T0)
    until = h.ex.clock_quiet_until(T0)
    expected = T0 - S + stale_s * 1000 + 1 if stale_s == 30 else (T0 // day + 1) * day
    assert until == expected
    assert all(h.ex.clock_quiet(t) for t in range(T0, until, max(1, (until - T0) // 1000)))
    assert h.ex.clock_quiet(until - 1) and not h.ex.clock_quiet(until)
    changes = h.ex.changes
    h.trade(100.0, T0 + S)  # newer data only moves the end later
    assert h.ex.changes == changes and h.ex.clock_quiet_until(T0 + S) >= until
    assert h.ex.busy_markets() == set()
    h.signal(eval_time=T0 + 2 * S)
    assert h.ex.changes > changes and h.ex.busy_markets() == {"binance:BTCUSDT"}
    assert h.ex.clock_quiet_until(T0 + 2 * S) == T0 + 2 * S  # an entry in flight


def test_orders_carry_the_mid_at_send_from_the_book_else_the_last_trade():
    h = Harness()  # one trade at 100.0 before the signal, no book yet
    h.signal()
    [entry] = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    assert (entry["mid_at_send"], entry["mid_source"]) == (100.0, "last_trade")
    h.trade(100.5, T0 + S)  # fills the entry; the position is open
    assert all(o["mid_at_send"] == 100.0 for o in h.of("orders"))  # every transition: the mid when sent
    h.book(102.9, 103.3, T0 + 2 * S)
    h.trade(103.0, T0 + 3 * S)  # crosses TP1 (entry 100.5 + 1R of 2.0): the tp1 exit is sent
    [tp1] = [o for o in h.of("orders") if o["leg"] == "tp1" and o["state"] == "PENDING_NEW"]
    assert tp1["mid_at_send"] == (102.9 + 103.3) / 2 and tp1["mid_source"] == "book"


def test_a_stale_book_gives_way_to_the_last_trade_for_the_mid_at_send():
    h = Harness()
    h.book(99.0, 99.2, T0 - 10 * S)  # older than the next trade by more than paper.book_max_age_ms (5 s)
    h.trade(100.4, T0 - S)
    h.signal()
    [entry] = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    assert (entry["mid_at_send"], entry["mid_source"]) == (100.4, "last_trade")
