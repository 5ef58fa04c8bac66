"""The order router (``execution.routing``): buckets, TWAP slices and their jitter, the maker -> taker
threshold, the liquidity probe, degradation; and one routed entry through the executor and the paper
broker. Pure and cheap: no Kafka, no database."""

from __future__ import annotations

import pytest

from execution.client_ids import client_order_id
from execution.config import EntryPolicy, ExecutorConfig
from execution.degradation import DegradationFlags
from execution.domain import BookTop, Signal
from execution.routing import (
    ProbeResult,
    RoutePlan,
    Router,
    SpreadTracker,
    bucket_for,
    jitter_key,
    plan_route,
    probe,
    slice_delay_ms,
    split_qty,
)
from stream_apps.core.routing_table import LiquidityProbe, RouteBucket, RoutingTable
from stream_apps.core.strategy import StrategyConfigError, load_strategy, parse_strategy, strategy_path
from tests.support.execution import EXCHANGE, SYMBOL, T0, Harness, signal_record

MIN = 60_000
TABLE = RoutingTable()


def book(bid: float, ask: float, t: int, qty: float = 1e6) -> BookTop:
    return BookTop(EXCHANGE, SYMBOL, bid, ask, t, ((bid, qty),), ((ask, qty),))


def key(rec: dict) -> str:
    """The jitter key of a signal record (``execution.routing.jitter_key``)."""
    return jitter_key(Signal.from_record(rec))


def calm_hour(tracker: SpreadTracker, start: int, bid: float = 99.995, ask: float = 100.005) -> None:
    """One book a minute for an hour at a 1 bp spread (mid 100)."""
    for i in range(60):
        tracker.observe(book(bid, ask, start + i * MIN))


@pytest.mark.parametrize(
    ("notional", "index", "label"),
    [
        (0.0, 0, "0-200"),
        (199.99, 0, "0-200"),
        (200.0, 1, "200-500"),
        (499.0, 1, "200-500"),
        (500.0, 2, "500-1000"),
        (999.99, 2, "500-1000"),
        (1000.0, 3, "1000+"),
        (1e9, 3, "1000+"),
    ],
)
def test_a_notional_falls_in_the_first_bucket_whose_bound_exceeds_it(notional, index, label):
    assert bucket_for(TABLE, notional) == index
    assert TABLE.label(index) == label


def test_the_default_buckets_are_the_plans():
    rows = [(b.up_to, b.maker_wait_ms, b.slices, b.slice_interval_ms) for b in TABLE.buckets]
    assert rows == [(200, 1500, 1, 0), (500, 2000, 2, 600), (1000, 2500, 3, 800), (None, 3000, 4, 1000)]


def test_a_table_without_an_unbounded_last_bucket_or_out_of_order_is_refused():
    with pytest.raises(ValueError, match="last bucket"):
        RoutingTable(buckets=[RouteBucket(up_to=100, maker_wait_ms=0)])
    with pytest.raises(ValueError, match="increase"):
        RoutingTable(
            buckets=[
                RouteBucket(up_to=500, maker_wait_ms=0),
                RouteBucket(up_to=200, maker_wait_ms=0),
                RouteBucket(up_to=None, maker_wait_ms=0),
            ]
        )


def test_twap_slices_are_equal_and_sum_to_the_quantity():
    parts = split_qty(0.7, 3)
    assert len(parts) == 3 and parts[0] == parts[1] == pytest.approx(0.7 / 3)
    assert sum(parts) == pytest.approx(0.7, abs=1e-15)
    plan = plan_route(TABLE, 750.0, ProbeResult("send", 3, ""), maker_possible=True)
    assert (plan.label, plan.maker_wait_ms, plan.slices, plan.slice_interval_ms) == ("500-1000", 2500, 3, 800)


def test_slice_jitter_stays_within_its_bounds_and_is_the_same_for_the_same_signal():
    delays = [slice_delay_ms(1000, 0.2, 7, f"sig-{i}", k) for i in range(200) for k in (1, 2, 3)]
    assert all(800 <= d <= 1200 for d in delays)
    assert min(delays) < 850 and max(delays) > 1150  # spread over the range, not one value
    again = [slice_delay_ms(1000, 0.2, 7, f"sig-{i}", k) for i in range(200) for k in (1, 2, 3)]
    assert again == delays  # no wall clock, no global random: the same input gives the same schedule
    assert slice_delay_ms(1000, 0.2, 8, "sig-0", 1) != slice_delay_ms(1000, 0.2, 7, "sig-0", 1) or (
        slice_delay_ms(1000, 0.2, 8, "sig-1", 1) != slice_delay_ms(1000, 0.2, 7, "sig-1", 1)
    )  # the seed matters
    assert {slice_delay_ms(600, 0.0, 7, f"sig-{i}", 1) for i in range(20)} == {600}


