"""The live watchlist trader (execution.watchlist_trader), pure: its records in the order things
happened, pair snapshots numbered per pair, and a trader restored from its plain state (through
JSON) at random points emitting exactly what an uninterrupted one does."""

from __future__ import annotations

import numpy as np
import orjson

from execution.client_ids import pair_id
from execution.watchlist_trader import TOPICS, WatchlistTrader, cross_venue_params
from tests.backtest.watchlist.test_runner import EVENTS, SMALL, XV, hand_session, STRATEGY


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
