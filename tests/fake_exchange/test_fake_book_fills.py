"""The fake exchange fills like the paper broker: one script, the same fills (one matching engine).

The script plants a book, places a maker bid and ask (behind their levels) and a market sell larger
than the top level, then prints trades that eat the queues, shrink a level and cross the prices. The
paper broker (`fills: book`) and the fake exchange's account engine must report the same fills per
order: price, quantity, liquidity and fee. The only timing difference is the venue's: the fake fills
a market order when it arrives, the paper broker at the next trade (the decision's trade never fills
it); the book is the same at both moments, so the fills are too.
"""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from execution.broker import Execution, OrderRequest, OrderUpdate
from execution.config import Fees, PaperFills
from execution.domain import BookTop, TradeTick
from execution.paper_broker import PaperBroker
from fake_exchange.depth_book import BookSnapshot
from fake_exchange.orders.engine import AccountEngine, SymbolRules
from fake_exchange.orders.routes import OrderVenue
from fake_exchange.recording import RecordedFrame, build_recording, parse_rest_line
from fake_exchange.state import ExchangeState
from tests.support.fake_exchange import FakeOnThread
from tests.support.paths import RECORDING

T = 1_790_000_000_000
SYM = "BTCUSDT"
MAKER, TAKER = 0.0002, 0.0004

BOOK_1 = ([(99.9, 3.0), (99.8, 5.0)], [(100.0, 2.0), (100.1, 4.0)])
BOOK_2 = ([(99.9, 1.5), (99.8, 5.0)], [(100.0, 2.0), (100.1, 2.0)])
ORDERS = [
    ("bid", "BUY", "LIMIT", 2.0, 99.9),
    ("ask", "SELL", "LIMIT", 1.0, 100.1),
    ("mkt", "SELL", "MARKET", 3.5, None),
]
# (price, qty, taker side, time) after the orders; BOOK_2 arrives before the second one
TRADES = [(99.9, 1.0, "SELL", T + 1), (99.9, 2.0, "SELL", T + 3), (100.1, 2.5, "BUY", T + 4), (99.8, 5.0, "SELL", T + 5), (100.2, 0.2, "BUY", T + 6)]  # fmt: skip
# by hand: the market sell walks 3.0 at 99.9 and 0.5 at 99.8 (taker); the bid has 3.0 ahead, 2.0
# after the first trade, 1.5 once the level shows 1.5, so the 2.0 sold at 99.9 gives it 0.5 and the
# 5.0 through it the 1.5 left; the ask has 4.0 ahead, 2.0 once the level shows 2.0: the 2.5 bought
# at 100.1 gives it 0.5, and 0.2 bought through it at 100.2 another 0.2 (0.3 still open)
EXPECTED = {
    "mkt": [(99.9, 3.0, "taker"), (99.8, 0.5, "taker")],
    "bid": [(99.9, 0.5, "maker"), (99.9, 1.5, "maker")],
    "ask": [(100.1, 0.5, "maker"), (100.1, 0.2, "maker")],
}


def _book(t: int, levels) -> BookTop:
    bids, asks = levels
    return BookTop("binance", SYM, bids[0][0], asks[0][0], t, tuple(bids), tuple(asks))


def paper_fills() -> dict[str, list[tuple[float, float, str, float]]]:
    b = PaperBroker(Fees(maker=MAKER, taker=TAKER), PaperFills(fills="book"))
    b.on_trade(TradeTick("binance", SYM, 1, 100.0, 0.1, T - 10, "BUY"))
    b.on_book(_book(T, BOOK_1))
    for cid, side, typ, qty, price in ORDERS:
        [ack] = b.submit(OrderRequest(cid, "binance", SYM, side, typ, qty, price=price, post_only=price is not None, not_before_ms=T), T)  # type: ignore[arg-type]  # fmt: skip
        assert isinstance(ack, OrderUpdate) and ack.state == "NEW"
    events = []
    for n, (price, qty, taker, t) in enumerate(TRADES):
        if n == 1:
            b.on_book(_book(T + 2, BOOK_2))
        events += b.on_trade(TradeTick("binance", SYM, 10 + n, price, qty, t, taker))  # type: ignore[arg-type]
    out: dict[str, list[tuple[float, float, str, float]]] = {}
    for e in events:
        if isinstance(e, Execution):
            out.setdefault(e.client_order_id, []).append((e.price, e.qty, e.liquidity, e.fee))
    return out