def test_a_renamed_revision_entering_the_same_market_at_the_same_moment_gets_the_same_schedule():
    """The jitter key is the market, evaluation time and direction, not the signal id (which names the
    strategy and its revision): strategy simulate's candidate runs under another name and must trade
    exactly as the active strategy when its rules are the same."""
    active = signal_record(strategy="v53")
    renamed = {**signal_record(strategy="v53_candidate"), "config_hash": "other"}
    assert active["signal_id"] != renamed["signal_id"] and key(active) == key(renamed)
    assert key(active) == f"{EXCHANGE}:{SYMBOL}:{T0}:LONG"
    assert [slice_delay_ms(800, 0.2, 0, key(renamed), k) for k in (1, 2, 3)] == [
        slice_delay_ms(800, 0.2, 0, key(active), k) for k in (1, 2, 3)
    ]
    later = signal_record(eval_time=T0 + 15_000)
    assert [slice_delay_ms(800, 0.2, 0, key(later), k) for k in (1, 2, 3)] != [
        slice_delay_ms(800, 0.2, 0, key(active), k) for k in (1, 2, 3)
    ]


@pytest.mark.parametrize(("filled", "taker"), [(0.0, True), (0.49, True), (0.5, False), (0.8, False), (1.0, False)])
def test_below_theta_after_the_maker_wait_the_rest_goes_to_the_taker(filled, taker):
    plan = plan_route(RoutingTable(taker_below_fill_ratio=0.5), 300.0, ProbeResult("send", 2, ""), True)
    assert plan.go_taker(filled, 1.0) is taker


def test_theta_zero_takes_what_filled_and_theta_one_completes_every_partial_fill():
    keep = plan_route(RoutingTable(taker_below_fill_ratio=0.0), 300.0, ProbeResult("send", 2, ""), True)
    assert keep.go_taker(0.01, 1.0) is False and keep.go_taker(0.0, 1.0) is True
    complete = plan_route(RoutingTable(taker_below_fill_ratio=1.0), 300.0, ProbeResult("send", 2, ""), True)
    assert complete.go_taker(0.99, 1.0) is True


def test_the_probe_holds_an_entry_on_a_planted_wide_spread():
    tracker = SpreadTracker()
    calm_hour(tracker, T0 - 60 * MIN)
    wide = book(99.98, 100.02, T0)  # 4 bps, the hour's mean about 1 bp
    tracker.observe(wide)
    mean = tracker.mean(wide.key, T0, 3_600_000)
    # every minute that overlaps (T0 - 1 h, T0]: the 60 calm books and the wide one
    assert mean is not None and mean[1] == 61
    assert mean[0] == pytest.approx((60 * 1.0 + 4.0) / 61, rel=1e-6)
    cfg = LiquidityProbe()
    held = probe(cfg, wide, "BUY", 300.0, 2, mean, waits_done=0)
    assert held.action == "wait" and held.reason.startswith("wide_spread")
    # held once already (max_waits 1): sent, split into split_factor x the bucket's slices
    again = probe(cfg, wide, "BUY", 300.0, 2, mean, waits_done=1)
    assert (again.action, again.slices) == ("send", 4)
    # a spread under twice the mean passes
    normal = book(99.99, 100.01, T0)  # 2 bps < 2 x 1.05
    assert probe(cfg, normal, "BUY", 300.0, 2, mean, 0) == ProbeResult("send", 2, "")


def test_the_probe_judges_no_spread_before_it_has_seen_enough_books():
    tracker = SpreadTracker()
    for i in range(5):
        tracker.observe(book(99.995, 100.005, T0 - i * MIN))
    wide = book(99.9, 100.1, T0)
    assert probe(LiquidityProbe(), wide, "BUY", 300.0, 2, tracker.mean(wide.key, T0, 3_600_000), 0).action == "send"


def test_split_on_a_wide_spread_and_more_slices_on_a_thin_book():
    tracker = SpreadTracker()
    calm_hour(tracker, T0 - 60 * MIN)
    wide = book(99.98, 100.02, T0)
    mean = tracker.mean(wide.key, T0, 3_600_000)
    split = probe(LiquidityProbe(on_wide="split", split_factor=3), wide, "SELL", 300.0, 2, mean, 0)
    assert (split.action, split.slices) == ("send", 6)
    # 900 USDT against 1000 USDT shown on the bid side: at most half of it a slice -> 2 slices
    thin = BookTop(EXCHANGE, SYMBOL, 100.0, 100.01, T0, ((100.0, 6.0), (99.99, 4.0)), ((100.01, 1e6),))
    found = probe(LiquidityProbe(depth_levels=2), thin, "SELL", 900.0, 1, None, 0)
    assert found.slices == 2 and found.reason.startswith("thin_book")
    assert probe(LiquidityProbe(depth_levels=2, max_slices=1), thin, "SELL", 5000.0, 1, None, 0).slices == 1


