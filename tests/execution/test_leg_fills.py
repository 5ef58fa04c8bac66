"""Hedged pairs as they really fill (execution/leg_fills.py): hand-built books over time, each leg
meeting the book of its arrival, every number worked out by hand next to it.

Setup as tests/execution/test_pairs.py (BTC, short Binance, long OKX, 1,000 USD a leg, fees 0.05 % and
0.04 %, lot steps 0.1 and 0.001), plus leg timing: Binance 100 ms one way, OKX 300 ms; entry limits
at break-even (min_entry_spread 0), one retry 5 bp worse.

At the signal (T0, the books of test_pairs.entry_books): qty 9.9; short VWAP 995 / 9.9, long VWAP
986 / 9.9; four fees 2 x (0.0005 + 0.0004) = 0.0018, so the limits are
    short (sell) at or above (986 / 9.9) x exp(0.0018) = 99.7753...
    long (buy)  at or below (995 / 9.9) x exp(-0.0018) = 100.3243...; its retry 100.3243 x 1.0005 = 100.3745
Timeline: both legs sent at T0; Binance meets its book at T0+100 and answers at T0+200; OKX meets its
book at T0+300 and answers at T0+600; a retry sent at T0+600 meets OKX at T0+900 and answers at
T0+1200; an unwind on Binance sent then meets it at T0+1300 and answers at T0+1400.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.client_ids import client_order_id, pair_id
from execution.hedged import LegRules, PairEntry, VenueParams
from execution.leg_fills import TimedPairs, ioc_fill, model_from_dict
from tests.execution.test_pairs import ENTRY, SIG, T0, _side, binance, entry_books, levels, okx, params
from tests.support.fuzz import FUZZ

LONG_LIMIT = (995 / 9.9) * math.exp(-0.0018)
SHORT_LIMIT = (986 / 9.9) * math.exp(0.0018)


def timed(**overrides) -> TimedPairs:
    venues = {
        "binance": VenueParams(taker_fee=0.0005, lot_step=0.1, latency_ms=100),
        "okx": VenueParams(taker_fee=0.0004, lot_step=0.001, latency_ms=300),
    }
    rules = {"legs": LegRules(min_entry_spread=0.0, retries=1, retry_step_bp=5.0)}
    return TimedPairs(params(venues=venues, **(rules | overrides)))


def cash(orders) -> float:
    """Independent of the model's P&L: + what the sales received, - what the purchases paid, - fees."""
    return sum(
        (o.done_qty * o.avg_price if o.side == "SELL" else -o.done_qty * o.avg_price) - o.fee - o.liquidation_usd
        for o in orders
        if o.done_qty
    )


class Tape:
    """Books over time: each step of the model sees the newest book per venue at or before it."""

    def __init__(self, model: TimedPairs) -> None:
        self.model = model
        self.books = entry_books(T0)
        self.events = []

    def at(self, t: int, **books) -> None:
        """The model runs what is due before `t`, then the books of `t` replace the older ones."""
        self.events.append(self.model.run_due(t - 1, self.books))
        self.books = self.books | books

    def orders(self):
        return [o for e in self.events for o in e.orders]


def test_ioc_fill_takes_levels_inside_the_limit_up_to_the_quantity():
    asks = ((99.0, 4.0), (100.0, 10.0), (101.0, 10.0))
    assert ioc_fill(asks, 9.9, "BUY", None).notional == pytest.approx(4 * 99 + 5.9 * 100)
    inside = ioc_fill(asks, 20.0, "BUY", 100.5)  # 101 is outside: 14 of 20
    assert (inside.qty, inside.notional, inside.touch) == (14.0, 4 * 99 + 10 * 100, 99.0)
    assert ioc_fill(asks, 1.0, "BUY", 98.0).qty == 0  # nothing at or below 98
    bids = ((101.0, 5.0), (100.0, 10.0))
    assert ioc_fill(bids, 9.9, "SELL", 100.5).qty == 5.0  # sells only at or above the limit
    assert ioc_fill(((1.0, float("nan")), (0.9, 5.0)), 1.0, "SELL").qty == 0  # a bad level ends the book


