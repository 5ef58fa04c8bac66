"""Outcome labels in PostgreSQL (`review.label_job`): a backfill of every sample of a few days, and one
pass of the running stack's hourly job, on 4 symbols at real trade rates.

An embedded PostgreSQL (the server's layout) is filled server-side as ``bench_strategy_simulate`` fills it
(trades at 4-6 per second per symbol, mark prices every second with funding every 8 h), then signals:
``--signals-per-hour`` per symbol, every other one taken (a position with an entry fill and, 20 minutes
later, an exit fill), the rest vetoed. Printed: the backfill's wall time and labels per second, and the
hourly pass's wall time with its ratio to the target (1 % of the hour it runs in: 36 s).

    .venv/bin/python -m benchmarks.bench_labels                 # 3 days, 6 M trades, 12 signals/h/symbol
    .venv/bin/python -m benchmarks.bench_labels --days 2 --trades 2000000   # a quick look
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta

import psycopg
from psycopg.types.json import Jsonb

from benchmarks.bench_strategy_simulate import MARKS_SQL, SHARES, START, TRADES_SQL
from benchmarks.embedded_stack import embedded_stack
from execution.client_ids import client_order_id, position_id
from execution.config import ExecutorConfig
from review.label_job import label_range, run_due, ts
from review.labels import HOUR_MS, LabelParams
from sinks.partitions import ensure_partitions

HOURLY_TARGET_S = 36.0
START_MS = int(START.timestamp() * 1000)


def load_market(conninfo: str, days: int, trades: int) -> tuple[int, int]:
    """Trades and marks as ``bench_strategy_simulate`` generates them, but stored in time order over the
    symbols, as the sink stores them (rows arrive as they trade): the layout the BRIN index on
    trade_time is read in. (trades, marks) stored."""
    span = days * 86_400_000
    with psycopg.connect(conninfo) as conn:
        for table in ("trades", "mark_prices"):
            ensure_partitions(conn, table, START - timedelta(days=1), START + timedelta(days=days + 1))
        conn.execute("CREATE UNLOGGED TABLE trades_stage (LIKE trades)")
        cycles = 2 * 3.14159 * days * 1.5
        for symbol, (share, price) in SHARES.items():
            n = int(trades * share)
            conn.execute(
                TRADES_SQL.replace("INSERT INTO trades ", "INSERT INTO trades_stage "),
                {"s": symbol, "p": price, "n": n, "t0": START, "span": span, "cycles": cycles},
            )
            conn.execute(
                MARKS_SQL, {"s": symbol, "p": price, "n": span // 1000, "t0": START, "step": 1000, "cycles": cycles}
            )
        conn.execute("INSERT INTO trades SELECT * FROM trades_stage ORDER BY trade_time, symbol")
        conn.execute("DROP TABLE trades_stage")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE trades")
        conn.execute("VACUUM ANALYZE mark_prices")
        stored_trades = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
        stored_marks = conn.execute("SELECT count(*) FROM mark_prices").fetchone()[0]
    return stored_trades, stored_marks


def plant_signals(conninfo: str, days: int, per_hour: int) -> int:
    """Signals, positions and fills (see the module docstring); the number of signals."""
    step = HOUR_MS // per_hour
    signals, positions, fills = [], [], []
    for symbol, (_, price) in SHARES.items():
        for k in range(days * 24 * per_hour):
            t = START_MS + k * step + 7_000
            direction = "LONG" if k % 4 < 2 else "SHORT"
            sid = f"bench:h:binance:{symbol}:{t}:{direction}"
            signals.append((sid, symbol, ts(t), direction, Jsonb({}), price, price * 0.004))
            if k % 2:
                continue
            entry, exit_ = ("BUY", "SELL") if direction == "LONG" else ("SELL", "BUY")
            qty = 200 / (price * 0.004)
            positions.append((position_id(sid), sid, symbol, direction, price, qty, ts(t + 1_000)))
            fills.append(
                (
                    symbol,
                    client_order_id(sid, "entry"),
                    f"{sid}e",
                    entry,
                    price,
                    qty,
                    price * qty * 0.0005,
                    ts(t + 1_000),
                )
            )
            fills.append(
                (
                    symbol,
                    client_order_id(sid, "exit"),
                    f"{sid}x",
                    exit_,
                    price * 1.001,
                    qty,
                    price * qty * 0.0005,
                    ts(t + 1_200_000),
                )
            )
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO signals (signal_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time, "
            "direction, tier, score, factors, price, atr, risk_distance, sl_price, tp1_price, tp2_price, sl_r, tp1_r, "
            "tp2_r, is_flip) VALUES (%s, 'bench', '1', 'h', 'binance', %s, %s, %s, 'standard', 0.7, %s, %s, 1, %s, "
            "0, 0, 0, 1, 1, 2, false)",
            signals,
        )
        cur.executemany(
            "INSERT INTO positions (position_id, signal_id, strategy, strategy_version, config_hash, exchange, "
            "symbol, mode, event, direction, tier, entry_price, qty, r_usd, sl_price, tp1_price, tp2_price, fees_r, "
            "slippage_r, event_time) VALUES (%s, %s, 'bench', '1', 'h', 'binance', %s, 'paper', 'opened', %s, "
            "'standard', %s, %s, 200, 0, 0, 0, 0, 0, %s)",
            positions,
        )
        cur.executemany(
            "INSERT INTO fills (exchange, symbol, mode, client_order_id, exchange_order_id, trade_id, side, price, "
            "qty, fee, fee_asset, liquidity, event_time) VALUES ('binance', %s, 'paper', %s, %s, %s, %s, %s, %s, "
            "%s, 'USDT', 'TAKER', %s)",
            [(s, c, e, e, side, p, q, f, t) for s, c, e, side, p, q, f, t in fills],
        )
    return len(signals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--trades", type=int, default=6_000_000, help="trades in all, over the 4 symbols")
    ap.add_argument("--signals-per-hour", type=int, default=12, help="per symbol")
    args = ap.parse_args()
    params, config = LabelParams(), ExecutorConfig()
    with embedded_stack(with_broker=False) as (_, conninfo):
        t = time.perf_counter()
        trades, marks = load_market(conninfo, args.days, args.trades)
        signals = plant_signals(conninfo, args.days, args.signals_per_hour)
        print(
            f"loaded {trades:,} trades, {marks:,} mark prices, {signals:,} signals ({args.days} days x "
            f"{len(SHARES)} symbols) in {time.perf_counter() - t:.0f} s; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        end = START_MS + args.days * 86_400_000
        began = time.perf_counter()
        done = label_range(conninfo, ["paper"], START_MS, end, params=params, config=config, now_ms=end)
        wall = time.perf_counter() - began
        print(
            f"backfill of {args.days} days: {done.samples:,} samples, {done.written:,} labels in {wall:.1f} s "
            f"({done.written / wall:,.0f} labels/s), {done.pending:,} without data past the horizon",
            flush=True,
        )
        # the hourly pass at the end of the data: a watermark an hour earlier, the labels of the
        # samples that matured in that hour still to write
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("DELETE FROM outcome_labels WHERE horizon_time > %s", (ts(end - HOUR_MS),))
            conn.execute(
                "INSERT INTO outcome_label_progress VALUES ('paper', %s, %s)", (ts(end - HOUR_MS), ts(end - HOUR_MS))
            )
        began = time.perf_counter()
        hourly = run_due(conninfo, ["paper"], params=params, config=config, now_ms=end)["paper"]
        wall = time.perf_counter() - began
        print(
            f"hourly pass: {hourly.samples:,} samples read, {hourly.written:,} labels written in {wall:.2f} s; "
            f"{wall / HOURLY_TARGET_S:.3f} of the {HOURLY_TARGET_S:.0f} s target "
            f"({HOURLY_TARGET_S / wall:.0f}x under it); load {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