def test_degradation_flags_turn_the_plan_into_market_orders():
    router = Router(TABLE)
    calm_hour(router.spreads, T0 - 60 * MIN)
    wide = book(99.98, 100.02, T0)
    router.on_book(wide)
    assert isinstance(router.plan("h", "BUY", 750.0, wide, T0, 0), ProbeResult)  # healthy: held
    market = router.plan("h", "BUY", 750.0, wide, T0, 0, DegradationFlags(market_only=True))
    assert isinstance(market, ProbeResult)  # market_only still probes, then sends without the maker wait
    sent = router.plan("h", "BUY", 750.0, wide, T0, 1, DegradationFlags(market_only=True))
    assert isinstance(sent, RoutePlan) and sent.maker_wait_ms == 0 and sent.slices == 6
    assert "degraded:market_only" in sent.reason("taker", 1)
    one = router.plan("h", "BUY", 750.0, wide, T0, 0, DegradationFlags(no_twap_no_maker=True))
    assert isinstance(one, RoutePlan) and (one.maker_wait_ms, one.slices) == (0, 1)
    router.flags = DegradationFlags(no_twap_no_maker=True)  # what the SLO monitor sets
    assert router.plan("h", "BUY", 750.0, wide, T0, 0) == one
    router.flags_at = lambda now: DegradationFlags(no_twap_no_maker=now >= T0 + 5000)  # a scripted sequence
    assert isinstance(router.plan("h", "BUY", 750.0, wide, T0, 0), ProbeResult)
    assert router.plan("h", "BUY", 750.0, wide, T0 + 5000, 0) == one


def test_a_strategy_revision_carries_its_own_table_in_its_hash():
    data = load_strategy("v53").model_dump(mode="json")
    plain = parse_strategy(dict(data))
    assert plain.routing is None and "routing" not in plain.model_dump()
    assert plain.config_hash == load_strategy(strategy_path("v53")).config_hash
    routed = parse_strategy({**data, "routing": {"slice_jitter": 0.1}})
    assert routed.routing == RoutingTable(slice_jitter=0.1) and routed.config_hash != plain.config_hash
    with pytest.raises(StrategyConfigError, match="routing: buckets: the last bucket"):
        parse_strategy({**data, "routing": {"buckets": [{"up_to": 100, "maker_wait_ms": 0}]}})
    router = Router(TABLE)
    router.register_all([routed, plain])  # what the backtest does with its strategies
    assert router.table_for(routed.config_hash).slice_jitter == 0.1
    assert router.table_for(plain.config_hash) is TABLE
    asked: list[str] = []
    router.resolver = lambda h: asked.append(h) or (RoutingTable(jitter_seed=5) if h == "known" else None)
    assert router.table_for("known").jitter_seed == 5 and router.table_for("unknown") is TABLE
    assert router.table_for("known").jitter_seed == 5 and asked == ["known", "unknown"]  # a found table is kept


def _big_book(h: Harness, bid: float, ask: float, t: int) -> None:
    h.now = max(h.now, t)
    rec = {
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "last_update_id": t,
        "event_time": t,
        "receive_time": t,
        "bids": [{"price": bid, "qty": 1e6}],
        "asks": [{"price": ask, "qty": 1e6}],
        "obi_10": 0.0,
    }
    h.ex.on_book(rec, h.now)


def test_a_routed_entry_waits_as_maker_then_sends_jittered_taker_slices_through_the_paper_broker():
    """Notional 400 USDT (1R 200 / risk 50 = 4 at 100): bucket 200-500, maker 2 s, 2 slices 600 ms apart."""
    h = Harness(ExecutorConfig(entry=EntryPolicy(kind="routed")))
    _big_book(h, 99.9, 100.0, T0)
    rec = signal_record(risk=50.0)
    h.signal_rec(rec)
    sid = rec["signal_id"]
    [maker] = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    assert (maker["client_order_id"], maker["type"], maker["price"], maker["qty"]) == (
        client_order_id(sid, "entry"),
        "LIMIT",
        99.9,
        4.0,
    )
    assert maker["reason"] == "route 200-500 n=400.00 maker 0/2"
    h.clock(T0 + 1999)
    assert not [o for o in h.of("orders") if o["state"] == "CANCELED"]
    h.clock(T0 + 2000)  # the wait is over, nothing filled: below theta, the first taker slice
    sent = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    assert [o["client_order_id"] for o in sent] == [
        client_order_id(sid, "entry"),
        client_order_id(sid, "entry_fallback"),
    ]
    assert (sent[1]["type"], sent[1]["qty"], sent[1]["reason"]) == ("MARKET", 2.0, "route 200-500 n=400.00 taker 1/2")
    h.trade(100.0, T0 + 2100)
    assert sum(f["qty"] for f in h.fills()) == pytest.approx(2.0)
    delay = slice_delay_ms(600, 0.2, 0, key(rec), 1)
    assert 480 <= delay <= 720
    h.clock(T0 + 2100 + delay - 1)
    assert len([o for o in h.of("orders") if o["state"] == "PENDING_NEW"]) == 2
    h.clock(T0 + 2100 + delay)
    last = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"][-1]
    assert (last["client_order_id"], last["qty"]) == (client_order_id(sid, "entry_fallback", 1), 2.0)
    assert not h.positions("opened")  # the position opens once the entry is complete
    h.trade(100.0, T0 + 3000)
    [opened] = h.positions("opened")
    assert opened["qty"] == pytest.approx(4.0) and opened["entry_price"] == pytest.approx(100.0)
    assert opened["r_usd"] == pytest.approx(200.0)
    assert not h.ex.entries


