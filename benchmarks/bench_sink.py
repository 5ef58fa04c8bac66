"""Sink throughput: md.trades records in a topic → committed rows in PostgreSQL, one process.

Run: .venv/bin/python -m benchmarks.bench_sink [--rows 300000] [--batch 50000]
Target (DESIGN.md §7, issue 5): ≥ 300,000 rows/s per process for trades. Embedded Tansu and an
embedded PostgreSQL (default durability settings) on this machine. The records are produced first;
the clock runs from the sink's start until every row is committed. Also prints the decode-only
and write-only rates so the bottleneck is visible.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.consumer import SinkConfig, TopicSink
from sinks.migrate import migrate
from sinks.tables import TRADES, write_rows
from tapeflow.stack.broker import TansuBroker
from tapeflow.stack.postgres import EmbeddedPostgres
from tapeflow.stack.supervisor import Supervisor
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.paths import StackPaths
from tapeflow_runtime.settings import Settings

T0 = 1_704_067_200_000


def records(n: int) -> list[dict]:
    return [{"exchange": "binance", "symbol": "BTCUSDT", "agg_id": i, "price": 42_000.0 + (i % 997) * 0.1,
             "qty": 0.001 * (1 + i % 13), "first_trade_id": 2 * i, "last_trade_id": 2 * i + 1,
             "event_time": T0 + i, "trade_time": T0 + i, "receive_time": T0 + i + 3,
             "taker_side": "SELL" if i % 3 else "BUY"} for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=50_000)
    args = ap.parse_args()
    serde = AvroSerde(FileSchemaRegistry())
    recs = records(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        paths = StackPaths(Path(tmp))
        paths.ensure()
        settings = Settings(home=Path(tmp), broker=None, database_url=None)
        pg = EmbeddedPostgres(settings, paths)
        sup = Supervisor(settings, paths, say=lambda m: None, services=[TansuBroker(settings, paths), pg], steps=[])
        sup.start_all()
        try:
            bootstrap = sup.addresses["broker"]
            conninfo = pg.admin_conninfo(sup.addresses["database"], "tapeflow")
            migrate(conninfo)
            ensure_topics(bootstrap, prefix="bench.")
            p = Producer(producer_config(bootstrap, **{"queue.buffering.max.messages": 2_000_000}))
            values = [serde.encode("md.trades", r) for r in recs]
            for v in values:
                p.produce("bench.md.trades", key=b"binance:BTCUSDT", value=v)
                p.poll(0)
            p.flush(60)

            t = time.perf_counter()
            for v in values:
                serde.decode(v)
            decode_rate = args.rows / (time.perf_counter() - t)
            rows = [TRADES.to_row(r) for r in recs[:100_000]]
            with psycopg.connect(conninfo) as conn:
                with conn.transaction():
                    conn.execute("SELECT tapeflow_ensure_partitions('trades', %s::timestamptz, %s::timestamptz)",
                                 ("2024-01-01", "2024-01-02"))
                t = time.perf_counter()
                with conn.transaction():
                    write_rows(conn, TRADES, rows)
                write_rate = len(rows) / (time.perf_counter() - t)
                conn.execute("TRUNCATE trades")
                conn.commit()

            sink = TopicSink(SinkConfig(topics=["md.trades"], topic_prefix="bench.", batch_rows=args.batch),
                             bootstrap, conninfo, serde)
            done = threading.Event()

            def committed() -> int:
                with psycopg.connect(conninfo) as conn:
                    return conn.execute("SELECT count(*) FROM trades").fetchone()[0]

            thread = threading.Thread(target=sink.run, kwargs={"should_stop": done.is_set})
            t_start = time.perf_counter()
            thread.start()
            while not sink.assignment and time.perf_counter() - t_start < 60:
                time.sleep(0.01)
            t = time.perf_counter()  # steady state: from the moment the group gave us the partitions
            join_s = t - t_start
            while committed() < args.rows and time.perf_counter() - t < 300:
                time.sleep(0.05)
            elapsed = time.perf_counter() - t
            done.set()
            thread.join(60)
            n = committed()
        finally:
            sup.stop_all()
    print(f"rows committed: {n:,} of {args.rows:,} in {elapsed:.2f} s after a {join_s:.2f} s group join "
          f"(batch {args.batch:,})")
    print(f"sink end to end:   {n / elapsed:>10,.0f} rows/s   (target 300,000: ratio {n / elapsed / 300_000:.2f})")
    print(f"Avro decode only:  {decode_rate:>10,.0f} rows/s")
    print(f"COPY+insert only:  {write_rate:>10,.0f} rows/s")


if __name__ == "__main__":
    main()
