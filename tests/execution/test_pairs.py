"""Hedged pair paper execution (execution/hedged.py), every number worked out by hand next to it.

Common setup unless a test says otherwise: BTC, short Binance (rich), long OKX (cheap), 1,000 USD per
leg, taker fee 0.05 % on Binance and 0.04 % on OKX, lot step 0.1 on Binance and 0.001 on OKX, books at
most 2 s old, leverage 1.

Entry books at T0:
    Binance bids (101, 5) (100, 10): selling 1,000 USD takes 5 coins (505 USD) and 4.95 at 100 -> 9.95 coins
    OKX asks     (99, 4) (100, 10):  buying 1,000 USD takes 4 coins (396 USD) and 6.04 at 100  -> 10.04 coins
    qty = min(9.95, 10.04) = 9.95, down to the 0.1 step -> 9.9 (a multiple of 0.001 too)
    short sells 9.9: 5 x 101 + 4.9 x 100 = 995 USD; touch 101 -> slippage 9.9 x 101 - 995 = 4.9; fee 0.0005 x 995 = 0.4975
    long buys 9.9:   4 x 99 + 5.9 x 100 = 986 USD;  touch 99  -> slippage 986 - 9.9 x 99 = 5.9;  fee 0.0004 x 986 = 0.3944
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.client_ids import BINANCE_CLIENT_ID, client_order_id, pair_id
from execution.hedged import (
    HedgedPairs,
    PairEntry,
    PairParams,
    VenueParams,
    round_to_steps,
    sweep_qty,
)
from stream_apps.cross_venue.events import BookEvent, FundingEvent
from stream_apps.cross_venue.sweep import BUY, SELL
from tests.support.fuzz import FUZZ

T0 = 1_790_000_000_000
MIN = 60_000
HOUR = 3_600_000
SIG = "watch:v1:abc123:BTC:binance>okx:1790000000000"
ENTRY = PairEntry(SIG, "binance", "BTCUSDT", "okx", "BTC-USDT-SWAP")


def params(**overrides) -> PairParams:
    base = dict(
        notional_usd=1_000.0,
        venues={
            "binance": VenueParams(taker_fee=0.0005, lot_step=0.1),
            "okx": VenueParams(taker_fee=0.0004, lot_step=0.001),
        },
    )
    return PairParams(**(base | overrides))


def binance(t: int, bids=((101.0, 5.0), (100.0, 10.0)), asks=((101.5, 20.0),)) -> BookEvent:
    return BookEvent("binance", "BTCUSDT", t, tuple(bids), tuple(asks))


def okx(t: int, bids=((98.5, 20.0),), asks=((99.0, 4.0), (100.0, 10.0))) -> BookEvent:
    return BookEvent("okx", "BTC-USDT-SWAP", t, tuple(bids), tuple(asks))


def entry_books(t: int = T0) -> dict[str, BookEvent]:
    return {"binance": binance(t), "okx": okx(t)}


def converged_books(t: int) -> dict[str, BookEvent]:
    """Binance asks (100, 20): buy back 9.9 at 100 = 990 USD, no slippage, fee 0.0005 x 990 = 0.495.
    OKX bids (100.2, 5) (100, 20): sell 5 x 100.2 + 4.9 x 100 = 991 USD; touch 100.2 -> slippage
    9.9 x 100.2 - 991 = 0.98; fee 0.0004 x 991 = 0.3964. Closable spread log(100 / (991 / 9.9)) < 0."""
    return {
        "binance": binance(t, bids=((99.9, 20.0),), asks=((100.0, 20.0),)),
        "okx": okx(t, bids=((100.2, 5.0), (100.0, 20.0)), asks=((100.3, 20.0),)),
    }


def opened(p: PairParams | None = None) -> HedgedPairs:
    model = HedgedPairs(p or params())
    events = model.open(ENTRY, T0, entry_books())
    assert [o.status for o in events.orders] == ["FILLED", "FILLED"]
    return model


def cash(orders) -> float:
    """Independent of the model's P&L: + what a sale received, - what a purchase paid, - fees."""
    return sum(
        (o.qty * o.avg_price if o.side == "SELL" else -o.qty * o.avg_price) - o.fee
        for o in orders
        if o.status == "FILLED"
    )


