"""Paper broker fill model: market orders on the next trade with slippage, limits by the queue rule."""

from __future__ import annotations

import pytest

from execution.broker import Broker, Execution, OrderRequest, OrderUpdate
from execution.config import Fees, PaperFills
from execution.domain import BookTop, TradeTick
from execution.paper_broker import PaperBroker

T = 1_790_000_000_000


def tick(price: float, t: int, agg: int = 1, symbol: str = "BTCUSDT") -> TradeTick:
    return TradeTick("binance", symbol, agg, price, 0.5, t, "BUY")


def market(cid: str, side: str = "BUY", qty: float = 2.0, not_before: int = T) -> OrderRequest:
    return OrderRequest(cid, "binance", "BTCUSDT", side, "MARKET", qty, not_before_ms=not_before)


def limit(cid: str, side: str, price: float, post_only: bool = True) -> OrderRequest:
    return OrderRequest(
        cid, "binance", "BTCUSDT", side, "LIMIT", 2.0, price=price, post_only=post_only, not_before_ms=T
    )


def test_implements_the_broker_protocol():
    assert isinstance(PaperBroker(Fees(), PaperFills()), Broker)


def test_market_order_fills_on_the_next_trade_with_slippage_and_taker_fee():
    b = PaperBroker(Fees(), PaperFills(slippage_bps=5))
    assert b.on_trade(tick(100.0, T - 1)) == []
    [ack] = b.submit(market("a"), T)
    assert ack.state == "NEW" and ack.exchange_order_id == "Pa"
    assert b.on_trade(tick(100.0, T - 1, agg=2)) == []  # a trade from before the decision never fills it
    ex, done = b.on_trade(tick(200.0, T + 5, agg=3))
    assert isinstance(ex, Execution) and isinstance(done, OrderUpdate)
    assert ex.price == pytest.approx(200.0 * 1.0005) and ex.market_price == 200.0  # buy pays 5 bps more
    assert ex.fee == pytest.approx(0.0005 * 200.1 * 2) and ex.liquidity == "taker" and ex.fee_asset == "USDT"
    assert ex.trade_id == "p:3:a" and ex.event_time == T + 5
    assert (done.state, done.filled_qty, done.avg_fill_price) == ("FILLED", 2.0, ex.price)
    assert not b.is_open("a") and b.on_trade(tick(201.0, T + 6, agg=4)) == []
    b.submit(market("s", side="SELL"), T)
    ex, _ = b.on_trade(tick(200.0, T + 7, agg=5))
    assert ex.price == pytest.approx(200.0 * 0.9995)  # a sell receives 5 bps less


def test_limit_through_needs_a_trade_beyond_the_price():
    b = PaperBroker(Fees(), PaperFills(limit_queue="through"))
    b.on_book(BookTop("binance", "BTCUSDT", 99.9, 100.0, T))
    [ack] = b.submit(limit("bid", "BUY", 99.9), T)
    assert ack.state == "NEW"
    assert b.on_trade(tick(99.9, T + 1)) == []  # at our price: the queue ahead of us takes it
    ex, done = b.on_trade(tick(99.85, T + 2))
    assert ex.price == 99.9 and ex.market_price == 99.9 and ex.liquidity == "maker"
    assert ex.fee == pytest.approx(0.0002 * 99.9 * 2) and done.state == "FILLED"


def test_limit_touch_fills_at_the_price():
    b = PaperBroker(Fees(), PaperFills(limit_queue="touch"))
    b.on_book(BookTop("binance", "BTCUSDT", 99.9, 100.0, T))
    b.submit(limit("ask", "SELL", 100.0), T)
    assert b.on_trade(tick(99.95, T + 1)) == []
    ex, _ = b.on_trade(tick(100.0, T + 2))
    assert ex.price == 100.0 and ex.side == "SELL"


def test_post_only_limit_that_would_take_is_rejected():
    b = PaperBroker(Fees(), PaperFills())
    b.on_book(BookTop("binance", "BTCUSDT", 99.9, 100.0, T))
    [rej] = b.submit(limit("x", "BUY", 100.0), T)
    assert rej.state == "REJECTED" and rej.reason == "post_only_would_take"
    [ok] = b.submit(limit("y", "BUY", 100.0, post_only=False), T)
    assert ok.state == "NEW"


def test_rejects_and_cancels():
    b = PaperBroker(Fees(), PaperFills())
    b.submit(market("a"), T)
    assert b.submit(market("a"), T)[0].reason == "duplicate client_order_id"
    assert b.submit(market("z", qty=0), T)[0].state == "REJECTED"
    [c] = b.cancel("a", T + 1, "kill_switch")
    assert (c.state, c.reason) == ("CANCELED", "kill_switch")
    assert b.cancel("a", T + 2, "again") == []
    assert b.on_trade(tick(100.0, T + 3)) == []  # nothing left to fill


def test_orders_fill_in_submission_order_and_only_on_their_symbol():
    b = PaperBroker(Fees(), PaperFills())
    b.submit(market("first", side="SELL"), T)
    b.submit(market("second"), T)
    assert b.on_trade(tick(3000.0, T + 1, symbol="ETHUSDT")) == []
    events = b.on_trade(tick(100.0, T + 2))
    assert [e.client_order_id for e in events if isinstance(e, Execution)] == ["first", "second"]