def test_the_second_leg_arriving_after_the_book_moved_fills_at_the_later_book():
    model = timed()
    tape = Tape(model)
    opened = model.open(ENTRY, T0, tape.books)
    assert opened.orders == [] and opened.positions[-1]["status"] == "opening"  # both legs travelling
    tape.at(T0 + 200, okx=okx(T0 + 200, asks=((99.5, 4.0), (100.2, 10.0))))  # OKX moves before its leg arrives
    tape.at(T0 + 700, okx=okx(T0 + 700, asks=((120.0, 50.0),)))  # after its arrival: not seen by it
    short, long_ = tape.orders()
    # Binance met its T0 book at T0+100: 5 x 101 + 4.9 x 100 = 995, as at the signal
    assert (short.time_ms, short.sent_ms, short.book_time_ms, short.avg_price) == (
        T0 + 100,
        T0,
        T0,
        pytest.approx(995 / 9.9),
    )
    assert short.latency_usd == 0 and short.slippage_usd == pytest.approx(4.9)
    # OKX met the T0+200 book at T0+300, inside the limit 100.324: 4 x 99.5 + 5.9 x 100.2 = 989.18
    assert (long_.time_ms, long_.book_time_ms, long_.status) == (T0 + 300, T0 + 200, "FILLED")
    assert long_.avg_price == pytest.approx(989.18 / 9.9) and long_.limit_price == pytest.approx(LONG_LIMIT)
    assert long_.ref_price == 99.0 and long_.top_price == 99.5
    assert long_.latency_usd == pytest.approx(9.9 * 0.5)  # the touch moved 0.5 while it travelled
    assert long_.slippage_usd == pytest.approx(989.18 - 9.9 * 99.5)  # 4.13
    assert long_.fee == pytest.approx(0.0004 * 989.18)
    [pair] = [p for e in tape.events for p in e.positions]  # open once OKX answered (T0+600)
    assert (pair["status"], pair["qty"]) == ("open", pytest.approx(9.9))
    assert pair["entry_spread"] == pytest.approx(math.log(995 / 989.18))
    assert pair["leg_latency_usd"] == pytest.approx(4.95)
    assert pair["net_usd"] == pytest.approx(-(0.4975 + 0.0004 * 989.18 + 4.9 + (989.18 - 9.9 * 99.5) + 4.95))


def test_a_zero_fill_is_retried_worse_then_the_filled_leg_is_unwound_with_its_cost_by_hand():
    model = timed()
    tape = Tape(model)
    model.open(ENTRY, T0, tape.books)
    tape.at(T0 + 200, okx=okx(T0 + 200, asks=((100.5, 20.0),)))  # beyond both 100.324 and the retry's 100.3745
    tape.at(T0 + 1_200, binance=binance(T0 + 1_200, asks=((101.5, 20.0),)))
    tape.at(T0 + 1_500)
    short, long_, retry, unwind = tape.orders()
    assert (short.status, long_.status, long_.done_qty) == ("FILLED", "FAILED", 0.0)
    assert "IOC filled nothing" in long_.reason and long_.fee == 0
    assert (retry.time_ms, retry.sent_ms, retry.qty, retry.status) == (T0 + 900, T0 + 600, pytest.approx(9.9), "FAILED")
    assert retry.limit_price == pytest.approx(LONG_LIMIT * 1.0005)
    assert retry.client_order_id == client_order_id(SIG, "pair_long_entry", 1)
    # the retry answered at T0+1200: the 9.9 sold on Binance are bought back, met at T0+1300
    assert (unwind.action, unwind.side, unwind.time_ms, unwind.avg_price) == ("unwind", "BUY", T0 + 1_300, 101.5)
    assert unwind.client_order_id == client_order_id(SIG, "pair_short_exit")
    failed = model.pairs[pair_id(SIG)].to_record()
    assert (failed["status"], failed["close_reason"], failed["closed_ms"]) == ("failed", "unwind", T0 + 1_400)
    # short leg: sold 995 (touch 101, sweep 4.9, fee 0.4975), bought 9.9 x 101.5 = 1,004.85 (fee 0.502425)
    # gross at the touches: -9.9 x (101.5 - 101) = -4.95; net -4.95 - 0.4975 - 0.502425 - 4.9 = -10.849925
    assert failed["gross_usd"] == pytest.approx(-4.95) and failed["slippage_usd"] == pytest.approx(4.9)
    assert failed["net_usd"] == pytest.approx(-10.849925) == cash(tape.orders())
    assert model.active_by_key == {} and model.pending == []


