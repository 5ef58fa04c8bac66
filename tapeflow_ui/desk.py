"""The watchlist desk's SQL: the live ranking (the rows of `tapeflow watchlist`:
``stream_apps.watchlist.ranking``), hedged pairs with their legs, P&L and funding (``xv_pairs_latest``,
``xv_leg_orders``), and one ordered venue pair's spread history with its pairs' entries and exits
(``xv_features``, ``xv_pair_events``). Times are event times: a replayed session shows its own.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg

from stream_apps.watchlist.ranking import ranking as watchlist_ranking
from tapeflow_ui.queries import ts

PAIR_COLUMNS = ("pair_id", "coin", "short_venue", "short_symbol", "long_venue", "long_symbol", "notional_usd", "qty",
                "status", "reason", "close_reason", "opened_time", "closed_time", "entry_spread", "exit_spread",
                "gross_usd", "fees_usd", "slippage_usd", "funding_usd", "net_usd", "event_time")


def ranking(conn: psycopg.Connection, window_s: float = 300.0) -> list[dict] | None:
    pairs = watchlist_ranking(conn, window_s)
    return None if pairs is None else [p.as_dict() for p in pairs]


def pairs(conn: psycopg.Connection, limit: int = 50) -> list[dict]:
    """The newest pairs (open first), each with its legs' orders and its funding payments."""
    rows = conn.execute(
        f"SELECT {', '.join(PAIR_COLUMNS)} FROM xv_pairs_latest "  # nosec B608 # PAIR_COLUMNS is a constant
        "ORDER BY status IN ('open', 'opening', 'unwinding') DESC, opened_time DESC, pair_id LIMIT %s",
        (limit,)).fetchall()
    out = []
    for row in rows:
        pair = dict(zip(PAIR_COLUMNS, row))
        for key in ("opened_time", "closed_time", "event_time"):
            pair[key] = ts(pair[key]) if pair[key] is not None else None
        for key in ("gross_usd", "fees_usd", "slippage_usd", "funding_usd", "net_usd"):
            pair[key] = float(pair[key])
        out.append(pair)
    ids = [p["pair_id"] for p in out]
    legs: dict[str, list[dict]] = {}
    for r in conn.execute(
            "SELECT pair_id, leg, action, venue, symbol, side, qty, avg_price, fee, slippage_usd, status, reason, "
            "extract(epoch FROM order_time)::bigint FROM xv_leg_orders WHERE pair_id = ANY(%s) "
            "ORDER BY order_time, client_order_id", (ids,)).fetchall():
        legs.setdefault(r[0], []).append({"leg": r[1], "action": r[2], "venue": r[3], "symbol": r[4], "side": r[5],
                                          "qty": r[6], "avg_price": r[7], "fee": float(r[8]),
                                          "slippage_usd": float(r[9]), "status": r[10], "reason": r[11],
                                          "time": r[12]})
    funding: dict[str, float] = dict(conn.execute(
        "SELECT pair_id, sum(paid)::float8 FROM xv_funding_payments WHERE pair_id = ANY(%s) GROUP BY 1", (ids,)).fetchall())
    for pair in out:
        pair["orders"] = legs.get(pair["pair_id"], [])
        pair["funding_paid"] = funding.get(pair["pair_id"], 0.0)
    return out


def spread_history(conn: psycopg.Connection, coin: str, sell_venue: str, buy_venue: str, hours: float = 6.0) -> dict:
    """The ordered pair's swept and top spreads (fractions) over the ``hours`` before its newest
    evaluation, and the entries and exits of its pairs in that time."""
    newest = conn.execute("SELECT max(eval_time) FROM xv_features WHERE coin = %s AND sell_venue = %s AND buy_venue = %s",
                          (coin, sell_venue, buy_venue)).fetchone()[0]
    if newest is None:
        return {"coin": coin, "sell_venue": sell_venue, "buy_venue": buy_venue, "points": [], "marks": []}
    start = newest - timedelta(hours=hours)
    points = conn.execute(
        "SELECT extract(epoch FROM eval_time)::bigint, spread_sweep, spread_top FROM xv_features WHERE coin = %s "
        "AND sell_venue = %s AND buy_venue = %s AND eval_time >= %s ORDER BY eval_time",
        (coin, sell_venue, buy_venue, start)).fetchall()
    marks = []
    for pid, opened, entry, closed, exit_, status in conn.execute(
            "SELECT pair_id, extract(epoch FROM opened_time)::bigint, entry_spread, extract(epoch FROM closed_time)::bigint, "
            "exit_spread, status FROM xv_pairs_latest WHERE coin = %s AND short_venue = %s AND long_venue = %s "
            "AND (closed_time IS NULL OR closed_time >= %s) ORDER BY opened_time", (coin, sell_venue, buy_venue, start)).fetchall():
        if entry is not None:
            marks.append({"time": opened, "kind": "entry", "spread": entry, "pair_id": pid})
        if closed is not None and exit_ is not None:
            marks.append({"time": closed, "kind": "exit", "spread": exit_, "pair_id": pid, "status": status})
    seen: dict[int, list] = {}
    for t, sweep, top in points:  # several evaluations in one second: the last
        seen[t] = [t, sweep, top]
    return {"coin": coin, "sell_venue": sell_venue, "buy_venue": buy_venue, "points": list(seen.values()),
            "marks": sorted(marks, key=lambda m: m["time"])}
