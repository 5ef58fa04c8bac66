"""User-data stream events at the broker's edge (execution/binance_broker.py `_handle`).

Why: the stream thread queues every JSON message it reads and the broker applies them inside
`poll()`/`submit()`; before this property a message that was not an object, or an
ORDER_TRADE_UPDATE with a field missing, raised KeyError/AttributeError/TypeError out of the
executor's clock tick. Now any event is applied or counted as malformed, and an order named by a
malformed event is marked unknown so that the next poll looks it up by client id (the broker's
existing recovery path); a well-formed fill is applied as before.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from execution.binance_broker import BinanceBroker, _Tracked
from execution.broker import OrderRequest
from tests.support.fuzz import FUZZ, json_values, mutated, numberish

CID = "tf-fuzz-1"
ORDER = {
    "s": "BTCUSDT",
    "c": CID,
    "S": "BUY",
    "o": "LIMIT",
    "q": "0.010",
    "p": "37000",
    "ap": "37000",
    "X": "FILLED",
    "x": "TRADE",
    "i": 8886774,
    "l": "0.010",
    "z": "0.010",
    "L": "37000",
    "N": "USDT",
    "n": "0.148",
    "T": 1700000000000,
    "t": 123456,
    "m": True,
}
EVENT = {"e": "ORDER_TRADE_UPDATE", "E": 1700000000001, "T": 1700000000000, "o": ORDER}


def broker_with_an_open_order() -> tuple[BinanceBroker, _Tracked]:
    broker = BinanceBroker("testnet", None, {})  # type: ignore[arg-type]  # no REST call is made here
    tracked = _Tracked(OrderRequest(CID, "binance", "BTCUSDT", "BUY", "LIMIT", 0.01, price=37000.0))
    tracked.state, tracked.exchange_order_id = "NEW", "8886774"
    broker._orders[CID] = tracked
    return broker, tracked


events = st.one_of(
    json_values,
    st.builds(
        lambda o, e: {**e, "o": o},
        mutated(ORDER, sorted(ORDER), numberish | json_values),
        mutated(EVENT, ["e", "E", "T"], numberish),
    ),
    st.builds(lambda a: {"e": "ACCOUNT_UPDATE", "E": 1, "a": a}, json_values),
)


@FUZZ
@given(event=events)
@example(event=[1, 2])  # not an object: AttributeError (.get on a list) ended the poll
@example(event={"e": "ORDER_TRADE_UPDATE", "o": {"c": CID}})  # KeyError: 'i'
@example(event={"e": "ACCOUNT_UPDATE", "a": {"P": [{"s": "BTCUSDT"}]}})  # KeyError: 'pa'
@example(event={**EVENT, "o": {**ORDER, "L": None}})  # TypeError from float(None)
def test_any_event_is_applied_or_counted_as_malformed(event):
    broker, tracked = broker_with_an_open_order()
    broker._handle(event)
    if broker.malformed_events:
        o = event.get("o") if isinstance(event, dict) else None
        if isinstance(o, dict) and o.get("c") == CID and not tracked.terminal:
            assert tracked.unknown, "the order a malformed event names must be looked up again"


def test_a_well_formed_fill_is_applied():
    broker, tracked = broker_with_an_open_order()
    broker._handle(EVENT)
    assert broker.malformed_events == 0 and tracked.state == "FILLED" and tracked.filled == 0.01
    assert [type(e).__name__ for e in broker._take()] == ["Execution", "OrderUpdate"]
