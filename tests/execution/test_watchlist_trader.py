"""The live watchlist trader (execution.watchlist_trader), pure: its records in the order things
happened, pair snapshots numbered per pair, and a trader restored from its plain state (through
JSON) at random points emitting exactly what an uninterrupted one does."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from execution.client_ids import pair_id
from execution.watchlist_trader import TOPICS, WatchlistTrader, cross_venue_params
from tests.backtest.watchlist.test_runner import EVENTS, SMALL, STRATEGY, XV, hand_session


def _trader(strategy=XV, small=True) -> WatchlistTrader:
    return WatchlistTrader(strategy, params=cross_venue_params(strategy, **SMALL) if small else None)


def test_records_in_order_with_pair_snapshots_numbered_and_timed():
    trader = _trader(STRATEGY, small=False)
    trader.feed(hand_session())
    records = trader.take()
    assert trader.take() == []  # taken once
    kinds = [k for k, _, _ in records]
    assert set(kinds) <= set(TOPICS) | {"blocked"} and {"signal", "order", "pair", "funding"} <= set(kinds)
    [signal] = [r for k, _, r in records if k == "signal"]
    pid = pair_id(signal["signal_id"])
    pairs = [r for k, _, r in records if k == "pair"]
    assert [p["seq"] for p in pairs] == list(range(1, len(pairs) + 1)) and {p["pair_id"] for p in pairs} == {pid}
    assert [p["status"] for p in pairs][-1] == "closed" and pairs[-1]["close_reason"] == "convergence"
    assert pairs[-1]["event_time"] == pairs[-1]["closed_ms"]
    times = [p["event_time"] for p in pairs]
    assert times == sorted(times) and times[0] == signal["eval_time"]
    # entries are two orders after the signal, each with its coin; funding for both legs at 08:00
    first_order = kinds.index("order")
    assert kinds.index("signal") < first_order and all(r["coin"] == "BTC" for k, _, r in records if k != "blocked")
    assert sorted(r["leg"] for k, _, r in records if k == "funding") == ["long", "short"]
    assert trader.counters["signal"] == 1 and trader.counters["pair"] == len(pairs)


def test_a_trader_restored_from_its_plain_state_emits_what_an_uninterrupted_one_does():
    whole = _trader()
    whole.feed(EVENTS)
    expected = whole.take()
    assert sum(k == "signal" for k, _, _ in expected) >= 3 and sum(k == "pair" for k, _, _ in expected) >= 6
    rng = np.random.default_rng(7)
    cuts = sorted(set(rng.integers(1, len(EVENTS), 25).tolist()))
    got, start = [], 0
    trader = _trader()
    for cut in [*cuts, len(EVENTS)]:
        trader.feed(EVENTS[start:cut])
        got += trader.take()
        data = orjson.loads(orjson.dumps(trader.to_dict()))  # through JSON, as the checkpoint is
        trader = WatchlistTrader.from_dict(XV, None, data, cross_venue_params(XV, **SMALL))
        start = cut
    assert got == expected
    assert trader.to_dict() == whole.to_dict()


# -- the venues' instrument rules ------------------------------------------------------------------
def _rules(okx_lot="1", venues=("binance", "okx")):
    """Binance BTCUSDT (step 0.001 BTC, real exchangeInfo) and OKX BTC-USDT-SWAP (lotSz `okx_lot`
    contracts of 0.01 BTC), plus Bybit's documented BTCUSDT."""
    from execution.instrument_rules import InstrumentRules, parse_binance, parse_bybit, parse_okx
    from tests.execution.test_instrument_rules import binance_body, fixture, okx_swap_body

    found = {
        "binance": parse_binance(binance_body()),
        "okx": parse_okx(okx_swap_body(lotSz=okx_lot, minSz=okx_lot)),
        "bybit": parse_bybit(fixture("bybit_instruments_linear.json")),
    }
    return InstrumentRules(rule for v in venues for rule in found[v])


