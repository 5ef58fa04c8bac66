"""The paper executor's event clock (``execution.event_clock``, ``execution.service_clock``), pure: the
rule on hand-made inputs, its state through offset metadata, and the service's way of handing inputs
(the aligner's order across partitions, ``ExecutorClock.before/after``) against the backtest's
executor over the same session, uninterrupted and restarted from committed cuts.
"""

from __future__ import annotations

from typing import Any

import pytest

from execution.broker import TERMINAL_STATES
from execution.event_clock import EventClock
from execution.executor import Executor, ListSink
from execution.input_order import TIME_FIELD, InputAligner
from execution.paper_broker import PaperBroker
from execution.service_clock import ExecutorClock
from tests.execution.event_clock_session import END, ROUTED, T0, backtest, backtest_run, comparable, session

BTC, ETH = "binance:BTCUSDT", "binance:ETHUSDT"


def test_now_only_moves_forward_and_the_clock_ticks_once_a_second_where_the_backtest_ticks():
    clock = EventClock()
    # before any signal, mark or book nothing is busy: trades do not tick (the backtest feeds them untimed)
    assert clock.advance("md.trades", 1_000, BTC) == (1_000, False)
    assert clock.advance("md.book", 1_500, BTC) == (1_500, True)  # the first tick: at the record's time
    clock.handed("md.book", lambda: {BTC})  # BTC busy after the book: its trades tick from now on
    assert clock.advance("md.trades", 2_400, BTC) == (2_400, False)  # less than a second since 1,500
    assert clock.advance("md.trades", 2_400, ETH) == (2_400, False)  # idle market: never ticks
    assert clock.advance("md.trades", 2_600, ETH) == (2_600, False)
    assert clock.advance("md.trades", 2_700, BTC) == (2_700, True)  # busy: ticks at its own time
    clock.handed("md.trades", lambda: set())  # a trade does not renew the busy markets ...
    assert clock.ticking == {BTC}
    # a late signal is handed at the time reached (as the backtest hands a late one), and a tick is not
    # due before 3,700
    assert clock.advance("signals", 2_000, BTC) == (2_700, False)
    clock.handed("signals", lambda: set())  # ... a signal, mark or book does
    assert clock.advance("md.trades", 4_000, BTC) == (4_000, False)
    assert clock.advance("md.mark", 3_999, ETH) == (4_000, True)
    assert (clock.now, clock.last_tick, clock.inputs) == (4_000, 4_000, 9)


def test_the_clock_goes_with_the_offsets_and_the_newest_cut_is_taken():
    clock = EventClock(now=5_000, last_tick=4_200, ticking=frozenset({BTC, ETH}), inputs=70)
    meta = clock.encode()
    assert len(meta) < 4096 and EventClock.decode(meta) == clock
    older = EventClock(now=5_000, last_tick=4_200, ticking=frozenset({BTC}), inputs=69).encode()
    assert EventClock.latest([older, None, "", "not json", '{"v": 2}', meta]) == clock
    assert EventClock.latest([None, "other"]) is None
    restored = EventClock.from_restore([1_000, 7_000, 3_000], [ETH])
    assert (restored.now, restored.last_tick, restored.ticking) == (7_000, 7_000, {ETH})
    assert EventClock.from_restore([], []).now == -1


# --- the service's way of handing inputs, against the backtest -----------------------------------------


def aligned(records: list[tuple[str, dict[str, Any]]], partition_of: dict[str, int]) -> list[tuple[str, Any]]:
    """The records in the order the service's aligner releases them: every topic-partition read to its
    end (a replay already in the broker), released together across partitions."""
    aligner = InputAligner()
    offsets: dict[tuple[str, int], int] = {}
    for topic, record in records:
        p = partition_of[record["symbol"]]
        offset = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
        aligner.add(topic, p, int(record[TIME_FIELD[topic]]), offset, record)
    for topic in TIME_FIELD:
        for p in set(partition_of.values()):
            aligner.at_end(topic, p)
    return [(held.topic, held) for held in aligner.release_all(set(partition_of.values()))]


def new_executor(clock: ExecutorClock, sink: ListSink) -> Executor:
    return Executor(ROUTED, "paper", PaperBroker(ROUTED.fees, ROUTED.paper), sink, clock.now())


