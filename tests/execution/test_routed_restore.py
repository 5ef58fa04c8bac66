"""A routed entry cut by an executor restart (``execution.routed_restore``): the new executor rebuilds its
plan from its orders' reasons and the routing table and works it on as the old one would have: a resting
maker keeps its wait from its send time, the slices go on with the next attempt ids (no id twice), an
entry between slices sends its next one when it was due, and the position opens with every fill. Pure:
the executor, the paper broker and in-memory records (no Kafka, no database).

Default table (``stream_apps.core.routing_table``), 1R = 200 USDT (2 % of 10,000), signal price 100:
risk 50 -> qty 4, notional 400: bucket 200-500, maker 2 s, 2 slices 600 ms apart; risk 25 -> qty 8,
notional 800: bucket 500-1000, maker 2.5 s, 3 slices 800 ms apart; jitter 0.2, seed 0. Fees: maker
0.02 %, taker 0.05 %.
"""

from __future__ import annotations

from typing import Any

import pytest

from execution.broker import BrokerEvent, OrderRequest
from execution.client_ids import client_order_id, position_id
from execution.config import ExecutorConfig
from execution.domain import Signal
from execution.executor import Executor
from execution.paper_broker import PaperBroker
from execution.routing import RoutePlan, jitter_key, parse_route, slice_delay_ms
from review.routing_tca import parse_reason
from tests.support.execution import EXCHANGE, SYMBOL, T0, Harness, signal_record

MAKER_FEE, TAKER_FEE = 0.0002, 0.0005


def key(rec: dict[str, Any]) -> str:
    """The jitter key of a signal record (``execution.routing.jitter_key``)."""
    return jitter_key(Signal.from_record(rec))


def routed(theta: float = 0.5) -> ExecutorConfig:
    return ExecutorConfig.model_validate({"entry": {"kind": "routed"}, "routing": {"taker_below_fill_ratio": theta}})


def book(h: Harness, t: int, bid_qty: float = 1e6, bid: float = 99.9, ask: float = 100.0) -> None:
    """Bid 99.9 (``bid_qty`` resting there, ahead of a maker bid), ask 100.0 with 1e6 (a slice fills at 100)."""
    h.now = max(h.now, t)
    rec = {"exchange": EXCHANGE, "symbol": SYMBOL, "last_update_id": t, "event_time": t, "receive_time": t}
    rec |= {"bids": [{"price": bid, "qty": bid_qty}], "asks": [{"price": ask, "qty": 1e6}], "obi_10": 0.0}
    h.ex.on_book(rec, h.now)


def restarted(
    h: Harness,
    now: int,
    *signals: dict[str, Any],
    cut: bool = True,
    mode: str = "paper",
    broker: Any = None,
    fills: list[dict[str, Any]] | None = None,
) -> tuple[Harness, dict[str, int]]:
    """A new executor restored at ``now`` from what ``h``'s published (the signals readable by id; the
    fills records ``fills`` instead of those published, when given)."""
    by_id = {s["signal_id"]: s for s in signals}
    new = Harness(h.config, now=now, warm=False)
    if broker is not None:
        new.broker = broker
    new.ex = Executor(h.config, mode, new.broker, new.sink, now)
    records = list(h.sink.records)
    summary = new.ex.restore(
        [r for t, _, r in records if t == "positions"],
        [r for t, _, r in records if t == "orders"],
        [r for t, _, r in records if t == "risk.events"],
        now,
        signals=lambda ids: {sid: by_id[sid] for sid in ids if sid in by_id},
        committed_cut=cut,
        fills=[r for t, _, r in records if t == "fills"] if fills is None else fills,
    )
    new.now = now
    return new, summary


def sent(h: Harness) -> list[dict[str, Any]]:
    return [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]


def the_plan(h: Harness, signal: dict[str, Any]) -> RoutePlan:
    plan = h.ex.entries[position_id(signal["signal_id"])].plan
    assert plan is not None
    return plan


