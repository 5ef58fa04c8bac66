"""Funding and book-based slippage in the shared execution code (paper trading and the backtest).

Every expected number is computed by hand from the inputs in the test: 1R = 200 USDT (10,000 x 2 %),
risk distance 2.0 => qty 100; fees 0.05 % taker per side.
"""

from __future__ import annotations

import pytest

from execution.config import ExecutorConfig, PaperFills
from execution.domain import BookTop
from execution.paper_broker import book_impact
from tests.support.execution import EXCHANGE, SYMBOL, T0, Harness

S = 1000
H8 = 8 * 3600 * 1000
FUNDING_T = (T0 // H8 + 1) * H8  # the first funding time after T0


def mark_record(t: int, *, mark: float, rate: float, next_funding: int = FUNDING_T) -> dict:
    return {
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "mark_price": mark,
        "index_price": mark,
        "funding_rate": rate,
        "next_funding_time": next_funding,
        "event_time": t,
        "receive_time": t,
    }


def _open_long(h: Harness) -> None:
    assert h.signal(eval_time=FUNDING_T - 60 * S, price=100.0, risk=2.0, tp1_r=1.0, tp2_r=2.0).allowed
    h.trade(100.0, FUNDING_T - 59 * S)  # entry fill: qty = 200 / 2 = 100
    assert len(h.positions("opened")) == 1


def test_a_long_open_over_a_funding_time_pays_rate_times_mark_notional():
    h = Harness(now=FUNDING_T - 60 * S)
    _open_long(h)
    h.ex.on_mark(mark_record(FUNDING_T - 2 * S, mark=101.0, rate=0.0001), FUNDING_T - 2 * S)
    h.ex.on_mark(mark_record(FUNDING_T - S, mark=101.5, rate=0.0002), FUNDING_T - S)  # the last before: counts
    h.trade(101.0, FUNDING_T + 10)  # first trade after the funding time settles it
    h.trade(103.0, FUNDING_T + 20 * S)  # TP1 (102) crossed, TP2 (104) not: half out at the next trade
    h.trade(103.0, FUNDING_T + 21 * S)
    h.trade(96.0, FUNDING_T + 22 * S)  # back through break-even: stop
    h.trade(96.0, FUNDING_T + 23 * S)
    closed = h.closed()
    funding_usdt = 100 * 101.5 * 0.0002  # qty x mark x rate, a long pays a positive rate
    assert closed["funding_r"] == pytest.approx(funding_usdt / 200)
    assert closed["exit_reason"] == "sl_be"
    fees_usdt = 0.0005 * (100 * 100.0 + 50 * 103.0 + 50 * 96.0)  # entry, TP1 half, stop half (taker fills)
    assert closed["fees_r"] == pytest.approx(fees_usdt / 200)
    # net = gross - fees - slippage - funding; TP1 filled at the next trade (103, not the level 102): the
    # level's gross 0.5 x 1R, the better fill shows as negative slippage
    assert closed["pnl_r_net"] == pytest.approx(
        closed["pnl_r_gross"] - closed["fees_r"] - closed["slippage_r"] - closed["funding_r"]
    )
    cash = (50 * 103.0 + 50 * 96.0 - 100 * 100.0) - fees_usdt - funding_usdt
    assert closed["pnl_r_net"] == pytest.approx(cash / 200)


def test_a_short_receives_a_positive_rate_and_pays_a_negative_one():
    for rate, sign in ((0.0003, -1), (-0.0003, 1)):
        h = Harness(now=FUNDING_T - 60 * S)
        assert h.signal(eval_time=FUNDING_T - 60 * S, direction="SHORT", price=100.0, risk=2.0).allowed
        h.trade(100.0, FUNDING_T - 59 * S)
        h.ex.on_mark(mark_record(FUNDING_T - S, mark=99.0, rate=rate), FUNDING_T - S)
        h.ex.on_mark(mark_record(FUNDING_T + S, mark=99.0, rate=rate, next_funding=FUNDING_T + H8), FUNDING_T + S)
        h.trade(103.0, FUNDING_T + 2 * S)  # stop crossed
        h.trade(103.0, FUNDING_T + 3 * S)
        closed = h.closed()
        assert closed["exit_reason"] == "sl"
        assert closed["funding_r"] == pytest.approx(sign * 100 * 99.0 * 0.0003 / 200)


def test_no_funding_for_a_position_opened_after_or_closed_before_the_funding_time():
    h = Harness(now=FUNDING_T - 60 * S)
    _open_long(h)
    h.ex.on_mark(mark_record(FUNDING_T - 10 * S, mark=100.0, rate=0.01), FUNDING_T - 10 * S)
    h.trade(97.0, FUNDING_T - 5 * S)  # stop crossed before the funding time
    h.trade(97.0, FUNDING_T - 4 * S)
    h.trade(97.0, FUNDING_T + S)
    assert h.closed()["funding_r"] == 0.0

    late = Harness(now=FUNDING_T)
    late.ex.on_mark(mark_record(FUNDING_T - S, mark=100.0, rate=0.01), FUNDING_T - S)
    assert late.signal(eval_time=FUNDING_T, price=100.0, risk=2.0).allowed
    late.trade(100.0, FUNDING_T)  # opened at the funding time itself: not open before it
    late.trade(97.0, FUNDING_T + S)
    late.trade(97.0, FUNDING_T + 2 * S)
    assert late.closed()["funding_r"] == 0.0


def test_book_model_pays_half_spread_plus_the_walk_through_the_levels():
    book = BookTop(
        EXCHANGE, SYMBOL, 99.9, 100.1, T0, bids=((99.9, 1.0), (99.8, 2.0)), asks=((100.1, 1.0), (100.2, 2.0))
    )
    # buying 2: 1 at 100.1 and 1 at 100.2 -> VWAP 100.15, mid 100.0 => 0.15 per unit
    assert book_impact(book, "BUY", 2.0) == pytest.approx(0.15)
    # selling 5: 1 at 99.9, 2 at 99.8, the 2 beyond the levels shown at the last one (99.8) -> VWAP 99.82
    assert book_impact(book, "SELL", 5.0) == pytest.approx(100.0 - (99.9 + 2 * 99.8 + 2 * 99.8) / 5)

    # `slippage_model: book` charges the walk on a whole fill at the trade: a tape-fills setting (book
    # fills walk the levels themselves: test_book_fills_walk_the_levels_themselves below)
    cfg = ExecutorConfig(paper=PaperFills(fills="tape", slippage_model="book", slippage_bps=1.0))
    h = Harness(cfg, now=T0)
    h.ex.on_book(
        {
            "exchange": EXCHANGE,
            "symbol": SYMBOL,
            "last_update_id": 1,
            "event_time": T0 - S,
            "receive_time": T0,
            "obi_10": 0.0,
            "bids": [{"price": 99.9, "qty": 50.0}, {"price": 99.8, "qty": 500.0}],
            "asks": [{"price": 100.1, "qty": 50.0}, {"price": 100.2, "qty": 500.0}],
        },
        T0,
    )
    assert h.signal(eval_time=T0, price=100.0, risk=2.0).allowed
    h.trade(100.0, T0 + S)  # qty 100: 50 at 100.1 and 50 at 100.2 -> impact 0.15; plus 1 bp of 100
    fill = h.fills()[0]
    assert fill["price"] == pytest.approx(100.0 * 1.0001 + 0.15)
    assert h.positions("opened")[0]["slippage_r"] == pytest.approx((0.01 + 0.15) / 2.0)

    stale = Harness(cfg, now=T0)
    stale.book(99.0, 101.0, T0 - 10 * S)  # older than book_max_age_ms (5 s) at the fill: fixed bps only
    assert stale.signal(eval_time=T0, price=100.0, risk=2.0).allowed
    stale.trade(100.0, T0 + S)
    assert stale.fills()[0]["price"] == pytest.approx(100.0 * 1.0001)


def _levels_book(t: int) -> dict:
    return {
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "last_update_id": 1,
        "event_time": t,
        "receive_time": t,
        "obi_10": 0.0,
        "bids": [{"price": 99.9, "qty": 50.0}, {"price": 99.8, "qty": 500.0}],
        "asks": [{"price": 100.1, "qty": 50.0}, {"price": 100.2, "qty": 500.0}],
    }


def test_book_fills_walk_the_levels_themselves():
    """Book fills (the default): the market entry of 100 takes 50 at 100.1 and 50 at 100.2, one fill per
    level, each moved 1 bp; the position is anchored at the trade (100.0) and the walk is slippage."""
    h = Harness(ExecutorConfig(paper=PaperFills(slippage_bps=1.0)), now=T0)
    assert h.broker.book_fills
    h.ex.on_book(_levels_book(T0 - S), T0)
    assert h.signal(eval_time=T0, price=100.0, risk=2.0).allowed
    h.trade(100.0, T0 + S, qty=0.5)  # the trade's size does not limit a walk of the shown book
    fills = h.fills()
    assert [(f["price"], f["qty"]) for f in fills] == [
        (pytest.approx(100.1 * 1.0001), 50.0),
        (pytest.approx(100.2 * 1.0001), 50.0),
    ]
    [opened] = h.positions("opened")
    assert opened["entry_price"] == 100.0
    # per unit: (100.1 + 100.2) / 2 x 1.0001 - 100.0 = 0.15 + 0.0100150, in R of 2.0
    assert opened["slippage_r"] == pytest.approx((100.15 * 1.0001 - 100.0) / 2.0)
    assert opened["fees_r"] == pytest.approx(0.0005 * 100.15 * 1.0001 * 100 / 200)

    stale = Harness(ExecutorConfig(paper=PaperFills(slippage_bps=1.0)), now=T0)
    stale.ex.on_book(_levels_book(T0 - 10 * S), T0)  # older than book_max_age_ms (5 s) at the fill
    assert stale.signal(eval_time=T0, price=100.0, risk=2.0).allowed
    stale.trade(100.0, T0 + S)
    [fill] = stale.fills()  # the tape rule: whole, at the trade moved 1 bp
    assert (fill["price"], fill["qty"]) == (pytest.approx(100.0 * 1.0001), 100.0)
