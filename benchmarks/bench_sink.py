"""Sink throughput: md.trades records in a topic → committed rows in PostgreSQL, one process.

Run: .venv/bin/python -m benchmarks.bench_sink [--rows 1000000] [--batch 50000] [--writers 2] [--record-path]
     [--layout all|plain|timescaledb] [--hypertable-rows 50000] [--no-raw-fetch]
Target (DESIGN.md §7, issues 5 and 11): ≥ 300,000 rows/s per process for trades. Embedded Apache Kafka and
an embedded PostgreSQL (default durability settings) on this machine. The records are produced
first; the clock runs from the moment the group assigned the partitions until the sink reports
every record committed (its own counter, so no count(*) competes with the writes), then the
table is counted once.

The sink reads the topic as the stack's sink does: subscribed as a consumer group, md.trades fetched as
whole record batches on the one-broker cluster (`tapeflow_runtime.record_batches`); `--no-raw-fetch`
reads every record through librdkafka instead (plain confluent-kafka consumption).

Baselines on the same machine: "plain COPY" = the same rows, already encoded, binary-COPYed straight
into the table in batches of the same size (the database's own ingest ceiling, nothing from Kafka
or decoding), once from one connection and once from as many connections as the sink has writers
(each a thread taking every N-th batch, one transaction per batch). The sink's ratio to the
N-connection baseline is the honest one: both use the same number of PostgreSQL backends. Also
prints decode-only rates (fast path and fastavro) and the load average before and after, because
the machine may be shared.

CPU per million rows (user + system seconds of the sink's own process, the broker, and every
PostgreSQL process including exited backends) is printed for the sink run and the plain-COPY
runs, and the sink process's split by thread (consumer thread, sealer, writers, librdkafka's threads): unlike rows/s it does not depend on how much of the machine other work takes, and
cores / (CPU seconds per row) is the most the pipeline could do on this machine alone.

Both storage layouts: the measurements run on every layout this machine's PostgreSQL can give, each
in its own database of the same server: plain PostgreSQL time partitions always, and TimescaleDB
hypertables where the embedded cluster preloads TimescaleDB (`--layout` picks one). Each layout gets
its own COPY baselines, so the sink's ratio to binary COPY with the same connections is printed per
layout. Where TimescaleDB is not installed only the plain layout is measured (and said so).

`--hypertable-rows N` (optional, independent of the server): the PGlite build `make bootstrap` puts
in `.cache/pglite-timescale` (TimescaleDB in WebAssembly, one connection, no COPY FROM STDIN) can
only time INSERTs. It inserts N of the same rows, the way the sink's statements do (multi-row
INSERT ... ON CONFLICT DO NOTHING, in 50k-row transactions), into the migrated `trades` hypertable
and into a plain table `LIKE trades INCLUDING ALL` (same primary key and BRIN) on the same PGlite,
alternately, and prints the ratio hypertable / plain: what routing rows into chunks costs, not an
absolute rate of a real TimescaleDB server.
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime

import psutil
import psycopg
from confluent_kafka import Producer

from benchmarks.embedded_stack import embedded_stack
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde
from sinks.columnar import ColumnarCodec, copy_payload
from sinks.consumer import SinkConfig, TopicSink
from sinks.partitions import ensure_partitions
from sinks.tables import TRADES, direct_copy_sql
from tapeflow_runtime.kafka_client import ensure_topics, producer_config
from tapeflow_runtime.settings import Settings

T0 = 1_704_067_200_000
TARGET = 300_000


def records(n: int) -> list[dict]:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")
    return [
        {
            "exchange": "binance",
            "symbol": symbols[i % 4],
            "agg_id": 3_000_000_000 + i,
            "price": 42_000.0 + (i % 997) * 0.1,
            "qty": 0.001 * (1 + i % 13),
            "first_trade_id": 6_000_000_000 + 2 * i,
            "last_trade_id": 6_000_000_001 + 2 * i,
            "event_time": T0 + i,
            "trade_time": T0 + i,
            "receive_time": T0 + i + 3,
            "taker_side": "SELL" if i % 3 else "BUY",
        }
        for i in range(n)
    ]


def cpu_seconds() -> dict[str, float]:
    """CPU seconds so far: this process, the broker, PostgreSQL (the stack's processes are our children).

    A PostgreSQL backend that exited was reaped by the postmaster, so its time is in the
    postmaster's children times; the live backends and helpers count their own.
    """
    me = resource.getrusage(resource.RUSAGE_SELF)
    out = {"sink": me.ru_utime + me.ru_stime, "broker": 0.0, "postgres": 0.0}
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
            name = child.name()
        except psutil.Error:
            continue
        kind = "postgres" if "postgres" in name else "broker"
        out[kind] += t.user + t.system + (t.children_user + t.children_system if kind == "postgres" else 0.0)
    return out


def thread_cpu() -> dict[int, tuple[str, float]]:
    """{thread id: (name, CPU seconds)} of this process's live threads (Linux /proc; {} elsewhere)."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(tid)] = (stat[stat.index("(") + 1 : stat.rindex(")")], (int(fields[11]) + int(fields[12])) / hz)
    return out


def sink_threads(before: dict[int, tuple[str, float]], consumer: threading.Thread, rows: int) -> dict[str, float]:
    """CPU seconds per 1M rows since `before` of the sink's consumer thread, its sealer (the decode), its
    writers, librdkafka's threads, and the rest of the process; read while the writers are still alive."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    split: dict[str, float] = defaultdict(float)
    for tid, (comm, cpu) in thread_cpu().items():
        name = names.get(tid, comm)
        kind = (
            "consumer thread"
            if tid == consumer.native_id
            else "writers"
            if name.startswith("sink-writer")
            else "sealer"
            if name == "sink-sealer"
            else "raw fetch"
            if name == "raw-fetch"
            else "librdkafka"
            if comm.startswith("rdk:")
            else "other"
        )
        split[kind] += (cpu - before.get(tid, (comm, 0.0))[1]) * 1_000_000 / rows
    return dict(split)


def cpu_delta(before: dict[str, float], rows: int) -> dict[str, float]:
    """CPU seconds per million rows since `before`."""
    after = cpu_seconds()
    return {k: (after[k] - before[k]) * 1_000_000 / rows for k in before}


def plain_copy(conninfo: str, payloads: list[bytes], rows: int, connections: int) -> tuple[float, dict]:
    """(rows/s, CPU s per 1M rows) of binary-COPYing `payloads` into trades, a transaction each, over `connections`."""

    def work(k: int) -> None:
        with psycopg.connect(conninfo) as conn:
            for payload in payloads[k::connections]:
                with conn.transaction(), conn.cursor().copy(direct_copy_sql(TRADES)) as cp:
                    cp.write(payload)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(connections)]
    cpu = cpu_seconds()
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rate = rows / (time.perf_counter() - t)
    time.sleep(0.5)  # the backends exit and are reaped: their time moves to the postmaster
    cpu = cpu_delta(cpu, rows)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        stored = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
        conn.execute("TRUNCATE trades")
        conn.execute("CHECKPOINT")  # each measurement starts without the previous one's dirty pages
    if stored != rows:
        raise SystemExit(f"plain COPY stored {stored:,} rows, not {rows:,}")
    return rate, cpu


def hypertable_vs_plain(rows: list[tuple], rounds: int = 2) -> tuple[float, float]:
    """(hypertable rows/s, plain table rows/s) of the same INSERTs on one PGlite with TimescaleDB."""
    from benchmarks.pglite_timescale import migrate_pglite, pglite_timescale

    per = 600 // len(TRADES.columns)  # pglite-socket drops larger messages

    def insert(table: str, n: int) -> str:
        row = "(" + ", ".join(["%s"] * len(TRADES.columns)) + ")"
        return f"INSERT INTO {table} ({', '.join(TRADES.columns)}) VALUES {', '.join([row] * n)} ON CONFLICT DO NOTHING"

    with pglite_timescale() as ts:
        migrate_pglite(ts)
        with psycopg.connect(ts, autocommit=True) as conn:
            kind = conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'trades'"
            ).fetchone()[0]
            if kind != 1:
                raise SystemExit("trades is not a hypertable on PGlite")
            conn.execute("CREATE TABLE trades_plain (LIKE trades INCLUDING ALL)")
            times: dict[str, float] = {"trades": 0.0, "trades_plain": 0.0}
            for _ in range(rounds):
                for table in times:
                    t = time.perf_counter()
                    for lo in range(0, len(rows), 50_000):
                        with conn.transaction():
                            for i in range(lo, min(lo + 50_000, len(rows)), per):
                                chunk = rows[i : i + per]
                                conn.execute(insert(table, len(chunk)), [v for r in chunk for v in r])
                    times[table] += time.perf_counter() - t
                    stored = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                    if stored != len(rows):
                        raise SystemExit(f"{table} on PGlite holds {stored:,} rows, not {len(rows):,}")
                    conn.execute(f"TRUNCATE {table}")
    n = rounds * len(rows)
    return n / times["trades"], n / times["trades_plain"]


LAYOUT_NAMES = {"plain": "plain PostgreSQL (time partitions)", "timescaledb": "TimescaleDB (hypertables)"}


def layout_databases(conninfo: str, wanted: str) -> dict[str, str]:
    """{layout: conninfo of a database migrated with it}: the embedded stack's own database has the
    server's default layout; the plain one gets a database of its own where that is TimescaleDB."""
    from psycopg import sql

    from sinks.migrate import migrate

    with psycopg.connect(conninfo, autocommit=True) as conn:
        default = (
            "timescaledb"
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
            else "plain"
        )
    if wanted == "timescaledb" and default != "timescaledb":
        raise SystemExit("--layout timescaledb: this machine's PostgreSQL does not preload TimescaleDB")
    out = {default: conninfo}
    if default == "timescaledb" and wanted in ("all", "plain"):
        plain = psycopg.conninfo.make_conninfo(conninfo, dbname="tapeflow_plain")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier("tapeflow_plain")))
        migrate(plain, engine_extension=None)  # time partitions on the same server
        out["plain"] = plain
    return {k: v for k, v in out.items() if wanted in ("all", k)}


