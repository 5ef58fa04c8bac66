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
sizes per price level.
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
LIQUIDATION_NOTE = ("Liquidations are a lower bound: Binance pushes at most one liquidation order per "
                    "symbol per second (forceOrder), so bursts are undercounted.")


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
    rows = conn.execute("SELECT symbol FROM bars_1m WHERE exchange = %s AND open_time >= %s GROUP BY symbol "
                        "ORDER BY sum(quote_volume) DESC", (EXCHANGE, latest - timedelta(days=1))).fetchall()
    return [r[0] for r in rows]


def data_time(conn: psycopg.Connection, symbol: str | None = None) -> datetime | None:
    """The close of the newest stored bar (the data's "now": a replayed session is in the past)."""
    if symbol is None:
        row = conn.execute("SELECT max(close_time) FROM bars_1m WHERE exchange = %s", (EXCHANGE,)).fetchone()
    else:
        row = conn.execute("SELECT max(close_time) FROM bars_1m WHERE exchange = %s AND symbol = %s",
                           (EXCHANGE, symbol)).fetchone()
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
        query = (f"SELECT extract(epoch FROM open_time)::bigint, open, high, low, close, volume, buy_volume, "  # nosec B608 # the table name is CAGGS' constant
                 f"sell_volume, quote_volume FROM {CAGGS[timeframe]} WHERE exchange = %(x)s AND symbol = %(s)s "
                 "AND open_time >= %(a)s AND open_time < %(b)s ORDER BY open_time")
    else:
        query = ("SELECT extract(epoch FROM date_bin(%(tf)s, open_time, %(o)s))::bigint AS t, "
                 "(array_agg(open ORDER BY open_time))[1], max(high), min(low), "
                 "(array_agg(close ORDER BY open_time DESC))[1], sum(volume), sum(buy_volume), sum(sell_volume), "
                 "sum(quote_volume) FROM bars_1m WHERE exchange = %(x)s AND symbol = %(s)s "
                 "AND open_time >= %(a)s AND open_time < %(b)s GROUP BY 1 ORDER BY 1")
    rows = conn.execute(query, {"tf": timedelta(seconds=seconds), "o": ORIGIN, "x": EXCHANGE, "s": symbol,
                                "a": rng.start, "b": rng.end}).fetchall()
    times = [r[0] for r in rows]
    deltas = [r[6] - r[7] for r in rows]
    return {
        "time": times, "open": [r[1] for r in rows], "high": [r[2] for r in rows], "low": [r[3] for r in rows],
        "close": [r[4] for r in rows], "volume": [r[5] for r in rows], "bought": [r[6] for r in rows],
        "sold": [r[7] for r in rows], "delta": deltas, "cvd": cumulative(deltas),
        "vwap": session_vwap(times, [r[8] for r in rows], [r[5] for r in rows]),
    }


def signals(conn: psycopg.Connection, symbol: str, rng: Range) -> list[dict]:
    rows = conn.execute(
        "SELECT extract(epoch FROM eval_time)::bigint, direction, tier, score, price, strategy, signal_id "
        "FROM signals WHERE exchange = %s AND symbol = %s AND eval_time >= %s AND eval_time < %s ORDER BY eval_time",
        (EXCHANGE, symbol, rng.start, rng.end)).fetchall()
    return [{"time": r[0], "direction": r[1], "tier": r[2], "score": r[3], "price": r[4], "strategy": r[5],
             "signal_id": r[6]} for r in rows]


def default_step(conn: psycopg.Connection, symbol: str, rng: Range, levels: int = 6000) -> float:
    row = conn.execute("SELECT avg(close) FROM bars_1m WHERE exchange = %s AND symbol = %s AND open_time >= %s "
                       "AND open_time < %s", (EXCHANGE, symbol, rng.start, rng.end)).fetchone()
    return nice_step(float(row[0]) if row and row[0] else 0.0, levels)


def _level_rows(conn: psycopg.Connection, symbol: str, rng: Range, step: float, bucket_s: int | None) -> list:
    bucket = ("extract(epoch FROM date_bin(%(tf)s, trade_time, %(o)s))::bigint" if bucket_s else "0")
    return conn.execute(
        f"SELECT {bucket} AS t, floor(price / %(step)s)::bigint AS level, "  # nosec B608 # bucket is one of two fixed expressions
        "coalesce(sum(qty) FILTER (WHERE taker_side = 'BUY'), 0), coalesce(sum(qty) FILTER (WHERE taker_side = 'SELL'), 0) "
        "FROM trades WHERE exchange = %(x)s AND symbol = %(s)s AND trade_time >= %(a)s AND trade_time < %(b)s "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        {"tf": timedelta(seconds=bucket_s or 60), "o": ORIGIN, "step": step, "x": EXCHANGE, "s": symbol,
         "a": rng.start, "b": rng.end}).fetchall()


