"""Storage cost per symbol-day of each time-series table, plain PostgreSQL and TimescaleDB-compressed.

Run: .venv/bin/python -m benchmarks.bench_storage [--sample 50000]

How: generated rows shaped like the live streams (prices on a tick grid doing a random walk, exchange
ids consecutive, times at the stream's cadence, depth levels per diff as in the recording in
tests/data) are written through the sink's own write path into a migrated embedded PostgreSQL 15;
bytes per row = the table's partitions (heap + TOAST + indexes, after VACUUM) / rows. The same rows
go into TimescaleDB 2.23 (the PGlite build bootstrap installs, served by pglite-socket), are
compressed with the migrations' segmentby/orderby, and `hypertable_compression_stats` gives the
bytes after compression. Bytes per symbol-day = bytes per row x rows per symbol-day (ROWS_PER_DAY,
stated with where each number comes from). Random components (quantities, feature values) compress
worse than real data, so the compressed figures are conservative.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg

from benchmarks.embedded_stack import embedded_stack
from sinks.partitions import ensure_partitions
from sinks.tables import TABLES, write_rows

DAY0 = datetime(2026, 3, 2, tzinfo=UTC)
MS = timedelta(milliseconds=1)

# rows per symbol-day and where the number comes from
ROWS_PER_DAY = {
    "trades": (1_000_000, "assumption: a liquid USD-M perpetual (BTCUSDT runs several times this)"),
    "depth_updates": (864_000, "<sym>@depth@100ms: 10 diffs/s when the book moves every 100 ms"),
    "depth_snapshots": (345_600, "md.book every 250 ms (producer book_interval_ms), 20 levels a side"),
    "mark_prices": (86_400, "<sym>@markPrice@1s"),
    "features": (259_200, "3 strategies x 1 evaluation/s (every closed second with trades)"),
    "market_indicators": (2_304, "8 REST indicators every 5 minutes"),
    "bars_1m": (1_440, "one bar a minute"),
    "liquidations": (1_000, "assumption: a busy day on a major symbol"),
}


def gen_rows(table: str, n: int, rng: random.Random) -> list[tuple]:
    """Rows (already in the table's column order) shaped like the live data of one symbol."""
    per_day, _ = ROWS_PER_DAY[table]
    step = timedelta(days=1) / per_day
    spec = TABLES[table]
    make = _ROW_MAKERS[table]
    price = 87_000.0
    rows: list[tuple] = []
    for i in range(n):
        t = DAY0 + step * i + MS * rng.randint(0, 3)
        price = round(max(1.0, price + rng.choice((-0.1, 0.0, 0.0, 0.1)) * rng.randint(1, 5)), 1)
        # a maker draws from rng only for the rows taken: the tables after this one see the same draws
        for row in make(i, t, price, rng):
            rows.append(row)
            if len(rows) >= n:
                break
        if len(rows) >= n:
            break
    from psycopg.types.json import Jsonb

    if table == "features":
        rows = [r[:7] + (Jsonb(r[7]), Jsonb(r[8])) + r[9:] for r in rows]
    if table == "market_indicators":
        rows = [r[:5] + (Jsonb(r[5]),) + r[6:] for r in rows]
    assert all(len(r) == len(spec.columns) for r in rows), table
    return rows


# --- one maker per table: the rows of step i at time t and price, drawn from rng ----------------------
def _trades(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    first = 5_000_000_000 + 2 * i
    yield (
        "binance",
        "BTCUSDT",
        3_000_000_000 + i,
        price,
        round(rng.lognormvariate(-5, 1.5), 3) or 0.001,
        first,
        first + rng.randint(0, 3),
        t,
        t,
        t + MS * rng.randint(2, 40),
        rng.choice(("BUY", "SELL")),
    )


def _diff_side(price: float, sign: int, rng: random.Random) -> tuple[list[float], list[float]]:
    """One side of a depth diff: its prices and quantities (0: the level is removed)."""
    k = rng.randint(1, 16)  # ~8 levels per diff on average (recording)
    return (
        [round(price + sign * 0.1 * rng.randint(1, 200), 1) for _ in range(k)],
        [round(rng.lognormvariate(0, 1.5), 3) if rng.random() > 0.2 else 0.0 for _ in range(k)],
    )


def _depth_updates(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    bp, bq = _diff_side(price, -1, rng)
    ap, aq = _diff_side(price, 1, rng)
    fid = 9_000_000_000 + 30 * i
    yield ("binance", "BTCUSDT", fid, fid + 29, fid - 1, t, t - MS, t + MS * 5, bp, bq, ap, aq)


def _depth_snapshots(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    bp = [round(price - 0.1 * (k + 1), 1) for k in range(20)]
    ap = [round(price + 0.1 * (k + 1), 1) for k in range(20)]
    bq = [round(rng.lognormvariate(0, 1.5), 3) for _ in range(20)]
    aq = [round(rng.lognormvariate(0, 1.5), 3) for _ in range(20)]
    imbalance = round((sum(bq[:10]) - sum(aq[:10])) / (sum(bq[:10]) + sum(aq[:10])), 6)
    yield ("binance", "BTCUSDT", 9_000_000_000 + 30 * i, t, t + MS * 5, bp, bq, ap, aq, imbalance)


def _mark_prices(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    nf = DAY0 + timedelta(hours=8 * (1 + i // 28_800))
    yield ("binance", "BTCUSDT", price + 0.37, price + 0.12, 0.0001, nf, t, t + MS * 7)


FEATURE_SCORES = ("direction", "crowding", "environment", "confirmation", "auxiliary", "funding", "liquidation")


def _features(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    """One evaluation a second for each of three strategies (a generator: a row not taken is not drawn)."""
    inputs = {f"x{k:02d}": round(rng.gauss(0, 1) * 10 ** rng.randint(-4, 6), 6) for k in range(40)}
    scores = {name: float(rng.randint(-3, 3)) for name in FEATURE_SCORES}
    for strategy in ("v51", "v52", "v53"):
        ts = DAY0 + timedelta(seconds=i)
        yield (
            f"{strategy}:abc123:binance:BTCUSDT:{int(ts.timestamp() * 1000)}",
            strategy,
            "1",
            "abc123",
            "binance",
            "BTCUSDT",
            ts,
            inputs,
            scores,
            float(sum(scores.values())),
            rng.choice((None, "LONG", "SHORT")),
            None,
            rng.choice(("below_entry", "cooldown", None)),
        )


INDICATOR_KINDS = (
    "open_interest",
    "oi_hist",
    "long_short_ratio",
    "top_trader_ratio",
    "taker_ratio",
    "funding_rate",
    "coinbase_premium",
    "spot_perp_divergence",
)


def _market_indicators(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    yield ("binance", "BTCUSDT", INDICATOR_KINDS[i % 8], rng.uniform(0, 1e5), "5m", {}, t, t + MS * 300)


def _bars_1m(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    o = price
    yield (
        "binance",
        "BTCUSDT",
        DAY0 + timedelta(minutes=i),
        DAY0 + timedelta(minutes=i + 1),
        o,
        o + 20,
        o - 20,
        o + 3,
        700.0,
        350.0,
        350.0,
        700.0 * o,
        o + 1,
        700 + i % 300,
        3_000_000_000 + 700 * i,
        3_000_000_699 + 700 * i,
    )


def _liquidations(i: int, t: datetime, price: float, rng: random.Random) -> Iterator[tuple]:
    side = rng.choice(("BUY", "SELL"))
    yield (
        "binance",
        "BTCUSDT",
        side,
        "SHORT" if side == "BUY" else "LONG",
        price,
        price,
        0.5,
        0.5,
        0.5 * price,
        t,
        t,
        t + MS * 9,
    )


_ROW_MAKERS: dict[str, Callable[[int, datetime, float, random.Random], Iterator[tuple]]] = {
    "trades": _trades,
    "depth_updates": _depth_updates,
    "depth_snapshots": _depth_snapshots,
    "mark_prices": _mark_prices,
    "features": _features,
    "market_indicators": _market_indicators,
    "bars_1m": _bars_1m,
    "liquidations": _liquidations,
}


def plain_bytes_per_row(conninfo: str, table: str, rows: list[tuple]) -> float:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        ensure_partitions(conn, table, DAY0, DAY0 + timedelta(days=2))
        for i in range(0, len(rows), 20_000):
            with conn.transaction():
                write_rows(conn, TABLES[table], rows[i : i + 20_000])
        conn.execute(f"VACUUM ANALYZE {table}")
        size = conn.execute(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits WHERE inhparent = %s::regclass", (table,)
        ).fetchone()[0]
        conn.execute(f"TRUNCATE {table}")
    return float(size) / len(rows)


def compressed_bytes_per_row(conninfo: str, table: str, rows: list[tuple]) -> tuple[float, float]:
    """(bytes/row before compression, after) on TimescaleDB; rows inserted with INSERT (no COPY there)."""
    spec = TABLES[table]
    cols = ", ".join(spec.columns)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        per = max(1, 600 // len(spec.columns))  # pglite-socket drops larger messages
        for i in range(0, len(rows), per):
            chunk = rows[i : i + per]
            marks = ", ".join(["(" + ", ".join(["%s"] * len(spec.columns)) + ")"] * len(chunk))
            conn.execute(
                f"INSERT INTO {table} ({cols}) VALUES {marks} ON CONFLICT DO NOTHING", [v for r in chunk for v in r]
            )
        conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}') c")
        before, after = conn.execute(
            "SELECT before_compression_total_bytes, after_compression_total_bytes "
            "FROM hypertable_compression_stats(%s)",
            (table,),
        ).fetchone()
        conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")  # keep PGlite's memory small
    return float(before) / len(rows), float(after) / len(rows)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{n:,.0f} B"
        n /= 1024
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sample", type=int, default=50_000, help="rows per table (at most one symbol-day)")
    ap.add_argument("--tables", default=",".join(ROWS_PER_DAY))
    args = ap.parse_args()
    from benchmarks.pglite_timescale import available, migrate_pglite, pglite_timescale

    rng = random.Random(11)
    tables = args.tables.split(",")
    samples = {t: gen_rows(t, min(args.sample, ROWS_PER_DAY[t][0]), rng) for t in tables}
    plain: dict[str, float] = {}
    with embedded_stack(with_broker=False, engine_extension=None) as (_, conninfo):  # plain on any server
        for t in tables:
            plain[t] = plain_bytes_per_row(conninfo, t, samples[t])
    compressed: dict[str, tuple[float, float]] = {}
    why = available()
    if why is None:
        with pglite_timescale() as ts:
            migrate_pglite(ts)
            for t in tables:
                compressed[t] = compressed_bytes_per_row(ts, t, samples[t])
    print(
        f"{'table':<18}{'rows/symbol-day':>16}{'sample':>9}{'plain B/row':>12}{'plain/day':>12}"
        f"{'TS raw B/row':>13}{'compr B/row':>12}{'compr/day':>12}{'ratio':>7}"
    )
    total_plain = total_comp = 0.0
    for t in tables:
        per_day = ROWS_PER_DAY[t][0]
        p = plain[t]
        total_plain += p * per_day
        line = f"{t:<18}{per_day:>16,}{len(samples[t]):>9,}{p:>12.1f}{fmt_bytes(p * per_day):>12}"
        if t in compressed:
            before, after = compressed[t]
            total_comp += after * per_day
            line += f"{before:>13.1f}{after:>12.1f}{fmt_bytes(after * per_day):>12}{p / after:>6.1f}x"
        print(line)
    print(
        f"{'all tables':<18}{'':>16}{'':>9}{'':>12}{fmt_bytes(total_plain):>12}"
        + (f"{'':>13}{'':>12}{fmt_bytes(total_comp):>12}" if compressed else "")
    )
    if why:
        print(f"compressed sizes not measured: {why}")
    for t in tables:
        print(f"  {t}: {ROWS_PER_DAY[t][1]}")


if __name__ == "__main__":
    main()