# --- entry ------------------------------------------------------------------------------------------
def test_entry_fills_both_legs_at_the_sweep_with_equal_quantity_and_per_venue_fees():
    model = HedgedPairs(params())
    events = model.open(ENTRY, T0, entry_books())
    short, long_ = events.orders
    assert (short.leg, short.venue, short.side, long_.leg, long_.venue, long_.side) == (
        "short",
        "binance",
        "SELL",
        "long",
        "okx",
        "BUY",
    )
    assert short.qty == long_.qty == pytest.approx(9.9)
    assert short.avg_price == pytest.approx(995 / 9.9) and long_.avg_price == pytest.approx(986 / 9.9)
    assert short.fee == pytest.approx(0.4975) and long_.fee == pytest.approx(0.3944)
    assert short.slippage_usd == pytest.approx(4.9) and long_.slippage_usd == pytest.approx(5.9)
    assert short.client_order_id == client_order_id(SIG, "pair_short_entry")
    assert long_.client_order_id == client_order_id(SIG, "pair_long_entry")
    assert all(BINANCE_CLIENT_ID.match(o.client_order_id) for o in events.orders)
    [position] = events.positions
    assert position["pair_id"] == pair_id(SIG) and position["status"] == "open"
    assert position["entry_spread"] == pytest.approx(math.log(995 / 986))
    # costs so far: two fees and two slippages, nothing realised yet
    assert position["fees_usd"] == pytest.approx(0.4975 + 0.3944)
    assert position["net_usd"] == pytest.approx(-(0.4975 + 0.3944 + 4.9 + 5.9))


def test_same_signal_twice_places_nothing_twice_and_a_pair_key_holds_one_active_pair():
    model = opened()
    again = model.open(ENTRY, T0 + 1000, entry_books(T0 + 1000))
    assert again.duplicate and again.orders == [] and len(model.pairs) == 1
    # another signal for the same coin and venues, even the other way round, is refused without orders
    other = PairEntry(SIG + ":2", "okx", "BTC-USDT-SWAP", "binance", "BTCUSDT")
    refused = model.open(other, T0 + 1000, entry_books(T0 + 1000))
    assert refused.orders == [] and refused.positions[0]["status"] == "rejected"
    assert "already has an active pair" in refused.positions[0]["reason"]
    assert model.open(other, T0 + 2000, entry_books(T0 + 2000)).duplicate  # a rejection is kept too
    # once the first pair is closed the key is free for a new signal
    model.close(pair_id(SIG), "operator", T0 + 5000, converged_books(T0 + 5000))
    third = PairEntry(SIG + ":3", "binance", "BTCUSDT", "okx", "BTC-USDT-SWAP")
    assert model.open(third, T0 + 6000, entry_books(T0 + 6000)).positions[-1]["status"] == "open"


def test_entries_that_are_not_a_hedge_are_rejected():
    model = HedgedPairs(params())
    for entry, words in [
        (PairEntry("a", "binance", "BTCUSDT", "binance", "BTCUSDT"), "both legs on binance"),
        (PairEntry("b", "binance", "BTCUSDT", "okx", "ETH-USDT-SWAP"), "not one perpetual"),
        (PairEntry("c", "binance", "1000PEPEUSDT", "okx", "PEPE-USDT-SWAP"), "not modelled yet"),
    ]:
        events = model.open(entry, T0, entry_books())
        assert events.orders == [] and words in events.positions[0]["reason"]


