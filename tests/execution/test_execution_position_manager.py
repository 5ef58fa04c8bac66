"""The position state machine on its own: triggers, ordering, deferred and rejected exits, restore.

Setup as in test_execution_pnl.py: LONG from 100, R = 2, TP1 102 (1R), TP2 104 (2R), r_usd 200, qty 100.
"""

from __future__ import annotations

import pytest

from execution.broker import Execution, OrderUpdate
from execution.config import ExecutorConfig
from execution.domain import Signal
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from execution.position_manager import Position
from tests.support.execution import T0, Harness, signal_record

S = 1000


def fill(cid: str, side: str, price: float, qty: float, t: int, market: float | None = None, rate: float = 0.0005):
    return Execution(
        cid,
        "P" + cid,
        f"p:{t}:{cid}",
        side,
        price,
        qty,
        rate * price * qty,
        "USDT",
        "taker",
        price if market is None else market,
        t,
    )


def done(cid: str, qty: float, price: float, t: int, state: str = "FILLED") -> OrderUpdate:
    return OrderUpdate(cid, state, qty if state == "FILLED" else 0.0, price, "P" + cid, t)


def open_long(timeout_ms: int = 240 * 60_000) -> Position:
    sig = Signal.from_record(signal_record())
    return Position.open(
        position_id="p1",
        signal=sig,
        mode="paper",
        fills=[fill("e", "BUY", 100.0, 100.0, T0)],
        r_usd=200.0,
        timeout_ms=timeout_ms,
    )


def test_levels_are_reanchored_at_the_entry_market_price():
    sig = Signal.from_record(signal_record(price=100.0))
    pos = Position.open(
        position_id="p",
        signal=sig,
        mode="paper",
        fills=[fill("e", "BUY", 100.55, 60.0, T0, market=100.5), fill("e", "BUY", 101.02, 40.0, T0, market=101.0)],
        r_usd=200.0,
        timeout_ms=60_000,
    )
    # anchor = (60 x 100.5 + 40 x 101) / 100 = 100.7; SL 98.7, TP1 102.7, TP2 104.7
    assert pos.entry == pytest.approx(100.7)
    assert (pos.stop, pos.plan.tp1, pos.plan.tp2) == pytest.approx((98.7, 102.7, 104.7))
    # entry slippage: 0.6 x 0.05 / 2 + 0.4 x 0.02 / 2 = 0.015 + 0.004 R
    assert pos.slippage_r == pytest.approx(0.019)


def test_triggers_on_every_tick_in_priority_and_not_while_an_exit_is_in_flight():
    pos = open_long(timeout_ms=60_000)
    assert pos.on_trade(101.9, T0 + S) is None
    assert pos.on_trade(99.0, T0 - 1) is None  # older than the position: ignored
    intent = pos.on_trade(102.0, T0 + 2 * S)
    assert (intent.leg, intent.reason, intent.qty, intent.reference) == ("tp1", "tp1", 50.0, 102.0)
    pos.exit_sent(intent, "t1")
    assert pos.on_trade(90.0, T0 + 3 * S) is None  # one exit at a time
    pos.on_execution(fill("t1", "SELL", 102.0, 50.0, T0 + 4 * S))
    assert pos.on_order_update(done("t1", 50.0, 102.0, T0 + 4 * S)) == (["tp1"], None)
    assert pos.stop == 100.0 and pos.qty_open == 50.0
    assert pos.on_trade(103.0, T0 + 5 * S) is None
    sl = pos.on_trade(100.0, T0 + 6 * S)  # the break-even stop wins over the timeout
    assert (sl.leg, sl.reason, sl.qty) == ("sl", "sl_be", 50.0)


def test_timeout_uses_trade_time():
    pos = open_long(timeout_ms=60_000)
    assert pos.on_trade(100.1, T0 + 59_999) is None
    intent = pos.on_trade(100.1, T0 + 60_000)
    assert (intent.leg, intent.reason, intent.reference) == ("exit", "timeout", None)