def _levels(levels) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((Decimal(str(p)), Decimal(str(q))) for p, q in levels)


def fake_fills() -> dict[str, list[tuple[float, float, str, float]]]:
    engine = AccountEngine({SYM: SymbolRules(Decimal("0.1"), Decimal("0.001"), Decimal("5"))})
    engine.maker_fee, engine.taker_fee = Decimal(str(MAKER)), Decimal(str(TAKER))
    engine.on_trade(SYM, Decimal("100.0"), Decimal("0.1"), T - 10, "BUY")

    def book(t: int, levels) -> None:
        bids, asks = _levels(levels[0]), _levels(levels[1])
        engine.on_book(SYM, bids[0][0], asks[0][0], t, bids, asks)

    book(T, BOOK_1)
    for cid, side, typ, qty, price in ORDERS:
        params = {"symbol": SYM, "side": side, "type": typ, "quantity": str(qty), "newClientOrderId": cid}
        if price is not None:
            params |= {"price": str(price), "timeInForce": "GTX"}
        engine.place(params, T)
    for n, (price, qty, taker, t) in enumerate(TRADES):
        if n == 1:
            book(T + 2, BOOK_2)
        engine.on_trade(SYM, Decimal(str(price)), Decimal(str(qty)), t, taker)
    ids = {o.order_id: o.client_id for o in engine.orders.values()}
    out: dict[str, list[tuple[float, float, str, float]]] = {}
    for row in engine.trades:
        fill = (float(row["price"]), float(row["qty"]), "maker" if row["maker"] else "taker", float(row["commission"]))
        out.setdefault(ids[row["orderId"]], []).append(fill)
    return out


def test_the_fake_exchange_fills_the_script_as_the_paper_broker_does():
    paper, fake = paper_fills(), fake_fills()
    assert set(paper) == set(fake) == set(EXPECTED)
    for cid, expected in EXPECTED.items():
        for got in (paper[cid], fake[cid]):
            assert [(p, q, liq) for p, q, liq, _ in got] == [
                (pytest.approx(p), pytest.approx(q), liq) for p, q, liq in expected
            ], cid
            rates = [MAKER if liq == "maker" else TAKER for _, _, liq in expected]
            assert [fee for *_, fee in got] == [
                pytest.approx(rate * p * q) for rate, (p, q, _) in zip(rates, expected, strict=True)
            ]


def test_levels_posted_to_the_control_api_queue_a_resting_order():
    """The HTTP path: levels and a taker side posted to `/_control/orders/market` reach the matcher."""
    fake = FakeOnThread()
    try:
        fake.market(price=50000.0, qty=0.01)
        fake.market(bids=[[49990.0, 0.5]], asks=[[50000.0, 1.0]])
        order = {"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTX", "quantity": "0.010", "price": "49990.0", "newClientOrderId": "q1"}  # fmt: skip
        assert fake.control("orphan", {"order": order})["order"]["status"] == "NEW"
        fake.market(price=49990.0, qty=0.505, taker_side="SELL")  # 0.5 ahead of us: 0.005 is ours
        [open_order] = fake.control("state")["open_orders"]
        assert (open_order["status"], Decimal(open_order["executedQty"])) == ("PARTIALLY_FILLED", Decimal("0.005"))
        fake.market(price=49990.0, qty=0.01, taker_side="BUY")  # a buyer at our bid: not counted
        fake.market(price=49989.0, qty=1.0)  # through our price: the rest
        assert fake.control("state")["open_orders"] == []
    finally:
        fake.stop()


def _frame(index: int, stream: str, payload: dict) -> RecordedFrame:
    return RecordedFrame(index, 1_700_000_000.0 + index, stream, orjson.dumps(payload).decode(), payload)