# --- the whole life of a pair -------------------------------------------------------------------------
def test_pair_through_entry_funding_on_both_legs_and_convergence_exit_pnl_by_hand():
    model = opened()
    pid = pair_id(SIG)
    # not converged yet: binance asks 101.5, okx bids 98.5 -> closable log(101.5 / 98.5) > 0
    assert model.evaluate(T0 + 30 * MIN, entry_books(T0 + 30 * MIN)).orders == []

    # funding at T0 + 1 h on both venues
    # binance rate +0.0001 at mark 100: the short receives 9.9 x 100 x 0.0001 = 0.099 (paid -0.099)
    # okx rate +0.0003 at mark 100: the long pays 9.9 x 100 x 0.0003 = 0.297
    f1 = model.settle_funding("binance", "BTCUSDT", T0 + HOUR, 0.0001, 100.0)
    f2 = model.settle_funding("okx", "BTC-USDT-SWAP", T0 + HOUR, 0.0003, 100.0)
    assert [p.paid for p in f1.funding + f2.funding] == pytest.approx([-0.099, 0.297])
    # delivered twice, paid once; a settlement before the entry or of another symbol pays nothing
    assert model.settle_funding("okx", "BTC-USDT-SWAP", T0 + HOUR, 0.0003, 100.0).funding == []
    assert model.settle_funding("okx", "BTC-USDT-SWAP", T0, 0.0003, 100.0).funding == []
    assert model.settle_funding("okx", "ETH-USDT-SWAP", T0 + 2 * HOUR, 0.0003, 100.0).funding == []

    t = T0 + 2 * HOUR
    events = model.evaluate(t, converged_books(t))
    short_exit, long_exit = events.orders
    assert (short_exit.side, short_exit.avg_price, long_exit.side) == ("BUY", pytest.approx(100.0), "SELL")
    assert short_exit.client_order_id == client_order_id(SIG, "pair_short_exit")
    assert long_exit.client_order_id == client_order_id(SIG, "pair_long_exit")
    [closed] = events.positions
    assert (closed["status"], closed["close_reason"], closed["closed_ms"]) == ("closed", "convergence", t)
    assert closed["exit_spread"] == pytest.approx(math.log(990 / 991))

    # by hand: short +995 - 990 = 5, long -986 + 991 = 5 -> 10 USD of fills
    fees = 0.4975 + 0.3944 + 0.495 + 0.3964  # four taker fees = 1.7833
    funding = -0.099 + 0.297  # = 0.198 paid
    assert closed["fees_usd"] == pytest.approx(fees)
    assert closed["funding_usd"] == pytest.approx(funding)
    assert closed["net_usd"] == pytest.approx(10 - fees - funding)  # 8.0187
    # gross at the touch: short 9.9 x (101 - 100) = 9.9, long 9.9 x (100.2 - 99) = 11.88
    assert closed["gross_usd"] == pytest.approx(9.9 + 11.88)
    assert closed["slippage_usd"] == pytest.approx(4.9 + 5.9 + 0.0 + 0.98)
    # per leg: short 5 - 0.4975 - 0.495 + 0.099; long 5 - 0.3944 - 0.3964 - 0.297
    assert closed["short_net_usd"] == pytest.approx(5 - 0.4975 - 0.495 + 0.099)
    assert closed["long_net_usd"] == pytest.approx(5 - 0.3944 - 0.3964 - 0.297)
    pair = model.pairs[pid]
    fills = [pair.legs["short"].entry, pair.legs["long"].entry, *events.orders]
    assert cash(fills) - funding == pytest.approx(closed["net_usd"])
    # closed: a later funding time does not charge it, a later evaluation does nothing
    assert model.settle_funding("okx", "BTC-USDT-SWAP", T0 + 3 * HOUR, 0.0003, 100.0).funding == []
    assert model.evaluate(t + MIN, converged_books(t + MIN)).orders == []


def test_exit_waits_when_a_book_is_stale_and_closes_both_legs_or_neither():
    model = opened()
    t = T0 + 2 * HOUR
    books = converged_books(t)
    books["okx"] = okx(t - 2_500, bids=((100.2, 5.0), (100.0, 20.0)))  # 2.5 s old, limit 2 s
    blocked = model.close(pair_id(SIG), "operator", t, books)
    assert blocked.orders == [] and "stale book okx: 2.5 s old" in blocked.blocked[0]["reason"]
    assert model.pairs[pair_id(SIG)].status == "open"
    assert model.evaluate(t + 1000, converged_books(t + 1000)).positions[0]["close_reason"] == "convergence"


