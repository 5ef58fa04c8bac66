"""The Binance broker against the fake exchange's order API, over real sockets on 127.0.0.1.

The fake runs on its own event-loop thread (the broker is blocking, as the executor calls it); market
prices are posted to its control API so every fill price is known in advance. The filters are the
real 2021 exchangeInfo (BTCUSDT: tick 0.01, step 0.001, min notional 5).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal as D

import pytest
import structlog
from pydantic import SecretStr

from execution.binance_broker import AmendRejected, BinanceBroker
from execution.broker import Execution, OrderRequest, OrderUpdate
from execution.config import EntryPolicy, ExecutorConfig
from execution.exchange_filters import SymbolFilters
from execution.executor import Executor, ListSink
from execution.reconcile import Reconciler
from fake_exchange.orders import TEST_API_KEY, TEST_API_SECRET
from tests.support.execution import book_record, signal_record, trade_record
from tests.support.fake_exchange import SYM, FakeOnThread

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def fake():
    f = FakeOnThread()
    f.market(bid=50000.0, ask=50000.1, price=50000.0, qty=0.0, mark=50000.0)
    yield f
    f.stop()


@pytest.fixture
def connect(fake):
    made = []

    def make(**kw) -> BinanceBroker:
        b = BinanceBroker.connect(
            "testnet", fake.rest_url, fake.ws_url, SecretStr(TEST_API_KEY), SecretStr(TEST_API_SECRET), **kw
        )
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


def now() -> int:
    return int(time.time() * 1000)


def poll_until(broker, done, timeout=3.0) -> list:
    events: list = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += broker.poll(now())
        if done(events):
            return events
        time.sleep(0.01)
    raise AssertionError(f"condition not reached; events: {events}")


def states(events) -> list[str]:
    return [e.state for e in events if isinstance(e, OrderUpdate)]


def req(cid, side="BUY", type_="LIMIT", qty=0.01, price=None, post_only=False, reduce_only=False):
    return OrderRequest(
        cid, "binance", SYM, side, type_, qty, price=price, post_only=post_only, reduce_only=reduce_only
    )


# ---------------------------------------------------------------------------------------------------
def test_place_amend_cancel_with_filters_applied(fake, connect):
    broker = connect()
    [new] = broker.submit(req("c-1", qty=0.0123456, price=49990.009, post_only=True), now())
    assert new.state == "NEW" and broker.is_open("c-1")
    [order] = fake.control("state")["open_orders"]
    # qty floored to the 0.001 step, post-only buy price floored to the 0.01 tick
    assert (order["clientOrderId"], D(order["origQty"]), D(order["price"]), order["timeInForce"]) == (
        "c-1",
        D("0.012"),
        D("49990.00"),
        "GTX",
    )
    broker.amend("c-1", now(), price=49980.006)
    assert D(fake.control("state")["open_orders"][0]["price"]) == D("49980.00")
    with pytest.raises(AmendRejected, match="-5022"):
        broker.amend("c-1", now(), price=50000.1)  # would take the ask
    events = broker.cancel("c-1", now(), "test_cancel")
    assert [(e.state, e.reason) for e in events] == [("CANCELED", "test_cancel")]
    assert not broker.is_open("c-1") and fake.control("state")["open_orders"] == []
    assert broker.cancel("c-1", now(), "again") == []


def test_rejects_local_filters_and_exchange_codes(fake, connect):
    broker = connect()
    [gtx] = broker.submit(req("r-gtx", price=50000.1, post_only=True), now())
    assert gtx.state == "REJECTED" and "-5022" in gtx.reason
    [tiny] = broker.submit(req("r-tiny", qty=0.0004, price=49000.0), now())
    assert tiny.state == "REJECTED" and "min_qty" in tiny.reason
    [small] = broker.submit(req("r-small", qty=0.001, price=4000.0), now())  # notional 4 < 5
    assert small.state == "REJECTED" and "min_notional" in small.reason
    sent = [cid for _, cid in fake.control("state")["order_requests"]]
    assert sent == ["r-gtx"]  # the filter rejects never left the process
    # with the filters loosened locally, the exchange's own check answers -4164 / -1111
    real = broker.filters[SYM]
    broker.filters[SYM] = SymbolFilters(
        **{**{s: getattr(real, s) for s in real.__slots__}, "min_notional": 0, "tick_size": real.tick_size / 1000}
    )
    [ex_small] = broker.submit(req("r-ex-small", qty=0.001, price=4000.0), now())
    assert ex_small.state == "REJECTED" and "-4164" in ex_small.reason
    [precision] = broker.submit(req("r-prec", qty=0.001, price=49000.005), now())
    assert precision.state == "REJECTED" and "-1111" in precision.reason
    [dup] = broker.submit(req("r-gtx", price=49000.0), now())
    assert dup.state == "REJECTED" and dup.reason == "duplicate client_order_id"


def test_partial_fills_from_the_user_stream(fake, connect):
    broker = connect()
    assert states(broker.submit(req("p-1", qty=0.010, price=49990.0, post_only=True), now())) == ["NEW"]
    fake.market(price=49989.0, qty=0.004)
    events = poll_until(broker, lambda ev: "PARTIALLY_FILLED" in states(ev))
    [fill] = [e for e in events if isinstance(e, Execution)]
    assert (fill.qty, fill.price, fill.liquidity) == (0.004, 49990.0, "maker")
    assert fill.fee == pytest.approx(0.0002 * 49990.0 * 0.004)  # fake maker fee 0.02 %
    fake.market(price=49988.0, qty=1.0)
    events = poll_until(broker, lambda ev: "FILLED" in states(ev))
    [fill2] = [e for e in events if isinstance(e, Execution)]
    [done] = [e for e in events if isinstance(e, OrderUpdate)]
    assert fill2.qty == pytest.approx(0.006) and done.filled_qty == pytest.approx(0.010)
    assert done.avg_fill_price == pytest.approx(49990.0) and fill2.trade_id != fill.trade_id
    assert not broker.is_open("p-1")


def test_stop_loss_is_a_reduce_only_stop_market_filled_as_taker(fake, connect):
    broker = connect()
    [rej] = broker.place_stop("sl-0", SYM, "SELL", 0.01, 49500.0, now())
    assert rej.state == "REJECTED" and "-2022" in rej.reason  # nothing to reduce yet
    opened = broker.submit(req("e-1", type_="MARKET", qty=0.01), now())
    poll_until(broker, lambda ev: "FILLED" in states(opened + ev))
    assert states(broker.place_stop("sl-1", SYM, "SELL", 0.01, 49500.009, now())) == ["NEW"]
    [stop] = fake.control("state")["open_orders"]
    assert (stop["type"], D(stop["stopPrice"]), stop["reduceOnly"], stop["workingType"]) == (
        "STOP_MARKET",
        D("49500.00"),
        True,
        "MARK_PRICE",
    )  # a sell stop never rounds towards the market
    fake.market(mark=49600.0)
    fake.market(mark=49499.0)
    events = poll_until(broker, lambda ev: "FILLED" in states(ev))
    [fill] = [e for e in events if isinstance(e, Execution)]
    assert (fill.side, fill.qty, fill.price, fill.liquidity) == ("SELL", 0.01, 49499.0, "taker")
    assert D(fake.control("state")["positions"][SYM]["amount"]) == 0


@pytest.mark.parametrize("mode", ["error_after", "timeout_after"])
def test_unknown_state_is_resolved_by_client_id_and_not_resent(fake, connect, mode):
    broker = connect(timeout_s=0.5)
    fake.control("faults", {"fail_next": 1, "mode": mode, "delay_s": 1.0})
    events = broker.submit(req("u-1", type_="MARKET", qty=0.02), now())
    events += poll_until(broker, lambda ev: "FILLED" in states(ev + events))
    st = fake.control("state")
    assert st["placements"] == {"u-1": 1}
    assert [m for m, c in st["order_requests"] if c == "u-1"] == ["POST"]  # queried, never re-sent
    fills = [e for e in events if isinstance(e, Execution)]
    assert sum(f.qty for f in fills) == pytest.approx(0.02) and len({f.trade_id for f in fills}) == len(fills)
    assert states(events)[0] == "NEW" and broker.healthy


def test_an_order_refused_before_acting_is_sent_again_with_the_same_id(fake, connect):
    broker = connect()
    fake.control("faults", {"fail_next": 1, "mode": "error_before"})
    events = broker.submit(req("u-2", price=49000.0), now())
    assert states(events) == ["NEW"]
    st = fake.control("state")
    assert st["placements"] == {"u-2": 1} and [c for _, c in st["order_requests"]] == ["u-2", "u-2"]


def test_restart_after_sending_finds_the_order_by_client_id(fake, connect):
    first = connect()
    first.submit(req("rs-en", type_="MARKET", qty=0.03), now())
    first.close()  # died before the fill was read or recorded
    second = connect()
    events = second.submit(req("rs-en", type_="MARKET", qty=0.03), now())
    assert states(events) == ["NEW", "FILLED"]
    [fill] = [e for e in events if isinstance(e, Execution)]
    assert (fill.qty, fill.price, fill.liquidity) == (0.03, 50000.0, "taker")
    assert fake.control("state")["placements"] == {"rs-en": 1}


@pytest.mark.parametrize("silent", [False, True], ids=["expiry-event", "silent-expiry"])
def test_an_expired_listen_key_is_replaced_and_a_fill_missed_meanwhile_is_found(fake, connect, silent):
    """A listen key dies after 60 min without a keepalive (a long outage, a suspended host). The broker
    opens a new key and stream whether Binance said so (``listenKeyExpired``) or not (the stream stays
    down and the keepalive answers -1125), and looks its open orders up by client id: a fill that
    happened while no stream was open is reported, once."""
    broker = connect(stream_check_after_s=0.3)
    assert states(broker.submit(req("lk-1", qty=0.01, price=49990.0, post_only=True), now())) == ["NEW"]
    assert fake.control("expire_listen_keys", {"silent": silent})["expired"] == 1
    deadline = time.monotonic() + 5
    while broker.stream.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not broker.healthy  # no stream: entries are blocked until it is back
    fake.market(price=49989.0, qty=1.0)  # fills while nobody listens
    events = poll_until(broker, lambda ev: "FILLED" in states(ev), timeout=10.0)
    fills = [e for e in events if isinstance(e, Execution)]
    assert [f.qty for f in fills] == [pytest.approx(0.01)] and fills[0].liquidity == "maker"
    assert broker.stream_renewals == 1 and broker.healthy
    assert fake.control("state")["streams"] == 1  # the new key's stream is open
    assert poll_until(broker, lambda ev: True) == [] and not broker.is_open("lk-1")  # reported once


def test_clock_outside_recv_window_is_resynced_and_retried(fake, connect):
    broker = connect()
    broker.rest.time_offset_ms = -60_000
    assert states(broker.submit(req("t-1", price=49000.0), now())) == ["NEW"]
    assert abs(broker.rest.time_offset_ms) < 5_000


def test_maker_first_entry_times_out_then_falls_back_to_taker(fake, connect):
    broker = connect()
    ex = Executor(
        ExecutorConfig(entry=EntryPolicy(kind="maker_first", maker_timeout_ms=300, fallback_slippage_cap_bps=10)),
        "testnet",
        broker,
        ListSink(),
        now(),
    )
    t0 = now()
    ex.on_book(book_record(50000.0, 50000.1, t0, symbol=SYM), t0)
    ex.on_trade(trade_record(50000.0, t0, symbol=SYM), t0)
    ex.on_signal(signal_record(price=50000.0, risk=500.0, eval_time=t0, symbol=SYM), t0)
    [maker] = fake.control("state")["open_orders"]
    assert (maker["timeInForce"], D(maker["price"]), D(maker["origQty"])) == ("GTX", D(50000), D("0.4"))
    ex.on_clock(t0 + 300)
    seq = [(o["client_order_id"][-2:], o["state"], o["reason"]) for o in ex.sink.of("orders")]
    at = seq.index(("en", "CANCELED", "maker_timeout"))
    assert seq[at + 1 : at + 3] == [("ef", "PENDING_NEW", None), ("ef", "NEW", None)]
    deadline = time.monotonic() + 3
    while not ex.sink.of("positions") and time.monotonic() < deadline:
        ex.on_clock(now())
        time.sleep(0.01)
    [opened] = ex.sink.of("positions")
    assert opened["entry_price"] == 50000.0 and ex.sink.of("fills")[0]["liquidity"] == "taker"
    assert ex.sink.barriers >= 2  # each intent made durable before sending


def test_maker_timeout_beyond_the_slippage_cap_sends_nothing_more(fake, connect):
    broker = connect()
    ex = Executor(
        ExecutorConfig(entry=EntryPolicy(kind="maker_first", maker_timeout_ms=300, fallback_slippage_cap_bps=10)),
        "testnet",
        broker,
        ListSink(),
        now(),
    )
    t0 = now()
    ex.on_book(book_record(50000.0, 50000.1, t0, symbol=SYM), t0)
    ex.on_signal(signal_record(price=50000.0, risk=500.0, eval_time=t0, symbol=SYM), t0)
    ex.on_book(book_record(50100.0, 50100.1, t0 + 200, symbol=SYM), t0 + 200)  # mid 20 bps away
    ex.on_clock(t0 + 300)
    assert [r["reason"] for r in ex.sink.of("risk.events")][-1] == "slippage_cap"
    assert [c for _, c in fake.control("state")["order_requests"] if c.endswith("-ef")] == []


@pytest.mark.parametrize("policy", ["adopt", "flatten"])
def test_reconciliation_reports_and_handles_orphans(fake, connect, policy):
    broker = connect()
    fake.control("orphan", {"symbol": SYM, "position_amt": "0.5", "entry_price": "49000"})
    fake.control(
        "orphan",
        {
            "order": {
                "symbol": SYM,
                "side": "SELL",
                "type": "LIMIT",
                "quantity": "0.1",
                "price": "51000",
                "newClientOrderId": "manual-1",
            }
        },
    )
    rec = Reconciler(broker, policy)
    assert rec.due(now())
    report = rec.run({}, set(), now())
    found = {(f.kind, f.action.split(" ")[0]) for f in report.findings}
    st = fake.control("state")
    if policy == "adopt":
        assert found == {("orphan_position", "adopted"), ("orphan_order", "adopted")}
        assert D(st["positions"][SYM]["amount"]) == D("0.5") and len(st["open_orders"]) == 1
        assert broker.is_open("manual-1") and rec.run({}, set(), now()).findings == []
    else:
        assert found == {("orphan_position", "flatten"), ("orphan_order", "cancelled")}
        poll_until(broker, lambda ev: "FILLED" in states(report.events + ev))
        st = fake.control("state")
        assert D(st["positions"][SYM]["amount"]) == 0 and st["open_orders"] == []
        assert rec.run({}, set(), now()).clean
    assert not rec.due(now())


def test_secrets_never_reach_logs_or_reprs(fake, connect, caplog):
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as captured:
        broker = connect(timeout_s=0.5)
        fake.control("faults", {"fail_next": 1, "mode": "error_after"})
        broker.submit(req("s-1", type_="MARKET", qty=0.01), now())
        broker.submit(req("s-2", price=50000.1, post_only=True), now())
        Reconciler(broker, "adopt").run({}, set(), now())
    text = repr(captured) + caplog.text + repr(broker.rest) + repr(broker)
    assert captured, "the unknown-state warning should have been logged"
    assert TEST_API_KEY not in text and TEST_API_SECRET not in text
