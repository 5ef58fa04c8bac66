"""The features table at live cadence for 20 symbols: does the sink keep up, are symbol-day queries fast?

Run: .venv/bin/python -m benchmarks.bench_features [--symbols 20] [--seconds 600] [--hours 2]

Live cadence: every closed second with trades, each of 3 strategies writes one row per symbol, so 20
symbols make 60 rows/s (about 5.2M rows a day). Part 1 produces `--seconds` of that to the
features topic and times the real sink (record-by-record path: the records carry maps, which the
columnar path does not take) until every row is committed; ratio to the live rate.

Part 2 fills the table with `--hours` of every symbol at that cadence, interleaved as live (one
second of all symbols after the other), VACUUMs it as autovacuum would, then times the queries a
backtest or a report runs for one symbol over the whole span (median of 5, warm) and names the
access path. A symbol-day is 24/`--hours` times the rows of that span; the index scans' cost grows
with the rows returned, not with the table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg
from confluent_kafka import Producer
from psycopg.types.json import Jsonb

from benchmarks.embedded_stack import embedded_stack
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.consumer import SinkConfig, TopicSink
from sinks.partitions import ensure_partitions
from sinks.tables import FEATURES, write_rows
from tapeflow_runtime.kafka_client import ensure_topics, producer_config

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
STRATEGIES = ("v51", "v52", "v53")
INPUT_NAMES = [f"in_{k:02d}" for k in range(40)]  # the engine's inputs map has ~40 numbers
LAYERS = ("direction", "crowding", "environment", "confirmation", "auxiliary", "funding", "liquidation")


def symbols(n: int) -> list[str]:
    return [f"SYM{k:02d}USDT" for k in range(n)]


def feature(symbol: str, strategy: str, t_ms: int, rng: random.Random) -> dict:
    scores = {name: float(rng.randint(-3, 3)) for name in LAYERS}
    return {
        "evaluation_id": f"{strategy}:abc123:binance:{symbol}:{t_ms}",
        "strategy": strategy,
        "strategy_version": "1",
        "config_hash": "abc123",
        "exchange": "binance",
        "symbol": symbol,
        "eval_time": t_ms,
        "inputs": {k: rng.gauss(0, 1) * 1000 for k in INPUT_NAMES},
        "layer_scores": scores,
        "score": sum(scores.values()),
        "direction": rng.choice((None, "LONG", "SHORT")),
        "gate": None,
        "block_reason": rng.choice(("below_entry", "cooldown", None)),
    }


def sink_at_cadence(bootstrap: str, conninfo: str, n_symbols: int, seconds: int) -> tuple[int, float]:
    serde = AvroSerde(FileSchemaRegistry())
    rng = random.Random(5)
    t0 = int(DAY0.timestamp() * 1000)
    p = Producer(producer_config(bootstrap, **{"queue.buffering.max.messages": 2_000_000}))
    n = 0
    for s in range(seconds):
        for sym in symbols(n_symbols):
            for strategy in STRATEGIES:
                p.produce(
                    "bench.features",
                    key=f"binance:{sym}".encode(),
                    value=serde.encode("features", feature(sym, strategy, t0 + 1000 * s, rng)),
                )
                n += 1
        p.poll(0)
    p.flush(120)
    sink = TopicSink(
        SinkConfig(topics=["features"], topic_prefix="bench.", group_id="bench.features-sink"),
        bootstrap,
        conninfo,
        serde,
    )
    done = threading.Event()
    thread = threading.Thread(target=sink.run, kwargs={"should_stop": done.is_set})
    thread.start()
    while not sink.assignment:
        time.sleep(0.005)
    t = time.perf_counter()
    while sink.metrics.records._value.get() < n and time.perf_counter() - t < 600:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t
    done.set()
    thread.join(60)
    return n, elapsed


def fill_interleaved(conninfo: str, n_symbols: int, hours: float) -> int:
    rng = random.Random(9)
    rows, total = [], 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_partitions(conn, "features", DAY0, DAY0 + timedelta(days=2))  # hypertables: nothing to do

        def flush():
            nonlocal rows, total
            with conn.transaction():
                total += write_rows(conn, FEATURES, rows)
            rows = []

        for s in range(int(hours * 3600)):
            ts = DAY0 + timedelta(seconds=s)
            for sym in symbols(n_symbols):
                inputs = Jsonb({k: rng.gauss(0, 1) * 1000 for k in INPUT_NAMES})
                for strategy in STRATEGIES:
                    scores = {name: float(rng.randint(-3, 3)) for name in LAYERS}
                    rows.append(
                        (
                            f"{strategy}:abc123:binance:{sym}:{int(ts.timestamp() * 1000)}",
                            strategy,
                            "1",
                            "abc123",
                            "binance",
                            sym,
                            ts,
                            inputs,
                            Jsonb(scores),
                            float(sum(scores.values())),
                            None,
                            None,
                            "below_entry",
                        )
                    )
            if len(rows) >= 30_000:
                flush()
        if rows:
            flush()
        conn.execute("VACUUM ANALYZE features")
    return total


QUERIES = {
    "rows (eval_time, strategy, score, direction, gate, block_reason)": "SELECT eval_time, strategy, score, direction, gate, block_reason FROM features "
    "WHERE exchange = 'binance' AND symbol = %s AND eval_time >= %s AND eval_time < %s",
    "per strategy (count, avg score, signals)": "SELECT strategy, count(*), avg(score), count(*) FILTER (WHERE block_reason IS NULL) FROM features "
    "WHERE exchange = 'binance' AND symbol = %s AND eval_time >= %s AND eval_time < %s GROUP BY strategy",
    "one strategy's input series (inputs->>'in_00', from the heap)": "SELECT eval_time, (inputs->>'in_00')::float8 FROM features "
    "WHERE exchange = 'binance' AND symbol = %s AND strategy = 'v53' AND eval_time >= %s AND eval_time < %s",
}


def time_queries(conninfo: str, symbol: str, hours: float) -> list[tuple[str, int, float, str]]:
    out = []
    with psycopg.connect(conninfo) as conn:
        for name, q in QUERIES.items():
            args = (symbol, DAY0, DAY0 + timedelta(hours=hours))
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + q, args).fetchall())
            scans = [ln.strip().split("  (")[0].lstrip("-> ") for ln in plan.splitlines() if "Scan" in ln]
            access = "; ".join(dict.fromkeys(scans))
            times, n = [], 0
            for _ in range(6):
                t = time.perf_counter()
                n = len(conn.execute(q, args).fetchall())
                times.append(time.perf_counter() - t)
            out.append((name, n, statistics.median(times[1:]), access))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--hours", type=float, default=2.0)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with embedded_stack() as (bootstrap, conninfo):
        ensure_topics(bootstrap, prefix="bench.")
        n, elapsed = sink_at_cadence(bootstrap, conninfo, args.symbols, args.seconds)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("TRUNCATE features")
        t = time.perf_counter()
        total = fill_interleaved(conninfo, args.symbols, args.hours)
        fill_s = time.perf_counter() - t
        with psycopg.connect(conninfo) as conn:
            size = conn.execute(
                "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = 'features'::regclass"
            ).fetchone()[0]
        results = time_queries(conninfo, symbols(1)[0], args.hours)
    live = args.symbols * len(STRATEGIES)
    rate = n / elapsed
    print(
        f"sink, features topic: {n:,} rows ({args.seconds} s of {args.symbols} symbols x {len(STRATEGIES)} "
        f"strategies) in {elapsed:.2f} s = {rate:,.0f} rows/s; live cadence {live} rows/s: ratio {rate / live:,.0f}x"
    )
    print(
        f"table for queries: {total:,} rows ({args.symbols} symbols x {args.hours:g} h, interleaved), "
        f"{int(size) / 2**20:,.0f} MiB, written at {total / fill_s:,.0f} rows/s"
    )
    per_day = 24 / args.hours
    print(f"one symbol over {args.hours:g} h (x{per_day:g} for a symbol-day):")
    for name, rows, seconds, access in results:
        print(f"  {name:<66} {rows:>8,} rows {seconds * 1000:>8.1f} ms  ~{seconds * per_day:.2f} s/day  ({access})")
    print(f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
