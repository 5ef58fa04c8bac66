"""The ``db`` source's trade reader as it was before binary COPY (one query per symbol and hour, rows
fetched as Python tuples, times converted one by one): the reference the columnar reader is checked
against (``tests/backtest/test_backtest_stored_sources.py``) and the baseline it is measured against
(``benchmarks/bench_db_source.py``)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import psycopg


def row_reader_trades(
    conn: psycopg.Connection, exchange: str, symbol: str, lo_ms: int, hi_ms: int
) -> dict[str, np.ndarray] | None:
    rows = conn.execute(
        "SELECT agg_id, trade_time, price, qty, taker_side = 'SELL' FROM trades WHERE exchange = %s AND "
        "symbol = %s AND trade_time >= %s AND trade_time < %s ORDER BY trade_time, agg_id",
        (exchange, symbol, datetime.fromtimestamp(lo_ms / 1000, tz=UTC), datetime.fromtimestamp(hi_ms / 1000, tz=UTC)),
    ).fetchall()
    if not rows:
        return None
    ids, times, prices, qtys, sells = zip(*rows)
    return {
        "agg_id": np.asarray(ids, dtype=np.int64),
        "time_ms": np.fromiter((round(t.timestamp() * 1000) for t in times), np.int64, len(times)),
        "price": np.asarray(prices, dtype=np.float64),
        "qty": np.asarray(qtys, dtype=np.float64),
        "sell": np.asarray(sells, dtype=bool),
    }
