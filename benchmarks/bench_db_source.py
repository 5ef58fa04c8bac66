"""The backtest's ``db`` source: trades read by binary COPY into columns vs the row reader it replaced.

An embedded PostgreSQL (the server's layout: hypertables where it has TimescaleDB) is loaded with
``--days`` x ``--symbols`` of trades at ``--trades-per-day`` (server-side ``generate_series``, every
column as the sink writes it). Then, on the same rows:

* trades only: ``DatabaseSource._trades`` hour by hour for every symbol (binary COPY, the reader) and
  the reader it replaced (``tests.support.db_rows``: a query per symbol and hour, row by row, the
  baseline), trades/s of each and the ratio;
* end to end: ``tapeflow backtest --source db`` as a subprocess (``TAPEFLOW_DATABASE_URL`` at the
  database, the three shipped strategies, json report), wall clock, trades/s and the ratio to the
  3,000,000 target of ``tapeflow backtest`` (the target for the Vision files).

    .venv/bin/python -m benchmarks.bench_db_source --days 1 --symbols 4 --trades-per-day 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict

from backtest.sources.database import HOUR_MS, DatabaseSource
from benchmarks.embedded_stack import embedded_stack
from sinks.partitions import ensure_partitions
from tests.support.db_rows import row_reader_trades

START = datetime(2024, 3, 1, tzinfo=UTC)
TARGET = 3_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")


def load(conninfo: str, symbols: tuple[str, ...], days: int, per_day: int) -> int:
    with psycopg.connect(conninfo) as conn:
        ensure_partitions(conn, "trades", START - timedelta(days=1), START + timedelta(days=days + 1))
        conn.commit()
        for k, symbol in enumerate(symbols):
            base = (30_000.0, 2_000.0, 100.0, 0.6)[k % 4]
            conn.execute(
                "INSERT INTO trades SELECT 'binance', %(s)s, i, %(p)s * (1 + 0.01 * sin(i / 5000.0)), "
                "0.001 + (i %% 97) / 50.0, i, i, t, t, t + interval '5 ms', CASE WHEN i %% 3 = 0 THEN 'SELL' ELSE 'BUY' END "
                "FROM generate_series(0, %(n)s - 1) AS i, LATERAL (SELECT %(t0)s::timestamptz + "
                "(i::bigint * %(span)s::bigint / %(n)s) * interval '1 ms' AS t) AS times",
                {"s": symbol, "p": base, "n": per_day * days, "t0": START, "span": days * 86_400_000},
            )
            conn.commit()
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE trades")  # as autovacuum leaves a table that has been written a while
        return conn.execute("SELECT count(*) FROM trades").fetchone()[0]


def read_all(conninfo: str, symbols: list[str], from_ms: int, to_ms: int, rows: bool) -> tuple[int, float]:
    source = DatabaseSource(conninfo, symbols, from_ms, to_ms)
    began = time.perf_counter()
    n = 0
    with psycopg.connect(conninfo) as conn:
        for start in range(from_ms, to_ms, HOUR_MS):
            if rows:
                for symbol in symbols:
                    cols = row_reader_trades(conn, "binance", symbol, start, start + HOUR_MS)
                    n += 0 if cols is None else len(cols["agg_id"])
            else:
                n += sum(len(b.agg_id) for b in source._trades(conn, start, start + HOUR_MS).values())
    return n, time.perf_counter() - began


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=1)
    ap.add_argument("--symbols", type=int, default=4, choices=range(1, 5))
    ap.add_argument("--trades-per-day", type=int, default=1_000_000)
    args = ap.parse_args()
    symbols = SYMBOLS[: args.symbols]
    from_ms = int(START.timestamp() * 1000)
    to_ms = from_ms + args.days * 86_400_000
    with embedded_stack(with_broker=False) as (_, conninfo):
        t = time.perf_counter()
        total = load(conninfo, symbols, args.days, args.trades_per_day)
        print(
            f"loaded {total:,} trades ({args.days} day(s) x {len(symbols)} symbols) in {time.perf_counter() - t:.0f} s; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        n_new, s_new = read_all(conninfo, list(symbols), from_ms, to_ms, rows=False)
        n_old, s_old = read_all(conninfo, list(symbols), from_ms, to_ms, rows=True)
        assert n_new == n_old == total, (n_new, n_old, total)
        print(
            f"trades only: binary COPY {n_new / s_new:,.0f} trades/s ({s_new:.1f} s); row reader (baseline) "
            f"{n_old / s_old:,.0f} trades/s ({s_old:.1f} s); {s_old / s_new:.1f}x the baseline"
        )
        p = conninfo_to_dict(conninfo)
        url = f"postgresql://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{p['dbname']}"
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "TAPEFLOW_HOME": home, "TAPEFLOW_DATABASE_URL": url}
            day = START.date()
            last = day + timedelta(days=args.days - 1)
            t = time.perf_counter()
            res = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tapeflow",
                    "backtest",
                    "--source",
                    "db",
                    "--from",
                    day.isoformat(),
                    "--to",
                    last.isoformat(),
                    "--symbols",
                    ",".join(symbols),
                    "--format",
                    "json",
                    "--no-progress",
                    "--out",
                    str(Path(home) / "out"),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            wall = time.perf_counter() - t
            if res.returncode != 0:
                raise SystemExit(res.stderr)
            report = json.loads((Path(home) / "out" / "report.json").read_text())
        processed = report["run"]["trades_processed"]
        print(
            f"tapeflow backtest --source db: {wall:.1f} s wall, {processed:,} trades, "
            f"{processed / wall:,.0f} trades/s end to end = {processed / wall / TARGET:.2f}x the 3 M target; "
            f"load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
