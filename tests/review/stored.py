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