# --- one leg failing --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "okx_book, refusals, words",
    [
        (okx(T0 - 5_000), None, "stale book okx: 5.0 s old"),
        (okx(T0), {"okx": "leverage not set"}, "venue refused: leverage not set"),
        (okx(T0, asks=((99.0, 1.0),)), None, "insufficient depth"),
        (None, None, "no book for okx"),
    ],
)
def test_one_leg_failing_unwinds_the_other_and_records_its_cost(okx_book, refusals, words):
    model = HedgedPairs(params())
    books = {"binance": binance(T0, asks=((102.0, 20.0),))}
    if okx_book is not None:
        books["okx"] = okx_book
    events = model.open(ENTRY, T0, books, refusals)
    short, long_, unwind = events.orders
    assert (short.status, long_.status, unwind.status) == ("FILLED", "FAILED", "FILLED")
    assert words in long_.reason and long_.fee == 0
    # without OKX the quantity is Binance's alone: 9.95 down to 0.1 = 9.9; sold 995 USD (as in the module doc)
    # the unwind buys 9.9 back on binance's asks at 102 at the same moment: 1,009.8 USD, fee 0.0005 x 1,009.8
    assert (unwind.action, unwind.side, unwind.avg_price) == ("unwind", "BUY", pytest.approx(102.0))
    assert unwind.client_order_id == client_order_id(SIG, "pair_short_exit")
    failed = events.positions[-1]
    assert (failed["status"], failed["close_reason"]) == ("failed", "unwind")
    assert failed["reason"].startswith("long leg okx failed: ") and words in failed["reason"]
    cost = (1009.8 - 995) + 0.0005 * 995 + 0.0005 * 1009.8  # 14.8 + 0.4975 + 0.5049 = 15.8024
    assert failed["net_usd"] == pytest.approx(-cost)
    assert failed["long_net_usd"] == 0 and failed["short_net_usd"] == pytest.approx(-cost)
    assert cash(events.orders) == pytest.approx(-cost)
    # the key is free again and nothing is left to settle or close
    assert model.active_by_key == {}
    assert model.settle_funding("binance", "BTCUSDT", T0 + HOUR, 0.0001, 100.0).funding == []


def test_both_legs_failing_costs_nothing_and_an_unwind_that_cannot_fill_is_retried():
    model = HedgedPairs(params())
    none = model.open(ENTRY, T0, {})
    assert [o.status for o in none.orders] == ["FAILED", "FAILED"]
    assert none.positions[-1]["status"] == "failed" and none.positions[-1]["net_usd"] == 0

    model = HedgedPairs(params())
    books = {"binance": binance(T0, asks=((102.0, 1.0),)), "okx": okx(T0 - 5_000)}  # 1 coin to buy back
    events = model.open(ENTRY, T0, books)
    assert events.positions[-1]["status"] == "unwinding" and "insufficient depth" in events.blocked[0]["reason"]
    assert model.open(PairEntry("other", "okx", "BTC-USDT-SWAP", "binance", "BTCUSDT"), T0, books).orders == []
    later = model.evaluate(T0 + 1000, {"binance": binance(T0 + 1000, asks=((102.0, 20.0),))})
    assert [o.action for o in later.orders] == ["unwind"] and later.positions[-1]["status"] == "failed"


# --- other exits --------------------------------------------------------------------------------------
def test_max_holding_exit():
    model = opened(params(max_holding_ms=24 * HOUR))
    wide = entry_books  # never converges: closable log(101.5 / 98.5) > 0
    assert model.evaluate(T0 + 24 * HOUR - 1, wide(T0 + 24 * HOUR - 1)).orders == []
    events = model.evaluate(T0 + 24 * HOUR, wide(T0 + 24 * HOUR))
    assert events.positions[-1]["close_reason"] == "max_holding"
    # the exit took the touch: short buys 9.9 at 101.5, long sells 9.9 at 98.5
    assert [o.avg_price for o in events.orders] == pytest.approx([101.5, 98.5])
    fees = 0.4975 + 0.3944 + 0.0005 * 9.9 * 101.5 + 0.0004 * 9.9 * 98.5
    assert events.positions[-1]["net_usd"] == pytest.approx((995 - 9.9 * 101.5) + (9.9 * 98.5 - 986) - fees)


def test_funding_rule_exits_before_a_settlement_that_would_cost_more_than_the_threshold():
    model = opened()  # threshold 0.0005 x 1,000 = 0.5 USD, within 10 minutes of the funding time
    t = T0 + 50 * MIN
    books = entry_books(t)  # binance mid (101 + 101.5) / 2 = 101.25
    # the short pays a negative rate: 9.9 x 101.25 x 0.001 = 1.002 USD > 0.5
    costly = {"binance": FundingEvent("binance", "BTCUSDT", t, -0.001, t + 5 * MIN)}
    later = {"binance": FundingEvent("binance", "BTCUSDT", t, -0.001, t + 20 * MIN)}  # outside the lead
    receiving = {"binance": FundingEvent("binance", "BTCUSDT", t, +0.001, t + 5 * MIN)}
    small = {"binance": FundingEvent("binance", "BTCUSDT", t, -0.0004, t + 5 * MIN)}  # 0.40 USD < 0.5
    for funding in (later, receiving, small):
        assert model.evaluate(t, books, funding).orders == []
    # (the costly settlement was set up and never asserted)
    assert opened().evaluate(t, books, costly).positions[-1]["close_reason"] == "funding"
    # both legs settling within the lead add up: the long pays a positive rate at the okx mid
    # (98.5 + 99) / 2 = 98.75: 9.9 x 98.75 x 0.0006 = 0.587, and 0.401 + 0.587 > 0.5 closes
    both = small | {"okx": FundingEvent("okx", "BTC-USDT-SWAP", t, 0.0006, t + 5 * MIN)}
    assert model.evaluate(t, books, both).positions[-1]["close_reason"] == "funding"