def test_every_order_of_a_routed_entry_carries_its_plan_and_the_tca_still_reads_it():
    maker = "route 200-500 n=400.00 maker 0/2 held=1"
    found = parse_route(maker)
    assert found is not None
    assert (found.label, found.notional, found.role, found.slice_no, found.slices, found.note) == (
        "200-500",
        400.0,
        "maker",
        0,
        2,
        "held=1",
    )
    taker = parse_route("route 1000+ n=1234.50 taker 2/8 thin_book 500 degraded:market_only")
    assert taker is not None and (taker.slice_no, taker.slices, taker.note) == (
        2,
        8,
        "thin_book 500 degraded:market_only",
    )
    old = parse_route("route 0-200 n=12.00 maker")  # written before the maker reason carried the count
    assert old is not None and (old.slice_no, old.slices, old.note) == (None, None, "")
    assert parse_reason(maker) == (400.0, "maker")
    assert parse_reason("route 500-1000 n=800.00 taker 2/3") == (800.0, "taker")
    assert parse_route("add_on_1") is None


def test_a_maker_resting_at_a_restart_keeps_its_wait_from_its_send_time_and_goes_on_as_without_it():
    """Our bid of 4 at 99.9 behind 1 resting; a sell of 2 there fills 1 of ours (1/4 < theta 0.5), the
    executor restarts 1 s after the limit was sent. The new one cancels it 2 s after it was sent (not
    after the restart), sends the other 3 in the bucket's 2 slices (ids -ef, -ef1) and opens 4, as the
    executor that did not restart does on the same inputs."""
    sig = signal_record(risk=50.0)
    sid = sig["signal_id"]
    h = Harness(routed(0.5))
    book(h, T0, bid_qty=1.0)
    h.signal_rec(sig)
    h.trade(99.9, T0 + 500, qty=2.0, taker_side="SELL")
    assert [f["qty"] for f in h.fills()] == [1.0]
    plan = the_plan(h, sig)
    new, summary = restarted(h, T0 + 1000, sig)
    assert summary == {"positions": 0, "orders_resumed": 1, "orders_cancelled": 0}
    [entry] = new.ex.entries.values()
    assert (entry.plan, entry.submitted_ms, entry.slices_sent, entry.filled_qty) == (plan, T0, 0, 1.0)
    assert entry.request.post_only and entry.request.price == 99.9

    delay = slice_delay_ms(600, 0.2, 0, key(sig), 1)
    for run in (h, new):  # the same inputs to the executor that went on and to the restarted one
        book(run, T0 + 1500, bid_qty=1.0)
        run.clock(T0 + 1999)
    assert not sent(new)  # the wait counts from T0, not from the restart
    for run in (h, new):
        run.clock(T0 + 2000)
        run.trade(100.0, T0 + 2100)
        run.clock(T0 + 2100 + delay)
        run.trade(100.0, T0 + 3000)
    [cancel] = [o for o in new.of("orders") if o["state"] == "CANCELED"]
    assert (cancel["client_order_id"], cancel["reason"]) == (client_order_id(sid, "entry"), "maker_timeout")
    assert [(o["client_order_id"], o["qty"], o["reason"]) for o in sent(new)] == [
        (client_order_id(sid, "entry_fallback"), 1.5, "route 200-500 n=400.00 taker 1/2"),
        (client_order_id(sid, "entry_fallback", 1), 1.5, "route 200-500 n=400.00 taker 2/2"),
    ]
    [opened] = new.positions("opened")
    assert opened["qty"] == pytest.approx(4.0)
    assert opened["entry_price"] == pytest.approx((1 * 99.9 + 3 * 100.0) / 4)
    assert opened["fees_r"] == pytest.approx((MAKER_FEE * 99.9 * 1 + TAKER_FEE * 100.0 * 3) / 200)
    [same] = h.positions("opened")
    for field in ("qty", "entry_price", "fees_r", "r_usd", "sl_price", "tp1_price"):
        assert opened[field] == pytest.approx(same[field]), field
    assert not new.ex.entries


def _first_slice_filled() -> tuple[Harness, dict[str, Any]]:
    """Qty 8: the maker's 2.5 s end with nothing filled, slice 1 of 3 (8/3) fills at 100 at T0 + 2.6 s."""
    sig = signal_record(risk=25.0)
    h = Harness(routed(0.5))
    book(h, T0)
    h.signal_rec(sig)
    h.clock(T0 + 2500)
    h.trade(100.0, T0 + 2600)
    assert [f["qty"] for f in h.fills()] == [pytest.approx(8 / 3)]
    return h, sig