def routed_entry() -> Harness:
    """The routed entry of the test above without its checks (the routing TCA's test stores its records)."""
    h = Harness(ExecutorConfig(entry=EntryPolicy(kind="routed")))
    _big_book(h, 99.9, 100.0, T0)
    rec = signal_record(risk=50.0)
    h.signal_rec(rec)
    h.clock(T0 + 2000)
    h.trade(100.0, T0 + 2100)
    h.clock(T0 + 2100 + slice_delay_ms(600, 0.2, 0, key(rec), 1))
    h.trade(100.0, T0 + 3000)
    return h


def test_the_executor_holds_a_routed_entry_on_a_planted_wide_spread_and_sends_it_after_the_wait():
    h = Harness(ExecutorConfig(entry=EntryPolicy(kind="routed")), now=T0 - 60 * MIN)
    for i in range(60):  # an hour of 1 bp spreads
        _big_book(h, 99.995, 100.005, T0 - 60 * MIN + i * MIN)
    h.trade(100.0, T0 - 500)
    _big_book(h, 99.96, 100.04, T0)  # 8 bps: wider than twice the hour's mean
    rec = signal_record(risk=50.0)
    assert h.signal_rec(rec).allowed
    assert not [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]  # held: nothing sent
    _big_book(h, 99.995, 100.005, T0 + 3000)  # back to normal before the wait is over
    h.clock(T0 + 4999)
    assert not [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    h.clock(T0 + 5000)  # the wait is over: probed again, sent as the bucket says (maker first)
    [maker] = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    assert (maker["type"], maker["price"], maker["reason"]) == (
        "LIMIT",
        99.995,
        "route 200-500 n=400.00 maker 0/2 held=1",
    )


@pytest.mark.parametrize(("theta", "taker"), [(0.5, True), (0.25, False)])
def test_a_partly_filled_maker_entry_goes_to_the_taker_below_theta_and_keeps_its_fill_at_or_above(theta, taker):
    """The book-based paper broker: our bid of 4 at 99.9 queues behind 1 shown there; a sell of 2 at 99.9
    eats the queue and fills 1 of ours (a quarter) before the 2 s wait ends."""
    config = ExecutorConfig.model_validate(
        {"entry": {"kind": "routed"}, "paper": {"fills": "book"}, "routing": {"taker_below_fill_ratio": theta}}
    )
    h = Harness(config)
    h.now = max(h.now, T0)
    book = {"exchange": EXCHANGE, "symbol": SYMBOL, "last_update_id": T0, "event_time": T0, "receive_time": T0}
    h.ex.on_book(
        {**book, "bids": [{"price": 99.9, "qty": 1.0}], "asks": [{"price": 100.0, "qty": 1e6}], "obi_10": 0.0}, T0
    )
    rec = signal_record(risk=50.0)
    h.signal_rec(rec)
    h.trade(99.9, T0 + 500, qty=2.0, taker_side="SELL")
    assert [f["qty"] for f in h.fills()] == [1.0]
    h.clock(T0 + 2000)
    sent = [o for o in h.of("orders") if o["state"] == "PENDING_NEW"]
    if taker:  # 1/4 < 0.5: the other 3 in two taker slices
        assert (sent[-1]["client_order_id"], sent[-1]["qty"]) == (
            client_order_id(rec["signal_id"], "entry_fallback"),
            1.5,
        )
        assert not h.positions("opened")
    else:  # 1/4 >= 0.25: the entry keeps its quarter, R scaled to it
        assert len(sent) == 1
        [opened] = h.positions("opened")
        assert opened["qty"] == 1.0 and opened["r_usd"] == pytest.approx(200.0 / 4)
