"""Bybit trade numbering (consecutive agg ids, reported holes) and merged tickers (publish on change only)."""

from __future__ import annotations

from producers.base.sequencer import Gap
from producers.bybit.parse import TradePrint
from producers.bybit.ticker_state import TickerState
from producers.bybit.trade_numbering import TradeNumbering


def trade(trade_id, t, seq=None):
    return TradePrint("BTCUSDT", trade_id, seq, 100.0, 1.0, "BUY", t, t + 1, t + 2, False)


def test_ids_start_at_the_first_trade_time_and_count_up():
    n = TradeNumbering("BTCUSDT")
    out = [
        n.number(trade(i, t, seq=s))
        for i, t, s in (("a", 1_700_000_000_123, 50), ("b", 1_700_000_000_123, 50), ("c", 1_700_000_000_200, 57))
    ]
    # fills of one match share seq 50: both are kept and numbered 1700000000123000, ...001, ...002
    assert [r["agg_id"] for r, _ in out] == [1_700_000_000_123_000, 1_700_000_000_123_001, 1_700_000_000_123_002]
    assert [(r["first_trade_id"], r["last_trade_id"]) for r, _ in out][2] == (1_700_000_000_123_002,) * 2
    assert all(gap is None for _, gap in out) and n.counters.published == 3 and n.counters.series == 1


def test_duplicates_by_trade_id_and_by_seq_going_back():
    n = TradeNumbering("BTCUSDT")
    n.number(trade("a", 1000, seq=10))
    n.number(trade("b", 1001, seq=12))
    assert n.number(trade("a", 1000, seq=10)) == (None, None)  # same id again
    assert n.number(trade("z", 1000, seq=11)) == (None, None)  # older than the last seq
    record, _ = n.number(trade("c", 1002, seq=12))  # same seq as the last one: another fill of that match
    assert record["agg_id"] == 1_000_002 and n.counters.duplicates == 2


def test_lost_connection_opens_a_new_series_behind_a_reported_hole():
    n = TradeNumbering("BTCUSDT")
    n.connection_lost()  # before any trade: nothing to report
    n.number(trade("a", 5000))
    n.number(trade("b", 5001))
    n.connection_lost()
    record, gap = n.number(trade("c", 9000))
    assert record["agg_id"] == 9_000_000
    assert gap == Gap("BTCUSDT", 5_000_002, 8_999_999)  # last id 5_000_001 + 1 .. new id - 1
    record, gap = n.number(trade("d", 9000))
    assert (record["agg_id"], gap) == (9_000_001, None)
    assert (n.counters.series, n.counters.gaps) == (2, 1)


def test_a_new_series_always_leaves_a_hole_even_when_time_did_not_move():
    n = TradeNumbering("BTCUSDT")
    for i in range(1500):  # more than IDS_PER_MS trades in one millisecond
        n.number(trade(f"t{i}", 7))
    n.connection_lost()
    record, gap = n.number(trade("next", 7))
    assert record["agg_id"] == 7000 + 1499 + 2 and gap == Gap("BTCUSDT", 7000 + 1500, 7000 + 1500)


def test_duplicate_memory_is_bounded():
    n = TradeNumbering("BTCUSDT", remember=3)
    for i in range(5):
        n.number(trade(f"t{i}", 10 + i))
    assert len(n._seen) == 3 and "t0" not in n._seen


# --- tickers ----------------------------------------------------------------------------------
SNAPSHOT = {
    "markPrice": 17217.33,
    "indexPrice": 17227.36,
    "fundingRate": -0.000212,
    "nextFundingTime": 1673280000000,
    "openInterest": 68744.761,
    "openInterestValue": 1183601235.91,
}


def test_snapshot_publishes_mark_and_open_interest():
    state = TickerState("BTCUSDT")
    mark, oi = state.on_message("snapshot", 1673272861686, SNAPSHOT, 1673272861700)
    assert mark == {
        "exchange": "bybit",
        "symbol": "BTCUSDT",
        "mark_price": 17217.33,
        "index_price": 17227.36,
        "funding_rate": -0.000212,
        "next_funding_time": 1673280000000,
        "event_time": 1673272861686,
        "receive_time": 1673272861700,
    }
    assert oi == {
        "exchange": "bybit",
        "symbol": "BTCUSDT",
        "kind": "open_interest",
        "value": 68744.761,
        "period": None,
        "extra": {"open_interest_value": 1183601235.91},
        "event_time": 1673272861686,
        "receive_time": 1673272861700,
    }


def test_deltas_publish_only_what_changed():
    state = TickerState("BTCUSDT")
    state.on_message("snapshot", 1, SNAPSHOT, 2)
    assert state.on_message("delta", 3, {}, 4) == (None, None)  # e.g. only lastPrice moved
    mark, oi = state.on_message("delta", 5, {"fundingRate": -0.0002}, 6)
    assert oi is None and (mark["funding_rate"], mark["mark_price"], mark["event_time"]) == (-0.0002, 17217.33, 5)
    mark, oi = state.on_message("delta", 7, {"openInterest": 68750.0}, 8)
    assert mark is None and (oi["value"], oi["extra"]) == (68750.0, {"open_interest_value": 1183601235.91})
    # a value equal to the last published one is no change
    assert state.on_message("delta", 9, {"markPrice": 17217.33, "openInterest": 68750.0}, 10) == (None, None)


def test_resent_snapshot_after_reconnect_publishes_nothing_new():
    state = TickerState("BTCUSDT")
    state.on_message("snapshot", 1, SNAPSHOT, 2)
    assert state.on_message("snapshot", 50, SNAPSHOT, 51) == (None, None)


def test_mark_waits_until_all_fields_are_known():
    state = TickerState("BTCUSDT")
    mark, oi = state.on_message("delta", 1, {"markPrice": 1.0, "indexPrice": 1.0}, 2)  # delta before any snapshot
    assert mark is None and oi is None
    mark, _ = state.on_message("delta", 3, {"fundingRate": 0.0001, "nextFundingTime": 8}, 4)
    assert (mark["mark_price"], mark["next_funding_time"]) == (1.0, 8)
    _, oi = state.on_message("delta", 5, {"openInterest": 3.0}, 6)
    assert oi["extra"] == {}  # no openInterestValue known
