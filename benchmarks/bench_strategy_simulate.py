"""``tapeflow strategy simulate --days 7`` end to end on 4 symbols at real rates (~10 M trades).

An embedded PostgreSQL (the server's layout, as ``tapeflow up`` makes it) is filled server-side with
``generate_series`` (the way ``bench_db_source`` fills it, every column as the sink writes it):

* trades: BTCUSDT 3.5 M, ETHUSDT 3.0 M, SOLUSDT 2.0 M, XRPUSDT 1.5 M over ``--days`` (10 M in all at
  the defaults, 4-6 trades/s per symbol: a quiet week of Binance aggTrades), prices trending and ranging
  (three sines), quantities heavy-tailed, the taker side drifting between buying and selling runs
  so CVD trends and the strategies fire;
* mark prices every ``--mark-interval-s`` (1 s: the live markPrice@1s stream) with funding every 8 h;
* market indicators every 5 minutes (open interest, account and top-trader long/short ratios, spot-perp
  divergence), as the producer polls them; no books.

Then ``tapeflow strategy simulate CANDIDATE --active v53 --days 7 --source db --json`` runs as a
subprocess (``TAPEFLOW_DATABASE_URL`` at the database); the candidate is v53 with missing inputs
passing its gates (no books are stored here, so v53 itself vetoes every signal) and entry 70. Printed:
wall clock, trades/s end to end and the ratio to the 60 s target, and the report's numbers.

    .venv/bin/python -m benchmarks.bench_strategy_simulate            # 7 days, 10 M trades
    .venv/bin/python -m benchmarks.bench_strategy_simulate --days 1 --trades 1000000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict

from benchmarks.embedded_stack import embedded_stack
from sinks.partitions import ensure_partitions
from stream_apps.core.strategy import load_strategy

START = datetime(2024, 3, 1, tzinfo=UTC)
TARGET_S = 60.0
SHARES = {"BTCUSDT": (0.35, 60_000.0), "ETHUSDT": (0.30, 3_000.0), "SOLUSDT": (0.20, 120.0), "XRPUSDT": (0.15, 0.6)}

TRADES_SQL = (
    "INSERT INTO trades SELECT 'binance', %(s)s, i, "
    "%(p)s * (1 + 0.02 * sin(i * %(cycles)s / %(n)s) + 0.004 * sin(i / 3001.0) + 0.001 * sin(i / 97.0)), "
    "0.01 * exp(((i * 7919) %% 1000) / 150.0), i, i, t, t, t + interval '5 ms', "
    "CASE WHEN ((i * 2654435761) %% 1000) < 500 + 180 * sin(i / 40000.0) THEN 'SELL' ELSE 'BUY' END "
    "FROM generate_series(0::bigint, %(n)s - 1) AS i, LATERAL (SELECT %(t0)s::timestamptz + "
    "(i::bigint * %(span)s::bigint / %(n)s) * interval '1 ms' AS t) AS times"
)
MARKS_SQL = (
    "INSERT INTO mark_prices SELECT 'binance', %(s)s, m, m * 1.0001, 0.0001 * sin(k / 5000.0), "
    "%(t0)s::timestamptz + (((k * %(step)s) / 28800000) + 1) * interval '8 hours', t, t + interval '5 ms' "
    "FROM generate_series(0::bigint, %(n)s - 1) AS k, LATERAL (SELECT %(t0)s::timestamptz + k * %(step)s * interval '1 ms' "
    "AS t, %(p)s * (1 + 0.02 * sin(k * %(cycles)s / %(n)s)) AS m) AS v"
)

# every 5 minutes, received 45 s after the period (as the producer polls them): open interest, the
# account and top-trader long/short ratios, spot-perp divergence
INDICATORS_SQL = (
    "INSERT INTO market_indicators SELECT 'binance', %(s)s, x.kind, x.value, x.period, x.extra, v.t, "
    "v.t + interval '45 s' FROM generate_series(1::bigint, %(n)s) AS k, LATERAL (SELECT %(t0)s::timestamptz + "
    "k * interval '5 minutes' AS t, 1e6 * (1 + 0.05 * sin(k / 50.0) + 0.01 * sin(k / 7.0)) AS oi, "
    "1.0 - 0.35 * sin(k / 40.0) AS r, 1.0 + 0.3 * sin(k / 33.0) AS q, 0.0002 * sin(k / 11.0) AS d) AS v, "
    "LATERAL (VALUES "
    "('open_interest_hist', round(v.oi::numeric, 3)::float8, '5m', "
    "jsonb_build_object('sum_open_interest_value', v.oi * %(p)s)), "
    "('long_short_account_ratio', v.r, '5m', jsonb_build_object('long_account', v.r / (1 + v.r), "
    "'short_account', 1 / (1 + v.r))), "
    "('top_trader_position_ratio', v.q, '5m', jsonb_build_object('long_account', v.q / (1 + v.q), "
    "'short_account', 1 / (1 + v.q))), "
    "('spot_perp_divergence', v.d, NULL, jsonb_build_object('perp_price', %(p)s, 'spot_price', %(p)s * (1 - v.d)))"
    ") AS x(kind, value, period, extra)"
)


def load(conninfo: str, days: int, trades: int, mark_interval_s: float) -> tuple[int, int, int]:
    """Fill the database; (trades, marks, indicators) stored."""
    span = days * 86_400_000
    with psycopg.connect(conninfo) as conn:
        for table in ("trades", "mark_prices", "market_indicators"):
            ensure_partitions(conn, table, START - timedelta(days=1), START + timedelta(days=days + 1))
        conn.commit()
        for symbol, (share, price) in SHARES.items():
            n = int(trades * share)
            cycles = 2 * 3.14159 * days * 1.5  # a swing every 16 h
            conn.execute(TRADES_SQL, {"s": symbol, "p": price, "n": n, "t0": START, "span": span, "cycles": cycles})
            conn.commit()
            if mark_interval_s > 0:
                step = int(mark_interval_s * 1000)
                marks = span // step
                conn.execute(
                    MARKS_SQL, {"s": symbol, "p": price, "n": marks, "t0": START, "step": step, "cycles": cycles}
                )
                conn.commit()
            conn.execute(INDICATORS_SQL, {"s": symbol, "p": price, "n": span // 300_000, "t0": START})
            conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE trades")  # as autovacuum leaves a table that has been written a while
        conn.execute("VACUUM ANALYZE mark_prices")
        row = conn.execute(
            "SELECT (SELECT count(*) FROM trades), (SELECT count(*) FROM mark_prices), "
            "(SELECT count(*) FROM market_indicators)"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])


def candidate_file(path: Path) -> Path:
    data = load_strategy("v53").model_dump(mode="json")
    data.update(name="v53_pass", version="5.3.1-pass", description="v53; missing gate inputs pass; entry 70")
    data["gates"]["on_missing_input"] = "pass"
    data["thresholds"]["entry"] = 70
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(conninfo: str, days: int) -> tuple[float, float, dict]:
    """Wall clock and CPU seconds of the command (its own process: the database server's work is
    not in them), and its JSON report."""
    p = conninfo_to_dict(conninfo)
    url = f"postgresql://{p['user']}:{p['password']}@{p['host']}:{p['port']}/{p['dbname']}"
    with tempfile.TemporaryDirectory() as home:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TAPEFLOW_")},
            "TAPEFLOW_HOME": home,
            "TAPEFLOW_DATABASE_URL": url,
            "TAPEFLOW_SYMBOLS": ",".join(SHARES),
        }
        candidate = candidate_file(Path(home) / "v53_pass.yaml")
        argv = ["strategy", "simulate", str(candidate), "--active", "v53", "--days", str(days), "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "tapeflow", *argv, "--no-progress"], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    return wall, cpu, json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--trades", type=int, default=10_000_000, help="trades in all, over the 4 symbols")
    ap.add_argument("--mark-interval-s", type=float, default=1.0, help="0: no mark prices")
    args = ap.parse_args()
    with embedded_stack(with_broker=False) as (_, conninfo):
        t = time.perf_counter()
        trades, marks, indicators = load(conninfo, args.days, args.trades, args.mark_interval_s)
        print(
            f"loaded {trades:,} trades, {marks:,} mark prices and {indicators:,} indicators ({args.days} days x "
            f"{len(SHARES)} symbols) in "
            f"{time.perf_counter() - t:.0f} s; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        wall, cpu, report = run(conninfo, args.days)
    processed = report["trades_processed"]
    print(
        f"tapeflow strategy simulate --days {args.days} --source db: {wall:.1f} s wall, {processed:,} trades, "
        f"{processed / wall:,.0f} trades/s end to end; {wall / TARGET_S:.2f} of the {TARGET_S:.0f} s target "
        f"({TARGET_S / wall:.2f}x faster than it); {cpu:.1f} CPU-s in the command's process; "
        f"load {os.getloadavg()[0]:.1f}"
    )
    a, c, d = report["active"], report["candidate"], report["delta"]
    for label, o in (("active", a), ("candidate", c)):
        print(
            f"  {label} {o['strategy']}: {o['signals']} signals, {o['taken']} taken, {o['trades']} trades, "
            f"net {o['net_r']:+.2f}R, size multiplier > 1: {o['size_up']}"
        )
    print(f"  delta: {d}")
    s = report["sensitivity"]
    print(
        f"  sensitivity: {s['evaluations_at_a_decision']:,} evaluations at a decision, margins "
        f"{s['margins']['median_to_entry']} / {s['margins']['median_to_heavy']} points to entry / heavy"
    )


if __name__ == "__main__":
    main()