def hand(ex: Executor, clock: ExecutorClock, inputs: list[tuple[str, Any]]) -> None:
    """What ``ExecutorService._handle_held`` does with each released input."""
    for topic, held in inputs:
        record = held.item
        now = clock.before(ex, topic, held.time, record)
        {"md.trades": ex.on_trade, "md.book": ex.on_book, "md.mark": ex.on_mark, "signals": ex.on_signal}[topic](
            record, now
        )
        clock.after(ex, topic)


def pairs(sink: ListSink) -> list[tuple[str, dict[str, Any]]]:
    return [(topic, record) for topic, _, record in sink.records]


def wall() -> int:
    raise AssertionError("the paper executor read the wall clock")


@pytest.mark.parametrize("partition_of", [{"BTCUSDT": 0, "ETHUSDT": 0}, {"BTCUSDT": 3, "ETHUSDT": 1}])
def test_the_service_hands_the_executor_what_the_backtest_does(partition_of):
    records = session()
    reference = comparable(backtest(records))
    assert reference["orders"] and {r["type"] for r in reference["orders"]} == {"LIMIT", "MARKET"}
    # the maker rule on event time routes some entries to market (test_the_session_s_makers_...) as the backtest
    assert any("degraded:market_only" in (r["reason"] or "") for r in reference["orders"])
    sink = ListSink()
    clock = ExecutorClock("paper", wall)
    ex = new_executor(clock, sink)
    ex.stamp_mid = False
    hand(ex, clock, aligned(records, partition_of))
    assert comparable(pairs(sink)) == reference


def run_cut(inputs: list[tuple[str, Any]], cut: int) -> tuple[list[tuple[str, dict[str, Any]]], Executor]:
    """Inputs up to ``cut`` through one executor, the rest through a new one restored as the service
    restores on an assignment (``ExecutorService._on_assign``): warmed with the newest inputs before the
    cut, its state from what the first published, its clock the one committed with the cut's offsets.
    Returns what both published and the first executor (its state at the cut)."""
    first = ListSink()
    clock = ExecutorClock("paper", wall)
    cut_short = new_executor(clock, first)
    hand(cut_short, clock, inputs[:cut])
    restarted = ExecutorClock("paper", wall)
    restarted.events = EventClock.decode(clock.metadata())
    second = ListSink()
    ex = new_executor(restarted, second)
    before = [h.item for t, h in inputs[:cut]]
    ex.warm_market([r for r in before if "trade_time" in r], [r for r in before if "bids" in r])
    signals = {h.item["signal_id"]: h.item for t, h in inputs[:cut] if t == "signals"}
    ex.restore(
        first.of("positions"),
        first.of("orders"),
        first.of("risk.events"),
        restarted.now(),
        signals=lambda ids: {i: signals[i] for i in ids if i in signals},
        committed_cut=True,
        fills=first.of("fills"),
    )
    hand(ex, restarted, inputs[cut:])
    return pairs(first) + pairs(second), cut_short


def uninterrupted() -> tuple[list[tuple[str, Any]], ListSink]:
    """The session's inputs as the aligner releases them (one partition) and what one executor published."""
    inputs = aligned(session(), {"BTCUSDT": 0, "ETHUSDT": 0})
    whole = ListSink()
    clock = ExecutorClock("paper", wall)
    hand(new_executor(clock, whole), clock, inputs)
    return inputs, whole


def part_filled(ex: Executor) -> bool:
    """A routed entry in flight that has filled in part."""
    return any(e.fills for e in ex.entries.values())


def kinds_at(ex: Executor, end: int) -> set[str]:
    """What was going on at a cut (``ex``: the executor cut short there; ``end``: the session's end)."""
    entry_orders = [i.request.type for i in ex.orders.values() if i.leg.startswith("entry")]
    fills = [f.liquidity for e in ex.entries.values() for f in e.fills]
    kinds = {"maker wait" for t in entry_orders if t == "LIMIT"} | {"slice sent" for t in entry_orders if t == "MARKET"}
    kinds |= {"maker part filled" for f in fills if f == "maker"} | {
        "taker slice filled" for f in fills if f == "taker"
    }
    kinds |= {"between slices" for e in ex.entries.values() if e.due_ms is not None and e.plan is not None}
    kinds |= {"paused" for _ in [0] if ex.guard.state_name(end) != "active"}
    rule = ex.entry_flow.maker_rule  # the maker rule on event time had set market-only
    kinds |= {"market only" for _ in [0] if rule is not None and rule.flags.market_only}
    return kinds | {"position open" for _ in ex.positions}