def run_sink(
    bootstrap: str,
    conninfo: str,
    serde: AvroSerde,
    prefix: str,
    n: int,
    batch: int,
    columnar: bool,
    writers: int,
    layout: str,
    fetch_wait_ms: int,
    raw_fetch: bool = True,
) -> tuple[float, float, int, dict]:
    # each run reads the topic from the start
    group = f"{prefix}sink-{layout}-{'columnar' if columnar else 'records'}-{raw_fetch}"
    sink = TopicSink(
        SinkConfig(
            topics=["md.trades"],
            topic_prefix=prefix,
            group_id=group,
            batch_rows=batch,
            columnar=columnar,
            writers=writers,
            fetch_wait_ms=fetch_wait_ms,
            raw_fetch=raw_fetch,
        ),
        bootstrap,
        conninfo,
        serde,
    )
    done = threading.Event()
    thread = threading.Thread(target=sink.run, kwargs={"should_stop": done.is_set})
    cpu = cpu_seconds()
    threads_before = thread_cpu()
    t_start = time.perf_counter()
    thread.start()
    while not sink.assignment and time.perf_counter() - t_start < 60:
        time.sleep(0.005)
    t = time.perf_counter()
    join_s = t - t_start
    while sink.metrics.records._value.get() < n and time.perf_counter() - t < 600:
        time.sleep(0.005)
    elapsed = time.perf_counter() - t
    threads = sink_threads(threads_before, thread, n)
    done.set()
    thread.join(120)
    time.sleep(0.5)
    cpu = cpu_delta(cpu, n)  # includes the group join and the shutdown: a little on the high side
    with psycopg.connect(conninfo, autocommit=True) as conn:
        committed = conn.execute("SELECT count(*) FROM trades").fetchone()[0]
        conn.execute("TRUNCATE trades")
        conn.execute("CHECKPOINT")
    return elapsed, join_s, committed, cpu, threads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=50_000)
    ap.add_argument(
        "--writers",
        type=int,
        default=SinkConfig.writers,
        help="the sink's writer threads (= connections of the N-connection COPY baseline)",
    )
    ap.add_argument(
        "--layout",
        choices=("all", *LAYOUT_NAMES),
        default="all",
        help="storage layout(s) to measure; all = plain, and TimescaleDB where the server has it",
    )
    ap.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=Settings.model_fields["sink_fetch_wait_ms"].default,
        help="the sink's fetch wait (default: the service's, TAPEFLOW_SINK_FETCH_WAIT_MS)",
    )
    ap.add_argument(
        "--raw-fetch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="md.trades fetched as whole record batches, as the stack's sink does on a one-broker "
        "cluster; --no-raw-fetch: every record through librdkafka",
    )
    ap.add_argument("--record-path", action="store_true", help="also run the record-by-record path (slow)")
    ap.add_argument(
        "--hypertable-rows",
        type=int,
        default=0,
        help="also time INSERTs into a hypertable vs a plain table on PGlite-TimescaleDB (rows)",
    )
    args = ap.parse_args()
    load_before = os.getloadavg()
    serde = AvroSerde(FileSchemaRegistry())
    recs = records(args.rows)
    values = [serde.encode("md.trades", r) for r in recs]
    codec = ColumnarCodec.for_topic(TRADES, serde, "md.trades")
    t = time.perf_counter()
    parts = [codec.encode(values[i : i + 10_000]) for i in range(0, len(values), 10_000)]
    fast_decode = args.rows / (time.perf_counter() - t)
    t = time.perf_counter()
    for v in values[:200_000]:
        serde.decode(v)
    fastavro_decode = min(args.rows, 200_000) / (time.perf_counter() - t)
    results: dict[str, dict] = {}
    with embedded_stack() as (bootstrap, conninfo):
        databases = layout_databases(conninfo, args.layout)
        ensure_topics(bootstrap, prefix="bench.")
        p = Producer(producer_config(bootstrap, **{"queue.buffering.max.messages": 2_000_000}))
        for r, v in zip(recs, values):
            p.produce("bench.md.trades", key=f"binance:{r['symbol']}".encode(), value=v)
            p.poll(0)
        p.flush(120)
        # baselines: binary COPY of the same rows, batches of --batch, 1 and --writers connections
        per = max(1, args.batch // 10_000)
        payloads = [copy_payload([p.data for p in parts[i : i + per]]) for i in range(0, len(parts), per)]
        for layout, db in databases.items():
            with psycopg.connect(db, autocommit=True) as conn:  # partitions for the rows (hypertables: nothing)
                ensure_partitions(conn, "trades", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC))
            copy_1 = plain_copy(db, payloads, args.rows, 1)
            copy_n = plain_copy(db, payloads, args.rows, args.writers) if args.writers > 1 else copy_1
            fast = run_sink(
                bootstrap,
                db,
                serde,
                "bench.",
                args.rows,
                args.batch,
                True,
                args.writers,
                layout,
                args.fetch_wait_ms,
                args.raw_fetch,
            )
            slow = (
                run_sink(
                    bootstrap,
                    db,
                    serde,
                    "bench.",
                    args.rows,
                    args.batch,
                    False,
                    args.writers,
                    layout,
                    args.fetch_wait_ms,
                )
                if args.record_path
                else None
            )
            results[layout] = {"copy_1": copy_1, "copy_n": copy_n, "fast": fast, "slow": slow}
    hyper = (
        hypertable_vs_plain([TRADES.to_row(r) for r in recs[: args.hypertable_rows]]) if args.hypertable_rows else None
    )
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1

    def cpu_line(label: str, cpu: dict) -> str:
        total = sum(cpu.values())
        return (
            f"CPU per 1M rows, {label}: sink process {cpu['sink']:.2f} s, broker {cpu['broker']:.2f} s, "
            f"PostgreSQL {cpu['postgres']:.2f} s; total {total:.2f} s -> at most "
            f"{cores * 1_000_000 / total:,.0f} rows/s on {cores} cores with nothing else running"
        )

    if args.layout == "all" and "timescaledb" not in results:
        print("layout timescaledb: not measured (this machine's PostgreSQL does not preload TimescaleDB)")
    for layout, res in results.items():
        (copy_rate, copy_cpu), (copy_rate_n, copy_cpu_n) = res["copy_1"], res["copy_n"]
        elapsed, join_s, n, sink_cpu, threads = res["fast"]
        rate = n / elapsed
        print(f"== layout {LAYOUT_NAMES[layout]}")
        reader = "a consumer group, " + ("record batches fetched raw" if args.raw_fetch else "librdkafka")
        print(
            f"rows committed: {n:,} of {args.rows:,} in {elapsed:.2f} s after a {join_s:.2f} s start "
            f"(batch {args.batch:,}, {args.writers} writer(s), reading {reader})"
        )
        print(
            f"sink end to end:      {rate:>10,.0f} rows/s   ratio to target 300k: {rate / TARGET:.2f}   "
            f"to plain COPY: {rate / copy_rate:.2f} (1 conn), {rate / copy_rate_n:.2f} ({args.writers} conn)"
        )
        if res["slow"]:
            slow = res["slow"]
            print(f"record-by-record:     {slow[2] / slow[0]:>10,.0f} rows/s   (same pipeline, fastavro + tuples)")
        print(
            f"plain binary COPY:    {copy_rate:>10,.0f} rows/s   (baseline: encoded rows straight into the table, "
            f"1 connection)"
        )
        print(
            f"plain COPY, {args.writers} conn:  {copy_rate_n:>10,.0f} rows/s   (the same over {args.writers} "
            f"connections in parallel)"
        )
        print(cpu_line("sink end to end", sink_cpu))
        if threads:
            print(
                "  the sink process by thread (CPU s per 1M rows): "
                + ", ".join(f"{k} {v:.2f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]))
            )
        print(cpu_line("plain COPY, 1 conn", copy_cpu))
        if args.writers > 1:
            print(cpu_line(f"plain COPY, {args.writers} conn", copy_cpu_n))
    print(f"fast-path decode:     {fast_decode:>10,.0f} rows/s   (Avro -> COPY bytes, sinks._avro_copy, one thread)")
    print(f"fastavro decode:      {fastavro_decode:>10,.0f} rows/s")
    if hyper:
        print(
            f"PGlite-TimescaleDB INSERT ({args.hypertable_rows:,} rows x 2): hypertable {hyper[0]:,.0f} rows/s, "
            f"plain table {hyper[1]:,.0f} rows/s, ratio hypertable/plain {hyper[0] / hyper[1]:.2f}"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (2 cores)")


if __name__ == "__main__":
    main()
