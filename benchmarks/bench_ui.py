"""The web UI's views on a day of BTC: how long each answers (target: ≤ 300 ms at 1 m bars).

An embedded PostgreSQL (the server's layout: hypertables where it has TimescaleDB, plain partitions
here) is loaded with one generated day of BTCUSDT (``tests.support.ui_session``: the rows the sink
writes; ``--trades-per-s`` sets the size, 30/s ≈ 2.6 M trades, the live BTC rate of the generator),
then the UI (``tapeflow_ui.app``, uvicorn, the read-only role) is asked over HTTP for each view of the
whole day at 1 m bars, ``--runs`` times; the median and max wall time per view are printed, with the
ratio to the 300 ms target. The footprint is cut to its last ``MAX_FOOTPRINT_BARS`` bars by design;
the volume profile covers the whole day. The day's evaluations carry the book detectors' walls
(``store_wall_features``: every second, two strategies, 172,800 rows), so the heatmap draws them; the
walls' own query is timed alone too (its share of the heatmap's time), and so are the overview's parts. Baseline: the same views computed in the browser from raw
trades would first have to download them (``trades`` rows of the day, printed as MB of JSON).

    .venv/bin/python -m benchmarks.bench_ui --trades-per-s 30 --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql

from benchmarks.embedded_stack import embedded_stack
from tapeflow_runtime.paths import StackPaths
from tapeflow_ui.queries import MAX_FOOTPRINT_BARS
from tapeflow_ui.security import load_token
from tests.support.ui_session import store_synthetic, store_wall_features

DAY = datetime(2024, 3, 1, tzinfo=UTC)
TARGET_S = 0.300


def time_parts(conn, parts: dict, runs: int, label: str) -> None:
    """One table row per part (a query alone): median and max of ``runs`` timings after one warm-up."""
    for name, part in parts.items():
        times = []
        for _ in range(runs + 1):
            t = time.perf_counter()
            n = part()
            times.append(time.perf_counter() - t)
            conn.rollback()
        print(
            f"| of which {label.format(name=name)} ({n} rows) | {statistics.median(times[1:]) * 1000:.0f} ms | "
            f"{max(times[1:]) * 1000:.0f} ms | | {statistics.median(times[1:]) / TARGET_S:.2f}x |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades-per-s", type=float, default=30.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    import tempfile

    import uvicorn

    from tapeflow_ui.app import create_app

    with embedded_stack(with_broker=False) as (_, owner), tempfile.TemporaryDirectory() as home:
        t = time.perf_counter()
        from_ms = int(DAY.timestamp() * 1000)
        counts = store_synthetic(
            owner, ["BTCUSDT"], from_ms, from_ms + 86_400_000, seed=3, trades_per_s=args.trades_per_s
        )
        counts["features"] = store_wall_features(owner, "BTCUSDT", from_ms, from_ms + 86_400_000)
        print(f"loaded {counts} in {time.perf_counter() - t:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
        role, password = f"bench_ro_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE tapeflow_readonly").format(
                    sql.Identifier(role), sql.Literal(password)
                )
            )
            engine = (
                "TimescaleDB"
                if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
                else "plain PostgreSQL"
            )
        token = load_token(StackPaths(Path(home)))
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(psycopg.conninfo.make_conninfo(owner, user=role, password=password), token),
                host="127.0.0.1",
                port=0,
                log_level="warning",
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        day = f"symbol=BTCUSDT&tf=1m&from={int(DAY.timestamp())}&to={int((DAY + timedelta(days=1)).timestamp())}"
        views = {
            "chart (1440 candles, CVD, VWAP, signals, liquidations)": f"/api/chart?{day}",
            f"footprint (last {MAX_FOOTPRINT_BARS} bars of the day)": f"/api/footprint?{day}",
            "volume profile (whole day)": f"/api/profile?{day}",
            "liquidity heatmap (whole day, 240 columns; no bubbles past 12 h)": f"/api/heatmap?{day}",
            "market overview": "/api/overview",
        }
        print(
            f"{engine}; {counts.get('trades', 0):,} trades, {counts.get('depth_snapshots', 0):,} books, "
            f"{counts['features']:,} evaluations with walls in the day"
        )
        print("| view | median | max | bytes | median / 300 ms target |\n|---|---|---|---|---|")
        for name, path in views.items():
            times, size = [], 0
            for _ in range(args.runs + 1):  # the first run warms the pool and the caches: not counted
                req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
                t = time.perf_counter()
                with urllib.request.urlopen(req, timeout=120) as resp:
                    size = len(resp.read())
                times.append(time.perf_counter() - t)
            times = times[1:]
            med = statistics.median(times)
            print(
                f"| {name} | {med * 1000:.0f} ms | {max(times) * 1000:.0f} ms | {size / 1e3:,.0f} kB | "
                f"{med / TARGET_S:.2f}x |",
                flush=True,
            )
        from tapeflow_ui.queries import MAX_HEATMAP_COLUMNS, Range, default_step, heatmap, walls

        # the heatmap's parts on one connection, in turn: its books (what it was before the walls) and the walls
        with psycopg.connect(
            psycopg.conninfo.make_conninfo(owner, user=role, password=password),
            options="-c default_transaction_read_only=on -c jit=off",
        ) as conn:  # as the UI's pool
            rng = Range(DAY, DAY + timedelta(days=1))
            step = default_step(conn, "BTCUSDT", rng)
            parts = {
                "books": lambda: len(heatmap(conn, "BTCUSDT", rng, step)["cells"]),
                "walls": lambda: len(walls(conn, "BTCUSDT", rng, 86_400 // MAX_HEATMAP_COLUMNS)),
            }
            time_parts(conn, parts, args.runs, "the heatmap's {name} query alone")
            # the overview's parts, the same way
            from tapeflow_ui import overview as ov
            from tapeflow_ui.queries import data_time

            now = data_time(conn)
            conn.rollback()
            parts = {
                "market table": lambda: len(ov.market_table(conn, now)),
                "funding heatmap": lambda: len(ov.funding_heatmap(conn, now)["cells"]),
                "signal timeline": lambda: len(ov.signal_timeline(conn, now)),
                "whale radar": lambda: len(ov.whale_radar(conn, now)),
                "data-quality lights": lambda: len(ov.data_quality(conn, now)),
            }
            time_parts(conn, parts, args.runs, "the overview's {name}")
        with psycopg.connect(owner) as conn:
            raw = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
        print(
            f"baseline: the browser doing it from raw trades would download {raw:,} trades "
            f"(~{raw * 70 / 1e6:,.0f} MB as JSON) first; load {os.getloadavg()[0]:.1f}"
        )
        server.should_exit = True
        thread.join(30)


if __name__ == "__main__":
    main()
