"""The trade autopsy of one closed trade, end to end (load from PostgreSQL + compute), against its
200 ms target.

Plants in an embedded PostgreSQL it migrates itself (the server's layout: hypertables where it has
TimescaleDB, ``--plain`` for time partitions) a day of BTCUSDT-like trades at ``--rate`` a second
(generated server-side: a slow swing of ~0.7 %, a faster wiggle and tick noise around 62,000), a mark
price every second with 8-hourly funding, ``--peers`` closed trades of the strategy for the peer
groups, and one real paper trade: a signal at noon whose position the executor (paper broker, 2 bp
slippage) opens and closes on the stored trades, its orders, fills and position events written with
the sink's row mappings. The autopsy then reads 4 h (the strategy's timeout) of that day's trades for
the counterfactuals, the worst case of a position that runs to its timeout.

Prints each run's time, p50/p95 (load and compute apart too) and the ratio p95 / 200 ms. ``--no-bars``
measures a database without the engine's 1-minute bars, where the whole path is read.

    .venv/bin/python -m benchmarks.bench_autopsy --rate 20 --runs 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks.embedded_stack import embedded_stack
from execution.broker import Broker
from execution.config import ExecutorConfig, PaperFills
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from review.autopsy import build_autopsy
from review.autopsy_db import load_facts
from sinks.partitions import ensure_partitions
from sinks.tables import table_for_topic, write_rows

DAY = datetime(2026, 3, 2, tzinfo=UTC)
DAY_MS = int(DAY.timestamp() * 1000)
TARGET_MS = 200.0
STRATEGY, SYMBOL = "v53", "BTCUSDT"
TIMEOUT_MS = 240 * 60_000
H8 = 8 * 3600 * 1000


def plant_market(conn: psycopg.Connection, rate: int) -> int:
    """A day of trades and a mark price a second; returns the trade count."""
    n = 86_400 * rate
    for table in ("trades", "mark_prices"):
        ensure_partitions(conn, table, DAY - timedelta(days=1), DAY + timedelta(days=2))
    step = 1.0 / rate
    for lo in range(0, n, 500_000):
        conn.execute(
            "INSERT INTO trades SELECT 'binance', %s, i,"
            " round((62000 + 420 * sin(i / (9000.0 * %s)) + 35 * sin(i / (140.0 * %s)) + (i %% 7) * 0.1)::numeric, 1),"
            " 0.001 * (1 + i %% 40), i, i, t, t, t, CASE WHEN i %% 3 = 0 THEN 'SELL' ELSE 'BUY' END"
            " FROM generate_series(%s::bigint, %s::bigint) AS i,"
            " LATERAL (SELECT %s::timestamptz + i * %s * interval '1 second' AS t) AS tt",
            (SYMBOL, rate, rate, lo, min(lo + 500_000, n) - 1, DAY, step),
        )
        conn.commit()
    conn.execute(
        "INSERT INTO mark_prices SELECT 'binance', %s, 62000 + 420 * sin(s / 9000.0), 62000, 0.0001,"
        " %s::timestamptz + ((s / 28800) + 1) * interval '8 hours', t, t"
        " FROM generate_series(0, 86399) AS s, LATERAL (SELECT %s::timestamptz + s * interval '1 second' AS t) AS tt",
        (SYMBOL, DAY, DAY),
    )
    conn.commit()
    ensure_partitions(conn, "bars_1m", DAY - timedelta(days=1), DAY + timedelta(days=2))
    conn.execute(  # the engine's 1-minute bars of those trades
        "INSERT INTO bars_1m SELECT exchange, symbol, m, m + interval '59.999 seconds',"
        " (array_agg(price ORDER BY agg_id))[1], max(price), min(price), (array_agg(price ORDER BY agg_id DESC))[1],"
        " sum(qty), 0, 0, sum(qty * price), sum(qty * price) / sum(qty), count(*), min(agg_id), max(agg_id)"
        " FROM (SELECT *, date_trunc('minute', trade_time) AS m FROM trades) t GROUP BY exchange, symbol, m"
    )
    conn.commit()
    return n


def plant_peers(conn: psycopg.Connection, count: int) -> None:
    """`count` closed trades of the strategy (opened + closed events, their signals) over the week before."""
    for kind in ("opened", "closed"):
        conn.execute(
            "INSERT INTO positions (position_id, signal_id, strategy, strategy_version, config_hash, exchange, symbol,"
            " mode, event, direction, tier, entry_price, qty, r_usd, sl_price, tp1_price, tp2_price, exit_price,"
            " exit_reason, pnl_r_gross, pnl_r_net, fees_r, slippage_r, funding_r, event_time, timeout_ms)"
            " SELECT 'peer-' || k, 'peer-sig-' || k, %s, '1', 'h', 'binance', %s, 'paper', %s,"
            " CASE WHEN k %% 3 = 0 THEN 'SHORT' ELSE 'LONG' END, 'standard', 62000, 0.8, 200 * (1 + (k %% 5) * 0.2),"
            " 61750, 62250, 62500, 62100, (ARRAY['sl','tp','timeout','sl_be'])[1 + k %% 4],"
            " ((k %% 9) - 3) * 0.4, ((k %% 9) - 3) * 0.4 - 0.1, 0.08, 0.02, 0,"
            " %s::timestamptz - (k * interval '15 minutes') + CASE WHEN %s = 'closed' THEN (k %% 90) * interval '1 minute' ELSE interval '0' END,"
            " %s FROM generate_series(1, %s) AS k",
            (STRATEGY, SYMBOL, kind, DAY, kind, TIMEOUT_MS, count),
        )
    conn.execute(
        "INSERT INTO signals (signal_id, strategy, strategy_version, config_hash, exchange, symbol, eval_time, direction,"
        " tier, score, factors, price, atr, risk_distance, sl_price, tp1_price, tp2_price, sl_r, tp1_r, tp2_r, is_flip)"
        " SELECT 'peer-sig-' || k, %s, '1', 'h', 'binance', %s, %s::timestamptz - (k * interval '15 minutes'), 'LONG',"
        " 'standard', 70, jsonb_build_object('atr_percentile', (k * 37) %% 100), 62000, 160, 250, 61750, 62250, 62500,"
        " 1, 1, 2, false FROM generate_series(1, %s) AS k",
        (STRATEGY, SYMBOL, DAY, count),
    )
    conn.commit()


def _signal(at_ms: int, price: float) -> dict[str, Any]:
    risk = 250.0
    return {
        "signal_id": f"{STRATEGY}:h:binance:{SYMBOL}:{at_ms}:LONG",
        "strategy": STRATEGY,
        "strategy_version": "1",
        "config_hash": "h",
        "exchange": "binance",
        "symbol": SYMBOL,
        "eval_time": at_ms,
        "direction": "LONG",
        "tier": "standard",
        "score": 78.0,
        "factors": {"flow": 32.0, "cvd": 24.0, "atr_percentile": 71.0},
        "price": price,
        "atr": risk / 1.5,
        "risk_distance": risk,
        "sl_price": price - risk,
        "tp1_price": price + risk,
        "tp2_price": price + 2 * risk,
        "sl_r": 1.0,
        "tp1_r": 1.0,
        "tp2_r": 2.0,
        "is_flip": False,
        "timeout_ms": TIMEOUT_MS,
    }


def plant_trade(conn: psycopg.Connection) -> str:
    """The executor trades a signal at noon over the stored trades; its records are stored. Returns
    the position id."""
    at = DAY_MS + 12 * 3600 * 1000
    rows = conn.execute(
        "SELECT agg_id, price, trade_time FROM trades WHERE symbol = %s AND trade_time >= %s AND trade_time < %s"
        " ORDER BY agg_id",
        (
            SYMBOL,
            datetime.fromtimestamp((at - 1000) / 1000, UTC),
            datetime.fromtimestamp((at + TIMEOUT_MS + 600_000) / 1000, UTC),
        ),
    ).fetchall()
    marks = conn.execute(
        "SELECT mark_price, funding_rate, next_funding_time, event_time FROM mark_prices"
        " WHERE symbol = %s AND event_time >= %s AND event_time < %s ORDER BY event_time",
        (
            SYMBOL,
            datetime.fromtimestamp((at - 60_000) / 1000, UTC),
            datetime.fromtimestamp((at + TIMEOUT_MS + 600_000) / 1000, UTC),
        ),
    ).fetchall()
    cfg = ExecutorConfig(paper=PaperFills(slippage_bps=2.0))
    sink = ListSink()
    ex = Executor(cfg, "paper", _broker(cfg), sink, at - 1000)
    signal = None
    m = 0
    for agg, price, ts in rows:
        t = int(ts.timestamp() * 1000)
        while m < len(marks) and marks[m][3].timestamp() * 1000 <= t:  # a mark goes before trades of its millisecond
            mark_price, rate, nft, mt = marks[m]
            mt_ms = int(mt.timestamp() * 1000)
            ex.on_mark(
                {
                    "exchange": "binance",
                    "symbol": SYMBOL,
                    "mark_price": mark_price,
                    "funding_rate": rate,
                    "next_funding_time": int(nft.timestamp() * 1000),
                    "event_time": mt_ms,
                },
                mt_ms,
            )
            m += 1
        if signal is None and t >= at:
            signal = _signal(at, price)
            assert ex.on_signal(signal, at).allowed
        ex.on_trade(
            {
                "exchange": "binance",
                "symbol": SYMBOL,
                "agg_id": agg,
                "price": price,
                "qty": 0.01,
                "trade_time": t,
                "taker_side": "BUY",
            },
            t,
        )
        if signal is not None and any(r["event"] == "closed" for r in sink.of("positions")):
            break
    assert signal is not None
    for topic, records in (
        ("signals", [signal]),
        ("orders", sink.of("orders")),
        ("fills", sink.of("fills")),
        ("positions", sink.of("positions")),
    ):
        spec = table_for_topic(topic)
        write_rows(conn, spec, [spec.to_row(r) for r in records])
    conn.commit()
    closed = next(r for r in sink.of("positions") if r["event"] == "closed")
    print(f"planted trade {closed['position_id']}: {closed['exit_reason']}, net {closed['pnl_r_net']:+.3f}R")
    return str(closed["position_id"])


def _broker(cfg: ExecutorConfig) -> Broker:
    return PaperBroker(cfg.fees, cfg.paper)  # type: ignore[return-value]  # its mode is typed as a plain str


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=20, help="trades a second over the day")
    ap.add_argument("--peers", type=int, default=2000, help="closed trades of the strategy for the peers")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--plain", action="store_true", help="time partitions instead of hypertables")
    ap.add_argument("--no-bars", action="store_true", help="no bars_1m: every minute of the path is read whole")
    args = ap.parse_args()
    with embedded_stack(with_broker=False, engine_extension=None if args.plain else "timescaledb") as (_, owner):
        with psycopg.connect(owner) as conn:
            t0 = time.perf_counter()
            n = plant_market(conn, args.rate)
            plant_peers(conn, args.peers)
            pid = plant_trade(conn)
            if args.no_bars:
                conn.execute("DELETE FROM bars_1m")
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")  # what autovacuum does to a day-old partition (BRIN summaries)
            conn.autocommit = False
            print(f"planted {n:,} trades, {args.peers} peers in {time.perf_counter() - t0:.0f} s")
        totals, loads, computes = [], [], []
        with psycopg.connect(owner) as conn:
            for run in range(args.runs + 1):
                t = time.perf_counter()
                facts = load_facts(conn, pid)
                loaded = time.perf_counter()
                a = build_autopsy(facts)
                done = time.perf_counter()
                conn.rollback()
                if run == 0:  # the first run warms the server's caches and Python's imports: not counted
                    print(
                        f"path {len(facts.path):,} trades, {len(facts.marks)} marks, {a.peers.count} peers;"
                        f" x1 reproduces the trade: {a.replay_matches}"
                    )
                    print(json.dumps(a.narrative, indent=1))
                    continue
                totals.append((done - t) * 1000)
                loads.append((loaded - t) * 1000)
                computes.append((done - loaded) * 1000)
                print(f"run {run}: {totals[-1]:.1f} ms (load {loads[-1]:.1f}, compute {computes[-1]:.1f})", flush=True)
    p50, p95 = statistics.median(totals), _pct(totals, 0.95)
    print(
        f"autopsy end to end: p50 {p50:.1f} ms, p95 {p95:.1f} ms (load p50 {statistics.median(loads):.1f},"
        f" compute p50 {statistics.median(computes):.1f}); target {TARGET_MS:.0f} ms: ratio p95/target {p95 / TARGET_MS:.2f}"
    )


if __name__ == "__main__":
    main()