def footprint(conn: psycopg.Connection, symbol: str, timeframe: str, rng: Range, step: float,
              around: datetime | None = None) -> dict:
    """Bought and sold volume per price level per bar, with each bar's delta, POC and imbalances, for
    at most ``MAX_FOOTPRINT_BARS`` bars of the range: its last ones, or those around ``around``."""
    seconds = TIMEFRAMES[timeframe]
    span = timedelta(seconds=seconds * MAX_FOOTPRINT_BARS)
    end = rng.end if around is None else min(rng.end, max(around + span / 2, rng.start + span))
    start = max(rng.start, end - span)
    bars: dict[int, list[Level]] = {}
    for t, level, bought, sold in _level_rows(conn, symbol, Range(start, end), step, seconds):
        bars.setdefault(t, []).append(Level(level, bought, sold))
    out = []
    for t, levels in bars.items():
        marks = imbalances(levels)
        out.append({"time": t, "poc": poc(levels), "delta": sum(lv.delta for lv in levels),
                    "levels": [[lv.level, lv.bought, lv.sold, marks.get(lv.level, "")] for lv in levels]})
    return {"step": step, "timeframe": timeframe, "from": ts(start), "to": ts(end), "bars": out}


def _profile_rows(conn: psycopg.Connection, symbol: str, rng: Range, step: float) -> list:
    """(level, bought, sold) over the range: its whole minutes from ``trade_levels_1m`` (per minute and
    traded price, migration 0021), the partial minutes at its edges from ``trades``; both sum
    ``qty::numeric`` (exact, independent of order), so the result equals one GROUP BY over the trades."""
    lo = rng.start.astimezone(UTC).replace(second=0, microsecond=0)
    lo = lo if lo == rng.start else lo + timedelta(minutes=1)
    hi = rng.end.astimezone(UTC).replace(second=0, microsecond=0)
    if lo >= hi:  # no whole minute inside: all from trades
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
        {"x": EXCHANGE, "s": symbol, "a": rng.start, "b": rng.end, "lo": lo, "hi": hi, "step": step}).fetchall()


def volume_profile(conn: psycopg.Connection, symbol: str, rng: Range, step: float) -> dict:
    """Bought and sold volume per price level over the range, its POC and value area; pre-grouped per
    minute and price (``_profile_rows``), so a whole day reads ~10^5 rows, not every trade."""
    levels = [Level(level, bought, sold) for level, bought, sold in _profile_rows(conn, symbol, rng, step)]
    area = value_area(levels)
    return {"step": step, "from": ts(rng.start), "to": ts(rng.end), "poc": poc(levels),
            "value_area": list(area) if area else None, "total": sum(lv.volume for lv in levels),
            "levels": [[lv.level, lv.bought, lv.sold] for lv in levels]}


def heatmap(conn: psycopg.Connection, symbol: str, rng: Range, step: float, columns: int = MAX_HEATMAP_COLUMNS
            ) -> dict:
    """Resting size per price level over time: for each time column the last stored book in it, its
    bid and ask sizes summed per level (a cell is exactly the stored sizes of that book's levels)."""
    column_s = max(1, int(-(-rng.seconds // columns)))
    args = {"col": timedelta(seconds=column_s), "o": ORIGIN, "x": EXCHANGE, "s": symbol, "a": rng.start,
            "b": rng.end, "step": step}
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
        "floor(p / %(step)s)::bigint, sum(q) FROM lv GROUP BY 1, 2, 3, 4 ORDER BY 1, 3, 4", args).fetchall()
    cells = [[col, book_ms, side, level, qty] for col, book_ms, side, level, qty in rows]
    return {"step": step, "column_s": column_s, "from": ts(rng.start), "to": ts(rng.end), "cells": cells}


def large_trades(conn: psycopg.Connection, symbol: str, rng: Range, limit: int = LARGE_TRADES) -> list[dict]:
    """The range's ``limit`` largest trades; none for a range over ``MAX_BUBBLE_RANGE_S`` (each call scans
    every trade of the range)."""
    if rng.seconds > MAX_BUBBLE_RANGE_S:
        return []
    rows = conn.execute(
        "SELECT extract(epoch FROM trade_time)::float8, price, qty, taker_side, price * qty AS usd FROM trades "
        "WHERE exchange = %s AND symbol = %s AND trade_time >= %s AND trade_time < %s ORDER BY qty DESC LIMIT %s",
        (EXCHANGE, symbol, rng.start, rng.end, limit)).fetchall()
    return [{"time": r[0], "price": r[1], "qty": r[2], "side": r[3], "usd": r[4]} for r in sorted(rows)]


def liquidations(conn: psycopg.Connection, symbol: str, rng: Range) -> dict:
    rows = conn.execute(
        "SELECT extract(epoch FROM trade_time)::float8, side, liquidated_side, avg_price, filled_qty, usd_value "
        "FROM liquidations WHERE exchange = %s AND symbol = %s AND trade_time >= %s AND trade_time < %s "
        "ORDER BY trade_time", (EXCHANGE, symbol, rng.start, rng.end)).fetchall()
    return {"note": LIQUIDATION_NOTE,
            "items": [{"time": r[0], "side": r[1], "liquidated": r[2], "price": r[3], "qty": r[4], "usd": r[5]}
                      for r in rows]}
