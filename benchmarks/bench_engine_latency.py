"""Pipeline latency of the engine worker at a live trade rate (issue "Signal engine" benchmark (c)).

Target (DESIGN §7): receive → signal p99 ≤ 200 ms at 5,000 trades/s.

What runs: the embedded Kafka (or ``--bootstrap``), one engine worker as its own process
(``python -m stream_apps.faust_app``, shipped strategies), and in this process a paced producer that
publishes live market data — ``--rate`` trades/s spread over 4 symbols with trade time = receive
time = the wall clock at publication, a book snapshot every 250 ms and a mark price every second per
symbol (like the Binance producer) — and a consumer of ``features``.

What is measured: for every evaluation the worker publishes, the consumer's receive time minus the
evaluation time. The engine evaluates second ``t`` as soon as the first input at or after ``t``
arrives, and at these rates that input was received (published) within about a millisecond of
``t``; so the figure is producer receive → broker → worker (decode, align, evaluate three
strategies, encode) → broker → consumer, with the consumer's own fetch wait included (an upper bound
of the publish time). The same consumer also reads ``md.trades`` (publication → consumed: one broker
crossing with no worker in it), the baseline printed next to it, measured in the same run under the
same load; the features figure crosses the broker twice. Signals are published by the same step, right after their evaluation's
features; the shipped strategies need 24 h of warm-up, so features carry the measurement. The
first ``--warmup`` seconds are not counted (group join, first snapshots).

Run: ``.venv/bin/python -m benchmarks.bench_engine_latency [--rate 5000] [--seconds 60]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_engine_app import SYMBOLS
from benchmarks.embedded_broker import broker
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.events import obi_from_levels
from stream_apps.faust_app.config import EngineAppConfig
from stream_apps.faust_app.session import SessionProducer, SessionRecord
from stream_apps.faust_app.worker import ensure_engine_topics
from tapeflow_runtime.kafka_client import consumer_config

REPO = Path(__file__).resolve().parent.parent


def now_ms() -> int:
    return int(time.time() * 1000)


class LiveFeed(threading.Thread):
    """Publishes ``rate`` trades/s (round-robin over the symbols) plus books and marks, in 5-ms ticks."""

    def __init__(self, producer: SessionProducer, rate: float, seconds: float) -> None:
        super().__init__(daemon=True)
        self.producer, self.rate, self.seconds = producer, rate, seconds
        self.trades = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        rng = np.random.default_rng(1)
        agg = {s: 1 for s, _ in SYMBOLS}
        prices = {s: p for s, p in SYMBOLS}
        start = time.monotonic()
        next_book = next_mark = 0.0
        owed = 0.0
        last = start
        while not self.stop_event.is_set() and time.monotonic() - start < self.seconds:
            t = time.monotonic()
            owed += (t - last) * self.rate
            last = t
            stamp = now_ms()
            while owed >= 1:
                symbol, _ = SYMBOLS[self.trades % len(SYMBOLS)]
                prices[symbol] *= float(np.exp(rng.normal(0, 1e-4)))
                self.producer.produce(
                    SessionRecord(
                        "md.trades",
                        f"binance:{symbol}",
                        stamp,
                        {
                            "exchange": "binance",
                            "symbol": symbol,
                            "agg_id": agg[symbol],
                            "price": round(prices[symbol], 6),
                            "qty": round(float(rng.lognormal(-3, 1.2)) + 0.001, 3),
                            "first_trade_id": agg[symbol],
                            "last_trade_id": agg[symbol],
                            "event_time": stamp,
                            "trade_time": stamp,
                            "receive_time": stamp,
                            "taker_side": "SELL" if rng.random() < 0.5 else "BUY",
                        },
                    )
                )
                agg[symbol] += 1
                self.trades += 1
                owed -= 1
            if t - start >= next_book:
                next_book += 0.25
                for symbol, _ in SYMBOLS:
                    mid = prices[symbol]
                    bids = [{"price": mid * (1 - 1e-4 * (n + 1)), "qty": 1.0 + rng.random()} for n in range(20)]
                    asks = [{"price": mid * (1 + 1e-4 * (n + 1)), "qty": 1.0 + rng.random()} for n in range(20)]
                    obi = obi_from_levels(
                        [(b["price"], b["qty"]) for b in bids], [(a["price"], a["qty"]) for a in asks]
                    )
                    self.producer.produce(
                        SessionRecord(
                            "md.book",
                            f"binance:{symbol}",
                            stamp,
                            {
                                "exchange": "binance",
                                "symbol": symbol,
                                "last_update_id": stamp,
                                "event_time": stamp,
                                "receive_time": stamp,
                                "bids": bids,
                                "asks": asks,
                                "obi_10": obi,
                            },
                        )
                    )
            if t - start >= next_mark:
                next_mark += 1.0
                for symbol, _ in SYMBOLS:
                    self.producer.produce(
                        SessionRecord(
                            "md.mark",
                            f"binance:{symbol}",
                            stamp,
                            {
                                "exchange": "binance",
                                "symbol": symbol,
                                "mark_price": prices[symbol],
                                "index_price": prices[symbol],
                                "funding_rate": 0.0001,
                                "next_funding_time": stamp + 3_600_000,
                                "event_time": stamp,
                                "receive_time": stamp,
                            },
                        )
                    )
            self.producer.producer.poll(0)
            time.sleep(0.005)
        self.producer.flush()


def collect_latencies(bootstrap: str, prefix: str, until: float, count_from_ms: int) -> tuple[list[float], list[float]]:
    """Receive time minus evaluation time of every ``features`` record, and (the baseline, in the same
    run and under the same load) receive time minus publication time of every ``md.trades`` record:
    one broker crossing with no worker in it. Runs in its own process: sharing the feed's GIL made
    this reader fall seconds behind on 5,000 records/s and measure itself."""
    serde = AvroSerde(FileSchemaRegistry())
    consumer = Consumer(consumer_config(bootstrap, **{"fetch.wait.max.ms": 5, "fetch.min.bytes": 1}))
    assignment = []
    for topic in (prefix + "features", prefix + "md.trades"):
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        assignment += [TopicPartition(topic, p, -2) for p in partitions]
    consumer.assign(assignment)
    features, crossing = [], []
    try:
        while time.monotonic() < until:
            for message in consumer.consume(1000, 0.05):
                if message.error():
                    continue
                received = time.time() * 1000
                if message.topic().endswith("md.trades"):
                    published = message.timestamp()[1]  # librdkafka's CreateTime: the produce() call
                    if published >= count_from_ms:
                        crossing.append(received - published)
                    continue
                evaluation = serde.decode(message.value())["eval_time"]
                if evaluation >= count_from_ms:
                    features.append(received - evaluation)
    finally:
        consumer.close()
    return features, crossing


def worker_histogram(port: int) -> dict[float, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tapeflow_engine_evaluation_lag_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="trades/s over all symbols")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured duration")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds not counted at the start")
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start the embedded Kafka)")
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=EngineAppConfig.model_fields["fetch_max_wait_ms"].default,
        help="the worker's fetch wait (Faust's own: 1500)",
    )
    args = ap.parse_args()
    serde = AvroSerde(FileSchemaRegistry())
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "stack") as bootstrap:
        prefix = f"lat{uuid.uuid4().hex[:6]}."
        config = EngineAppConfig(
            bootstrap=bootstrap,
            app_id=prefix + "engine",
            topic_prefix=prefix,
            datadir=Path(tmp) / "faust",
            metrics_port=0,
            log_level="WARNING",
            fetch_max_wait_ms=args.fetch_max_wait_ms,
        )
        ensure_engine_topics(config)
        config_path = Path(tmp) / "engine.json"
        config_path.write_text(config.model_dump_json())
        log_path = Path(tmp) / "worker.log"
        worker = subprocess.Popen(
            [sys.executable, "-m", "stream_apps.faust_app", "--config", str(config_path)],
            cwd=REPO,
            stdout=open(log_path, "w"),
            stderr=subprocess.STDOUT,
        )
        try:
            port = None
            deadline = time.monotonic() + 90
            while port is None and time.monotonic() < deadline:
                for line in log_path.read_text().splitlines():
                    if line.startswith("engine worker ready"):
                        port = int(line.rsplit("metrics_port=", 1)[1])
                time.sleep(0.2)
            if port is None:
                raise RuntimeError(f"worker not ready:\n{log_path.read_text()[-2000:]}")
            producer = SessionProducer(bootstrap, serde, prefix, **{"linger.ms": 5})
            feed = LiveFeed(producer, args.rate, args.warmup + args.seconds)
            count_from = now_ms() + int(args.warmup * 1000)
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                reader = pool.submit(
                    collect_latencies,
                    bootstrap,
                    prefix,
                    time.monotonic() + args.warmup + args.seconds + 5.0,
                    count_from,
                )
                feed.start()
                latencies, crossing = reader.result()
            feed.stop_event.set()
            feed.join(30)
            histogram = worker_histogram(port)
            cpu = sum(t for t in __import__("psutil").Process(worker.pid).cpu_times()[:2])
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    lat = np.asarray(latencies)
    produced_rate = feed.trades / (args.warmup + args.seconds)
    print(
        f"load={os.getloadavg()[0]:.2f}  trades published: {feed.trades:,} ({produced_rate:,.0f}/s)  "
        f"evaluations measured: {len(lat):,}  worker CPU: {cpu:.1f} s"
    )
    base = np.asarray(crossing)
    for label, values in (
        ("receive -> features published and consumed", lat),
        ("baseline, one broker crossing: md.trades publish -> consumed", base),
    ):
        if len(values):
            p50, p90, p99 = np.percentile(values, [50, 90, 99])
            print(f"{label} (ms): p50 {p50:.1f}  p90 {p90:.1f}  p99 {p99:.1f}  max {values.max():.1f}")
    if len(lat) and len(base):
        print(f"features p99 / one-crossing p99: {np.percentile(lat, 99) / np.percentile(base, 99):.2f}")
    total = max(histogram.values()) if histogram else 0
    within = {le: n / total for le, n in sorted(histogram.items())} if total else {}
    print(
        "worker's own evaluation-lag histogram (share published within): "
        + json.dumps({f"{le:g}s": round(share, 4) for le, share in within.items()})
    )


if __name__ == "__main__":
    main()
