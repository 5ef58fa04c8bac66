"""The embedded Kafka's resident memory with a day of BTCUSDT held (target ≤ 700 MB, DESIGN.md section 7).

A day of BTCUSDT aggTrades is 2-3.5 M trades (25-40 trades/s). This writes ``--trades`` Avro trade
records (the producer's own encoding, one key, lz4 as the producers send them, ``--batch`` records per
produce call flushed like a live producer's linger) into ``md.trades`` of a fresh embedded Kafka, reads
them all back once (a warm-up or `backtest --source topics` does), and reports the broker's RSS (and
USS: its own pages, without the shared libraries) idle before, after the writes and after the read,
and the log's size on disk. Kafka holds records on disk and in the OS page cache, which RSS does not
count, so the figure should be the JVM's heap and metadata, flat in the data held.

Run: ``.venv/bin/python -m benchmarks.bench_broker_memory --trades 3000000``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.catalogue import topic
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow.stack.broker import log_size_mb
from tapeflow_runtime.kafka_client import consumer_config, ensure_topics, producer_config

TARGET_MB = 700.0
T0 = 1_704_067_200_000


def broker_memory(home: Path) -> tuple[float, float]:
    """(RSS, USS) in MB of the broker JVM running under ``home``."""
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "kafka.Kafka" in cmd and str(home) in cmd:
            info = proc.memory_full_info()
            return info.rss / 1e6, info.uss / 1e6
    raise RuntimeError("broker process not found")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trades", type=int, default=3_000_000, help="trades to hold (a BTCUSDT day: 2-3.5 M)")
    args = ap.parse_args()

    from benchmarks.embedded_broker import broker

    home = Path(tempfile.mkdtemp(prefix="bench-broker-memory-"))
    serde = AvroSerde(FileSchemaRegistry())
    try:
        with broker(None, home) as bootstrap:
            ensure_topics(bootstrap, specs=[topic("md.trades")])
            time.sleep(5)  # settle after start-up
            idle = broker_memory(home)
            producer = Producer(producer_config(bootstrap, **{"linger.ms": 25}))
            t0 = time.monotonic()
            for i in range(args.trades):
                value = serde.encode(
                    "md.trades",
                    {
                        "exchange": "binance",
                        "symbol": "BTCUSDT",
                        "agg_id": 2_000_000_000 + i,
                        "price": 42_000.0 + (i % 997) * 0.1,
                        "qty": 0.001 * (1 + i % 13),
                        "first_trade_id": 4_000_000_000 + 2 * i,
                        "last_trade_id": 4_000_000_001 + 2 * i,
                        "event_time": T0 + i * 30,
                        "trade_time": T0 + i * 30,
                        "receive_time": T0 + i * 30 + 4,
                        "taker_side": "SELL" if i % 3 else "BUY",
                    },
                )
                while True:
                    try:
                        producer.produce("md.trades", key=b"binance:BTCUSDT", value=value)
                        break
                    except BufferError:
                        producer.poll(0.05)
                if i % 10_000 == 0:
                    producer.poll(0)
            assert producer.flush(120) == 0
            del producer  # its connections close before the broker stops
            write_s = time.monotonic() - t0
            written = broker_memory(home)

            consumer = Consumer(consumer_config(bootstrap, **{"enable.partition.eof": True}))
            parts = consumer.list_topics("md.trades", timeout=10).topics["md.trades"].partitions
            consumer.assign([TopicPartition("md.trades", p, -2) for p in parts])
            read, ends, t0 = 0, set(), time.monotonic()
            while len(ends) < len(parts):
                for m in consumer.consume(10_000, 1.0):
                    if m.error():
                        ends.add(m.partition())
                    else:
                        read += 1
            consumer.close()
            read_s = time.monotonic() - t0
            after_read = broker_memory(home)
            disk = log_size_mb(home / "kafka" / "data")
    finally:
        shutil.rmtree(home, ignore_errors=True)

    assert read == args.trades, f"read {read} of {args.trades}"
    print(
        f"trades held: {args.trades:,} ({args.trades / 86_400:.1f}/s over a day), log on disk {disk:.0f} MB "
        f"({disk * 1e6 / args.trades:.0f} B/trade)"
    )
    print(
        f"written in {write_s:.1f} s ({args.trades / write_s:,.0f}/s), read back in {read_s:.1f} s "
        f"({args.trades / read_s:,.0f}/s)"
    )
    for label, (rss, uss) in (("idle, empty", idle), ("after the writes", written), ("after reading all", after_read)):
        print(
            f"broker {label:<18} RSS {rss:6.0f} MB  USS {uss:6.0f} MB   RSS/target {rss / TARGET_MB:.2f} "
            f"(target ≤ {TARGET_MB:.0f} MB)"
        )


if __name__ == "__main__":
    main()
