"""OKX trade rows → consecutive agg ids, holes in OKX's trade ids made visible (trade_numbering.py)."""

from __future__ import annotations

from producers.okx.parse import TradePrint
from producers.okx.trade_numbering import IDS_PER_MS, OkxTradeNumbering


def row(trade_id, count=1, t=1_700_000_000_000):
    return TradePrint("BTCUSDT", trade_id, count, 100.0, 0.5, "BUY", t, t + 5)


def test_aggregated_rows_get_consecutive_ids_and_keep_okx_ranges():
    n = OkxTradeNumbering("BTCUSDT")
    records = [n.number(r) for r in (row(10, 1), row(13, 3), row(14, 1))]
    assert all(hole is None for _, hole in records)
    start = 1_700_000_000_000 * IDS_PER_MS
    assert [(r["agg_id"], r["first_trade_id"], r["last_trade_id"]) for r, _ in records] == [
        (start, 10, 10),
        (start + 1, 11, 13),
        (start + 2, 14, 14),
    ]


def test_repeats_are_dropped():
    n = OkxTradeNumbering("BTCUSDT")
    n.number(row(10))
    n.number(row(12, 2))
    assert n.number(row(12, 2)) == (None, None) and n.number(row(11)) == (None, None)
    assert n.counters.duplicates == 2 and n.counters.published == 2


def test_a_hole_in_okx_ids_leaves_the_same_hole_in_agg_ids():
    n = OkxTradeNumbering("BTCUSDT")
    first, _ = n.number(row(10))
    record, hole = n.number(row(20, 2))  # OKX ids 11..18 never arrived (8 fills); this row is 19..20
    assert (hole.okx_from, hole.okx_to) == (11, 18) and "11..18 (8 fills)" in hole.reason()
    assert (hole.gap.from_id, hole.gap.to_id) == (first["agg_id"] + 1, first["agg_id"] + 8)
    assert record["agg_id"] == first["agg_id"] + 9
    assert n.number(row(21))[0]["agg_id"] == record["agg_id"] + 1  # and the chain goes on
    assert (n.counters.gaps, n.counters.okx_ids_missing) == (1, 8)


def test_renumbered_ids_open_a_new_series_behind_a_hole():
    n = OkxTradeNumbering("BTCUSDT")
    first, _ = n.number(row(5_000_000, t=1_700_000_000_000))
    record, hole = n.number(row(3, t=1_700_000_001_000))  # far below: OKX renumbered, not a repeat
    assert record["agg_id"] == 1_700_000_001_000 * IDS_PER_MS > first["agg_id"] + 1
    assert hole.okx_from is None and (hole.gap.from_id, hole.gap.to_id) == (first["agg_id"] + 1, record["agg_id"] - 1)
