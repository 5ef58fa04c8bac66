"""The volume profile read from the per-minute, per-price aggregate (migration 0021) against one
GROUP BY over the trades table, on a real PostgreSQL, read with the views' read-only role."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from sinks.partitions import ensure_partitions
from sinks.tables import table_for_topic, write_rows
from sinks.trade_levels import backfill_pending
from tapeflow_ui.queries import MAX_FOOTPRINT_BARS, Range, footprint, volume_profile

T0 = datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
SPEC = table_for_topic("md.trades")


def trade(agg_id: int, at: datetime, price: float, qty: float, side: str) -> dict:
    ms = int(at.timestamp() * 1000)
    return {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "agg_id": agg_id,
        "price": price,
        "qty": qty,
        "first_trade_id": agg_id,
        "last_trade_id": agg_id,
        "event_time": ms,
        "trade_time": ms,
        "receive_time": ms + 20,
        "taker_side": side,
    }


def store(conninfo: str, records: list[dict]) -> None:
    with psycopg.connect(conninfo) as conn:
        write_rows(conn, SPEC, (SPEC.to_row(r) for r in records))


def session(first_id: int, minutes: int, start: datetime) -> list[dict]:
    """Trades on a 0.1 tick with lot-sized quantities, a few per second, both sides, prices wandering."""
    out, n = [], first_id
    for s in range(0, minutes * 60, 3):
        for k in range(3):
            price = round(62_000.0 + ((s * 7 + k * 13) % 41) * 0.1, 1)
            out.append(
                trade(
                    n,
                    start + timedelta(seconds=s, milliseconds=250 * k),
                    price,
                    round(0.001 * (1 + (s + k) % 9), 3),
                    "BUY" if (s + k) % 3 else "SELL",
                )
            )
            n += 1
    return out


def direct(conn: psycopg.Connection, rng: Range, step: float) -> list[list]:
    rows = conn.execute(
        "SELECT floor(price / %(step)s)::bigint, sum(CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END)::float8, "
        "sum(CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END)::float8 FROM trades WHERE symbol = 'BTCUSDT' "
        "AND trade_time >= %(a)s AND trade_time < %(b)s GROUP BY 1 ORDER BY 1",
        {"step": step, "a": rng.start, "b": rng.end},
    ).fetchall()
    return [list(r) for r in rows]


@pytest.fixture
def db(migrated_database) -> str:
    with psycopg.connect(migrated_database) as conn:
        ensure_partitions(conn, "trades", T0 - timedelta(days=1), T0 + timedelta(days=1))
    return migrated_database


def test_the_profile_equals_a_group_by_over_trades_with_an_open_minute_and_a_coarse_step(db):
    history = session(1, 5, T0)  # 10:00-10:05, closed minutes
    store(db, history)
    store(db, history[:200])  # a redelivered batch: the sink's ON CONFLICT DO NOTHING stores nothing new
    open_minute = session(len(history) + 1, 1, T0 + timedelta(minutes=5))[:40]  # 10:05:00-10:05:39, still open
    store(db, open_minute)
    # from mid-minute to the data's "now" inside the open minute; 0.25 is not the 0.1 tick (levels of 2.5 ticks)
    rng = Range(T0 + timedelta(seconds=30, milliseconds=250), T0 + timedelta(minutes=5, seconds=30))
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tapeflow_readonly")
        profile = volume_profile(conn, "BTCUSDT", rng, 0.25)
        expected = direct(conn, rng, 0.25)
        assert len(expected) > 10
        assert profile["levels"] == expected
        # the open minute grows: the next read sees its new trades at once
        more = session(len(history) + 41, 1, T0 + timedelta(minutes=5, seconds=13))[:20]
        conn.commit()
        store(db, [dict(r, agg_id=10_000 + i) for i, r in enumerate(more)])
        later = Range(rng.start, T0 + timedelta(minutes=5, seconds=59))
        assert volume_profile(conn, "BTCUSDT", later, 0.25)["levels"] == direct(conn, later, 0.25)
        # and a range of whole minutes only, at a step of 7 ticks
        whole = Range(T0 + timedelta(minutes=1), T0 + timedelta(minutes=4))
        assert volume_profile(conn, "BTCUSDT", whole, 0.7)["levels"] == direct(conn, whole, 0.7)


def test_the_profile_sums_by_hand(db):
    # minute 10:00: 62000.0 BUY 0.1 + 62000.2 SELL 0.2 ; minute 10:01: 62000.4 BUY 0.3 ; 62000.5 SELL 0.4 at 10:01:30
    store(
        db,
        [
            trade(1, T0 + timedelta(seconds=5), 62000.0, 0.1, "BUY"),
            trade(2, T0 + timedelta(seconds=50), 62000.2, 0.2, "SELL"),
            trade(3, T0 + timedelta(minutes=1, seconds=1), 62000.4, 0.3, "BUY"),
            trade(4, T0 + timedelta(minutes=1, seconds=30), 62000.5, 0.4, "SELL"),
        ],
    )
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tapeflow_readonly")
        # step 0.5: levels 124000 (62000.0, .2, .4) and 124001 (62000.5); the range cuts 10:01:30 off
        profile = volume_profile(conn, "BTCUSDT", Range(T0, T0 + timedelta(minutes=1, seconds=30)), 0.5)
    assert profile["levels"] == [[124000, 0.4, 0.2]]
    assert profile["poc"] == 124000 and profile["total"] == pytest.approx(0.6)


def test_a_day_not_summed_yet_is_read_from_the_trades(db):
    """Trades stored before migration 0021 (here: with its trigger off) wait in trade_levels_backfill;
    the profile reads `trades` for a range touching such a day, and the aggregate once it is summed."""
    history = session(1, 4, T0)
    with psycopg.connect(db) as conn:
        conn.execute("ALTER TABLE trades DISABLE TRIGGER trades_levels_insert")
        write_rows(conn, SPEC, (SPEC.to_row(r) for r in history))
        conn.execute("ALTER TABLE trades ENABLE TRIGGER trades_levels_insert")
        conn.execute("INSERT INTO trade_levels_backfill VALUES (%s)", (T0.date(),))
    rng = Range(T0, T0 + timedelta(minutes=4))
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM trade_levels_1m").fetchone()[0] == 0
        assert volume_profile(conn, "BTCUSDT", rng, 0.3)["levels"] == direct(conn, rng, 0.3)
        assert backfill_pending(conn) == 1
        assert conn.execute("SELECT count(*) FROM trade_levels_1m").fetchone()[0] > 0
        conn.execute("SET ROLE tapeflow_readonly")
        assert volume_profile(conn, "BTCUSDT", rng, 0.3)["levels"] == direct(conn, rng, 0.3)


def test_the_footprint_window_holds_whole_bars_only(db):
    """The footprint shows the last ``MAX_FOOTPRINT_BARS`` bars of the range. Its start was the range's end
    minus that many bars: with the end mid-minute (live, "now"), the leftmost bar held only the trades
    after that instant, and the page drew it as a whole minute. Every bar but the open one is whole."""
    minutes = MAX_FOOTPRINT_BARS + 5
    store(db, session(1, minutes, T0))
    end = T0 + timedelta(minutes=minutes - 1, seconds=20)  # 20 s into the last, open minute
    with psycopg.connect(db) as conn:
        conn.execute("SET ROLE tapeflow_readonly")
        shown = footprint(conn, "BTCUSDT", "1m", Range(T0, end), 0.1)
        for bar in shown["bars"]:
            start = datetime.fromtimestamp(bar["time"], tz=UTC)
            whole = direct(conn, Range(start, min(start + timedelta(minutes=1), end)), 0.1)
            assert [[lv[0], pytest.approx(lv[1]), pytest.approx(lv[2])] for lv in bar["levels"]] == whole, start
    times = [bar["time"] for bar in shown["bars"]]
    assert len(times) == MAX_FOOTPRINT_BARS  # 29 whole bars and the open one
    assert times[-1] == int((end - timedelta(seconds=20)).timestamp())
    assert times == sorted(times) and all(b - a == 60 for a, b in zip(times, times[1:]))