def _finish_after(new: Harness, sig: dict[str, Any], t: int) -> None:
    """Slice 2 was sent at ``t``: it fills 100 ms later, slice 3 goes out after its delay and fills."""
    new.trade(100.0, t + 100)
    d2 = slice_delay_ms(800, 0.2, 0, key(sig), 2)
    new.clock(t + 100 + d2 - 1)
    assert len(sent(new)) == 1
    new.clock(t + 100 + d2)
    new.trade(100.0, t + 200 + d2)


@pytest.mark.parametrize("late", [False, True])
def test_an_entry_between_slices_at_a_restart_sends_its_next_slice_when_it_was_due(late):
    """Slice 1 filled at T0 + 2.6 s, slice 2 due d1 later; the restart comes before that (the slice goes
    out at the due time) or 5 s after it (at once). Slices 2 and 3 are the -ef1 and -ef2 orders."""
    h, sig = _first_slice_filled()
    sid = sig["signal_id"]
    plan = the_plan(h, sig)
    due = T0 + 2600 + slice_delay_ms(800, 0.2, 0, key(sig), 1)
    restart = due + 5000 if late else T0 + 2700
    assert due > T0 + 2700
    new, summary = restarted(h, restart, sig)
    assert summary == {"positions": 0, "orders_resumed": 0, "orders_cancelled": 0}
    [entry] = new.ex.entries.values()
    assert (entry.plan, entry.slices_sent, entry.due_ms) == (plan, 1, due)
    assert entry.filled_qty == pytest.approx(8 / 3)
    book(new, restart)
    if not late:
        new.clock(due - 1)
        assert not sent(new)
    now = max(due, restart)
    new.clock(now)
    [second] = sent(new)
    assert (second["client_order_id"], second["qty"], second["reason"]) == (
        client_order_id(sid, "entry_fallback", 1),
        pytest.approx(8 / 3),
        "route 500-1000 n=800.00 taker 2/3",
    )
    _finish_after(new, sig, now)
    ids = [o["client_order_id"] for o in sent(h) + sent(new)]
    assert ids == [client_order_id(sid, "entry")] + [client_order_id(sid, "entry_fallback", k) for k in range(3)]
    [opened] = new.positions("opened")
    assert (opened["qty"], opened["entry_price"], opened["r_usd"]) == pytest.approx((8.0, 100.0, 200.0))
    assert opened["fees_r"] == pytest.approx(TAKER_FEE * 100.0 * 8 / 200)


def test_a_slice_in_flight_at_a_restart_is_re_entered_and_the_slices_after_it_follow():
    sig = signal_record(risk=25.0)
    sid = sig["signal_id"]
    h = Harness(routed(0.5))
    book(h, T0)
    h.signal_rec(sig)
    h.clock(T0 + 2500)  # slice 1 sent, no trade yet
    new, summary = restarted(h, T0 + 2550, sig)
    assert summary == {"positions": 0, "orders_resumed": 1, "orders_cancelled": 0}
    [entry] = new.ex.entries.values()
    assert (entry.request.client_order_id, entry.slices_sent, entry.submitted_ms) == (
        client_order_id(sid, "entry_fallback"),
        1,
        T0 + 2500,
    )
    book(new, T0 + 2550)
    new.trade(100.0, T0 + 2600)  # fills slice 1 in the new paper book
    assert [(f["client_order_id"], f["qty"]) for f in new.fills()] == [
        (client_order_id(sid, "entry_fallback"), pytest.approx(8 / 3))
    ]
    due = T0 + 2600 + slice_delay_ms(800, 0.2, 0, key(sig), 1)
    new.clock(due - 1)
    assert not sent(new)
    new.clock(due)
    assert [o["client_order_id"] for o in sent(new)] == [client_order_id(sid, "entry_fallback", 1)]
    _finish_after(new, sig, due)
    [opened] = new.positions("opened")
    assert (opened["qty"], opened["entry_price"]) == pytest.approx((8.0, 100.0))