def test_a_close_requested_while_tp1_is_in_flight_runs_after_it():
    pos = open_long()
    tp1 = pos.on_trade(102.0, T0 + S)
    pos.exit_sent(tp1, "t1")
    assert pos.request_close("signal_flip", T0 + 2 * S) is None  # deferred
    pos.on_execution(fill("t1", "SELL", 102.0, 50.0, T0 + 3 * S))
    kinds, follow = pos.on_order_update(done("t1", 50.0, 102.0, T0 + 3 * S))
    assert kinds == ["tp1"] and (follow.leg, follow.reason, follow.qty) == ("exit", "signal_flip", 50.0)
    pos.exit_sent(follow, "ex")
    pos.on_execution(fill("ex", "SELL", 101.0, 50.0, T0 + 4 * S))
    kinds, _ = pos.on_order_update(done("ex", 50.0, 101.0, T0 + 4 * S))
    assert kinds == ["closed"] and pos.exit_reason == "signal_flip"
    assert pos.result.gross_r == pytest.approx(0.75)  # 0.5 x 1 + 0.5 x (101 - 100) / 2


def test_a_rejected_exit_is_rearmed_with_a_new_client_id():
    h = Harness()

    class RejectFirstExit(PaperBroker):
        rejected = 0

        def submit(self, request, now_ms):
            if request.reduce_only and not self.rejected:
                self.rejected += 1
                return [OrderUpdate(request.client_order_id, "REJECTED", 0.0, None, None, now_ms, "margin")]
            return super().submit(request, now_ms)

    h.broker = RejectFirstExit(h.config.fees, h.config.paper)
    h.ex.broker = h.broker
    h.signal()
    h.trade(100.0, T0 + S)
    h.trade(97.0, T0 + 2 * S)  # SL: first try rejected
    h.trade(97.0, T0 + 3 * S)  # evaluated again: second try sent
    h.trade(97.0, T0 + 4 * S)  # and filled
    sl_orders = [o for o in h.of("orders") if o["leg"] == "sl"]
    ids = list(dict.fromkeys(o["client_order_id"] for o in sl_orders))
    assert len(ids) == 2 and ids[1] == ids[0] + "1"
    assert [o["state"] for o in sl_orders if o["client_order_id"] == ids[0]] == ["PENDING_NEW", "REJECTED"]
    assert h.closed()["exit_reason"] == "sl"


def test_restore_resumes_an_exit_that_was_in_flight():
    cfg = ExecutorConfig()
    h = Harness(cfg)
    h.signal()
    h.trade(100.0, T0 + S)
    h.trade(97.9, T0 + 2 * S)  # SL order sent, not filled yet: the process dies here
    records = list(h.sink.records)
    sink = ListSink()
    ex = Executor(cfg, "paper", PaperBroker(cfg.fees, cfg.paper), sink, T0 + 3 * S)
    summary = ex.restore(
        [r for t, _, r in records if t == "positions"], [r for t, _, r in records if t == "orders"], [], T0 + 3 * S
    )
    assert summary == {"positions": 1, "orders_resumed": 1, "orders_cancelled": 0}
    ex.on_trade(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "agg_id": 77,
            "price": 97.8,
            "qty": 1.0,
            "first_trade_id": 1,
            "last_trade_id": 1,
            "event_time": T0 + 3 * S,
            "trade_time": T0 + 3 * S,
            "receive_time": T0 + 3 * S,
            "taker_side": "SELL",
        },
        T0 + 3 * S,
    )
    [closed] = [p for p in sink.of("positions") if p["event"] == "closed"]
    assert closed["exit_reason"] == "sl" and closed["pnl_r_net"] == pytest.approx(-1.14945)  # as without the crash


def test_restore_recovers_r_and_levels_from_the_opened_event():
    h = Harness()
    h.signal(tier="heavy", risk=262.0 * 1.5, price=65_703.0, tp1_r=0.75, tp2_r=1.5)
    h.trade(65_710.0, T0 + S)
    [opened] = h.positions("opened")
    pos = Position.restore(opened, None, timeout_ms=240 * 60_000)
    assert pos.plan.risk_distance == pytest.approx(393.0, rel=1e-12)
    assert (pos.plan.tp1_r, pos.plan.tp2_r, pos.plan.sl_r) == pytest.approx((0.75, 1.5, 1.0), rel=1e-9)
    assert pos.entry == 65_710.0 and pos.qty_open == pytest.approx(300.0 / 393.0)