def test_each_coin_trades_at_its_venues_lot_steps_and_a_missing_rule_is_counted():
    from backtest.watchlist.runner import run_backtest
    from tests.backtest.watchlist.test_runner import STRATEGY, hand_session

    # the hand session's pair: 5 + 495 / 100.9 = 9.9058... BTC unrounded; OKX's 0.01 step makes it 9.9
    [free] = run_backtest(STRATEGY, hand_session()).pairs
    assert free["qty"] == 5 + 495 / 100.9
    result = run_backtest(STRATEGY, hand_session(), rules=_rules())
    [pair] = result.pairs
    assert pair["qty"] == 9.9 and pair["status"] == "closed" and {o["qty"] for o in result.orders} == {9.9}
    assert result.summary["no_instrument_rules"] == []
    # no OKX rule: that leg (and so the pair) unrounded, and said so
    trader = WatchlistTrader(STRATEGY, rules=_rules(venues=("binance",)))
    trader.feed(hand_session())
    assert trader.counters["no_instrument_rules"] == 1 and trader.missing_rules == {("BTC", "okx")}
    assert [r["qty"] for k, _, r in trader.take() if k == "pair"][0] == pytest.approx(9.905, abs=1e-12)
    assert "no_instrument_rules" not in WatchlistTrader(STRATEGY).counters  # without rules: as before


def test_a_restored_trader_keeps_its_pairs_under_refreshed_rules_and_applies_them_from_then_on():
    from tests.backtest.watchlist.test_runner import STRATEGY, hand_session

    # a rules file refreshed between two runs (a new listing, a changed step) must not drop the state
    # and its open pairs: the rules are not in the fingerprint
    plain = WatchlistTrader(STRATEGY).fingerprint()
    assert WatchlistTrader(STRATEGY, rules=_rules()).fingerprint() == plain
    assert WatchlistTrader(STRATEGY, rules=_rules(okx_lot="0.1")).fingerprint() == plain
    events = hand_session()
    whole = WatchlistTrader(STRATEGY, rules=_rules())
    whole.feed(events)
    expected = whole.take()
    first = WatchlistTrader(STRATEGY, rules=_rules())
    first.feed(events[:150])  # the pair is open by then
    got = first.take()
    assert [r["status"] for k, _, r in got if k == "pair"][-1] == "open"
    data = orjson.loads(orjson.dumps(first.to_dict()))
    second = WatchlistTrader.from_dict(STRATEGY, None, data, rules=_rules())
    second.feed(events[150:])
    assert got + second.take() == expected and second.to_dict() == whole.to_dict()
    assert second.models["BTC"].params.venue("okx").lot_step == 0.01
    # restored under coarser rules: the open pair keeps its 9.9 and closes; new entries would take 0.1
    coarse = WatchlistTrader.from_dict(STRATEGY, None, data, rules=_rules(okx_lot="10"))
    coarse.feed(events[150:])
    closed = [r for k, _, r in coarse.take() if k == "pair"][-1]
    assert closed["status"] == "closed" and closed["qty"] == 9.9
    assert coarse.models["BTC"].params.venue("okx").lot_step == 0.1


