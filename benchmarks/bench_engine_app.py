"""Engine worker throughput end to end through the broker (issue "Signal engine" benchmark (b)).

Target (DESIGN §7): ≥ 250,000 trades/s per worker through Apache Kafka on 4 symbols.

What runs: a generated session with all five ``md.*`` inputs (4 symbols; book every 250 ms, mark every
second, indicators every 5 min, liquidations) is produced to the broker first; then one worker —
the same ``EngineWorker`` the service runs, in this process — consumes it, evaluates the shipped
strategies (v51, v52, v53) at the normal cadence (every closed second with trades, every 15 s),
publishes ``bars.1m``/``features``/``signals`` and snapshots its state to the table. The clock runs
from the worker's first fetched batch until every produced input record has been processed, so
group join and recovery are excluded. Trades/s = trades / that time; records/s counts all inputs.

Trade density matters: evaluations cost far more than trades, and there is at most one per symbol
per second of event time, so a session with more trades per second of event time is cheaper per
trade. ``--rates`` runs several densities (trades per second of event time per symbol).

``--detectors`` runs the shipped strategies with a ``detectors`` section added (VPIN by aggressor side
with per-symbol buckets of a few seconds' volume, Kyle's lambda and Amihud), to compare the
worker with the detectors on against the same run without them; ``--book-detectors`` adds walls and
icebergs (their defaults) to that section.

``--guarantee`` picks the worker's processing guarantee: ``exactly_once`` (the stack's default: outputs,
snapshots and input offsets in one Kafka transaction per input partition and commit interval),
``at_least_once``, or ``both`` (the default here): each rate runs once per guarantee, on the same
produced session (each guarantee its own consumer group), alternating, so the two share the machine's
state; the line shows trades/s against the 250 k target and against the other guarantee. The clock
stops once every input record is processed *and* the group's last commit (with ``exactly_once``: the
last transactions) has completed.

``--mode stream`` measures stock Faust instead: one agent over md.trades with
``stream.noack_take(5000, within=0.05)`` that only Avro-decodes and acks — the per-record ceiling of
Faust's event path, which is why the worker delivers fetches in bulk (see ``bulk_consumer``).

Run: ``.venv/bin/python -m benchmarks.bench_engine_app [--rates 50,200,500] [--minutes 10]
[--mode bulk|stream] [--guarantee both|exactly_once|at_least_once] [--rounds N] [--detectors | --book-detectors] [--bootstrap HOST:PORT]`` (default: the embedded Kafka started for the run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

from benchmarks.embedded_broker import broker
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from stream_apps.core.strategy import load_strategy
from stream_apps.core.warmup import warm_up
from stream_apps.faust_app.app import EngineWorker
from stream_apps.faust_app.config import EngineAppConfig, shipped_strategy_files
from stream_apps.faust_app.session import SessionProducer, synthetic_session
from stream_apps.faust_app.worker import ensure_engine_topics
from tapeflow_runtime.batch import streaming_gc
from tapeflow_runtime.logs import configure_logging

TARGET = 250_000  # trades/s per worker through Kafka (DESIGN §7)
SYMBOLS = (("BTCUSDT", 30_000.0), ("ETHUSDT", 2_000.0), ("SOLUSDT", 60.0), ("XRPUSDT", 0.6))
DETECTORS = {
    "bar": "1m",
    "vpin": {
        "bucket_volume": {"symbols": {"BTCUSDT": 2_000_000, "ETHUSDT": 150_000, "SOLUSDT": 5_000, "XRPUSDT": 50}},
        "classification": "aggressor",
    },
    "kyle_window_bars": 30,
    "amihud_window_bars": 30,
}


def strategies_with_detectors(directory: Path, book: bool = False) -> list[Path]:
    """The shipped strategy files with ``DETECTORS`` added (``book``: with walls and icebergs at their
    defaults too), written into ``directory``."""
    out = []
    for path in shipped_strategy_files():
        data = yaml.safe_load(path.read_text())
        data["detectors"] = {**DETECTORS, "walls": {}, "icebergs": {}} if book else DETECTORS
        out.append(directory / path.name)
        out[-1].write_text(yaml.safe_dump(data))
    return out


def produce(bootstrap: str, prefix: str, minutes: int, rate: float) -> tuple[int, int]:
    session = synthetic_session(
        SYMBOLS, duration_ms=minutes * 60_000, trades_per_s=rate, book_every_ms=250, mark_every_ms=1_000, seed=5
    )
    SessionProducer(bootstrap, AvroSerde(FileSchemaRegistry()), prefix).produce_all(session)
    return sum(1 for r in session if r.topic == "md.trades"), len(session)


async def run_bulk(config: EngineAppConfig, total_records: int, timeout_s: float) -> tuple[float, float, int]:
    warm_up([load_strategy(path) for path in config.strategy_files])  # as the service does before consuming
    worker = EngineWorker(config)
    streaming_gc()  # as the service does (stream_apps.faust_app.worker.run_worker)
    first: list[float] = []
    original = worker.on_records

    async def timed(records, generation):  # first-batch timestamp, then the real handler
        if not first:
            first.append(time.perf_counter())
        await original(records, generation)

    worker.on_records = timed  # type: ignore[method-assign]
    await worker.start()
    registry = worker.metrics.registry
    deadline = time.monotonic() + timeout_s
    cpu0 = time.process_time()
    try:
        while time.monotonic() < deadline:
            done = sum(
                registry.get_sample_value("tapeflow_engine_input_records_total", {"topic": t}) or 0
                for t in ("md.trades", "md.book", "md.mark", "md.liquidations", "md.indicators")
            )
            if done >= total_records:
                break
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"worker processed {done:,.0f} of {total_records:,} records in {timeout_s} s")
        # the last batch counts its records before its engine work: wait for that batch to finish
        batches = registry.get_sample_value("tapeflow_engine_batch_seconds_count")
        while worker.batches < batches:
            await asyncio.sleep(0.005)
        await worker.app.consumer.commit()  # and its last commit (the last transactions) done
        elapsed = time.perf_counter() - first[0]
        cpu = time.process_time() - cpu0
        rss = psutil.Process().memory_info().rss
    finally:
        await worker.stop()
    return elapsed, cpu, rss


async def run_stream(config: EngineAppConfig, total_trades: int, timeout_s: float) -> tuple[float, float, int]:
    """Stock Faust: an agent over md.trades, noack_take + Avro decode + ack, nothing else."""
    import faust

    serde = AvroSerde(FileSchemaRegistry())
    app = faust.App(
        config.app_id + "-stream",
        broker=f"kafka://{config.bootstrap}",
        store="memory://",
        datadir=str(config.datadir),
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=6,
        topic_allow_declare=True,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(config.topic("md.trades"), key_serializer="raw", value_serializer="raw")
    state = {"n": 0, "first": 0.0, "done": asyncio.Event()}

    @app.agent(topic)
    async def agent(stream):
        async for events in stream.noack_take(5000, within=0.05):
            if not state["first"]:
                state["first"] = time.perf_counter()
            for event in events:
                serde.decode(event.value)
            for event in events:
                await stream.ack(event)
            state["n"] += len(events)
            if state["n"] >= total_trades:
                state["done"].set()

    app.in_worker = True
    await app.start()
    cpu0 = time.process_time()
    try:
        await asyncio.wait_for(state["done"].wait(), timeout_s)
        elapsed = time.perf_counter() - state["first"]
        return elapsed, time.process_time() - cpu0, psutil.Process().memory_info().rss
    finally:
        await app.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="50,200,500", help="trades per second of event time per symbol")
    ap.add_argument("--minutes", type=int, default=10, help="event time of each session")
    ap.add_argument("--mode", choices=("bulk", "stream"), default="bulk")
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start the embedded Kafka)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--detectors", action="store_true", help="the shipped strategies with a detectors section")
    ap.add_argument("--book-detectors", action="store_true", help="--detectors with walls and icebergs too")
    ap.add_argument("--guarantee", choices=("both", "exactly_once", "at_least_once"), default="both")
    ap.add_argument("--rounds", type=int, default=1, help="runs per rate and guarantee (alternating)")
    ap.add_argument(
        "--fetch-max-wait-ms",
        type=int,
        default=EngineAppConfig.model_fields["fetch_max_wait_ms"].default,
        help="the worker's fetch wait (Faust's own: 1500)",
    )
    args = ap.parse_args()
    configure_logging("WARNING")
    print(
        f"mode={args.mode}  symbols={len(SYMBOLS)}  session={args.minutes} min  "
        f"fetch wait={args.fetch_max_wait_ms} ms  detectors="
        f"{'book' if args.book_detectors else 'on' if args.detectors else 'off'}  "
        f"load={os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'trades/s/sym':>12} {'trades':>10} {'records':>10} {'seconds':>8} {'trades/s':>10} {'records/s':>10} "
        f"{'CPU s':>7} {'RSS MiB':>8}  guarantee     (trades/s vs the 250 k target, vs the other)"
    )
    with tempfile.TemporaryDirectory() as tmp, broker(args.bootstrap, Path(tmp) / "stack") as bootstrap:
        files = (
            strategies_with_detectors(Path(tmp), book=args.book_detectors)
            if args.detectors or args.book_detectors
            else shipped_strategy_files()
        )
        guarantees = ("exactly_once", "at_least_once") if args.guarantee == "both" else (args.guarantee,)
        for rate in (float(r) for r in args.rates.split(",")):
            prefix = f"bench{uuid.uuid4().hex[:6]}."
            base = EngineAppConfig(
                bootstrap=bootstrap,
                app_id=prefix + "engine",
                topic_prefix=prefix,
                datadir=Path(tmp) / prefix,
                metrics_port=None,
                log_level="WARNING",
                fetch_max_wait_ms=args.fetch_max_wait_ms,
                strategy_files=files,
            )
            ensure_engine_topics(base)
            trades, records = produce(bootstrap, prefix, args.minutes, rate)
            speeds: dict[str, list[float]] = {g: [] for g in guarantees}
            for round_ in range(args.rounds):
                for guarantee in guarantees:
                    group = f"{prefix}engine-{guarantee}-{round_}"  # a new group reads the session from the start
                    config = base.model_copy(
                        update={"app_id": group, "processing_guarantee": guarantee, "datadir": Path(tmp) / group}
                    )
                    if args.mode == "bulk":
                        elapsed, cpu, rss = asyncio.run(run_bulk(config, records, args.timeout))
                        n_records = records
                    else:
                        elapsed, cpu, rss = asyncio.run(run_stream(config, trades, args.timeout))
                        n_records = trades
                    speeds[guarantee].append(trades / elapsed)
                    other = [g for g in guarantees if g != guarantee and speeds[g]]
                    vs = f"  x{speeds[guarantee][-1] / speeds[other[0]][-1]:.2f} of {other[0]}" if other else ""
                    print(
                        f"{rate:>12,.0f} {trades:>10,} {n_records:>10,} {elapsed:>8.2f} {trades / elapsed:>10,.0f} "
                        f"{n_records / elapsed:>10,.0f} {cpu:>7.1f} {rss / 2**20:>8.0f}  {guarantee:<13} "
                        f"{trades / elapsed / TARGET:.2f} of target{vs}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
