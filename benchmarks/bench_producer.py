"""Producer hot path: raw aggTrade frame → JSON parse → normalise → sequence → Avro encode → produce.

Run: .venv/bin/python -m benchmarks.bench_producer [--frames 300000]
Target (DESIGN.md §7): ≥ 100,000 aggTrade msgs/s per core. Prints wall-clock and CPU-time rates; the
per-core figure is frames / process CPU seconds of this process (librdkafka's threads included), so
it stays honest on a loaded 2-core machine. Produces into a real broker, the embedded Apache Kafka.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import orjson

from benchmarks.embedded_broker import start_broker
from producers.base.sequencer import AggTradeSequencer
from producers.binance.parse import parse_agg_trade
from producers.metrics import ProducerMetrics
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import ensure_topics
from tapeflow_runtime.publisher import Publisher


def frames(n: int) -> list[bytes]:
    out = []
    t0 = 1_700_000_000_000
    for i in range(n):
        data = {
            "e": "aggTrade",
            "E": t0 + i,
            "s": "BTCUSDT",
            "a": 1_000_000 + i,
            "p": f"{67000 + (i % 500) * 0.1:.1f}",
            "q": f"{0.001 * (1 + i % 97):.3f}",
            "f": 5_000_000 + 2 * i,
            "l": 5_000_001 + 2 * i,
            "T": t0 + i,
            "m": bool(i % 2),
        }
        out.append(orjson.dumps({"stream": "btcusdt@aggTrade", "data": data}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", type=int, default=300_000)
    args = ap.parse_args()
    raw = frames(args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        sup = start_broker(Path(tmp))
        try:
            bootstrap = sup.addresses["broker"]
            ensure_topics(bootstrap, prefix="bench.")
            publisher = Publisher(
                bootstrap,
                AvroSerde(FileSchemaRegistry()),
                ProducerMetrics(),
                topic_prefix="bench.",
                **{"queue.buffering.max.messages": 1_000_000, "linger.ms": 20},
            )
            seq = AggTradeSequencer("BTCUSDT")
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for i, frame in enumerate(raw):
                msg = orjson.loads(frame)
                for trade in seq.offer(parse_agg_trade(msg["data"], 1_700_000_000_000 + i)):
                    publisher.publish("md.trades", "binance:BTCUSDT", trade, trade["receive_time"])
            undelivered = publisher.flush(60)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            sup.stop_all()
    n = args.frames
    print(f"frames: {n:,}   delivered: {publisher.delivered:,}   undelivered: {undelivered}")
    print(f"wall-clock: {n / wall:>10,.0f} msgs/s  ({wall:.2f} s)")
    print(f"per core (process CPU): {n / cpu:>10,.0f} msgs/s  ({cpu:.2f} CPU s)")
    print(f"target 100,000 msgs/s/core: ratio {n / cpu / 100_000:.2f}")


if __name__ == "__main__":
    main()
