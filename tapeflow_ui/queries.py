"""The views' SQL: every aggregation runs in the database, the browser gets a few thousand numbers.

Read with the read-only role (``tapeflow_readonly``) in read-only transactions. Candles come from
``bars_1m`` (one row per minute and symbol); on TimescaleDB the 5 m and 1 h timeframes read the
continuous aggregates ``bars_5m``/``bars_1h`` (0003_market_data.timescale.sql), on plain PostgreSQL
``bars_1m`` grouped with ``date_bin`` (the plain views ``bars_5m``/``bars_1h`` cannot be pruned by a time
filter). The footprint groups ``trades`` by bar and price level (``floor(price / step)``) for at most
``MAX_FOOTPRINT_BARS`` bars, around the chosen one; the volume profile re-bins ``trade_levels_1m``
(volume per minute and traded price: a table kept by triggers on plain PostgreSQL, a continuous
aggregate on TimescaleDB, migration 0021) plus the trades of the range's partial edge minutes;
the liquidity heatmap takes the last stored book (``depth_snapshots``) of each time column and sums its
sizes per price level, and draws the detectors' walls from each strategy's last evaluation
(``features``) in the column (``walls``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from tapeflow_ui.orderflow import Level, cumulative, imbalances, nice_step, poc, session_vwap, value_area

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)  # time_bucket's origin: both engines put a bar in the same bucket
TIMEFRAMES = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600}
CAGGS = {"5m": "bars_5m", "1h": "bars_1h"}
MAX_FOOTPRINT_BARS = 30  # the page shows about 15 at a time: twice that, half an hour of trades at 1 m bars
MAX_BUBBLE_RANGE_S = 12 * 3600  # large trades scan every trade of the range: shown for up to 12 h
MAX_HEATMAP_COLUMNS = 240
LARGE_TRADES = 150
EXCHANGE = "binance"
LIQUIDATION_NOTE = (
    "Liquidations are a lower bound: Binance pushes at most one liquidation order per "
    "symbol per second (forceOrder), so bursts are undercounted."
)


def ts(dt: datetime) -> int:
    return int(dt.timestamp())


def from_ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass(frozen=True)
class Range:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def has_timescale(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone() is not None


def symbols(conn: psycopg.Connection) -> list[str]:
    """Symbols with bars in the last day of data (the newest first by volume)."""
    latest = data_time(conn)
    if latest is None:
        return []
    rows = conn.execute(
        "SELECT symbol FROM bars_1m WHERE exchange = %s AND open_time >= %s GROUP BY symbol "
        "ORDER BY sum(quote_volume) DESC",
        (EXCHANGE, latest - timedelta(days=1)),
    ).fetchall()
    return [r[0] for r in rows]


def data_time(conn: psycopg.Connection, symbol: str | None = None) -> datetime | None:
    """The close of the newest stored bar (the data's "now": a replayed session is in the past)."""
    if symbol is None:
        row = conn.execute("SELECT max(close_time) FROM bars_1m WHERE exchange = %s", (EXCHANGE,)).fetchone()
    else:
        row = conn.execute(
            "SELECT max(close_time) FROM bars_1m WHERE exchange = %s AND symbol = %s", (EXCHANGE, symbol)
        ).fetchone()
    return row[0] if row else None


def default_range(conn: psycopg.Connection, symbol: str, timeframe: str, bars: int = 180) -> Range | None:
    end = data_time(conn, symbol)
    if end is None:
        return None
    return Range(end - timedelta(seconds=TIMEFRAMES[timeframe] * bars), end)


def candles(conn: psycopg.Connection, symbol: str, timeframe: str, rng: Range, timescale: bool = False) -> dict:
    """OHLCV per bar with taker buy/sell volume, CVD (cumulative delta from the range's start) and the
    session VWAP (anchored at each UTC day)."""
    seconds = TIMEFRAMES[timeframe]
    if timescale and timeframe in CAGGS:
        query = (
            f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume, buy_volume, "  # nosec B608 # the table name is CAGGS' constant
            f"sell_volume, quote_volume FROM {CAGGS[timeframe]} WHERE exchange = %(x)s AND symbol = %(s)s "
            "AND open_time >= %(a)s AND open_time < %(b)s ORDER BY open_time"
        )
    else:
        query = (
            "SELECT extract(epoch FROM date_bin(%(tf)s, open_time, %(o)s))::bigint AS t, "
            "(array_agg(open ORDER BY open_time))[1], max(high), min(low), "
            "(array_agg(close ORDER BY open_time DESC))[1], sum(volume), sum(buy_volume), sum(sell_volume), "
            "sum(quote_volume) FROM bars_1m WHERE exchange = %(x)s AND symbol = %(s)s "
            "AND open_time >= %(a)s AND open_time < %(b)s GROUP BY 1 ORDER BY 1"
        )
    rows = conn.execute(
        query, {"tf": timedelta(seconds=seconds), "o": ORIGIN, "x": EXCHANGE, "s": symbol, "a": rng.start, "b": rng.end}
    ).fetchall()
    times = [r[0] for r in rows]
    deltas = [r[6] - r[7] for r in rows]
    return {
        "time": times,
        "open": [r[1] for r in rows],
        "high": [r[2] for r in rows],
        "low": [r[3] for r in rows],
        "close": [r[4] for r in rows],
        "volume": [r[5] for r in rows],
        "bought": [r[6] for r in rows],
        "sold": [r[7] for r in rows],
        "delta": deltas,
        "cvd": cumulative(deltas),
        "vwap": session_vwap(times, [r[8] for r in rows], [r[5] for r in rows]),
    }


def bucket_minutes(conn: psycopg.Connection, symbol: str, timeframe: str, start: datetime | None = None) -> list[dict]:
    """The stored 1-minute bars of one bar at ``timeframe``: the one starting at ``start``, or the
    symbol's newest (what the live stream folds its topic updates into, ``live.BarFold``)."""
    rows = conn.execute(
        "WITH b AS (SELECT coalesce(%(t)s, date_bin(%(tf)s, max(open_time), %(o)s)) AS a FROM bars_1m "
        "  WHERE exchange = %(x)s AND symbol = %(s)s) "
        "SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume, buy_volume, sell_volume "
        "FROM bars_1m, b WHERE exchange = %(x)s AND symbol = %(s)s AND open_time >= b.a AND open_time < b.a + %(tf)s "
        "ORDER BY open_time",
        {"t": start, "tf": timedelta(seconds=TIMEFRAMES[timeframe]), "o": ORIGIN, "x": EXCHANGE, "s": symbol},
    ).fetchall()
    return [
        {
            "time": r[0],
            "open": r[1],
            "high": r[2],
            "low": r[3],
            "close": r[4],
            "volume": r[5],
            "bought": r[6],
            "sold": r[7],
        }
        for r in rows
    ]


def signals(conn: psycopg.Connection, symbol: str, rng: Range) -> list[dict]:
    rows = conn.execute(
        "SELECT extract(epoch FROM eval_time)::bigint, direction, tier, score, price, strategy, signal_id "
        "FROM signals WHERE exchange = %s AND symbol = %s AND eval_time >= %s AND eval_time < %s ORDER BY eval_time",
        (EXCHANGE, symbol, rng.start, rng.end),
    ).fetchall()
    return [
        {
            "time": r[0],
            "direction": r[1],
            "tier": r[2],
            "score": r[3],
            "price": r[4],
            "strategy": r[5],
            "signal_id": r[6],
        }
        for r in rows
    ]


def default_step(conn: psycopg.Connection, symbol: str, rng: Range, levels: int = 6000) -> float:
    row = conn.execute(
        "SELECT avg(close) FROM bars_1m WHERE exchange = %s AND symbol = %s AND open_time >= %s AND open_time < %s",
        (EXCHANGE, symbol, rng.start, rng.end),
    ).fetchone()
    return nice_step(float(row[0]) if row and row[0] else 0.0, levels)


def _level_rows(conn: psycopg.Connection, symbol: str, rng: Range, step: float, bucket_s: int | None) -> list:
    bucket = "extract(epoch FROM date_bin(%(tf)s, trade_time, %(o)s))::bigint" if bucket_s else "0"
    return conn.execute(
        f"SELECT {bucket} AS t, floor(price / %(step)s)::bigint AS level, "  # nosec B608 # bucket is one of two fixed expressions
        "coalesce(sum(qty) FILTER (WHERE taker_side = 'BUY'), 0), coalesce(sum(qty) FILTER (WHERE taker_side = 'SELL'), 0) "
        "FROM trades WHERE exchange = %(x)s AND symbol = %(s)s AND trade_time >= %(a)s AND trade_time < %(b)s "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        {
            "tf": timedelta(seconds=bucket_s or 60),
            "o": ORIGIN,
            "step": step,
            "x": EXCHANGE,
            "s": symbol,
            "a": rng.start,
            "b": rng.end,
        },
    ).fetchall()


def footprint(
    conn: psycopg.Connection, symbol: str, timeframe: str, rng: Range, step: float, around: datetime | None = None
) -> dict:
    """Bought and sold volume per price level per bar, with each bar's delta, POC and imbalances, for
    at most ``MAX_FOOTPRINT_BARS`` bars of the range: its last ones, or those around ``around``."""
    seconds = TIMEFRAMES[timeframe]
    span = timedelta(seconds=seconds * MAX_FOOTPRINT_BARS)
    end = rng.end if around is None else min(rng.end, max(around + span / 2, rng.start + span))
    # the window's first bar is a whole bar: its start on a bar boundary (the buckets' ORIGIN), not
    # `end - span` mid-bar, which cut the leftmost bar's trades while the page labelled it a whole bar
    start = end - span
    start += timedelta(seconds=-(start - ORIGIN).total_seconds() % seconds)
    start = max(rng.start, start)
    bars: dict[int, list[Level]] = {}
    for t, level, bought, sold in _level_rows(conn, symbol, Range(start, end), step, seconds):
        bars.setdefault(t, []).append(Level(level, bought, sold))
    out = []
    for t, levels in bars.items():
        marks = imbalances(levels)
        out.append(
            {
                "time": t,
                "poc": poc(levels),
                "delta": sum(lv.delta for lv in levels),
                "levels": [[lv.level, lv.bought, lv.sold, marks.get(lv.level, "")] for lv in levels],
            }
        )
    return {"step": step, "timeframe": timeframe, "from": ts(start), "to": ts(end), "bars": out}


def _profile_rows(conn: psycopg.Connection, symbol: str, rng: Range, step: float) -> list:
    """(level, bought, sold) over the range: its whole minutes from ``trade_levels_1m`` (per minute and
    traded price, migration 0021), the partial minutes at its edges from ``trades`` (all of it from
    ``trades`` while a day in the range waits in ``trade_levels_backfill``); both sum
    ``qty::numeric`` (exact, independent of order), so the result equals one GROUP BY over the trades."""
    lo = rng.start.astimezone(UTC).replace(second=0, microsecond=0)
    lo = lo if lo == rng.start else lo + timedelta(minutes=1)
    hi = rng.end.astimezone(UTC).replace(second=0, microsecond=0)
    pending = conn.execute(  # a day of trades stored before 0021 and not summed yet: read trades for it
        "SELECT EXISTS (SELECT 1 FROM trade_levels_backfill WHERE day BETWEEN %s AND %s)",
        (rng.start.astimezone(UTC).date(), rng.end.astimezone(UTC).date()),
    ).fetchone()[0]
    if lo >= hi or pending:  # no whole minute inside, or not summed yet: all from trades
        lo = hi = rng.end
    return conn.execute(
        "WITH v AS ("
        " SELECT price, bought, sold FROM trade_levels_1m WHERE exchange = %(x)s AND symbol = %(s)s"
        "  AND open_time >= %(lo)s AND open_time < %(hi)s"
        " UNION ALL SELECT price, CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END,"
        "  CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END FROM trades"
        "  WHERE exchange = %(x)s AND symbol = %(s)s AND trade_time >= %(a)s AND trade_time < %(lo)s"
        " UNION ALL SELECT price, CASE WHEN taker_side = 'BUY' THEN qty::numeric ELSE 0 END,"
        "  CASE WHEN taker_side = 'SELL' THEN qty::numeric ELSE 0 END FROM trades"
        "  WHERE exchange = %(x)s AND symbol = %(s)s AND trade_time >= %(hi)s AND trade_time < %(b)s) "
        "SELECT floor(price / %(step)s)::bigint AS level, sum(bought)::float8, sum(sold)::float8 FROM v "
        "GROUP BY 1 ORDER BY 1",
        {"x": EXCHANGE, "s": symbol, "a": rng.start, "b": rng.end, "lo": lo, "hi": hi, "step": step},
    ).fetchall()


def volume_profile(conn: psycopg.Connection, symbol: str, rng: Range, step: float) -> dict:
    """Bought and sold volume per price level over the range, its POC and value area; pre-grouped per
    minute and price (``_profile_rows``), so a whole day reads ~10^5 rows, not every trade."""
    levels = [Level(level, bought, sold) for level, bought, sold in _profile_rows(conn, symbol, rng, step)]
    area = value_area(levels)
    return {
        "step": step,
        "from": ts(rng.start),
        "to": ts(rng.end),
        "poc": poc(levels),
        "value_area": list(area) if area else None,
        "total": sum(lv.volume for lv in levels),
        "levels": [[lv.level, lv.bought, lv.sold] for lv in levels],
    }


def heatmap(conn: psycopg.Connection, symbol: str, rng: Range, step: float, columns: int = MAX_HEATMAP_COLUMNS) -> dict:
    """Resting size per price level over time: for each time column the last stored book in it, its
    bid and ask sizes summed per level (a cell is exactly the stored sizes of that book's levels)."""
    column_s = max(1, int(-(-rng.seconds // columns)))
    args = {
        "col": timedelta(seconds=column_s),
        "o": ORIGIN,
        "x": EXCHANGE,
        "s": symbol,
        "a": rng.start,
        "b": rng.end,
        "step": step,
    }
    # the newest book per column first, from the times alone; then only those books' levels (sorting the
    # day's wide rows, as DISTINCT ON would, cost seconds)
    rows = conn.execute(
        "WITH pick AS (SELECT max(event_time) AS t FROM depth_snapshots WHERE exchange = %(x)s AND symbol = %(s)s "
        "  AND event_time >= %(a)s AND event_time < %(b)s GROUP BY date_bin(%(col)s, event_time, %(o)s)), "
        "last AS (SELECT date_bin(%(col)s, event_time, %(o)s) AS col, event_time, bid_prices, bid_qtys, ask_prices, "
        "  ask_qtys FROM depth_snapshots WHERE exchange = %(x)s AND symbol = %(s)s AND event_time >= %(a)s "
        "  AND event_time < %(b)s AND event_time = ANY(ARRAY(SELECT t FROM pick))), "
        "lv AS (SELECT col, event_time, 'bid' AS side, p, q FROM last, unnest(bid_prices, bid_qtys) AS u(p, q) "
        "  UNION ALL SELECT col, event_time, 'ask', p, q FROM last, unnest(ask_prices, ask_qtys) AS u(p, q)) "
        "SELECT extract(epoch FROM col)::bigint, (extract(epoch FROM event_time) * 1000)::bigint, side, "
        "floor(p / %(step)s)::bigint, sum(q) FROM lv GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4",
        args,
    ).fetchall()
    cells = [[col, book_ms, side, level, qty] for col, book_ms, side, level, qty in rows]
    return {"step": step, "column_s": column_s, "from": ts(rng.start), "to": ts(rng.end), "cells": cells}


#: how old the book behind a wall may be (the detector's default ``walls.max_age``: an older book has no walls)
WALL_BOOK_MAX_AGE = timedelta(seconds=10)
#: a column's walls are those of each strategy's last evaluation in the column's final seconds (strategies
#: evaluate every second; an older evaluation is not what stood at the column's end)
WALL_EVAL_WINDOW = timedelta(seconds=10)


def walls(conn: psycopg.Connection, symbol: str, rng: Range, column_s: int) -> list[list]:
    """The detectors' walls on the heatmap's columns: for each time column and strategy, its last
    evaluation (``features``) in the column's final ``WALL_EVAL_WINDOW``; where its inputs carry
    ``wall_bid_distance_bps`` / ``wall_ask_distance_bps`` (``stream_apps.core.detectors.book``: the
    nearest wall of the side), the wall's price is the mid of the latest stored book at or before the
    evaluation (at most ``WALL_BOOK_MAX_AGE`` older; mid as the detector takes it: the mean of the best
    bid and ask, or the one side there is) moved by the distance: ``mid × (1 ∓ bps / 10,000)``.

    The detector compares the first book of each ``book_sample`` interval (1 s by default), so the
    mid it used can be up to that much older than the latest book: the price drawn is within a
    second's move of the detector's (a level the wall stands at is a level of the book either way).

    Cost: the evaluations are read by index per column (a few seconds each, not the day's 100,000s);
    ``depth_snapshots`` has only a BRIN index on time, so instead of a lookup per evaluation (each one
    scanned the symbol's whole primary key: seconds for a day) the range's books are read once, just
    their times and best prices, and each evaluation takes the last book before it in one sorted pass.
    Rows: ``[column, eval_ms, side, price, usd, age_s, strategy]``."""
    # the per-column lookups are estimated at millions of rows (a range the planner cannot size), which
    # would start JIT compilation: the UI's connections run with jit off (``app.create_app``'s pool)
    rows = conn.execute(
        "WITH cols AS (SELECT c AS col, least(c + %(col)s, %(b)s) AS col_end FROM generate_series("
        "  date_bin(%(col)s, %(a)s, %(o)s), %(b)s, %(col)s) c WHERE c < %(b)s), "
        "pick AS (SELECT DISTINCT ON (cols.col, e.strategy) cols.col, e.strategy, e.eval_time FROM cols "
        "  CROSS JOIN LATERAL (SELECT strategy, eval_time FROM features WHERE exchange = %(x)s AND symbol = %(s)s "
        "    AND eval_time >= greatest(cols.col_end - %(win)s, %(a)s) AND eval_time < cols.col_end) e "
        "  ORDER BY cols.col, e.strategy, e.eval_time DESC), "
        "f AS (SELECT pick.col, f.eval_time, f.strategy, "
        "  (inputs ->> 'wall_bid_distance_bps')::float8 AS bid_bps, (inputs ->> 'wall_ask_distance_bps')::float8 AS ask_bps, "
        "  (inputs ->> 'wall_bid_usd')::float8 AS bid_usd, (inputs ->> 'wall_ask_usd')::float8 AS ask_usd, "
        "  (inputs ->> 'wall_bid_age_s')::float8 AS bid_age, (inputs ->> 'wall_ask_age_s')::float8 AS ask_age "
        "  FROM features f JOIN pick ON f.strategy = pick.strategy AND f.eval_time = pick.eval_time "
        "  WHERE f.exchange = %(x)s AND f.symbol = %(s)s AND f.eval_time >= %(a)s AND f.eval_time < %(b)s "
        "  AND f.eval_time = ANY(ARRAY(SELECT eval_time FROM pick)) "
        "  AND (inputs ? 'wall_bid_distance_bps' OR inputs ? 'wall_ask_distance_bps')), "
        # the range's books once (times and best prices only), and the evaluations with them in one time
        # order (a book at an evaluation's time first): each evaluation carries the time of the last book
        "b AS MATERIALIZED (SELECT event_time AS t, last_update_id AS uid, "
        "  coalesce((bid_prices[1] + ask_prices[1]) / 2, bid_prices[1], ask_prices[1]) AS mid FROM depth_snapshots "
        "  WHERE exchange = %(x)s AND symbol = %(s)s AND event_time >= %(a)s - %(age)s AND event_time < %(b)s "
        # only the books an evaluation can take: those of a column's (or the range's) final seconds
        "  AND (%(col)s < %(need)s OR event_time >= %(b)s - %(need)s "
        "    OR event_time >= date_bin(%(col)s, event_time, %(o)s) + %(col)s - %(need)s) "
        "  AND coalesce(bid_prices[1], ask_prices[1]) IS NOT NULL AND EXISTS (SELECT 1 FROM f)), "
        "carried AS (SELECT t, k, strategy, max(t) FILTER (WHERE k = 0) OVER (ORDER BY t, k) AS book_t "
        "  FROM (SELECT eval_time AS t, 1 AS k, strategy FROM f UNION ALL SELECT t, 0, NULL FROM b) seq), "
        "m AS (SELECT DISTINCT ON (f.strategy, f.eval_time) f.*, f.eval_time AS t, b.mid AS book_mid FROM carried c "
        "  JOIN f ON c.k = 1 AND f.strategy = c.strategy AND f.eval_time = c.t JOIN b ON b.t = c.book_t "
        "  WHERE c.book_t >= c.t - %(age)s ORDER BY f.strategy, f.eval_time, b.uid DESC) "
        "SELECT extract(epoch FROM col)::bigint, (extract(epoch FROM t) * 1000)::bigint, side, price, usd, age, "
        "strategy FROM (SELECT col, t, strategy, 'bid' AS side, book_mid * (1 - bid_bps / 10000) AS price, "
        "  bid_usd AS usd, bid_age AS age FROM m WHERE bid_bps IS NOT NULL "
        "  UNION ALL SELECT col, t, strategy, 'ask', book_mid * (1 + ask_bps / 10000), ask_usd, ask_age "
        "  FROM m WHERE ask_bps IS NOT NULL) w ORDER BY 1, 7, 3",
        {
            "col": timedelta(seconds=column_s),
            "o": ORIGIN,
            "x": EXCHANGE,
            "s": symbol,
            "a": rng.start,
            "b": rng.end,
            "age": WALL_BOOK_MAX_AGE,
            "win": WALL_EVAL_WINDOW,
            "need": WALL_EVAL_WINDOW + WALL_BOOK_MAX_AGE,
        },
    ).fetchall()
    return [list(r) for r in rows]


def large_trades(conn: psycopg.Connection, symbol: str, rng: Range, limit: int = LARGE_TRADES) -> list[dict]:
    """The range's ``limit`` largest trades; none for a range over ``MAX_BUBBLE_RANGE_S`` (each call scans
    every trade of the range)."""
    if rng.seconds > MAX_BUBBLE_RANGE_S:
        return []
    rows = conn.execute(
        "SELECT extract(epoch FROM trade_time)::float8, price, qty, taker_side, price * qty AS usd FROM trades "
        "WHERE exchange = %s AND symbol = %s AND trade_time >= %s AND trade_time < %s ORDER BY qty DESC LIMIT %s",
        (EXCHANGE, symbol, rng.start, rng.end, limit),
    ).fetchall()
    return [{"time": r[0], "price": r[1], "qty": r[2], "side": r[3], "usd": r[4]} for r in sorted(rows)]


def liquidations(conn: psycopg.Connection, symbol: str, rng: Range) -> dict:
    rows = conn.execute(
        "SELECT extract(epoch FROM trade_time)::float8, side, liquidated_side, avg_price, filled_qty, usd_value "
        "FROM liquidations WHERE exchange = %s AND symbol = %s AND trade_time >= %s AND trade_time < %s "
        "ORDER BY trade_time",
        (EXCHANGE, symbol, rng.start, rng.end),
    ).fetchall()
    return {
        "note": LIQUIDATION_NOTE,
        "items": [
            {"time": r[0], "side": r[1], "liquidated": r[2], "price": r[3], "qty": r[4], "usd": r[5]} for r in rows
        ],
    }
