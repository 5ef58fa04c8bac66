"""sinks/audit.py on hand-made data: known holes must come back as exactly those agg_id ranges."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sinks.audit import audit, render
from sinks.partitions import PLANS, ensure_partitions
from sinks.tables import BARS_1M, DATA_GAPS, MARK_PRICES, TRADES, write_rows

START = datetime(2024, 1, 31, 23, 58, tzinfo=UTC)  # the range straddles a UTC day and month boundary
END = START + timedelta(minutes=4)
START_MS = int(START.timestamp() * 1000)


def trade(agg_id: int, ms: int, side: str = "BUY", symbol: str = "BTCUSDT") -> tuple:
    return TRADES.to_row(
        {
            "exchange": "binance",
            "symbol": symbol,
            "agg_id": agg_id,
            "price": 42000.0,
            "qty": 0.5,
            "first_trade_id": agg_id,
            "last_trade_id": agg_id,
            "event_time": ms,
            "trade_time": ms,
            "receive_time": ms + 10,
            "taker_side": side,
        }
    )


def bar(minute: datetime, trade_count: int, first: int) -> tuple:
    ms = int(minute.timestamp() * 1000)
    return BARS_1M.to_row(
        {
            "exchange": "binance",
            "symbol": "BTCUSDT",
            "open_time": ms,
            "close_time": ms + 60_000,
            "open": 1.0,
            "high": 1.0,
            "low": 1.0,
            "close": 1.0,
            "volume": 1.0,
            "buy_volume": 1.0,
            "sell_volume": 0.0,
            "quote_volume": 1.0,
            "vwap": 1.0,
            "trade_count": trade_count,
            "first_agg_id": first,
            "last_agg_id": first + trade_count - 1,
        }
    )


@pytest.fixture
def db(migrated_database) -> str:
    with psycopg.connect(migrated_database) as conn:  # partitions for the scenario's range (no-op on TimescaleDB)
        for table in PLANS:
            ensure_partitions(conn, table, START - timedelta(minutes=5), END)
    return migrated_database


def load_scenario(conn) -> None:
    """agg_ids 1000..1119, one per 2 s from START, minus 1020..1024 and 1050; 1030 stored twice (two times);
    before the range: 990..995 (so 996..999 is a hole at the start); another symbol with its own ids."""
    rows = [trade(i, START_MS + (i - 1000) * 2000) for i in range(1000, 1120) if not (1020 <= i <= 1024 or i == 1050)]
    rows.append(trade(1030, START_MS + 30 * 2000 + 1))  # same id, another time: the PK lets it through
    rows += [trade(i, START_MS - 60_000 + i - 990) for i in range(990, 996)]
    rows += [trade(i, START_MS + i, symbol="ETHUSDT") for i in range(5, 9)]
    write_rows(conn, TRADES, rows)
    write_rows(
        conn,
        DATA_GAPS,
        [
            DATA_GAPS.to_row(
                {
                    "exchange": "binance",
                    "symbol": "BTCUSDT",
                    "stream": "md.trades",
                    "from_id": 1050,
                    "to_id": 1050,
                    "detected_time": START_MS,
                    "reason": "rest_backfill_exhausted",
                }
            )
        ],
    )
    conn.commit()


def test_gaps_duplicates_and_continuity_are_exact(db):
    with psycopg.connect(db) as conn:
        load_scenario(conn)
        report = audit(conn, "BTCUSDT", START, END, now=END + timedelta(seconds=30))
    t = report.trades
    assert t.rows == 120 - 6 + 1
    assert (t.first_agg_id, t.last_agg_id, t.previous_agg_id) == (1000, 1119, 995)
    assert [(g.from_id, g.to_id, g.missing, g.known) for g in t.gaps] == [
        (996, 999, 4, False),
        (1020, 1024, 5, False),
        (1050, 1050, 1, True),
    ]
    assert t.gaps[0].after_time == START - timedelta(milliseconds=60_000 - 5)
    assert t.gaps[0].before_time == START
    assert t.gaps[1].after_time == START + timedelta(seconds=38) and t.gaps[1].before_time == START + timedelta(
        seconds=50
    )
    assert (t.gap_count, t.missing, t.duplicate_rows, t.duplicate_ids) == (3, 10, 1, (1030,))
    assert t.expected == 124  # 996..1119
    assert t.continuity == pytest.approx(114 / 124)
    assert not report.ok
    assert any("10 agg_ids missing in 3 gap(s), 2 not reported" in p for p in report.problems)
    assert "1 duplicate trade row(s)" in report.problems


def test_a_clean_range_is_ok_and_freshness_counts_come_from_the_tables(db):
    with psycopg.connect(db) as conn:
        rows = [trade(i, START_MS + (i - 1) * 1000) for i in range(1, 201)]  # 200 trades, one a second
        write_rows(conn, TRADES, rows)
        bars = [bar(START + timedelta(minutes=m), 60, 1 + 60 * m) for m in range(3)]  # 3 full minutes
        write_rows(conn, BARS_1M, bars)
        marks = [
            MARK_PRICES.to_row(
                {
                    "exchange": "binance",
                    "symbol": "BTCUSDT",
                    "mark_price": 1.0,
                    "index_price": 1.0,
                    "funding_rate": 0.0001,
                    "next_funding_time": START_MS,
                    "event_time": START_MS + s * 1000,
                    "receive_time": START_MS,
                }
            )
            for s in (-5, 0, 100, 239, 240)
        ]  # two outside [START, END)
        write_rows(conn, MARK_PRICES, marks)
        conn.commit()
        now = START + timedelta(hours=1)
        report = audit(conn, "BTCUSDT", START, END, now=now)
    assert report.ok, report.problems
    assert report.trades.gaps == () and report.trades.continuity == 1.0
    assert report.counts["trades"] == 200 and report.counts["mark_prices"] == 3 and report.counts["signals"] == 0
    fresh = {f.table: f for f in report.freshness}
    assert fresh["trades"].latest == START + timedelta(seconds=199)
    assert fresh["trades"].age_seconds == 3600 - 199
    assert fresh["mark_prices"].latest == START + timedelta(seconds=240)
    assert fresh["signals"].latest is None and fresh["signals"].age_seconds is None
    assert (report.bars.bars, report.bars.minutes, report.bars.minutes_without_bar) == (3, 4, 1)
    assert report.bars.bar_trade_count == report.bars.trades_in_bar_span == 180


def test_bars_that_disagree_with_stored_trades_are_a_problem(db):
    with psycopg.connect(db) as conn:
        write_rows(conn, TRADES, [trade(i, START_MS + (i - 1) * 1000) for i in range(1, 121)])
        write_rows(conn, BARS_1M, [bar(START, 60, 1), bar(START + timedelta(minutes=1), 61, 61)])
        conn.commit()
        report = audit(conn, "BTCUSDT", START, END, now=END)
    assert report.bars.bar_trade_count == 121 and report.bars.trades_in_bar_span == 120
    assert any("bars count 121 trades" in p for p in report.problems)


def test_rows_in_default_partitions_are_reported(plain_db):
    """DEFAULT partitions exist only in the plain layout, which `plain_db` gives on any server."""
    db = plain_db
    with psycopg.connect(db) as conn:
        for table in PLANS:
            ensure_partitions(conn, table, START - timedelta(minutes=5), END)
        write_rows(conn, TRADES, [trade(1, int(datetime(2033, 1, 1, tzinfo=UTC).timestamp() * 1000))])
        conn.commit()
        report = audit(conn, "BTCUSDT", START, END, now=END)
    assert "rows in DEFAULT partitions: trades 1" in report.problems


def test_render_and_json(db):
    with psycopg.connect(db) as conn:
        load_scenario(conn)
        report = audit(conn, "BTCUSDT", START, END, now=END)
    text = render(report)
    assert (
        "gap 1020..1024 (5 missing) between 2024-01-31T23:58:38.000Z and 2024-01-31T23:58:50.000Z  [NOT reported]"
        in text
    )
    assert "gap 1050..1050 (1 missing)" in text and "[reported on md.gaps]" in text
    assert "duplicated agg_ids: 1030" in text
    assert "RESULT: PROBLEMS" in text
    d = json.loads(json.dumps(report.as_dict()))
    assert d["ok"] is False and d["start"] == "2024-01-31T23:58:00.000Z"
    assert [(g["from_id"], g["to_id"], g["missing"]) for g in d["trades"]["gaps"]] == [
        (996, 999, 4),
        (1020, 1024, 5),
        (1050, 1050, 1),
    ]
    assert d["trades"]["expected"] == 124


def test_listing_is_capped_but_totals_are_not(db):
    with psycopg.connect(db) as conn:
        write_rows(conn, TRADES, [trade(i, START_MS + i) for i in range(0, 40, 2)])  # 19 one-id holes
        conn.commit()
        report = audit(conn, "BTCUSDT", START, END, now=END, max_listed=5)
    assert report.trades.gap_count == 19 and report.trades.missing == 19
    assert [g.from_id for g in report.trades.gaps] == [1, 3, 5, 7, 9] and report.trades.truncated
    assert "... 14 more gap(s) not listed" in render(report)


def test_empty_range_and_bad_arguments(db):
    with psycopg.connect(db) as conn:
        report = audit(conn, "BTCUSDT", START, END)  # now from the database clock
        assert report.trades.rows == 0 and report.trades.continuity is None and report.ok
        assert "trades: none in range" in render(report)
        with pytest.raises(ValueError, match="aware"):
            audit(conn, "BTCUSDT", datetime(2024, 1, 1), END)
        with pytest.raises(ValueError, match="empty range"):
            audit(conn, "BTCUSDT", END, START)