def test_the_replay_follower_hands_the_recorded_book_to_the_matcher():
    """Replay-driven fills use the recorded book: a depth diff gives the book after it (a market order
    walks its levels, a limit queues behind its size), a bookTicker's sizes shrink the queue, and an
    aggTrade with m=true (a seller hitting bids) eats the queue before it fills us."""
    rest = parse_rest_line((RECORDING / "session_config_and_rest.txt").read_text().splitlines()[0])
    base = BookSnapshot(
        SYM, 100, T, T, (("50000.00", "0.5"), ("49990.00", "2.0")), (("50010.00", "1.0"), ("50020.00", "3.0"))
    )
    sym = SYM.lower()
    frames = [
        _frame(
            0,
            f"{sym}@aggTrade",
            {"e": "aggTrade", "E": T, "T": T, "s": SYM, "a": 1, "p": "50005.00", "q": "0.010", "m": False},
        ),  # fmt: skip
        # the bid level shrinks to 0.3
        _frame(
            1,
            f"{sym}@depth@100ms",
            {
                "e": "depthUpdate",
                "E": T + 1,
                "T": T + 1,
                "s": SYM,
                "U": 101,
                "u": 101,
                "pu": 100,
                "b": [["50000.00", "0.3"]],
                "a": [],
            },
        ),  # fmt: skip
        _frame(
            2,
            f"{sym}@bookTicker",
            {
                "e": "bookTicker",
                "E": T + 3,
                "T": T + 3,
                "s": SYM,
                "u": 102,
                "b": "50000.00",
                "B": "0.25",
                "a": "50010.00",
                "A": "1.0",
            },
        ),  # fmt: skip
        _frame(
            3,
            f"{sym}@aggTrade",
            {"e": "aggTrade", "E": T + 4, "T": T + 4, "s": SYM, "a": 2, "p": "50000.00", "q": "0.255", "m": True},
        ),  # fmt: skip
        _frame(
            4,
            f"{sym}@aggTrade",
            {"e": "aggTrade", "E": T + 5, "T": T + 5, "s": SYM, "a": 3, "p": "49999.00", "q": "1.0", "m": True},
        ),  # fmt: skip
    ]
    state = ExchangeState(build_recording(frames, [rest], initial_books={SYM: base}))
    venue = OrderVenue(state)
    engine = venue.engine

    def replay_to(position: int) -> None:
        state.position = position
        venue.follow(state)

    def filled(cid: str) -> list[tuple[Decimal, Decimal]]:
        order_id = engine.by_client[(SYM, cid)]
        return [(row["price"], row["qty"]) for row in engine.trades if row["orderId"] == order_id]

    replay_to(2)  # the trade and the diff: the book is the base with the bid at 0.3
    engine.place({"symbol": SYM, "side": "BUY", "type": "MARKET", "quantity": "1.500", "newClientOrderId": "m"}, T + 2)  # fmt: skip
    # by hand: 1.0 at the best ask, 0.5 at the next level (the tape rule would fill 1.5 at the last trade, 50005)
    assert [(Decimal(p), Decimal(q)) for p, q in filled("m")] == [
        (Decimal("50010.00"), Decimal("1.0")),
        (Decimal("50020.00"), Decimal("0.5")),
    ]
    engine.place({"symbol": SYM, "side": "BUY", "type": "LIMIT", "timeInForce": "GTX", "price": "50000.00", "quantity": "0.010", "newClientOrderId": "q"}, T + 2)  # fmt: skip
    replay_to(4)  # the bookTicker shows 0.25 at our bid (queue 0.3 -> 0.25); 0.255 sold at it: 0.005 is ours
    assert [(Decimal(p), Decimal(q)) for p, q in filled("q")] == [(Decimal("50000.00"), Decimal("0.005"))]
    replay_to(5)  # a trade through our bid: the rest
    assert [Decimal(q) for _, q in filled("q")] == [Decimal("0.005"), Decimal("0.005")]
    assert engine.open_orders(SYM) == []