def test_liquidation_distance_exit():
    # 5x, maintenance 0.5 %: the short entered at 995 / 9.9 = 100.505 is liquidated near
    # 100.505 x (1 + 1/5) / (1 + 0.005) = 120.006; a mark at 110 is (120.006 - 110) / 110 = 9.1 % away
    model = opened(params(leverage=5.0))
    liq = 995 / 9.9 * 1.2 / 1.005
    t = T0 + MIN
    assert model.evaluate(t, entry_books(t), marks={"binance": 105.0, "okx": 105.0}).orders == []  # 14.3 % away
    assert (liq - 110.0) / 110.0 < 0.1
    events = model.evaluate(t, entry_books(t), marks={"binance": 110.0, "okx": 110.0})
    assert events.positions[-1]["close_reason"] == "liquidation"
    # the long at 986 / 9.9 = 99.6 with 5x: 99.6 x 0.8 / 0.995 = 80.08; a mark at 88 is 9.0 % away
    model = opened(params(leverage=5.0))
    assert model.evaluate(t, entry_books(t), marks={"okx": 88.0}).positions[-1]["close_reason"] == "liquidation"


# --- state -------------------------------------------------------------------------------------------
def test_a_model_restored_from_its_plain_state_after_every_step_does_what_the_uninterrupted_one_does():
    steps = [
        lambda m: m.open(ENTRY, T0, entry_books()),
        lambda m: m.open(
            PairEntry("other", "binance", "BTCUSDT", "bybit", "BTCUSDT"), T0, entry_books()
        ),  # no bybit book
        lambda m: m.settle_funding("binance", "BTCUSDT", T0 + HOUR, 0.0001, 100.0),
        lambda m: m.open(ENTRY, T0 + HOUR, entry_books(T0 + HOUR)),  # duplicate
        lambda m: m.settle_funding("binance", "BTCUSDT", T0 + HOUR, 0.0001, 100.0),  # paid already
        lambda m: m.evaluate(T0 + 2 * HOUR, converged_books(T0 + 2 * HOUR)),
    ]
    plain, restored = HedgedPairs(params()), HedgedPairs(params())
    for step in steps:
        restored = HedgedPairs.from_dict(params(), json.loads(json.dumps(restored.to_dict())))
        a, b = step(plain), step(restored)
        assert ([o.to_record() for o in a.orders], [p.to_record() for p in a.funding], a.positions, a.duplicate) == (
            [o.to_record() for o in b.orders],
            [p.to_record() for p in b.funding],
            b.positions,
            b.duplicate,
        )
    assert plain.to_dict() == restored.to_dict()
    assert [p["status"] for p in plain.to_dict()["pairs"]] == ["closed", "failed"]


# --- pure helpers -----------------------------------------------------------------------------------
def test_sweep_qty_takes_exactly_the_quantity_or_says_why_not():
    asks = ((100.0, 1.0), (102.0, 2.0))
    assert sweep_qty(asks, 2.0, BUY).vwap == pytest.approx((100 + 102) / 2)
    assert "insufficient depth" in sweep_qty(asks, 3.5, BUY).reason
    assert "bad level" in sweep_qty(((100.0, 1.0), (99.0, -1.0)), 1.5, SELL).reason
    assert "bad level" in sweep_qty(((100.0, 1.0), (99.0, float("nan"))), 0.5, SELL).reason  # anywhere in it
    assert "out of order" in sweep_qty(((100.0, 1.0), (101.0, 1.0)), 1.5, SELL).reason
    assert "hold 0 USD" in sweep_qty((), 1.0, BUY).reason
    assert round_to_steps(9.95, [0.1, 0.001]) == pytest.approx(9.9)
    assert round_to_steps(0.05, [0.1]) == 0.0
    assert round_to_steps(1.0, [0.002, 0.003]) is None  # floor to 0.003 steps: 0.999, not a multiple of 0.002