# -- leg timing (execution.leg_fills) ----------------------------------------------------------------
def test_with_leg_latency_a_trader_restored_at_any_point_emits_what_an_uninterrupted_one_does():
    """Legs travelling when the state is taken arrive after the restore, at the same books."""
    whole = WatchlistTrader(XV, params=cross_venue_params(XV, **SMALL), leg_latency_ms=700)
    whole.feed(EVENTS)
    expected = whole.take()
    orders = [r for k, _, r in expected if k == "order"]
    assert len(orders) >= 8 and all(r["time_ms"] - r["sent_ms"] == 700 for r in orders if r["action"] != "liquidated")
    assert any(r["book_time_ms"] > r["sent_ms"] for r in orders)  # some leg met a book newer than its signal's
    # a pair opens when its last entry's answer is back: 700 ms after that leg met its book
    opens = [r for k, _, r in expected if k == "pair" and r["status"] == "open" and r["seq"] == 2]
    assert opens
    for pair in opens:
        entries = [o["time_ms"] for o in orders if o["pair_id"] == pair["pair_id"] and o["action"] == "entry"]
        assert pair["event_time"] == max(entries) + 700
    rng = np.random.default_rng(11)
    cuts = sorted(set(rng.integers(1, len(EVENTS), 12).tolist()))
    got, start = [], 0
    trader = WatchlistTrader(XV, params=cross_venue_params(XV, **SMALL), leg_latency_ms=700)
    for cut in [*cuts, len(EVENTS)]:
        trader.feed(EVENTS[start:cut])
        got += trader.take()
        data = orjson.loads(orjson.dumps(trader.to_dict()))
        trader = WatchlistTrader.from_dict(XV, None, data, cross_venue_params(XV, **SMALL), leg_latency_ms=700)
        start = cut
    assert got == expected and trader.to_dict() == whole.to_dict()
    assert trader.fingerprint() != WatchlistTrader(XV, params=cross_venue_params(XV, **SMALL)).fingerprint()


def test_a_restart_with_an_open_pair_across_a_funding_time_closes_nothing_by_itself():
    """The hand session's pair (opened at 07:59:00, legs 150 ms away) is held across the 08:00
    settlement; the trader is stopped a second before it and restored from its state: the settlement
    is paid once per leg at the settled rate and nothing is closed until the spread converges."""
    from stream_apps.watchlist.strategy import parse_watchlist_strategy
    from tests.backtest.watchlist.test_runner import SETTLE, STRATEGY, T0, hand_session

    timed = parse_watchlist_strategy(STRATEGY.model_dump(mode="json") | {"legs": {"default_latency_ms": 150}})
    held = [e for e in hand_session() if e.time_ms < T0 + 85_000]  # converges at T0 + 90 s
    cut = next(i for i, e in enumerate(held) if e.time_ms >= SETTLE - 1_000)
    first = WatchlistTrader(timed)
    first.feed(held[:cut])
    got = first.take()
    assert [r["status"] for k, _, r in got if k == "pair"][-1] == "open"
    second = WatchlistTrader.from_dict(timed, None, orjson.loads(orjson.dumps(first.to_dict())))
    second.feed(held[cut:])
    got += second.take()
    orders = [r for k, _, r in got if k == "order"]
    assert [(o["leg"], o["action"], o["time_ms"] - o["sent_ms"]) for o in orders] == [
        ("short", "entry", 150),
        ("long", "entry", 150),
    ]
    payments = [r for k, _, r in got if k == "funding"]
    assert sorted((p["leg"], p["funding_time_ms"], p["rate"]) for p in payments) == [
        ("long", SETTLE, -0.0002),
        ("short", SETTLE, 0.0001),
    ]
    assert [r["status"] for k, _, r in got if k == "pair"][-1] == "open"
    # and the pair does close once the spread converges, after the restart
    second.feed([e for e in hand_session() if e.time_ms >= T0 + 85_000])
    assert [r for k, _, r in second.take() if k == "pair"][-1]["close_reason"] == "convergence"


def test_funding_books_the_rate_published_last_before_the_settlement_and_keeps_the_forecast_apart():
    from backtest.watchlist.runner import run_backtest
    from stream_apps.cross_venue.events import FundingEvent
    from tests.backtest.watchlist.test_runner import SETTLE, STRATEGY, T0, hand_session

    # binance announced +1 bp for 08:00 at 07:59:00, then +3 bp at 07:59:30: +3 bp is what settles
    events = sorted(
        [*hand_session(), FundingEvent("binance", "BTCUSDT", T0 + 30_000, 0.0003, SETTLE)], key=lambda e: e.time_ms
    )
    result = run_backtest(STRATEGY, events)
    [pair] = result.pairs
    short = next(p for p in result.funding if p["leg"] == "short")
    assert (short["rate"], short["predicted_rate"], short["funding_time_ms"]) == (0.0003, 0.0001, SETTLE)
    assert short["paid"] == pytest.approx(-0.0003 * short["qty"] * short["mark_price"])  # shorts receive
    long_ = next(p for p in result.funding if p["leg"] == "long")
    assert long_["rate"] == long_["predicted_rate"] == -0.0002
    assert pair["short_funding_usd"] == pytest.approx(short["paid"])


