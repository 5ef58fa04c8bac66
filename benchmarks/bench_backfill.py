"""Backfill throughput on a generated 1M-row aggTrades day (numbers only, no asserts).

Three stages, each over the same zip, so the cost of each layer shows:
  parse          zip -> CSV rows -> normalised trade dicts
  parse+encode   ... + agg-id continuity + Avro encoding (what the producer hands to librdkafka)
  full backfill  `run_backfill` into a real broker: ... + produce, flush and checkpoints
The broker is `--bootstrap` or, by default, the embedded Kafka started for the run. Peak RSS growth
during the full backfill shows whether the day is streamed (it should not scale with the row count).

    .venv/bin/python -m benchmarks.bench_backfill [--rows 1000000] [--bootstrap host:port]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
import uuid
import zipfile
from datetime import date
from pathlib import Path

from benchmarks.embedded_broker import broker
from producers.backfill import run_backfill
from producers.backfill.agg_trades_csv import AggTradeCsvReader, open_archive
from producers.backfill.continuity import ArchiveContinuity
from schemas.registry import FileSchemaRegistry
from schemas.serde import AvroSerde

DAY = date(2024, 3, 1)
T0 = 1_709_251_200_000  # 2024-03-01T00:00:00Z
HEADER = "agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker\n"


def write_day(directory: Path, rows: int) -> Path:
    """A BTCUSDT-like day: consecutive agg ids, prices near 61,000 in 0.1 steps, ~86 ms apart."""
    stem = f"BTCUSDT-aggTrades-{DAY.isoformat()}"
    path = directory / f"{stem}.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf, zf.open(f"{stem}.csv", "w") as out:
        out.write(HEADER.encode())
        agg0, trade0 = 2_100_000_000, 4_700_000_000
        for start in range(0, rows, 50_000):
            lines = []
            for i in range(start, min(rows, start + 50_000)):
                price = 610_000 + (i * 7919) % 4_000 - 2_000
                lines.append(
                    f"{agg0 + i},{price // 10}.{price % 10},{(i * 31) % 2_500 / 1000 + 0.001:.3f},"
                    f"{trade0 + 3 * i},{trade0 + 3 * i + i % 3},{T0 + i * 86 // 1},"
                    f"{'true' if i % 2 else 'false'}\n"
                )
            out.write("".join(lines).encode())
    return path


def timed(label: str, rows: int, fn) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:<16} {rows / elapsed:>10,.0f} rows/s  ({elapsed:.2f} s)")
    return elapsed


def parse_only(path: Path) -> None:
    with open_archive(path) as (raw, _size):
        for _ in AggTradeCsvReader(raw, source=path.name, symbol="BTCUSDT", receive_time=0, on_bad=print):
            pass


def parse_and_encode(path: Path) -> None:
    serde = AvroSerde(FileSchemaRegistry())
    encode = serde.encode
    cont = ArchiveContinuity("BTCUSDT")
    with open_archive(path) as (raw, _size):
        for trade in AggTradeCsvReader(raw, source=path.name, symbol="BTCUSDT", receive_time=0, on_bad=print):
            for t in cont.offer(trade):
                encode("md.trades", t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start the embedded Kafka)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        archives = tmp_path / "archives"
        archives.mkdir()
        path = write_day(archives, args.rows)
        print(f"{args.rows:,} rows, zip {path.stat().st_size / 1e6:.1f} MB")
        timed("parse", args.rows, lambda: parse_only(path))
        timed("parse+encode", args.rows, lambda: parse_and_encode(path))
        with broker(args.bootstrap, tmp_path / "stack") as bootstrap:
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            summary = run_backfill(
                bootstrap=bootstrap,
                topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                home=tmp_path / "home",
                symbol="BTCUSDT",
                start=DAY,
                end=DAY,
                directory=archives,
                progress=False,
            )
            rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        assert summary.rows_published == args.rows, summary  # the run must be complete to mean anything
        print(
            f"{'full backfill':<16} {summary.rows_per_second:>10,.0f} rows/s  ({summary.seconds:.2f} s, "
            f"peak RSS growth {rss_growth / 1024:.0f} MiB)"
        )


if __name__ == "__main__":
    main()