# --- properties ---------------------------------------------------------------------------------------
levels = st.lists(st.tuples(st.integers(1, 400), st.integers(1, 5_000)), min_size=1, max_size=5)


def _side(steps, start: float, down: bool) -> tuple[tuple[float, float], ...]:
    out, price = [], start
    for tick, qty in steps:
        out.append((price, qty / 1000))
        price = price - tick / 100 if down else price + tick / 100
    return tuple(out)


@FUZZ
@given(
    short_bids=levels,
    long_asks=levels,
    exit_asks=levels,
    exit_bids=levels,
    prices=st.tuples(st.floats(90, 110), st.floats(90, 110), st.floats(90, 110), st.floats(90, 110)),
    rates=st.tuples(st.floats(-0.003, 0.003), st.floats(-0.003, 0.003)),
    notional=st.floats(10, 2_000),
    refuse=st.booleans(),
)
def test_pnl_always_decomposes_and_matches_the_cash_of_the_fills(
    short_bids, long_asks, exit_asks, exit_bids, prices, rates, notional, refuse
):
    model = HedgedPairs(params(notional_usd=notional))
    books = {
        "binance": binance(T0, bids=_side(short_bids, prices[0], True), asks=_side(exit_asks, prices[0] + 1, False)),
        "okx": okx(T0, bids=_side(exit_bids, prices[1] - 1, True), asks=_side(long_asks, prices[1], False)),
    }
    events = model.open(ENTRY, T0, books, {"okx": "no"} if refuse else None)
    events.extend(model.settle_funding("binance", "BTCUSDT", T0 + HOUR, rates[0], prices[2]))
    events.extend(model.settle_funding("okx", "BTC-USDT-SWAP", T0 + HOUR, rates[1], prices[3]))
    t = T0 + 2 * HOUR
    events.extend(
        model.close(
            pair_id(SIG),
            "operator",
            t,
            {
                "binance": binance(t, asks=_side(exit_asks, prices[2], False)),
                "okx": okx(t, bids=_side(exit_bids, prices[3], True)),
            },
        )
    )
    record = model.pairs[pair_id(SIG)].to_record()
    total = record["gross_usd"] - record["fees_usd"] - record["slippage_usd"] - record["funding_usd"]
    assert record["net_usd"] == pytest.approx(total, abs=1e-9)
    for role in ("short", "long"):
        assert record[f"{role}_net_usd"] == pytest.approx(
            record[f"{role}_gross_usd"]
            - record[f"{role}_fees_usd"]
            - record[f"{role}_slippage_usd"]
            - record[f"{role}_funding_usd"],
            abs=1e-9,
        )
    assert record["net_usd"] == pytest.approx(record["short_net_usd"] + record["long_net_usd"], abs=1e-9)
    paid = sum(p.paid for p in events.funding)
    filled = [o for o in events.orders if o.status == "FILLED"]
    assert all(o.slippage_usd >= -1e-9 and o.fee >= 0 for o in filled)
    if record["status"] in ("closed", "failed"):
        assert record["net_usd"] == pytest.approx(cash(filled) - paid, abs=1e-6)
        assert len({o.qty for o in filled}) <= 1  # equal quantity on every fill
    if refuse and record["status"] != "rejected":
        assert record["status"] in ("failed", "unwinding") and record["long_fees_usd"] == 0


actions = st.lists(
    st.tuples(
        st.sampled_from(["open", "close", "evaluate"]),
        st.integers(0, 5),
        st.sampled_from([("binance", "okx"), ("okx", "binance"), ("binance", "bybit"), ("bybit", "okx")]),
        st.booleans(),
    ),
    max_size=25,
)
SYMBOLS = {"binance": "BTCUSDT", "okx": "BTC-USDT-SWAP", "bybit": "BTCUSDT"}


