"""Executor latency and throughput in paper mode.

1. signal -> order through the broker: the executor service runs in-process against the embedded Kafka
   broker (its own Kafka consumer and publisher, as in `tapeflow execute --mode paper`); md.trades keep
   market data fresh while signals arrive one at a time. Two latencies per signal:
   - `executor`: Kafka timestamp of the entry order intent (PENDING_NEW, stamped when the executor
     produced it) minus the signal's Kafka timestamp (stamped when this script produced it): transport
     to the executor, consume, decode, risk checks, sizing, intent produced. Millisecond resolution.
   - `end to end`: wall clock from producing the signal to this script receiving the order record
     (adds the executor's publisher linger of 5 ms, one more consumer fetch and, with transactions,
     the commit: the watcher reads committed records only).
   With `--transactions both` (default) it runs once with the executor's Kafka transactions
   and once without (`ExecuteOptions.transactional=False`).
3. backlog throughput through the broker: `--backlog-trades` trades and 1 signal per 100 of them
   already in the broker, the executor started from the beginning: inputs handled per second from its
   first commit to its last (every input's offset committed), with and without transactions.
2. pure core: the `Executor` with the paper broker and an in-memory sink, no Kafka: decisions per
   second (signal -> entry intent) and trade ticks per second with open positions evaluating exits.

Run: .venv/bin/python -m benchmarks.bench_executor [--signals 500] [--rate 20] [--transactions on|off|both]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from benchmarks.embedded_broker import start_broker
from execution.config import ExecutorConfig, RiskLimits
from execution.executor import Executor, ListSink
from execution.paper_broker import PaperBroker
from execution.service import ExecuteOptions, run_executor
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from tapeflow_runtime.kafka_client import (
    consumer_config,
    ensure_topics,
    producer_config,
)
from tapeflow_runtime.settings import Settings

SERDE = AvroSerde(FileSchemaRegistry())
KEY = b"binance:BTCUSDT"
PREFIX = "bench."


def signal(i: int, t: int) -> dict:
    return {
        "signal_id": f"bench_{i}:h:binance:BTCUSDT:{t}:LONG",
        "strategy": f"bench_{i}",
        "strategy_version": "1",
        "config_hash": "h",
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "eval_time": t,
        "direction": "LONG",
        "tier": "standard",
        "score": 80.0,
        "factors": {},
        "price": 100.0,
        "atr": 1.0,
        "risk_distance": 1.5,
        "sl_price": 98.5,
        "tp1_price": 101.5,
        "tp2_price": 103.0,
        "sl_r": 1.0,
        "tp1_r": 1.0,
        "tp2_r": 2.0,
        "is_flip": False,
    }


def trade(i: int, t: int, price: float = 100.0) -> dict:
    return {
        "exchange": "binance",
        "symbol": "BTCUSDT",
        "agg_id": i,
        "price": price,
        "qty": 0.01,
        "first_trade_id": i,
        "last_trade_id": i,
        "event_time": t,
        "trade_time": t,
        "receive_time": t,
        "taker_side": "BUY",
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_through_broker(n_signals: int, rate: float, transactional: bool = True) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sup = start_broker(Path(tmp))
        try:
            bootstrap = sup.addresses["broker"]
            ensure_topics(bootstrap, prefix=PREFIX)
            config_file = Path(tmp) / "executor.yaml"
            config_file.write_text("risk:\n  max_open_positions: 1000000\n")
            stop = threading.Event()
            run_settings = Settings(home=Path(tmp), broker=bootstrap, topic_prefix=PREFIX)
            options = ExecuteOptions(
                config_path=config_file, start_from="latest", stop=stop, restore_idle_s=0.3, transactional=transactional
            )
            runner = threading.Thread(target=lambda: asyncio.run(run_executor(run_settings, "paper", options)))
            runner.start()

            producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
            feeding = threading.Event()
            feeding.set()

            def feed_trades() -> None:  # 50 trades/s keep the market data fresh
                i = 0
                while feeding.is_set():
                    i += 1
                    producer.produce(
                        PREFIX + "md.trades",
                        key=KEY,
                        value=SERDE.encode("md.trades", trade(i, int(time.time() * 1000))),
                    )
                    producer.poll(0)
                    time.sleep(0.02)

            feeder = threading.Thread(target=feed_trades, daemon=True)
            feeder.start()
            watcher = Consumer(consumer_config(bootstrap, "bench-watch", **{"isolation.level": "read_committed"}))
            md = watcher.list_topics(PREFIX + "orders", timeout=10).topics[PREFIX + "orders"]
            watcher.assign([TopicPartition(PREFIX + "orders", p, OFFSET_BEGINNING) for p in md.partitions])
            time.sleep(8)  # group join + restore; "latest" means signals before that would be skipped

            sent: dict[str, tuple[float, int]] = {}
            executor_ms: list[float] = []
            e2e_ms: list[float] = []
            warmup = 20
            for i in range(n_signals + warmup):
                now = int(time.time() * 1000)
                rec = signal(i, now)
                t_send = time.perf_counter()
                producer.produce(PREFIX + "signals", key=KEY, value=SERDE.encode("signals", rec), timestamp=now)
                producer.poll(0)
                sent[rec["signal_id"]] = (t_send, now)
                deadline = time.perf_counter() + 5
                got = False
                while time.perf_counter() < deadline and not got:
                    msg = watcher.poll(0.001)
                    if msg is None or msg.error():
                        continue
                    order = SERDE.decode(msg.value())
                    if order["state"] != "PENDING_NEW" or order["signal_id"] not in sent:
                        continue
                    t0, ts0 = sent[order["signal_id"]]
                    if i >= warmup:
                        e2e_ms.append((time.perf_counter() - t0) * 1000)
                        executor_ms.append(msg.timestamp()[1] - ts0)
                    got = order["signal_id"] == rec["signal_id"]
                time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t_send)))
            feeding.clear()
            feeder.join(5)
            producer.flush(10)
            stop.set()
            runner.join(30)
            watcher.close()
        finally:
            sup.stop_all()
    print(
        f"signal -> order through the broker (paper, embedded Kafka, transactions "
        f"{'on' if transactional else 'off'}), {len(e2e_ms)} signals at {rate:g}/s:"
    )
    for name, values in (("executor (Kafka timestamps)", executor_ms), ("end to end (wall clock)", e2e_ms)):
        if not values:
            print(f"  {name}: no orders seen")
            continue
        print(
            f"  {name:30s} p50 {pct(values, 50):7.1f} ms   p99 {pct(values, 99):7.1f} ms   "
            f"max {max(values):7.1f} ms   mean {statistics.fmean(values):6.1f} ms"
        )


def bench_backlog(n_trades: int, transactional: bool) -> None:
    """Inputs already in the broker, the executor from the beginning: handled inputs per second."""
    with tempfile.TemporaryDirectory() as tmp:
        sup = start_broker(Path(tmp))
        try:
            bootstrap = sup.addresses["broker"]
            ensure_topics(bootstrap, prefix=PREFIX)
            producer = Producer(producer_config(bootstrap))
            t0 = int(time.time() * 1000) - 3_600_000
            n_signals = 0

            def send(topic: str, value: bytes) -> None:
                while True:
                    try:
                        producer.produce(PREFIX + topic, key=KEY, value=value)
                        return
                    except BufferError:
                        producer.poll(0.05)

            for i in range(n_trades):
                t = t0 + i * 10
                send("md.trades", SERDE.encode("md.trades", trade(i, t, 100.0 + ((i * 7919) % 200 - 100) * 0.002)))
                if i % 100 == 50:
                    send("signals", SERDE.encode("signals", signal(i, t + 5)))
                    n_signals += 1
                producer.poll(0)
            producer.flush(60)
            config_file = Path(tmp) / "executor.yaml"
            config_file.write_text(
                "risk:\n  max_open_positions: 1000000\n  max_signal_age_s: 100000000\n"
                "  stale_market_data_s: 100000000\n  max_consecutive_losses: 1000000\n"
                "  daily_loss_limit_r: 1000000\n"
            )
            stop = threading.Event()
            run_settings = Settings(home=Path(tmp), broker=bootstrap, topic_prefix=PREFIX)
            options = ExecuteOptions(
                config_path=config_file,
                start_from="earliest",
                stop=stop,
                restore_idle_s=0.3,
                transactional=transactional,
            )
            runner = threading.Thread(target=lambda: asyncio.run(run_executor(run_settings, "paper", options)))
            runner.start()
            group = Consumer(consumer_config(bootstrap, PREFIX + "tapeflow-executor-paper"))
            parts = [TopicPartition(PREFIX + t, 0) for t in ("md.trades", "signals")]
            parts = [
                TopicPartition(tp.topic, p)
                for tp in parts
                for p in group.list_topics(tp.topic, timeout=10).topics[tp.topic].partitions
            ]
            total = n_trades + n_signals
            first = first_at = None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = sum(max(tp.offset, 0) for tp in group.committed(parts, timeout=10))
                if done and first is None:
                    first, first_at = done, time.monotonic()
                if done >= total:
                    break
                time.sleep(0.02)
            done_at = time.monotonic()
            group.close()
            stop.set()
            runner.join(60)
        finally:
            sup.stop_all()
    rate = (total - first) / (done_at - first_at) if first is not None and done_at > first_at else float("nan")
    print(
        f"backlog through the broker (transactions {'on' if transactional else 'off'}): {total:,} inputs "
        f"({n_signals} signals), {rate:,.0f} inputs/s from the first commit to the last"
    )


def bench_core(n_signals: int, n_ticks: int, report_decisions: bool = True) -> None:
    cfg = ExecutorConfig(risk=RiskLimits(max_open_positions=10**9), timeout_min=10**6)
    sink = ListSink()
    ex = Executor(cfg, "paper", PaperBroker(cfg.fees, cfg.paper), sink, 1_700_000_000_000)
    t = 1_700_000_000_000
    ex.on_trade(trade(0, t), t)
    t0 = time.perf_counter()
    for i in range(n_signals):
        ex.on_signal(signal(i, t), t)
    decide = time.perf_counter() - t0
    ex.on_trade(trade(1, t + 1), t + 1)  # every entry fills: n_signals open positions
    assert len(ex.positions) == n_signals
    sink.records.clear()
    t0 = time.perf_counter()
    for i in range(n_ticks):
        ex.on_trade(trade(2 + i, t + 2 + i, 100.0 + (i % 7) * 0.01), t + 2 + i)  # inside every position's levels
    ticks = time.perf_counter() - t0
    if report_decisions:
        print(
            f"pure core: {n_signals / decide:,.0f} signal decisions/s (signal -> entry intent, "
            f"{decide / n_signals * 1e6:.1f} µs each)"
        )
    print(
        f"pure core: {n_ticks / ticks:,.0f} trade ticks/s with {n_signals} open positions on the symbol "
        f"({n_ticks * n_signals / ticks:,.0f} position evaluations/s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signals", type=int, default=500)
    ap.add_argument("--rate", type=float, default=20.0, help="signals per second through the broker")
    ap.add_argument("--skip-broker", action="store_true")
    ap.add_argument("--skip-latency", action="store_true", help="through the broker: the backlog run only")
    ap.add_argument("--transactions", choices=("on", "off", "both"), default="both")
    ap.add_argument("--backlog-trades", type=int, default=100_000, help="0: no backlog run")
    args = ap.parse_args()
    bench_core(2_000, 20_000)
    bench_core(10, 200_000, report_decisions=False)
    if not args.skip_broker:
        modes = {"on": [True], "off": [False], "both": [True, False]}[args.transactions]
        for transactional in modes if not args.skip_latency else []:
            bench_through_broker(args.signals, args.rate, transactional)
        for transactional in modes if args.backlog_trades else []:
            bench_backlog(args.backlog_trades, transactional)


if __name__ == "__main__":
    main()