def test_a_partial_fill_hedges_exactly_the_filled_quantity_and_the_pnl_matches_the_cash():
    model = timed()
    tape = Tape(model)
    model.open(ENTRY, T0, tape.books)
    tape.at(T0 + 200, okx=okx(T0 + 200, asks=((99.2, 3.0), (100.4, 10.0))))  # 3 inside the limit
    tape.at(T0 + 800, okx=okx(T0 + 800, asks=((99.8, 2.0), (100.6, 10.0))))  # the retry finds 2 more
    tape.at(T0 + 1_200, binance=binance(T0 + 1_200, asks=((101.5, 20.0),)))
    tape.at(T0 + 1_500)
    short, long_, retry, unwind = tape.orders()
    assert (long_.status, long_.done_qty, long_.avg_price) == ("PARTIAL", 3.0, 99.2)
    assert (retry.status, retry.qty, retry.done_qty) == ("PARTIAL", pytest.approx(6.9), 2.0)
    # 9.9 short against 5 long: the excess 4.9 is bought back on Binance at 101.5
    assert (unwind.action, unwind.qty, unwind.done_qty) == ("unwind", pytest.approx(4.9), pytest.approx(4.9))
    pair = model.pairs[pair_id(SIG)]
    assert (pair.status, pair.qty) == ("open", pytest.approx(5.0))
    assert pair.legs["short"].position() == pytest.approx(5.0) == pair.legs["long"].position()
    # close at the converged books of test_pairs: Binance buys 5 at 100, OKX sells 5 at 100.2
    t = T0 + 2_000
    books = {
        "binance": binance(t, bids=((99.9, 20.0),), asks=((100.0, 20.0),)),
        "okx": okx(t, bids=((100.2, 5.0), (100.0, 20.0)), asks=((100.3, 20.0),)),
    }
    closing = model.close(pair.pair_id, "operator", t, books)
    assert closing.orders == [] and pair.status == "closing"  # sent, not there yet
    done = model.run_due(t + 600, books)
    assert [o.time_ms for o in done.orders] == [t + 100, t + 300] and pair.status == "closed"
    record = pair.to_record()
    # short: in 9.9 at ref 101; out 4.9 at 101.5 and 5 at 100 -> gross -(997.35 - 999.9) = 2.55
    #   fees 0.4975 + 0.248675 + 0.25, sweep 4.9, no latency: net -3.346175
    # long: in 3 at 99.2 and 2 at 99.8, both sent at the signal's touch 99.0 (latency 0.6 + 1.6 = 2.2);
    #   out 5 at 100.2: gross 5 x (100.2 - 99) = 6.0, fees 0.11904 + 0.07984 + 0.2004: net 3.40072
    assert record["short_gross_usd"] == pytest.approx(2.55) and record["long_gross_usd"] == pytest.approx(6.0)
    assert record["short_net_usd"] == pytest.approx(-3.346175) and record["long_net_usd"] == pytest.approx(3.40072)
    assert record["leg_latency_usd"] == pytest.approx(2.2) and record["slippage_usd"] == pytest.approx(4.9)
    assert (
        record["net_usd"]
        == pytest.approx(-3.346175 + 3.40072)
        == pytest.approx(cash(pair.legs["short"].orders + pair.legs["long"].orders))
    )


def test_zero_latency_fills_at_the_signal_books_within_the_call():
    model = TimedPairs(params(legs=LegRules()))
    events = model.open(ENTRY, T0, entry_books())
    assert [o.status for o in events.orders] == ["FILLED", "FILLED"] and events.positions[-1]["status"] == "open"
    assert sum(o.latency_usd for o in events.orders) == 0
    assert events.positions[-1]["net_usd"] == pytest.approx(-(0.4975 + 0.3944 + 4.9 + 5.9))  # as test_pairs


def test_a_signal_applied_twice_opens_one_pair_even_while_its_legs_travel():
    model = timed()
    tape = Tape(model)
    model.open(ENTRY, T0, tape.books)
    assert model.open(ENTRY, T0 + 50, tape.books).duplicate
    tape.at(T0 + 100)
    assert model.open(ENTRY, T0 + 150, tape.books).duplicate
    other = PairEntry(SIG + ":2", "okx", "BTC-USDT-SWAP", "binance", "BTCUSDT")
    assert "already has an active pair" in model.open(other, T0 + 150, tape.books).positions[-1]["reason"]
    tape.at(T0 + 1_000)
    assert len(tape.orders()) == 2 and len(model.pending) == 0
    assert [p.status for p in model.pairs.values()] == ["open", "rejected"]