def test_a_restart_from_any_committed_cut_equals_the_uninterrupted_run_bit_for_bit():
    """Cuts (the committed offsets and, with them, the clock's metadata) every 29th input, right after each
    taker slice was sent and right after each fill: inside maker waits, after a maker filled in part, with
    a slice in flight, after each TWAP slice filled (between slices), inside guard pauses, with positions
    open and with nothing going on. Every record equals the uninterrupted run's exactly, floats to the last
    bit: what an order put back had filled is replayed from its fills records one by one at their market
    prices (``routed_restore.OrderFills``), so the entry's filled quantity, the next slice's quantity, the
    entry price, fees and slippage are the same sums in the same order. (One execution per order from
    its orders record, as before, was equal to 12 significant digits only: 2.666666666666666 against
    2.666666666666667 for a slice's rest.)"""
    inputs, whole = uninterrupted()
    want = comparable(pairs(whole))
    orders, fills = whole.of("orders"), whole.of("fills")
    slices_sent = [r["event_time"] for r in orders if r["state"] == "NEW" and "-ef" in r["client_order_id"]]
    assert len(slices_sent) > 10 and {f["liquidity"] for f in fills} == {"maker", "taker"}
    after = sorted({next(i for i, (_, h) in enumerate(inputs) if h.time > t) for t in slices_sent})
    after += sorted({next(i for i, (_, h) in enumerate(inputs) if h.time > f["event_time"]) for f in fills})
    cuts = sorted(set(range(1, len(inputs), 29)) | set(after))
    end = max(h.time for _, h in inputs)  # the uninterrupted run's clock at its end
    kinds: set[str] = set()
    for cut in cuts:
        published, ex = run_cut(inputs, cut)
        kinds |= kinds_at(ex, end)
        assert comparable(published) == want, cut
    assert kinds == {
        "maker wait",
        "maker part filled",
        "slice sent",
        "taker slice filled",
        "between slices",
        "paused",
        "position open",
        "market only",
    }


def test_the_session_s_makers_set_the_maker_rule_and_the_next_entries_go_to_market():
    """By hand: SLO windows are aligned to 5 minutes of Unix time and T0 is 200 s into one, so the first
    closes at T0 + 100 s. Before it the session's first four entries each rest a maker and end it after
    the wait with 1 of 4, 0 of 4, 0 of 8 and 1 of 8 filled: a maker fill ratio of (1/4 + 1/8) / 4 =
    0.09375 < 0.25 over 4 orders, so ``maker_fill_ratio_low`` is set at T0 + 100 s, and every entry
    after it goes to market (no maker, its orders' reason says why); the backtest reports the change."""
    emitted, accounts = backtest_run(session())
    window = 300_000
    boundary = T0 - T0 % window + window
    assert boundary == T0 + 100_000
    orders = [r for topic, r in emitted if topic == "orders" and r["leg"].startswith("entry")]
    makers = [r for r in orders if r["type"] == "LIMIT" and r["state"] in TERMINAL_STATES]
    assert [(r["filled_qty"], r["qty"]) for r in makers] == [(1.0, 4.0), (0.0, 4.0), (0.0, 8.0), (1.0, 8.0)]
    assert all(r["event_time"] < boundary for r in makers)
    late = [r for r in orders if r["state"] == "PENDING_NEW" and r["event_time"] >= boundary]
    assert len({r["signal_id"] for r in late}) == 2  # two entries before the guard's pause
    assert all(r["type"] == "MARKET" and r["reason"].endswith(" degraded:market_only") for r in late)
    (change,) = accounts.degradations(END)
    assert (change["time_ms"], change["rule"], change["active"], change["samples"]) == (
        boundary,
        "maker_fill_ratio_low",
        True,
        4,
    )
    assert change["value"] == (1 / 4 + 0 / 4 + 0 / 8 + 1 / 8) / 4


def test_a_restart_inside_a_routed_entry_that_filled_in_part():
    """Cut inside a routed entry whose resting maker has filled in part: the rest is re-entered in the new
    paper book although the book has moved onto its price by now (a post-only limit is checked when it is
    sent, not when a restart puts it back; refused, its entry waited on an order that was nowhere and the
    position never opened), and the run equals the uninterrupted one."""
    inputs, whole = uninterrupted()
    cut = next(c for c in range(1, len(inputs), 7) if part_filled(run_cut(inputs, c)[1]))
    assert comparable(run_cut(inputs, cut)[0]) == comparable(pairs(whole))
