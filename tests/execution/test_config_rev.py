"""The strategy revision a signal carries (config_rev) goes onto every order and position event the
executor makes from it, survives a restart from the executor's own records, and is absent (None on
orders, 0 on positions) for signals written before signals carried it."""

from __future__ import annotations

from execution.config import ExecutorConfig
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from tests.support.execution import SERDE, T0, Harness, signal_record

S = 1000


def _revised(rev: int, **kw) -> dict:
    return {**signal_record(**kw), "config_rev": rev}


def test_orders_and_positions_carry_their_signals_revision():
    h = Harness()
    h.signal_rec(_revised(4))
    h.signal_rec(_revised(7, strategy="v52_8signals"))
    h.trade(100.0, T0 + S)
    h.trade(102.0, T0 + 2 * S)
    h.trade(102.0, T0 + 3 * S)  # TP1 of both: exit orders come from the positions
    by_strategy = {p["position_id"]: p["strategy"] for p in h.positions("opened")}
    revs = {"v53": 4, "v52_8signals": 7}
    assert {p["event"] for p in h.positions()} == {"opened", "tp1"}
    for p in h.positions():
        assert p["config_rev"] == revs[p["strategy"]]
    legs = set()
    for o in h.of("orders"):
        legs.add(o["leg"])
        assert o["config_rev"] == revs[by_strategy[o["position_id"]]], o
    assert legs >= {"entry", "tp1"}
    for topic in ("orders", "positions"):
        for rec in h.of(topic):
            assert SERDE.decode(SERDE.encode(topic, rec)) == rec  # strict: the schemas carry the field


def test_a_restarted_executor_keeps_the_revision_of_its_positions():
    cfg = ExecutorConfig()
    h = Harness(cfg)
    h.signal_rec(_revised(9))
    h.trade(100.0, T0 + S)
    records = list(h.sink.records)
    sink = ListSink()
    ex = Executor(cfg, "paper", PaperBroker(cfg.fees, cfg.paper), sink, T0 + 2 * S)
    ex.restore(
        [r for t, _, r in records if t == "positions"],
        [r for t, _, r in records if t == "orders"],
        [r for t, _, r in records if t == "risk.events"],
        T0 + 2 * S,
    )
    [pos] = ex.positions.values()
    assert pos.config_rev == 9
    t = T0 + 3 * S
    trade = {"exchange": "binance", "symbol": "BTCUSDT", "first_trade_id": 1, "last_trade_id": 1, "qty": 1.0}
    ex.on_trade(
        {
            **trade,
            "taker_side": "SELL",
            "agg_id": 50,
            "price": 97.0,
            "event_time": t,
            "trade_time": t,
            "receive_time": t,
        },
        t,
    )
    exits = [o for o in sink.of("orders") if o["leg"] != "entry"]
    assert exits and all(o["config_rev"] == 9 for o in exits)


def test_signals_from_before_config_rev_make_revision_0_positions():
    h = Harness()
    old = signal_record()
    assert "config_rev" not in old
    h.signal_rec(old)
    h.trade(100.0, T0 + S)
    [opened] = h.positions("opened")
    assert opened["config_rev"] == 0
    assert {o["config_rev"] for o in h.of("orders")} == {0}
