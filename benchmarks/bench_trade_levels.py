"""What keeping ``trade_levels_1m`` (migration 0021) costs the trades ingest on plain PostgreSQL.

The UI's volume profile reads a per-minute, per-price aggregate that statement-level triggers on
``trades`` keep current (each INSERT/COPY statement's rows, grouped, upserted). This times the same
trade inserts with those triggers enabled and disabled, alternately (``--rounds`` each), in an embedded
PostgreSQL migrated with the plain layout: ``--batch`` rows per statement, generated server-side
(``generate_series``: no client or decoding cost, so the ratio is the database's own ingest ceiling
with / without the aggregate, the worst case for the sink, whose decoding and Kafka work do not
change). Trades are ~44 a second (a day of 3.8 M, the UI benchmark's BTC day) on a 0.1 tick around
62,000 with a few dozen distinct prices a minute. Prints rows/s and the PostgreSQL backend's CPU-s per
1M rows per round, the medians and the ratio.

    .venv/bin/python -m benchmarks.bench_trade_levels --rows 400000 --batch 50000 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

import psutil
import psycopg

from benchmarks.embedded_stack import embedded_stack
from sinks.partitions import ensure_partitions

DAY = datetime(2024, 3, 1, tzinfo=UTC)
SPACING_S = 86_400 / 3_800_000


def insert(conn: psycopg.Connection, first: int, rows: int, batch: int) -> float:
    t = time.perf_counter()
    for lo in range(first, first + rows, batch):
        conn.execute(
            "INSERT INTO trades SELECT 'binance', 'BTCUSDT', i, round((62000 + 300 * sin(i / 20000.0) + (i %% 37) * 0.1)::numeric, 1), "
            "round((0.001 * (1 + i %% 50))::numeric, 3), i, i, t, t, t, CASE WHEN i %% 3 = 0 THEN 'SELL' ELSE 'BUY' END "
            "FROM generate_series(%s::bigint, %s::bigint) AS i, "
            "LATERAL (SELECT %s::timestamptz + i * %s * interval '1 second' AS t) AS tt",
            (lo, min(lo + batch, first + rows) - 1, DAY, SPACING_S),
        )
        conn.commit()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with embedded_stack(with_broker=False, engine_extension=None) as (_, owner), psycopg.connect(owner) as conn:
        ensure_partitions(conn, "trades", DAY - timedelta(days=1), DAY + timedelta(days=40))
        conn.commit()
        rates: dict[bool, list[float]] = {True: [], False: []}
        cpu: dict[bool, list[float]] = {True: [], False: []}
        backend = psutil.Process(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.commit()
        first = 0
        print(f"load {os.getloadavg()[0]:.1f}", flush=True)
        for r in range(args.rounds):
            for enabled in (True, False) if r % 2 == 0 else (False, True):
                conn.execute(f"ALTER TABLE trades {'ENABLE' if enabled else 'DISABLE'} TRIGGER trades_levels_insert")
                conn.commit()
                before = sum(backend.cpu_times()[:2])
                took = insert(conn, first, args.rows, args.batch)
                cpu[enabled].append((sum(backend.cpu_times()[:2]) - before) / args.rows * 1e6)
                first += args.rows
                rates[enabled].append(args.rows / took)
                print(
                    f"round {r + 1}, aggregate {'on ' if enabled else 'off'}: {args.rows / took:,.0f} rows/s, "
                    f"PostgreSQL {cpu[enabled][-1]:.2f} CPU-s per 1M rows",
                    flush=True,
                )
        levels = conn.execute("SELECT count(*), count(DISTINCT open_time) FROM trade_levels_1m").fetchone()
        on, off = statistics.median(rates[True]), statistics.median(rates[False])
        print(
            f"median: with the aggregate {on:,.0f} rows/s, without {off:,.0f} rows/s: ratio {on / off:.2f} "
            f"(rows/minute in trade_levels_1m: {levels[0] / max(levels[1], 1):,.0f}); PostgreSQL per 1M rows "
            f"{statistics.median(cpu[True]):.2f} CPU-s with, {statistics.median(cpu[False]):.2f} without; "
            f"load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