def test_a_restored_entry_replays_its_fills_records_one_by_one_else_takes_its_orders_record():
    """Slice 1 of 3 (8/3) walks the ask: 1 at 100.0, 5/3 at 100.1, both against the trade at 100.0 (the
    market price). Restarted between slices, the entry gets those two executions as the uninterrupted
    run has them (price, quantity, fee, market price, trade id: equal, floats bit for bit), a repeated
    or other mode's record once or not at all; fills written before they carried the market price take
    the order's average market price. Fills that do not add up to the orders
    record (one lost) are not trusted: one execution at the record's averages, as before fills were read."""
    sig = signal_record(risk=25.0)
    h = Harness(routed(0.5))
    book(h, T0)
    h.signal_rec(sig)
    rec = {"exchange": EXCHANGE, "symbol": SYMBOL, "last_update_id": 1, "event_time": T0 + 2400, "receive_time": 0}
    rec |= {"bids": [{"price": 99.9, "qty": 1e6}], "asks": [{"price": 100.0, "qty": 1.0}, {"price": 100.1, "qty": 1e6}]}
    h.ex.on_book(rec, T0 + 2400)
    h.clock(T0 + 2500)
    h.trade(100.0, T0 + 2600)
    fills = h.fills()
    assert [(f["price"], f["qty"], f["market_price"]) for f in fills] == [
        (100.0, 1.0, 100.0),
        (100.1, 8 / 3 - 1, 100.0),
    ]
    [entry] = h.ex.entries.values()
    [order] = [o for o in h.of("orders") if o["state"] == "FILLED"]

    def restored(fill_records: list[dict[str, Any]]) -> list[Any]:
        new, _ = restarted(h, T0 + 2700, sig, fills=fill_records)
        [again] = new.ex.entries.values()
        return again.fills

    other_mode = {**fills[0], "mode": "live"}
    assert restored([other_mode, fills[0], fills[0], fills[1]]) == entry.fills  # the Execution objects: exact
    older = restored([{k: v for k, v in f.items() if k != "market_price"} for f in fills])
    assert [f.market_price for f in older] == [order["avg_market_price"]] * 2
    assert order["avg_market_price"] == pytest.approx(100.0)
    [one] = restored(fills[:1])
    assert (one.qty, one.price, one.market_price, one.trade_id) == (
        order["filled_qty"],
        order["avg_fill_price"],
        order["avg_market_price"],
        f"restored:{order['client_order_id']}",
    )
    assert one.fee == pytest.approx(TAKER_FEE * (100.0 + 100.1 * 5 / 3))


def test_an_entry_whose_signal_is_too_old_at_the_restart_keeps_what_filled():
    """Restarted 61 s after the signal (max_signal_age_s 60): no slice is sent any more; the position
    opens with the 8/3 filled, its R scaled to it (200 x 1/3)."""
    h, sig = _first_slice_filled()
    new, summary = restarted(h, T0 + 61_000, sig)
    assert not new.ex.entries and not sent(new)
    [opened] = new.positions("opened")
    assert (opened["qty"], opened["entry_price"]) == pytest.approx((8 / 3, 100.0))
    assert opened["r_usd"] == pytest.approx(200.0 / 3)


def test_paper_without_a_committed_cut_opens_what_a_routed_entry_filled():
    """Paper without a committed cut does not continue an entry (as before): the maker in flight is
    cancelled (executor_restart, its record keeping the 1 it filled) and, now, the 1 filled at 99.9
    opens a position (R 200 x 1/4) instead of being lost; an entry between slices opens its 8/3."""
    sig = signal_record(risk=50.0)
    h = Harness(routed(0.5))
    book(h, T0, bid_qty=1.0)
    h.signal_rec(sig)
    h.trade(99.9, T0 + 500, qty=2.0, taker_side="SELL")
    new, summary = restarted(h, T0 + 1000, sig, cut=False)
    assert summary == {"positions": 1, "orders_resumed": 0, "orders_cancelled": 1}
    [cancel] = [o for o in new.of("orders") if o["state"] == "CANCELED"]
    assert (cancel["reason"], cancel["filled_qty"], cancel["avg_fill_price"]) == ("executor_restart", 1.0, 99.9)
    [opened] = new.positions("opened")
    assert (opened["qty"], opened["entry_price"], opened["r_usd"]) == (1.0, 99.9, pytest.approx(50.0))
    assert opened["fees_r"] == pytest.approx(MAKER_FEE * 99.9 / 50.0)
    assert not new.ex.entries and len(new.ex.positions) == 1

    h, sig = _first_slice_filled()
    new, _ = restarted(h, T0 + 2700, sig, cut=False)
    assert not new.ex.entries and not sent(new)
    [opened] = new.positions("opened")
    assert opened["qty"] == pytest.approx(8 / 3)