def test_a_liquidated_leg_closes_at_its_price_with_the_penalty_and_the_other_unwinds():
    model = timed(leverage=2.0, min_liquidation_distance=0.0, exit_spread=-1.0)  # no convergence exit
    tape = Tape(model)
    model.open(ENTRY, T0, tape.books)
    tape.at(T0 + 1_000)
    pair = model.pairs[pair_id(SIG)]
    assert pair.status == "open"
    # long OKX at 986 / 9.9, 2x, mmr 0.5 %: liquidation at (986 / 9.9) x 0.5 / 0.995 = 50.0480...
    liq = (986 / 9.9) * 0.5 / 0.995
    t = T0 + 5_000
    books = {"binance": binance(t, asks=((50.5, 20.0),)), "okx": okx(t)}
    assert model.evaluate(t, books, marks={"okx": liq + 0.01}).orders == []  # not there yet
    events = model.evaluate(t, books, marks={"okx": 50.0})
    [liquidated] = events.orders
    assert (liquidated.action, liquidated.avg_price, liquidated.time_ms) == ("liquidated", pytest.approx(liq), t)
    assert liquidated.liquidation_usd == pytest.approx(0.005 * 9.9 * liq) and liquidated.fee == 0
    assert pair.status == "closing"  # the short leg's close is travelling to Binance
    done = model.run_due(t + 200, books)
    [short_exit] = done.orders
    assert (short_exit.action, short_exit.side, short_exit.time_ms, short_exit.avg_price) == (
        "exit",
        "BUY",
        t + 100,
        50.5,
    )
    record = pair.to_record()
    assert (record["status"], record["close_reason"]) == ("closed", "liquidated")
    assert record["liquidation_usd"] == pytest.approx(0.005 * 9.9 * liq)
    # long: -986 - 0.3944 fee, +9.9 x liq; short: +995 - 0.4975, -9.9 x 50.5 - its fee
    by_hand = (9.9 * liq - 986 - 0.3944 - 0.005 * 9.9 * liq) + (995 - 0.4975 - 9.9 * 50.5 * 1.0005)
    assert (
        record["net_usd"]
        == pytest.approx(by_hand)
        == pytest.approx(cash(pair.legs["short"].orders + pair.legs["long"].orders))
    )
    assert model.active_by_key == {}


def test_an_auto_deleveraged_leg_closes_at_its_mark_without_penalty():
    model = timed()
    tape = Tape(model)
    model.open(ENTRY, T0, tape.books)
    tape.at(T0 + 1_000)
    t = T0 + 5_000
    books = entry_books(t)
    events = model.evaluate(t, books, marks={"binance": 100.7}, adl={"binance": True})
    [adl] = events.orders
    assert (adl.leg, adl.action, adl.avg_price, adl.liquidation_usd) == ("short", "adl", 100.7, 0.0)
    model.run_due(t + 600, books)
    [other] = [o for o in model.pairs[pair_id(SIG)].legs["long"].orders if o.action == "exit"]
    assert (other.time_ms, other.avg_price) == (t + 300, 98.5)
    assert model.pairs[pair_id(SIG)].close_reason == "adl"


def test_a_model_restored_between_any_two_steps_does_what_the_uninterrupted_one_does():
    def run(restore: bool) -> list:
        model = timed()
        tape = Tape(model)
        model.open(ENTRY, T0, tape.books)
        script = [
            (T0 + 200, {"okx": okx(T0 + 200, asks=((99.2, 3.0), (100.4, 10.0)))}),
            (T0 + 800, {"okx": okx(T0 + 800, asks=((99.8, 2.0), (100.6, 10.0)))}),
            (T0 + 1_200, {"binance": binance(T0 + 1_200, asks=((101.5, 20.0),))}),
            (T0 + 1_500, {}),
        ]
        for t, books in script:
            tape.at(t, **books)
            if restore:
                data = orjson.loads(orjson.dumps(tape.model.to_dict()))
                tape.model = model_from_dict(tape.model.params, data)
        return [o.to_record() for o in tape.orders()] + [p.to_record() for p in tape.model.pairs.values()]

    assert run(True) == run(False)
    with pytest.raises(ValueError, match="without leg timing"):
        model_from_dict(timed().params, {"pairs": []})


