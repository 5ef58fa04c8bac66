"""Broker round trip alone: the floor under the engine latency benchmark (the baseline of the engine latency target).

Why: ``bench_engine_latency`` measures producer receive → features consumed, which crosses the broker
twice (input, output). This measures one crossing with nothing else in the path, with the same
clients and settings: a librdkafka producer (``linger.ms`` 5, like the paced feed) publishing
``--rate`` records/s of ``--size`` bytes in 5-ms ticks, and either a librdkafka consumer
(``fetch.wait.max.ms`` 5, like the benchmark's features reader) or aiokafka (the engine worker's
client, ``fetch_max_wait_ms`` as the worker's default) reading them. Each record carries its
publication time; the figure is receive time minus that.

Run: ``.venv/bin/python -m benchmarks.bench_broker_latency [--rate 5000] [--seconds 30] [--client both]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.embedded_broker import broker
from stream_apps.faust_app.config import EngineAppConfig
from tapeflow_runtime.kafka_client import consumer_config, producer_config


def publish(bootstrap: str, topic: str, rate: float, seconds: float, size: int, partitions: int) -> None:
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 5}))
    padding = b"x" * max(size - 8, 0)
    start = last = time.monotonic()
    owed = 0.0
    n = 0
    while time.monotonic() - start < seconds:
        now = time.monotonic()
        owed += (now - last) * rate
        last = now
        while owed >= 1:
            producer.produce(topic, struct.pack("<d", time.time()) + padding, partition=n % partitions)
            n += 1
            owed -= 1
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)


def read_confluent(bootstrap: str, topic: str, partitions: int, until: float, skip_until: float) -> list[float]:
    consumer = Consumer(consumer_config(bootstrap, **{"fetch.wait.max.ms": 5, "fetch.min.bytes": 1}))
    consumer.assign([TopicPartition(topic, p, -2) for p in range(partitions)])
    out = []
    try:
        while time.monotonic() < until:
            for message in consumer.consume(1000, 0.05):
                if message.error():
                    continue
                sent = struct.unpack_from("<d", message.value())[0]
                if sent >= skip_until:
                    out.append((time.time() - sent) * 1000)
    finally:
        consumer.close()
    return out


def read_aiokafka(
    bootstrap: str, topic: str, partitions: int, until: float, skip_until: float, fetch_max_wait_ms: int
) -> list[float]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition as AioTP

    async def run() -> list[float]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        consumer.assign([AioTP(topic, p) for p in range(partitions)])
        out = []
        try:
            while time.monotonic() < until:
                batches = await consumer.getmany(timeout_ms=50, max_records=10_000)
                received = time.time()
                for records in batches.values():
                    for record in records:
                        sent = struct.unpack_from("<d", record.value)[0]
                        if sent >= skip_until:
                            out.append((received - sent) * 1000)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


def measure(bootstrap: str, client: str, args: argparse.Namespace) -> list[float]:
    topic = f"lat{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, args.partitions, 1)]).values():
        future.result(30)
    time.sleep(1.0)
    skip_until = time.time() + args.warmup
    feed = threading.Thread(
        target=publish,
        daemon=True,
        args=(bootstrap, topic, args.rate, args.warmup + args.seconds, args.size, args.partitions),
    )
    until = time.monotonic() + args.warmup + args.seconds + 2.0
    feed.start()
    if client == "confluent":
        latencies = read_confluent(bootstrap, topic, args.partitions, until, skip_until)
    else:
        latencies = read_aiokafka(bootstrap, topic, args.partitions, until, skip_until, args.fetch_max_wait_ms)
    feed.join(30)
    return latencies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="records/s published")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured duration per client")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds not counted at the start")
    ap.add_argument("--size", type=int, default=120, help="record value bytes (a trade record is ~100)")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--client", choices=("confluent", "aiokafka", "both"), default="both")
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=EngineAppConfig.model_fields["fetch_max_wait_ms"].default,
        help="aiokafka fetch wait (the engine worker's default)",
    )
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start the embedded Kafka)")
    args = ap.parse_args()
    clients = ("confluent", "aiokafka") if args.client == "both" else (args.client,)
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "stack") as bootstrap:
        for client in clients:
            lat = np.asarray(measure(bootstrap, client, args))
            if not len(lat):
                print(f"{client}: nothing received")
                continue
            p50, p90, p99 = np.percentile(lat, [50, 90, 99])
            print(
                f"{client:9s} load={os.getloadavg()[0]:.2f} records={len(lat):,}  publish -> receive (ms): "
                f"p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {lat.max():.1f}"
            )


if __name__ == "__main__":
    main()
