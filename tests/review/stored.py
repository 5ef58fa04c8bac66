"""Planted paper trades written to a migrated database with the sink's own row mappings (no tests here)."""

from __future__ import annotations

import psycopg

from sinks.tables import table_for_topic, write_rows
from tests.review.planted import Planted


def store(conninfo: str, *planted: Planted) -> None:
    """Every record the executor emitted and was fed, in the tables the sink writes them to."""
    with psycopg.connect(conninfo) as conn:
        for p in planted:
            topics = {
                "md.trades": p.trades,
                "md.mark": p.marks,
                "signals": [p.signal],
                "orders": p.of("orders"),
                "fills": p.of("fills"),
                "positions": p.of("positions"),
            }
            for topic, records in topics.items():
                spec = table_for_topic(topic)
                write_rows(conn, spec, [spec.to_row(r) for r in records])
        conn.commit()


def store_bars(conninfo: str, trades: list[dict]) -> int:
    """bars_1m rows of the planted trades (as the engine's 1-minute bars would be); returns how many."""
    minutes: dict[int, list[dict]] = {}
    for t in trades:
        minutes.setdefault(t["trade_time"] - t["trade_time"] % 60_000, []).append(t)
    with psycopg.connect(conninfo) as conn:
        for start, ts in minutes.items():
            prices = [t["price"] for t in ts]
            conn.execute(
                "INSERT INTO bars_1m VALUES ('binance', %s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0),"
                " %s, %s, %s, %s, %s, %s, 0, %s, %s, %s, %s, %s)",
                (
                    ts[0]["symbol"],
                    start,
                    start + 59_999,
                    prices[0],
                    max(prices),
                    min(prices),
                    prices[-1],
                    len(ts),
                    len(ts),
                    sum(prices),
                    sum(prices) / len(ts),
                    len(ts),
                    ts[0]["agg_id"],
                    ts[-1]["agg_id"],
                ),
            )
        conn.commit()
    return len(minutes)