@FUZZ
@given(actions)
def test_never_two_active_pairs_for_one_pair_key(steps):
    model = HedgedPairs(params(venues={}))
    for i, (action, signal, (rich, cheap), stale) in enumerate(steps):
        t = T0 + i * 1000
        books = {
            v: BookEvent(v, SYMBOLS[v], t - (5_000 if stale and v == cheap else 0), ((101.0, 50.0),), ((101.2, 50.0),))
            for v in SYMBOLS
        }
        if action == "open":
            model.open(PairEntry(f"s{signal}:{rich}>{cheap}", rich, SYMBOLS[rich], cheap, SYMBOLS[cheap]), t, books)
        elif action == "close" and model.pairs:
            model.close(list(model.pairs)[signal % len(model.pairs)], "operator", t, books)
        else:
            model.evaluate(t, books)
        active = [p.pair_key for p in model.pairs.values() if p.active]
        assert len(active) == len(set(active))
        assert {model.pairs[pid].pair_key for pid in model.active_by_key.values()} == set(active)


# -- the venues' instrument rules (execution/instrument_rules.py) ---------------------------------
def venue_rules(**okx_row) -> dict[str, VenueParams]:
    """Binance BTCUSDT from its real exchangeInfo (step 0.001 BTC, min qty 0.001, min notional 5 USD)
    and OKX BTC-USDT-SWAP from its documented row (lotSz 1, minSz 1 contract of ctVal 0.01 BTC: step
    0.01 BTC, min qty 0.01, no min notional), as the watchlist trader passes them per coin."""
    from execution.instrument_rules import InstrumentRules, parse_binance, parse_okx
    from tests.execution.test_instrument_rules import binance_body, okx_swap_body

    rules = InstrumentRules(
        [*parse_binance(binance_body()), *parse_okx(okx_swap_body(**({"lotSz": "1", "minSz": "1"} | okx_row)))]
    )
    fees = {"binance": 0.0005, "okx": 0.0004}
    return {v: VenueParams(taker_fee=fees[v], **rules.for_coin(v, "BTC").hedged_params()) for v in fees}


def test_venue_rules_round_the_equal_quantity_down_to_the_coarser_step():
    """Binance bids (101, 5) (100.5, 10): selling 1,000 USD is 5 + 495 / 100.5 = 9.9253... coins; OKX
    asks (99, 4) (100, 10): 4 + 604 / 100 = 10.04. The smaller, 9.9253, down to OKX's 0.01 is 9.92 (a
    multiple of Binance's 0.001). Short sells 9.92: 5 x 101 + 4.92 x 100.5 = 999.46 USD; long buys
    9.92: 4 x 99 + 5.92 x 100 = 988 USD."""
    model = HedgedPairs(params(venues=venue_rules()))
    books = {"binance": binance(T0, bids=((101.0, 5.0), (100.5, 10.0))), "okx": okx(T0)}
    events = model.open(ENTRY, T0, books)
    short, long_ = events.orders
    assert (short.status, long_.status) == ("FILLED", "FILLED") and short.qty == long_.qty == 9.92
    assert short.avg_price * 9.92 == pytest.approx(999.46, abs=1e-9)
    assert long_.avg_price * 9.92 == pytest.approx(988.0, abs=1e-9)
    assert short.fee == pytest.approx(0.0005 * 999.46) and long_.fee == pytest.approx(0.0004 * 988.0)
    # OKX's old lot of 0.1 contract (0.001 BTC): the same quantity rounds to 9.925
    fine = HedgedPairs(params(venues=venue_rules(lotSz="0.1", minSz="0.1")))
    assert [o.qty for o in fine.open(ENTRY, T0, books).orders] == [9.925, 9.925]