def test_the_end_of_a_session_lets_legs_in_flight_arrive_and_then_closes_the_pair():
    model = timed()
    books = entry_books(T0)
    model.open(ENTRY, T0, books)  # both legs travelling
    events = model.close_all("end_of_session", T0, books)
    # entries meet the books at T0+100 / T0+300 and answer by T0+600; the exits leave then and answer by T0+1200
    assert [(o.action, o.time_ms) for o in events.orders] == [
        ("entry", T0 + 100),
        ("entry", T0 + 300),
        ("exit", T0 + 700),
        ("exit", T0 + 900),
    ]
    pair = model.pairs[pair_id(SIG)]
    assert (pair.status, pair.close_reason, pair.closed_ms) == ("closed", "end_of_session", T0 + 1_200)
    assert model.pending == [] and model.active_by_key == {}


def test_a_venue_that_refuses_the_entry_gets_its_retry_refused_too_and_the_other_leg_is_unwound():
    model = TimedPairs(params(legs=LegRules(retries=1)))  # zero latency: all of it inside open()
    books = {"binance": binance(T0, asks=((102.0, 20.0),)), "okx": okx(T0)}
    events = model.open(ENTRY, T0, books, {"okx": "leverage not set"})
    short, long_, retry, unwind = events.orders
    assert (long_.status, retry.status) == ("FAILED", "FAILED") and "venue refused: leverage not set" in retry.reason
    # the 9.9 sold on Binance (995 USD) are bought back at 102: the instant model's cost, 15.8024
    assert (unwind.action, unwind.avg_price, unwind.done_qty) == ("unwind", 102.0, pytest.approx(9.9))
    failed = events.positions[-1]
    assert (failed["status"], failed["close_reason"]) == ("failed", "unwind")
    assert failed["net_usd"] == pytest.approx(-15.8024) == cash(events.orders)


# --- property: whatever the books do while the legs travel ---------------------------------------------
moves = st.lists(
    st.tuples(st.integers(1, 3_000), st.sampled_from(["binance", "okx"]), levels, levels, st.floats(-1.5, 1.5)),
    max_size=8,
)
BASE = {"binance": 101.1, "okx": 99.1}  # the entry books' mids: binance rich


@FUZZ
@given(
    latency=st.tuples(st.integers(0, 500), st.integers(0, 500)),
    moves=moves,
    retries=st.integers(0, 2),
    entry=st.tuples(levels, levels),
    rate=st.floats(-0.003, 0.003),
    sequential=st.booleans(),
)
def test_the_pair_always_hedges_what_filled_and_its_pnl_is_the_cash_of_the_fills(
    latency, moves, retries, entry, rate, sequential
):
    """50 USD a leg on random books that move while the legs travel (at 200 examples, about a third of
    the pairs close, half of those after a partial fill; the rest fail at sizing or fill nothing)."""
    venues = {
        "binance": VenueParams(taker_fee=0.0005, lot_step=0.1, latency_ms=latency[0]),
        "okx": VenueParams(taker_fee=0.0004, lot_step=0.001, latency_ms=latency[1]),
    }
    model = TimedPairs(params(notional_usd=50.0, venues=venues, legs=LegRules(retries=retries, sequential=sequential)))
    books = {
        "binance": binance(T0, bids=_side(entry[0], 101.0, True), asks=_side(entry[0], 101.2, False)),
        "okx": okx(T0, bids=_side(entry[1], 99.0, True), asks=_side(entry[1], 99.2, False)),
    }
    events = model.open(ENTRY, T0, books)
    for dt, venue, bids, asks, move in sorted(moves, key=lambda m: m[0]):  # books move while legs travel
        t, mid = T0 + dt, BASE[venue] + move
        events.extend(model.run_due(t - 1, books))
        book = binance if venue == "binance" else okx
        books = books | {venue: book(t, bids=_side(bids, mid - 0.1, True), asks=_side(asks, mid + 0.1, False))}
        if dt == 1_000:
            events.extend(model.settle_funding("okx", "BTC-USDT-SWAP", t, rate, mid))
    events.extend(model.evaluate(T0 + 3_000, books))
    end = T0 + 3_000
    events.extend(
        model.close_all(
            "end_of_session", end, {v: b.__class__(b.exchange, b.symbol, end, b.bids, b.asks) for v, b in books.items()}
        )
    )
    pair = model.pairs[pair_id(SIG)]
    record = pair.to_record()
    parts = ("gross", "fees", "slippage", "funding", "leg_latency", "liquidation")
    for prefix in ("", "short_", "long_"):
        assert record[f"{prefix}net_usd"] == pytest.approx(
            record[f"{prefix}gross_usd"] - sum(record[f"{prefix}{k}_usd"] for k in parts[1:]), abs=1e-9
        )
    assert all(o.done_qty <= o.qty + 1e-9 and o.fee >= 0 and o.slippage_usd >= -1e-9 for o in events.orders)
    if pair.status in ("open", "closing", "unwinding"):
        return  # a book that could not take an exit (the resend waits for the next evaluation)
    assert pair.status in ("closed", "failed") and model.pending == [] and model.active_by_key == {}
    assert all(leg.position() == 0 for leg in pair.legs.values())  # flat: nothing left naked
    paid = sum(p.paid for p in events.funding)
    assert record["net_usd"] == pytest.approx(cash(events.orders) - paid, abs=1e-6)
    if pair.status == "closed":  # both legs held the hedged quantity between the entry and the exit
        for leg in pair.legs.values():
            assert sum(o.done_qty for o in leg.orders if o.action == "exit") == pytest.approx(pair.qty)


