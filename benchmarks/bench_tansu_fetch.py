"""How the embedded broker (Tansu, memory storage) answers fetches as a partition fills with small batches.

Why this exists: reading 135,618 replayed trades took 249 s in the backtest parity test, and a copy
of the same records written in large batches took 7 s. The cause is Tansu's, not ours: assembling a
fetch answer costs time that grows with the number of record batches in the partition, and when
that takes longer than the fetch request's max wait (``fetch.wait.max.ms``) Tansu answers empty. A
consumer with a short wait then makes no progress at all, at the head or at the tail.

What it measures, on one partition that grows by single-record batches (what a producer sends when
trades arrive slower than its linger): the latency of a new record for a consumer at the tail, with
the live consumers' fetch wait (``FETCH_CONFIG``, 10 ms) and with the history readers' one
(``HISTORY_FETCH_CONFIG``, 500 ms); "lost" means not delivered within 10 s. Baseline: the same
consumer on a partition of 1,000 batches. There is no target: it records a limit of the embedded
broker (the compose stack runs Apache Kafka, where none of this applies).

Run: ``.venv/bin/python -m benchmarks.bench_tansu_fetch [--sizes 1000,10000,20000,40000]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.embedded_broker import broker


def tail_latencies(bootstrap: str, topic: str, start_offset: int, wait_ms: int, producer, probes: int) -> list[float]:
    """Milliseconds from produce to poll for `probes` single records (inf: not delivered in 10 s)."""
    from confluent_kafka import Consumer, TopicPartition

    from tapeflow_runtime.kafka_client import consumer_config

    consumer = Consumer(consumer_config(bootstrap, **{"fetch.wait.max.ms": wait_ms}))
    consumer.assign([TopicPartition(topic, 0, start_offset)])
    for _ in range(4):
        consumer.poll(0.25)
    out = []
    for _ in range(probes):
        sent = time.perf_counter()
        producer.produce(topic, key=b"probe", value=b"p", partition=0)
        producer.flush(5)
        latency = float("inf")
        while time.perf_counter() - sent < 10:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                latency = (time.perf_counter() - sent) * 1000
                break
        out.append(latency)
    consumer.close()
    return out


def main() -> None:
    from confluent_kafka import Producer

    from schemas.catalogue import TOPICS
    from tapeflow_runtime.kafka_client import (
        FETCH_CONFIG,
        HISTORY_FETCH_CONFIG,
        ensure_topics,
        producer_config,
    )

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,20000,40000", help="batches in the partition, ascending")
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--bootstrap", default=None, help="a running broker (default: an embedded Tansu)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    waits = {"live (FETCH_CONFIG)": FETCH_CONFIG["fetch.wait.max.ms"],
             "history (HISTORY_FETCH_CONFIG)": HISTORY_FETCH_CONFIG["fetch.wait.max.ms"]}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as home, broker(args.bootstrap, Path(home)) as bootstrap:
        ensure_topics(bootstrap, prefix="bench.", specs=[TOPICS["md.trades"]])
        topic = "bench.md.trades"
        producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
        written = 0
        baseline: dict[str, float] = {}
        for size in sizes:
            began = time.perf_counter()
            while written < size:  # one record per produce request: one batch each
                producer.produce(topic, key=b"k", value=b"x" * 100, partition=0)
                producer.flush(10)
                written += 1
            print(f"{size:,} batches in the partition (filled in {time.perf_counter() - began:.1f} s)")
            for name, wait in waits.items():
                lat = tail_latencies(bootstrap, topic, written, wait, producer, args.probes)
                written += args.probes
                delivered = [x for x in lat if x != float("inf")]
                median = statistics.median(delivered) if delivered else float("inf")
                baseline.setdefault(name, median)
                ratio = median / baseline[name] if baseline[name] not in (0, float("inf")) else float("nan")
                print(f"  {name}, wait {wait} ms: {len(delivered)}/{len(lat)} delivered, median "
                      f"{median:.0f} ms, {ratio:.1f}x the {sizes[0]:,}-batch baseline")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
