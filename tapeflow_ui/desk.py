"""The watchlist desk's SQL: the live ranking (the rows of `tapeflow watchlist`:
``stream_apps.watchlist.ranking``), hedged pairs with their legs, P&L and funding (``xv_pairs_latest``,
``xv_leg_orders``), and one ordered venue pair's spread history with its pairs' entries and exits
(``xv_features``, ``xv_pair_events``). Times are event times: a replayed session shows its own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from stream_apps.watchlist.ranking import ranking as watchlist_ranking
from tapeflow_ui.queries import ts

UNIX_ZERO = datetime(1970, 1, 1, tzinfo=UTC)
PAIR_COLUMNS = (
    "pair_id",
    "coin",
    "short_venue",
    "short_symbol",
    "long_venue",
    "long_symbol",
    "notional_usd",
    "qty",
    "status",
    "reason",
    "close_reason",
    "opened_time",
    "closed_time",
    "entry_spread",
    "exit_spread",
    "gross_usd",
    "fees_usd",
    "slippage_usd",
    "funding_usd",
    "net_usd",
    "event_time",
)


def ranking(conn: psycopg.Connection, window_s: float = 300.0) -> list[dict] | None:
    pairs = watchlist_ranking(conn, window_s)
    return None if pairs is None else [p.as_dict() for p in pairs]


def pairs(conn: psycopg.Connection, limit: int = 50) -> list[dict]:
    """The newest pairs (open first), each with its legs' orders and its funding payments."""
    rows = conn.execute(
        f"SELECT {', '.join(PAIR_COLUMNS)} FROM xv_pairs_latest "  # nosec B608 # PAIR_COLUMNS is a constant
        "ORDER BY status IN ('open', 'opening', 'unwinding') DESC, opened_time DESC, pair_id LIMIT %s",
        (limit,),
    ).fetchall()
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
        "ORDER BY order_time, client_order_id",
        (ids,),
    ).fetchall():
        legs.setdefault(r[0], []).append(
            {
                "leg": r[1],
                "action": r[2],
                "venue": r[3],
                "symbol": r[4],
                "side": r[5],
                "qty": r[6],
                "avg_price": r[7],
                "fee": float(r[8]),
                "slippage_usd": float(r[9]),
                "status": r[10],
                "reason": r[11],
                "time": r[12],
            }
        )
    funding: dict[str, float] = dict(
        conn.execute(
            "SELECT pair_id, sum(paid)::float8 FROM xv_funding_payments WHERE pair_id = ANY(%s) GROUP BY 1", (ids,)
        ).fetchall()
    )
    for pair in out:
        pair["orders"] = legs.get(pair["pair_id"], [])
        pair["funding_paid"] = funding.get(pair["pair_id"], 0.0)
    return out


def spread_history(conn: psycopg.Connection, coin: str, sell_venue: str, buy_venue: str, hours: float = 6.0) -> dict:
    """The ordered pair's swept and top spreads (fractions) over the ``hours`` before its newest
    evaluation, and the entries and exits of its pairs in that time."""
    newest = conn.execute(
        "SELECT max(eval_time) FROM xv_features WHERE coin = %s AND sell_venue = %s AND buy_venue = %s",
        (coin, sell_venue, buy_venue),
    ).fetchone()[0]
    if newest is None:
        return {"coin": coin, "sell_venue": sell_venue, "buy_venue": buy_venue, "points": [], "marks": []}
    start = newest - timedelta(hours=hours)
    points = conn.execute(
        "SELECT extract(epoch FROM eval_time)::bigint, spread_sweep, spread_top FROM xv_features WHERE coin = %s "
        "AND sell_venue = %s AND buy_venue = %s AND eval_time >= %s ORDER BY eval_time",
        (coin, sell_venue, buy_venue, start),
    ).fetchall()
    marks = []
    for pid, opened, entry, closed, exit_, status in conn.execute(
        "SELECT pair_id, extract(epoch FROM opened_time)::bigint, entry_spread, extract(epoch FROM closed_time)::bigint, "
        "exit_spread, status FROM xv_pairs_latest WHERE coin = %s AND short_venue = %s AND long_venue = %s "
        "AND (closed_time IS NULL OR closed_time >= %s) ORDER BY opened_time",
        (coin, sell_venue, buy_venue, start),
    ).fetchall():
        if entry is not None:
            marks.append({"time": opened, "kind": "entry", "spread": entry, "pair_id": pid})
        if closed is not None and exit_ is not None:
            marks.append({"time": closed, "kind": "exit", "spread": exit_, "pair_id": pid, "status": status})
    seen: dict[int, list] = {}
    for t, sweep, top in points:  # several evaluations in one second: the last
        seen[t] = [t, sweep, top]
    return {
        "coin": coin,
        "sell_venue": sell_venue,
        "buy_venue": buy_venue,
        "points": list(seen.values()),
        "marks": sorted(marks, key=lambda m: m["time"]),
    }