def test_a_leg_below_the_venue_minimum_notional_fails_and_the_other_is_unwound():
    """Short OKX (rich), long Binance, 6 USD a leg. OKX bids (101, 5): 6 / 101 = 0.0594 coins;
    Binance asks (99, 4): 6 / 99 = 0.0606; 0.0594 down to 0.01 is 0.05. OKX sells 0.05 at 101 =
    5.05 USD (OKX has no minimum notional; 0.05 >= its minimum 0.01 BTC); Binance would buy 0.05 at 99 =
    4.95 USD, below its 5 USD: refused. The OKX short is bought back at once from its asks (101.5, 5):
    gross -0.05 x (101.5 - 101) = -0.025, fees 0.0004 x (5.05 + 5.075) = 0.00405, no slippage."""
    model = HedgedPairs(params(notional_usd=6.0, venues=venue_rules()))
    entry = PairEntry(SIG, "okx", "BTC-USDT-SWAP", "binance", "BTCUSDT")
    books = {
        "okx": okx(T0, bids=((101.0, 5.0),), asks=((101.5, 5.0),)),
        "binance": binance(T0, bids=((98.5, 5.0),), asks=((99.0, 4.0),)),
    }
    events = model.open(entry, T0, books)
    short, long_, unwind = events.orders
    assert (short.status, short.qty, short.avg_price) == ("FILLED", 0.05, 101.0)
    assert long_.status == "FAILED" and "below the binance minimum notional" in long_.reason
    assert (unwind.action, unwind.side, unwind.avg_price, unwind.status) == ("unwind", "BUY", 101.5, "FILLED")
    record = events.positions[-1]
    assert (record["status"], record["close_reason"]) == ("failed", "unwind")
    assert "long leg binance failed: venue refused: 4.95 USD below the binance minimum notional" in record["reason"]
    assert record["gross_usd"] == pytest.approx(-0.025, abs=1e-12)
    assert record["fees_usd"] == pytest.approx(0.0004 * (5.05 + 5.075), abs=1e-12)
    assert record["slippage_usd"] == 0 and record["net_usd"] == pytest.approx(-0.025 - 0.00405, abs=1e-12)
    assert record["net_usd"] == pytest.approx(cash(events.orders), abs=1e-12)


def test_a_quantity_below_the_venue_minimum_order_size_is_refused():
    """OKX minSz 6 contracts = 0.06 BTC. 6 USD sells 6 / 101 = 0.0594 BTC on Binance, down to 0.01:
    0.05 (5.05 USD, above Binance's 5); OKX refuses 0.05 BTC, and the Binance short is unwound."""
    model = HedgedPairs(params(notional_usd=6.0, venues=venue_rules(minSz="6")))
    books = {"binance": binance(T0, bids=((101.0, 5.0),)), "okx": okx(T0, asks=((99.0, 4.0),))}
    events = model.open(ENTRY, T0, books)
    short, long_, unwind = events.orders
    assert (short.status, short.qty, long_.status, unwind.status) == ("FILLED", 0.05, "FAILED", "FILLED")
    assert "venue refused: 0.05 BTC below the okx minimum order size 0.06" in long_.reason
    assert events.positions[-1]["status"] == "failed"


def test_steps_in_coins_apply_to_a_book_quoted_per_1000_coins():
    """1000SHIBUSDT on Binance (step 1 unit = 1,000 SHIB) against OKX's SHIB-USDT-SWAP (ctVal 1,000,000
    SHIB, lotSz 1: 1,000,000 SHIB), which the OKX producer publishes under 1000SHIBUSDT in 1,000-SHIB
    units. Books at 0.0101 / 0.0099 USD a unit: 100 USD sells 9,900.99 units on Binance and buys
    10,101.01 on OKX; 9,900.99 down to OKX's 1,000 units is 9,000 units = 9,000,000 SHIB."""
    from execution.instrument_rules import InstrumentRules, parse_binance, parse_okx
    from tests.execution.test_instrument_rules import binance_body, okx_swap_body

    rules = InstrumentRules(
        [
            *parse_binance(binance_body()),
            *parse_okx(okx_swap_body(instId="SHIB-USDT-SWAP", ctValCcy="SHIB", ctVal="1000000", lotSz="1", minSz="1")),
        ]
    )
    venues = {v: VenueParams(**rules.for_coin(v, "SHIB").hedged_params()) for v in ("binance", "okx")}
    model = HedgedPairs(PairParams(notional_usd=100.0, venues=venues))
    books = {
        "binance": BookEvent("binance", "1000SHIBUSDT", T0, ((0.0101, 20_000.0),), ((0.0102, 20_000.0),)),
        "okx": BookEvent("okx", "1000SHIBUSDT", T0, ((0.0098, 20_000.0),), ((0.0099, 20_000.0),)),
    }
    events = model.open(PairEntry(SIG, "binance", "1000SHIBUSDT", "okx", "1000SHIBUSDT"), T0, books)
    assert [(o.status, o.qty) for o in events.orders] == [("FILLED", 9000.0), ("FILLED", 9000.0)]
    assert events.orders[0].avg_price * 9000 == pytest.approx(90.9)  # 9,000 units x 0.0101 USD