def test_a_funding_rate_that_is_not_a_number_is_never_booked():
    from stream_apps.cross_venue.events import FundingEvent
    from tests.backtest.watchlist.test_runner import SETTLE, STRATEGY, T0, hand_session

    events = sorted(
        [*hand_session(), FundingEvent("binance", "BTCUSDT", T0 + 30_000, float("nan"), SETTLE)],
        key=lambda e: e.time_ms,
    )
    trader = WatchlistTrader(STRATEGY)
    trader.feed(events)
    paid = [r for k, _, r in trader.take() if k == "funding"]
    assert sorted((p["leg"], p["rate"]) for p in paid) == [("long", -0.0002), ("short", 0.0001)]
    assert trader.counters["unusable_funding"] == 1


def test_a_leg_liquidated_in_the_backtest_closes_at_its_liquidation_price_and_the_other_leg_unwinds():
    """The hand session's pair at 10x (short binance, long okx, 100 ms legs); 30 s in, binance jumps
    ~12 %: the short leg's mark (its book's mid) passes its liquidation price, the venue closes it
    there with its penalty, and the okx leg is closed by rule against its own book."""
    from backtest.watchlist.runner import run_backtest
    from execution.hedged import liquidation_price
    from stream_apps.cross_venue.events import BookEvent
    from stream_apps.watchlist.strategy import parse_watchlist_strategy
    from tests.backtest.watchlist.test_runner import STRATEGY, T0, hand_session

    levered = parse_watchlist_strategy(
        STRATEGY.model_dump(mode="json")
        | {
            "exits": {"exit_spread_bp": 20, "leverage": 10, "min_liquidation_distance": 0},
            "legs": {"default_latency_ms": 100},
        }
    )
    jump = T0 + 30_000
    events = [
        e for e in hand_session() if not (isinstance(e, BookEvent) and e.exchange == "binance" and e.time_ms >= jump)
    ]
    events += [
        BookEvent("binance", "BTCUSDT", t, ((113.0, 50.0),), ((113.1, 50.0),)) for t in range(jump, T0 + 40_000, 500)
    ]
    result = run_backtest(levered, sorted(events, key=lambda e: e.time_ms))
    [pair] = result.pairs
    entry = next(o for o in result.orders if o["leg"] == "short" and o["action"] == "entry")
    liq = liquidation_price("SHORT", entry["avg_price"], 10, 0.005)  # entry x 1.1 / 1.005, ~ +9.5 %
    [liquidated] = [o for o in result.orders if o["action"] == "liquidated"]
    # exits are checked at every evaluation (each second): the one at the jump sees mid 113.05 > liq
    assert liquidated["leg"] == "short" and liquidated["avg_price"] == pytest.approx(liq)
    assert liquidated["time_ms"] == jump
    assert liquidated["liquidation_usd"] == pytest.approx(0.005 * entry["qty"] * liq)
    [unwound] = [o for o in result.orders if o["leg"] == "long" and o["action"] == "exit"]
    assert (unwound["side"], unwound["avg_price"], unwound["time_ms"]) == ("SELL", 99.9, jump + 100)
    assert (pair["status"], pair["close_reason"]) == ("closed", "liquidated")
    assert result.summary["liquidation_usd"] == pytest.approx(liquidated["liquidation_usd"])
    assert result.summary["by_close_reason"]["liquidated"]["pairs"] == 1