def test_sequential_legs_send_the_hedge_for_what_the_lead_filled_limited_by_its_actual_price():
    """The thinner book leads: inside their limits OKX's asks hold 14 coins, Binance's bids 15, so
    the long leg goes first (T0 -> OKX at T0+300, answer T0+600); the short hedge leaves at T0+600 for
    the 9.9 filled, limit 99.596 x exp(0.0018) = 99.7753 (from the lead's actual VWAP 986 / 9.9)."""

    def run(binance_then):
        model = timed(legs=LegRules(min_entry_spread=0.0, retries=1, retry_step_bp=5.0, sequential=True))
        tape = Tape(model)
        model.open(ENTRY, T0, tape.books)
        tape.at(T0 + 650, binance=binance_then)
        tape.at(T0 + 2_000)
        return model, tape.orders()

    # Binance moved before the hedge arrived (T0+700): 3 at 100.5 and 6.9 at 99.8 are inside, 99.7 is not
    model, orders = run(binance(T0 + 650, bids=((100.5, 3.0), (99.8, 6.9), (99.7, 50.0))))
    lead, hedge = orders
    assert (lead.leg, lead.sent_ms, lead.time_ms, lead.avg_price) == ("long", T0, T0 + 300, pytest.approx(986 / 9.9))
    assert (hedge.leg, hedge.sent_ms, hedge.time_ms, hedge.qty) == ("short", T0 + 600, T0 + 700, pytest.approx(9.9))
    assert hedge.limit_price == pytest.approx((986 / 9.9) * math.exp(0.0018))
    assert hedge.avg_price == pytest.approx((3 * 100.5 + 6.9 * 99.8) / 9.9)  # 990.12 / 9.9
    assert hedge.latency_usd == pytest.approx(9.9 * (101 - 100.5))  # the touch fell 0.5 from the signal's
    pair = model.pairs[pair_id(SIG)]
    assert (pair.status, pair.qty) == ("open", pytest.approx(9.9))
    assert pair.entry_spread == pytest.approx(math.log(990.12 / 986))
    # nothing inside the limit: the hedge and its retry (99.7753 / 1.0005 = 99.7254) fill nothing, the lead unwinds
    model, orders = run(binance(T0 + 650, bids=((99.7, 50.0),)))
    assert [(o.leg, o.action, o.status, o.time_ms) for o in orders] == [
        ("long", "entry", "FILLED", T0 + 300),
        ("short", "entry", "FAILED", T0 + 700),
        ("short", "entry", "FAILED", T0 + 900),
        ("long", "unwind", "FILLED", T0 + 1_300),
    ]
    assert orders[2].limit_price == pytest.approx((986 / 9.9) * math.exp(0.0018) / 1.0005)
    pair = model.pairs[pair_id(SIG)]
    assert (pair.status, pair.close_reason) == ("failed", "unwind")
    # 986 bought, 9.9 x 98.5 = 975.15 sold: net -(10.85 + 0.3944 + 0.39006) = cash
    assert (
        pair.to_record()["net_usd"] == pytest.approx(-(986 - 975.15 + 0.0004 * 986 + 0.0004 * 975.15)) == cash(orders)
    )