QUOTE_COLUMNS = (
    "eval_time",
    "sell_symbol",
    "buy_symbol",
    "spread_sweep",
    "spread_top",
    "sell_bid",
    "sell_sweep_bid",
    "buy_ask",
    "buy_sweep_ask",
    "funding_diff_8h",
    "sweep_notional_usd",
)


def quote(
    conn: psycopg.Connection, strategy, coin: str, sell_venue: str, buy_venue: str, at_ms: int | None = None
) -> dict | None:
    """What opening a pair of `strategy` (short `sell_venue`, long `buy_venue`) looks like at the
    ordered pair's newest evaluation (or the one at `at_ms`: the one the operator reviewed): the swept
    spread, the strategy's four taker fees, the spread net of them, both legs' sweep cost, the hours of
    forecast funding that pay fees and sweeps back (``stream_apps.watchlist.signals.expected_carry``:
    the trader's own formula) and the size. None when the pair has no evaluation (at that time)."""
    from stream_apps.watchlist.signals import expected_carry

    where = "coin = %s AND sell_venue = %s AND buy_venue = %s"
    args: list = [coin, sell_venue, buy_venue]
    if at_ms is not None:
        where += " AND eval_time = %s"
        args.append(UNIX_ZERO + timedelta(milliseconds=at_ms))
    row = conn.execute(
        f"SELECT {', '.join(QUOTE_COLUMNS)} FROM xv_features WHERE {where} "  # nosec B608 # constants; values are parameters
        "ORDER BY eval_time DESC LIMIT 1",
        args,
    ).fetchone()
    if row is None:
        return None
    q = dict(zip(QUOTE_COLUMNS, row))
    spread = q["spread_sweep"]
    fees = strategy.four_fees(sell_venue, buy_venue)
    sweep_cost = None
    if (
        None not in (q["sell_bid"], q["sell_sweep_bid"], q["buy_ask"], q["buy_sweep_ask"])
        and q["sell_bid"]
        and q["buy_ask"]
    ):
        sweep_cost = (q["sell_bid"] - q["sell_sweep_bid"]) / q["sell_bid"] + (q["buy_sweep_ask"] - q["buy_ask"]) / q[
            "buy_ask"
        ]
    carry = expected_carry(strategy, sell_venue, buy_venue, q["funding_diff_8h"], sweep_cost)
    notional = strategy.notional_usd
    price = q["sell_sweep_bid"] or q["sell_bid"]
    return {
        "strategy": strategy.name,
        "coin": coin,
        "sell_venue": sell_venue,
        "buy_venue": buy_venue,
        "sell_symbol": q["sell_symbol"],
        "buy_symbol": q["buy_symbol"],
        "shown_time": round(q["eval_time"].timestamp() * 1000),
        "spread_sweep": spread,
        "spread_top": q["spread_top"],
        "four_fees": fees,
        "net_spread": None if spread is None else spread - fees,
        "fees_usd": fees * notional,  # a taker fee per leg on entry and on exit, each on about the notional
        "sweep_cost": sweep_cost,
        "funding_diff_8h": q["funding_diff_8h"],
        "expected_carry_8h_usd": carry["expected_carry_8h_usd"],
        "break_even_hours": carry["break_even_hours"],
        "notional_usd": notional,
        "qty": None if not price else notional / price,
        "sweep_notional_usd": q["sweep_notional_usd"],
    }


def pair_for_close(conn: psycopg.Connection, pid: str) -> dict | None:
    """The pair's newest state and the strategy that opened it (its signal in xv_signals)."""
    row = conn.execute(
        "SELECT p.pair_id, p.coin, p.status, p.short_venue, p.short_symbol, p.long_venue, p.long_symbol, "
        "p.entry_spread, p.net_usd, s.strategy FROM xv_pairs_latest p "
        "LEFT JOIN LATERAL (SELECT strategy FROM xv_signals WHERE signal_id = p.signal_id LIMIT 1) s ON true "
        "WHERE p.pair_id = %s",
        (pid,),
    ).fetchone()
    if row is None:
        return None
    keys = (
        "pair_id",
        "coin",
        "status",
        "short_venue",
        "short_symbol",
        "long_venue",
        "long_symbol",
        "entry_spread",
        "net_usd",
        "strategy",
    )
    out = dict(zip(keys, row))
    out["net_usd"] = float(out["net_usd"])
    return out
