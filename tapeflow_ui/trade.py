"""The trade pages: the closed trades (``/trades``) and one trade (``/trade/{position_id}``), its price
path as candles with the entry, the exit and the levels drawn on them, and its autopsy beside it.

The autopsy is ``review.autopsy_db.autopsy``, the function ``tapeflow autopsy`` prints, so the page
and the command cannot disagree. The candles are the stored trades the autopsy replays, bucketed by
PostgreSQL (a trade of minutes gets second candles, one of hours minute candles: about
``TARGET_CANDLES`` either way), from a little before the entry to a little after the exit, so the
path that decided the exit is on screen.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from review.autopsy_db import AutopsyError, autopsy

#: position ids are the executor's (``execution.client_ids``) or a backtest's: printable, no spaces
POSITION_ID = re.compile(r"^[A-Za-z0-9:_.\-]{1,200}$")
RUN_ID = re.compile(r"^[A-Za-z0-9:_.\-]{1,200}$")
STRATEGY = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
MODES = ("paper", "live")
#: candle widths the page chooses from, in seconds
BUCKETS_S = (1, 5, 15, 60, 300, 900, 3600)
TARGET_CANDLES = 150
#: the chart shows this share of the trade's duration before the entry and after the exit (at least
#: ``MIN_PAD_S``)
PAD_SHARE = 0.25
MIN_PAD_S = 120
TRADES_LIMIT = 500


def candle_seconds(span_s: float, target: int = TARGET_CANDLES) -> int:
    """The narrowest of ``BUCKETS_S`` that draws ``span_s`` in at most ``target`` candles."""
    for bucket in BUCKETS_S:
        if span_s / bucket <= target:
            return bucket
    return BUCKETS_S[-1]


def window(entry_ms: int, exit_ms: int) -> tuple[int, int]:
    """(from, to) in seconds: the trade and its padding on both sides."""
    span_s = max(0.0, (exit_ms - entry_ms) / 1000)
    pad = max(MIN_PAD_S, PAD_SHARE * span_s)
    return int(entry_ms / 1000 - pad), int(exit_ms / 1000 + pad) + 1


def path_candles(conn: psycopg.Connection, exchange: str, symbol: str, start_s: int, end_s: int, bucket_s: int) -> dict:
    """OHLC and volume per ``bucket_s`` of the stored trades in [start_s, end_s), columns as lists
    (the order-flow page's shape); open and close by trade order (``agg_id``)."""
    rows = conn.execute(
        "SELECT (floor(extract(epoch FROM trade_time) / %(b)s) * %(b)s)::bigint AS t,"
        " (array_agg(price ORDER BY agg_id))[1], max(price), min(price),"
        " (array_agg(price ORDER BY agg_id DESC))[1], sum(qty)"
        " FROM trades WHERE exchange = %(x)s AND symbol = %(s)s AND trade_time >= %(f)s AND trade_time < %(t)s"
        " GROUP BY 1 ORDER BY 1",
        {
            "b": bucket_s,
            "x": exchange,
            "s": symbol,
            "f": datetime.fromtimestamp(start_s, UTC),
            "t": datetime.fromtimestamp(end_s, UTC),
        },
    ).fetchall()
    names = ("time", "open", "high", "low", "close", "volume")
    return {name: [r[i] for r in rows] for i, name in enumerate(names)}


def levels(conn: psycopg.Connection, position_id: str, mode: str, run_id: str | None) -> dict[str, float | None]:
    """The stop and take-profit levels the trade ran with (the opened event's; a backtest's row)."""
    if run_id:
        row = conn.execute(
            "SELECT sl_price, tp1_price, tp2_price FROM backtest_trades WHERE run_id = %s AND position_id = %s",
            (run_id, position_id),
        ).fetchone()
    else:
        row = conn.execute(
            "SELECT sl_price, tp1_price, tp2_price FROM positions WHERE mode = %s AND position_id = %s"
            " AND event = 'opened'",
            (mode, position_id),
        ).fetchone()
    sl, tp1, tp2 = row if row else (None, None, None)
    return {"sl": sl, "tp1": tp1, "tp2": tp2}


def trade_view(conn: psycopg.Connection, position_id: str, mode: str | None, run_id: str | None) -> dict[str, Any]:
    """The trade page's data: the autopsy (``Autopsy.as_dict``), the candles of its window and its levels."""
    try:
        report = autopsy(conn, position_id, mode=mode, run_id=run_id).as_dict()
    except AutopsyError as exc:
        raise HTTPException(404, str(exc)) from None
    t = report["trade"]
    start_s, end_s = window(t["entry_time"], t["exit_time"])
    bucket = candle_seconds(end_s - start_s)
    return {
        "autopsy": report,
        "candle_s": bucket,
        "from": start_s,
        "to": end_s,
        "candles": path_candles(conn, t["exchange"], t["symbol"], start_s, end_s, bucket),
        "levels": levels(conn, position_id, t["mode"], run_id),
    }


def closed_trades(conn: psycopg.Connection, mode: str | None, strategy: str | None) -> list[dict[str, Any]]:
    """The newest closed trades (``trades_closed``), newest first, at most ``TRADES_LIMIT``."""
    rows = conn.execute(
        "SELECT position_id, mode, strategy, symbol, direction, tier, extract(epoch FROM entry_time)::bigint,"
        " extract(epoch FROM exit_time)::bigint, exit_reason, pnl_r_gross::float8, fees_r::float8,"
        " funding_r::float8, slippage_r::float8, pnl_r_net::float8 FROM trades_closed"
        " WHERE (%(m)s::text IS NULL OR mode = %(m)s) AND (%(s)s::text IS NULL OR strategy = %(s)s)"
        " ORDER BY exit_time DESC, position_id LIMIT %(n)s",
        {"m": mode, "s": strategy, "n": TRADES_LIMIT},
    ).fetchall()
    names = (
        "position_id",
        "mode",
        "strategy",
        "symbol",
        "direction",
        "tier",
        "entry_time",
        "exit_time",
        "exit_reason",
        "gross_r",
        "fees_r",
        "funding_r",
        "slippage_r",
        "net_r",
    )
    return [dict(zip(names, r)) for r in rows]


def checked_mode(raw: str | None) -> str | None:
    if raw in (None, ""):
        return None
    if raw not in MODES:
        raise HTTPException(400, f"mode: one of {', '.join(MODES)}")
    return raw


def checked_position(raw: str) -> str:
    if not POSITION_ID.match(raw):
        raise HTTPException(400, "position id: letters, digits and : _ . - only")
    return raw


def checked_run(raw: str | None) -> str | None:
    if raw in (None, ""):
        return None
    if not RUN_ID.match(raw):
        raise HTTPException(400, "run: a backtest run id")
    return raw


def checked_strategy(raw: str | None) -> str | None:
    if raw in (None, ""):
        return None
    if not STRATEGY.match(raw):
        raise HTTPException(400, "strategy: a strategy name (lower case letters, digits and _)")
    return raw


def trade_api_routes(pool, respond) -> list[Route]:
    """``/api/trades`` (the closed trades; ``mode``, ``strategy``) and ``/api/trade/{position_id}``
    (``mode``; ``run`` for a backtest's trade) over the UI's read-only ``pool``; ``respond`` makes
    the JSON response (the app's ORJSON one)."""

    def trades(request: Request) -> Response:
        mode = checked_mode(request.query_params.get("mode"))
        strategy = checked_strategy(request.query_params.get("strategy"))
        with pool.connection() as conn:
            return respond({"trades": closed_trades(conn, mode, strategy)})

    def trade(request: Request) -> Response:
        position_id = checked_position(request.path_params["position_id"])
        mode = checked_mode(request.query_params.get("mode"))
        run_id = checked_run(request.query_params.get("run"))
        with pool.connection() as conn:
            return respond(trade_view(conn, position_id, mode, run_id))

    return [Route("/api/trades", trades), Route("/api/trade/{position_id:str}", trade)]