def test_an_entry_cancelled_between_slices_opens_what_filled_and_is_not_resumed_by_a_restart():
    """A flip (SHORT, is_flip) while the LONG entry waits for slice 2: the entry is cancelled with no
    order open; its 8/3 filled opens a position (before this, they were dropped and a restart would
    have taken the entry for one between slices). The restart then rebuilds only the SHORT's maker."""
    h, sig = _first_slice_filled()
    flip = signal_record(risk=25.0, direction="SHORT", is_flip=True, eval_time=T0 + 2700)
    assert h.signal_rec(flip).allowed
    [opened] = h.positions("opened")
    assert (opened["position_id"], opened["direction"]) == (position_id(sig["signal_id"]), "LONG")
    assert opened["qty"] == pytest.approx(8 / 3) and opened["r_usd"] == pytest.approx(200.0 / 3)
    new, summary = restarted(h, T0 + 2800, sig, flip)
    assert summary == {"positions": 1, "orders_resumed": 1, "orders_cancelled": 0}
    [entry] = new.ex.entries.values()
    assert entry.signal.signal_id == flip["signal_id"] and entry.request.client_order_id == client_order_id(
        flip["signal_id"], "entry"
    )
    book(new, T0 + 2800)
    new.clock(T0 + 2800 + slice_delay_ms(800, 0.2, 0, key(sig), 1))
    assert not sent(new)  # nothing for the LONG's entry


def test_a_taker_phase_refused_before_a_restart_stays_refused():
    """The maker's 2 s end with nothing filled while the mid is 101.05 (105 bp from the signal's 100, cap
    10 bp): no slice, ``slippage_cap``. Restarted with the price back at 100, the entry is not resumed."""
    sig = signal_record(risk=50.0)
    h = Harness(routed(0.5))
    book(h, T0)
    h.signal_rec(sig)
    book(h, T0 + 1900, bid=101.0, ask=101.1)
    h.clock(T0 + 2000)
    assert [r["reason"] for r in h.risk("slippage_cap")] == ["slippage_cap"] and len(sent(h)) == 1
    new, summary = restarted(h, T0 + 2100, sig)
    assert summary == {"positions": 0, "orders_resumed": 0, "orders_cancelled": 0}
    book(new, T0 + 2100)
    new.clock(T0 + 5000)
    assert not new.ex.entries and not sent(new) and not new.positions()


class RestingExchange(PaperBroker):
    """An exchange that still holds what the previous run sent: ``resume`` finds the order resting
    (put in this paper book, silently) with no fill since, as the exchange would report it."""

    def resume(self, request: OrderRequest, now_ms: int) -> list[BrokerEvent]:
        self.submit(request, now_ms)
        return []


def test_exchange_modes_follow_a_resting_maker_and_its_wait_ends_from_its_send_time():
    sig = signal_record(risk=50.0)
    sid = sig["signal_id"]
    config = routed(0.5)
    h = Harness(config, mode="testnet")
    book(h, T0)
    h.signal_rec(sig)
    plan = the_plan(h, sig)
    new, summary = restarted(h, T0 + 1000, sig, mode="testnet", broker=RestingExchange(config.fees, config.paper))
    assert summary["orders_resumed"] == 1
    [entry] = new.ex.entries.values()
    assert (entry.plan, entry.submitted_ms) == (plan, T0) and new.broker.is_open(client_order_id(sid, "entry"))
    book(new, T0 + 1500)
    new.trade(100.0, T0 + 1600)
    new.clock(T0 + 1999)
    assert not sent(new)
    new.clock(T0 + 2000)
    assert [(o["client_order_id"], o["qty"]) for o in sent(new)] == [(client_order_id(sid, "entry_fallback"), 2.0)]


def test_exchange_modes_cancel_the_resting_maker_of_a_signal_too_old_to_be_taken():
    sig = signal_record(risk=50.0)
    config = routed(0.5)
    h = Harness(config, mode="testnet")
    book(h, T0)
    h.signal_rec(sig)
    new, _ = restarted(h, T0 + 61_000, sig, mode="testnet", broker=RestingExchange(config.fees, config.paper))
    [cancel] = [o for o in new.of("orders") if o["state"] == "CANCELED"]
    assert (cancel["client_order_id"], cancel["reason"]) == (
        client_order_id(sig["signal_id"], "entry"),
        "executor_restart",
    )
    assert not new.ex.entries and not new.positions() and not new.broker.open_orders()
